//! The P-256 key a client binds its session to, and the proofs it signs with it: RFC 9449
//! DPoP proofs for every request, compact ES256 JWS in general. keywardd checks them
//! (keyward-server's `dpop.rs`); the client, the CLI, the desktop app and the tests sign here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// A software P-256 key: its secret scalar lives wherever the client keeps it (apart from the
/// session token), never on the server.
#[derive(Clone)]
pub struct ProofKey {
    key: SigningKey,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProofKey({})", self.thumbprint())
    }
}

impl ProofKey {
    pub fn generate() -> ProofKey {
        ProofKey {
            key: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    /// The secret scalar, base64url: what a client stores (owner-only) to sign again later.
    pub fn to_secret(&self) -> String {
        B64.encode(self.key.to_bytes())
    }

    pub fn from_secret(secret: &str) -> Result<ProofKey> {
        let bytes = B64
            .decode(secret.trim())
            .map_err(|_| CoreError::BadKey("a session key is not base64url".into()))?;
        let key = SigningKey::from_slice(&bytes)
            .map_err(|_| CoreError::BadKey("a session key is not a P-256 key".into()))?;
        Ok(ProofKey { key })
    }

    /// The public key as a JWK: `{"kty":"EC","crv":"P-256","x":..,"y":..}`.
    pub fn public_jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        let coord =
            |c: Option<&p256::FieldBytes>| B64.encode(c.map(|c| c.as_slice()).unwrap_or(&[]));
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": coord(point.x()),
            "y": coord(point.y()),
        })
    }

    /// RFC 7638 thumbprint (SHA-256, base64url) of the public JWK.
    pub fn thumbprint(&self) -> String {
        let jwk = self.public_jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        );
        B64.encode(Sha256::digest(canonical))
    }

    /// A compact ES256 JWS of `header` and `claims`, taken as given (tests forge headers).
    pub fn sign_parts(&self, header: &Value, claims: &Value) -> String {
        let message = [
            B64.encode(header.to_string()),
            B64.encode(claims.to_string()),
        ]
        .join(".");
        let sig: Signature = self.key.sign(message.as_bytes());
        [message, B64.encode(sig.to_bytes())].join(".")
    }

    /// A compact ES256 JWS with header `{typ, alg: ES256, jwk}` over `claims`.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let header = serde_json::json!({ "typ": typ, "alg": "ES256", "jwk": self.public_jwk() });
        self.sign_parts(&header, claims)
    }

    /// A DPoP proof (RFC 9449) for `method` on `url` (query and fragment dropped) at `iat`
    /// (seconds since the epoch), carrying `ath` for `token` and the server's `nonce`.
    pub fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        iat: i64,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let mut claims = serde_json::json!({
            "jti": B64.encode(crate::secret::random_bytes::<16>()),
            "htm": method,
            "htu": htu,
            "iat": iat,
        });
        if let Some(t) = token {
            claims["ath"] = access_token_hash(t).into();
        }
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        self.sign("dpop+jwt", &claims)
    }
}

/// `ath`: base64url(SHA-256(access token)).
pub fn access_token_hash(token: &str) -> String {
    B64.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_survives_its_secret_form_and_proofs_drop_the_query() {
        let k = ProofKey::generate();
        let again = ProofKey::from_secret(&k.to_secret()).unwrap();
        assert_eq!(k.thumbprint(), again.thumbprint());
        assert!(ProofKey::from_secret("not a key").is_err());
        let proof = k.dpop_proof("GET", "https://a.example/x?y=1#z", 5, Some("t"), Some("n"));
        let claims: Value =
            serde_json::from_slice(&B64.decode(proof.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["htu"], "https://a.example/x");
        assert_eq!(claims["ath"], access_token_hash("t"));
        assert_eq!(claims["nonce"], "n");
    }
}
