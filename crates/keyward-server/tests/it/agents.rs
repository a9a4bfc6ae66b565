//! AI agents and CLIs signing in with the device authorization grant (RFC 8628): the agent is
//! the `openidconnect` crate's device flow (a client library no one here wrote) where it can
//! be, raw HTTP where a test needs to poll at a moment of its choosing; the person approves
//! through the API with a key ceremony, as the web UI and the desktop app do. An approved
//! agent has a Keyward session of its own. On both engines.

use std::sync::Arc;

use keyward_core::ManualClock;
use keyward_proto::*;
use openidconnect::core::{CoreClient, CoreDeviceAuthorizationResponse, CoreProviderMetadata};
use openidconnect::{
    ClientId, DeviceAuthorizationUrl, IssuerUrl, OAuth2TokenResponse, Scope, TokenResponse as _,
};
use reqwest::StatusCode;

use crate::harness::*;
use crate::oidc::{App, issuer, no_redirects, register_with, s};

/// A public agent client allowed the device grant.
fn agent(h: &Harness) -> App {
    register_with(h, "Coding agent", "none", true)
}

/// The agent's poll of the token endpoint, sent now.
async fn poll(h: &Harness, app: &App, device_code: &str) -> (StatusCode, serde_json::Value) {
    h.token(
        app,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ],
    )
    .await
}

fn error_of(body: &serde_json::Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

/// The agent asks for a device code, as RFC 8628 3.1 says (raw form).
async fn ask(h: &Harness, app: &App) -> serde_json::Value {
    let res = no_redirects()
        .post(format!("{}/oauth2/device_authorization", h.base))
        .form(&[("client_id", app.id.as_str()), ("scope", "openid profile")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

/// The person approves `user_code` with a fresh touch of `key`, in the approving request.
async fn approve(
    h: &Harness,
    token: &str,
    key: &mut keyward_softkey::SoftKey,
    user_code: &str,
) -> Res<DeviceDecision> {
    let begin: AssertionBegin = h.post_empty("/api/v1/step-up/begin", token).await.unwrap();
    let credential = key.authenticate(&h.origin, &begin.options).unwrap();
    h.post(
        "/api/v1/oauth/device/approve",
        Some(token),
        &DeviceApproval {
            user_code: user_code.to_string(),
            assertion: AssertionFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
            },
        },
    )
    .await
}

async fn lookup(h: &Harness, token: &str, user_code: &str) -> Res<DeviceRequestView> {
    h.post(
        "/api/v1/oauth/device/lookup",
        Some(token),
        &DeviceCodeEntry {
            user_code: user_code.to_string(),
        },
    )
    .await
}

/// An agent with tokens: asked, approved by `token`'s person with `key`, exchanged.
async fn approved_agent(
    h: &Harness,
    app: &App,
    token: &str,
    key: &mut keyward_softkey::SoftKey,
) -> (DeviceDecision, serde_json::Value) {
    let asked = ask(h, app).await;
    let decision = approve(h, token, key, &s(&asked, "user_code"))
        .await
        .unwrap();
    let (status, tokens) = poll(h, app, &s(&asked, "device_code")).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (decision, tokens)
}

#[tokio::test]
async fn an_agent_polls_the_person_approves_with_a_key_and_the_library_gets_tokens() {
    let h = Harness::start().await;
    let mut key = new_key();
    let person = h.create_account(&mut key, "ada").await;
    let app = agent(&h);

    // Discovery names the endpoint and the grant.
    let meta = h.public_json("/.well-known/openid-configuration").await;
    let endpoint = meta["device_authorization_endpoint"].as_str().unwrap();
    assert_eq!(
        endpoint,
        format!("{}/oauth2/device_authorization", issuer(&h))
    );
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "urn:ietf:params:oauth:grant-type:device_code")
    );

    // The agent: openidconnect's device flow.
    let http = no_redirects();
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer(&h)).unwrap(), &http)
        .await
        .unwrap();
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new(app.id.clone()), None)
        .set_device_authorization_url(DeviceAuthorizationUrl::new(endpoint.to_string()).unwrap());
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("profile".into()))
        .request_async(&http)
        .await
        .unwrap();
    let user_code = details.user_code().secret().clone();
    assert_eq!(user_code.len(), 9, "XXXX-XXXX: {user_code}");
    assert!(
        user_code
            .chars()
            .all(|c| c == '-' || "BCDFGHJKLMNPQRSTVWXZ".contains(c))
    );
    assert_eq!(details.interval().as_secs(), 5);
    assert_eq!(details.expires_in().as_secs(), 600);
    assert_eq!(
        details.verification_uri().as_str(),
        format!("{}/#/device", issuer(&h))
    );
    assert_eq!(
        details
            .verification_uri_complete()
            .unwrap()
            .secret()
            .as_str(),
        format!("{}/#/device/{user_code}", issuer(&h))
    );
    let device_code = details.device_code().secret().clone();

    // Before the person decides: pending; polled again at once: slow down, interval + 5 s.
    let (status, body) = poll(&h, &app, &device_code).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "authorization_pending")
    );
    let (_, body) = poll(&h, &app, &device_code).await;
    assert_eq!(error_of(&body), "slow_down", "{body}");
    h.clock.advance_secs(6);
    let (_, body) = poll(&h, &app, &device_code).await;
    assert_eq!(
        error_of(&body),
        "slow_down",
        "the interval was 10 s: {body}"
    );
    h.clock.advance_secs(16);
    let (_, body) = poll(&h, &app, &device_code).await;
    assert_eq!(error_of(&body), "authorization_pending", "{body}");

    // The person sees which agent asks, from where, for what; then approves with a key.
    let view = lookup(&h, &person.token, &user_code.to_lowercase())
        .await
        .unwrap();
    assert_eq!(view.client_name, "Coding agent");
    assert_eq!(view.user_code, user_code);
    assert_eq!(view.address, "127.0.0.1");
    let scopes: Vec<&str> = view.scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(scopes, ["openid", "profile"]);
    assert_eq!(view.idle_limit_ms, 8 * 3_600_000);
    assert_eq!(view.lifetime_ms, 7 * 24 * 3_600_000);
    let decision = approve(&h, &person.token, &mut key, &user_code)
        .await
        .unwrap();
    assert!(decision.approved);

    // The library's poll loop, its sleeps moving the manual clock: tokens at the next poll,
    // and an ID token it verifies against the JWKS.
    let clock: Arc<ManualClock> = h.clock.clone();
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(
            &http,
            move |d: std::time::Duration| {
                clock.advance_ms(d.as_millis() as i64);
                std::future::ready(())
            },
            None,
        )
        .await
        .unwrap();
    let clock = h.clock.clone();
    let verifier = client.id_token_verifier().set_time_fn(move || {
        chrono::DateTime::from_timestamp_millis(keyward_core::Clock::now(&*clock)).unwrap()
    });
    let claims = tokens
        .id_token()
        .unwrap()
        .claims(&verifier, |_: Option<&openidconnect::Nonce>| Ok(()))
        .unwrap();
    assert_eq!(claims.preferred_username().unwrap().as_str(), "ada");
    let access = tokens.access_token().secret().clone();
    assert_eq!(h.userinfo(&access).await, StatusCode::OK);

    // The device code is spent: presented again, refused, and what it issued ends.
    let (status, body) = poll(&h, &app, &device_code).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert_eq!(h.userinfo(&access).await, StatusCode::UNAUTHORIZED);

    // The person was told at once, loudly.
    let events = h.events(&person.token).await;
    let told = events
        .iter()
        .find(|e| e.kind == EventKind::AgentAuthorized)
        .unwrap();
    assert_eq!(told.urgency, Urgency::Urgent);
    assert_eq!(told.detail.client_name.as_deref(), Some("Coding agent"));
}

#[tokio::test]
async fn an_agent_has_a_session_of_its_own_listed_ended_and_outliving_the_approving_browser() {
    let h = Harness::start().await;
    let mut key = new_key();
    let person = h.create_account(&mut key, "ada").await;
    let app = agent(&h);
    let (decision, tokens) = approved_agent(&h, &app, &person.token, &mut key).await;
    let agent_session = decision.session_id.unwrap();

    // Listed with the person's sessions, as an agent.
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &person.token).await.unwrap();
    let listed = sessions.iter().find(|s| s.id == agent_session).unwrap();
    assert_eq!(listed.kind, SessionKind::Agent);
    assert_eq!(listed.agent_client_id.as_deref(), Some(app.id.as_str()));
    assert_eq!(listed.device.name, "Coding agent");
    assert!(!listed.current);

    // The session that approved it signs out: the agent works on.
    let other = h.sign_in(&mut key, Some("ada"), "laptop").await.unwrap();
    let _: EndedSessions = h
        .post_empty("/api/v1/sign-out", &person.token)
        .await
        .unwrap();
    assert_eq!(
        h.userinfo(&s(&tokens, "access_token")).await,
        StatusCode::OK
    );
    let (status, tokens) = h.refresh(&app, &s(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // Ended from the person's other session like any session: the agent stops at its next call.
    let fresh = h.step_up(&other.token, &mut key).await;
    let _: EndedSessions = h
        .delete(&format!("/api/v1/sessions/{agent_session}"), &fresh)
        .await
        .unwrap();
    assert_eq!(
        h.userinfo(&s(&tokens, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = h.refresh(&app, &s(&tokens, "refresh_token")).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
}

#[tokio::test]
async fn end_all_others_and_reporting_the_approving_key_lost_end_the_agent() {
    let h = Harness::start().await;
    let mut key = new_key();
    let person = h.create_account(&mut key, "ada").await;
    let app = agent(&h);
    let (_, tokens) = approved_agent(&h, &app, &person.token, &mut key).await;
    let fresh = h.step_up(&person.token, &mut key).await;
    let ended: EndedSessions = h
        .post_empty("/api/v1/sessions/end-others", &fresh)
        .await
        .unwrap();
    assert_eq!(ended.ended.len(), 1);
    assert_eq!(
        h.userinfo(&s(&tokens, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );

    // Approved with one key, that key reported lost: the agent's session ends with it.
    let mut spare = new_key();
    h.add_key(&fresh, &mut spare, "spare").await.unwrap();
    let (_, tokens) = approved_agent(&h, &app, &fresh, &mut key).await;
    let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &fresh).await.unwrap();
    let first = keys.iter().find(|k| k.nickname != "spare").unwrap().id;
    let fresh = h.step_up(&fresh, &mut spare).await;
    let ended: EndedSessions = h
        .post_empty(
            &format!("/api/v1/authenticators/{first}/report-lost"),
            &fresh,
        )
        .await
        .unwrap();
    assert!(!ended.ended.is_empty());
    let (status, _) = h.refresh(&app, &s(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_agents_session_has_its_own_idle_and_absolute_limits_and_refresh_is_its_activity() {
    let h = Harness::start_with(|c| {
        c.policy.agent_idle_ms = 4 * 3_600_000;
        c.policy.agent_absolute_ms = 10 * 3_600_000;
    })
    .await;
    let mut key = new_key();
    let person = h.create_account(&mut key, "ada").await;
    let app = agent(&h);
    let (_, mut tokens) = approved_agent(&h, &app, &person.token, &mut key).await;
    // Far past the person's own 15-minute idle timeout, inside the agent's: refreshes keep it.
    for _ in 0..3 {
        h.clock.advance_secs(3 * 3600);
        let (status, next) = h.refresh(&app, &s(&tokens, "refresh_token")).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        tokens = next;
    }
    // 9 h in: the next refresh at 10 h + 1 s is past its lifetime, however active.
    h.clock.advance_secs(3600 + 1);
    let (status, _) = h.refresh(&app, &s(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Idle: unused for more than 4 h, it has lapsed.
    let person = h.sign_in(&mut key, Some("ada"), "laptop").await.unwrap();
    let (_, tokens) = approved_agent(&h, &app, &person.token, &mut key).await;
    h.clock.advance_secs(4 * 3600 + 1);
    let (status, _) = h.refresh(&app, &s(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn denied_expired_unapproved_or_other_clients_codes_are_refused_and_nothing_is_issued() {
    let h = Harness::start().await;
    let mut key = new_key();
    let person = h.create_account(&mut key, "ada").await;
    let app = agent(&h);

    // Denied: access_denied.
    let asked = ask(&h, &app).await;
    let decision: DeviceDecision = h
        .post(
            "/api/v1/oauth/device/deny",
            Some(&person.token),
            &DeviceCodeEntry {
                user_code: s(&asked, "user_code"),
            },
        )
        .await
        .unwrap();
    assert!(!decision.approved);
    let (_, body) = poll(&h, &app, &s(&asked, "device_code")).await;
    assert_eq!(error_of(&body), "access_denied");
    assert!(
        approve(&h, &person.token, &mut key, &s(&asked, "user_code"))
            .await
            .is_err()
    );

    // Expired: expired_token, and no approval after.
    let asked = ask(&h, &app).await;
    h.clock.advance_secs(601);
    assert_eq!(
        lookup(&h, &person.token, &s(&asked, "user_code"))
            .await
            .unwrap_err()
            .status,
        StatusCode::NOT_FOUND
    );
    let (_, body) = poll(&h, &app, &s(&asked, "device_code")).await;
    assert_eq!(error_of(&body), "expired_token");

    // Another client's device code, and a client not allowed the grant.
    let asked = ask(&h, &app).await;
    approve(&h, &person.token, &mut key, &s(&asked, "user_code"))
        .await
        .unwrap();
    let other = register_with(&h, "Other agent", "none", true);
    let (_, body) = poll(&h, &other, &s(&asked, "device_code")).await;
    assert_eq!(error_of(&body), "invalid_grant");
    let web = register_with(&h, "Web app", "client_secret_basic", false);
    let (_, body) = poll(&h, &web, &s(&asked, "device_code")).await;
    assert_eq!(error_of(&body), "unauthorized_client");
    let res = no_redirects()
        .post(format!("{}/oauth2/device_authorization", h.base))
        .basic_auth(&web.id, web.secret.as_ref())
        .form(&[("scope", "openid")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error_of(&body), "unauthorized_client");
    // The rightful agent still gets its tokens once.
    let (status, _) = poll(&h, &app, &s(&asked, "device_code")).await;
    assert_eq!(status, StatusCode::OK);

    // Approval needs the key ceremony in that very request: none, or a used one, is refused.
    let asked = ask(&h, &app).await;
    let begin: AssertionBegin = h
        .post_empty("/api/v1/step-up/begin", &person.token)
        .await
        .unwrap();
    let credential = key.authenticate(&h.origin, &begin.options).unwrap();
    let assertion = AssertionFinishRequest {
        ceremony_id: begin.ceremony_id,
        credential,
    };
    let fresh: SteppedUp = h
        .post("/api/v1/step-up/finish", Some(&person.token), &assertion)
        .await
        .unwrap();
    let reused = h
        .post::<DeviceDecision>(
            "/api/v1/oauth/device/approve",
            Some(&fresh.token),
            &DeviceApproval {
                user_code: s(&asked, "user_code"),
                assertion,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reused.status, StatusCode::BAD_REQUEST, "{:?}", reused.error);
    let (_, body) = poll(&h, &app, &s(&asked, "device_code")).await;
    assert_eq!(error_of(&body), "authorization_pending");
}

#[tokio::test]
async fn guessing_user_codes_is_limited_per_network() {
    let h = Harness::start().await;
    let mut key = new_key();
    let person = h.create_account(&mut key, "ada").await;
    let app = agent(&h);
    let asked = ask(&h, &app).await;
    for guess in 0..10 {
        let wrong = format!("BCDF-{:04}", guess).replace(|c: char| c.is_ascii_digit(), "G");
        let wrong = if wrong == s(&asked, "user_code") {
            "ZZZZ-ZZZZ".into()
        } else {
            wrong
        };
        let failed = lookup(&h, &person.token, &wrong).await.unwrap_err();
        assert_eq!(failed.status, StatusCode::NOT_FOUND);
    }
    // Blocked now: even the right code is refused, before any lookup, for this network.
    let blocked = lookup(&h, &person.token, &s(&asked, "user_code"))
        .await
        .unwrap_err();
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        approve(&h, &person.token, &mut key, &s(&asked, "user_code"))
            .await
            .is_err()
    );
    // And it frees once the window has passed.
    h.clock.advance_secs(3601);
    let person = h.sign_in(&mut key, Some("ada"), "laptop").await.unwrap();
    let asked = ask(&h, &app).await;
    assert!(
        lookup(&h, &person.token, &s(&asked, "user_code"))
            .await
            .is_ok()
    );
}
