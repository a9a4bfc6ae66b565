//! Browser sessions bound to a key in the browser: a short-lived cookie refreshed only by a
//! proof the key signs (the web UI's WebCrypto key, or the browser's own DBSC key). The
//! browser here is a client written from the W3C DBSC draft (spec.bs: the
//! `Secure-Session-*` headers and the `dbsc+jwt` proof) signing with p256, since Debian's
//! Chromium runs no DBSC (it has no key provider on Linux; see ARCHITECTURE.md).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyward_proto::*;
use keyward_server::{DEVICE_COOKIE, SESSION_COOKIE};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use reqwest::header::SET_COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::browser::{Browser, cookie_value, error_of, set_cookie};
use crate::harness::*;

const REGISTER: &str = "/api/v1/browser-session/register";
const REFRESH: &str = "/api/v1/browser-session/refresh";

/// A browser's key pair, as DBSC's user agent or the web UI's WebCrypto holds it.
struct BrowserKeyPair(SigningKey);

impl BrowserKeyPair {
    fn new() -> Self {
        BrowserKeyPair(SigningKey::random(&mut rand::rngs::OsRng))
    }

    fn jwk(&self) -> Value {
        let point = self.0.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        })
    }

    /// A DBSC proof (spec.bs, "DBSC Proof JWT Syntax") over `challenge`; with the public key in
    /// its header for a registration.
    fn proof(&self, challenge: &str, with_key: bool) -> String {
        let mut header = json!({"alg": "ES256", "typ": "dbsc+jwt"});
        if with_key {
            header["jwk"] = self.jwk();
        }
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let signed = format!("{}.{}", enc(&header), enc(&json!({"jti": challenge})));
        let sig: Signature = self.0.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

/// A structured-field string parameter (`name="value"`) or the leading string of a header.
fn sf_param(header: &str, name: Option<&str>) -> String {
    let part = match name {
        None => header.split(';').next().unwrap(),
        Some(n) => header
            .split(';')
            .find_map(|p| p.trim().strip_prefix(&format!("{n}=")))
            .unwrap(),
    };
    part.trim().trim_matches('"').to_string()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A signed-in browser, its session bound to `key` when the web UI sent it.
struct Signed {
    browser: Browser,
    session_id: uuid::Uuid,
    /// The `Secure-Session-Registration` challenge.
    registration: String,
    session_cookie: String,
}

impl Harness {
    async fn bound_browser(
        &self,
        passkey: &mut keyward_softkey::SoftKey,
        key: Option<&BrowserKeyPair>,
    ) -> Signed {
        let res = self
            .browser_sign_in(passkey, None, |r| {
                let r = self.as_own_page(r);
                match key {
                    Some(k) => r.header(
                        "x-keyward-browser-key",
                        URL_SAFE_NO_PAD.encode(k.jwk().to_string()),
                    ),
                    None => r,
                }
            })
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let registration = header(&res, "secure-session-registration").unwrap();
        assert!(registration.starts_with("(ES256);path=\"/api/v1/browser-session/register\""));
        let registration = sf_param(registration, Some("challenge"));
        let session_cookie = set_cookie(&res, SESSION_COOKIE).unwrap().to_string();
        let browser = Browser {
            session: cookie_value(&session_cookie),
            device: cookie_value(set_cookie(&res, DEVICE_COOKIE).unwrap()),
        };
        let body: SignedIn = res.json().await.unwrap();
        Signed {
            browser,
            session_id: body.session.id,
            registration,
            session_cookie,
        }
    }

    /// A refresh as the web UI sends it (own page, its session named in its own header).
    async fn ui_refresh(&self, session: uuid::Uuid, proof: Option<String>) -> reqwest::Response {
        let mut req = self
            .as_own_page(self.request(Method::POST, REFRESH))
            .header("x-keyward-browser-session", session.to_string());
        if let Some(p) = proof {
            req = req.header("secure-session-response", format!("\"{p}\""));
        }
        req.send().await.unwrap()
    }

    /// A refresh as a DBSC browser sends it (`Sec-Secure-Session-Id`, no page headers).
    async fn dbsc_refresh(&self, session: uuid::Uuid, proof: Option<String>) -> reqwest::Response {
        let mut req = self
            .request(Method::POST, REFRESH)
            .header("sec-secure-session-id", format!("\"{session}\""));
        if let Some(p) = proof {
            req = req.header("secure-session-response", format!("\"{p}\""));
        }
        req.send().await.unwrap()
    }

    async fn status_with_cookie(&self, session: &str) -> StatusCode {
        let browser = Browser {
            session: session.into(),
            device: String::new(),
        };
        self.browser_request(&browser, Method::GET, "/api/v1/account")
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn bindings(&self, token: &str) -> Vec<SessionBinding> {
        let mut sessions: Vec<SessionView> = self.get("/api/v1/sessions", token).await.unwrap();
        sessions.sort_by_key(|s| s.created_at);
        sessions.iter().map(|s| s.binding).collect()
    }
}

/// A harness with account "ada", signed in from a browser bound to the web UI's key.
async fn ada_in_a_bound_browser() -> (Harness, keyward_softkey::SoftKey, BrowserKeyPair, Signed) {
    let h = Harness::start().await;
    let mut passkey = new_key();
    h.create_account(&mut passkey, "ada").await;
    let key = BrowserKeyPair::new();
    let s = h.bound_browser(&mut passkey, Some(&key)).await;
    (h, passkey, key, s)
}

/// The challenge of a refresh's 403, checked to name its session.
fn challenge_of(res: &reqwest::Response, session: uuid::Uuid) -> String {
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let h = header(res, "secure-session-challenge").expect("a 403 carries a challenge");
    assert_eq!(sf_param(h, Some("id")), session.to_string());
    sf_param(h, None)
}

fn assert_not_refreshed(res: &reqwest::Response) {
    assert!(res.headers().get(SET_COOKIE).is_none(), "no new cookie");
}

#[tokio::test]
async fn a_web_ui_bound_cookie_lives_minutes_and_only_the_key_renews_it() {
    let h = Harness::start().await;
    let mut passkey = new_key();
    let bearer = h.create_account(&mut passkey, "ada").await.token;
    let key = BrowserKeyPair::new();
    let s = h.bound_browser(&mut passkey, Some(&key)).await;
    assert!(
        s.session_cookie.contains("Max-Age=300"),
        "{}",
        s.session_cookie
    );
    assert_eq!(
        h.bindings(&bearer).await,
        vec![SessionBinding::Unbound, SessionBinding::Browser]
    );
    assert_eq!(
        h.status_with_cookie(&s.browser.session).await,
        StatusCode::OK
    );

    // No proof: a challenge to sign, no cookie. The proof the key signs over it: a new cookie.
    let res = h.ui_refresh(s.session_id, None).await;
    let challenge = challenge_of(&res, s.session_id);
    assert_not_refreshed(&res);
    let res = h
        .ui_refresh(s.session_id, Some(key.proof(&challenge, false)))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "cross-origin-resource-policy"),
        Some("same-origin")
    );
    assert_eq!(header(&res, "cache-control"), Some("no-store"));
    let renewed = cookie_value(set_cookie(&res, SESSION_COOKIE).unwrap());
    let instructions: Value = res.json().await.unwrap();
    assert_eq!(instructions["session_identifier"], s.session_id.to_string());
    assert_eq!(instructions["refresh_url"], REFRESH);
    assert_eq!(instructions["credentials"][0]["name"], SESSION_COOKIE);
    // The old cookie is replaced, so a copy of it is dead at once; the new one works.
    assert_eq!(
        h.status_with_cookie(&s.browser.session).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.status_with_cookie(&renewed).await, StatusCode::OK);

    // A copied cookie outlives its short life nowhere: five minutes on, refused, also as a
    // bearer token.
    h.clock.advance_secs(300);
    assert_eq!(
        h.status_with_cookie(&renewed).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &renewed)
            .await
            .unwrap_err()
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The key renews it still; the refresh itself was not activity, so the session had
    // five minutes of its fifteen idle ones left.
    let challenge = challenge_of(&h.ui_refresh(s.session_id, None).await, s.session_id);
    let res = h
        .ui_refresh(s.session_id, Some(key.proof(&challenge, false)))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let renewed = cookie_value(set_cookie(&res, SESSION_COOKIE).unwrap());
    assert_eq!(h.status_with_cookie(&renewed).await, StatusCode::OK);
}

#[tokio::test]
async fn a_refresh_proof_by_another_key_replayed_stale_or_malformed_is_refused() {
    let (h, mut passkey, key, s) = ada_in_a_bound_browser().await;
    let id = s.session_id;

    // A thief with the session ID and a key of their own.
    let thief = BrowserKeyPair::new();
    let challenge = challenge_of(&h.ui_refresh(id, None).await, id);
    let res = h.ui_refresh(id, Some(thief.proof(&challenge, false))).await;
    challenge_of(&res, id);
    assert_not_refreshed(&res);
    let (_, err) = error_of(res).await;
    assert!(
        err.message.contains("not signed by this session's key"),
        "{err:?}"
    );

    // A proof captured and sent again: its challenge is used up.
    let challenge = challenge_of(&h.ui_refresh(id, None).await, id);
    let proof = key.proof(&challenge, false);
    assert_eq!(
        h.ui_refresh(id, Some(proof.clone())).await.status(),
        StatusCode::OK
    );
    let res = h.ui_refresh(id, Some(proof)).await;
    challenge_of(&res, id);
    assert_not_refreshed(&res);

    // One signed too late.
    let late = challenge_of(&h.ui_refresh(id, None).await, id);
    h.clock.advance_secs(61);
    let res = h.ui_refresh(id, Some(key.proof(&late, false))).await;
    let (_, err) = error_of(res).await;
    assert!(err.message.contains("stale or already used"), "{err:?}");

    // Not a dbsc+jwt, a key in a refresh proof, a made-up challenge, a challenge of another
    // session (its owner's own, signed by this session's key).
    let fresh = challenge_of(&h.ui_refresh(id, None).await, id);
    let other = h.bound_browser(&mut passkey, Some(&thief)).await.session_id;
    let others = challenge_of(&h.ui_refresh(other, None).await, other);
    for bad in [
        "not.a.jwt".to_string(),
        key.proof(&fresh, true),
        key.proof("made-up", false),
        key.proof(&others, false),
    ] {
        let res = h.ui_refresh(id, Some(bad)).await;
        challenge_of(&res, id);
        assert_not_refreshed(&res);
    }

    // The web UI's way in needs its own page: another site's request is refused outright.
    let res = h
        .request(Method::POST, REFRESH)
        .header("x-keyward-browser-session", id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("secure-session-challenge").is_none());
}

/// Someone who knows a session's ID (it is no secret: DBSC sends it in a header) asks for
/// challenges again and again while the owner's browser signs the one it got. Challenges are
/// stateless, so nothing the attacker asks for supersedes the owner's: its renewal goes
/// through, and the attacker's challenges buy nothing without the key.
#[tokio::test]
async fn asking_for_challenges_cannot_make_the_owners_renewal_fail() {
    let (h, _, key, s) = ada_in_a_bound_browser().await;
    let id = s.session_id;

    let owners = challenge_of(&h.ui_refresh(id, None).await, id);
    let mut attackers = Vec::new();
    for _ in 0..20 {
        attackers.push(challenge_of(&h.dbsc_refresh(id, None).await, id));
        attackers.push(challenge_of(&h.ui_refresh(id, None).await, id));
    }
    assert!(!attackers.contains(&owners), "every challenge is new");
    let res = h.ui_refresh(id, Some(key.proof(&owners, false))).await;
    assert_eq!(res.status(), StatusCode::OK, "the owner renews");
    let renewed = cookie_value(set_cookie(&res, SESSION_COOKIE).unwrap());
    assert_eq!(h.status_with_cookie(&renewed).await, StatusCode::OK);
    // The owner's challenge is used up; the attacker's, signed by another key, are refused.
    let res = h.ui_refresh(id, Some(key.proof(&owners, false))).await;
    challenge_of(&res, id);
    assert_not_refreshed(&res);
    let thief = BrowserKeyPair::new();
    let res = h
        .ui_refresh(id, Some(thief.proof(&attackers[0], false)))
        .await;
    challenge_of(&res, id);
    assert_not_refreshed(&res);
}

#[tokio::test]
async fn an_ended_or_unknown_session_is_refused_a_refresh_so_the_browser_drops_it() {
    let (h, mut passkey, key, s) = ada_in_a_bound_browser().await;
    let challenge = challenge_of(&h.ui_refresh(s.session_id, None).await, s.session_id);

    let res = h
        .as_own_page(h.browser_request(&s.browser, Method::POST, "/api/v1/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for res in [
        h.ui_refresh(s.session_id, None).await,
        h.ui_refresh(s.session_id, Some(key.proof(&challenge, false)))
            .await,
        h.dbsc_refresh(s.session_id, None).await,
        h.dbsc_refresh(uuid::Uuid::new_v4(), None).await,
    ] {
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_not_refreshed(&res);
    }

    // A session left alone past its idle timeout: the key cannot keep it alive.
    let s = h.bound_browser(&mut passkey, Some(&key)).await;
    h.clock.advance_secs(15 * 60);
    assert_eq!(
        h.ui_refresh(s.session_id, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_dbsc_browser_registers_its_key_and_refreshes_by_the_spec_headers() {
    let h = Harness::start().await;
    let mut passkey = new_key();
    let bearer = h.create_account(&mut passkey, "ada").await.token;
    // A browser with DBSC and no web UI key: its sign-in is unbound until it registers.
    let s = h.bound_browser(&mut passkey, None).await;
    assert!(!s.session_cookie.contains("Max-Age"));
    assert_eq!(
        h.bindings(&bearer).await,
        vec![SessionBinding::Unbound, SessionBinding::Unbound]
    );
    let key = BrowserKeyPair::new();
    let register = |proof: String, cookie: &str| {
        h.browser_request(
            &Browser {
                session: cookie.into(),
                device: String::new(),
            },
            Method::POST,
            REGISTER,
        )
        .header("secure-session-response", format!("\"{proof}\""))
        .send()
    };

    // A proof without its key, over another challenge, or without the session's cookie.
    let res = register(key.proof(&s.registration, false), &s.browser.session)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = register(key.proof("another", true), &s.browser.session)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = register(key.proof(&s.registration, true), "stolen-or-none")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = register(key.proof(&s.registration, true), &s.browser.session)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_cookie(&res, SESSION_COOKIE).unwrap().to_string();
    assert!(cookie.contains("Max-Age=300"), "{cookie}");
    let instructions: Value = res.json().await.unwrap();
    assert_eq!(instructions["session_identifier"], s.session_id.to_string());
    assert_eq!(
        h.bindings(&bearer).await,
        vec![SessionBinding::Unbound, SessionBinding::Dbsc]
    );
    // The registration challenge is used up, and the sign-in's cookie with it.
    assert_eq!(
        h.status_with_cookie(&s.browser.session).await,
        StatusCode::UNAUTHORIZED
    );

    let id = s.session_id;
    let res = h.dbsc_refresh(id, None).await;
    let challenge = challenge_of(&res, id);
    let res = h.dbsc_refresh(id, Some(key.proof(&challenge, false))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let renewed = cookie_value(set_cookie(&res, SESSION_COOKIE).unwrap());
    assert_eq!(h.status_with_cookie(&renewed).await, StatusCode::OK);
    // The web UI leaves a DBSC session to the browser.
    assert_eq!(h.ui_refresh(id, None).await.status(), StatusCode::CONFLICT);
    let res = h
        .dbsc_refresh(id, Some(BrowserKeyPair::new().proof(&challenge, false)))
        .await;
    challenge_of(&res, id);
    assert_not_refreshed(&res);
}
