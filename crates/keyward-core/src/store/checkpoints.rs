//! Signed checkpoints of the security log's head (`log_checkpoints`, append-only). The store
//! writes one in every commit that appends events, when it holds the log key
//! ([`super::Store::set_log_key`]); what a checkpoint means is in [`crate::security_log`].
//! These stay on the server; an account's clients get [`AccountHead`]s, signed on request.

use ed25519_dalek::{SigningKey, VerifyingKey};
use uuid::Uuid;

use super::Tx;
use super::sql::{Row, args};
use crate::error::{CoreError, Result};
use crate::security_log::{self, AccountCheckpoint, Checkpoint, LogReport, account_digest};

/// What one account's client is shown of the log: the account's newest event signed
/// ([`AccountCheckpoint`]; None if the log holds none of its events), and the digest at the
/// event the client remembers, if it asked and the log still holds that event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountHead {
    pub checkpoint: Option<AccountCheckpoint>,
    pub seen_digest: Option<[u8; 32]>,
}

fn checkpoint_from_row(r: &Row<'_>) -> Result<Checkpoint> {
    let hash: Vec<u8> = r.get(1)?;
    let signature: Vec<u8> = r.get(3)?;
    Ok(Checkpoint {
        seq: r.get(0)?,
        hash: hash
            .try_into()
            .map_err(|_| CoreError::Corrupt("checkpoint hash is not 32 bytes".into()))?,
        at: r.get(2)?,
        signature: signature
            .try_into()
            .map_err(|_| CoreError::Corrupt("checkpoint signature is not 64 bytes".into()))?,
    })
}

impl Tx<'_> {
    /// The newest signed checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.query_row(
            "SELECT seq, hash, at, signature FROM log_checkpoints ORDER BY seq DESC LIMIT 1",
            args![],
            checkpoint_from_row,
        )
    }

    /// Signs the log's current head with `key` and stores the checkpoint (none if the log is
    /// empty, or the head is checkpointed already).
    pub fn checkpoint_head(&mut self, key: &SigningKey) -> Result<Option<Checkpoint>> {
        let Some((seq, hash, at)) = self.log_head()? else {
            return Ok(None);
        };
        if self.latest_checkpoint()?.is_some_and(|c| c.seq == seq) {
            return Ok(None);
        }
        let checkpoint = Checkpoint::sign(key, seq, hash, at);
        self.insert_checkpoint(&checkpoint)?;
        Ok(Some(checkpoint))
    }

    pub(super) fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        self.execute(
            "INSERT INTO log_checkpoints (seq, hash, at, signature) VALUES (?1, ?2, ?3, ?4)",
            args![
                checkpoint.seq,
                checkpoint.hash.as_slice(),
                checkpoint.at,
                checkpoint.signature.as_slice()
            ],
        )?;
        Ok(())
    }

    /// Account `account_id`'s head signed with `key`, and the digest at its event `seen`.
    pub fn account_head(
        &self,
        key: &SigningKey,
        account_id: Uuid,
        seen: Option<i64>,
    ) -> Result<AccountHead> {
        let checkpoint = self
            .account_head_event(account_id)?
            .map(|(number, hash, at)| AccountCheckpoint::sign(key, account_id, number, &hash, at));
        let seen_digest = match seen {
            Some(number) => self
                .account_event_hash(account_id, number)?
                .map(|hash| account_digest(key, account_id, number, &hash)),
            None => None,
        };
        Ok(AccountHead {
            checkpoint,
            seen_digest,
        })
    }

    /// The whole log walked and held to its latest checkpoint under `key` (see
    /// [`security_log::verify_log`]).
    pub(super) fn verify_log_against(&self, key: Option<&VerifyingKey>) -> Result<LogReport> {
        let checkpoint = self.latest_checkpoint()?;
        self.walk_log(|rows| security_log::verify_log(rows, checkpoint.as_ref(), key))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use keyward_proto::EventKind;
    use uuid::Uuid;

    use super::super::events::{EVENT_COLS, event_from_row};
    use super::super::{Location, NewEvent, Store, fixtures, testing};
    use super::*;
    use crate::security_log::LogProblem;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    /// A database on the suite's engine, reopened by each `Store::connect`.
    fn database() -> (tempfile::TempDir, Location) {
        let dir = tempfile::tempdir().unwrap();
        let location = testing::location(&dir.path().join("k.db")).unwrap();
        (dir, location)
    }

    /// A signed log of `n` events, each in its own commit.
    fn signed_log(location: &Location, n: usize) -> Store {
        let store = Store::connect(location).unwrap();
        store.set_log_key(key());
        let account = Uuid::new_v4();
        for i in 0..n {
            store
                .write(|tx| tx.append_event(NewEvent::new(account, EventKind::SignIn), i as i64))
                .unwrap();
        }
        store
    }

    fn problem(location: &Location) -> Option<LogProblem> {
        Store::connect(location)
            .unwrap()
            .verify_log(Some(&key().verifying_key()))
            .unwrap()
            .problem
    }

    /// Runs `f` with the database open outside keywardd, as someone with access to it could.
    fn tamper(location: &Location, f: impl FnMut(&mut Tx<'_>) -> Result<()>) {
        Store::connect(location).unwrap().write(f).unwrap();
    }

    /// Edits event `seq`'s time past the trigger and recomputes every hash of the chain, as
    /// the unkeyed chain allows.
    fn edit_and_reseal(location: &Location, seq: i64) {
        tamper(location, |tx| {
            fixtures::drop_trigger(tx, "events_no_update", "events")?;
            tx.raw_execute(&format!("UPDATE events SET at = at + 1 WHERE seq = {seq}"))?;
            let rows = tx.query_rows(
                &format!("SELECT {EVENT_COLS} FROM events ORDER BY seq"),
                args![],
                event_from_row,
            )?;
            let mut prev = security_log::GENESIS_HASH;
            for entry in rows {
                let hash = entry.expected_hash(&prev);
                tx.execute(
                    "UPDATE events SET hash = ?1 WHERE seq = ?2",
                    args![hash.as_slice(), entry.event.id],
                )?;
                prev = hash;
            }
            Ok(())
        });
    }

    #[test]
    fn every_commit_that_appends_events_signs_the_new_head() {
        let (_dir, location) = database();
        let store = signed_log(&location, 3);
        let cp = store.read(|tx| tx.latest_checkpoint()).unwrap().unwrap();
        assert_eq!(cp.seq, 3);
        assert!(cp.is_signed_by(&key().verifying_key()));
        let report = store.verify_log(Some(&key().verifying_key())).unwrap();
        assert_eq!((report.events, report.problem), (3, None));
        // Checkpoints are append-only like the log.
        let edit = store.write(|tx| tx.raw_execute("DELETE FROM log_checkpoints"));
        assert!(edit.is_err());
    }

    #[test]
    fn an_account_s_head_is_signed_and_commits_to_the_log_before_it() {
        let (_dir, location) = database();
        let store = Store::connect(&location).unwrap();
        store.set_log_key(key());
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        for (account, at) in [(bob, 1), (ada, 2), (bob, 3), (ada, 4), (bob, 5)] {
            store
                .write(|tx| tx.append_event(NewEvent::new(account, EventKind::SignIn), at))
                .unwrap();
        }
        let head = store.account_head(ada, Some(1)).unwrap();
        let cp = head.checkpoint.clone().unwrap();
        // Ada's own numbering and time; bob's events after hers do not move it.
        assert_eq!((cp.account_id, cp.number, cp.at), (ada, 2, 4));
        assert!(cp.is_signed_by(&key().verifying_key()));
        let first = store.account_head(ada, None).unwrap();
        assert_eq!(first.seen_digest, None);
        assert_eq!(
            store.account_head(ada, Some(2)).unwrap().seen_digest,
            Some(cp.digest),
            "the digest at the head is the head's"
        );
        assert_eq!(store.account_head(ada, Some(3)).unwrap().seen_digest, None);
        assert_eq!(
            store.account_head(Uuid::new_v4(), Some(1)).unwrap(),
            AccountHead {
                checkpoint: None,
                seen_digest: None
            }
        );
        let before = head.seen_digest.unwrap();
        drop(store);
        // Someone with the database edits bob's first event (before any of ada's) and
        // re-seals the chain: ada's remembered digest no longer matches.
        edit_and_reseal(&location, 1);
        let reopened = Store::connect(&location).unwrap();
        reopened.set_log_key(key());
        assert_eq!(reopened.verify_chain().unwrap().first_broken, None);
        let now = reopened.account_head(ada, Some(1)).unwrap();
        assert_ne!(now.seen_digest, Some(before));
        assert_eq!(now.checkpoint.unwrap().number, 2);
        assert!(matches!(
            Store::connect(&location).unwrap().account_head(ada, None),
            Err(CoreError::NoLogKey)
        ));
    }

    #[test]
    fn truncating_the_log_s_tail_is_caught() {
        let (_dir, location) = database();
        drop(signed_log(&location, 4));
        // Someone with the database drops the last two events, past the triggers.
        tamper(&location, |tx| {
            fixtures::drop_trigger(tx, "events_no_delete", "events")?;
            tx.raw_execute("DELETE FROM events WHERE seq > 2")
        });
        assert_eq!(
            problem(&location),
            Some(LogProblem::Truncated {
                head: 2,
                checkpoint: 4
            })
        );
    }

    #[test]
    fn recomputing_every_hash_in_the_log_is_caught() {
        let (_dir, location) = database();
        drop(signed_log(&location, 3));
        edit_and_reseal(&location, 2);
        let reopened = Store::connect(&location).unwrap();
        assert_eq!(reopened.verify_chain().unwrap().first_broken, None);
        assert_eq!(problem(&location), Some(LogProblem::Rewritten { seq: 3 }));
    }

    #[test]
    fn events_written_without_the_key_are_unsigned() {
        let (_dir, location) = database();
        drop(signed_log(&location, 2));
        let keyless = Store::connect(&location).unwrap();
        keyless
            .write(|tx| tx.append_event(NewEvent::new(Uuid::new_v4(), EventKind::SignIn), 9))
            .unwrap();
        drop(keyless);
        assert_eq!(
            problem(&location),
            Some(LogProblem::Unsigned {
                checkpoint: 2,
                head: 3
            })
        );
    }
}
