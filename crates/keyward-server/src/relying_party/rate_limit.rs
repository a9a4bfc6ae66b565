//! Failure counting in memory, keyed by client address, by (account, address) and by account.
//!
//! Sign-in failures block the address that made them, and the address paired with the
//! account, but never the account as a whole: an attacker elsewhere cannot lock the owner out.
//! (A WebAuthn assertion cannot be guessed, so an account-wide cap would protect nothing.)
//! Recovery-key attempts are the exception: those are capped per account too.

use std::collections::{HashMap, VecDeque};

use keyward_proto::Millis;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::ServerError;

/// A limit: at most `max` events per `window_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: u32,
    pub window_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Unauthenticated ceremony starts per address.
    pub begins_per_address: Limit,
    /// Failed sign-ins per address, over all accounts.
    pub failures_per_address: Limit,
    /// Failed sign-ins per (account, address).
    pub failures_per_account_address: Limit,
    /// Failed recovery-key redemptions per account.
    pub recovery_failures_per_account: Limit,
    /// Failed recovery-key redemptions per address.
    pub recovery_failures_per_address: Limit,
}

impl Default for Limits {
    fn default() -> Self {
        const MIN: i64 = 60_000;
        Limits {
            begins_per_address: Limit {
                max: 120,
                window_ms: MIN,
            },
            failures_per_address: Limit {
                max: 30,
                window_ms: 15 * MIN,
            },
            failures_per_account_address: Limit {
                max: 10,
                window_ms: 15 * MIN,
            },
            recovery_failures_per_account: Limit {
                max: 5,
                window_ms: 60 * MIN,
            },
            recovery_failures_per_address: Limit {
                max: 10,
                window_ms: 60 * MIN,
            },
        }
    }
}

/// What is counted, and for whom. Each key has its own limit in [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// Unauthenticated ceremony starts from an address.
    Begin { address: String },
    /// Failed sign-ins from an address, over all accounts.
    Failure { address: String },
    /// Failed sign-ins against one account from one address.
    AccountFailure { account: Uuid, address: String },
    /// Failed recovery-key redemptions from an address.
    RecoveryFailure { address: String },
    /// Failed recovery-key redemptions against one account.
    AccountRecoveryFailure { account: Uuid },
}

impl LimitKey {
    fn limit(&self, limits: &Limits) -> Limit {
        match self {
            LimitKey::Begin { .. } => limits.begins_per_address,
            LimitKey::Failure { .. } => limits.failures_per_address,
            LimitKey::AccountFailure { .. } => limits.failures_per_account_address,
            LimitKey::RecoveryFailure { .. } => limits.recovery_failures_per_address,
            LimitKey::AccountRecoveryFailure { .. } => limits.recovery_failures_per_account,
        }
    }
}

/// The refusal for a key that is blocked for `retry_after_ms` more.
pub fn too_many_attempts(retry_after_ms: i64) -> ServerError {
    ServerError::RateLimited {
        retry_after_secs: (retry_after_ms / 1000 + 1) as u64,
    }
}

/// Beyond this many keys, stale entries are swept before a new key is added.
const MAX_KEYS: usize = 100_000;

pub struct RateLimiter {
    limits: Limits,
    hits: Mutex<HashMap<LimitKey, VecDeque<Millis>>>,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        RateLimiter {
            limits,
            hits: Mutex::default(),
        }
    }

    /// `Some(retry_after_ms)` if `key` has reached its limit.
    pub fn blocked(&self, key: &LimitKey, now: Millis) -> Option<i64> {
        let limit = key.limit(&self.limits);
        let mut hits = self.hits.lock();
        let q = hits.get_mut(key)?;
        while q.front().is_some_and(|t| *t <= now - limit.window_ms) {
            q.pop_front();
        }
        if q.len() as u32 >= limit.max {
            q.front().map(|oldest| oldest + limit.window_ms - now)
        } else {
            None
        }
    }

    pub fn record(&self, key: LimitKey, now: Millis) {
        let limit = key.limit(&self.limits);
        let mut hits = self.hits.lock();
        if hits.len() >= MAX_KEYS && !hits.contains_key(&key) {
            hits.retain(|_, q| q.back().is_some_and(|t| *t > now - 60 * 60_000));
        }
        let q = hits.entry(key).or_default();
        q.push_back(now);
        // Only the last `max` hits matter for the decision.
        while q.len() > limit.max as usize {
            q.pop_front();
        }
    }

    pub fn clear(&self, key: &LimitKey) {
        self.hits.lock().remove(key);
    }

    /// Counts a hit and refuses if that made it one too many.
    pub fn hit(&self, key: LimitKey, now: Millis) -> Option<i64> {
        if let Some(retry) = self.blocked(&key, now) {
            return Some(retry);
        }
        self.record(key, now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_and_frees_after_the_window() {
        let rl = RateLimiter::new(Limits {
            begins_per_address: Limit {
                max: 3,
                window_ms: 1000,
            },
            ..Limits::default()
        });
        let a = LimitKey::Begin {
            address: "a".into(),
        };
        for t in 0..3 {
            assert!(rl.blocked(&a, t).is_none());
            rl.record(a.clone(), t);
        }
        assert_eq!(rl.blocked(&a, 10), Some(990));
        assert!(
            rl.blocked(
                &LimitKey::Begin {
                    address: "b".into()
                },
                10
            )
            .is_none(),
            "other keys are unaffected"
        );
        assert!(rl.blocked(&a, 1001).is_none());
    }
}
