//! The authenticator the user presents. Ceremonies talk to this trait only, so the virtual key,
//! USB and NFC keys (CTAP2) and the Windows WebAuthn API are interchangeable behind it.

use std::path::{Path, PathBuf};

use keyward_proto::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};
use keyward_softkey::SoftKey;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum AuthenticatorError {
    #[error("this key is not registered for this account")]
    NotRegistered,
    #[error("this key is already registered to this account")]
    AlreadyRegistered,
    #[error("the key refused: {0}")]
    Refused(String),
    #[error("cancelled")]
    Cancelled,
    #[error("no security key was plugged in or tapped in time")]
    NoKey,
    #[error("the key was not touched in time")]
    NotTouched,
    #[error("{}", wrong_pin(*.retries))]
    WrongPin { retries: Option<u32> },
    #[error(
        "the key's PIN is blocked after too many wrong tries; the key must be reset before it can be used again"
    )]
    PinBlocked,
    #[error("too many wrong PINs in a row: remove the key, insert it again and retry")]
    PinPaused,
    #[error("this key needs a PIN first: set one in Security keys > Key settings")]
    PinNotSet,
    #[error("the key has no room for another passkey: delete one you no longer use")]
    KeyFull,
    #[error("the key was removed before the ceremony finished")]
    KeyRemoved,
    #[error("security keys are unavailable: {0}")]
    Unavailable(String),
    #[error("cannot store the virtual key at {path}: {message}")]
    Storage { path: String, message: String },
    /// The options name a site the origin does not belong to; the key was not asked.
    #[error(transparent)]
    Site(#[from] crate::site::SiteError),
}

fn wrong_pin(retries: Option<u32>) -> String {
    match retries {
        Some(1) => "wrong PIN: 1 try left before the key locks".into(),
        Some(n) => format!("wrong PIN: {n} tries left"),
        None => "wrong PIN".into(),
    }
}

impl AuthenticatorError {
    /// The `{code}` at the IPC boundary.
    pub fn code(&self) -> &'static str {
        match self {
            AuthenticatorError::NotRegistered => "key_not_registered",
            AuthenticatorError::AlreadyRegistered => "key_already_registered",
            AuthenticatorError::Cancelled => "cancelled",
            AuthenticatorError::NoKey => "no_key",
            AuthenticatorError::NotTouched => "key_not_touched",
            AuthenticatorError::WrongPin { .. } => "wrong_pin",
            AuthenticatorError::PinBlocked => "pin_blocked",
            AuthenticatorError::PinPaused => "pin_paused",
            AuthenticatorError::PinNotSet => "pin_not_set",
            AuthenticatorError::KeyFull => "key_full",
            AuthenticatorError::KeyRemoved => "key_removed",
            AuthenticatorError::Unavailable(_) => "keys_unavailable",
            AuthenticatorError::Site(_) => "wrong_site",
            AuthenticatorError::Refused(_) | AuthenticatorError::Storage { .. } => "key_error",
        }
    }
}

/// One user-present authenticator. Blocking: a real key waits for a touch, so callers run
/// ceremonies on a blocking thread.
pub trait Authenticator: Send {
    /// What the user sees: "Virtual key", "YubiKey 5 NFC (USB)", …
    fn label(&self) -> String;
    fn register(
        &mut self,
        origin: &Url,
        options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, AuthenticatorError>;
    fn authenticate(
        &mut self,
        origin: &Url,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, AuthenticatorError>;
}

/// Software keys kept in a file: **not secure** (private keys are on disk), for trying Keyward
/// with no hardware. A ring of them, so a "backup key" can be added too: registration uses the
/// first key not yet registered (or makes a new one), sign-in whichever key holds a matching
/// credential, as if the user had picked up the right key. Every ceremony saves the file, so
/// counters survive restarts.
pub struct VirtualKey {
    keys: Vec<SoftKey>,
    path: Option<PathBuf>,
}

fn new_soft_key() -> SoftKey {
    let mut key = SoftKey::new(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY);
    key.transports = vec!["internal".into()];
    key
}

impl VirtualKey {
    /// A ring that lives in memory only.
    pub fn ephemeral() -> VirtualKey {
        VirtualKey {
            keys: Vec::new(),
            path: None,
        }
    }

    /// Opens the ring at `path`; a missing file is an empty ring.
    pub fn open(path: &Path) -> Result<VirtualKey, AuthenticatorError> {
        let storage = |e: &dyn std::fmt::Display| AuthenticatorError::Storage {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let keys = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| storage(&e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage(&e)),
        };
        Ok(VirtualKey {
            keys,
            path: Some(path.to_path_buf()),
        })
    }

    /// How many distinct virtual keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn save(&self) -> Result<(), AuthenticatorError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let storage = |e: &dyn std::fmt::Display| AuthenticatorError::Storage {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let json = serde_json::to_vec(&self.keys).map_err(|e| storage(&e))?;
        write_private(path, &json).map_err(|e| storage(&e))
    }
}

fn map_soft(e: keyward_softkey::SoftKeyError) -> AuthenticatorError {
    match e {
        keyward_softkey::SoftKeyError::NoCredential => AuthenticatorError::NotRegistered,
        keyward_softkey::SoftKeyError::Excluded => AuthenticatorError::AlreadyRegistered,
        other => AuthenticatorError::Refused(other.to_string()),
    }
}

impl Authenticator for VirtualKey {
    fn label(&self) -> String {
        "Virtual key (not secure)".into()
    }

    fn register(
        &mut self,
        origin: &Url,
        options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, AuthenticatorError> {
        // The first key that the server does not already know; else a fresh one.
        for key in &mut self.keys {
            match key.register(origin, options) {
                Ok(credential) => {
                    self.save()?;
                    return Ok(credential);
                }
                Err(keyward_softkey::SoftKeyError::Excluded) => continue,
                Err(e) => return Err(map_soft(e)),
            }
        }
        let mut key = new_soft_key();
        let credential = key.register(origin, options).map_err(map_soft)?;
        self.keys.push(key);
        self.save()?;
        Ok(credential)
    }

    fn authenticate(
        &mut self,
        origin: &Url,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, AuthenticatorError> {
        for key in &mut self.keys {
            match key.authenticate(origin, options) {
                Ok(credential) => {
                    self.save()?;
                    return Ok(credential);
                }
                Err(keyward_softkey::SoftKeyError::NoCredential) => continue,
                Err(e) => return Err(map_soft(e)),
            }
        }
        Err(AuthenticatorError::NotRegistered)
    }
}

/// Writes an owner-only file whole or not at all (temporary file, fsync, rename): a crash never
/// leaves half a key or secret behind.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
