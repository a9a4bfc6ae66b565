//! Passkeys and security keys registered to an account.

use uuid::Uuid;

use keyward_proto::{AuthenticatorStatus, Millis};

use super::sql::{Row, args};
use super::{Tx, bad_value, opt_uuid, uuid_of};
use crate::error::{CoreError, Result};

#[derive(Debug, Clone)]
pub struct Authenticator {
    pub id: Uuid,
    pub account_id: Uuid,
    pub credential_id: Vec<u8>,
    /// The relying-party library's serialised credential; opaque to this crate.
    pub credential: String,
    pub nickname: String,
    pub aaguid: Option<Uuid>,
    pub transports: Vec<String>,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub sign_count: u32,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub status: AuthenticatorStatus,
}

const AUTHENTICATOR_COLS: &str = "id, account_id, credential_id, credential, nickname, aaguid,
    transports, backup_eligible, backup_state, sign_count, created_at, last_used_at, status";

fn authenticator_from_row(r: &Row<'_>) -> Result<Authenticator> {
    let transports: String = r.get(6)?;
    let status: String = r.get(12)?;
    Ok(Authenticator {
        id: uuid_of(r.get(0)?)?,
        account_id: uuid_of(r.get(1)?)?,
        credential_id: r.get(2)?,
        credential: r.get(3)?,
        nickname: r.get(4)?,
        aaguid: opt_uuid(r.get(5)?)?,
        transports: serde_json::from_str(&transports).unwrap_or_default(),
        backup_eligible: r.get(7)?,
        backup_state: r.get(8)?,
        sign_count: u32::try_from(r.get::<i64>(9)?)
            .map_err(|_| CoreError::Corrupt("a signature counter out of range".into()))?,
        created_at: r.get(10)?,
        last_used_at: r.get(11)?,
        status: match status.as_str() {
            "active" => AuthenticatorStatus::Active,
            "lost" => AuthenticatorStatus::Lost,
            _ => return Err(bad_value("authenticator status", status)),
        },
    })
}

impl Tx<'_> {
    /// Always stored as active. A credential id already registered (to anyone) is refused
    /// with [`CoreError::CredentialInUse`].
    pub fn insert_authenticator(&self, a: &Authenticator) -> Result<()> {
        let inserted = self.execute(
            "INSERT INTO authenticators (id, account_id, credential_id, credential, nickname,
                 aaguid, transports, backup_eligible, backup_state, sign_count, created_at,
                 last_used_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'active')
             ON CONFLICT(credential_id) DO NOTHING",
            args![
                a.id.as_bytes(),
                a.account_id.as_bytes(),
                a.credential_id,
                a.credential,
                a.nickname,
                a.aaguid.map(|u| u.as_bytes().to_vec()),
                serde_json::to_string(&a.transports)?,
                a.backup_eligible,
                a.backup_state,
                i64::from(a.sign_count),
                a.created_at,
                a.last_used_at
            ],
        )?;
        if inserted == 0 {
            return Err(CoreError::CredentialInUse);
        }
        Ok(())
    }

    /// Oldest first.
    pub fn authenticators(&self, account_id: Uuid) -> Result<Vec<Authenticator>> {
        self.query_rows(
            &format!(
                "SELECT {AUTHENTICATOR_COLS} FROM authenticators WHERE account_id = ?1
                 ORDER BY created_at, id"
            ),
            args![account_id.as_bytes()],
            authenticator_from_row,
        )
    }

    pub fn authenticator(&self, id: Uuid) -> Result<Option<Authenticator>> {
        self.query_row(
            &format!("SELECT {AUTHENTICATOR_COLS} FROM authenticators WHERE id = ?1"),
            args![id.as_bytes()],
            authenticator_from_row,
        )
    }

    pub fn authenticator_by_credential_id(&self, cred_id: &[u8]) -> Result<Option<Authenticator>> {
        self.query_row(
            &format!("SELECT {AUTHENTICATOR_COLS} FROM authenticators WHERE credential_id = ?1"),
            args![cred_id],
            authenticator_from_row,
        )
    }

    /// Records a successful assertion: the new credential record, counter and backup flags.
    pub fn record_authenticator_use(&self, a: &Authenticator, now: Millis) -> Result<()> {
        self.execute(
            "UPDATE authenticators SET credential = ?2, sign_count = ?3, backup_eligible = ?4,
                 backup_state = ?5, last_used_at = ?6 WHERE id = ?1",
            args![
                a.id.as_bytes(),
                a.credential,
                i64::from(a.sign_count),
                a.backup_eligible,
                a.backup_state,
                now
            ],
        )?;
        Ok(())
    }

    /// Records that this key's attestation was verified against a configured vendor root at
    /// registration (attested mode): the only case Keyward claims a hardware key to apps.
    pub fn mark_authenticator_attested(&self, id: Uuid) -> Result<()> {
        self.execute(
            "UPDATE authenticators SET attested = ?2 WHERE id = ?1",
            args![id.as_bytes(), true],
        )?;
        Ok(())
    }

    /// Whether [`Tx::mark_authenticator_attested`] was recorded for this key.
    pub fn authenticator_attested(&self, id: Uuid) -> Result<bool> {
        Ok(self
            .query_row(
                "SELECT attested FROM authenticators WHERE id = ?1",
                args![id.as_bytes()],
                |r| r.get::<bool>(0),
            )?
            .unwrap_or(false))
    }

    pub fn rename_authenticator(&self, id: Uuid, nickname: &str) -> Result<()> {
        self.execute(
            "UPDATE authenticators SET nickname = ?2 WHERE id = ?1",
            args![id.as_bytes(), nickname],
        )?;
        Ok(())
    }

    pub fn mark_authenticator_lost(&self, id: Uuid) -> Result<()> {
        self.execute(
            "UPDATE authenticators SET status = 'lost' WHERE id = ?1",
            args![id.as_bytes()],
        )?;
        Ok(())
    }

    pub fn delete_authenticator(&self, id: Uuid) -> Result<()> {
        self.execute(
            "DELETE FROM authenticators WHERE id = ?1",
            args![id.as_bytes()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures;
    use super::*;

    fn authenticator(account_id: Uuid, credential_id: &[u8], created_at: Millis) -> Authenticator {
        Authenticator {
            id: Uuid::new_v4(),
            account_id,
            credential_id: credential_id.to_vec(),
            credential: "{}".into(),
            nickname: "key".into(),
            aaguid: Some(Uuid::new_v4()),
            transports: vec!["usb".into(), "nfc".into()],
            backup_eligible: false,
            backup_state: false,
            sign_count: 0,
            created_at,
            last_used_at: None,
            status: AuthenticatorStatus::Lost,
        }
    }

    #[test]
    fn an_authenticator_round_trips_and_records_its_use() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        let key = authenticator(a.id, b"cred-1", 5);
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                tx.insert_authenticator(&key)?;
                let got = tx.authenticator_by_credential_id(b"cred-1")?.unwrap();
                assert_eq!(got.id, key.id);
                assert_eq!(got.aaguid, key.aaguid);
                assert_eq!(got.transports, ["usb", "nfc"]);
                assert_eq!(got.status, AuthenticatorStatus::Active, "stored as active");

                let mut used = got.clone();
                used.credential = r#"{"counter":7}"#.into();
                used.sign_count = 7;
                used.backup_eligible = true;
                used.backup_state = true;
                tx.record_authenticator_use(&used, 42)?;
                let got = tx.authenticator(key.id)?.unwrap();
                assert_eq!(got.credential, used.credential);
                assert_eq!(got.sign_count, 7);
                assert!(got.backup_eligible && got.backup_state);
                assert_eq!(got.last_used_at, Some(42));

                tx.rename_authenticator(key.id, "blue key")?;
                tx.mark_authenticator_lost(key.id)?;
                let got = tx.authenticator(key.id)?.unwrap();
                assert_eq!(got.nickname, "blue key");
                assert_eq!(got.status, AuthenticatorStatus::Lost);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn a_credential_id_is_registered_once_and_listing_is_oldest_first() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        let newer = authenticator(a.id, b"cred-2", 20);
        let older = authenticator(a.id, b"cred-1", 10);
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                tx.insert_authenticator(&newer)?;
                tx.insert_authenticator(&older)?;
                assert!(matches!(
                    tx.insert_authenticator(&authenticator(a.id, b"cred-1", 30)),
                    Err(CoreError::CredentialInUse)
                ));
                let ids: Vec<Uuid> = tx.authenticators(a.id)?.iter().map(|k| k.id).collect();
                assert_eq!(ids, [older.id, newer.id]);

                tx.delete_authenticator(older.id)?;
                assert!(tx.authenticator(older.id)?.is_none());
                assert_eq!(tx.authenticators(a.id)?.len(), 1);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }
}
