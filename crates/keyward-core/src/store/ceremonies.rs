//! Server-side ceremony state: single use, expiring, bounded in number.

use rusqlite::{OptionalExtension, Row, params};
use uuid::Uuid;

use keyward_proto::Millis;

use super::{Tx, opt_uuid, uuid_of};
use crate::error::{CoreError, Result};

#[derive(Debug, Clone)]
pub struct Ceremony {
    pub id: Uuid,
    pub kind: String,
    pub account_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// The server's serialised ceremony state; opaque to this crate.
    pub state: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

const CEREMONY_COLS: &str = "id, kind, account_id, session_id, state, created_at, expires_at";

/// A `ceremonies` row selected (or returned) as [`CEREMONY_COLS`].
fn ceremony_from_row(r: &Row<'_>) -> rusqlite::Result<Ceremony> {
    Ok(Ceremony {
        id: uuid_of(r.get(0)?)?,
        kind: r.get(1)?,
        account_id: opt_uuid(r.get(2)?)?,
        session_id: opt_uuid(r.get(3)?)?,
        state: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

impl Tx<'_> {
    /// Stores a ceremony's state, first sweeping expired ones; refuses past `max_pending`.
    pub fn insert_ceremony(&self, c: &Ceremony, max_pending: u32) -> Result<()> {
        self.tx.execute(
            "DELETE FROM ceremonies WHERE expires_at <= ?1",
            [c.created_at],
        )?;
        let pending: i64 = self
            .tx
            .query_row("SELECT COUNT(*) FROM ceremonies", [], |r| r.get(0))?;
        if pending >= i64::from(max_pending) {
            return Err(CoreError::TooManyCeremonies);
        }
        self.tx.execute(
            "INSERT INTO ceremonies (id, kind, account_id, session_id, state, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                c.id.as_bytes(),
                c.kind,
                c.account_id.map(|u| u.as_bytes().to_vec()),
                c.session_id.map(|u| u.as_bytes().to_vec()),
                c.state,
                c.created_at,
                c.expires_at
            ],
        )?;
        Ok(())
    }

    /// The ceremony, left in place (see `take_ceremony` for using it).
    pub fn peek_ceremony(&self, id: Uuid) -> Result<Option<Ceremony>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {CEREMONY_COLS} FROM ceremonies WHERE id = ?1"),
                [id.as_bytes()],
                ceremony_from_row,
            )
            .optional()?)
    }

    /// Removes and returns a ceremony of `kind` if it exists and has not expired. Whatever the
    /// outcome, the ceremony is gone afterwards: a challenge is good for one attempt.
    pub fn take_ceremony(&self, id: Uuid, kind: &str, now: Millis) -> Result<Option<Ceremony>> {
        let row = self
            .tx
            .query_row(
                &format!("DELETE FROM ceremonies WHERE id = ?1 RETURNING {CEREMONY_COLS}"),
                [id.as_bytes()],
                ceremony_from_row,
            )
            .optional()?;
        Ok(row.filter(|c| c.kind == kind && now < c.expires_at))
    }

    pub fn pending_ceremonies(&self) -> Result<i64> {
        Ok(self
            .tx
            .query_row("SELECT COUNT(*) FROM ceremonies", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::Store;
    use super::*;

    fn ceremony(kind: &str, created_at: Millis, expires_at: Millis) -> Ceremony {
        Ceremony {
            id: Uuid::new_v4(),
            kind: kind.into(),
            account_id: None,
            session_id: None,
            state: "{}".into(),
            created_at,
            expires_at,
        }
    }

    #[test]
    fn a_ceremony_is_taken_once_and_not_after_expiry() {
        let store = Store::open_in_memory().unwrap();
        let c = Ceremony {
            id: Uuid::new_v4(),
            kind: "sign_in".into(),
            account_id: None,
            session_id: None,
            state: "{}".into(),
            created_at: 0,
            expires_at: 100,
        };
        store
            .write(|tx| {
                tx.insert_ceremony(&c, 10)?;
                assert!(tx.take_ceremony(c.id, "sign_in", 50)?.is_some());
                assert!(
                    tx.take_ceremony(c.id, "sign_in", 50)?.is_none(),
                    "second take"
                );
                tx.insert_ceremony(&c, 10)?;
                assert!(tx.take_ceremony(c.id, "sign_in", 100)?.is_none(), "expired");
                tx.insert_ceremony(&c, 10)?;
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
        let store = Store::open_in_memory().unwrap();
        let result = store.write(|tx| {
            for i in 0..4 {
                tx.insert_ceremony(
                    &Ceremony {
                        id: Uuid::new_v4(),
                        kind: "sign_in".into(),
                        account_id: None,
                        session_id: None,
                        state: "{}".into(),
                        created_at: i,
                        expires_at: 1000,
                    },
                    3,
                )?;
            }
            Ok::<_, CoreError>(())
        });
        assert!(matches!(result, Err(CoreError::TooManyCeremonies)));
    }

    #[test]
    fn peek_leaves_the_ceremony_and_take_returns_it_whole() {
        let store = Store::open_in_memory().unwrap();
        let mut c = ceremony("step_up", 10, 100);
        c.account_id = Some(Uuid::new_v4());
        c.session_id = Some(Uuid::new_v4());
        c.state = r#"{"challenge":"x"}"#.into();
        store
            .write(|tx| {
                tx.insert_ceremony(&c, 10)?;
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
        let store = Store::open_in_memory().unwrap();
        store
            .write(|tx| {
                tx.insert_ceremony(&ceremony("sign_in", 0, 50), 2)?;
                tx.insert_ceremony(&ceremony("sign_in", 0, 60), 2)?;
                // Both have expired by 60, so they make room instead of counting.
                tx.insert_ceremony(&ceremony("sign_in", 60, 200), 2)?;
                assert_eq!(tx.pending_ceremonies()?, 1);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }
}
