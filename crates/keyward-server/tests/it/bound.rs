//! Sessions bound to a key on the device (issue #13, the app and the CLI): every request of a
//! bound session carries an RFC 9449 DPoP proof by that key. A copied token alone, or with a
//! proof by another key, for another request, stale, from the future, replayed or without the
//! server's nonce, is refused; the owner's session keeps working throughout.

use keyward_core::Clock;
use keyward_core::proof_key::ProofKey;
use keyward_proto::*;
use reqwest::{Method, StatusCode};

use crate::harness::*;

fn binding(key: &ProofKey) -> Option<SessionKeyBinding> {
    Some(SessionKeyBinding {
        jwk: key.public_jwk(),
        kind: DeviceKeyKind::Software,
    })
}

struct Answer {
    status: StatusCode,
    challenge: String,
    nonce: Option<String>,
    body: serde_json::Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// A request with `Authorization: DPoP <token>` and `proof` (when given) as its DPoP header.
async fn dpop_request(
    h: &Harness,
    method: Method,
    path: &str,
    token: &str,
    proof: Option<&str>,
) -> Answer {
    let mut req = h
        .http
        .request(method, format!("{}{path}", h.base))
        .header("Authorization", format!("DPoP {token}"));
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let res = req.send().await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, challenge, nonce) = (
        res.status(),
        header("www-authenticate").unwrap_or_default(),
        header("dpop-nonce"),
    );
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        challenge,
        nonce,
        body,
    }
}

/// The server's current DPoP nonce, as every API answer carries it.
async fn nonce(h: &Harness) -> String {
    let res = h
        .http
        .get(format!("{}/api/v1/server", h.base))
        .send()
        .await
        .unwrap();
    res.headers()["dpop-nonce"].to_str().unwrap().to_string()
}

fn now_s(h: &Harness) -> i64 {
    h.clock.now() / 1000
}

/// A bound device: its key and token, proving each request with the current nonce.
struct Device<'a> {
    h: &'a Harness,
    key: ProofKey,
    token: String,
}

impl Device<'_> {
    fn proof(&self, method: &str, path: &str, nonce: &str) -> String {
        self.key.dpop_proof(
            method,
            &format!("{}{path}", self.h.base),
            now_s(self.h),
            Some(&self.token),
            Some(nonce),
        )
    }

    /// `GET /api/v1/account` with this session's token and `proof` as its DPoP header.
    async fn account_with(&self, proof: &str) -> Answer {
        dpop_request(
            self.h,
            Method::GET,
            "/api/v1/account",
            &self.token,
            Some(proof),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        let n = nonce(self.h).await;
        let proof = self.proof("GET", path, &n);
        dpop_request(self.h, Method::GET, path, &self.token, Some(&proof)).await
    }
}

async fn bound_account<'a>(h: &'a Harness, name: &str) -> (Device<'a>, SoftKeyAndSession) {
    let mut key = new_key();
    let proof_key = ProofKey::generate();
    let signed = h
        .try_create_account_bound(&mut key, name, binding(&proof_key))
        .await
        .unwrap();
    assert_eq!(signed.session.binding, SessionBinding::Software);
    (
        Device {
            h,
            key: proof_key,
            token: signed.token.clone(),
        },
        SoftKeyAndSession {
            key,
            session: signed.session,
        },
    )
}

struct SoftKeyAndSession {
    key: keyward_softkey::SoftKey,
    session: SessionView,
}

#[tokio::test]
async fn a_bound_session_works_with_its_proofs_and_its_token_alone_is_refused() {
    let h = Harness::start().await;
    let (owner, _) = bound_account(&h, "ada").await;

    let ok = owner.get("/api/v1/sessions").await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body[0]["binding"], "software");

    // The token copied to another client, sent as a bearer token: refused, with RFC 9449's
    // challenge.
    let stolen = h.get::<AccountView>("/api/v1/account", &owner.token).await;
    let failure = stolen.unwrap_err();
    assert_eq!(failure.status, StatusCode::UNAUTHORIZED);
    assert_eq!(failure.error.code, ErrorCode::ProofRequired);
    let bare = dpop_request(&h, Method::GET, "/api/v1/account", &owner.token, None).await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bare.code(),
        "proof_invalid",
        "a DPoP token needs its DPoP header"
    );
    assert!(bare.challenge.starts_with("DPoP "), "{}", bare.challenge);

    // With a proof by the thief's own key: refused.
    let thief = Device {
        h: &h,
        key: ProofKey::generate(),
        token: owner.token.clone(),
    };
    let forged = thief.get("/api/v1/account").await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(forged.code(), "proof_invalid");
    assert!(forged.challenge.contains("error=\"invalid_dpop_proof\""));
    assert!(
        forged.body["message"]
            .as_str()
            .unwrap()
            .contains("another key")
    );

    // The owner's session keeps working.
    assert_eq!(owner.get("/api/v1/account").await.status, StatusCode::OK);
}

#[tokio::test]
async fn replayed_misdirected_stale_and_future_proofs_are_refused() {
    let h = Harness::start().await;
    let (owner, _) = bound_account(&h, "ada").await;
    let n = nonce(&h).await;

    let proof = owner.proof("GET", "/api/v1/account", &n);
    let first = owner.account_with(&proof).await;
    assert_eq!(first.status, StatusCode::OK);
    let again = owner.account_with(&proof).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.body["message"].as_str().unwrap().contains("replay"));

    // A second instance on the same database refuses it too.
    let second = h.second_instance().await;
    let other = format!("{}/api/v1/account", second.base);
    let proof = owner
        .key
        .dpop_proof("GET", &other, now_s(&h), Some(&owner.token), Some(&n));
    let there = dpop_request(
        &second,
        Method::GET,
        "/api/v1/account",
        &owner.token,
        Some(&proof),
    )
    .await;
    assert_eq!(there.status, StatusCode::OK, "{:?}", there.body);
    let back = dpop_request(
        &second,
        Method::GET,
        "/api/v1/account",
        &owner.token,
        Some(&proof),
    )
    .await;
    assert_eq!(back.code(), "proof_invalid");

    // For another URL, another method.
    let proof = owner.proof("GET", "/api/v1/sessions", &n);
    let misdirected = owner.account_with(&proof).await;
    assert!(
        misdirected.body["message"]
            .as_str()
            .unwrap()
            .contains("another URL")
    );
    let proof = owner.proof("POST", "/api/v1/account", &n);
    let wrong = owner.account_with(&proof).await;
    assert!(
        wrong.body["message"]
            .as_str()
            .unwrap()
            .contains("another method")
    );

    // From the distant past and from the future.
    let url = format!("{}/api/v1/account", h.base);
    for (iat, says) in [(now_s(&h) - 120, "too old"), (now_s(&h) + 60, "future")] {
        let proof = owner
            .key
            .dpop_proof("GET", &url, iat, Some(&owner.token), Some(&n));
        let a = owner.account_with(&proof).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(
            a.body["message"].as_str().unwrap().contains(says),
            "{:?}",
            a.body
        );
    }
    // The configured origin's URL is the request's too (behind a proxy rewriting Host).
    let at_origin = format!("{}api/v1/account", h.origin);
    let proof = owner
        .key
        .dpop_proof("GET", &at_origin, now_s(&h), Some(&owner.token), Some(&n));
    let a = owner.account_with(&proof).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(owner.get("/api/v1/account").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_proof_without_the_servers_nonce_is_answered_with_one() {
    let h = Harness::start().await;
    let (owner, _) = bound_account(&h, "ada").await;
    let url = format!("{}/api/v1/account", h.base);
    for nonce in [None, Some("made-up")] {
        let proof = owner
            .key
            .dpop_proof("GET", &url, now_s(&h), Some(&owner.token), nonce);
        let a = owner.account_with(&proof).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.code(), "proof_nonce_required");
        assert!(
            a.challenge.contains("error=\"use_dpop_nonce\""),
            "{}",
            a.challenge
        );
        // The nonce it hands out is good for the retry.
        let fresh = a.nonce.unwrap();
        let proof = owner
            .key
            .dpop_proof("GET", &url, now_s(&h), Some(&owner.token), Some(&fresh));
        let retry = owner.account_with(&proof).await;
        assert_eq!(retry.status, StatusCode::OK);
    }
    // Nonces age out: two slots (10 minutes) later, the old one is refused.
    let old = nonce(&h).await;
    h.clock.advance_ms(11 * 60_000);
    let proof = owner
        .key
        .dpop_proof("GET", &url, now_s(&h), Some(&owner.token), Some(&old));
    let a = owner.account_with(&proof).await;
    assert_eq!(a.code(), "proof_nonce_required");
}

#[tokio::test]
async fn an_ended_bound_session_is_refused_at_its_next_proof() {
    let h = Harness::start().await;
    let (owner, _) = bound_account(&h, "ada").await;
    let n = nonce(&h).await;
    let proof = owner.proof("POST", "/api/v1/sign-out", &n);
    let out = dpop_request(
        &h,
        Method::POST,
        "/api/v1/sign-out",
        &owner.token,
        Some(&proof),
    )
    .await;
    assert_eq!(out.status, StatusCode::OK, "{:?}", out.body);
    let after = owner.get("/api/v1/account").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.code(), "unauthenticated");
}

#[tokio::test]
async fn the_event_stream_takes_a_bound_token_only_with_a_proof() {
    let h = Harness::start().await;
    let (owner, _) = bound_account(&h, "ada").await;
    let path = "/api/v1/events/stream";
    let bearer = h
        .http
        .get(format!("{}{path}", h.base))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::UNAUTHORIZED);
    let n = nonce(&h).await;
    let res = h
        .http
        .get(format!("{}{path}", h.base))
        .header("Authorization", format!("DPoP {}", owner.token))
        .header("DPoP", owner.proof("GET", path, &n))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
}

#[tokio::test]
async fn a_key_that_is_not_a_public_p256_jwk_is_refused_at_sign_in() {
    let h = Harness::start().await;
    let mut key = new_key();
    let mut jwk = ProofKey::generate().public_jwk();
    jwk["d"] = "AAAA".into();
    let refused = h
        .try_create_account_bound(
            &mut key,
            "ada",
            Some(SessionKeyBinding {
                jwk,
                kind: DeviceKeyKind::Software,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::InvalidInput);
    assert!(refused.error.message.contains("private"));
}

#[tokio::test]
async fn require_bound_sessions_refuses_an_unbound_sign_in_and_opens_a_bound_one() {
    let h = Harness::start_with(|c| c.policy.require_bound_sessions = true).await;
    let mut key = new_key();
    let refused = h.try_create_account(&mut key, "ada").await.unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error.code, ErrorCode::BindingRequired);

    let (owner, mut first) = bound_account(&h, "ada").await;
    assert_eq!(owner.get("/api/v1/account").await.status, StatusCode::OK);
    // Signing in again without a key to bind to: refused too.
    let begin = h.sign_in_begin(Some("ada")).await;
    let credential = first.key.authenticate(&h.origin, &begin.options).unwrap();
    let again = h
        .sign_in_finish(&begin, credential, "laptop", None)
        .await
        .unwrap_err();
    assert_eq!(again.error.code, ErrorCode::BindingRequired);
    assert_eq!(first.session.binding, SessionBinding::Software);
}

#[tokio::test]
async fn unbound_sessions_keep_working_as_bearer_tokens_by_default() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    assert_eq!(me.session.binding, SessionBinding::Unbound);
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &me.token).await.unwrap();
    assert_eq!(sessions[0].binding, SessionBinding::Unbound);
}
