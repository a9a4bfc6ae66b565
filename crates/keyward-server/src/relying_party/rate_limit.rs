//! Counting attempts, keyed by client network, by (what the client named, network) and by
//! account.
//!
//! Sign-in failures block the network that made them, and the network paired with what it
//! tried (the username it named, or, signing in without one, the credential it presented),
//! but never the account as a whole: an attacker elsewhere cannot lock the owner out. (A
//! WebAuthn assertion cannot be guessed, so an account-wide cap would protect nothing.) That
//! pair is made of what the client sent, never of the account the server found, so it counts
//! and blocks alike whether a name exists or not: 429 versus 400 tells nothing.
//! Recovery-key attempts are the same: an Ed25519 proof over a 128-bit key cannot be guessed,
//! so they are counted per network only, never per account, and an unknown username costs the
//! same as a known one (no lock-out button, no oracle).
//!
//! Addresses are counted by [`Network`]: an IPv4 address, or an IPv6 address's /64, since one
//! subscriber holds a whole /64 and could otherwise rotate through it around every limit.
//!
//! The hits live in the database (`limit_hits`), written in the transaction of the attempt
//! they count: every instance on one database counts into the same rows, so a limit holds
//! across instances and restarts, and a transaction that runs again after a conflict counts
//! once. A limit is a sliding window: a key is blocked while its last `max` hits all fall
//! within `window_ms`. A blocked attempt is not counted, so a key holds at most `max` live
//! rows; rows whose window has passed are pruned in batches (`prune_if_due`).

use std::net::IpAddr;

use keyward_core::store::Tx;
use keyward_proto::Millis;
use uuid::Uuid;

use crate::error::{Result, ServerError};

/// A limit: at most `max` events per `window_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: u32,
    pub window_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Unauthenticated ceremony starts per network.
    pub begins_per_address: Limit,
    /// Failed sign-ins per network, over all accounts.
    pub failures_per_address: Limit,
    /// Failed sign-ins per (username or credential named, network).
    pub failures_per_target_address: Limit,
    /// Failed recovery-key redemptions per network (known and unknown usernames alike).
    pub recovery_failures_per_address: Limit,
    /// Key renames per account (each is a synced write and a permanent log row).
    pub renames_per_account: Limit,
    /// Device-grant user codes entered that name no waiting request, per network: a user
    /// code has about 34.6 bits (8 of 20 letters), so guessing must be slow (RFC 8628 5.1).
    pub user_code_failures_per_address: Limit,
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
            failures_per_target_address: Limit {
                max: 10,
                window_ms: 15 * MIN,
            },
            recovery_failures_per_address: Limit {
                max: 10,
                window_ms: 60 * MIN,
            },
            renames_per_account: Limit {
                max: 20,
                window_ms: 60 * MIN,
            },
            user_code_failures_per_address: Limit {
                max: 10,
                window_ms: 60 * MIN,
            },
        }
    }
}

/// What address limits count by: an IPv4 address, or the /64 of an IPv6 address. Only
/// [`Network::of`] makes one, so no limit can be keyed by a raw IPv6 address by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Network(String);

impl Network {
    pub fn of(address: &str) -> Network {
        match address.parse::<IpAddr>().map(crate::net::canonical) {
            Ok(IpAddr::V6(v6)) => {
                let s = v6.segments();
                Network(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
            }
            Ok(v4) => Network(v4.to_string()),
            Err(_) => Network(address.to_string()),
        }
    }

    /// The wider block around an address, for bounds that a party holding a whole
    /// allocation must not multiply: an IPv4 /24, an IPv6 /48.
    pub fn wide(address: &str) -> Network {
        match address.parse::<IpAddr>().map(crate::net::canonical) {
            Ok(IpAddr::V6(v6)) => {
                let s = v6.segments();
                Network(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
            }
            Ok(IpAddr::V4(v4)) => {
                let o = v4.octets();
                Network(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
            }
            Err(_) => Network(address.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a failed sign-in tried, as the client named it: a username, or (signing in without
/// one) a credential ID. Held as a SHA-256, so every key is the same small size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target([u8; 32]);

impl Target {
    /// A normalised username.
    pub fn username(name: &str) -> Target {
        Target::of(b"username", name.as_bytes())
    }

    pub fn credential(id: &[u8]) -> Target {
        Target::of(b"credential", id)
    }

    fn of(label: &[u8], value: &[u8]) -> Target {
        use sha2::{Digest, Sha256};
        Target(
            Sha256::new()
                .chain_update((label.len() as u64).to_be_bytes())
                .chain_update(label)
                .chain_update(value)
                .finalize()
                .into(),
        )
    }
}

/// What is counted, and for whom. Each key has its own limit in [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// Unauthenticated ceremony starts from a network.
    Begin { network: Network },
    /// Failed sign-ins from a network, over all accounts.
    Failure { network: Network },
    /// Failed sign-ins against one username or credential from one network.
    TargetFailure { target: Target, network: Network },
    /// Failed recovery-key redemptions from a network, whatever the username.
    RecoveryFailure { network: Network },
    /// Renames of the account's keys.
    Rename { account: Uuid },
    /// Wrong device-grant user codes from a network.
    UserCodeFailure { network: Network },
}

impl LimitKey {
    fn limit(&self, limits: &Limits) -> Limit {
        match self {
            LimitKey::Begin { .. } => limits.begins_per_address,
            LimitKey::Failure { .. } => limits.failures_per_address,
            LimitKey::TargetFailure { .. } => limits.failures_per_target_address,
            LimitKey::RecoveryFailure { .. } => limits.recovery_failures_per_address,
            LimitKey::Rename { .. } => limits.renames_per_account,
            LimitKey::UserCodeFailure { .. } => limits.user_code_failures_per_address,
        }
    }

    /// The key as `limit_hits` stores it: what is counted, then for whom.
    fn stored(&self) -> String {
        match self {
            LimitKey::Begin { network } => format!("begin {}", network.as_str()),
            LimitKey::Failure { network } => format!("failure {}", network.as_str()),
            LimitKey::TargetFailure { target, network } => {
                let digest: String = target.0.iter().map(|b| format!("{b:02x}")).collect();
                format!("target {digest} {}", network.as_str())
            }
            LimitKey::RecoveryFailure { network } => format!("recovery {}", network.as_str()),
            LimitKey::Rename { account } => format!("rename {}", account.simple()),
            LimitKey::UserCodeFailure { network } => format!("user_code {}", network.as_str()),
        }
    }
}

/// The refusal for a key that is blocked for `retry_after_ms` more.
pub fn too_many_attempts(retry_after_ms: i64) -> ServerError {
    ServerError::RateLimited {
        retry_after_secs: (retry_after_ms / 1000 + 1) as u64,
    }
}

pub struct RateLimiter {
    limits: Limits,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        RateLimiter { limits }
    }

    /// `Some(retry_after_ms)` if `key` has reached its limit.
    pub fn blocked(&self, tx: &Tx<'_>, key: &LimitKey, now: Millis) -> Result<Option<i64>> {
        let limit = key.limit(&self.limits);
        let hits = tx.limit_hits(&key.stored(), now - limit.window_ms, limit.max)?;
        Ok(match hits.last() {
            // The oldest of the last `max` hits: the key is free once it leaves the window.
            Some(oldest) if hits.len() as u32 >= limit.max => Some(oldest + limit.window_ms - now),
            _ => None,
        })
    }

    pub fn record(&self, tx: &Tx<'_>, key: &LimitKey, now: Millis) -> Result<()> {
        let window = key.limit(&self.limits).window_ms;
        Ok(tx.record_limit_hit(&key.stored(), now, now + window)?)
    }

    pub fn clear(&self, tx: &Tx<'_>, key: &LimitKey) -> Result<()> {
        Ok(tx.clear_limit(&key.stored())?)
    }

    /// Counts a hit and refuses if that made it one too many (a refused hit is not counted).
    pub fn hit(&self, tx: &Tx<'_>, key: &LimitKey, now: Millis) -> Result<Option<i64>> {
        if let Some(retry) = self.blocked(tx, key, now)? {
            return Ok(Some(retry));
        }
        self.record(tx, key, now)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use keyward_core::Store;
    use keyward_core::store::testing;

    use super::*;

    fn limiter(max: u32) -> RateLimiter {
        RateLimiter::new(Limits {
            begins_per_address: Limit {
                max,
                window_ms: 1000,
            },
            ..Limits::default()
        })
    }

    fn begin(address: &str) -> LimitKey {
        LimitKey::Begin {
            network: Network::of(address),
        }
    }

    /// Runs `f` in a write transaction of `store`.
    fn write<T>(store: &Store, mut f: impl FnMut(&Tx<'_>) -> Result<T>) -> T {
        store.write(|tx| f(tx)).unwrap()
    }

    #[test]
    fn blocks_after_max_and_frees_after_the_window() {
        let store = testing::store().unwrap();
        let rl = limiter(3);
        let a = begin("192.0.2.1");
        for t in 0..3 {
            assert_eq!(write(&store, |tx| rl.hit(tx, &a, t)), None);
        }
        assert_eq!(write(&store, |tx| rl.blocked(tx, &a, 10)), Some(990));
        assert_eq!(
            write(&store, |tx| rl.blocked(tx, &begin("192.0.2.2"), 10)),
            None,
            "other keys are unaffected"
        );
        assert_eq!(write(&store, |tx| rl.blocked(tx, &a, 1001)), None);
    }

    #[test]
    fn a_refused_hit_is_not_counted_and_expired_hits_are_pruned() {
        let store = testing::store().unwrap();
        let rl = limiter(3);
        let a = begin("192.0.2.1");
        for t in 0..10 {
            write(&store, |tx| rl.hit(tx, &a, t));
        }
        let rows = |at| {
            store
                .read(|tx| tx.limit_hits(&a.stored(), at, 100))
                .unwrap()
                .len()
        };
        assert_eq!(rows(-1), 3, "a key holds at most `max` live rows");
        // The first hit leaves the window at 1000: one more is let through, no sooner.
        assert_eq!(write(&store, |tx| rl.hit(tx, &a, 999)), Some(1));
        assert_eq!(write(&store, |tx| rl.hit(tx, &a, 1000)), None);
        // Once every hit has expired, pruning deletes them all.
        let pruned = write(&store, |tx| Ok(tx.prune_limit_hits(3000, 100)?));
        assert_eq!(pruned, 4);
        assert_eq!(rows(-1), 0);
    }

    #[test]
    fn clearing_a_key_forgives_it_alone() {
        let store = testing::store().unwrap();
        let rl = limiter(1);
        let (a, b) = (begin("192.0.2.1"), begin("192.0.2.2"));
        write(&store, |tx| {
            rl.record(tx, &a, 0)?;
            rl.record(tx, &b, 0)?;
            rl.clear(tx, &a)
        });
        assert_eq!(write(&store, |tx| rl.blocked(tx, &a, 1)), None);
        assert_eq!(write(&store, |tx| rl.blocked(tx, &b, 1)), Some(999));
    }

    #[test]
    fn every_key_is_stored_apart() {
        let net = Network::of("192.0.2.1");
        let keys = [
            LimitKey::Begin {
                network: net.clone(),
            },
            LimitKey::Failure {
                network: net.clone(),
            },
            LimitKey::TargetFailure {
                target: Target::username("ada"),
                network: net.clone(),
            },
            LimitKey::TargetFailure {
                target: Target::credential(b"ada"),
                network: net.clone(),
            },
            LimitKey::RecoveryFailure { network: net },
            LimitKey::Rename {
                account: Uuid::nil(),
            },
        ];
        let stored: std::collections::HashSet<String> = keys.iter().map(LimitKey::stored).collect();
        assert_eq!(stored.len(), keys.len());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_network_and_ipv4_mapped_is_ipv4() {
        assert_eq!(
            Network::of("2001:db8:1:2::1"),
            Network::of("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(
            Network::of("2001:db8:1:2::1"),
            Network::of("2001:db8:1:3::1")
        );
        assert_eq!(Network::of("2001:db8:1:2::1").as_str(), "2001:db8:1:2::/64");
        assert_eq!(Network::of("::ffff:192.0.2.1"), Network::of("192.0.2.1"));
        assert_ne!(Network::of("192.0.2.1"), Network::of("192.0.2.2"));
        assert_eq!(Network::wide("2001:db8:1:2::1").as_str(), "2001:db8:1::/48");
        assert_eq!(
            Network::wide("2001:db8:1:ff::1"),
            Network::wide("2001:db8:1:2::1")
        );
        assert_eq!(Network::wide("::ffff:192.0.2.7").as_str(), "192.0.2.0/24");
    }
}
