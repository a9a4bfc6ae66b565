//! Keyward's wire types. Everything that crosses the HTTP or IPC boundary is defined here and
//! nowhere else, so the server, the client and the desktop app cannot drift apart.
//!
//! Times are Unix milliseconds (`i64`), named `*_at`.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;
use uuid::Uuid;

pub use webauthn_rs_proto::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};

/// Unix time in milliseconds.
pub type Millis = i64;

// ---------------------------------------------------------------------------------------------
// Errors

/// The one error shape at every boundary: a stable `code` to match on, a `message` safe to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was well-formed JSON but a field is invalid.
    InvalidInput,
    /// The body is not valid JSON for this endpoint.
    MalformedBody,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    PayloadTooLarge,
    NotFound,
    /// No session token, or one that is unknown, ended or expired.
    Unauthenticated,
    /// The session was valid but ran past its idle or absolute lifetime.
    SessionExpired,
    /// This operation needs a user-verified assertion made in the last few minutes.
    StepUpRequired,
    /// The session may not do this (for example a recovery session before its window ends).
    Forbidden,
    /// The ceremony ID is unknown, already used, or expired.
    CeremonyExpired,
    /// The authenticator's response did not verify. Deliberately says nothing more.
    AuthenticationFailed,
    RegistrationFailed,
    UsernameUnavailable,
    /// The deployment's policy refuses this authenticator (synced passkey, model not allowed).
    PolicyRefused,
    /// The last usable authenticator cannot be removed.
    LastAuthenticator,
    /// The recovery key's proof did not verify.
    RecoveryFailed,
    /// The account is in a recovery window or must finish enrolling first.
    RecoveryInProgress,
    RateLimited,
    Conflict,
    /// The service's operator disabled this account (for abuse); the message says why. Told
    /// only to whoever proved they hold one of the account's keys.
    AccountDisabled,
    /// The session is bound to a key on its device, and the request carried no proof of it
    /// (`Authorization: DPoP <token>` with a `DPoP` proof header, RFC 9449): a copied token
    /// alone is refused.
    ProofRequired,
    /// The session's proof of possession was refused: malformed, signed by another key, for
    /// another method or URL, too old, from the future, or replayed. The message says which.
    ProofInvalid,
    /// The proof must carry the server's current nonce: retry with the `DPoP-Nonce` header's.
    ProofNonceRequired,
    /// This deployment opens only sessions bound to a key on the device
    /// (`--require-bound-sessions`): the finish request must carry a `binding`.
    BindingRequired,
    /// The server cannot reach its database for now (restarting, or too busy): try again
    /// shortly (`Retry-After`). Nothing was changed unless the answer was lost on the way.
    Unavailable,
    Internal,
}

// ---------------------------------------------------------------------------------------------
// Ceremonies

/// What the client says about itself; shown to the user in device lists and alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS, Default)]
pub struct ClientInfo {
    /// A human name for the client, e.g. "Keyward desktop on ada-laptop".
    pub name: String,
    /// Operating system or browser family, e.g. "Linux".
    pub platform: String,
}

/// How a session's token is bound to a key that stays on its device. A bound session's token
/// is accepted only with a proof signed by that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum SessionBinding {
    /// A bearer token: whoever holds it is the session.
    #[default]
    Unbound,
    /// A key the client keeps in software (the OS secret store, an owner-only file), apart
    /// from the token; every request carries a DPoP proof by it.
    Software,
    /// As software, but the client says the key is non-exportable hardware (a TPM, the
    /// Secure Enclave). The client's claim: no attestation of it is checked.
    Hardware,
    /// The web UI's non-extractable WebCrypto key: the cookie lives minutes and is refreshed
    /// only by a proof that key signs.
    Browser,
    /// The browser's Device Bound Session Credentials.
    Dbsc,
}

/// Where the client keeps the private half of its session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKeyKind {
    Software,
    Hardware,
}

/// The public key a client binds its new session to (the finish request of a sign-in,
/// account creation or recovery redemption). From then on every request of the session
/// carries a DPoP proof (RFC 9449) signed by it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct SessionKeyBinding {
    /// Public EC P-256 key as a JWK (`kty`, `crv`, `x`, `y`); never the private part.
    #[schema(value_type = Object)]
    #[ts(type = "JsonWebKey")]
    pub jwk: serde_json::Value,
    pub kind: DeviceKeyKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RegistrationBeginRequest {
    pub username: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RegistrationBegin {
    pub ceremony_id: Uuid,
    /// Pass to `navigator.credentials.create()` or a CTAP2 authenticator.
    #[schema(value_type = Object)]
    #[ts(type = "unknown")]
    pub options: CreationChallengeResponse,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RegistrationFinishRequest {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    #[ts(type = "unknown")]
    pub credential: RegisterPublicKeyCredential,
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub client: ClientInfo,
    /// The secret this device got at an earlier sign-in, if any; lets the server recognise it.
    #[serde(default)]
    pub device_secret: Option<String>,
    /// Bind the new session to this key on the device (see [`SessionKeyBinding`]).
    #[serde(default)]
    pub binding: Option<SessionKeyBinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct SignInBeginRequest {
    /// Absent for a usernameless (discoverable credential) sign-in.
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct AssertionBegin {
    pub ceremony_id: Uuid,
    /// Pass to `navigator.credentials.get()` or a CTAP2 authenticator.
    #[schema(value_type = Object)]
    #[ts(type = "unknown")]
    pub options: RequestChallengeResponse,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct SignInFinishRequest {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    #[ts(type = "unknown")]
    pub credential: PublicKeyCredential,
    #[serde(default)]
    pub client: ClientInfo,
    #[serde(default)]
    pub device_secret: Option<String>,
    /// Bind the new session to this key on the device (see [`SessionKeyBinding`]).
    #[serde(default)]
    pub binding: Option<SessionKeyBinding>,
}

/// A ceremony that only proves presence of an enrolled key (step-up, cancelling a recovery).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct AssertionFinishRequest {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    #[ts(type = "unknown")]
    pub credential: PublicKeyCredential,
}

/// A new session. The token is shown once; the server keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct SignedIn {
    /// Bearer token for `Authorization: Bearer …`.
    pub token: String,
    /// Keep this on the device and send it at the next sign-in so it counts as a known device.
    pub device_secret: String,
    pub session: SessionView,
    pub account: AccountView,
}

/// A step-up done. The session is the same one (same ID), but its token is replaced: the token
/// the step-up was made with is refused from then on, and event streams opened with it end.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct SteppedUp {
    /// The session's new bearer token; blank for a browser, which gets it as its cookie.
    pub token: String,
    pub session: SessionView,
}

// ---------------------------------------------------------------------------------------------
// Account, authenticators, sessions

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Active,
    /// A recovery key was redeemed; the window is open and any enrolled key can cancel it.
    RecoveryPending,
    /// The window ended: the account must enrol a new authenticator and a new recovery key.
    RecoveryEnrolment,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct AccountView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub created_at: Millis,
    pub state: AccountState,
    pub recovery: Option<RecoveryWindow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatorStatus {
    Active,
    /// Reported lost: refused at sign-in, kept for the record.
    Lost,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct AuthenticatorView {
    pub id: Uuid,
    /// The credential ID (base64url): matches a passkey listed on the key itself.
    pub credential_id: String,
    pub nickname: String,
    pub aaguid: Option<Uuid>,
    /// The model name, where the AAGUID is known.
    pub model: Option<String>,
    pub transports: Vec<String>,
    /// BE flag: the credential may be synced to other devices (a passkey in a password manager).
    pub backup_eligible: bool,
    /// BS flag: the credential is currently synced.
    pub backup_state: bool,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub sign_count: u32,
    pub status: AuthenticatorStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RenameAuthenticatorRequest {
    pub nickname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct AddAuthenticatorFinishRequest {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    #[ts(type = "unknown")]
    pub credential: RegisterPublicKeyCredential,
    #[serde(default)]
    pub nickname: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RemovalImpact {
    pub authenticator: AuthenticatorView,
    /// Sessions that were opened with this authenticator and would end.
    pub sessions_ending: Vec<SessionView>,
    pub readiness_after: Readiness,
    /// Why the removal would be refused, if it would.
    pub refused: Option<ApiError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct DeviceView {
    pub id: Uuid,
    pub name: String,
    pub platform: String,
    pub first_seen_at: Millis,
    pub last_seen_at: Millis,
    pub address: String,
    /// A coarse place, only where the operator configured an offline IP database.
    pub place: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum SessionScope {
    Full,
    /// Opened by a recovery key: can only watch its window, then enrol a new key and recovery key.
    Recovery,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct SessionView {
    pub id: Uuid,
    pub device: DeviceView,
    pub scope: SessionScope,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    /// When the idle timeout ends this session if it stays unused.
    pub idle_expires_at: Millis,
    /// When the absolute lifetime ends this session whatever happens.
    pub expires_at: Millis,
    /// Last user-verified assertion in this session (sign-in or step-up).
    pub verified_at: Millis,
    /// The authenticator that opened this session (none for a recovery session).
    pub opened_by: Option<Uuid>,
    pub address: String,
    /// True for the session making this request.
    pub current: bool,
    /// What the session's token is bound to.
    #[serde(default)]
    pub binding: SessionBinding,
    /// `person` (a browser or the desktop app signed in with a key) or `agent` (an AI agent or
    /// CLI a person approved with the device grant; `device.name` is the app's name).
    pub kind: SessionKind,
    /// An agent's session: the client ID of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_client_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    Person,
    Agent,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct EndedSessions {
    pub ended: Vec<Uuid>,
}

// ---------------------------------------------------------------------------------------------
// Recovery

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS, Default)]
pub struct RecoveryKeyStatus {
    pub present: bool,
    pub created_at: Option<Millis>,
    /// The user typed the key back: the backup was made.
    pub confirmed_at: Option<Millis>,
    /// Last successful drill ("test my recovery key") or confirmation.
    pub last_verified_at: Option<Millis>,
    /// No verification for longer than the drill interval.
    pub drill_due: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct SetRecoveryKeyRequest {
    /// The Ed25519 public key derived from the recovery key, base64url without padding.
    pub public_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryPurpose {
    Confirm,
    Drill,
    Redeem,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RecoveryChallengeRequest {
    pub purpose: RecoveryPurpose,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RecoveryChallenge {
    pub challenge_id: Uuid,
    pub purpose: RecoveryPurpose,
    /// 32 random bytes, base64url without padding; sign the framed message (see the docs).
    pub challenge: String,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RecoveryProof {
    pub challenge_id: Uuid,
    /// Ed25519 signature, base64url without padding.
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RedeemBeginRequest {
    pub username: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RedeemFinishRequest {
    pub challenge_id: Uuid,
    pub signature: String,
    #[serde(default)]
    pub client: ClientInfo,
    /// Bind the new session to this key on the device (see [`SessionKeyBinding`]).
    #[serde(default)]
    pub binding: Option<SessionKeyBinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RecoveryWindow {
    pub started_at: Millis,
    pub ends_at: Millis,
    /// The device that redeemed the recovery key.
    pub device_name: String,
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RecoveryStarted {
    /// A recovery-scoped session token: it can watch the window, then enrol.
    pub token: String,
    pub device_secret: String,
    pub window: RecoveryWindow,
    pub account: AccountView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct RecoveryCancelBeginRequest {
    #[serde(default)]
    pub username: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Readiness

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessLevel {
    /// One loss locks the account out.
    AtRisk,
    /// No single loss locks the account out, but something is missing.
    Partial,
    /// At least two independent authenticators and a confirmed recovery key.
    Protected,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct NextStep {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct Readiness {
    pub level: ReadinessLevel,
    pub active_authenticators: u32,
    /// Synced passkeys from one provider count once: they are lost together.
    pub independent_authenticators: u32,
    pub device_bound: u32,
    pub synced: u32,
    pub has_backup: bool,
    pub recovery_key: RecoveryKeyStatus,
    /// Authenticators not used for a long time: check they still exist.
    pub stale_authenticators: Vec<Uuid>,
    /// The one loss that would lock the account out, in words, if there is one.
    pub single_point_of_failure: Option<String>,
    pub next_step: Option<NextStep>,
    /// Live sessions whose token is not bound to a key on their device: a copy of such a
    /// token works anywhere until the session ends.
    #[serde(default)]
    pub unbound_sessions: u32,
    /// That risk in words, when there is one.
    #[serde(default)]
    pub session_risk: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Security events

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    AccountCreated,
    SignIn,
    SignInFailed,
    SessionEnded,
    AuthenticatorAdded,
    AuthenticatorRenamed,
    AuthenticatorRemoved,
    AuthenticatorReportedLost,
    RecoveryKeyGenerated,
    RecoveryKeyConfirmed,
    RecoveryKeyVerified,
    RecoveryStarted,
    RecoveryCancelled,
    RecoveryCompleted,
    ClonedKeyWarning,
    /// The service's operator disabled the account (`reason` says why): its sessions ended.
    AccountDisabled,
    /// The service's operator enabled the account again.
    AccountEnabled,
    /// An app signed the person in through Keyward (OpenID Connect): a new app session.
    AppSignIn,
    /// An app's refresh token was presented a second time: someone else holds a copy. The
    /// app's sign-in was ended.
    AppTokenReused,
    /// The account was deleted (by its owner, or by the service's operator): every session
    /// ends, and its events' details can no longer be read.
    AccountDeleted,
    /// The person approved a device code (RFC 8628) with a key: an AI agent or CLI now has a
    /// session of its own on the account.
    AgentAuthorized,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AccountCreated => "account_created",
            EventKind::SignIn => "sign_in",
            EventKind::SignInFailed => "sign_in_failed",
            EventKind::SessionEnded => "session_ended",
            EventKind::AuthenticatorAdded => "authenticator_added",
            EventKind::AuthenticatorRenamed => "authenticator_renamed",
            EventKind::AuthenticatorRemoved => "authenticator_removed",
            EventKind::AuthenticatorReportedLost => "authenticator_reported_lost",
            EventKind::RecoveryKeyGenerated => "recovery_key_generated",
            EventKind::RecoveryKeyConfirmed => "recovery_key_confirmed",
            EventKind::RecoveryKeyVerified => "recovery_key_verified",
            EventKind::RecoveryStarted => "recovery_started",
            EventKind::RecoveryCancelled => "recovery_cancelled",
            EventKind::RecoveryCompleted => "recovery_completed",
            EventKind::ClonedKeyWarning => "cloned_key_warning",
            EventKind::AccountDisabled => "account_disabled",
            EventKind::AccountEnabled => "account_enabled",
            EventKind::AppSignIn => "app_sign_in",
            EventKind::AppTokenReused => "app_token_reused",
            EventKind::AccountDeleted => "account_deleted",
            EventKind::AgentAuthorized => "agent_authorized",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    pub const ALL: [EventKind; 21] = [
        EventKind::AccountCreated,
        EventKind::SignIn,
        EventKind::SignInFailed,
        EventKind::SessionEnded,
        EventKind::AuthenticatorAdded,
        EventKind::AuthenticatorRenamed,
        EventKind::AuthenticatorRemoved,
        EventKind::AuthenticatorReportedLost,
        EventKind::RecoveryKeyGenerated,
        EventKind::RecoveryKeyConfirmed,
        EventKind::RecoveryKeyVerified,
        EventKind::RecoveryStarted,
        EventKind::RecoveryCancelled,
        EventKind::RecoveryCompleted,
        EventKind::ClonedKeyWarning,
        EventKind::AccountDisabled,
        EventKind::AccountEnabled,
        EventKind::AppSignIn,
        EventKind::AppTokenReused,
        EventKind::AccountDeleted,
        EventKind::AgentAuthorized,
    ];
}

/// How loudly a client should tell the user: `urgent` pops up, `quiet` only goes in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Quiet,
    Urgent,
}

/// Facts about an event; which are present depends on the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS, Default)]
pub struct EventDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_name: Option<String>,
    /// For `session_ended`: the session that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_session_id: Option<Uuid>,
    /// For `session_ended`: `user`, `sign_out`, `lost_key`, `authenticator_removed`, `recovery`,
    /// `account_disabled`. For `account_disabled`: the operator's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `sign_in`: whether the device had signed in to this account before, from the same
    /// place. False for a new device, or a known one in a new place: both are urgent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_device: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Millis>,
    /// Coarse place of the address, where the operator configured a place database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// For `app_sign_in` and `app_token_reused`: the app, by its registered ID and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct SecurityEvent {
    /// This account's event number (1, 2, 3, …); use it as `Last-Event-ID`. Numbered per
    /// account, so it says nothing about other accounts' activity.
    pub id: i64,
    pub account_id: Uuid,
    pub kind: EventKind,
    pub at: Millis,
    pub urgency: Urgency,
    /// The session that did it (for a sign-in, the new session).
    pub session_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub device_name: Option<String>,
    pub address: Option<String>,
    pub detail: EventDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct EventPage {
    pub events: Vec<SecurityEvent>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// What a client needs to run ceremonies with this server: the RP ID, and the origin a native
/// client claims in its client data (the first configured origin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct ServerInfo {
    pub rp_id: String,
    pub rp_name: String,
    pub origins: Vec<String>,
    pub version: String,
    /// Idle timeout and absolute session lifetime, in milliseconds.
    pub session_idle_ms: i64,
    pub session_absolute_ms: i64,
    pub recovery_window_ms: i64,
    /// How long a browser-bound session's cookie lives before its key must refresh it.
    #[serde(default)]
    pub browser_cookie_ms: i64,
}

/// The server's signed statement to one account: "this account's event `id` (its own
/// numbering, as in [`SecurityEvent::id`]) was written at `at`, and the security log up to and
/// including it digests to `hash`". The digest is keyed by the server: it commits to every
/// event logged before, any account's, and reveals nothing of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct LogCheckpoint {
    pub account_id: Uuid,
    pub id: i64,
    /// The digest, lower-case hex (32 bytes).
    pub hash: String,
    /// The event's time.
    pub at: Millis,
    /// Ed25519 over "keyward account log checkpoint v1\0" ‖ account_id (16 bytes) ‖ id (8
    /// bytes, big-endian) ‖ digest (32 bytes) ‖ at (8 bytes, big-endian), base64url.
    pub signature: String,
}

/// The signed-in account's log head, for clients that keep watch over the log: one that
/// remembers a checkpoint asks with `?seen=ID` and checks that the log still digests to what
/// it remembers at that event, and that the new checkpoint is no older.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct LogHead {
    /// The server's log key: an Ed25519 public key, base64url.
    pub public_key: String,
    /// None if the log holds none of the account's events.
    pub checkpoint: Option<LogCheckpoint>,
    /// The digest (hex) at the account's event `seen`, when asked; None if the log does not
    /// hold it.
    pub seen_hash: Option<String>,
}

/// One of the person's events in their export, with what verifies it against the server's
/// hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct ExportedEvent {
    /// The event with its details opened; `id` is the account's own number.
    pub event: SecurityEvent,
    /// Its place in the server's one log (the chain hashes it there).
    pub seq: i64,
    /// The chain hash of the log's event before it (hex; zeros for the first).
    pub prev_hash: String,
    /// The chain hash stored with it (hex).
    pub hash: String,
    /// Its details as the chain holds them: AES-256-GCM under the account's data key
    /// (base64url, nonce first). None for an event written before details were sealed, whose
    /// hash covers its details in the clear.
    pub sealed: Option<String>,
}

/// The person's whole security log, to keep or to check: `keyward verify-export FILE`
/// recomputes every event's hash from the one before it, opens each sealed event's details
/// with `data_key` and compares them, and checks `signature` (and `checkpoint`) with
/// `public_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct LogExport {
    /// `keyward-log-export-v1`.
    pub format: String,
    pub account_id: Uuid,
    pub username: String,
    pub exported_at: Millis,
    /// The server's log key: an Ed25519 public key, base64url.
    pub public_key: String,
    /// The account's data key (base64url): the key its events' details are sealed under, so
    /// they can be checked against the chain. Destroyed on the server when the account is
    /// deleted. None if the account has no sealed events.
    pub data_key: Option<String>,
    /// Oldest first.
    pub events: Vec<ExportedEvent>,
    /// The account's newest event, signed as `/api/v1/log/checkpoint` signs it.
    pub checkpoint: Option<LogCheckpoint>,
    /// Ed25519 by the log key over "keyward log export v1\0" ‖ account_id (16 bytes) ‖
    /// exported_at (8 bytes, big-endian) ‖ for each event, seq (8 bytes, big-endian) ‖ hash
    /// (32 bytes); base64url.
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// What a person must do with their security key right now, sent to the desktop UI while a
/// USB or NFC ceremony runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyPrompt {
    /// Waiting for a key: plug it in (USB) or hold it to the reader (NFC).
    InsertOrTap,
    /// The key waits for a touch.
    Touch,
    /// The key wants its PIN. `retries`: tries left before it locks; `wrong`: the last one
    /// was wrong.
    Pin { retries: Option<u32>, wrong: bool },
    /// The key is working.
    Processing,
    /// Fingerprint enrolment: samples still to give.
    Fingerprint { remaining: u32 },
    /// The ceremony is over, one way or another: close the prompt.
    Finished,
}

/// A security key as it describes itself (CTAP2 getInfo), for key management.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct KeyInfo {
    pub aaguid: Option<Uuid>,
    /// The model's name when Keyward knows the AAGUID.
    pub model: Option<String>,
    /// CTAP versions, e.g. "FIDO_2_1".
    pub versions: Vec<String>,
    pub transports: Vec<String>,
    #[ts(type = "number | null")]
    pub firmware: Option<i64>,
    pub pin_set: bool,
    /// PIN tries left before the key locks (when it has a PIN).
    pub pin_retries: Option<u32>,
    pub min_pin_length: Option<u32>,
    /// Whether the passkeys on the key can be listed and deleted (CTAP 2.1).
    pub credential_management: bool,
}

/// A passkey stored on a security key (a discoverable credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct KeyPasskey {
    pub rp_id: String,
    pub user_name: Option<String>,
    pub user_display_name: Option<String>,
    /// base64url
    pub user_handle: String,
    /// base64url
    pub credential_id: String,
}

/// The passkeys on a key and the room left for more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct KeyPasskeys {
    /// The key's model identifier, to match it with the account's keys.
    pub aaguid: Option<Uuid>,
    pub passkeys: Vec<KeyPasskey>,
    /// The key's own estimate of how many more it can store.
    pub free_slots: u32,
}

// ---------------------------------------------------------------------------------------------
// Apps signing in through Keyward (OpenID Connect)

/// One scope an app asks for, with what it lets the app see, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct ScopeView {
    pub name: String,
    pub description: String,
}

/// A pending authorization request, for the consent screen (`/#/authorize/<request_id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct AuthorizationRequestView {
    pub request_id: String,
    pub client_id: String,
    pub client_name: String,
    /// Where the browser goes afterwards (scheme://host[:port]), to show the person.
    pub redirect_origin: String,
    pub scopes: Vec<ScopeView>,
    pub signed_in: bool,
    /// `prompt=login` or `max_age` asks for a ceremony newer than the session's last: run a
    /// step-up first.
    pub needs_fresh_sign_in: bool,
    pub already_consented: bool,
    /// RFC 3339.
    pub expires_at: String,
}

/// A device authorization request (RFC 8628) waiting for the person, shown before they
/// approve it with a key (`/#/device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct DeviceRequestView {
    /// As the person should see it: `XXXX-XXXX`.
    pub user_code: String,
    pub client_id: String,
    pub client_name: String,
    /// The network address the agent asked from, and its place if known.
    pub address: String,
    pub place: Option<String>,
    pub scopes: Vec<ScopeView>,
    /// RFC 3339.
    pub expires_at: String,
    /// How long the agent's session may stay unused, and its whole lifetime, if approved.
    pub idle_limit_ms: i64,
    pub lifetime_ms: i64,
}

/// The user code a person typed (or the address carried), to look up or deny.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct DeviceCodeEntry {
    pub user_code: String,
}

/// Approving a device code: the user code and a fresh step-up assertion (begun with
/// `/api/v1/step-up/begin`), verified in this very request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, TS)]
pub struct DeviceApproval {
    pub user_code: String,
    pub assertion: AssertionFinishRequest,
}

/// The person's decision on a device code; an approval names the agent's new session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct DeviceDecision {
    pub approved: bool,
    pub client_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
}

/// The device authorization endpoint's answer (RFC 8628 3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceAuthorizationResponse {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    /// Seconds.
    pub expires_in: i64,
    /// Seconds between polls.
    pub interval: i64,
}

/// Where the web UI sends the top window after an approval or a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct AuthorizationDecision {
    pub redirect_to: String,
}

/// An app the account allowed (remembered consent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct AppConsentView {
    pub client_id: String,
    pub client_name: String,
    pub scopes: Vec<ScopeView>,
    pub granted_at: Millis,
}

/// What revoking an app's consent ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, TS)]
pub struct RevokedConsent {
    pub client_id: String,
    /// App sign-ins (grants) ended with it.
    pub grants_ended: u32,
}

/// OAuth 2.0's error body (RFC 6749 section 5.2), used by the OAuth endpoints instead of
/// `ApiError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OAuthErrorBody {
    pub error: String,
    pub error_description: String,
}

/// The token endpoint's answer (RFC 6749 section 5.1, OpenID Connect Core 3.1.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds.
    pub expires_in: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

/// Token introspection (RFC 7662): `{"active": false}` for anything not usable now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}
