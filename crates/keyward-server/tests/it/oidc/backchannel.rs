//! OpenID Back-Channel Logout 1.0 end to end: each app's back-channel endpoint is a real HTTP
//! server on loopback; every way a Keyward session ends delivers it a logout token, which is
//! verified against the JWKS with `jsonwebtoken` (signature, `typ`, `iss`, `aud`, `events`,
//! `sid` of the ID token, no `nonce`). Retries, restarts, and apps with no URI.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyward_proto::{EndedSessions, SessionView};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;

use super::*;

/// What the app's endpoint was sent.
#[derive(Debug)]
struct Received {
    content_type: String,
    token: String,
    /// The status it answered with.
    answered: u16,
}

/// An app's back-channel logout endpoint on loopback: answers each request with the next
/// status queued (200 once the queue is empty) and reports every request.
struct Receiver {
    uri: String,
    got: mpsc::UnboundedReceiver<Received>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

type Shared = (mpsc::UnboundedSender<Received>, Arc<Mutex<VecDeque<u16>>>);

async fn logout_endpoint(
    State((sent, answers)): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let answered = answers.lock().pop_front().unwrap_or(200);
    let token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _ = sent.send(Received {
        content_type,
        token,
        answered,
    });
    axum::http::StatusCode::from_u16(answered).unwrap()
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sent, got) = mpsc::unbounded_channel();
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let app = axum::Router::new()
            .route("/backchannel", axum::routing::post(logout_endpoint))
            .with_state((sent, answers.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            uri: format!("http://127.0.0.1:{port}/backchannel"),
            got,
            answers,
        }
    }

    /// The next request to arrive (waiting at most long enough for a slow machine).
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(60), self.got.recv())
            .await
            .expect("a logout token arrived")
            .unwrap()
    }

    fn answer_next_with(&self, statuses: &[u16]) {
        self.answers.lock().extend(statuses);
    }
}

/// The logout token, verified as an app must (Back-Channel Logout 1.0, 2.6): signed ES256 by
/// a key in the JWKS, typed `logout+jwt`, from the issuer, for this app, with the back-channel
/// event, the `sid` and `sub` of the ID token it ends, and no `nonce`. Its claims.
async fn verify_logout_token(
    h: &Harness,
    app: &App,
    received: &Received,
    id_token: &str,
) -> serde_json::Value {
    assert_eq!(received.content_type, "application/x-www-form-urlencoded");
    let header = jsonwebtoken::decode_header(&received.token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(h.public_json("/oauth2/jwks").await).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[issuer(h)]);
    validation.set_audience(&[&app.id]);
    validation.set_required_spec_claims(&["iss", "aud", "exp", "sub"]);
    // The library checks `exp` against the machine's clock; the server runs on the tests'.
    validation.validate_exp = false;
    let claims: serde_json::Value = jsonwebtoken::decode(
        &received.token,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    let now = keyward_core::Clock::now(&*h.clock) / 1000;
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(iat <= now && now < exp && exp - iat <= 120, "{claims}");
    assert_eq!(
        claims["events"],
        serde_json::json!({"http://schemas.openid.net/event/backchannel-logout": {}})
    );
    assert!(claims.get("nonce").is_none(), "never a nonce: {claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    let id = payload(id_token);
    assert_eq!(claims["sid"], id["sid"], "the sign-in it ends");
    assert_eq!(
        claims["sub"], id["sub"],
        "pairwise, as the app knows the person"
    );
    claims
}

/// The logouts queued for an app, as the store holds them.
fn logouts_of(h: &Harness, app: &App) -> Vec<keyward_core::store::LogoutRecord> {
    h.store().read(|tx| tx.client_logouts(&app.id)).unwrap()
}

async fn sign_out(h: &Harness, browser: &Browser) {
    let res = h
        .as_own_page(h.browser_request(browser, Method::POST, "/api/v1/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_way_a_session_ends_sends_each_app_a_logout_token_that_verifies() {
    let h = Harness::start().await;
    let mut key = new_key();
    let desk = h.create_account(&mut key, "ada").await;
    let (mut chat_end, mut wiki_end) = (Receiver::start().await, Receiver::start().await);
    let chat = register_app(
        &h,
        "Chat",
        "client_secret_basic",
        Some(chat_end.uri.clone()),
    );
    let wiki = register_app(&h, "Wiki", "client_secret_post", Some(wiki_end.uri.clone()));
    let mute = register(&h, "Mute", "client_secret_basic");

    // Signed out: both apps of that session get a token of their own; an app with no URI,
    // nothing.
    let (browser, chat_tokens) = h.signed_in_app(&mut key, &chat).await;
    let wiki_tokens = h.app_tokens(&browser, &wiki).await;
    h.app_tokens(&browser, &mute).await;
    sign_out(&h, &browser).await;
    let got = chat_end.next().await;
    let claims = verify_logout_token(&h, &chat, &got, &s(&chat_tokens, "id_token")).await;
    let got = wiki_end.next().await;
    let wiki_claims = verify_logout_token(&h, &wiki, &got, &s(&wiki_tokens, "id_token")).await;
    assert_ne!(claims["sid"], wiki_claims["sid"], "sid is pairwise too");
    assert_ne!(claims["jti"], wiki_claims["jti"]);
    assert!(logouts_of(&h, &mute).is_empty());
    h.assert_app_sign_in_ended(&chat, &chat_tokens).await;

    // Ended from another session.
    let (_, tokens) = h.signed_in_app(&mut key, &chat).await;
    let fresh = h.step_up(&desk.token, &mut key).await;
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &fresh).await.unwrap();
    let other = sessions.iter().find(|s| !s.current).unwrap().id;
    let _: EndedSessions = h
        .delete(&format!("/api/v1/sessions/{other}"), &fresh)
        .await
        .unwrap();
    let got = chat_end.next().await;
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;

    // End all others.
    let (_, tokens) = h.signed_in_app(&mut key, &chat).await;
    let _: EndedSessions = h
        .post_empty("/api/v1/sessions/end-others", &fresh)
        .await
        .unwrap();
    let got = chat_end.next().await;
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;

    // The key that opened the app's session reported lost.
    let mut spare = new_key();
    let tokens = h
        .app_signed_in_then_its_key_lost(&fresh, &mut key, &mut spare, &chat)
        .await;
    let got = chat_end.next().await;
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;

    // Idle expiry: nobody ends the session and nobody uses it again; keywardd notices.
    let (_, tokens) = h.signed_in_app(&mut spare, &chat).await;
    h.clock.advance_secs(16 * 60);
    let got = chat_end.next().await;
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;
    h.assert_app_sign_in_ended(&chat, &tokens).await;

    let delivered = logouts_of(&h, &chat);
    assert_eq!(delivered.len(), 5);
    assert!(
        delivered
            .iter()
            .all(|l| l.delivered_at.is_some() && l.attempts == 1),
        "{delivered:?}"
    );
    assert_eq!(logouts_of(&h, &wiki).len(), 1);
}

#[tokio::test]
async fn a_reused_refresh_token_or_a_revoked_app_tells_the_app_and_its_own_sign_out_does_not() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let mut end = Receiver::start().await;
    let chat = register_app(&h, "Chat", "client_secret_basic", Some(end.uri.clone()));

    let (browser, tokens) = h.signed_in_app(&mut key, &chat).await;
    let first = s(&tokens, "refresh_token");
    assert_eq!(h.refresh(&chat, &first).await.0, StatusCode::OK);
    assert_eq!(h.refresh(&chat, &first).await.0, StatusCode::BAD_REQUEST);
    let got = end.next().await;
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;

    // The app signing the person out itself (RP-initiated logout) is not told back (2.7);
    // the person revoking the app in Keyward is.
    let _ = browser;
    let (browser, tokens) = h.signed_in_app(&mut key, &chat).await;
    let res = no_redirects()
        .get(format!("{}/oauth2/logout", h.base))
        .query(&[("id_token_hint", s(&tokens, "id_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let tokens = h.app_tokens(&browser, &chat).await;
    let res = h
        .as_own_page(h.browser_request(
            &browser,
            Method::DELETE,
            &format!("/api/v1/oauth/consents/{}", chat.id),
        ))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let got = end.next().await;
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;
    assert_eq!(
        logouts_of(&h, &chat).len(),
        2,
        "the app's own sign-out queued nothing"
    );
}

#[tokio::test]
async fn a_failed_delivery_is_retried_after_a_restart_and_a_refusal_is_not() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let mut end = Receiver::start().await;
    let chat = register_app(&h, "Chat", "client_secret_basic", Some(end.uri.clone()));

    // The app is down (503) when the session ends.
    end.answer_next_with(&[503]);
    let (browser, tokens) = h.signed_in_app(&mut key, &chat).await;
    sign_out(&h, &browser).await;
    assert_eq!(end.next().await.answered, 503);

    // keywardd restarts before the retry is due; the new process sends it once it is (past
    // the backoff, and past the lease should the restart have cut the first attempt short).
    let h = h.restart().await;
    h.clock.advance_secs(61);
    let got = end.next().await;
    assert_eq!(got.answered, 200);
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;
    let rows = logouts_of(&h, &chat);
    assert!(
        rows[0].delivered_at.is_some() && rows[0].attempts == 2,
        "{rows:?}"
    );

    // A 400 is the app refusing the token: recorded, and never sent again.
    end.answer_next_with(&[400]);
    let (browser, _) = h.signed_in_app(&mut key, &chat).await;
    sign_out(&h, &browser).await;
    assert_eq!(end.next().await.answered, 400);
    let refused = loop {
        let rows = logouts_of(&h, &chat);
        if let Some(row) = rows.iter().find(|r| r.gave_up_at.is_some()) {
            break row.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (refused.attempts, refused.last_outcome.as_deref()),
        (1, Some("status 400"))
    );
    assert_eq!(h.store().read(|tx| tx.pending_logouts()).unwrap(), 0);
}

#[tokio::test]
async fn two_instances_on_one_database_send_each_logout_once() {
    let h = Harness::start().await;
    let other = h.second_instance().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let mut end = Receiver::start().await;
    let chat = register_app(&h, "Chat", "client_secret_basic", Some(end.uri.clone()));
    let (browser, tokens) = h.signed_in_app(&mut key, &chat).await;
    // Ended through the second instance; both instances' senders look for due rows.
    let res = other
        .as_own_page(other.browser_request(&browser, Method::POST, "/api/v1/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let got = end.next().await;
    verify_logout_token(&h, &chat, &got, &s(&tokens, "id_token")).await;
    let row = loop {
        let rows = logouts_of(&h, &chat);
        if rows[0].delivered_at.is_some() {
            break rows[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Each claim counts an attempt: one attempt, so one sender took it.
    assert_eq!(row.attempts, 1, "{row:?}");
}
