//! Browser sessions bound to a key in the browser, so that a copied cookie dies quickly off
//! the device (issue #13, "Browsers").
//!
//! Two holders of the key, one protocol. Where the browser has Device Bound Session
//! Credentials (W3C DBSC), the browser itself keeps the key and answers the challenges
//! (`Dbsc`). Everywhere else the web UI does the same with a non-extractable WebCrypto
//! ECDSA P-256 key kept in IndexedDB (`Browser`): it sends the public JWK with its sign-in and
//! later speaks DBSC's refresh exchange itself (`Secure-Session-Challenge`, a `dbsc+jwt` proof
//! in `Secure-Session-Response`).
//!
//! A bound session has no long-lived bearer secret at all. Its token, the value of the
//! session cookie, lives `Policy::browser_cookie_ms` (minutes) and is then refused; a refresh
//! replaces it with a new one, and a refresh is granted only for a proof the session's key
//! signed over a challenge of the server's (for this session, single use, expiring).
//! The long-lived credential is the key, which cannot be copied out of the browser. A thief of
//! the cookie has it until it expires or the owner's next refresh replaces it, whichever comes
//! first; a thief of the session ID has nothing.
//!
//! Refresh challenges are stateless (`RefreshChallenges`): asking for one writes nothing, so
//! someone who knows a session's ID and asks again and again cannot supersede the challenge
//! the owner's browser is signing and make its renewal fail. Each is accepted once: using
//! one is remembered with the proof replays (`proof_replays`), under the session's key.
//!
//! A refresh is not activity: the idle timeout still ends a session its person left, and a
//! refresh of a session ended, lapsed or never bound is refused (401), which is how the
//! browser (and the tab) learn it is over.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use keyward_core::secret::{hash_secret, new_secret, random_bytes};
use keyward_core::store::{BrowserBinding, BrowserBindingKind, Tx};
use keyward_proto::{Millis, SessionBinding};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Authed, RelyingParty};
use crate::error::{Result, ServerError};

/// Where a browser registers its DBSC key (named in `Secure-Session-Registration`).
pub const REGISTRATION_PATH: &str = "/api/v1/browser-session/register";
/// Where a bound session's cookie is refreshed, by the browser (DBSC) or by the web UI.
pub const REFRESH_PATH: &str = "/api/v1/browser-session/refresh";
/// A refresh challenge may be signed for this long.
const CHALLENGE_TTL_MS: i64 = 60_000;
/// The proof's JWT type, as DBSC names it.
const PROOF_TYPE: &str = "dbsc+jwt";

/// Stateless refresh challenges: `B64(expires_at ‖ random) . B64(tag)`, the tag an HMAC of
/// the session ID, the expiry and the random part under a key every instance shares (kept in
/// the database), so any instance accepts any instance's challenge without storing it.
#[derive(Clone)]
pub(crate) struct RefreshChallenges {
    key: [u8; 32],
}

impl RefreshChallenges {
    pub(crate) fn new(key: [u8; 32]) -> RefreshChallenges {
        RefreshChallenges { key }
    }

    fn mac(&self, session_id: Uuid, body: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(b"keyward browser refresh challenge v1");
        mac.update(session_id.as_bytes());
        mac.update(body);
        Some(mac)
    }

    /// A new challenge for `session_id`, good until `expires_at`.
    fn issue(&self, session_id: Uuid, expires_at: Millis) -> String {
        let mut body = expires_at.to_be_bytes().to_vec();
        body.extend_from_slice(&random_bytes::<16>());
        let tag = self
            .mac(session_id, &body)
            .map(|mac| mac.finalize().into_bytes()[..TAG_LEN].to_vec())
            .unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Until when `challenge` may be used, if this key issued it for `session_id` and it has
    /// not expired by `now`. Single use is the caller's (`Tx::remember_proof`).
    fn accepts(&self, challenge: &str, session_id: Uuid, now: Millis) -> Option<Millis> {
        let (body, tag) = challenge.split_once('.')?;
        let body = URL_SAFE_NO_PAD.decode(body).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // The length first: a truncated check would accept a shorter (even empty) tag.
        if body.len() != 24 || tag.len() != TAG_LEN {
            return None;
        }
        // In constant time, so the tag cannot be found byte by byte.
        self.mac(session_id, &body)?
            .verify_truncated_left(&tag)
            .ok()?;
        let expires_at = Millis::from_be_bytes(body[..8].try_into().ok()?);
        (now < expires_at).then_some(expires_at)
    }
}

/// A refresh challenge's tag: the first 16 bytes of its HMAC-SHA-256.
const TAG_LEN: usize = 16;

/// A P-256 public key from a JWK: the key, its canonical JWK and its RFC 7638 thumbprint.
struct PublicKey {
    key: VerifyingKey,
    jwk: String,
    jkt: String,
}

fn bad_key(why: &'static str) -> ServerError {
    ServerError::InvalidInput(format!("the browser's public key is not usable: {why}"))
}

fn public_key(jwk: &Value) -> Result<PublicKey> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    if member("kty") != Some("EC") || member("crv") != Some("P-256") {
        return Err(bad_key("only EC keys on P-256 are accepted"));
    }
    let coordinate = |name: &str| -> Result<[u8; 32]> {
        member(name)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(bad_key("x and y must be 32 bytes in base64url"))
    };
    let (x, y) = (coordinate("x")?, coordinate("y")?);
    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    let key = VerifyingKey::from_encoded_point(&point).map_err(|_| bad_key("not on the curve"))?;
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    // RFC 7638: the required members, in lexicographic order, no white space.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Ok(PublicKey {
        key,
        jkt: URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        jwk: canonical,
    })
}

/// A `dbsc+jwt` proof, its signature not yet checked.
struct Proof {
    header: Value,
    payload: Value,
    signed: String,
    signature: Vec<u8>,
}

impl Proof {
    /// Parses a compact JWS whose header says `typ: dbsc+jwt` and `alg: ES256`.
    fn parse(jwt: &str) -> Option<Proof> {
        let mut parts = jwt.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let json = |part: &str| -> Option<Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        let (header, payload) = (json(h)?, json(p)?);
        if header.get("typ").and_then(Value::as_str) != Some(PROOF_TYPE)
            || header.get("alg").and_then(Value::as_str) != Some("ES256")
        {
            return None;
        }
        Some(Proof {
            header,
            payload,
            signed: format!("{h}.{p}"),
            signature: URL_SAFE_NO_PAD.decode(s).ok()?,
        })
    }

    /// Signed by `key` (ES256: r || s, 64 bytes)?
    fn signed_by(&self, key: &VerifyingKey) -> bool {
        Signature::from_slice(&self.signature)
            .is_ok_and(|sig| key.verify(self.signed.as_bytes(), &sig).is_ok())
    }

    /// The challenge it answers.
    fn challenge(&self) -> Option<&str> {
        self.payload.get("jti").and_then(Value::as_str)
    }
}

/// What a cookie sign-in leaves for the browser binding.
pub struct BindingStart {
    /// The DBSC registration challenge, for `Secure-Session-Registration`.
    pub registration_challenge: String,
    /// The session cookie's life when the web UI's key bound it; none while unbound.
    pub cookie_max_age_secs: Option<u64>,
}

/// A refresh or registration granted: the session's new short-lived token.
pub struct Refreshed {
    pub session_id: Uuid,
    pub token: String,
    pub max_age_secs: u64,
}

/// The answer to a refresh.
pub enum Refresh {
    /// Sign this challenge (DBSC's 403 with `Secure-Session-Challenge`); `refused` says why
    /// the proof sent, if any, was not accepted.
    Challenge {
        session_id: Uuid,
        challenge: String,
        refused: Option<&'static str>,
    },
    Refreshed(Refreshed),
}

impl RelyingParty {
    fn cookie_life_secs(&self) -> u64 {
        u64::try_from(self.policy.browser_cookie_ms / 1000).unwrap_or(0)
    }

    /// At a cookie sign-in: binds the new session to the web UI's key when it sent one
    /// (`jwk`, its public JWK as JSON), and keeps a DBSC registration challenge either way.
    pub fn start_browser_binding(&self, token: &str, jwk: Option<&str>) -> Result<BindingStart> {
        let key = jwk
            .map(|text| {
                let value: Value =
                    serde_json::from_str(text).map_err(|_| bad_key("not a JSON JWK"))?;
                public_key(&value)
            })
            .transpose()?;
        let now = self.now();
        let challenge = new_secret();
        self.store.write(|tx| {
            let session = tx
                .session_by_token_hash(&hash_secret(token))?
                .ok_or(ServerError::Unauthenticated)?;
            tx.put_browser_binding(&BrowserBinding {
                session_id: session.id,
                kind: if key.is_some() {
                    BrowserBindingKind::Browser
                } else {
                    BrowserBindingKind::Pending
                },
                jwk: key.as_ref().map(|k| k.jwk.clone()),
                jkt: key.as_ref().map(|k| k.jkt.clone()),
                token_expires_at: key.as_ref().map(|_| now + self.policy.browser_cookie_ms),
                challenge_hash: Some(hash_secret(&challenge).to_vec()),
                challenge_expires_at: Some(now + self.policy.ceremony_ttl_ms),
                created_at: now,
            })?;
            Ok::<_, ServerError>(())
        })?;
        Ok(BindingStart {
            registration_challenge: challenge,
            cookie_max_age_secs: key.map(|_| self.cookie_life_secs()),
        })
    }

    /// Refuses a bound session's token once its short life is over.
    pub fn check_browser_binding(&self, authed: &Authed) -> Result<()> {
        let now = self.now();
        let binding = self
            .store
            .read(|tx| Ok::<_, ServerError>(tx.browser_binding(authed.session.id)?))?;
        match binding.and_then(|b| b.token_expires_at) {
            Some(expires_at) if now >= expires_at => Err(ServerError::Unauthenticated),
            _ => Ok(()),
        }
    }

    /// What a session's token is bound to, for the sessions list.
    pub(super) fn browser_binding_of(&self, tx: &Tx<'_>, session: Uuid) -> Result<SessionBinding> {
        Ok(match tx.browser_binding(session)?.map(|b| b.kind) {
            Some(BrowserBindingKind::Browser) => SessionBinding::Browser,
            Some(BrowserBindingKind::Dbsc) => SessionBinding::Dbsc,
            Some(BrowserBindingKind::Pending) | None => SessionBinding::Unbound,
        })
    }

    /// DBSC registration: the browser, holding the session's cookie `token`, sends a proof
    /// carrying its new public key and signed by it over the registration challenge. The
    /// session is bound to that key from then on, and gets a short-lived token.
    pub fn register_dbsc(&self, token: &str, proof: &str) -> Result<Refreshed> {
        let authed = self.authenticate(token, None)?;
        self.check_browser_binding(&authed)?;
        let refused = || ServerError::Forbidden("that registration proof is not valid");
        let proof = Proof::parse(proof).ok_or_else(refused)?;
        let key = public_key(proof.header.get("jwk").ok_or_else(refused)?)?;
        if !proof.signed_by(&key.key) {
            return Err(refused());
        }
        let challenge = proof.challenge().ok_or_else(refused)?.to_string();
        let now = self.now();
        self.store.write(|tx| {
            let binding = tx.browser_binding(authed.session.id)?.ok_or_else(refused)?;
            if binding.challenge_expires_at.is_none_or(|t| now >= t)
                || !tx.take_browser_challenge(authed.session.id, &hash_secret(&challenge))?
            {
                return Err(refused());
            }
            tx.put_browser_binding(&BrowserBinding {
                kind: BrowserBindingKind::Dbsc,
                jwk: Some(key.jwk.clone()),
                jkt: Some(key.jkt.clone()),
                token_expires_at: Some(now + self.policy.browser_cookie_ms),
                challenge_hash: None,
                challenge_expires_at: None,
                ..binding
            })?;
            self.new_bound_token(tx, authed.session.id)
        })
    }

    fn new_bound_token(&self, tx: &mut Tx<'_>, session_id: Uuid) -> Result<Refreshed> {
        let token = new_secret();
        if !tx.replace_session_token(session_id, &hash_secret(&token))? {
            return Err(ServerError::Unauthenticated);
        }
        Ok(Refreshed {
            session_id,
            token,
            max_age_secs: self.cookie_life_secs(),
        })
    }

    /// A refresh of bound session `session_id`, by the browser (DBSC) or by the web UI
    /// (`by_web_ui`). Without a proof, or with one not accepted, the answer is a new
    /// challenge; with a proof the session's key signed over a challenge of this session's,
    /// a new short-lived token. A session ended, lapsed or never bound is refused.
    pub fn refresh_browser_session(
        &self,
        session_id: Uuid,
        proof: Option<&str>,
        by_web_ui: bool,
    ) -> Result<Refresh> {
        let now = self.now();
        let challenge = |refused| Refresh::Challenge {
            session_id,
            challenge: self
                .browser_challenges
                .issue(session_id, now + CHALLENGE_TTL_MS),
            refused,
        };
        let Some(proof) = proof else {
            // Asking for a challenge changes nothing, so it takes no write transaction (and
            // so no writer's turn) either, however often someone asks.
            self.store
                .read(|tx| self.refreshable(tx, session_id, by_web_ui, now).map(drop))?;
            return Ok(challenge(None));
        };
        self.store.write(|tx| {
            let (binding, key) = self.refreshable(tx, session_id, by_web_ui, now)?;
            match self.check_refresh_proof(tx, &binding, &key, proof, now)? {
                Ok(()) => {
                    tx.extend_browser_token(session_id, now + self.policy.browser_cookie_ms)?;
                    Ok(Refresh::Refreshed(self.new_bound_token(tx, session_id)?))
                }
                Err(why) => Ok(challenge(Some(why))),
            }
        })
    }

    /// The binding and key of a session a refresh may renew: live and bound, and by the web
    /// UI only if the browser does not refresh it itself (DBSC).
    fn refreshable(
        &self,
        tx: &Tx<'_>,
        session_id: Uuid,
        by_web_ui: bool,
        now: Millis,
    ) -> Result<(BrowserBinding, PublicKey)> {
        let idle = self.policy.session_idle_ms;
        let live = tx
            .session(session_id)?
            .is_some_and(|s| s.ended_at.is_none() && s.is_live(now, idle));
        let binding = tx.browser_binding(session_id)?;
        let (Some(binding), true) = (binding, live) else {
            return Err(ServerError::Unauthenticated);
        };
        let key = match (&binding.kind, &binding.jwk) {
            (BrowserBindingKind::Dbsc, _) if by_web_ui => {
                return Err(ServerError::Conflict(
                    "this browser refreshes the session itself (DBSC)",
                ));
            }
            (BrowserBindingKind::Pending, _) | (_, None) => {
                return Err(ServerError::Unauthenticated);
            }
            (_, Some(jwk)) => public_key(
                &serde_json::from_str(jwk)
                    .map_err(|e| ServerError::Internal(format!("a stored JWK: {e}")))?,
            )?,
        };
        Ok((binding, key))
    }

    /// Accepts a refresh proof signed by the session's key over a challenge issued for this
    /// session and not used before, and uses that challenge up; otherwise says why not.
    fn check_refresh_proof(
        &self,
        tx: &Tx<'_>,
        binding: &BrowserBinding,
        key: &PublicKey,
        proof: &str,
        now: Millis,
    ) -> Result<Result<(), &'static str>> {
        let Some(proof) = Proof::parse(proof) else {
            return Ok(Err("the proof is not an ES256 dbsc+jwt"));
        };
        if proof.header.get("jwk").is_some() {
            return Ok(Err("a refresh proof must not carry a key"));
        }
        if !proof.signed_by(&key.key) {
            return Ok(Err("the proof is not signed by this session's key"));
        }
        let Some(challenge) = proof.challenge() else {
            return Ok(Err("the proof names no challenge"));
        };
        let current = match self
            .browser_challenges
            .accepts(challenge, binding.session_id, now)
        {
            // Remembered under the session's key, beside its other proofs, until it expires.
            Some(expires_at) => tx.remember_proof(&key.jkt, challenge, expires_at)?,
            None => false,
        };
        Ok(if current {
            Ok(())
        } else {
            Err("the proof answers a challenge that is stale or already used")
        })
    }
}
