//! Where the session token rests between runs: the OS secret store (Secret Service, Windows
//! Credential Manager, macOS Keychain), never web storage or a plain file. Where no secret store
//! is reachable the token lives in memory only, and a restart means a touch of the key.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// A session worth resuming: which server, and the bearer token for it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedSession {
    pub server: String,
    pub token: String,
    /// Opened by redeeming a recovery key (it may rest for the whole recovery window).
    #[serde(default)]
    pub recovery: bool,
}

impl std::fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedSession")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

pub trait TokenVault: Send + Sync {
    fn load(&self) -> Option<SavedSession>;
    fn save(&self, session: &SavedSession);
    fn clear(&self);
    /// The device secret: how the server tells this machine's sign-ins from a stranger's, so
    /// it rests here too, never in a plain file (anyone who read it could sign in as "a known
    /// device" and stay quiet).
    fn load_device_secret(&self) -> Option<String>;
    /// False if it could not be stored (it then lives in memory only).
    fn save_device_secret(&self, secret: &str) -> bool;
    /// The private half of the key the resting session is bound to (DPoP), in an entry of
    /// its own apart from the token: the token alone, read from its entry, is refused.
    fn load_session_key(&self) -> Option<String>;
    fn save_session_key(&self, secret: &str) -> bool;
}

impl<T: TokenVault> TokenVault for std::sync::Arc<T> {
    fn load(&self) -> Option<SavedSession> {
        (**self).load()
    }
    fn save(&self, session: &SavedSession) {
        (**self).save(session)
    }
    fn clear(&self) {
        (**self).clear()
    }
    fn load_device_secret(&self) -> Option<String> {
        (**self).load_device_secret()
    }
    fn save_device_secret(&self, secret: &str) -> bool {
        (**self).save_device_secret(secret)
    }
    fn load_session_key(&self) -> Option<String> {
        (**self).load_session_key()
    }
    fn save_session_key(&self, secret: &str) -> bool {
        (**self).save_session_key(secret)
    }
}

/// Keeps nothing past the process: for tests, and where no secret store exists.
#[derive(Default)]
pub struct MemoryVault(
    Mutex<Option<SavedSession>>,
    Mutex<Option<String>>,
    Mutex<Option<String>>,
);

impl TokenVault for MemoryVault {
    fn load(&self) -> Option<SavedSession> {
        self.0.lock().ok()?.clone()
    }
    fn save(&self, session: &SavedSession) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(session.clone());
        }
    }
    fn clear(&self) {
        if let Ok(mut s) = self.0.lock() {
            *s = None;
        }
        if let Ok(mut k) = self.2.lock() {
            *k = None;
        }
    }
    fn load_device_secret(&self) -> Option<String> {
        self.1.lock().ok()?.clone()
    }
    fn save_device_secret(&self, secret: &str) -> bool {
        self.1
            .lock()
            .map(|mut s| *s = Some(secret.to_string()))
            .is_ok()
    }
    fn load_session_key(&self) -> Option<String> {
        self.2.lock().ok()?.clone()
    }
    fn save_session_key(&self, secret: &str) -> bool {
        self.2
            .lock()
            .map(|mut s| *s = Some(secret.to_string()))
            .is_ok()
    }
}

/// The OS secret store, one entry per data folder (so test and portable installs stay apart).
pub struct OsVault {
    entry: Option<keyring::Entry>,
    device: Option<keyring::Entry>,
    /// The session's DPoP key, apart from the token.
    session_key: Option<keyring::Entry>,
    /// The device secret, when no secret store takes it.
    device_in_memory: MemoryVault,
}

impl OsVault {
    pub fn new(data_dir: &std::path::Path) -> OsVault {
        let entry = keyring::Entry::new("app.keyward.desktop", &data_dir.display().to_string())
            .map_err(
                |e| tracing::info!(error = %e, "no OS secret store; the session stays in memory"),
            )
            .ok();
        let device = keyring::Entry::new(
            "app.keyward.desktop.device",
            &data_dir.display().to_string(),
        )
        .ok();
        let session_key = keyring::Entry::new(
            "app.keyward.desktop.session-key",
            &data_dir.display().to_string(),
        )
        .ok();
        OsVault {
            entry,
            device,
            session_key,
            device_in_memory: MemoryVault::default(),
        }
    }
}

impl TokenVault for OsVault {
    fn load(&self) -> Option<SavedSession> {
        let json = self.entry.as_ref()?.get_password().ok()?;
        serde_json::from_str(&json).ok()
    }
    fn save(&self, session: &SavedSession) {
        let Some(entry) = &self.entry else { return };
        let Ok(json) = serde_json::to_string(session) else {
            return;
        };
        if let Err(e) = entry.set_password(&json) {
            tracing::info!(error = %e, "could not store the session in the OS secret store; it stays in memory");
        }
    }
    fn clear(&self) {
        if let Some(entry) = &self.entry {
            let _ = entry.delete_credential();
        }
        if let Some(entry) = &self.session_key {
            let _ = entry.delete_credential();
        }
    }
    fn load_device_secret(&self) -> Option<String> {
        self.device_in_memory.load_device_secret().or_else(|| {
            let secret = self.device.as_ref()?.get_password().ok()?;
            self.device_in_memory.save_device_secret(&secret);
            Some(secret)
        })
    }
    fn save_device_secret(&self, secret: &str) -> bool {
        self.device_in_memory.save_device_secret(secret);
        match &self.device {
            Some(entry) => entry
                .set_password(secret)
                .map_err(|e| tracing::info!(error = %e, "could not store the device secret in the OS secret store; it stays in memory"))
                .is_ok(),
            None => false,
        }
    }
    fn load_session_key(&self) -> Option<String> {
        self.session_key.as_ref()?.get_password().ok()
    }
    fn save_session_key(&self, secret: &str) -> bool {
        match &self.session_key {
            Some(entry) => entry
                .set_password(secret)
                .map_err(|e| tracing::info!(error = %e, "could not store the session key in the OS secret store; the session stays in memory"))
                .is_ok(),
            None => false,
        }
    }
}
