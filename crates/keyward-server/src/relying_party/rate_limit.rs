//! Failure counting in memory, keyed by client address, by (account, address) and by account.
//!
//! Sign-in failures block the address that made them, and the address paired with the
//! account, but never the account as a whole: an attacker elsewhere cannot lock the owner out.
//! (A WebAuthn assertion cannot be guessed, so an account-wide cap would protect nothing.)
//! Recovery-key attempts are the exception: those are capped per account too.

use std::collections::{HashMap, VecDeque};

use keyward_proto::Millis;
use parking_lot::Mutex;

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

/// Beyond this many keys, stale entries are swept before a new key is added.
const MAX_KEYS: usize = 100_000;

#[derive(Default)]
pub struct RateLimiter {
    hits: Mutex<HashMap<String, VecDeque<Millis>>>,
}

impl RateLimiter {
    /// `Some(retry_after_ms)` if `key` has reached `limit`.
    pub fn blocked(&self, key: &str, limit: Limit, now: Millis) -> Option<i64> {
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

    pub fn record(&self, key: &str, limit: Limit, now: Millis) {
        let mut hits = self.hits.lock();
        if hits.len() >= MAX_KEYS && !hits.contains_key(key) {
            hits.retain(|_, q| q.back().is_some_and(|t| *t > now - 60 * 60_000));
        }
        let q = hits.entry(key.to_string()).or_default();
        q.push_back(now);
        // Only the last `max` hits matter for the decision.
        while q.len() > limit.max as usize {
            q.pop_front();
        }
    }

    pub fn clear(&self, key: &str) {
        self.hits.lock().remove(key);
    }

    /// Counts a hit and refuses if that made it one too many.
    pub fn hit(&self, key: &str, limit: Limit, now: Millis) -> Option<i64> {
        if let Some(retry) = self.blocked(key, limit, now) {
            return Some(retry);
        }
        self.record(key, limit, now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_and_frees_after_the_window() {
        let rl = RateLimiter::default();
        let limit = Limit {
            max: 3,
            window_ms: 1000,
        };
        for t in 0..3 {
            assert!(rl.blocked("a", limit, t).is_none());
            rl.record("a", limit, t);
        }
        assert_eq!(rl.blocked("a", limit, 10), Some(990));
        assert!(
            rl.blocked("b", limit, 10).is_none(),
            "other keys are unaffected"
        );
        assert!(rl.blocked("a", limit, 1001).is_none());
    }
}
