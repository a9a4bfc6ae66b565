//! Server-side ceremony state: single use, expiring, bounded in number: per session, per
//! account, per client network and in total, so that no one party can fill the table.

use uuid::Uuid;

use keyward_proto::Millis;

use super::sql::{Param, Row, args};
use super::{Tx, opt_uuid, uuid_of};
use crate::error::{CoreError, Result};

#[derive(Debug, Clone)]
pub struct Ceremony {
    pub id: Uuid,
    pub kind: String,
    pub account_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// The client network an unauthenticated ceremony was begun from (counted per network).
    pub network: Option<String>,
    /// The wider block around `network` (IPv4 /24, IPv6 /48), counted too.
    pub wide_network: Option<String>,
    /// The server's serialised ceremony state; opaque to this crate.
    pub state: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

const CEREMONY_COLS: &str =
    "id, kind, account_id, session_id, state, created_at, expires_at, network, wide_network";

/// How many ceremonies may be pending at once.
///
/// A ceremony begun by a session counts against that session and its account, and nowhere
/// else: a signed-in user's flood fills only their own allowance. One begun without a session
/// counts against its network, the wider block around it, and its pool's total. `reserved_kinds` each get a pool of their
/// own (of `total`), so a flood of other kinds cannot starve them (the recovery veto).
#[derive(Debug, Clone, Copy)]
pub struct CeremonyCaps<'a> {
    pub total: u32,
    pub per_session: u32,
    pub per_account: u32,
    pub per_network: u32,
    pub per_wide_network: u32,
    pub reserved_kinds: &'a [&'a str],
}

impl CeremonyCaps<'static> {
    /// The same bound everywhere, no reserved pool (tests).
    pub fn uniform(n: u32) -> Self {
        CeremonyCaps {
            total: n,
            per_session: n,
            per_account: n,
            per_network: n,
            per_wide_network: n,
            reserved_kinds: &[],
        }
    }
}

/// A `ceremonies` row selected (or returned) as [`CEREMONY_COLS`].
fn ceremony_from_row(r: &Row<'_>) -> Result<Ceremony> {
    Ok(Ceremony {
        id: uuid_of(r.get(0)?)?,
        kind: r.get(1)?,
        account_id: opt_uuid(r.get(2)?)?,
        session_id: opt_uuid(r.get(3)?)?,
        state: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        network: r.get(7)?,
        wide_network: r.get(8)?,
    })
}

impl Tx<'_> {
    /// Stores a ceremony's state, first sweeping expired ones; refuses past any of `caps`.
    pub fn insert_ceremony(&self, c: &Ceremony, caps: &CeremonyCaps<'_>) -> Result<()> {
        self.execute(
            "DELETE FROM ceremonies WHERE expires_at <= ?1",
            args![c.created_at],
        )?;
        let count = |sql: &str, args: &[&dyn Param]| -> Result<i64> { self.query_value(sql, args) };
        let full = |n: i64, cap: u32| n >= i64::from(cap);
        if let Some(session) = c.session_id {
            let mine = count(
                "SELECT COUNT(*) FROM ceremonies WHERE session_id = ?1",
                args![session.as_bytes()],
            )?;
            if full(mine, caps.per_session) {
                return Err(CoreError::TooManyCeremonies);
            }
            if let Some(account) = c.account_id {
                let ours = count(
                    "SELECT COUNT(*) FROM ceremonies
                     WHERE account_id = ?1 AND session_id IS NOT NULL",
                    args![account.as_bytes()],
                )?;
                if full(ours, caps.per_account) {
                    return Err(CoreError::TooManyCeremonies);
                }
            }
        } else {
            // The pool: this kind alone if it is reserved, else every kind that is not.
            let (pool, kinds): (String, Vec<&str>) =
                if caps.reserved_kinds.contains(&c.kind.as_str()) {
                    ("kind = ?".to_string(), vec![c.kind.as_str()])
                } else if caps.reserved_kinds.is_empty() {
                    ("TRUE".to_string(), vec![])
                } else {
                    let marks = vec!["?"; caps.reserved_kinds.len()].join(", ");
                    (
                        format!("kind NOT IN ({marks})"),
                        caps.reserved_kinds.to_vec(),
                    )
                };
            for (column, value, cap) in [
                ("network", &c.network, caps.per_network),
                ("wide_network", &c.wide_network, caps.per_wide_network),
            ] {
                let value = value.as_deref().unwrap_or("");
                let with_network: Vec<&dyn Param> = std::iter::once(&value as &dyn Param)
                    .chain(kinds.iter().map(|k| k as &dyn Param))
                    .collect();
                let from_network = count(
                    &format!(
                        "SELECT COUNT(*) FROM ceremonies
                         WHERE session_id IS NULL AND COALESCE({column}, '') = ? AND {pool}"
                    ),
                    &with_network,
                )?;
                if full(from_network, cap) {
                    return Err(CoreError::TooManyCeremonies);
                }
            }
            let in_pool = count(
                &format!("SELECT COUNT(*) FROM ceremonies WHERE session_id IS NULL AND {pool}"),
                &kinds.iter().map(|k| k as &dyn Param).collect::<Vec<_>>(),
            )?;
            if full(in_pool, caps.total) {
                return Err(CoreError::TooManyCeremonies);
            }
        }
        self.execute(
            "INSERT INTO ceremonies
                 (id, kind, account_id, session_id, state, created_at, expires_at, network,
                  wide_network)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
                c.id.as_bytes(),
                c.kind,
                c.account_id.map(|u| u.as_bytes().to_vec()),
                c.session_id.map(|u| u.as_bytes().to_vec()),
                c.state,
                c.created_at,
                c.expires_at,
                c.network,
                c.wide_network,
            ],
        )?;
        Ok(())
    }

    /// The ceremony, left in place (see `take_ceremony` for using it).
    pub fn peek_ceremony(&self, id: Uuid) -> Result<Option<Ceremony>> {
        self.query_row(
            &format!("SELECT {CEREMONY_COLS} FROM ceremonies WHERE id = ?1"),
            args![id.as_bytes()],
            ceremony_from_row,
        )
    }

    /// Removes and returns a ceremony of `kind` if it exists and has not expired. Whatever the
    /// outcome, the ceremony is gone afterwards: a challenge is good for one attempt.
    pub fn take_ceremony(&self, id: Uuid, kind: &str, now: Millis) -> Result<Option<Ceremony>> {
        let row = self.query_row(
            &format!("DELETE FROM ceremonies WHERE id = ?1 RETURNING {CEREMONY_COLS}"),
            args![id.as_bytes()],
            ceremony_from_row,
        )?;
        Ok(row.filter(|c| c.kind == kind && now < c.expires_at))
    }

    pub fn pending_ceremonies(&self) -> Result<i64> {
        self.query_value("SELECT COUNT(*) FROM ceremonies", args![])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures;
    use super::*;

    fn ceremony(kind: &str, created_at: Millis, expires_at: Millis) -> Ceremony {
        Ceremony {
            id: Uuid::new_v4(),
            kind: kind.into(),
            account_id: None,
            session_id: None,
            network: None,
            wide_network: None,
            state: "{}".into(),
            created_at,
            expires_at,
        }
    }

    #[test]
    fn a_ceremony_is_taken_once_and_not_after_expiry() {
        let store = fixtures::store();
        let c = Ceremony {
            id: Uuid::new_v4(),
            kind: "sign_in".into(),
            account_id: None,
            session_id: None,
            network: None,
            wide_network: None,
            state: "{}".into(),
            created_at: 0,
            expires_at: 100,
        };
        store
            .write(|tx| {
                tx.insert_ceremony(&c, &CeremonyCaps::uniform(10))?;
                assert!(tx.take_ceremony(c.id, "sign_in", 50)?.is_some());
                assert!(
                    tx.take_ceremony(c.id, "sign_in", 50)?.is_none(),
                    "second take"
                );
                tx.insert_ceremony(&c, &CeremonyCaps::uniform(10))?;
                assert!(tx.take_ceremony(c.id, "sign_in", 100)?.is_none(), "expired");
                tx.insert_ceremony(&c, &CeremonyCaps::uniform(10))?;
                assert!(
                    tx.take_ceremony(c.id, "step_up", 50)?.is_none(),
                    "wrong kind"
                );
                assert!(
                    tx.take_ceremony(c.id, "sign_in", 50)?.is_none(),
                    "burnt by wrong kind"
                );
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn pending_ceremonies_are_bounded() {
        let store = fixtures::store();
        let result = store.write(|tx| {
            for i in 0..4 {
                tx.insert_ceremony(
                    &Ceremony {
                        id: Uuid::new_v4(),
                        kind: "sign_in".into(),
                        account_id: None,
                        session_id: None,
                        network: None,
                        wide_network: None,
                        state: "{}".into(),
                        created_at: i,
                        expires_at: 1000,
                    },
                    &CeremonyCaps::uniform(3),
                )?;
            }
            Ok::<_, CoreError>(())
        });
        assert!(matches!(result, Err(CoreError::TooManyCeremonies)));
    }

    #[test]
    fn peek_leaves_the_ceremony_and_take_returns_it_whole() {
        let store = fixtures::store();
        let mut c = ceremony("step_up", 10, 100);
        c.account_id = Some(Uuid::new_v4());
        c.session_id = Some(Uuid::new_v4());
        c.state = r#"{"challenge":"x"}"#.into();
        store
            .write(|tx| {
                tx.insert_ceremony(&c, &CeremonyCaps::uniform(10))?;
                let peeked = tx.peek_ceremony(c.id)?.unwrap();
                assert_eq!(peeked.account_id, c.account_id);
                assert_eq!(peeked.session_id, c.session_id);
                assert_eq!(tx.pending_ceremonies()?, 1, "peek keeps it");
                let taken = tx.take_ceremony(c.id, "step_up", 99)?.unwrap();
                assert_eq!(
                    (taken.id, taken.kind.as_str(), taken.state.as_str()),
                    (c.id, "step_up", c.state.as_str())
                );
                assert_eq!((taken.created_at, taken.expires_at), (10, 100));
                assert!(tx.peek_ceremony(c.id)?.is_none(), "take removes it");
                assert_eq!(tx.pending_ceremonies()?, 0);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn inserting_sweeps_expired_ceremonies_first() {
        let store = fixtures::store();
        store
            .write(|tx| {
                tx.insert_ceremony(&ceremony("sign_in", 0, 50), &CeremonyCaps::uniform(2))?;
                tx.insert_ceremony(&ceremony("sign_in", 0, 60), &CeremonyCaps::uniform(2))?;
                // Both have expired by 60, so they make room instead of counting.
                tx.insert_ceremony(&ceremony("sign_in", 60, 200), &CeremonyCaps::uniform(2))?;
                assert_eq!(tx.pending_ceremonies()?, 1);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn caps_hold_per_session_per_account_per_network_and_reserve_a_pool() {
        let store = fixtures::store();
        let caps = CeremonyCaps {
            total: 4,
            per_session: 2,
            per_account: 3,
            per_network: 2,
            per_wide_network: 3,
            reserved_kinds: &["recovery_cancel"],
        };
        let (account, s1, s2, s3) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let authed = |session: Uuid| Ceremony {
            account_id: Some(account),
            session_id: Some(session),
            ..ceremony("step_up", 0, 1000)
        };
        let from = |kind: &str, network: &str| Ceremony {
            network: Some(network.into()),
            wide_network: Some(format!("wide {}", &network[..1])),
            ..ceremony(kind, 0, 1000)
        };
        store
            .write(|tx| {
                let insert = |c: Ceremony| tx.insert_ceremony(&c, &caps).is_ok();
                assert!(insert(authed(s1)) && insert(authed(s1)));
                assert!(!insert(authed(s1)), "per session");
                assert!(insert(authed(s2)));
                assert!(!insert(authed(s3)), "per account, over its sessions");
                // Session ceremonies take nothing from the unauthenticated pool.
                assert!(insert(from("sign_in", "a")) && insert(from("sign_in", "a")));
                assert!(!insert(from("sign_in", "a")), "per network");
                assert!(insert(from("sign_in", "a2")));
                assert!(!insert(from("sign_in", "a3")), "per wider network");
                assert!(insert(from("sign_in", "b")));
                assert!(!insert(from("sign_in", "c")), "the shared pool is full");
                // The reserved pool is still open, with its own per-network count.
                assert!(insert(from("recovery_cancel", "a")));
                assert!(insert(from("recovery_cancel", "c")));
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }
}
