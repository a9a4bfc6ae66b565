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
    #[error("cannot store the virtual key at {path}: {message}")]
    Storage { path: String, message: String },
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

/// A software key kept in a file: **not secure** (its private keys are on disk), for trying
/// Keyward with no hardware. Every ceremony saves it, so counters survive restarts.
pub struct VirtualKey {
    key: SoftKey,
    path: Option<PathBuf>,
}

impl VirtualKey {
    /// A virtual key that lives in memory only.
    pub fn ephemeral() -> VirtualKey {
        VirtualKey {
            key: SoftKey::new(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY),
            path: None,
        }
    }

    /// Opens the key at `path`, creating it if the file does not exist.
    pub fn open(path: &Path) -> Result<VirtualKey, AuthenticatorError> {
        let storage = |e: &dyn std::fmt::Display| AuthenticatorError::Storage {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let key = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| storage(&e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                SoftKey::new(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY)
            }
            Err(e) => return Err(storage(&e)),
        };
        Ok(VirtualKey {
            key,
            path: Some(path.to_path_buf()),
        })
    }

    pub fn soft_key(&mut self) -> &mut SoftKey {
        &mut self.key
    }

    /// Written to a temporary file and renamed, owner-only: a crash never leaves half a key.
    fn save(&self) -> Result<(), AuthenticatorError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let storage = |e: &dyn std::fmt::Display| AuthenticatorError::Storage {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let json = serde_json::to_vec(&self.key).map_err(|e| storage(&e))?;
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        }
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp).map_err(|e| storage(&e))?;
            f.write_all(&json).map_err(|e| storage(&e))?;
            f.sync_all().map_err(|e| storage(&e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| storage(&e))
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
        let credential = self.key.register(origin, options).map_err(map_soft)?;
        self.save()?;
        Ok(credential)
    }

    fn authenticate(
        &mut self,
        origin: &Url,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, AuthenticatorError> {
        let credential = self.key.authenticate(origin, options).map_err(map_soft)?;
        self.save()?;
        Ok(credential)
    }
}
