//! Browser sessions bound to a key in the browser (`browser_bindings`): the public key, the
//! short life of the session's current token, and the DBSC registration challenge (hashed)
//! the sign-in handed out. Refresh challenges are stateless (keyward-server's
//! `browser_binding`) and stored nowhere.

use keyward_proto::Millis;
use uuid::Uuid;

use super::sql::{Row, args};
use super::{Tx, bad_value, uuid_of};
use crate::error::Result;

/// Who holds the key a browser session is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserBindingKind {
    /// A cookie session not bound yet: it may still register with DBSC.
    Pending,
    /// The web UI's non-extractable WebCrypto key, kept in IndexedDB.
    Browser,
    /// The browser's own Device Bound Session Credentials key.
    Dbsc,
}

impl BrowserBindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BrowserBindingKind::Pending => "pending",
            BrowserBindingKind::Browser => "browser",
            BrowserBindingKind::Dbsc => "dbsc",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserBinding {
    pub session_id: Uuid,
    pub kind: BrowserBindingKind,
    /// The public key as JSON (a P-256 JWK), and its RFC 7638 thumbprint; none while pending.
    pub jwk: Option<String>,
    pub jkt: Option<String>,
    /// The session's current token is refused from then on (none while pending).
    pub token_expires_at: Option<Millis>,
    /// The DBSC registration challenge (hashed), until registration uses it up.
    pub challenge_hash: Option<Vec<u8>>,
    pub challenge_expires_at: Option<Millis>,
    pub created_at: Millis,
}

const COLS: &str = "session_id, kind, jwk, jkt, token_expires_at, challenge_hash, \
                    challenge_expires_at, created_at";

fn binding_from_row(r: &Row<'_>) -> Result<BrowserBinding> {
    let kind: String = r.get(1)?;
    Ok(BrowserBinding {
        session_id: uuid_of(r.get(0)?)?,
        kind: match kind.as_str() {
            "pending" => BrowserBindingKind::Pending,
            "browser" => BrowserBindingKind::Browser,
            "dbsc" => BrowserBindingKind::Dbsc,
            _ => return Err(bad_value("browser binding kind", kind)),
        },
        jwk: r.get(2)?,
        jkt: r.get(3)?,
        token_expires_at: r.get(4)?,
        challenge_hash: r.get(5)?,
        challenge_expires_at: r.get(6)?,
        created_at: r.get(7)?,
    })
}

impl Tx<'_> {
    /// Stores a session's binding, replacing any it had (pending becoming bound).
    pub fn put_browser_binding(&self, b: &BrowserBinding) -> Result<()> {
        self.execute(
            "DELETE FROM browser_bindings WHERE session_id = ?1",
            args![b.session_id.as_bytes()],
        )?;
        self.execute(
            &format!(
                "INSERT INTO browser_bindings ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            args![
                b.session_id.as_bytes(),
                b.kind.as_str(),
                b.jwk,
                b.jkt,
                b.token_expires_at,
                b.challenge_hash,
                b.challenge_expires_at,
                b.created_at
            ],
        )?;
        Ok(())
    }

    pub fn browser_binding(&self, session_id: Uuid) -> Result<Option<BrowserBinding>> {
        self.query_row(
            &format!("SELECT {COLS} FROM browser_bindings WHERE session_id = ?1"),
            args![session_id.as_bytes()],
            binding_from_row,
        )
    }

    /// Takes the registration challenge `challenge_hash` if it is still outstanding: true
    /// once, false for a replayed one. The caller checks its expiry first.
    pub fn take_browser_challenge(&self, session_id: Uuid, challenge_hash: &[u8]) -> Result<bool> {
        Ok(self.execute(
            "UPDATE browser_bindings SET challenge_hash = NULL, challenge_expires_at = NULL
             WHERE session_id = ?1 AND challenge_hash = ?2",
            args![session_id.as_bytes(), challenge_hash],
        )? == 1)
    }

    /// A refresh's new token lives until `expires_at`.
    pub fn extend_browser_token(&self, session_id: Uuid, expires_at: Millis) -> Result<()> {
        self.execute(
            "UPDATE browser_bindings SET token_expires_at = ?2 WHERE session_id = ?1",
            args![session_id.as_bytes(), expires_at],
        )?;
        Ok(())
    }
}
