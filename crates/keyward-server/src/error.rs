//! The server's one error type, and its single mapping onto the `{code, message}` wire shape.
//! Unexpected failures become `internal` with a fixed message; the detail goes only to the log.
//! Each error's HTTP status is given in `http/error.rs`, so the relying party needs no HTTP.

use keyward_core::CoreError;
use keyward_proto::{ApiError, ErrorCode};
use thiserror::Error;

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("the request body is not valid JSON for this endpoint")]
    MalformedBody,
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("sign in first")]
    Unauthenticated,
    #[error("your session has ended; sign in again with your security key")]
    SessionExpired,
    #[error("confirm it's you: touch your security key again")]
    StepUpRequired,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("this sign-in attempt expired or was already used; start again")]
    CeremonyExpired,
    #[error("that security key could not be verified")]
    AuthenticationFailed,
    #[error("the security key could not be registered: {0}")]
    RegistrationFailed(&'static str),
    #[error("that username is not available")]
    UsernameUnavailable,
    #[error("this server's policy does not accept that authenticator: {0}")]
    PolicyRefused(&'static str),
    #[error("you cannot remove your last security key")]
    LastAuthenticator,
    #[error("that recovery key could not be verified")]
    RecoveryFailed,
    #[error("{0}")]
    RecoveryInProgress(&'static str),
    #[error("too many attempts; try again in {retry_after_secs} seconds")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Conflict(&'static str),
    /// Only ever returned after a ceremony proved the account's key: the reason is the
    /// operator's message to the owner.
    #[error("this account was disabled by the service's operator: {0}")]
    AccountDisabled(String),
    /// An approval that needs a newer ceremony than the session's last (`prompt=login`,
    /// `max_age`): 409 with `step_up_required`, as the web UI contract says.
    #[error("this app asks for a fresh sign-in: confirm it's you with your security key")]
    FreshSignInRequired,
    /// An OAuth endpoint's refusal, answered in OAuth's own error shape.
    #[error("{0}")]
    OAuth(crate::oidc::OAuthError),
    /// A bound session's token came without a proof of its key (as a bearer token, or with
    /// no `DPoP` header).
    #[error(
        "this session is bound to its device's key: send its token as `Authorization: DPoP` with a DPoP proof"
    )]
    ProofRequired,
    /// A bound session's proof was refused; the message says why (never a secret).
    #[error("the session's proof of possession was refused: {0}")]
    ProofInvalid(String),
    /// The proof lacked the server's current nonce, which goes back in `DPoP-Nonce`.
    #[error("{message}: retry with the nonce in the DPoP-Nonce header")]
    ProofNonceRequired { message: String, nonce: String },
    /// `require_bound_sessions`: a finish request without a key to bind the session to.
    #[error("this server opens only sessions bound to a key on the device; this client sent none")]
    BindingRequired,
    /// The database is away or too busy for now; the detail is logged, never sent.
    #[error("the service is unavailable for a moment; try again shortly")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CoreError> for ServerError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::UsernameTaken => ServerError::UsernameUnavailable,
            CoreError::CredentialInUse => {
                ServerError::RegistrationFailed("that key is already registered")
            }
            CoreError::TooManyCeremonies => ServerError::RateLimited {
                retry_after_secs: 30,
            },
            CoreError::RecoveryKeyFormat(f) => ServerError::InvalidInput(f.to_string()),
            CoreError::Unavailable(detail) => ServerError::Unavailable(detail),
            other => ServerError::Internal(other.to_string()),
        }
    }
}

impl ServerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServerError::InvalidInput(_) => ErrorCode::InvalidInput,
            ServerError::MalformedBody => ErrorCode::MalformedBody,
            ServerError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ServerError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ServerError::NotFound(_) => ErrorCode::NotFound,
            ServerError::Unauthenticated => ErrorCode::Unauthenticated,
            ServerError::SessionExpired => ErrorCode::SessionExpired,
            ServerError::StepUpRequired | ServerError::FreshSignInRequired => {
                ErrorCode::StepUpRequired
            }
            ServerError::OAuth(_) => ErrorCode::InvalidInput,
            ServerError::Forbidden(_) => ErrorCode::Forbidden,
            ServerError::CeremonyExpired => ErrorCode::CeremonyExpired,
            ServerError::AuthenticationFailed => ErrorCode::AuthenticationFailed,
            ServerError::RegistrationFailed(_) => ErrorCode::RegistrationFailed,
            ServerError::UsernameUnavailable => ErrorCode::UsernameUnavailable,
            ServerError::PolicyRefused(_) => ErrorCode::PolicyRefused,
            ServerError::LastAuthenticator => ErrorCode::LastAuthenticator,
            ServerError::RecoveryFailed => ErrorCode::RecoveryFailed,
            ServerError::RecoveryInProgress(_) => ErrorCode::RecoveryInProgress,
            ServerError::RateLimited { .. } => ErrorCode::RateLimited,
            ServerError::Conflict(_) => ErrorCode::Conflict,
            ServerError::AccountDisabled(_) => ErrorCode::AccountDisabled,
            ServerError::ProofRequired => ErrorCode::ProofRequired,
            ServerError::ProofInvalid(_) => ErrorCode::ProofInvalid,
            ServerError::ProofNonceRequired { .. } => ErrorCode::ProofNonceRequired,
            ServerError::BindingRequired => ErrorCode::BindingRequired,
            ServerError::Unavailable(_) => ErrorCode::Unavailable,
            ServerError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn to_wire(&self) -> ApiError {
        let message = match self {
            ServerError::Internal(_) => "Something went wrong on the server.".to_string(),
            other => other.to_string(),
        };
        ApiError {
            code: self.code(),
            message,
        }
    }
}
