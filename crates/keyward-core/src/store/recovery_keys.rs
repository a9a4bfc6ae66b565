//! Each account's recovery key: only its public half is stored.

use uuid::Uuid;

use keyward_proto::Millis;

use super::sql::{Row, args};
use super::{Tx, uuid_of};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct RecoveryKeyRecord {
    pub account_id: Uuid,
    pub public_key: Vec<u8>,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub last_verified_at: Option<Millis>,
}

const RECOVERY_KEY_COLS: &str =
    "account_id, public_key, created_at, confirmed_at, last_verified_at";

fn recovery_key_from_row(r: &Row<'_>) -> Result<RecoveryKeyRecord> {
    Ok(RecoveryKeyRecord {
        account_id: uuid_of(r.get(0)?)?,
        public_key: r.get(1)?,
        created_at: r.get(2)?,
        confirmed_at: r.get(3)?,
        last_verified_at: r.get(4)?,
    })
}

impl Tx<'_> {
    pub fn recovery_key(&self, account_id: Uuid) -> Result<Option<RecoveryKeyRecord>> {
        self.query_row(
            &format!("SELECT {RECOVERY_KEY_COLS} FROM recovery_keys WHERE account_id = ?1"),
            args![account_id.as_bytes()],
            recovery_key_from_row,
        )
    }

    /// Replaces the account's recovery key; the new one starts unconfirmed.
    pub fn set_recovery_key(&self, account_id: Uuid, public_key: &[u8], now: Millis) -> Result<()> {
        self.execute(
            "INSERT INTO recovery_keys (account_id, public_key, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(account_id) DO UPDATE SET public_key = excluded.public_key,
                 created_at = excluded.created_at, confirmed_at = NULL, last_verified_at = NULL",
            args![account_id.as_bytes(), public_key, now],
        )?;
        Ok(())
    }

    /// The user proved they hold the key. `confirm` also marks it confirmed, if it is not yet;
    /// the first confirmation time is kept.
    pub fn mark_recovery_key_verified(
        &self,
        account_id: Uuid,
        confirm: bool,
        now: Millis,
    ) -> Result<()> {
        self.execute(
            "UPDATE recovery_keys SET last_verified_at = ?2,
                 confirmed_at = CASE WHEN ?3 THEN COALESCE(confirmed_at, ?2) ELSE confirmed_at END
             WHERE account_id = ?1",
            args![account_id.as_bytes(), now, confirm],
        )?;
        Ok(())
    }

    /// A redeemed key is used up.
    pub fn delete_recovery_key(&self, account_id: Uuid) -> Result<()> {
        self.execute(
            "DELETE FROM recovery_keys WHERE account_id = ?1",
            args![account_id.as_bytes()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures;
    use crate::error::CoreError;

    #[test]
    fn a_recovery_key_is_set_verified_replaced_and_deleted() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                assert!(tx.recovery_key(a.id)?.is_none());

                tx.set_recovery_key(a.id, b"pk-1", 10)?;
                let k = tx.recovery_key(a.id)?.unwrap();
                assert_eq!(
                    (k.account_id, k.public_key.as_slice()),
                    (a.id, &b"pk-1"[..])
                );
                assert_eq!(
                    (k.created_at, k.confirmed_at, k.last_verified_at),
                    (10, None, None)
                );

                tx.mark_recovery_key_verified(a.id, false, 20)?;
                let k = tx.recovery_key(a.id)?.unwrap();
                assert_eq!((k.confirmed_at, k.last_verified_at), (None, Some(20)));

                tx.mark_recovery_key_verified(a.id, true, 30)?;
                tx.mark_recovery_key_verified(a.id, true, 40)?;
                let k = tx.recovery_key(a.id)?.unwrap();
                assert_eq!(
                    (k.confirmed_at, k.last_verified_at),
                    (Some(30), Some(40)),
                    "the first confirmation is kept"
                );

                tx.set_recovery_key(a.id, b"pk-2", 50)?;
                let k = tx.recovery_key(a.id)?.unwrap();
                assert_eq!(k.public_key, b"pk-2");
                assert_eq!(
                    (k.created_at, k.confirmed_at, k.last_verified_at),
                    (50, None, None)
                );

                tx.delete_recovery_key(a.id)?;
                assert!(tx.recovery_key(a.id)?.is_none());
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }
}
