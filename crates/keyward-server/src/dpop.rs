//! Proof of possession for Keyward's own session tokens: RFC 9449 DPoP proofs, and the
//! compact-JWS check under them that the browser half (DBSC, `typ: dbsc+jwt`) reuses.
//!
//! Pure: no HTTP types, no database. The caller gives the request's method and URL, the token
//! it carries and the time; it records the returned `(jkt, jti)` once (`proof_replays`) so a
//! proof is accepted once across every instance.
//!
//! ES256 only: P-256 is the one curve every non-exportable key store a client here has offers
//! (TPM 2.0, the Secure Enclave, WebCrypto non-extractable keys, Chrome's DBSC key provider),
//! and one algorithm leaves no choice for an attacker to steer (no `none`, no HMAC with a
//! public key as its secret, no RSA key sizes to police).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::Sha256;

/// Why a proof was refused. `message` is safe to show the client (it names no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// RFC 9449 `invalid_dpop_proof`: malformed, badly signed, or not for this request.
    #[error("{0}")]
    Invalid(String),
    /// RFC 9449 `use_dpop_nonce`: the proof lacks the server's current nonce; the client
    /// retries with the one in the `DPoP-Nonce` header.
    #[error("{0}")]
    UseNonce(String),
}

fn invalid(message: impl Into<String>) -> ProofError {
    ProofError::Invalid(message.into())
}

/// A public EC P-256 key as a JWK: only ever a public one (a JWK carrying `d` is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    jwk: Jwk,
}

impl PublicJwk {
    /// Accepts `{"kty":"EC","crv":"P-256","x":..,"y":..}` (other members ignored) whose point
    /// is on the curve; refuses private keys, other key types and curves.
    pub fn from_value(value: &Value) -> Result<PublicJwk, ProofError> {
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("the jwk is not a JSON object"))?;
        if obj.contains_key("d") {
            return Err(invalid("the jwk holds a private key"));
        }
        if obj.get("kty").and_then(Value::as_str) != Some("EC")
            || obj.get("crv").and_then(Value::as_str) != Some("P-256")
        {
            return Err(invalid("the jwk is not an EC P-256 key"));
        }
        let coord = |name: &str| -> Result<Vec<u8>, ProofError> {
            let text = obj
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("the jwk has no {name}")))?;
            let bytes = B64
                .decode(text)
                .map_err(|_| invalid(format!("the jwk's {name} is not base64url")))?;
            if bytes.len() != 32 {
                return Err(invalid(format!("the jwk's {name} is not 32 bytes")));
            }
            Ok(bytes)
        };
        let (x, y) = (coord("x")?, coord("y")?);
        let point = [&[0x04u8][..], &x, &y].concat();
        p256::PublicKey::from_sec1_bytes(&point)
            .map_err(|_| invalid("the jwk's point is not on P-256"))?;
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": B64.encode(&x), "y": B64.encode(&y),
        }))
        .map_err(|e| invalid(format!("the jwk does not parse: {e}")))?;
        Ok(PublicJwk { jwk })
    }

    /// RFC 7638 thumbprint: base64url(SHA-256 of the canonical `{"crv","kty","x","y"}`).
    pub fn thumbprint(&self) -> String {
        self.jwk.thumbprint(ThumbprintHash::SHA256)
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(&self.jwk).unwrap_or(Value::Null)
    }

    fn decoding_key(&self) -> Result<DecodingKey, ProofError> {
        DecodingKey::from_jwk(&self.jwk).map_err(|e| invalid(format!("the jwk is unusable: {e}")))
    }
}

/// A compact JWS whose ES256 signature verified, split into its header and claims.
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// The key it verified under (the header's own `jwk`, or the one given).
    pub key: PublicJwk,
}

/// Longest compact JWS looked at: a DPoP or DBSC proof is well under 1 KiB.
const MAX_JWS_LEN: usize = 8 * 1024;

fn json_part(part: &str, what: &str) -> Result<Map<String, Value>, ProofError> {
    let bytes = B64
        .decode(part)
        .map_err(|_| invalid(format!("the proof's {what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(invalid(format!("the proof's {what} is not a JSON object"))),
    }
}

fn verify_compact(
    compact: &str,
    typ: &str,
    key_of: impl FnOnce(&Map<String, Value>) -> Result<PublicJwk, ProofError>,
) -> Result<VerifiedJws, ProofError> {
    if compact.len() > MAX_JWS_LEN {
        return Err(invalid("the proof is too long"));
    }
    let mut parts = compact.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("the proof is not a compact JWS"));
    };
    let header = json_part(h, "header")?;
    if header.get("typ").and_then(Value::as_str) != Some(typ) {
        return Err(invalid(format!("the proof's typ is not {typ}")));
    }
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(invalid(
            "the proof's alg is not ES256, the only one accepted",
        ));
    }
    let key = key_of(&header)?;
    let message = [h, ".", c].concat();
    let good = jsonwebtoken::crypto::verify(
        s,
        message.as_bytes(),
        &key.decoding_key()?,
        Algorithm::ES256,
    )
    .map_err(|_| invalid("the proof's signature does not parse"))?;
    if !good {
        return Err(invalid("the proof's signature does not verify"));
    }
    let claims = json_part(c, "claims")?;
    Ok(VerifiedJws {
        header,
        claims,
        key,
    })
}

/// Verifies a compact JWS signed (ES256) by the public P-256 JWK in its own `jwk` header, with
/// header `typ` equal to `typ`. Says nothing of the claims: the caller checks them.
pub fn verify_self_signed(compact: &str, typ: &str) -> Result<VerifiedJws, ProofError> {
    verify_compact(compact, typ, |header| {
        PublicJwk::from_value(
            header
                .get("jwk")
                .ok_or_else(|| invalid("the proof's header has no jwk"))?,
        )
    })
}

/// Verifies a compact JWS signed (ES256) by `key`, with header `typ` equal to `typ`. A `jwk`
/// in its header, if any, must be that same key.
pub fn verify_signed_by(
    compact: &str,
    typ: &str,
    key: &PublicJwk,
) -> Result<VerifiedJws, ProofError> {
    verify_compact(compact, typ, |header| {
        if let Some(jwk) = header.get("jwk")
            && PublicJwk::from_value(jwk)?.thumbprint() != key.thumbprint()
        {
            return Err(invalid("the proof is signed by another key"));
        }
        Ok(key.clone())
    })
}

/// RFC 9449 section 4.3's form of a URL for `htu`: scheme and host lower case, default port
/// dropped, no query, no fragment. `None` if it is not an absolute http(s) URL.
pub fn normalize_htu(url: &str) -> Option<String> {
    // The url crate lower-cases scheme and host, drops the default port and resolves dot
    // segments (RFC 3986 section 6.2.2 and 6.2.3).
    let mut u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return None;
    }
    u.set_query(None);
    u.set_fragment(None);
    Some(u.to_string())
}

pub use keyward_core::proof_key::access_token_hash as token_hash;

/// How fresh a proof must be, and how long a `jti` may be.
#[derive(Debug, Clone, Copy)]
pub struct ProofWindow {
    /// `iat` may be this far in the past (and its `jti` is remembered this long).
    pub max_age_ms: i64,
    /// `iat` may be this far in the future (clock skew).
    pub max_skew_ms: i64,
    pub max_jti_len: usize,
}

impl Default for ProofWindow {
    fn default() -> Self {
        ProofWindow {
            max_age_ms: 60_000,
            max_skew_ms: 5_000,
            max_jti_len: 128,
        }
    }
}

impl ProofWindow {
    /// Until when a proof's `jti` must be remembered: after that its `iat` is too old anyway.
    pub fn remember_until(&self, now: i64) -> i64 {
        now + self.max_age_ms + self.max_skew_ms
    }
}

/// Stateless server nonces (`DPoP-Nonce`): an HMAC of a time slot under a key every instance
/// shares (kept in the database), so any instance accepts any instance's nonce without a
/// table. A nonce is good in its own slot and the next one: between one and two slots long.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    slot_ms: i64,
}

impl Nonces {
    pub fn new(key: [u8; 32], slot_ms: i64) -> Nonces {
        Nonces {
            key,
            slot_ms: slot_ms.max(1),
        }
    }

    fn for_slot(&self, slot: i64) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(b"keyward dpop nonce v1");
        mac.update(&slot.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        [B64.encode(slot.to_be_bytes()), B64.encode(&tag[..16])].join(".")
    }

    /// The nonce to hand out at `now`.
    pub fn current(&self, now: i64) -> String {
        self.for_slot(now.div_euclid(self.slot_ms))
    }

    /// Is `nonce` one this key issued in the current or the previous slot?
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let slot = now.div_euclid(self.slot_ms);
        [slot, slot - 1].into_iter().any(|s| {
            let expected = self.for_slot(s);
            // Constant time: the nonce is not secret, but the tag's prefix need not leak.
            expected.len() == nonce.len()
                && expected
                    .bytes()
                    .zip(nonce.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }
}

/// What a proof is checked against.
pub struct ProofCheck<'a> {
    /// The request's method, upper case.
    pub method: &'a str,
    /// The request's absolute URL as this server may be reached: the URL it was sent to,
    /// and each configured origin with the request's path. `htu` must be one of them.
    pub urls: &'a [String],
    /// The access token the request carries, if any: then `ath` must be its hash.
    pub access_token: Option<&'a str>,
    /// When set, `nonce` must be one of these nonces.
    pub nonces: Option<&'a Nonces>,
    pub now_ms: i64,
    pub window: ProofWindow,
}

/// A proof that passed every check but replay, which is the caller's (`proof_replays`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the key that signed it.
    pub jkt: String,
    pub jti: String,
}

/// Checks a DPoP proof (RFC 9449 section 4.3) against the request, except replay.
pub fn verify_proof(proof: &str, check: &ProofCheck<'_>) -> Result<VerifiedProof, ProofError> {
    let jws = verify_self_signed(proof, "dpop+jwt")?;
    let claims = &jws.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);

    let jti = text("jti").ok_or_else(|| invalid("the proof has no jti"))?;
    if jti.is_empty() || jti.len() > check.window.max_jti_len {
        return Err(invalid("the proof's jti is empty or too long"));
    }
    if text("htm") != Some(check.method) {
        return Err(invalid("the proof is for another method"));
    }
    let htu = text("htu")
        .and_then(normalize_htu)
        .ok_or_else(|| invalid("the proof's htu is not an http(s) URL"))?;
    if !check
        .urls
        .iter()
        .any(|u| normalize_htu(u).as_ref() == Some(&htu))
    {
        return Err(invalid("the proof is for another URL"));
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("the proof has no iat"))?;
    let iat_ms = iat.saturating_mul(1000);
    if iat_ms > check.now_ms + check.window.max_skew_ms {
        return Err(invalid("the proof was issued in the future"));
    }
    if iat_ms < check.now_ms - check.window.max_age_ms {
        return Err(invalid("the proof is too old"));
    }
    match (check.access_token, text("ath")) {
        (Some(token), Some(ath)) if ath == token_hash(token) => {}
        (Some(_), Some(_)) => return Err(invalid("the proof is for another access token")),
        (Some(_), None) => return Err(invalid("the proof has no ath for the access token")),
        (None, _) => {}
    }
    if let Some(nonces) = check.nonces {
        match text("nonce") {
            Some(n) if nonces.accepts(n, check.now_ms) => {}
            Some(_) => return Err(ProofError::UseNonce("the proof's nonce is stale".into())),
            None => return Err(ProofError::UseNonce("the server requires a nonce".into())),
        }
    }
    Ok(VerifiedProof {
        jkt: jws.key.thumbprint(),
        jti: jti.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use keyward_core::proof_key::ProofKey;
    use sha2::Digest;

    const URL: &str = "https://keyward.example/api/v1/sessions";
    const NOW: i64 = 1_800_000_000_000;

    fn signer() -> ProofKey {
        ProofKey::generate()
    }

    fn jwk(s: &ProofKey) -> PublicJwk {
        PublicJwk::from_value(&s.public_jwk()).unwrap()
    }

    fn check<'a>(token: Option<&'a str>, nonces: Option<&'a Nonces>) -> ProofCheck<'a> {
        static URLS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
            vec![
                URL.to_string(),
                "http://127.0.0.1:8080/api/v1/sessions".into(),
            ]
        });
        ProofCheck {
            method: "GET",
            urls: &URLS,
            access_token: token,
            nonces,
            now_ms: NOW,
            window: ProofWindow::default(),
        }
    }

    fn refused(proof: &str, check: &ProofCheck<'_>) -> String {
        match verify_proof(proof, check) {
            Err(ProofError::Invalid(m) | ProofError::UseNonce(m)) => m,
            Ok(p) => panic!("accepted: {p:?}"),
        }
    }

    /// Signs a rewritten header and claims with `s`'s key.
    fn resign(s: &ProofKey, header: Value, claims: Value) -> String {
        s.sign_parts(&header, &claims)
    }

    fn parts(proof: &str) -> (Value, Value) {
        let mut it = proof.split('.');
        let h = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
        let c = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
        (h, c)
    }

    #[test]
    fn a_good_proof_returns_its_keys_thumbprint() {
        let s = signer();
        let proof = s.dpop_proof("GET", URL, NOW / 1000, Some("tok"), None);
        let ok = verify_proof(&proof, &check(Some("tok"), None)).unwrap();
        assert_eq!(ok.jkt, s.thumbprint());
        assert_eq!(ok.jkt.len(), 43, "base64url of 32 bytes");
    }

    #[test]
    fn thumbprint_matches_rfc_7638s_canonical_form() {
        let s = signer();
        let v = s.public_jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            v["x"].as_str().unwrap(),
            v["y"].as_str().unwrap()
        );
        assert_eq!(jwk(&s).thumbprint(), B64.encode(Sha256::digest(canonical)));
        assert_eq!(
            jwk(&s).thumbprint(),
            s.thumbprint(),
            "the client's thumbprint agrees"
        );
    }

    #[test]
    fn method_url_and_token_must_match() {
        let s = signer();
        let now = NOW / 1000;
        let c = check(Some("tok"), None);
        assert!(refused(&s.dpop_proof("POST", URL, now, Some("tok"), None), &c).contains("method"));
        let other = "https://keyward.example/api/v1/events";
        assert!(refused(&s.dpop_proof("GET", other, now, Some("tok"), None), &c).contains("URL"));
        let other_host = "https://evil.example/api/v1/sessions";
        assert!(
            refused(&s.dpop_proof("GET", other_host, now, Some("tok"), None), &c).contains("URL")
        );
        let loopback = "http://127.0.0.1:8080/api/v1/sessions";
        verify_proof(&s.dpop_proof("GET", loopback, now, Some("tok"), None), &c).unwrap();
        assert!(refused(&s.dpop_proof("GET", URL, now, Some("other"), None), &c).contains("token"));
        assert!(refused(&s.dpop_proof("GET", URL, now, None, None), &c).contains("ath"));
    }

    #[test]
    fn htu_is_compared_in_rfc_9449s_normal_form() {
        let s = signer();
        let now = NOW / 1000;
        let c = check(None, None);
        for same in [
            "HTTPS://Keyward.Example:443/api/v1/sessions",
            "https://keyward.example/api/v1/sessions?x=1#frag",
        ] {
            let (h, mut claims) = parts(&s.dpop_proof("GET", URL, now, None, None));
            claims["htu"] = same.into();
            verify_proof(&resign(&s, h, claims), &c).unwrap();
        }
        let (h, mut claims) = parts(&s.dpop_proof("GET", URL, now, None, None));
        claims["htu"] = "https://keyward.example:8443/api/v1/sessions".into();
        assert!(refused(&resign(&s, h, claims), &c).contains("URL"));
        assert_eq!(normalize_htu("ftp://x/y"), None);
    }

    #[test]
    fn iat_must_lie_within_the_window() {
        let s = signer();
        let c = check(None, None);
        verify_proof(
            &s.dpop_proof("GET", URL, (NOW + 5_000) / 1000, None, None),
            &c,
        )
        .unwrap();
        verify_proof(
            &s.dpop_proof("GET", URL, (NOW - 60_000) / 1000, None, None),
            &c,
        )
        .unwrap();
        let future = s.dpop_proof("GET", URL, (NOW + 6_000) / 1000, None, None);
        assert!(refused(&future, &c).contains("future"));
        let old = s.dpop_proof("GET", URL, (NOW - 61_000) / 1000, None, None);
        assert!(refused(&old, &c).contains("too old"));
        let (h, mut claims) = parts(&old);
        claims.as_object_mut().unwrap().remove("iat");
        assert!(refused(&resign(&s, h, claims), &c).contains("iat"));
    }

    #[test]
    fn jti_is_required_and_bounded() {
        let s = signer();
        let c = check(None, None);
        let (h, mut claims) = parts(&s.dpop_proof("GET", URL, NOW / 1000, None, None));
        claims["jti"] = "x".repeat(129).into();
        assert!(refused(&resign(&s, h.clone(), claims.clone()), &c).contains("jti"));
        claims.as_object_mut().unwrap().remove("jti");
        assert!(refused(&resign(&s, h, claims), &c).contains("jti"));
    }

    #[test]
    fn header_must_be_dpop_es256_with_a_public_p256_jwk() {
        let s = signer();
        let c = check(None, None);
        let (h, claims) = parts(&s.dpop_proof("GET", URL, NOW / 1000, None, None));
        let with = |f: &dyn Fn(&mut Value)| {
            let mut h = h.clone();
            f(&mut h);
            refused(&resign(&s, h, claims.clone()), &c)
        };
        assert!(with(&|h| h["typ"] = "jwt".into()).contains("typ"));
        assert!(with(&|h| h["alg"] = "none".into()).contains("ES256"));
        assert!(with(&|h| h["alg"] = "HS256".into()).contains("ES256"));
        assert!(with(&|h| h["jwk"]["d"] = "AAAA".into()).contains("private"));
        assert!(with(&|h| h["jwk"]["crv"] = "P-384".into()).contains("P-256"));
        assert!(
            with(&|h| {
                h.as_object_mut().unwrap().remove("jwk");
            })
            .contains("jwk")
        );
        // A point that is not on the curve.
        assert!(with(&|h| h["jwk"]["y"] = B64.encode([7u8; 32]).into()).contains("not on P-256"));
        // The header names another key than the one that signed.
        let other = signer();
        assert!(with(&|h| h["jwk"] = other.public_jwk()).contains("does not verify"));
        assert!(refused("a.b", &c).contains("compact"));
        assert!(refused(&"a".repeat(9000), &c).contains("too long"));
    }

    #[test]
    fn a_tampered_claim_breaks_the_signature() {
        let s = signer();
        let proof = s.dpop_proof("GET", URL, NOW / 1000, None, None);
        let mut it = proof.split('.');
        let (h, _, sig) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let (_, mut claims) = parts(&proof);
        claims["htm"] = "GET".into();
        claims["jti"] = "forged".into();
        let forged = [h, &B64.encode(claims.to_string()), sig].join(".");
        assert!(refused(&forged, &check(None, None)).contains("does not verify"));
    }

    #[test]
    fn nonces_are_demanded_accepted_for_two_slots_and_refused_from_another_key() {
        let s = signer();
        let nonces = Nonces::new([9; 32], 60_000);
        let c = check(None, Some(&nonces));
        let missing = verify_proof(&s.dpop_proof("GET", URL, NOW / 1000, None, None), &c);
        assert!(matches!(missing, Err(ProofError::UseNonce(_))));
        let n = nonces.current(NOW);
        verify_proof(&s.dpop_proof("GET", URL, NOW / 1000, None, Some(&n)), &c).unwrap();
        assert!(nonces.accepts(&n, NOW + 60_000));
        assert!(
            !nonces.accepts(&n, NOW + 120_000),
            "two slots later it is stale"
        );
        let foreign = Nonces::new([8; 32], 60_000).current(NOW);
        let stale = verify_proof(
            &s.dpop_proof("GET", URL, NOW / 1000, None, Some(&foreign)),
            &c,
        );
        assert!(matches!(stale, Err(ProofError::UseNonce(_))));
    }

    #[test]
    fn a_jws_verifies_by_a_given_key_and_not_by_another() {
        let s = signer();
        let jws = s.sign("dbsc+jwt", &serde_json::json!({"jti": "c1"}));
        let ok = verify_signed_by(&jws, "dbsc+jwt", &jwk(&s)).unwrap();
        assert_eq!(ok.claims["jti"], "c1");
        assert_eq!(ok.header["typ"], "dbsc+jwt");
        let other = signer();
        assert!(verify_signed_by(&jws, "dbsc+jwt", &jwk(&other)).is_err());
        assert!(
            verify_self_signed(&jws, "dpop+jwt").is_err(),
            "typ is checked"
        );
        assert_eq!(
            verify_self_signed(&jws, "dbsc+jwt")
                .unwrap()
                .key
                .thumbprint(),
            s.thumbprint()
        );
    }
}
