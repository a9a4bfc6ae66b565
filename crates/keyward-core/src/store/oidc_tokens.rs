//! Opaque access and refresh tokens (`oidc_tokens`): only their hashes, each tied to a grant.

use keyward_proto::Millis;
use uuid::Uuid;

use super::sql::{Row, args};
use super::{Tx, bad_value, uuid_of};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub hash: Vec<u8>,
    pub grant_id: Uuid,
    pub kind: TokenKind,
    /// Space-separated; never more than the grant's.
    pub scopes: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// A refresh token exchanged once already (rotation).
    pub used_at: Option<Millis>,
}

const TOKEN_COLS: &str = "hash, grant_id, kind, scopes, created_at, expires_at, used_at";

fn token_from_row(r: &Row<'_>) -> Result<TokenRecord> {
    let kind: String = r.get(2)?;
    Ok(TokenRecord {
        hash: r.get(0)?,
        grant_id: uuid_of(r.get(1)?)?,
        kind: match kind.as_str() {
            "access" => TokenKind::Access,
            "refresh" => TokenKind::Refresh,
            _ => return Err(bad_value("token kind", kind)),
        },
        scopes: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        used_at: r.get(6)?,
    })
}

impl Tx<'_> {
    pub fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        self.execute(
            &format!("INSERT INTO oidc_tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            args![
                t.hash,
                t.grant_id.as_bytes(),
                t.kind.as_str(),
                t.scopes,
                t.created_at,
                t.expires_at,
                t.used_at
            ],
        )?;
        Ok(())
    }

    pub fn token(&self, hash: &[u8]) -> Result<Option<TokenRecord>> {
        self.query_row(
            &format!("SELECT {TOKEN_COLS} FROM oidc_tokens WHERE hash = ?1"),
            args![hash],
            token_from_row,
        )
    }

    /// Marks a refresh token exchanged; false if it already was (reuse).
    pub fn use_refresh_token(&self, hash: &[u8], now: Millis) -> Result<bool> {
        Ok(self.execute(
            "UPDATE oidc_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
            args![hash, now],
        )? == 1)
    }

    /// Revokes one token (RFC 7009): it is deleted, so it is unknown from now on.
    pub fn delete_token(&self, hash: &[u8]) -> Result<bool> {
        Ok(self.execute("DELETE FROM oidc_tokens WHERE hash = ?1", args![hash])? == 1)
    }
}
