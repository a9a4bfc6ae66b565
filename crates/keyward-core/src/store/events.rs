//! The security log's table: append-only (triggers refuse updates and deletes) and
//! hash-chained. The chain's rules are in [`crate::security_log`]; this module only stores rows.

use uuid::Uuid;

use keyward_proto::{EventDetail, EventKind, Millis, SecurityEvent, Urgency};

use super::sql::{Row, args};
use super::{Tx, opt_uuid, uuid_of};
use crate::details::{DataKey, Details};
use crate::error::{CoreError, Result};
use crate::security_log::{
    self, ChainEntry, ChainReport, GENESIS_HASH, event_hash, sealed_event_hash, urgency_of,
};

/// An event about to be appended; the store gives it its place, time and hash.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub account_id: Uuid,
    pub kind: EventKind,
    pub session_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub device_name: Option<String>,
    pub address: Option<String>,
    pub detail: EventDetail,
}

impl NewEvent {
    pub fn new(account_id: Uuid, kind: EventKind) -> Self {
        NewEvent {
            account_id,
            kind,
            session_id: None,
            device_id: None,
            device_name: None,
            address: None,
            detail: EventDetail::default(),
        }
    }
}

fn urgency_str(u: Urgency) -> &'static str {
    match u {
        Urgency::Quiet => "quiet",
        Urgency::Urgent => "urgent",
    }
}

/// Qualified, so a query may join another table (or `events` again) beside them.
pub(super) const EVENT_COLS: &str = "events.seq, events.account_id, events.kind, events.at,
    events.urgency, events.session_id, events.device_id, events.device_name, events.address,
    events.detail, events.hash, events.account_seq, events.sealed";

/// An `events` row as the event clients see: numbered within its account (`account_seq`), so
/// the numbers say nothing about other accounts' activity, its details opened with the
/// account's data `key` (none once the account is deleted: then they stay sealed, and empty).
fn wire_event_from_row(r: &Row<'_>, key: Option<&DataKey>) -> Result<SecurityEvent> {
    let mut entry = event_from_row(r)?;
    open_details(&mut entry, key)?;
    entry.event.id = r.get(11)?;
    Ok(entry.event)
}

/// Puts a sealed entry's details, opened with `key`, into its event.
fn open_details(entry: &mut ChainEntry, key: Option<&DataKey>) -> Result<()> {
    if let (Some(sealed), Some(key)) = (&entry.sealed, key) {
        key.open_details(entry.event.account_id, entry.event.id, sealed)?
            .put(&mut entry.event);
    }
    Ok(())
}

/// One of an account's events with what verifies it against the chain: its account number,
/// the entry (details opened, `id` its global place) and the hash of the event before it.
#[derive(Debug, Clone)]
pub struct ExportedRow {
    pub number: i64,
    pub entry: ChainEntry,
    pub prev_hash: [u8; 32],
}

/// An `events` row as the hash chain has it: `id` is the row's place in the one global log
/// (`seq`), with its stored (raw) hash and, for format 2, its sealed details (the event's
/// own detail fields then empty).
pub(super) fn event_from_row(r: &Row<'_>) -> Result<ChainEntry> {
    let kind: String = r.get(2)?;
    let urgency: String = r.get(4)?;
    let detail: String = r.get(9)?;
    let hash = stored_hash(r.get(10)?)?;
    let mut event = SecurityEvent {
        id: r.get(0)?,
        account_id: uuid_of(r.get(1)?)?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| CoreError::Corrupt(format!("unknown event kind '{kind}'")))?,
        at: r.get(3)?,
        urgency: if urgency == "urgent" {
            Urgency::Urgent
        } else {
            Urgency::Quiet
        },
        session_id: opt_uuid(r.get(5)?)?,
        device_id: opt_uuid(r.get(6)?)?,
        device_name: r.get(7)?,
        address: r.get(8)?,
        detail: serde_json::from_str(&detail)?,
    };
    let sealed: Option<Vec<u8>> = r.get(12)?;
    if sealed.is_some() {
        // Format 2: its details are the ciphertext's alone (the chain covers nothing else).
        Details::take(&mut event);
    }
    Ok(ChainEntry {
        event,
        sealed,
        hash,
    })
}

fn stored_hash(bytes: Vec<u8>) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| CoreError::Corrupt("event hash is not 32 bytes".into()))
}

impl Tx<'_> {
    /// Appends to the hash-chained log. The event goes to live streams after the commit.
    pub fn append_event(&mut self, e: NewEvent, now: Millis) -> Result<SecurityEvent> {
        let (seq, prev) = match self.appended_head {
            Some((seq, hash, _)) => (seq + 1, hash),
            None => {
                let head: Option<(i64, Vec<u8>)> = self.query_row(
                    "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                    args![],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                match head {
                    Some((seq, hash)) => (seq + 1, stored_hash(hash)?),
                    None => (1, GENESIS_HASH),
                }
            }
        };
        let number: i64 = self.query_value(
            "SELECT COALESCE(MAX(account_seq), 0) + 1 FROM events WHERE account_id = ?1",
            args![e.account_id.as_bytes()],
        )?;
        let urgency = urgency_of(e.kind, &e.detail);
        let mut event = SecurityEvent {
            id: seq,
            account_id: e.account_id,
            kind: e.kind,
            at: now,
            urgency,
            session_id: e.session_id,
            device_id: e.device_id,
            device_name: e.device_name,
            address: e.address,
            detail: e.detail,
        };
        // The chain hashes the event at its global place; clients get its account's number.
        // With a log key the details are sealed under the account's data key, and the hash
        // covers their ciphertext (format 2); without one, they are hashed in the clear.
        let (stored, sealed, hash) = match self.data_key_for_writing(e.account_id, now)? {
            Some(key) => {
                let mut stored = event.clone();
                let details = Details::take(&mut stored);
                let sealed = key.seal_details(event.account_id, seq, &details)?;
                let hash = sealed_event_hash(&prev, &stored, &sealed);
                (stored, Some(sealed), hash)
            }
            None => (event.clone(), None, event_hash(&prev, &event)),
        };
        self.execute(
            "INSERT INTO events (seq, account_id, kind, at, urgency, session_id, device_id,
                 device_name, address, detail, hash, account_seq, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            args![
                seq,
                stored.account_id.as_bytes(),
                stored.kind.as_str(),
                stored.at,
                urgency_str(urgency),
                stored.session_id.map(|u| u.as_bytes().to_vec()),
                stored.device_id.map(|u| u.as_bytes().to_vec()),
                stored.device_name,
                stored.address,
                serde_json::to_string(&stored.detail)?,
                hash.as_slice(),
                number,
                sealed
            ],
        )?;
        event.id = number;
        self.appended_head = Some((seq, hash, now));
        self.appended.push(event.clone());
        Ok(event)
    }

    /// Newest first, strictly older than `before` if given.
    pub fn events_page(
        &self,
        account_id: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SecurityEvent>> {
        let key = self.data_key(account_id)?;
        self.query_rows(
            &format!(
                "SELECT {EVENT_COLS}
                 FROM events WHERE account_id = ?1 AND account_seq < ?2
                 ORDER BY account_seq DESC LIMIT ?3"
            ),
            args![
                account_id.as_bytes(),
                before.unwrap_or(i64::MAX),
                i64::from(limit)
            ],
            |r| wire_event_from_row(r, key.as_ref()),
        )
    }

    /// Oldest first, strictly newer than `after`: what a resuming stream missed.
    pub fn events_after(
        &self,
        account_id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SecurityEvent>> {
        let key = self.data_key(account_id)?;
        self.query_rows(
            &format!(
                "SELECT {EVENT_COLS}
                 FROM events WHERE account_id = ?1 AND account_seq > ?2
                 ORDER BY account_seq ASC LIMIT ?3"
            ),
            args![account_id.as_bytes(), after, i64::from(limit)],
            |r| wire_event_from_row(r, key.as_ref()),
        )
    }

    /// Every event of the account's, oldest first, each with its details opened and what
    /// verifies it against the chain; and the account's data key (None if it has none: its
    /// events were written without a log key, in the clear).
    pub fn export_rows(&self, account_id: Uuid) -> Result<(Vec<ExportedRow>, Option<DataKey>)> {
        let key = self.data_key(account_id)?;
        let rows = self.query_rows(
            &format!(
                "SELECT {EVENT_COLS}, prev.hash
                 FROM events LEFT JOIN events AS prev ON prev.seq = events.seq - 1
                 WHERE events.account_id = ?1 ORDER BY events.seq"
            ),
            args![account_id.as_bytes()],
            |r| {
                let mut entry = event_from_row(r)?;
                open_details(&mut entry, key.as_ref())?;
                let prev: Option<Vec<u8>> = r.get(13)?;
                Ok(ExportedRow {
                    number: r.get(11)?,
                    entry,
                    prev_hash: prev.map(stored_hash).transpose()?.unwrap_or(GENESIS_HASH),
                })
            },
        )?;
        Ok((rows, key))
    }

    /// The account's data key, opened; None if it has none or the store holds no log key.
    pub fn data_key(&self, account_id: Uuid) -> Result<Option<DataKey>> {
        let Some(kek) = &self.kek else {
            return Ok(None);
        };
        let sealed: Option<Vec<u8>> = self.query_row(
            "SELECT sealed_key FROM account_keys WHERE account_id = ?1",
            args![account_id.as_bytes()],
            |r| r.get(0),
        )?;
        sealed
            .map(|sealed| kek.open_data_key(account_id, &sealed))
            .transpose()
    }

    /// The key to seal the account's next event under, made on its first event; None without
    /// a log key.
    fn data_key_for_writing(&self, account_id: Uuid, now: Millis) -> Result<Option<DataKey>> {
        let Some(kek) = self.kek.clone() else {
            return Ok(None);
        };
        if let Some(key) = self.data_key(account_id)? {
            return Ok(Some(key));
        }
        let key = DataKey::generate();
        self.execute(
            "INSERT INTO account_keys (account_id, sealed_key, created_at) VALUES (?1, ?2, ?3)",
            args![
                account_id.as_bytes(),
                kek.seal_data_key(account_id, &key)?,
                now
            ],
        )?;
        Ok(Some(key))
    }

    /// Destroys the account's data key: its events' details can never be opened again, while
    /// their hashes, over the ciphertext, still verify. Returns whether there was one.
    pub fn destroy_data_key(&self, account_id: Uuid) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM account_keys WHERE account_id = ?1",
            args![account_id.as_bytes()],
        )? > 0)
    }

    /// The account's newest event id, or 0 if it has none.
    /// Whether the account's log holds an event of `kind` (read through the account's index).
    pub fn account_has_event(&self, account_id: Uuid, kind: EventKind) -> Result<bool> {
        Ok(self
            .query_row(
                "SELECT 1 FROM events WHERE account_id = ?1 AND kind = ?2 LIMIT 1",
                args![account_id.as_bytes(), kind.as_str()],
                |_| Ok(()),
            )?
            .is_some())
    }

    pub fn latest_event_id(&self, account_id: Uuid) -> Result<i64> {
        self.query_value(
            "SELECT COALESCE(MAX(account_seq), 0) FROM events WHERE account_id = ?1",
            args![account_id.as_bytes()],
        )
    }

    /// Streams the whole log, in order, through [`security_log::verify_chain`].
    pub(super) fn verify_log(&self) -> Result<ChainReport> {
        self.walk_log(|rows| security_log::verify_chain(rows))
    }

    /// Hands the whole log, in order, as `(event, stored hash)` rows to `f`.
    pub(super) fn walk_log<T>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = Result<ChainEntry>>) -> Result<T>,
    ) -> Result<T> {
        self.stream(
            &format!("SELECT {EVENT_COLS} FROM events ORDER BY seq"),
            args![],
            &mut event_from_row,
            f,
        )
    }

    /// The log's last event: its id, stored hash and time.
    pub(super) fn log_head(&self) -> Result<Option<(i64, [u8; 32], Millis)>> {
        let head: Option<(i64, Vec<u8>, Millis)> = self.query_row(
            "SELECT seq, hash, at FROM events ORDER BY seq DESC LIMIT 1",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        head.map(|(seq, hash, at)| Ok((seq, stored_hash(hash)?, at)))
            .transpose()
    }

    /// Account `account_id`'s newest event: its number, stored chain hash and time.
    pub(super) fn account_head_event(
        &self,
        account_id: Uuid,
    ) -> Result<Option<(i64, [u8; 32], Millis)>> {
        let head: Option<(i64, Vec<u8>, Millis)> = self.query_row(
            "SELECT account_seq, hash, at FROM events WHERE account_id = ?1
             ORDER BY account_seq DESC LIMIT 1",
            args![account_id.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        head.map(|(number, hash, at)| Ok((number, stored_hash(hash)?, at)))
            .transpose()
    }

    /// The stored chain hash of account `account_id`'s event `number`, if the log holds it.
    pub(super) fn account_event_hash(
        &self,
        account_id: Uuid,
        number: i64,
    ) -> Result<Option<[u8; 32]>> {
        let hash: Option<Vec<u8>> = self.query_row(
            "SELECT hash FROM events WHERE account_id = ?1 AND account_seq = ?2",
            args![account_id.as_bytes(), number],
            |r| r.get(0),
        )?;
        hash.map(stored_hash).transpose()
    }

    /// The stored hash of event `seq`, if the log holds it.
    pub fn event_hash_at(&self, seq: i64) -> Result<Option<[u8; 32]>> {
        let hash: Option<Vec<u8>> =
            self.query_row("SELECT hash FROM events WHERE seq = ?1", args![seq], |r| {
                r.get(0)
            })?;
        hash.map(stored_hash).transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Store, fixtures};
    use super::*;

    #[test]
    fn events_form_a_verifiable_append_only_chain() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                for kind in [
                    EventKind::AccountCreated,
                    EventKind::SignIn,
                    EventKind::SessionEnded,
                ] {
                    tx.append_event(NewEvent::new(a.id, kind), 10)?;
                }
                Ok::<_, CoreError>(())
            })
            .unwrap();
        assert_eq!(
            store.verify_chain().unwrap(),
            ChainReport {
                events: 3,
                first_broken: None
            }
        );
        let tamper = store.write(|tx| {
            tx.raw_execute("UPDATE events SET at = 99 WHERE seq = 2")?;
            Ok::<_, CoreError>(())
        });
        assert!(tamper.is_err(), "the log must refuse updates");
        let delete = store.write(|tx| {
            tx.raw_execute("DELETE FROM events")?;
            Ok::<_, CoreError>(())
        });
        assert!(delete.is_err(), "the log must refuse deletes");
    }

    #[test]
    fn with_a_log_key_details_are_sealed_and_deleting_the_account_leaves_the_chain_whole() {
        let store = fixtures::store();
        store.set_log_key(ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
        let a = fixtures::account("ada");
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                let mut e = NewEvent::new(a.id, EventKind::SignIn);
                e.device_name = Some("Zebrafish laptop".into());
                e.address = Some("192.0.2.7".into());
                tx.append_event(e, 10)?;
                tx.append_event(NewEvent::new(a.id, EventKind::SessionEnded), 11)?;
                Ok::<_, CoreError>(())
            })
            .unwrap();
        let (clear, sealed): (Option<String>, Option<Vec<u8>>) = store
            .read(|tx| {
                let clear = tx.raw_value("SELECT device_name FROM events WHERE seq = 1", &[])?;
                let sealed = tx.raw_value("SELECT sealed FROM events WHERE seq = 1", &[])?;
                Ok::<_, CoreError>((clear, sealed))
            })
            .unwrap();
        assert_eq!(clear, None, "no detail in the clear");
        assert!(sealed.is_some_and(|s| !s.windows(9).any(|w| w == b"Zebrafish")));
        let shown = store.read(|tx| tx.events_page(a.id, None, 10)).unwrap();
        assert_eq!(shown[1].device_name.as_deref(), Some("Zebrafish laptop"));
        assert_eq!(shown[1].address.as_deref(), Some("192.0.2.7"));

        assert!(store.write(|tx| tx.delete_account(a.id)).unwrap());
        let after = store.read(|tx| tx.events_page(a.id, None, 10)).unwrap();
        assert_eq!(after.len(), 2, "the events stay");
        assert_eq!(after[1].device_name, None, "their details cannot be opened");
        assert_eq!(store.verify_chain().unwrap().first_broken, None);
        assert!(!store.write(|tx| tx.delete_account(a.id)).unwrap());
    }

    #[test]
    fn a_tampered_row_is_found_by_verify_chain() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        store
            .write(|tx| {
                for kind in [
                    EventKind::AccountCreated,
                    EventKind::SignIn,
                    EventKind::SignIn,
                ] {
                    tx.append_event(NewEvent::new(a.id, kind), 10)?;
                }
                // Get past the append-only triggers, as someone with the file could.
                fixtures::drop_trigger(tx, "events_no_update", "events")?;
                tx.raw_execute("UPDATE events SET address = '203.0.113.9' WHERE seq = 2")?;
                Ok::<_, CoreError>(())
            })
            .unwrap();
        assert_eq!(
            store.verify_chain().unwrap(),
            ChainReport {
                events: 2,
                first_broken: Some(2)
            }
        );
    }

    #[test]
    fn events_are_paged_per_account_in_both_directions() {
        let store = fixtures::store();
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let published = store
            .write(|tx| {
                let mut mine = Vec::new();
                for i in 0..4 {
                    mine.push(tx.append_event(NewEvent::new(ada, EventKind::SignIn), i)?);
                    tx.append_event(NewEvent::new(bob, EventKind::SignIn), i)?;
                }
                Ok::<_, CoreError>(mine)
            })
            .unwrap();
        // Numbered per account: bob's events in between leave no gaps in ada's numbers.
        let ids: Vec<i64> = published.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        store
            .read(|tx| {
                let page = tx.events_page(ada, None, 2)?;
                assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 3]);
                let page = tx.events_page(ada, Some(3), 10)?;
                assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 1]);
                let after = tx.events_after(ada, 1, 2)?;
                assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
                assert_eq!(tx.latest_event_id(ada)?, 4);
                assert_eq!(tx.latest_event_id(bob)?, 4);
                assert_eq!(tx.latest_event_id(Uuid::new_v4())?, 0);
                // What is read back is what was published.
                let read = &tx.events_after(ada, 0, 1)?[0];
                assert_eq!(read, &published[0]);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    /// A version-1 database (global numbers only) gains per-account numbers on opening, in log
    /// order, and its chain still verifies: the migration touches no hashed field.
    #[test]
    fn a_version_1_log_is_numbered_per_account_and_its_chain_still_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(include_str!("../../migrations/sqlite/0001_init.sql"))
                .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let mut prev = GENESIS_HASH;
            for (seq, account) in [(1, ada), (2, bob), (3, bob), (4, ada), (5, ada)] {
                let event = SecurityEvent {
                    id: seq,
                    account_id: account,
                    kind: EventKind::SignIn,
                    at: seq,
                    urgency: Urgency::Quiet,
                    session_id: None,
                    device_id: None,
                    device_name: None,
                    address: None,
                    detail: EventDetail::default(),
                };
                let hash = event_hash(&prev, &event);
                conn.execute(
                    "INSERT INTO events (seq, account_id, kind, at, urgency, detail, hash)
                     VALUES (?1, ?2, 'sign_in', ?3, 'quiet', ?4, ?5)",
                    rusqlite::params![
                        seq,
                        account.as_bytes(),
                        seq,
                        serde_json::to_string(&event.detail).unwrap(),
                        hash.as_slice()
                    ],
                )
                .unwrap();
                prev = hash;
            }
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.verify_chain().unwrap(),
            ChainReport {
                events: 5,
                first_broken: None
            }
        );
        store
            .read(|tx| {
                let numbers = |a| -> Result<Vec<(i64, i64)>> {
                    Ok(tx
                        .events_after(a, 0, 10)?
                        .iter()
                        .map(|e| (e.id, e.at))
                        .collect())
                };
                assert_eq!(numbers(ada)?, [(1, 1), (2, 4), (3, 5)]);
                assert_eq!(numbers(bob)?, [(1, 2), (2, 3)]);
                Ok::<_, CoreError>(())
            })
            .unwrap();
        // Still append-only, and new events continue each account's numbers.
        let tamper = store.write(|tx| {
            tx.raw_execute("UPDATE events SET account_seq = 9 WHERE seq = 1")?;
            Ok::<_, CoreError>(())
        });
        assert!(tamper.is_err(), "the log must still refuse updates");
        let next = store
            .write(|tx| tx.append_event(NewEvent::new(bob, EventKind::SignIn), 6))
            .unwrap();
        assert_eq!(next.id, 3);
        assert_eq!(store.verify_chain().unwrap().first_broken, None);
    }
}
