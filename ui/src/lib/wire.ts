// Generated from the Rust wire types (keyward-proto, src-tauri/desktop.rs) by
// tests/wire_types.rs. Do not edit: `KEYWARD_UPDATE_WIRE=1 cargo test --test wire_types`.

export type ApiError = { code: ErrorCode, message: string, };

export type KeyPrompt = { "kind": "insert_or_tap" } | { "kind": "touch" } | { "kind": "pin", retries: number | null, wrong: boolean, } | { "kind": "processing" } | { "kind": "fingerprint", remaining: number, } | { "kind": "finished" };

export type KeyInfo = { aaguid: string | null, 
/**
 * The model's name when Keyward knows the AAGUID.
 */
model: string | null, 
/**
 * CTAP versions, e.g. "FIDO_2_1".
 */
versions: Array<string>, transports: Array<string>, firmware: number | null, pin_set: boolean, 
/**
 * PIN tries left before the key locks (when it has a PIN).
 */
pin_retries: number | null, min_pin_length: number | null, 
/**
 * Whether the passkeys on the key can be listed and deleted (CTAP 2.1).
 */
credential_management: boolean, };

export type KeyPasskey = { rp_id: string, user_name: string | null, user_display_name: string | null, 
/**
 * base64url
 */
user_handle: string, 
/**
 * base64url
 */
credential_id: string, };

export type KeyPasskeys = { 
/**
 * The key's model identifier, to match it with the account's keys.
 */
aaguid: string | null, passkeys: Array<KeyPasskey>, 
/**
 * The key's own estimate of how many more it can store.
 */
free_slots: number, };

export type KeyPasskeyView = { passkey: KeyPasskey, 
/**
 * For this Keyward server's site (RP ID).
 */
this_site: boolean, 
/**
 * The account key it is, by nickname; none for this site means the account no longer
 * knows it (removed from the account, still on the key).
 */
account_key: string | null, };

export type KeyPasskeysView = { passkeys: Array<KeyPasskeyView>, 
/**
 * Room for this many more passkeys: a registration beyond it would fail.
 */
free_slots: number, 
/**
 * The account's keys of this key's model whose passkey is not on this key (see
 * `Desktop::key_passkeys`).
 */
missing_on_key: Array<string>, };

export type ErrorCode = "invalid_input" | "malformed_body" | "unsupported_media_type" | "payload_too_large" | "not_found" | "unauthenticated" | "session_expired" | "step_up_required" | "forbidden" | "ceremony_expired" | "authentication_failed" | "registration_failed" | "username_unavailable" | "policy_refused" | "last_authenticator" | "recovery_failed" | "recovery_in_progress" | "rate_limited" | "conflict" | "account_disabled" | "proof_required" | "proof_invalid" | "proof_nonce_required" | "binding_required" | "unavailable" | "internal";

export type ClientInfo = { 
/**
 * A human name for the client, e.g. "Keyward desktop on ada-laptop".
 */
name: string, 
/**
 * Operating system or browser family, e.g. "Linux".
 */
platform: string, };

export type AccountState = "active" | "recovery_pending" | "recovery_enrolment";

export type AccountView = { id: string, username: string, display_name: string, created_at: number, state: AccountState, recovery: RecoveryWindow | null, };

export type RecoveryWindow = { started_at: number, ends_at: number, 
/**
 * The device that redeemed the recovery key.
 */
device_name: string, address: string, };

export type AuthenticatorStatus = "active" | "lost";

export type AuthenticatorView = { id: string, 
/**
 * The credential ID (base64url): matches a passkey listed on the key itself.
 */
credential_id: string, nickname: string, aaguid: string | null, 
/**
 * The model name, where the AAGUID is known.
 */
model: string | null, transports: Array<string>, 
/**
 * BE flag: the credential may be synced to other devices (a passkey in a password manager).
 */
backup_eligible: boolean, 
/**
 * BS flag: the credential is currently synced.
 */
backup_state: boolean, created_at: number, last_used_at: number | null, sign_count: number, status: AuthenticatorStatus, };

export type DeviceView = { id: string, name: string, platform: string, first_seen_at: number, last_seen_at: number, address: string, 
/**
 * A coarse place, only where the operator configured an offline IP database.
 */
place: string | null, };

export type SessionScope = "full" | "recovery";

export type SessionBinding = "unbound" | "software" | "hardware" | "browser" | "dbsc";

export type SessionView = { id: string, device: DeviceView, scope: SessionScope, created_at: number, last_seen_at: number, 
/**
 * When the idle timeout ends this session if it stays unused.
 */
idle_expires_at: number, 
/**
 * When the absolute lifetime ends this session whatever happens.
 */
expires_at: number, 
/**
 * Last user-verified assertion in this session (sign-in or step-up).
 */
verified_at: number, 
/**
 * The authenticator that opened this session (none for a recovery session).
 */
opened_by: string | null, address: string, 
/**
 * True for the session making this request.
 */
current: boolean, 
/**
 * What the session's token is bound to.
 */
binding: SessionBinding, 
/**
 * `person` (a browser or the desktop app signed in with a key) or `agent` (an AI agent or
 * CLI a person approved with the device grant; `device.name` is the app's name).
 */
kind: SessionKind, 
/**
 * An agent's session: the client ID of the agent.
 */
agent_client_id?: string | null, };

export type SessionKind = "person" | "agent";

export type SteppedUp = { 
/**
 * The session's new bearer token; blank for a browser, which gets it as its cookie.
 */
token: string, session: SessionView, };

export type EndedSessions = { ended: Array<string>, };

export type RemovalImpact = { authenticator: AuthenticatorView, 
/**
 * Sessions that were opened with this authenticator and would end.
 */
sessions_ending: Array<SessionView>, readiness_after: Readiness, 
/**
 * Why the removal would be refused, if it would.
 */
refused: ApiError | null, };

export type RecoveryKeyStatus = { present: boolean, created_at: number | null, 
/**
 * The user typed the key back: the backup was made.
 */
confirmed_at: number | null, 
/**
 * Last successful drill ("test my recovery key") or confirmation.
 */
last_verified_at: number | null, 
/**
 * No verification for longer than the drill interval.
 */
drill_due: boolean, };

export type RecoveryPurpose = "confirm" | "drill" | "redeem";

export type RecoveryStarted = { 
/**
 * A recovery-scoped session token: it can watch the window, then enrol.
 */
token: string, device_secret: string, window: RecoveryWindow, account: AccountView, };

export type ReadinessLevel = "at_risk" | "partial" | "protected";

export type NextStep = { code: string, message: string, };

export type Readiness = { level: ReadinessLevel, active_authenticators: number, 
/**
 * Synced passkeys from one provider count once: they are lost together.
 */
independent_authenticators: number, device_bound: number, synced: number, has_backup: boolean, recovery_key: RecoveryKeyStatus, 
/**
 * Authenticators not used for a long time: check they still exist.
 */
stale_authenticators: Array<string>, 
/**
 * The one loss that would lock the account out, in words, if there is one.
 */
single_point_of_failure: string | null, next_step: NextStep | null, 
/**
 * Live sessions whose token is not bound to a key on their device: a copy of such a
 * token works anywhere until the session ends.
 */
unbound_sessions: number, 
/**
 * That risk in words, when there is one.
 */
session_risk: string | null, };

export type EventKind = "account_created" | "sign_in" | "sign_in_failed" | "session_ended" | "authenticator_added" | "authenticator_renamed" | "authenticator_removed" | "authenticator_reported_lost" | "recovery_key_generated" | "recovery_key_confirmed" | "recovery_key_verified" | "recovery_started" | "recovery_cancelled" | "recovery_completed" | "cloned_key_warning" | "account_disabled" | "account_enabled" | "app_sign_in" | "app_token_reused" | "account_deleted" | "agent_authorized";

export type Urgency = "quiet" | "urgent";

export type EventDetail = { authenticator_id?: string | null, authenticator_name?: string | null, 
/**
 * For `session_ended`: the session that ended.
 */
ended_session_id?: string | null, 
/**
 * For `session_ended`: `user`, `sign_out`, `lost_key`, `authenticator_removed`, `recovery`,
 * `account_disabled`. For `account_disabled`: the operator's words.
 */
reason?: string | null, 
/**
 * For `sign_in`: whether the device had signed in to this account before, from the same
 * place. False for a new device, or a known one in a new place: both are urgent.
 */
known_device?: boolean | null, ends_at?: number | null, 
/**
 * Coarse place of the address, where the operator configured a place database.
 */
place?: string | null, 
/**
 * For `app_sign_in` and `app_token_reused`: the app, by its registered ID and name.
 */
client_id?: string | null, client_name?: string | null, };

export type SecurityEvent = { 
/**
 * This account's event number (1, 2, 3, …); use it as `Last-Event-ID`. Numbered per
 * account, so it says nothing about other accounts' activity.
 */
id: number, account_id: string, kind: EventKind, at: number, urgency: Urgency, 
/**
 * The session that did it (for a sign-in, the new session).
 */
session_id: string | null, device_id: string | null, device_name: string | null, address: string | null, detail: EventDetail, };

export type EventPage = { events: Array<SecurityEvent>, 
/**
 * Pass as `before` to get the next (older) page; absent on the last page.
 */
next_before: number | null, };

export type LogCheckpoint = { account_id: string, id: number, 
/**
 * The digest, lower-case hex (32 bytes).
 */
hash: string, 
/**
 * The event's time.
 */
at: number, 
/**
 * Ed25519 over "keyward account log checkpoint v1\0" ‖ account_id (16 bytes) ‖ id (8
 * bytes, big-endian) ‖ digest (32 bytes) ‖ at (8 bytes, big-endian), base64url.
 */
signature: string, };

export type ExportedEvent = { 
/**
 * The event with its details opened; `id` is the account's own number.
 */
event: SecurityEvent, 
/**
 * Its place in the server's one log (the chain hashes it there).
 */
seq: number, 
/**
 * The chain hash of the log's event before it (hex; zeros for the first).
 */
prev_hash: string, 
/**
 * The chain hash stored with it (hex).
 */
hash: string, 
/**
 * Its details as the chain holds them: AES-256-GCM under the account's data key
 * (base64url, nonce first). None for an event written before details were sealed, whose
 * hash covers its details in the clear.
 */
sealed: string | null, };

export type LogExport = { 
/**
 * `keyward-log-export-v1`.
 */
format: string, account_id: string, username: string, exported_at: number, 
/**
 * The server's log key: an Ed25519 public key, base64url.
 */
public_key: string, 
/**
 * The account's data key (base64url): the key its events' details are sealed under, so
 * they can be checked against the chain. Destroyed on the server when the account is
 * deleted. None if the account has no sealed events.
 */
data_key: string | null, 
/**
 * Oldest first.
 */
events: Array<ExportedEvent>, 
/**
 * The account's newest event, signed as `/api/v1/log/checkpoint` signs it.
 */
checkpoint: LogCheckpoint | null, 
/**
 * Ed25519 by the log key over "keyward log export v1\0" ‖ account_id (16 bytes) ‖
 * exported_at (8 bytes, big-endian) ‖ for each event, seq (8 bytes, big-endian) ‖ hash
 * (32 bytes); base64url.
 */
signature: string, };

export type ServerInfo = { rp_id: string, rp_name: string, origins: Array<string>, version: string, 
/**
 * Idle timeout and absolute session lifetime, in milliseconds.
 */
session_idle_ms: number, session_absolute_ms: number, recovery_window_ms: number, 
/**
 * How long a browser-bound session's cookie lives before its key must refresh it.
 */
browser_cookie_ms: number, };

export type AuthorizationRequestView = { request_id: string, client_id: string, client_name: string, 
/**
 * Where the browser goes afterwards (scheme://host[:port]), to show the person.
 */
redirect_origin: string, scopes: Array<ScopeView>, signed_in: boolean, 
/**
 * `prompt=login` or `max_age` asks for a ceremony newer than the session's last: run a
 * step-up first.
 */
needs_fresh_sign_in: boolean, already_consented: boolean, 
/**
 * RFC 3339.
 */
expires_at: string, };

export type ScopeView = { name: string, description: string, };

export type AuthorizationDecision = { redirect_to: string, };

export type DeviceRequestView = { 
/**
 * As the person should see it: `XXXX-XXXX`.
 */
user_code: string, client_id: string, client_name: string, 
/**
 * The network address the agent asked from, and its place if known.
 */
address: string, place: string | null, scopes: Array<ScopeView>, 
/**
 * RFC 3339.
 */
expires_at: string, 
/**
 * How long the agent's session may stay unused, and its whole lifetime, if approved.
 */
idle_limit_ms: number, lifetime_ms: number, };

export type DeviceDecision = { approved: boolean, client_name: string, session_id?: string | null, };

export type AppStatus = { server: string | null, embedded: boolean, 
/**
 * The origin every ceremony signs for, taken from the address chosen (never from the
 * server), and the RP ID the server declared, checked to belong to it.
 */
origin: string | null, rp_id: string | null, account: AccountView | null, session_id: string | null, 
/**
 * The authenticator the app uses: the virtual key until hardware is chosen.
 */
key_label: string, virtual_keys: number, key_kind: KeyKind, 
/**
 * The session was dropped because the app sat idle past the server's idle timeout: a
 * touch of the key unlocks it.
 */
locked: boolean, 
/**
 * This machine holds the recovery session (it redeemed the recovery key).
 */
recovering: boolean, 
/**
 * The server's security log does not extend the signed head this app saw before: events
 * may have been removed or changed. Shown prominently until the log extends it again.
 */
log_alarm: string | null, };

export type KeyKind = "security_key" | "virtual";

export type Overview = { account: AccountView, readiness: Readiness, sessions: Array<SessionView>, authenticators: Array<AuthenticatorView>, };

export type NewRecoveryKey = { key: string, status: RecoveryKeyStatus, };

export type FeedMessage = { "type": "events", events: Array<SecurityEvent>, } | { "type": "open", session_id: string | null, };
