//! The desktop's one error type, sent over IPC as `{code, message}` like every other boundary.

use keyward_client::{AuthenticatorError, ClientError};
use serde::ser::SerializeStruct;

#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error("not connected to a Keyward server")]
    NotConnected,
    #[error("sign in with your security key first")]
    NotSignedIn,
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("could not start the built-in Keyward server: {0}")]
    EmbeddedServer(String),
}

impl DesktopError {
    /// Codes match the server's `ErrorCode` where the server said it; the rest are the app's.
    pub fn code(&self) -> String {
        match self {
            DesktopError::NotConnected => "not_connected".into(),
            DesktopError::NotSignedIn => "unauthenticated".into(),
            DesktopError::InvalidInput(_) => "invalid_input".into(),
            DesktopError::EmbeddedServer(_) => "internal".into(),
            DesktopError::Client(ClientError::Api { error, .. }) => {
                serde_json::to_value(error.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "internal".into())
            }
            DesktopError::Client(ClientError::Unreachable { .. }) => "unreachable".into(),
            DesktopError::Client(ClientError::Protocol(_)) => "internal".into(),
            DesktopError::Client(ClientError::Authenticator(a)) => a.code().into(),
            DesktopError::Client(ClientError::Site(_)) => "wrong_site".into(),
        }
    }

    /// Words for a person. Authenticator trouble is explained, not echoed.
    pub fn message(&self) -> String {
        match self {
            DesktopError::Client(ClientError::Authenticator(AuthenticatorError::NotRegistered)) => {
                "This key is not registered for this account. Try another key.".into()
            }
            DesktopError::Client(ClientError::Authenticator(
                AuthenticatorError::AlreadyRegistered,
            )) => {
                "This key is already one of your keys. Use a different key as your backup.".into()
            }
            DesktopError::Client(ClientError::Unreachable { .. }) => {
                "Cannot reach the Keyward server. Check the connection and try again.".into()
            }
            // The key's own trouble, already in words a person acts on.
            DesktopError::Client(ClientError::Authenticator(a)) => sentence(&a.to_string()),
            DesktopError::Client(ClientError::Site(e)) => format!(
                "Keyward will not sign in to this server: {e}. A server you reach at one address \
                 may only ask your key to sign for that site."
            ),
            other => other.to_string(),
        }
    }
}

/// "wrong PIN: 2 tries left" → "Wrong PIN: 2 tries left."
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

impl serde::Serialize for DesktopError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ApiError", 2)?;
        st.serialize_field("code", &self.code())?;
        st.serialize_field("message", &self.message())?;
        st.end()
    }
}

pub type Result<T, E = DesktopError> = std::result::Result<T, E>;
