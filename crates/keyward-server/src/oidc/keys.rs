//! ID-token signing keys: ES256 (P-256), made by `p256`, signed with through `jsonwebtoken`
//! (its pure-Rust backend). The private half is stored only sealed (`seal.rs`); the public half
//! is published in the JWKS as long as a token it signed may be unexpired. `keywardd
//! rotate-signing-key` rotates (`rotate`); running instances sign with the new key from their
//! next token on, since the active key is read in each issuing transaction.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use keyward_core::Store;
use keyward_core::store::{SigningKeyRecord, Tx};
use keyward_proto::Millis;
use p256::pkcs8::EncodePrivateKey;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::seal::SealKey;
use crate::error::ServerError;

/// A verifier may be a minute behind: a retired key stays published that much longer.
const CLOCK_SKEW_MS: i64 = 60_000;

fn label(kid: &str) -> Vec<u8> {
    format!("keyward oidc signing key {kid}").into_bytes()
}

/// A new key, its private half sealed.
fn new_key(seal: &SealKey, now: Millis) -> Result<SigningKeyRecord, ServerError> {
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(ServerError::Internal(
            "a P-256 key without coordinates".into(),
        ));
    };
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    // RFC 7638 thumbprint: the required members, in lexicographic order, no spaces.
    let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
    let public_jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256",
    })
    .to_string();
    let der = key
        .to_pkcs8_der()
        .map_err(|e| ServerError::Internal(format!("encoding a signing key: {e}")))?;
    Ok(SigningKeyRecord {
        sealed_private: seal.seal(der.as_bytes(), &label(&kid))?,
        kid,
        public_jwk,
        created_at: now,
        retired_at: None,
        publish_until: None,
    })
}

/// Makes the first signing key if there is none (at start-up).
pub(super) fn ensure_signing_key(
    store: &Store,
    seal: &SealKey,
    now: Millis,
) -> Result<(), ServerError> {
    store.write(|tx| {
        if tx.active_signing_key()?.is_none() {
            tx.insert_signing_key(&new_key(seal, now)?)?;
        }
        Ok(())
    })
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    pub new_kid: String,
    /// Retired keys stay in the JWKS until then.
    pub previous_published_until: Millis,
}

/// Retires the active key (still published until every token it signed has expired) and
/// makes a new one, in one transaction. For `keywardd rotate-signing-key`.
pub fn rotate(
    store: &Store,
    log_key: &ed25519_dalek::SigningKey,
    now: Millis,
) -> Result<Rotated, ServerError> {
    let seal = SealKey::from_log_key(log_key);
    // Refuse a log key that is not this deployment's before changing anything: the old keys
    // must open with it.
    store.read(|tx| {
        for k in tx.published_signing_keys(now)? {
            seal.open(&k.sealed_private, &label(&k.kid))?;
        }
        Ok::<_, ServerError>(())
    })?;
    let until = now + super::ID_TOKEN_TTL_MS + CLOCK_SKEW_MS;
    store.write(|tx| {
        tx.retire_signing_keys(now, until)?;
        let key = new_key(&seal, now)?;
        tx.insert_signing_key(&key)?;
        Ok(Rotated {
            new_kid: key.kid,
            previous_published_until: until,
        })
    })
}

/// The unsealed active key, kept while it stays the active one.
#[derive(Default)]
pub(super) struct KeyCache(Mutex<Option<(String, EncodingKey)>>);

#[derive(Serialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

impl super::Provider {
    /// Signs `claims` as a JWT with the active key (read in `tx`, so a rotation elsewhere is
    /// seen at once).
    pub(super) fn sign<T: Serialize>(
        &self,
        tx: &Tx<'_>,
        claims: &T,
        typ: Option<&str>,
    ) -> Result<String, ServerError> {
        let record = tx
            .active_signing_key()?
            .ok_or_else(|| ServerError::Internal("no active signing key".into()))?;
        let mut cache = self.keys.0.lock();
        let key = match &*cache {
            Some((kid, key)) if *kid == record.kid => key.clone(),
            _ => {
                let der = self
                    .seal
                    .open(&record.sealed_private, &label(&record.kid))?;
                let key = EncodingKey::from_ec_der(&der);
                *cache = Some((record.kid.clone(), key.clone()));
                key
            }
        };
        drop(cache);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(record.kid);
        header.typ = typ.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &key)
            .map_err(|e| ServerError::Internal(format!("signing a token: {e}")))
    }

    /// The JWKS document: every key a verifier may need now.
    pub fn jwks(&self, tx: &Tx<'_>, now: Millis) -> Result<serde_json::Value, ServerError> {
        let keys = tx
            .published_signing_keys(now)?
            .into_iter()
            .map(|k| serde_json::from_str(&k.public_jwk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Internal(format!("a stored JWK: {e}")))?;
        serde_json::to_value(Jwks { keys })
            .map_err(|e| ServerError::Internal(format!("the JWKS: {e}")))
    }

    /// Verifies a JWT this provider signed with a key still published (expiry not checked:
    /// an `id_token_hint` may be an old ID token). Its claims, or None if it is not ours.
    pub(super) fn verify_own<T: serde::de::DeserializeOwned>(
        &self,
        tx: &Tx<'_>,
        token: &str,
        now: Millis,
    ) -> Result<Option<T>, ServerError> {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        if header.alg != Algorithm::ES256 {
            return Ok(None);
        }
        let Some(record) = tx
            .published_signing_keys(now)?
            .into_iter()
            .find(|k| Some(&k.kid) == header.kid.as_ref())
        else {
            return Ok(None);
        };
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&record.public_jwk)
            .map_err(|e| ServerError::Internal(format!("a stored JWK: {e}")))?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| ServerError::Internal(format!("a stored JWK: {e}")))?;
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[&self.issuer]);
        Ok(jsonwebtoken::decode::<T>(token, &key, &validation)
            .ok()
            .map(|d| d.claims))
    }
}
