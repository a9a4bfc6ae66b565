//! OpenID Connect Back-Channel Logout 1.0: the rules of the outbox (`oidc_logouts`). The
//! store queues a row in the transaction that ends a Keyward session or a grant; here due rows
//! are claimed with a lease, each gets its logout token (signed now with the active key), and
//! each attempt's outcome decides what follows: delivered, retried with backoff for up to a
//! day, or given up. The sending itself (HTTP) is `crate::backchannel`'s.

use keyward_core::store::{LogoutOutcome, Tx};
use keyward_proto::Millis;
use serde::Serialize;
use uuid::Uuid;

use super::claims::seconds;
use crate::error::{Result, ServerError};
use crate::relying_party::RelyingParty;

/// The event a logout token carries (Back-Channel Logout 1.0, 2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token is good for two minutes from its signing (short, as advised against replay).
pub const LOGOUT_TOKEN_TTL_MS: i64 = 2 * 60_000;
/// A claimed row is the claimant's for this long; a sender that died is replaced after it.
pub const LEASE_MS: i64 = 60_000;
/// Failures are retried for a day after the sign-in ended, then given up.
pub const RETRY_FOR_MS: i64 = 24 * 60 * 60_000;
/// Retries wait 1 s, 2 s, 4 s ... up to an hour.
const FIRST_RETRY_MS: i64 = 1_000;
const LONGEST_WAIT_MS: i64 = 60 * 60_000;
/// Rows claimed at once.
pub const CLAIM_BATCH: u32 = 32;

#[derive(Serialize)]
struct LogoutTokenClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    sid: &'a str,
    events: serde_json::Value,
}

/// One logout to post: `logout_token=<token>` to `uri`.
#[derive(Debug, Clone)]
pub struct LogoutDelivery {
    pub id: Uuid,
    /// The app's registered back-channel logout URI.
    pub uri: String,
    pub token: String,
    pub created_at: Millis,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// What one attempt met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The app answered with this status.
    Status(u16),
    /// No answer in time.
    TimedOut,
    /// No connection, or the exchange broke off.
    Failed(String),
}

impl Attempt {
    fn describe(&self) -> String {
        match self {
            Attempt::Status(code) => format!("status {code}"),
            Attempt::TimedOut => "timed out".into(),
            Attempt::Failed(why) => why.chars().take(200).collect(),
        }
    }
}

/// Back-Channel Logout 1.0, 2.8: 200 (or 204, which some frameworks send) is success; a 400
/// is the app refusing the token, which sending again will not change. A 5xx, 408 or 429,
/// or no answer, is worth retrying with backoff, until `RETRY_FOR_MS` has passed.
pub fn outcome_of(
    attempt: &Attempt,
    created_at: Millis,
    attempts: i64,
    now: Millis,
) -> LogoutOutcome {
    let retry = match attempt {
        Attempt::Status(200 | 204) => return LogoutOutcome::Delivered,
        Attempt::Status(code) => *code >= 500 || *code == 408 || *code == 429,
        Attempt::TimedOut | Attempt::Failed(_) => true,
    };
    if !retry {
        return LogoutOutcome::GaveUp;
    }
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let wait = FIRST_RETRY_MS
        .saturating_mul(1_i64 << doublings)
        .min(LONGEST_WAIT_MS);
    let at = now + wait;
    if at - created_at > RETRY_FOR_MS {
        LogoutOutcome::GaveUp
    } else {
        LogoutOutcome::RetryAt(at)
    }
}

/// Only http(s) addresses are ever posted to (registration holds them to https, or http on
/// loopback); anything else in the row is given up rather than sent.
fn sendable(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
}

impl RelyingParty {
    /// Claims the logouts due now (a lease each) and signs their tokens, in one transaction.
    /// A row whose app no longer has a back-channel URI is given up there and then.
    pub fn claim_logouts(&self) -> Result<Vec<LogoutDelivery>> {
        let now = self.now();
        if !self.store.read(|tx| tx.logouts_due(now))? {
            return Ok(Vec::new());
        }
        // Unsynced: a claim lost in a power cut only means the row is sent once more.
        self.store.write_unsynced(|tx| {
            let mut out = Vec::new();
            for logout in tx.claim_logouts(now, LEASE_MS, CLAIM_BATCH)? {
                let uri = tx
                    .oidc_client(&logout.client_id)?
                    .and_then(|c| c.backchannel_logout_uri)
                    .filter(|u| sendable(u));
                let Some(uri) = uri else {
                    tx.record_logout(logout.id, LogoutOutcome::GaveUp, "no back-channel URI", now)?;
                    continue;
                };
                let token =
                    self.logout_token(tx, &logout.client_id, logout.account_id, &logout.sid, now)?;
                out.push(LogoutDelivery {
                    id: logout.id,
                    uri,
                    token,
                    created_at: logout.created_at,
                    attempts: logout.attempts,
                });
            }
            Ok::<_, ServerError>(out)
        })
    }

    /// The logout token (2.4): `iss`, `aud` the app, the pairwise `sub` and `sid` of its
    /// sign-in, `iat`, a short `exp`, a fresh `jti`, the back-channel logout event, and never
    /// a `nonce`; typed `logout+jwt` (2.4, 4.1 against cross-JWT confusion), signed like ID
    /// tokens.
    fn logout_token(
        &self,
        tx: &Tx<'_>,
        client_id: &str,
        account_id: Uuid,
        sid: &str,
        now: Millis,
    ) -> Result<String> {
        let provider = &self.oidc;
        let claims = LogoutTokenClaims {
            iss: &provider.issuer,
            sub: provider.subject(client_id, account_id),
            aud: client_id,
            iat: seconds(now),
            exp: seconds(now + LOGOUT_TOKEN_TTL_MS),
            jti: Uuid::new_v4().simple().to_string(),
            sid,
            events: serde_json::json!({ BACKCHANNEL_LOGOUT_EVENT: {} }),
        };
        provider.sign(tx, &claims, Some("logout+jwt"))
    }

    /// Records what an attempt to deliver `delivery` met; the outcome decided.
    pub fn record_logout_attempt(
        &self,
        delivery: &LogoutDelivery,
        attempt: &Attempt,
    ) -> Result<LogoutOutcome> {
        let now = self.now();
        let outcome = outcome_of(attempt, delivery.created_at, delivery.attempts, now);
        let detail = attempt.describe();
        self.store.write(|tx| {
            tx.record_logout(delivery.id, outcome, &detail, now)?;
            Ok::<_, ServerError>(())
        })?;
        Ok(outcome)
    }

    /// Ends the sessions that lapsed (idle or past their lifetime) without anyone noticing,
    /// behind which an app with a back-channel URI is still signed in, so their logouts are
    /// queued now rather than at the next use of the session. Returns how many it ended.
    pub fn end_lapsed_app_sessions(&self) -> Result<usize> {
        let now = self.now();
        let idle = self.policy.session_idle_ms;
        let lapsed = self
            .store
            .read(|tx| tx.lapsed_sessions_to_tell(now, idle, CLAIM_BATCH))?;
        if lapsed.is_empty() {
            return Ok(0);
        }
        self.store.write(|tx| {
            let mut ended = 0;
            for (id, reason) in &lapsed {
                ended += usize::from(tx.end_session(*id, reason, now)?);
            }
            Ok::<_, ServerError>(ended)
        })
    }

    /// Logouts neither delivered nor given up (the `keyward_backchannel_pending` gauge).
    pub fn pending_logouts(&self) -> Result<i64> {
        Ok(self.store.read(|tx| tx.pending_logouts())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_200_or_204_a_refusal_is_final_and_failures_back_off_for_a_day() {
        let t = 1_000_000;
        for ok in [200, 204] {
            assert_eq!(
                outcome_of(&Attempt::Status(ok), t, 1, t),
                LogoutOutcome::Delivered
            );
        }
        for refused in [400, 401, 404, 301] {
            assert_eq!(
                outcome_of(&Attempt::Status(refused), t, 1, t),
                LogoutOutcome::GaveUp
            );
        }
        for again in [
            Attempt::Status(503),
            Attempt::Status(429),
            Attempt::TimedOut,
        ] {
            assert_eq!(
                outcome_of(&again, t, 1, t),
                LogoutOutcome::RetryAt(t + 1_000)
            );
            assert_eq!(
                outcome_of(&again, t, 3, t),
                LogoutOutcome::RetryAt(t + 4_000)
            );
            assert_eq!(
                outcome_of(&again, t, 40, t),
                LogoutOutcome::RetryAt(t + LONGEST_WAIT_MS),
                "never more than an hour apart"
            );
        }
        let late = t + RETRY_FOR_MS - 500;
        assert_eq!(
            outcome_of(&Attempt::Status(500), t, 20, late),
            LogoutOutcome::GaveUp,
            "a day after the sign-in ended, retries stop"
        );
        assert!(!sendable("ftp://app.example/bcl"));
        assert!(!sendable("file:///etc/passwd"));
        assert!(sendable("https://app.example/bcl"));
    }
}
