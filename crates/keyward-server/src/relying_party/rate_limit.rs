//! Counting in memory, keyed by client network, by (what the client named, network) and by
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
//! Memory is bounded: at most `max_keys` keys; every hit also looks at the two keys seen
//! longest ago and drops those whose window has passed (amortised O(1), no scan), and a new key
//! past the bound evicts the key examined longest ago.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

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
    /// Keys the limiter remembers at most.
    pub max_keys: usize,
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
            max_keys: 100_000,
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
}

impl LimitKey {
    fn limit(&self, limits: &Limits) -> Limit {
        match self {
            LimitKey::Begin { .. } => limits.begins_per_address,
            LimitKey::Failure { .. } => limits.failures_per_address,
            LimitKey::TargetFailure { .. } => limits.failures_per_target_address,
            LimitKey::RecoveryFailure { .. } => limits.recovery_failures_per_address,
            LimitKey::Rename { .. } => limits.renames_per_account,
        }
    }
}

/// The refusal for a key that is blocked for `retry_after_ms` more.
pub fn too_many_attempts(retry_after_ms: i64) -> ServerError {
    ServerError::RateLimited {
        retry_after_secs: (retry_after_ms / 1000 + 1) as u64,
    }
}

/// Keys looked at for expiry on every hit.
const SWEEP_PER_HIT: usize = 2;

struct Entry {
    /// Which entry of `order` is this key's (older ones for the key are stale).
    generation: u64,
    hits: VecDeque<Millis>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<LimitKey, Entry>,
    /// Every key once (plus stale copies skipped lazily), the one examined longest ago first.
    order: VecDeque<(LimitKey, u64)>,
    next_generation: u64,
}

impl Table {
    /// Looks at the key examined longest ago: gone or stale copies are dropped, expired keys
    /// are dropped, live ones go to the back.
    fn sweep_one(&mut self, limits: &Limits, now: Millis) {
        let Some((key, generation)) = self.order.pop_front() else {
            return;
        };
        let Some(entry) = self.entries.get(&key) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let window = key.limit(limits).window_ms;
        if entry.hits.back().is_none_or(|t| *t <= now - window) {
            self.entries.remove(&key);
        } else {
            self.order.push_back((key, generation));
        }
    }

    /// Drops the key examined longest ago (used only when the table is full).
    fn evict_one(&mut self) {
        while let Some((key, generation)) = self.order.pop_front() {
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                self.entries.remove(&key);
                return;
            }
        }
    }
}

pub struct RateLimiter {
    limits: Limits,
    table: Mutex<Table>,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        RateLimiter {
            limits,
            table: Mutex::default(),
        }
    }

    /// `Some(retry_after_ms)` if `key` has reached its limit.
    pub fn blocked(&self, key: &LimitKey, now: Millis) -> Option<i64> {
        let limit = key.limit(&self.limits);
        let mut table = self.table.lock();
        let q = &mut table.entries.get_mut(key)?.hits;
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
        let mut table = self.table.lock();
        for _ in 0..SWEEP_PER_HIT {
            table.sweep_one(&self.limits, now);
        }
        if !table.entries.contains_key(&key) {
            while table.entries.len() >= self.limits.max_keys.max(1) {
                table.evict_one();
            }
            let generation = table.next_generation;
            table.next_generation += 1;
            table.order.push_back((key.clone(), generation));
            table.entries.insert(
                key.clone(),
                Entry {
                    generation,
                    hits: VecDeque::new(),
                },
            );
        }
        if let Some(entry) = table.entries.get_mut(&key) {
            let q = &mut entry.hits;
            q.push_back(now);
            // Only the last `max` hits matter for the decision.
            while q.len() > limit.max as usize {
                q.pop_front();
            }
        }
    }

    pub fn clear(&self, key: &LimitKey) {
        // Its entry in `order` goes stale and is dropped when the sweep reaches it.
        self.table.lock().entries.remove(key);
    }

    /// Counts a hit and refuses if that made it one too many.
    pub fn hit(&self, key: LimitKey, now: Millis) -> Option<i64> {
        if let Some(retry) = self.blocked(&key, now) {
            return Some(retry);
        }
        self.record(key, now);
        None
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let t = self.table.lock();
        (t.entries.len(), t.order.len())
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
            network: Network::of("192.0.2.1"),
        };
        for t in 0..3 {
            assert!(rl.blocked(&a, t).is_none());
            rl.record(a.clone(), t);
        }
        assert_eq!(rl.blocked(&a, 10), Some(990));
        assert!(
            rl.blocked(
                &LimitKey::Begin {
                    network: Network::of("192.0.2.2")
                },
                10
            )
            .is_none(),
            "other keys are unaffected"
        );
        assert!(rl.blocked(&a, 1001).is_none());
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

    #[test]
    fn memory_is_bounded_and_expired_keys_are_swept_without_a_scan() {
        let rl = RateLimiter::new(Limits {
            max_keys: 100,
            ..Limits::default()
        });
        let key = |i: u32| LimitKey::Rename {
            account: Uuid::from_u128(u128::from(i)),
        };
        // A flood of distinct keys never holds more than the bound.
        for i in 0..10_000 {
            rl.record(key(i), 0);
            let (entries, order) = rl.sizes();
            assert!(entries <= 100 && order <= 101, "{entries} {order}");
        }
        // The newest keys survive the flood; the oldest were evicted.
        assert!(rl.table.lock().entries.contains_key(&key(9_999)));
        assert!(!rl.table.lock().entries.contains_key(&key(0)));
        // Once their window has passed, ordinary traffic sweeps them away.
        let later = Limits::default().renames_per_account.window_ms + 1;
        for _ in 0..60 {
            rl.record(
                LimitKey::Begin {
                    network: Network::of("192.0.2.1"),
                },
                later,
            );
        }
        assert_eq!(rl.sizes().0, 1, "only the live key is left");
        // Clearing keys leaves no garbage behind for long.
        for i in 0..50 {
            rl.record(key(i), later);
            rl.clear(&key(i));
        }
        for _ in 0..60 {
            rl.record(
                LimitKey::Begin {
                    network: Network::of("192.0.2.1"),
                },
                later,
            );
        }
        assert_eq!(rl.sizes(), (1, 1));
    }
}
