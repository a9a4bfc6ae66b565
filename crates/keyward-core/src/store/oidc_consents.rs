//! What each person allowed each app (`oidc_consents`): remembered, and revocable.

use keyward_proto::Millis;
use uuid::Uuid;

use super::sql::{Row, args};
use super::{Tx, uuid_of};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub account_id: Uuid,
    pub client_id: String,
    /// Space-separated.
    pub scopes: String,
    pub granted_at: Millis,
}

fn consent_from_row(r: &Row<'_>) -> Result<Consent> {
    Ok(Consent {
        account_id: uuid_of(r.get(0)?)?,
        client_id: r.get(1)?,
        scopes: r.get(2)?,
        granted_at: r.get(3)?,
    })
}

impl Tx<'_> {
    /// Records (or replaces) what the account allowed the client.
    pub fn put_consent(&self, c: &Consent) -> Result<()> {
        self.execute(
            "INSERT INTO oidc_consents (account_id, client_id, scopes, granted_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (account_id, client_id)
             DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
            args![c.account_id.as_bytes(), c.client_id, c.scopes, c.granted_at],
        )?;
        Ok(())
    }

    pub fn consent(&self, account_id: Uuid, client_id: &str) -> Result<Option<Consent>> {
        self.query_row(
            "SELECT account_id, client_id, scopes, granted_at FROM oidc_consents
             WHERE account_id = ?1 AND client_id = ?2",
            args![account_id.as_bytes(), client_id],
            consent_from_row,
        )
    }

    pub fn consents(&self, account_id: Uuid) -> Result<Vec<Consent>> {
        self.query_rows(
            "SELECT account_id, client_id, scopes, granted_at FROM oidc_consents
             WHERE account_id = ?1 ORDER BY granted_at DESC, client_id",
            args![account_id.as_bytes()],
            consent_from_row,
        )
    }

    pub fn delete_consent(&self, account_id: Uuid, client_id: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM oidc_consents WHERE account_id = ?1 AND client_id = ?2",
            args![account_id.as_bytes(), client_id],
        )? == 1)
    }
}
