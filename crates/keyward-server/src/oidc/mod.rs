//! keywardd as an OpenID Connect provider: apps sign people in through Keyward and inherit
//! its guarantees. Like `relying_party`, this knows nothing of HTTP (the handlers are in
//! `http/oauth.rs`); its methods are on [`RelyingParty`], one store transaction each.
//!
//! One file per concern: `keys` (ES256 signing keys, sealed at rest, the JWKS, rotation),
//! `seal` (AES-256-GCM under a key derived from the log key), `clients` (registration and
//! client authentication), `claims` (scopes, `acr`/`amr`, pairwise identifiers, the ID token),
//! `authorize` (the authorization endpoint, pending requests, consent), `tokens` (the token
//! endpoint, introspection, userinfo, revocation, logout), `logout_tokens` (back-channel
//! logout: the outbox's claims, logout tokens, retries), `device` (the device authorization
//! grant for agents and CLIs, RFC 8628, and the person's approval), `discovery`.

mod authorize;
mod claims;
pub mod clients;
mod device;
mod discovery;
pub mod keys;
pub mod logout_tokens;
mod seal;
mod tokens;

pub use authorize::{Authorization, MAX_PARAM_CHARS};
pub use clients::{ClientAuth, NewClient, RegisteredClient};
pub use discovery::ProviderMetadata;
pub use seal::SealKey;
pub use tokens::{EndSession, Userinfo};

use keyward_core::Store;

use crate::error::ServerError;

/// Lifetimes. Codes are exchanged at once by the app's back end; ID tokens are read once at
/// sign-in; access tokens are opaque and checked at every use (so they could live longer,
/// but a short life limits what a copied one is worth); refresh tokens live as long as the
/// Keyward session that made them, and no longer.
pub const CODE_TTL_MS: i64 = 60_000;
pub const ID_TOKEN_TTL_MS: i64 = 5 * 60_000;
pub const ACCESS_TOKEN_TTL_MS: i64 = 10 * 60_000;
pub const REQUEST_TTL_MS: i64 = 10 * 60_000;
/// A device code (RFC 8628) waits this long for the person, and is polled no faster than
/// every `DEVICE_INTERVAL_MS` (more at every `slow_down`).
pub const DEVICE_CODE_TTL_MS: i64 = 10 * 60_000;
pub const DEVICE_INTERVAL_MS: i64 = 5_000;

/// OAuth 2.0's error codes (RFC 6749 4.1.2.1 and 5.2, RFC 6750, OpenID Connect Core 3.1.2.6,
/// OpenID Connect's unmet authentication requirements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    UnmetAuthenticationRequirements,
    /// RFC 8628 3.5: the person has not decided yet; poll again after the interval.
    AuthorizationPending,
    /// RFC 8628 3.5: polling too fast; the interval grew by 5 seconds.
    SlowDown,
    /// RFC 8628 3.5: the device code expired; start again.
    ExpiredToken,
    InvalidToken,
    ServerError,
    TemporarilyUnavailable,
}

impl OAuthCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthCode::InvalidRequest => "invalid_request",
            OAuthCode::InvalidClient => "invalid_client",
            OAuthCode::InvalidGrant => "invalid_grant",
            OAuthCode::UnauthorizedClient => "unauthorized_client",
            OAuthCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthCode::InvalidScope => "invalid_scope",
            OAuthCode::AccessDenied => "access_denied",
            OAuthCode::LoginRequired => "login_required",
            OAuthCode::ConsentRequired => "consent_required",
            OAuthCode::InteractionRequired => "interaction_required",
            OAuthCode::RequestNotSupported => "request_not_supported",
            OAuthCode::RequestUriNotSupported => "request_uri_not_supported",
            OAuthCode::UnmetAuthenticationRequirements => "unmet_authentication_requirements",
            OAuthCode::AuthorizationPending => "authorization_pending",
            OAuthCode::SlowDown => "slow_down",
            OAuthCode::ExpiredToken => "expired_token",
            OAuthCode::InvalidToken => "invalid_token",
            OAuthCode::ServerError => "server_error",
            OAuthCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An OAuth refusal: a code and a description safe to show (never a secret, never a detail of
/// another account or client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: OAuthCode,
    pub description: String,
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

/// `ServerError::OAuth` with this code and description.
pub(crate) fn oauth_error(code: OAuthCode, description: impl Into<String>) -> ServerError {
    oauth(code, description)
}

pub(crate) fn oauth(code: OAuthCode, description: impl Into<String>) -> ServerError {
    ServerError::OAuth(OAuthError {
        code,
        description: description.into(),
    })
}

/// The OpenID provider's own state: who it is, and its keys (the signing keys themselves live
/// sealed in the store).
pub struct Provider {
    /// The issuer: the first configured origin, exactly as serialised (no trailing slash).
    pub issuer: String,
    seal: SealKey,
    /// HMAC key of pairwise subject and session identifiers; per deployment, sealed at rest.
    pairwise: [u8; 32],
    /// Attested mode (vendor roots configured): only then can a key be known to be hardware.
    attested_mode: bool,
    keys: keys::KeyCache,
}

/// The meta row holding the sealed pairwise secret.
const PAIRWISE_META: &str = "oidc_pairwise_secret";

impl Provider {
    /// The provider over `store`: the seal key derived from the log key, the pairwise secret
    /// unsealed (made on first start), a signing key made if there is none, and the config
    /// file's clients registered as the file says.
    pub fn new(
        store: &Store,
        log_key: &ed25519_dalek::SigningKey,
        issuer: String,
        attested_mode: bool,
        config_clients: &[NewClient],
        now: keyward_proto::Millis,
    ) -> Result<Provider, ServerError> {
        let seal = SealKey::from_log_key(log_key)?;
        let pairwise = store.write(|tx| {
            if let Some(sealed) = tx.meta(PAIRWISE_META)? {
                let clear = seal.open(&sealed, PAIRWISE_META.as_bytes())?;
                return clear.try_into().map_err(|_| {
                    ServerError::Internal("the pairwise secret is not 32 bytes".into())
                });
            }
            let secret = keyward_core::secret::random_bytes::<32>();
            tx.set_meta(
                PAIRWISE_META,
                &seal.seal(&secret, PAIRWISE_META.as_bytes())?,
            )?;
            Ok::<_, ServerError>(secret)
        })?;
        keys::ensure_signing_key(store, &seal, now)?;
        clients::sync_config_clients(store, config_clients, now)?;
        Ok(Provider {
            issuer,
            seal,
            pairwise,
            attested_mode,
            keys: keys::KeyCache::default(),
        })
    }
}

impl crate::relying_party::RelyingParty {
    /// Discovery's document.
    pub fn provider_metadata(&self) -> ProviderMetadata {
        self.oidc.metadata()
    }

    /// The JWKS: the active signing key and the retired ones still needed.
    pub fn jwks(&self) -> Result<serde_json::Value, ServerError> {
        let now = self.now();
        self.store.read(|tx| self.oidc.jwks(tx, now))
    }
}
