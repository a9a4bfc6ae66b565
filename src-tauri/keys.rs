//! The key the person presents: a real security key (USB or NFC, whichever arrives first) or
//! the virtual key for trying Keyward. Ceremonies see one `Authenticator` either way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use keyward_client::{
    Authenticator, AuthenticatorError, CancelSwitch, KeyPrompter, VirtualKey, platform_security_key,
};
use keyward_proto::{
    CreationChallengeResponse, KeyPrompt, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};
use serde::{Deserialize, Serialize};
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A FIDO2 security key over USB or NFC.
    SecurityKey,
    /// Software keys in a file on this computer: not secure, for trying Keyward.
    Virtual,
}

pub struct Keys {
    kind: KeyKind,
    kind_file: PathBuf,
    pub virtual_keys: VirtualKey,
    security_key: Box<dyn Authenticator>,
    /// Key management talks CTAP2 to the key directly (not possible through Windows'
    /// WebAuthn API without administrator rights).
    #[cfg(not(windows))]
    admin: keyward_client::SecurityKey<keyward_client::UsbOrNfc>,
}

impl Keys {
    pub fn open(data_dir: &Path, prompts: Arc<PromptRelay>) -> Result<Keys, AuthenticatorError> {
        let kind_file = data_dir.join("key-kind");
        let kind = match std::fs::read_to_string(&kind_file)
            .as_deref()
            .map(str::trim)
        {
            Ok("virtual") => KeyKind::Virtual,
            _ => KeyKind::SecurityKey,
        };
        let cancel = prompts.cancel.clone();
        Ok(Keys {
            kind,
            kind_file,
            virtual_keys: VirtualKey::open(&data_dir.join("virtual-keys.json"))?,
            #[cfg(not(windows))]
            admin: keyward_client::SecurityKey::usb_or_nfc(prompts.clone(), cancel.clone()),
            security_key: platform_security_key(prompts, cancel),
        })
    }

    /// The security key, for managing the key itself.
    #[cfg(not(windows))]
    pub fn admin(
        &self,
    ) -> Result<&keyward_client::SecurityKey<keyward_client::UsbOrNfc>, AuthenticatorError> {
        Ok(&self.admin)
    }

    #[cfg(windows)]
    pub fn admin(&self) -> Result<&NoAdmin, AuthenticatorError> {
        Err(AuthenticatorError::Unavailable(
            "Windows lets only administrators manage a security key directly; use Windows \
             Settings > Accounts > Sign-in options > Security key"
                .into(),
        ))
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Remembered across restarts.
    pub fn choose(&mut self, kind: KeyKind) -> Result<(), AuthenticatorError> {
        let text = match kind {
            KeyKind::SecurityKey => "security_key",
            KeyKind::Virtual => "virtual",
        };
        std::fs::write(&self.kind_file, text).map_err(|e| AuthenticatorError::Storage {
            path: self.kind_file.display().to_string(),
            message: e.to_string(),
        })?;
        self.kind = kind;
        Ok(())
    }

    fn current(&mut self) -> &mut dyn Authenticator {
        match self.kind {
            KeyKind::SecurityKey => self.security_key.as_mut(),
            KeyKind::Virtual => &mut self.virtual_keys,
        }
    }
}

impl Authenticator for Keys {
    fn label(&self) -> String {
        match self.kind {
            KeyKind::SecurityKey => self.security_key.label(),
            KeyKind::Virtual => self.virtual_keys.label(),
        }
    }

    fn register(
        &mut self,
        origin: &Url,
        options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, AuthenticatorError> {
        self.current().register(origin, options)
    }

    fn authenticate(
        &mut self,
        origin: &Url,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, AuthenticatorError> {
        self.current().authenticate(origin, options)
    }
}

type Sink = Box<dyn Fn(KeyPrompt) + Send + Sync>;

/// Carries prompts from a running ceremony to the window and the PIN back. Lives outside the
/// keys' lock, so "Cancel" and the PIN get through while a ceremony holds the key.
#[derive(Default)]
pub struct PromptRelay {
    sink: Mutex<Option<Sink>>,
    pin_answer: Mutex<Option<mpsc::Sender<Option<String>>>>,
    pub cancel: CancelSwitch,
}

/// How long a PIN prompt waits for the person before giving up as "cancelled".
const PIN_WAIT: Duration = Duration::from_secs(120);

impl PromptRelay {
    pub fn set_sink(&self, sink: impl Fn(KeyPrompt) + Send + Sync + 'static) {
        if let Ok(mut s) = self.sink.lock() {
            *s = Some(Box::new(sink));
        }
    }

    /// The person typed the PIN (or closed the prompt: `None`). False if nothing was asking.
    pub fn answer_pin(&self, pin: Option<String>) -> bool {
        let waiting = self.pin_answer.lock().ok().and_then(|mut w| w.take());
        waiting.is_some_and(|tx| tx.send(pin).is_ok())
    }

    /// Stops the running ceremony at its next step, including a pending PIN prompt.
    pub fn cancel(&self) {
        self.cancel.cancel();
        self.answer_pin(None);
    }
}

impl KeyPrompter for PromptRelay {
    fn prompt(&self, prompt: KeyPrompt) {
        if let Ok(sink) = self.sink.lock()
            && let Some(sink) = sink.as_ref()
        {
            sink(prompt);
        }
    }

    fn ask_pin(&self, _retries: Option<u32>, _last_was_wrong: bool) -> Option<String> {
        let (tx, rx) = mpsc::channel();
        if let Ok(mut w) = self.pin_answer.lock() {
            *w = Some(tx);
        }
        rx.recv_timeout(PIN_WAIT).ok().flatten()
    }
}

/// Stands in for key management where the platform offers none.
#[cfg(windows)]
pub enum NoAdmin {}

#[cfg(windows)]
impl NoAdmin {
    pub fn info(&self) -> Result<keyward_proto::KeyInfo, AuthenticatorError> {
        match *self {}
    }
    pub fn set_pin(&self, _: &str) -> Result<(), AuthenticatorError> {
        match *self {}
    }
    pub fn change_pin(&self, _: &str, _: &str) -> Result<(), AuthenticatorError> {
        match *self {}
    }
    pub fn passkeys(&self) -> Result<keyward_proto::KeyPasskeys, AuthenticatorError> {
        match *self {}
    }
    pub fn delete_passkey(
        &self,
        _: &[u8],
    ) -> Result<keyward_proto::KeyPasskeys, AuthenticatorError> {
        match *self {}
    }
    pub fn factory_reset(&self) -> Result<(), AuthenticatorError> {
        match *self {}
    }
}
