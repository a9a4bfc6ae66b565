//! What an app was given at one sign-in (`oidc_grants`): its authorization code, and the
//! tokens issued from it (`oidc_tokens`). A grant names the Keyward session that made it and
//! is worth nothing once that session has ended.

use keyward_proto::Millis;
use uuid::Uuid;

use super::sql::{Row, args};
use super::{Tx, uuid_of};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: Uuid,
    pub account_id: Uuid,
    pub client_id: String,
    /// The ID token's `sid`: pairwise per app, like `sub`.
    pub sid: String,
    /// The Keyward session that made it.
    pub session_id: Uuid,
    /// Space-separated.
    pub scopes: String,
    pub nonce: Option<String>,
    pub auth_time: Millis,
    pub acr: String,
    /// Space-separated RFC 8176 values.
    pub amr: String,
    pub code_hash: Vec<u8>,
    pub code_challenge: String,
    pub redirect_uri: String,
    pub code_expires_at: Millis,
    pub code_used_at: Option<Millis>,
    pub created_at: Millis,
    pub ended_at: Option<Millis>,
    pub ended_reason: Option<String>,
}

const GRANT_COLS: &str =
    "id, account_id, client_id, sid, session_id, scopes, nonce, auth_time, acr,
    amr, code_hash, code_challenge, redirect_uri, code_expires_at, code_used_at, created_at,
    ended_at, ended_reason";

fn grant_from_row(r: &Row<'_>) -> Result<Grant> {
    Ok(Grant {
        id: uuid_of(r.get(0)?)?,
        account_id: uuid_of(r.get(1)?)?,
        client_id: r.get(2)?,
        sid: r.get(3)?,
        session_id: uuid_of(r.get(4)?)?,
        scopes: r.get(5)?,
        nonce: r.get(6)?,
        auth_time: r.get(7)?,
        acr: r.get(8)?,
        amr: r.get(9)?,
        code_hash: r.get(10)?,
        code_challenge: r.get(11)?,
        redirect_uri: r.get(12)?,
        code_expires_at: r.get(13)?,
        code_used_at: r.get(14)?,
        created_at: r.get(15)?,
        ended_at: r.get(16)?,
        ended_reason: r.get(17)?,
    })
}

impl Tx<'_> {
    pub fn insert_grant(&self, g: &Grant) -> Result<()> {
        self.execute(
            &format!(
                "INSERT INTO oidc_grants ({GRANT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                     ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ),
            args![
                g.id.as_bytes(),
                g.account_id.as_bytes(),
                g.client_id,
                g.sid,
                g.session_id.as_bytes(),
                g.scopes,
                g.nonce,
                g.auth_time,
                g.acr,
                g.amr,
                g.code_hash,
                g.code_challenge,
                g.redirect_uri,
                g.code_expires_at,
                g.code_used_at,
                g.created_at,
                g.ended_at,
                g.ended_reason
            ],
        )?;
        Ok(())
    }

    pub fn grant(&self, id: Uuid) -> Result<Option<Grant>> {
        self.query_row(
            &format!("SELECT {GRANT_COLS} FROM oidc_grants WHERE id = ?1"),
            args![id.as_bytes()],
            grant_from_row,
        )
    }

    /// The open grants with this `sid` (an app's sign-out names its sign-in by it).
    pub fn open_grants_by_sid(&self, sid: &str) -> Result<Vec<Grant>> {
        self.query_rows(
            &format!("SELECT {GRANT_COLS} FROM oidc_grants WHERE sid = ?1 AND ended_at IS NULL"),
            args![sid],
            grant_from_row,
        )
    }

    pub fn grant_by_code_hash(&self, code_hash: &[u8]) -> Result<Option<Grant>> {
        self.query_row(
            &format!("SELECT {GRANT_COLS} FROM oidc_grants WHERE code_hash = ?1"),
            args![code_hash],
            grant_from_row,
        )
    }

    /// Marks the grant's code used; false if it already was (the second presentation).
    pub fn use_grant_code(&self, id: Uuid, now: Millis) -> Result<bool> {
        Ok(self.execute(
            "UPDATE oidc_grants SET code_used_at = ?2 WHERE id = ?1 AND code_used_at IS NULL",
            args![id.as_bytes(), now],
        )? == 1)
    }

    /// Ends a grant (every token from it stops working); true if this call ended it.
    pub fn end_grant(&self, id: Uuid, reason: &str, now: Millis) -> Result<bool> {
        Ok(self.execute(
            "UPDATE oidc_grants SET ended_at = ?2, ended_reason = ?3
             WHERE id = ?1 AND ended_at IS NULL",
            args![id.as_bytes(), now, reason],
        )? == 1)
    }

    /// Ends every open grant of the account to the client; returns how many.
    pub fn end_client_grants(
        &self,
        account_id: Uuid,
        client_id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<usize> {
        self.execute(
            "UPDATE oidc_grants SET ended_at = ?3, ended_reason = ?4
             WHERE account_id = ?1 AND client_id = ?2 AND ended_at IS NULL",
            args![account_id.as_bytes(), client_id, now, reason],
        )
    }

    /// Deletes up to `batch` grants made before `before` (with their tokens): none can be in
    /// use, since a grant lives no longer than its session's absolute lifetime.
    pub fn prune_grants(&self, before: Millis, batch: u32) -> Result<usize> {
        self.execute(
            "DELETE FROM oidc_grants WHERE id IN (
                 SELECT id FROM oidc_grants WHERE created_at < ?1 LIMIT ?2)",
            args![before, i64::from(batch)],
        )
    }

    /// Ends every open grant a Keyward session made (an app's sign-out through Keyward).
    pub fn end_session_grants(&self, session_id: Uuid, reason: &str, now: Millis) -> Result<usize> {
        self.execute(
            "UPDATE oidc_grants SET ended_at = ?2, ended_reason = ?3
             WHERE session_id = ?1 AND ended_at IS NULL",
            args![session_id.as_bytes(), now, reason],
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::fixtures;
    use crate::store::{ClientAuthMethod, ClientSource, OidcClient, TokenKind, TokenRecord};

    #[test]
    fn a_code_is_used_once_a_grant_ends_once_and_old_grants_go_with_their_tokens() {
        let store = fixtures::store();
        store
            .write(|tx| {
                let account = fixtures::account("ada");
                tx.insert_account(&account)?;
                tx.insert_oidc_client(&OidcClient {
                    client_id: "chat".into(),
                    name: "Chat".into(),
                    redirect_uris: vec!["https://chat.example/cb".into()],
                    post_logout_redirect_uris: vec![],
                    scopes: vec!["openid".into()],
                    auth_method: ClientAuthMethod::None,
                    secret_hash: None,
                    backchannel_logout_uri: None,
                    jwks: None,
                    device_grant: false,
                    source: ClientSource::Command,
                    created_at: 1,
                })?;
                let grant = Grant {
                    id: Uuid::new_v4(),
                    account_id: account.id,
                    client_id: "chat".into(),
                    sid: "sid".into(),
                    session_id: Uuid::new_v4(),
                    scopes: "openid".into(),
                    nonce: None,
                    auth_time: 10,
                    acr: "phr".into(),
                    amr: "pop user".into(),
                    code_hash: vec![1; 32],
                    code_challenge: "c".into(),
                    redirect_uri: "https://chat.example/cb".into(),
                    code_expires_at: 70,
                    code_used_at: None,
                    created_at: 10,
                    ended_at: None,
                    ended_reason: None,
                };
                tx.insert_grant(&grant)?;
                assert_eq!(tx.grant_by_code_hash(&[1; 32])?.unwrap(), grant);
                assert!(tx.use_grant_code(grant.id, 20)?);
                assert!(!tx.use_grant_code(grant.id, 21)?, "a code is used once");
                tx.insert_token(&TokenRecord {
                    hash: vec![2; 32],
                    grant_id: grant.id,
                    kind: TokenKind::Refresh,
                    scopes: "openid".into(),
                    created_at: 20,
                    expires_at: 1000,
                    used_at: None,
                })?;
                assert!(tx.use_refresh_token(&[2; 32], 30)?);
                assert!(
                    !tx.use_refresh_token(&[2; 32], 31)?,
                    "a refresh token is used once"
                );
                assert_eq!(tx.open_grants_by_sid("sid")?.len(), 1);
                assert!(tx.end_grant(grant.id, "test", 40)?);
                assert!(!tx.end_grant(grant.id, "test", 41)?);
                assert!(tx.open_grants_by_sid("sid")?.is_empty());
                assert_eq!(tx.prune_grants(10, 100)?, 0);
                assert_eq!(tx.prune_grants(11, 100)?, 1);
                assert!(tx.token(&[2; 32])?.is_none(), "its tokens went with it");
                Ok::<_, crate::CoreError>(())
            })
            .unwrap();
    }
}
