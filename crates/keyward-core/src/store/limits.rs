//! Rate-limit hits: one row per counted attempt, keyed by what is counted. The rules (what
//! is counted, the limits, when a key is forgiven) are the relying party's; this module only
//! keeps the hits, so that every instance on one database counts into the same rows and a
//! restart forgets nothing.
//!
//! Hits are written inside the transaction of the attempt they count: a transaction that
//! rolls back (or runs again after a conflict) counts once or not at all.

use keyward_proto::Millis;

use super::Tx;
use super::sql::args;
use crate::error::Result;

impl Tx<'_> {
    /// The times of `key`'s hits after `since`, newest first, at most `max`.
    pub fn limit_hits(&self, key: &str, since: Millis, max: u32) -> Result<Vec<Millis>> {
        self.query_rows(
            "SELECT at FROM limit_hits WHERE limit_key = ?1 AND at > ?2
             ORDER BY at DESC LIMIT ?3",
            args![key, since, i64::from(max)],
            |r| r.get(0),
        )
    }

    /// Counts a hit on `key` at `at`; it stops mattering (and may be pruned) at `expires_at`.
    pub fn record_limit_hit(&self, key: &str, at: Millis, expires_at: Millis) -> Result<()> {
        self.execute(
            "INSERT INTO limit_hits (limit_key, at, expires_at) VALUES (?1, ?2, ?3)",
            args![key, at, expires_at],
        )?;
        Ok(())
    }

    /// Forgets every hit on `key`.
    pub fn clear_limit(&self, key: &str) -> Result<()> {
        self.execute("DELETE FROM limit_hits WHERE limit_key = ?1", args![key])?;
        Ok(())
    }

    /// Deletes at most `batch` hits that no longer count at `now`; how many it deleted.
    pub fn prune_limit_hits(&self, now: Millis, batch: u32) -> Result<usize> {
        // A key and a time do not make a row unique; the expiry index finds the rows, and
        // the same condition deletes them (a few more than `batch` at most, on ties).
        self.execute(
            "DELETE FROM limit_hits WHERE expires_at <= (
                 SELECT MAX(expires_at) FROM (
                     SELECT expires_at FROM limit_hits WHERE expires_at <= ?1
                     ORDER BY expires_at LIMIT ?2) AS oldest)",
            args![now, i64::from(batch)],
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures;
    use crate::error::CoreError;

    #[test]
    fn hits_are_counted_per_key_newest_first_cleared_and_pruned() {
        let store = fixtures::store();
        store
            .write(|tx| {
                for at in [10, 20, 30] {
                    tx.record_limit_hit("begin 192.0.2.1", at, at + 100)?;
                }
                tx.record_limit_hit("begin 192.0.2.2", 25, 125)?;
                assert_eq!(tx.limit_hits("begin 192.0.2.1", 0, 10)?, vec![30, 20, 10]);
                assert_eq!(tx.limit_hits("begin 192.0.2.1", 0, 2)?, vec![30, 20]);
                assert_eq!(tx.limit_hits("begin 192.0.2.1", 10, 10)?, vec![30, 20]);
                assert_eq!(tx.limit_hits("begin 192.0.2.9", 0, 10)?, Vec::<i64>::new());

                tx.clear_limit("begin 192.0.2.2")?;
                assert!(tx.limit_hits("begin 192.0.2.2", 0, 10)?.is_empty());

                // At 125 the hits at 10 and 20 have expired; one batch of 1 takes the oldest.
                assert_eq!(tx.prune_limit_hits(125, 1)?, 1);
                assert_eq!(tx.limit_hits("begin 192.0.2.1", 0, 10)?, vec![30, 20]);
                assert_eq!(tx.prune_limit_hits(125, 10)?, 1);
                assert_eq!(tx.prune_limit_hits(125, 10)?, 0, "the live hit stays");
                assert_eq!(tx.limit_hits("begin 192.0.2.1", 0, 10)?, vec![30]);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn a_hit_in_a_transaction_that_rolls_back_is_not_counted() {
        let store = fixtures::store();
        let refused: Result<(), CoreError> = store.write(|tx| {
            tx.record_limit_hit("failure 192.0.2.1", 10, 110)?;
            Err(CoreError::UsernameTaken)
        });
        assert!(refused.is_err());
        let hits = store
            .read(|tx| tx.limit_hits("failure 192.0.2.1", 0, 10))
            .unwrap();
        assert!(hits.is_empty());
    }
}
