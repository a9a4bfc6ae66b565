//! The OpenID provider's ID-token signing keys (`oidc_keys`): the public half as a JWK, the
//! private half only sealed (keywardd seals and unseals; the store never sees it in clear).

use keyward_proto::Millis;

use super::Tx;
use super::sql::{Row, args};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// The public key as a JWK (JSON text), as the JWKS publishes it.
    pub public_jwk: String,
    pub sealed_private: Vec<u8>,
    pub created_at: Millis,
    /// When a newer key replaced it; None for the active key.
    pub retired_at: Option<Millis>,
    /// A retired key is published until then: every token it signed has expired by then.
    pub publish_until: Option<Millis>,
}

const KEY_COLS: &str = "kid, public_jwk, sealed_private, created_at, retired_at, publish_until";

fn key_from_row(r: &Row<'_>) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.get(0)?,
        public_jwk: r.get(1)?,
        sealed_private: r.get(2)?,
        created_at: r.get(3)?,
        retired_at: r.get(4)?,
        publish_until: r.get(5)?,
    })
}

impl Tx<'_> {
    pub fn insert_signing_key(&self, k: &SigningKeyRecord) -> Result<()> {
        self.execute(
            "INSERT INTO oidc_keys (kid, public_jwk, sealed_private, created_at, retired_at,
                 publish_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![
                k.kid,
                k.public_jwk,
                k.sealed_private,
                k.created_at,
                k.retired_at,
                k.publish_until
            ],
        )?;
        Ok(())
    }

    /// The key that signs now: the newest not retired.
    pub fn active_signing_key(&self) -> Result<Option<SigningKeyRecord>> {
        self.query_row(
            &format!(
                "SELECT {KEY_COLS} FROM oidc_keys WHERE retired_at IS NULL
                 ORDER BY created_at DESC, kid LIMIT 1"
            ),
            args![],
            key_from_row,
        )
    }

    /// The keys a verifier may need at `now`: the active one and those retired whose tokens
    /// may still be unexpired; newest first.
    pub fn published_signing_keys(&self, now: Millis) -> Result<Vec<SigningKeyRecord>> {
        self.query_rows(
            &format!(
                "SELECT {KEY_COLS} FROM oidc_keys WHERE retired_at IS NULL OR publish_until > ?1
                 ORDER BY created_at DESC, kid"
            ),
            args![now],
            key_from_row,
        )
    }

    /// Retires every active key: still published until `publish_until`. Returns how many.
    pub fn retire_signing_keys(&self, now: Millis, publish_until: Millis) -> Result<usize> {
        self.execute(
            "UPDATE oidc_keys SET retired_at = ?1, publish_until = ?2 WHERE retired_at IS NULL",
            args![now, publish_until],
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::fixtures;

    fn key(kid: &str, at: Millis) -> SigningKeyRecord {
        SigningKeyRecord {
            kid: kid.into(),
            public_jwk: format!("{{\"kid\":\"{kid}\"}}"),
            sealed_private: vec![1, 2, 3],
            created_at: at,
            retired_at: None,
            publish_until: None,
        }
    }

    #[test]
    fn a_retired_key_is_published_until_its_tokens_have_expired() {
        let store = fixtures::store();
        store
            .write(|tx| {
                tx.insert_signing_key(&key("one", 10))?;
                assert_eq!(tx.active_signing_key()?.unwrap().kid, "one");
                assert_eq!(tx.retire_signing_keys(20, 100)?, 1);
                tx.insert_signing_key(&key("two", 20))?;
                assert_eq!(tx.active_signing_key()?.unwrap().kid, "two");
                let kids = |now| -> crate::Result<Vec<String>> {
                    Ok(tx
                        .published_signing_keys(now)?
                        .into_iter()
                        .map(|k| k.kid)
                        .collect())
                };
                assert_eq!(kids(99)?, ["two", "one"]);
                assert_eq!(kids(100)?, ["two"]);
                Ok::<_, crate::CoreError>(())
            })
            .unwrap();
    }
}
