//! The deployment's security policy. Advanced protection is not a setting: these knobs tune
//! lifetimes and limits, never whether protection is on.

#[derive(Debug, Clone)]
pub struct Policy {
    /// Idle timeout: a session unused this long ends (NIST AAL3: 15 minutes).
    pub session_idle_ms: i64,
    /// Absolute lifetime: a session ends this long after sign-in whatever happens (AAL3: 12 h).
    pub session_absolute_ms: i64,
    /// An agent's session (a device code a person approved): ended if unused this long. An
    /// agent refreshing its tokens is using it. Config may lower it, never past
    /// [`AGENT_IDLE_CAP_MS`].
    pub agent_idle_ms: i64,
    /// An agent's session ends this long after approval whatever happens; capped at
    /// [`AGENT_ABSOLUTE_CAP_MS`].
    pub agent_absolute_ms: i64,
    /// A ceremony's challenge is good for this long (at most 5 minutes).
    pub ceremony_ttl_ms: i64,
    /// Unauthenticated ceremonies in flight across the whole server; a bound against memory
    /// and disk DoS. The recovery veto (`recovery_cancel`) has a pool of this size of its own.
    pub max_pending_ceremonies: u32,
    /// Ceremonies in flight begun by one session (step-up, adding a key, recovery-key proofs);
    /// these count against their session and account only, never the shared pool.
    pub max_pending_per_session: u32,
    /// Ceremonies in flight begun by all of one account's sessions together.
    pub max_pending_per_account: u32,
    /// Unauthenticated ceremonies in flight begun from one network (IPv4 address, IPv6 /64).
    pub max_pending_per_network: u32,
    /// The same over the wider block around it (IPv4 /24, IPv6 /48).
    pub max_pending_per_wide_network: u32,
    /// Ended or expired sessions, and devices with no session left, are deleted this long
    /// after their last use. The security log keeps their history.
    pub session_retention_ms: i64,
    /// How often pruning runs (lazily, on a sign-in), and how many rows one run deletes.
    pub prune_every_ms: i64,
    pub prune_batch: u32,
    /// Sensitive operations need a user-verified assertion no older than this.
    pub step_up_ms: i64,
    /// How long a redeemed recovery key waits before it takes effect; 0 = at once.
    pub recovery_window_ms: i64,
    /// After the window, how long the recovery session may take to enrol a new key and a new
    /// recovery key. No idle timeout applies to it before then: a person may come back late.
    pub recovery_enrolment_ms: i64,
    /// Suggest a recovery-key drill when the last verification is older than this.
    pub drill_interval_ms: i64,
    /// An authenticator unused this long is called stale.
    pub stale_after_ms: i64,
    /// Refuse synced passkeys (BE=1): keys must be device-bound (AAL3). Restricting *models*
    /// needs attestation and lives with the server's WebAuthn configuration.
    pub require_device_bound: bool,
    /// A browser session bound to a key in the browser (WebCrypto or DBSC): how long each
    /// cookie token lives before the key must sign a refresh for a new one.
    pub browser_cookie_ms: i64,
    /// Open only sessions bound to a key on the client's device (DPoP); a finish request
    /// without a `binding` is refused. Off for a standalone keywardd (browsers bind their own
    /// way); on in the desktop app's embedded one.
    pub require_bound_sessions: bool,
}

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The most an agent's session may be configured to stay idle, and to live.
pub const AGENT_IDLE_CAP_MS: i64 = 24 * HOUR_MS;
pub const AGENT_ABSOLUTE_CAP_MS: i64 = 30 * DAY_MS;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            session_idle_ms: 15 * MINUTE_MS,
            session_absolute_ms: 12 * HOUR_MS,
            agent_idle_ms: 8 * HOUR_MS,
            agent_absolute_ms: 7 * DAY_MS,
            ceremony_ttl_ms: 5 * MINUTE_MS,
            max_pending_ceremonies: 10_000,
            max_pending_per_session: 8,
            max_pending_per_account: 32,
            max_pending_per_network: 64,
            max_pending_per_wide_network: 256,
            session_retention_ms: 90 * DAY_MS,
            prune_every_ms: HOUR_MS,
            prune_batch: 500,
            step_up_ms: 5 * MINUTE_MS,
            recovery_window_ms: 24 * HOUR_MS,
            recovery_enrolment_ms: 30 * DAY_MS,
            drill_interval_ms: 90 * DAY_MS,
            stale_after_ms: 180 * DAY_MS,
            require_device_bound: false,
            browser_cookie_ms: 5 * MINUTE_MS,
            require_bound_sessions: false,
        }
    }
}
