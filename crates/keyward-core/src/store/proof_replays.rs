//! Proofs of possession already accepted (DPoP, and the browser's session proofs): each
//! `(jkt, jti)` is accepted once, on every instance on one database, for as long as the proof
//! could be accepted at all; then the row is pruned. The rules (the window, what a proof must
//! say) are keyward-server's `dpop.rs`; this module only remembers.

use keyward_proto::Millis;

use super::Tx;
use super::sql::args;
use crate::error::Result;

impl Tx<'_> {
    /// Remembers the proof `jti` by the key `jkt` until `expires_at`; `false` if it was
    /// already remembered (a replay). Within the transaction of the request it admits, so two
    /// racing requests with one proof cannot both pass.
    pub fn remember_proof(&self, jkt: &str, jti: &str, expires_at: Millis) -> Result<bool> {
        let inserted = self.execute(
            "INSERT INTO proof_replays (jkt, jti, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (jkt, jti) DO NOTHING",
            args![jkt, jti, expires_at],
        )?;
        Ok(inserted == 1)
    }

    /// Deletes at most `batch` remembered proofs that expired by `now`; how many it deleted.
    pub fn prune_proof_replays(&self, now: Millis, batch: u32) -> Result<usize> {
        self.execute(
            "DELETE FROM proof_replays WHERE (jkt, jti) IN (
                 SELECT jkt, jti FROM proof_replays WHERE expires_at <= ?1
                 ORDER BY expires_at LIMIT ?2)",
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
    fn a_proof_is_remembered_once_per_key_and_pruned_after_it_expires() {
        let store = fixtures::store();
        {
            store
                .write(|tx| {
                    assert!(tx.remember_proof("key-a", "j1", 100)?);
                    assert!(!tx.remember_proof("key-a", "j1", 100)?, "a replay");
                    assert!(tx.remember_proof("key-b", "j1", 100)?, "another key's jti");
                    assert!(tx.remember_proof("key-a", "j2", 200)?);
                    assert_eq!(tx.prune_proof_replays(150, 1)?, 1);
                    assert_eq!(tx.prune_proof_replays(150, 10)?, 1);
                    assert_eq!(tx.prune_proof_replays(150, 10)?, 0, "j2 is still live");
                    assert!(!tx.remember_proof("key-a", "j2", 200)?);
                    assert!(
                        tx.remember_proof("key-a", "j1", 300)?,
                        "forgotten once pruned"
                    );
                    Ok::<_, CoreError>(())
                })
                .unwrap();
        }
    }
}
