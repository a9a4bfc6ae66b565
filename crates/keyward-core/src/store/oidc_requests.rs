//! Authorization requests waiting for the person (`oidc_requests`): stored when an app sends
//! someone to `/oauth2/authorize`, taken once when they approve or deny, gone after 10 minutes.

use keyward_proto::Millis;

use super::Tx;
use super::sql::{Row, args};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    /// The hash of the request ID the web UI holds.
    pub id_hash: Vec<u8>,
    pub client_id: String,
    pub redirect_uri: String,
    /// Space-separated, as asked (`openid` among them).
    pub scopes: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// `prompt=login`: the session's last ceremony must be at or after this.
    pub login_after: Option<Millis>,
    /// `acr_values` as asked, space-separated: one of them must be met.
    pub acr_values: Option<String>,
    pub max_age_ms: Option<i64>,
    pub created_at: Millis,
    pub expires_at: Millis,
}

const REQUEST_COLS: &str = "id_hash, client_id, redirect_uri, scopes, state, nonce,
    code_challenge, login_after, acr_values, max_age_ms, created_at, expires_at";

fn request_from_row(r: &Row<'_>) -> Result<PendingAuthorization> {
    Ok(PendingAuthorization {
        id_hash: r.get(0)?,
        client_id: r.get(1)?,
        redirect_uri: r.get(2)?,
        scopes: r.get(3)?,
        state: r.get(4)?,
        nonce: r.get(5)?,
        code_challenge: r.get(6)?,
        login_after: r.get(7)?,
        acr_values: r.get(8)?,
        max_age_ms: r.get(9)?,
        created_at: r.get(10)?,
        expires_at: r.get(11)?,
    })
}

impl Tx<'_> {
    pub fn insert_pending_authorization(&self, p: &PendingAuthorization) -> Result<()> {
        self.execute(
            &format!(
                "INSERT INTO oidc_requests ({REQUEST_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            args![
                p.id_hash,
                p.client_id,
                p.redirect_uri,
                p.scopes,
                p.state,
                p.nonce,
                p.code_challenge,
                p.login_after,
                p.acr_values,
                p.max_age_ms,
                p.created_at,
                p.expires_at
            ],
        )?;
        Ok(())
    }

    /// The request, if it is still waiting at `now`.
    pub fn pending_authorization(
        &self,
        id_hash: &[u8],
        now: Millis,
    ) -> Result<Option<PendingAuthorization>> {
        self.query_row(
            &format!(
                "SELECT {REQUEST_COLS} FROM oidc_requests WHERE id_hash = ?1 AND expires_at > ?2"
            ),
            args![id_hash, now],
            request_from_row,
        )
    }

    /// Takes the request (deleted whatever happens next), if it is still waiting at `now`.
    pub fn take_pending_authorization(
        &self,
        id_hash: &[u8],
        now: Millis,
    ) -> Result<Option<PendingAuthorization>> {
        let taken = self.query_row(
            &format!("DELETE FROM oidc_requests WHERE id_hash = ?1 RETURNING {REQUEST_COLS}"),
            args![id_hash],
            request_from_row,
        )?;
        Ok(taken.filter(|p| p.expires_at > now))
    }

    /// Deletes up to `batch` requests expired at `now`.
    pub fn prune_pending_authorizations(&self, now: Millis, batch: u32) -> Result<usize> {
        self.execute(
            "DELETE FROM oidc_requests WHERE id_hash IN (
                 SELECT id_hash FROM oidc_requests WHERE expires_at <= ?1 LIMIT ?2)",
            args![now, i64::from(batch)],
        )
    }
}
