//! Every attack fails, and where it fails nothing changes.

use keyward_proto::*;
use keyward_server::Limits;
use reqwest::StatusCode;

use crate::harness::*;

#[tokio::test]
async fn a_replayed_finish_is_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let begin = h.sign_in_begin(None).await;
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    h.sign_in_finish(&begin, cred.clone(), "laptop", None)
        .await
        .unwrap();
    let before = h.table_counts();
    let replay = h
        .sign_in_finish(&begin, cred, "attacker", None)
        .await
        .unwrap_err();
    assert_eq!(replay.error.code, ErrorCode::CeremonyExpired);
    assert_eq!(h.table_counts(), before, "a replay changes nothing");
}

/// Signatures are checked before the writer lock (see `pre_verify`); taking the ceremony still
/// happens once, under it. Many copies of one assertion sent at the same moment open one
/// session, and the others are told the ceremony is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finish_raced_from_many_connections_opens_one_session() {
    let h = std::sync::Arc::new(Harness::start().await);
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let begin = h.sign_in_begin(None).await;
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    let mut racers = Vec::new();
    for i in 0..16 {
        let (h, begin, cred) = (h.clone(), begin.clone(), cred.clone());
        racers.push(tokio::spawn(async move {
            h.sign_in_finish(&begin, cred, &format!("racer {i}"), None)
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(e.error.code, ErrorCode::CeremonyExpired),
        }
    }
    assert_eq!(won, 1);
}

/// WebAuthn §7.2 step 22 compares the counter with the *stored* one. Two ceremonies begun
/// together capture the same old counter; if the newer assertion finishes first, the older one
/// must then be refused (a possible clone), and the stored counter never moves back.
#[tokio::test]
async fn an_older_assertion_finished_after_a_newer_one_is_a_counter_regression() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let first = h.sign_in_begin(Some("ada")).await;
    let second = h.sign_in_begin(Some("ada")).await;
    let older = key.authenticate(&h.origin, &first.options).unwrap();
    let newer = key.authenticate(&h.origin, &second.options).unwrap();
    h.sign_in_finish(&second, newer, "tab 2", None)
        .await
        .unwrap();
    let err = h
        .sign_in_finish(&first, older, "tab 1", None)
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::AuthenticationFailed);
    let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &me.token).await.unwrap();
    assert_eq!(keys[0].sign_count, key.credentials[0].sign_count);
    let events: EventPage = h.get("/api/v1/events", &me.token).await.unwrap();
    assert!(
        events
            .events
            .iter()
            .any(|e| e.kind == EventKind::ClonedKeyWarning)
    );
}

#[tokio::test]
async fn a_challenge_is_single_use_even_after_a_failed_attempt() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let begin = h.sign_in_begin(None).await;
    key.behaviour.corrupt_signature = true;
    let bad = key.authenticate(&h.origin, &begin.options).unwrap();
    assert_eq!(
        h.sign_in_finish(&begin, bad, "x", None)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::AuthenticationFailed
    );
    key.behaviour.corrupt_signature = false;
    let good = key.authenticate(&h.origin, &begin.options).unwrap();
    assert_eq!(
        h.sign_in_finish(&begin, good, "x", None)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::CeremonyExpired
    );
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let begin = h.sign_in_begin(None).await;
    assert_eq!(
        begin.options.public_key.timeout,
        Some(300_000),
        "clients are told the limit"
    );
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    h.clock.advance_secs(300);
    let before = h.table_counts();
    assert_eq!(
        h.sign_in_finish(&begin, cred, "x", None)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::CeremonyExpired
    );
    assert_eq!(h.table_counts(), before);
}

async fn refused_with(h: &Harness, key: &mut keyward_softkey::SoftKey) {
    let begin = h.sign_in_begin(Some("ada")).await;
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    let sessions_before = h.table_counts()[3].1;
    let err = h
        .sign_in_finish(&begin, cred, "attacker", None)
        .await
        .unwrap_err();
    assert_eq!(
        err.error.code,
        ErrorCode::AuthenticationFailed,
        "{:?}",
        key.behaviour
    );
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.table_counts()[3].1,
        sessions_before,
        "no session was created"
    );
}

#[tokio::test]
async fn wrong_origin_wrong_rp_id_missing_uv_missing_up_and_bad_signatures_are_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;

    let mut phish = key.clone();
    phish.behaviour.origin_override = Some("https://keyward.example.evil".into());
    refused_with(&h, &mut phish).await;
    let mut other_port = key.clone();
    other_port.behaviour.origin_override = Some("http://localhost:1".into());
    refused_with(&h, &mut other_port).await;
    let mut wrong_rp = key.clone();
    wrong_rp.behaviour.rp_id_override = Some("evil.example".into());
    refused_with(&h, &mut wrong_rp).await;
    let mut no_uv = key.clone();
    no_uv.behaviour.user_verified = false;
    refused_with(&h, &mut no_uv).await;
    let mut no_up = key.clone();
    no_up.behaviour.user_present = false;
    refused_with(&h, &mut no_up).await;
    let mut forged = key.clone();
    forged.behaviour.corrupt_signature = true;
    refused_with(&h, &mut forged).await;

    // Each failure is in the owner's log, quietly.
    let failed = h
        .events(&me.token)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::SignInFailed)
        .count();
    assert!(failed >= 6, "{failed}");
}

/// WebAuthn L3 §7.2 step 13: an assertion made in a frame under another site is refused.
/// webauthn-rs checks `crossOrigin` only at registration; keywardd checks it at every ceremony.
#[tokio::test]
async fn ceremonies_in_a_frame_under_another_site_are_refused() {
    // Four refusals from one address: the failure limits are not under test.
    let h = Harness::start_with(|c| {
        c.limits.failures_per_address.max = 100;
        c.limits.failures_per_target_address.max = 100;
    })
    .await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut impostors = Vec::new();
    let mut framed = key.clone();
    framed.behaviour.cross_origin = true;
    impostors.push(framed);
    let mut under_another_top = key.clone();
    under_another_top.behaviour.top_origin = Some("https://evil.example".into());
    impostors.push(under_another_top);

    for k in &mut impostors {
        // Sign-in, step-up and registration all refuse it.
        refused_with(&h, k).await;
        let begin: AssertionBegin = h
            .post_empty("/api/v1/step-up/begin", &me.token)
            .await
            .unwrap();
        let credential = k.authenticate(&h.origin, &begin.options).unwrap();
        let err = h
            .post::<SteppedUp>(
                "/api/v1/step-up/finish",
                Some(&me.token),
                &AssertionFinishRequest {
                    ceremony_id: begin.ceremony_id,
                    credential,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.error.code,
            ErrorCode::AuthenticationFailed,
            "{:?}",
            k.behaviour
        );
        let mut fresh = new_key();
        fresh.behaviour = k.behaviour.clone();
        let err = h
            .try_create_account(&mut fresh, "mallory")
            .await
            .unwrap_err();
        assert_eq!(
            err.error.code,
            ErrorCode::RegistrationFailed,
            "{:?}",
            k.behaviour
        );
    }
    assert_eq!(h.table_counts()[0].1, 1, "no account was created");
    // The owner's own key still works.
    h.sign_in(&mut key, None, "laptop").await.unwrap();
}

/// Origins webauthn-rs accepts because it parses them and compares scheme, host and port, but
/// that no browser on the configured origin writes.
fn near_misses(origin: &url::Url) -> Vec<String> {
    let exact = origin.origin().ascii_serialization();
    let port = origin.port().unwrap();
    vec![
        format!("{exact}/"),
        format!("{exact}/phish?x=1#y"),
        format!("http://attacker@localhost:{port}"),
        format!("HTTP://LOCALHOST:{port}"),
    ]
}

#[tokio::test]
async fn an_origin_that_is_not_exactly_a_configured_one_is_refused() {
    let h = Harness::start_with(|c| {
        c.limits.failures_per_address.max = 100;
        c.limits.failures_per_target_address.max = 100;
    })
    .await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    for near in near_misses(&h.origin) {
        let mut k = key.clone();
        k.behaviour.origin_override = Some(near.clone());
        // Sign-in, step-up and registration all refuse it.
        refused_with(&h, &mut k).await;
        let begin: AssertionBegin = h
            .post_empty("/api/v1/step-up/begin", &me.token)
            .await
            .unwrap();
        let credential = k.authenticate(&h.origin, &begin.options).unwrap();
        let err = h
            .post::<SteppedUp>(
                "/api/v1/step-up/finish",
                Some(&me.token),
                &AssertionFinishRequest {
                    ceremony_id: begin.ceremony_id,
                    credential,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.error.code, ErrorCode::AuthenticationFailed, "{near}");
        let mut fresh = new_key();
        fresh.behaviour = k.behaviour.clone();
        let err = h
            .try_create_account(&mut fresh, "mallory")
            .await
            .unwrap_err();
        assert_eq!(err.error.code, ErrorCode::RegistrationFailed, "{near}");
    }
    assert_eq!(h.table_counts()[0].1, 1, "no account was created");
    // The exact origin still works.
    h.sign_in(&mut key, None, "laptop").await.unwrap();
}

#[tokio::test]
async fn registration_without_user_verification_is_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    key.behaviour.user_verified = false;
    let err = h.try_create_account(&mut key, "ada").await.unwrap_err();
    assert_eq!(err.error.code, ErrorCode::RegistrationFailed);
    assert_eq!(h.table_counts()[0].1, 0, "no account was created");
    let mut phish = new_key();
    phish.behaviour.origin_override = Some("https://evil.example".into());
    assert_eq!(
        h.try_create_account(&mut phish, "ada")
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::RegistrationFailed
    );
}

#[tokio::test]
async fn another_accounts_credential_cannot_sign_in_as_you() {
    let h = Harness::start().await;
    let mut ada_key = new_key();
    let mut eve_key = new_key();
    h.create_account(&mut ada_key, "ada").await;
    let eve = h.create_account(&mut eve_key, "eve").await;
    // Eve asks for ada's options and answers with her own credential.
    let begin = h.sign_in_begin(Some("ada")).await;
    let mut options = begin.options.clone();
    options.public_key.allow_credentials.clear();
    let cred = eve_key.authenticate(&h.origin, &options).unwrap();
    let err = h
        .sign_in_finish(&begin, cred, "eve", None)
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::AuthenticationFailed);
    // And a user handle naming ada on eve's credential gets nowhere either.
    let begin = h.sign_in_begin(None).await;
    let mut cred = eve_key.authenticate(&h.origin, &begin.options).unwrap();
    let ada_id: AccountView = h
        .get(
            "/api/v1/account",
            &h.sign_in(&mut ada_key, None, "ada").await.unwrap().token,
        )
        .await
        .unwrap();
    cred.response.user_handle = Some(ada_id.id.as_bytes().to_vec());
    assert_eq!(
        h.sign_in_finish(&begin, cred, "eve", None)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::AuthenticationFailed
    );
    let _ = eve;
}

#[tokio::test]
async fn a_removed_credential_is_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut old = new_key();
    let old_view = h.add_key(&me.token, &mut old, "old").await.unwrap();
    let _: EndedSessions = h
        .delete(
            &format!("/api/v1/authenticators/{}", old_view.id),
            &me.token,
        )
        .await
        .unwrap();
    let begin = h.sign_in_begin(None).await;
    let cred = old.authenticate(&h.origin, &begin.options).unwrap();
    assert_eq!(
        h.sign_in_finish(&begin, cred, "x", None)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::AuthenticationFailed
    );
}

#[tokio::test]
async fn a_counter_regression_is_refused_and_raises_a_cloned_key_warning() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut clone = key.clone();
    h.sign_in(&mut key, None, "laptop").await.unwrap();
    h.sign_in(&mut key, None, "laptop").await.unwrap();
    // The clone's counter is behind the original's.
    let err = h.sign_in(&mut clone, None, "clone").await.unwrap_err();
    assert_eq!(err.error.code, ErrorCode::AuthenticationFailed);
    let events = h.events(&me.token).await;
    let warning = events
        .iter()
        .find(|e| e.kind == EventKind::ClonedKeyWarning)
        .expect("cloned-key warning");
    assert_eq!(warning.urgency, Urgency::Urgent);
    assert!(warning.detail.reason.as_deref().unwrap().contains("cloned"));
}

#[tokio::test]
async fn ended_expired_and_made_up_tokens_are_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    for bad in ["", "nonsense", &"A".repeat(43), &format!("{}x", me.token)] {
        let err = h
            .get::<AccountView>("/api/v1/account", bad)
            .await
            .unwrap_err();
        assert_eq!(err.error.code, ErrorCode::Unauthenticated, "{bad:?}");
    }
    let no_header = h
        .send::<AccountView>(reqwest::Method::GET, "/api/v1/account", None, None::<&()>)
        .await
        .unwrap_err();
    assert_eq!(no_header.status, StatusCode::UNAUTHORIZED);
}

/// ASVS 5.0: a session's token is replaced when its privileges change. A token that leaked
/// before a step-up (a log, a proxy, a stolen backup of the app's store) must not carry the
/// fresh touch: after the step-up it is refused everywhere and changes nothing, while the
/// session itself (its ID, its place in the session list, the log) is the same. A browser gets
/// the new token as its cookie, never in the body, and its old cookie is refused.
#[tokio::test]
async fn step_up_replaces_the_token() {
    use crate::browser::{Browser, cookie_value, error_of, set_cookie};
    use keyward_core::Clock as _;
    use keyward_server::{DEVICE_COOKIE, SESSION_COOKIE};
    use reqwest::Method;

    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    h.clock.advance_secs(301); // past the step-up window: sensitive changes need a touch
    let sessions_before: Vec<SessionView> = h.get("/api/v1/sessions", &me.token).await.unwrap();
    let events_before = h.events(&me.token).await;

    // Bearer: the answer carries the new token, for the same session.
    let begin: AssertionBegin = h
        .post_empty("/api/v1/step-up/begin", &me.token)
        .await
        .unwrap();
    let credential = key.authenticate(&h.origin, &begin.options).unwrap();
    let stepped: SteppedUp = h
        .post(
            "/api/v1/step-up/finish",
            Some(&me.token),
            &AssertionFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
            },
        )
        .await
        .unwrap();
    let new = stepped.token.clone();
    assert_eq!(new.len(), me.token.len(), "as long as any session token");
    assert_ne!(new, me.token);
    assert_eq!(stepped.session.id, me.session.id, "the same session");
    assert_eq!(stepped.session.verified_at, h.clock.now());

    // The old token: 401 with the usual shape on every endpoint, and nothing changes.
    let counts = h.table_counts();
    let old = h
        .get::<SessionView>("/api/v1/session", &me.token)
        .await
        .unwrap_err();
    assert_eq!(
        (old.status, old.error.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated)
    );
    let mut backup = new_key();
    let tries = [
        h.post_empty::<AssertionBegin>("/api/v1/step-up/begin", &me.token)
            .await
            .map(drop),
        h.add_key(&me.token, &mut backup, "sneaked in")
            .await
            .map(drop),
        h.post_empty::<EndedSessions>("/api/v1/sessions/end-others", &me.token)
            .await
            .map(drop),
        h.post_empty::<EndedSessions>("/api/v1/sign-out", &me.token)
            .await
            .map(drop),
    ];
    for refused in tries {
        let refused = refused.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(refused.error.code, ErrorCode::Unauthenticated);
    }
    assert_eq!(h.table_counts(), counts, "the old token changed nothing");

    // The new token: the same session, listed as before, the same log, and the fresh touch.
    let current: SessionView = h.get("/api/v1/session", &new).await.unwrap();
    assert_eq!(current.id, me.session.id);
    let sessions_after: Vec<SessionView> = h.get("/api/v1/sessions", &new).await.unwrap();
    let ids = |v: &[SessionView]| v.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(&sessions_after), ids(&sessions_before));
    let events_after = h.events(&new).await;
    assert_eq!(
        events_after
            .iter()
            .map(|e| (e.id, e.kind))
            .collect::<Vec<_>>(),
        events_before
            .iter()
            .map(|e| (e.id, e.kind))
            .collect::<Vec<_>>(),
        "a step-up is not an event, and the sign-out tried with the old token did not happen"
    );
    h.add_key(&new, &mut backup, "backup").await.unwrap();

    // A browser: the new token comes as its session cookie, never in the body; the device
    // cookie is left alone; the old cookie is refused.
    let browser = h.signed_in_browser(&mut key).await;
    let mine: SessionView = h
        .browser_request(&browser, Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.clock.advance_secs(301);
    let begin: AssertionBegin = h
        .as_own_page(h.browser_request(&browser, Method::POST, "/api/v1/step-up/begin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let credential = key.authenticate(&h.origin, &begin.options).unwrap();
    let res = h
        .as_own_page(h.browser_request(&browser, Method::POST, "/api/v1/step-up/finish"))
        .json(&AssertionFinishRequest {
            ceremony_id: begin.ceremony_id,
            credential,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_cookie(&res, SESSION_COOKIE).unwrap().to_string();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Max-Age"),
        "a full session's cookie ends with the browser"
    );
    assert!(
        set_cookie(&res, DEVICE_COOKIE).is_none(),
        "the device keeps its secret"
    );
    let renewed = Browser {
        session: cookie_value(&cookie),
        device: browser.device.clone(),
    };
    assert_ne!(renewed.session, browser.session);
    let body: SteppedUp = res.json().await.unwrap();
    assert!(body.token.is_empty(), "never in the body");
    assert_eq!(body.session.id, mine.id);
    let old_cookie = h
        .browser_request(&browser, Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(old_cookie).await;
    assert_eq!(
        (status, error.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated)
    );
    let renamed = h
        .as_own_page(h.browser_request(
            &browser,
            Method::PATCH,
            &format!(
                "/api/v1/authenticators/{}",
                stepped.session.opened_by.unwrap()
            ),
        ))
        .json(&RenameAuthenticatorRequest {
            nickname: "renamed by the old cookie".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::UNAUTHORIZED);
    let current: SessionView = h
        .browser_request(&renewed, Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current.id, mine.id, "the same session");
    let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &new).await.unwrap();
    assert!(
        keys.iter()
            .all(|k| k.nickname != "renamed by the old cookie")
    );
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_get_4xx_and_change_nothing() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let before = h.table_counts();
    let url = format!("{}/api/v1/sign-in/finish", h.base);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, ErrorCode)> = vec![
        (h.http.post(&url).header("content-type", "application/json").body("{not json"), StatusCode::BAD_REQUEST, ErrorCode::MalformedBody),
        (h.http.post(&url).body("{}"), StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType),
        (h.http.post(&url).header("content-type", "application/json").body(r#"{"ceremony_id":"nope"}"#), StatusCode::BAD_REQUEST, ErrorCode::InvalidInput),
        (h.http.post(&url).header("content-type", "application/json")
            .body(r#"{"ceremony_id":"6b657977-6172-4476-8972-7475616c6b79","credential":{"id":"x","rawId":"!!!","type":"public-key","response":{"authenticatorData":"","clientDataJSON":"","signature":""}}}"#),
            StatusCode::BAD_REQUEST, ErrorCode::InvalidInput),
        (h.http.post(&url).header("content-type", "application/json").body(vec![b' '; 70 * 1024]), StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
        (h.http.post(format!("{}/api/v1/registration/begin", h.base)).json(&serde_json::json!({"username": "no spaces allowed"})), StatusCode::BAD_REQUEST, ErrorCode::InvalidInput),
        (h.http.get(format!("{}/api/v1/authenticators/not-a-uuid/removal-impact", h.base)), StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
        (h.http.get(format!("{}/api/v1/nowhere", h.base)), StatusCode::NOT_FOUND, ErrorCode::NotFound),
    ];
    for (req, status, code) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), status);
        let body: ApiError = res.json().await.unwrap();
        assert_eq!(body.code, code, "{}", body.message);
    }
    // A malformed CBOR attestation inside valid JSON fails verification, not the server.
    let begin: RegistrationBegin = h
        .post(
            "/api/v1/registration/begin",
            None,
            &RegistrationBeginRequest {
                username: "bob".into(),
                display_name: None,
            },
        )
        .await
        .unwrap();
    let mut cred = new_key().register(&h.origin, &begin.options).unwrap();
    cred.response.attestation_object = vec![0xa3, 0xff, 0x00];
    let err = h
        .post::<SignedIn>(
            "/api/v1/registration/finish",
            None,
            &RegistrationFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential: cred,
                nickname: None,
                client: client("x"),
                device_secret: None,
                binding: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::RegistrationFailed);
    assert_eq!(h.table_counts(), before, "nothing changed");
}

#[tokio::test]
async fn unknown_usernames_cannot_be_told_apart_from_real_ones() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let real = h
        .http
        .post(format!("{}/api/v1/sign-in/begin", h.base))
        .json(&serde_json::json!({"username": "ada"}))
        .send()
        .await
        .unwrap();
    let fake = h
        .http
        .post(format!("{}/api/v1/sign-in/begin", h.base))
        .json(&serde_json::json!({"username": "nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), fake.status());
    let real: serde_json::Value = real.json().await.unwrap();
    let fake: serde_json::Value = fake.json().await.unwrap();
    assert_eq!(shape(&real), shape(&fake), "same fields, same types");
    let ids = |v: &serde_json::Value| v["options"]["publicKey"]["allowCredentials"].clone();
    assert!(
        !ids(&fake).as_array().unwrap().is_empty(),
        "decoys offer credentials too"
    );
    // Decoys are stable for a username, as a real account's credentials are.
    let again: AssertionBegin = h
        .post(
            "/api/v1/sign-in/begin",
            None,
            &SignInBeginRequest {
                username: Some("nobody".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&again.options.public_key.allow_credentials).unwrap(),
        ids(&fake)
    );
    // Finishing a decoy fails exactly as a bad signature does.
    let begin = h.sign_in_begin(Some("nobody")).await;
    let mut options = begin.options.clone();
    options.public_key.allow_credentials.clear();
    let cred = key.authenticate(&h.origin, &options).unwrap();
    let err = h.sign_in_finish(&begin, cred, "x", None).await.unwrap_err();
    assert_eq!(
        (err.status, err.error.code),
        (StatusCode::BAD_REQUEST, ErrorCode::AuthenticationFailed)
    );
    // Recovery begin too.
    let a: serde_json::Value = h
        .http
        .post(format!("{}/api/v1/recovery/redeem/begin", h.base))
        .json(&serde_json::json!({"username": "ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: serde_json::Value = h
        .http
        .post(format!("{}/api/v1/recovery/redeem/begin", h.base))
        .json(&serde_json::json!({"username": "nobody"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shape(&a), shape(&b));
}

fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value::*;
    match v {
        Object(m) => Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Array(a) => Array(a.first().map(shape).into_iter().collect()),
        String(_) => String("s".into()),
        Number(_) => Number(0.into()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn repeated_failures_block_the_attackers_address_but_not_the_owner() {
    let h = Harness::start_with(|c| {
        c.limits.failures_per_address.max = 3;
        c.limits.failures_per_target_address.max = 3;
    })
    .await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let mut forged = key.clone();
    forged.behaviour.corrupt_signature = true;
    for _ in 0..3 {
        let begin = h.sign_in_begin(Some("ada")).await;
        let cred = forged.authenticate(&h.origin, &begin.options).unwrap();
        h.sign_in_finish(&begin, cred, "x", None).await.unwrap_err();
    }
    // Now even a correct assertion from that address is refused, before verification.
    let begin = h.sign_in_begin(Some("ada")).await;
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    let err = h.sign_in_finish(&begin, cred, "x", None).await.unwrap_err();
    assert_eq!(
        (err.status, err.error.code),
        (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
    );
    // The block lifts when the window passes; the account itself was never locked.
    h.clock.advance_secs(15 * 60 + 1);
    h.sign_in(&mut key, None, "owner").await.unwrap();
}

#[tokio::test]
async fn ceremony_starts_are_bounded() {
    let h = Harness::start_with(|c| c.policy.max_pending_ceremonies = 5).await;
    for _ in 0..5 {
        h.sign_in_begin(None).await;
    }
    let err = h
        .post::<AssertionBegin>(
            "/api/v1/sign-in/begin",
            None,
            &SignInBeginRequest { username: None },
        )
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::RateLimited);
    // Expired ones are swept, making room again.
    h.clock.advance_secs(301);
    h.sign_in_begin(None).await;
}

/// A registration refused because another account holds the credential ID still uses up its
/// ceremony: the same challenge answered again, even honestly, is gone.
#[tokio::test]
async fn a_registration_refused_for_a_taken_credential_id_uses_up_its_ceremony() {
    let h = Harness::start().await;
    let mut ada_key = new_key();
    h.create_account(&mut ada_key, "ada").await;
    let taken = ada_key.credentials[0].id.clone();
    let before = h.table_counts();

    let begin: RegistrationBegin = h
        .post(
            "/api/v1/registration/begin",
            None,
            &RegistrationBeginRequest {
                username: "eve".into(),
                display_name: None,
            },
        )
        .await
        .unwrap();
    let mut copycat = new_key();
    copycat.behaviour.reuse_credential_id = Some(taken);
    let finish = |credential| RegistrationFinishRequest {
        ceremony_id: begin.ceremony_id,
        credential,
        nickname: None,
        client: client("x"),
        device_secret: None,
        binding: None,
    };
    let cred = copycat.register(&h.origin, &begin.options).unwrap();
    let err = h
        .post::<SignedIn>("/api/v1/registration/finish", None, &finish(cred))
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::RegistrationFailed);
    assert_eq!(h.table_counts(), before, "nothing changed");

    let cred = new_key().register(&h.origin, &begin.options).unwrap();
    let again = h
        .post::<SignedIn>("/api/v1/registration/finish", None, &finish(cred))
        .await
        .unwrap_err();
    assert_eq!(again.error.code, ErrorCode::CeremonyExpired);
    assert_eq!(h.table_counts(), before, "still nothing changed");
}

/// `--require-device-bound` holds at every assertion: a key registered before the policy was
/// turned on (or one that starts claiming to be synced) cannot sign in, step up or cancel.
#[tokio::test]
async fn a_synced_key_is_refused_at_sign_in_under_require_device_bound() {
    let h = Harness::start().await;
    let mut synced = new_key();
    synced.behaviour.backup_eligible = true;
    let ada = h.create_account(&mut synced, "ada").await;
    let mut bound = new_key();
    h.add_key(&ada.token, &mut bound, "hardware").await.unwrap();
    let h = h
        .restart_with(|c| c.policy.require_device_bound = true)
        .await;

    let before = h.table_counts();
    let err = h.sign_in(&mut synced, None, "laptop").await.unwrap_err();
    assert_eq!(err.error.code, ErrorCode::PolicyRefused);
    let err = h
        .sign_in(&mut synced, Some("ada"), "laptop")
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::PolicyRefused);
    let after = h.table_counts();
    assert_eq!(
        after
            .iter()
            .filter(|(t, _)| t != "events")
            .collect::<Vec<_>>(),
        before
            .iter()
            .filter(|(t, _)| t != "events")
            .collect::<Vec<_>>(),
        "no session, no device: only the refusals are logged"
    );
    // The device-bound key still signs in.
    h.sign_in(&mut bound, None, "laptop").await.unwrap();
}

/// DNS rebinding: a page on another site whose name now points at 127.0.0.1 reaches the
/// loopback keywardd with its own name as Host. Refused before anything happens.
#[tokio::test]
async fn a_request_for_another_host_name_is_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let before = h.table_counts();
    let port = h.origin.port().unwrap();
    for host in [
        format!("rebind.example:{port}"),
        "localhost".to_string(),
        format!("localhost:{}", port.wrapping_add(1)),
    ] {
        let res = h
            .http
            .post(format!("{}/api/v1/sign-in/begin", h.base))
            .header(reqwest::header::HOST, &host)
            .json(&serde_json::json!({"username": "ada"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{host}");
        assert_eq!(
            res.headers()["x-frame-options"],
            "DENY",
            "still with its headers"
        );
        let e: ApiError = res.json().await.unwrap();
        assert_eq!(e.code, ErrorCode::Forbidden);
    }
    assert_eq!(h.table_counts(), before, "nothing changed");
    assert_eq!(pending_ceremonies(&h), 0, "no ceremony was begun");
    // Its own names are answered: the origin's host:port, and the loopback address.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let res = h
            .http
            .get(format!("{}/api/v1/server", h.base))
            .header(reqwest::header::HOST, &host)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{host}");
    }
}

fn pending_ceremonies(h: &Harness) -> i64 {
    h.store()
        .read(|tx| tx.raw_value::<i64>("SELECT COUNT(*) FROM ceremonies", &[]))
        .unwrap()
}

/// Reporting a key lost is refused, like removing it, when it is the last usable one: the
/// account would otherwise be shut for good.
#[tokio::test]
async fn reporting_the_last_usable_key_lost_is_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &me.token).await.unwrap();
    let before = h.table_counts();
    let err = h
        .post_empty::<EndedSessions>(
            &format!("/api/v1/authenticators/{}/report-lost", keys[0].id),
            &me.token,
        )
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::LastAuthenticator);
    assert_eq!(h.table_counts(), before, "nothing changed");
    let after: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &me.token).await.unwrap();
    assert_eq!(after[0].status, AuthenticatorStatus::Active);
    h.sign_in(&mut key, None, "laptop").await.unwrap();
}

/// The decoys must also look like accounts whose keys were registered with packed attestation
/// and reported transports: in attested mode a real key's options carry them (webauthn-rs
/// keeps transports only when attestation vouches for them; without, neither side has any).
#[tokio::test]
async fn decoys_look_like_attested_keys_that_report_transports() {
    let model = uuid::Uuid::from_u128(0x5e_c0de);
    let (ca_pem, identity) = vendor(model);
    let h = Harness::start_with(|c| {
        c.attested_models = vec![keyward_server::config::AttestedModel {
            ca_pem,
            aaguid: model,
            name: "Test Key".into(),
        }];
    })
    .await;
    let mut key = keyward_softkey::SoftKey::new(model);
    key.attestation = Some(identity);
    key.transports = vec!["nfc".into(), "usb".into()];
    h.create_account(&mut key, "ada").await;
    let options = |name: &'static str| {
        let h = &h;
        async move {
            h.http
                .post(format!("{}/api/v1/sign-in/begin", h.base))
                .json(&serde_json::json!({ "username": name }))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let (real, fake) = (options("ada").await, options("nobody").await);
    let first = |v: &serde_json::Value| v["options"]["publicKey"]["allowCredentials"][0].clone();
    assert_eq!(
        first(&real)["transports"],
        serde_json::json!(["nfc", "usb"])
    );
    assert!(
        first(&fake)["transports"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "decoys report transports too: {}",
        first(&fake)
    );
    assert_eq!(shape(&real), shape(&fake), "same fields, same types");
}

/// Event IDs are numbered per account: the gap between two of an attacker's own events says
/// nothing of what happened to other accounts (here: failed sign-ins against a real name,
/// which are logged on that account and on no decoy).
#[tokio::test]
async fn event_ids_do_not_reveal_other_accounts_activity() {
    let h = Harness::start().await;
    let mut ada_key = new_key();
    h.create_account(&mut ada_key, "ada").await;
    let mut eve_key = new_key();
    let eve = h.create_account(&mut eve_key, "eve").await;
    let before = h.events(&eve.token).await;
    // Probing names: one real, one unknown.
    let mut forged = ada_key.clone();
    forged.behaviour.corrupt_signature = true;
    for name in ["ada", "nobody"] {
        let begin = h.sign_in_begin(Some(name)).await;
        let mut options = begin.options.clone();
        options.public_key.allow_credentials.clear();
        let cred = forged.authenticate(&h.origin, &options).unwrap();
        h.sign_in_finish(&begin, cred, "x", None).await.unwrap_err();
    }
    h.sign_in(&mut eve_key, Some("eve"), "eve's laptop")
        .await
        .unwrap();
    let after = h.events(&eve.token).await;
    assert_eq!(
        after[0].id,
        before[0].id + 1,
        "eve's next event follows her last, whatever happened elsewhere"
    );
    let ids: Vec<i64> = after.iter().rev().map(|e| e.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    // The stream resumes by the same numbers.
    let page: EventPage = h
        .get(
            &format!("/api/v1/events?before={}", after[0].id),
            &eve.token,
        )
        .await
        .unwrap();
    assert_eq!(page.events[0].id, after[0].id - 1);
}

/// Everything an attacker sees without touching the probed account: the log checkpoint
/// asked anonymously and by the attacker's own session, the attacker's own log, and the
/// server's public facts.
async fn public_view(h: &Harness, own_token: &str) -> serde_json::Value {
    let mut view = serde_json::Map::new();
    for (path, token) in [
        ("/api/v1/log/checkpoint", None),
        ("/api/v1/log/checkpoint?seen=1", None),
        ("/api/v1/log/checkpoint?seen=1", Some(own_token)),
        ("/api/v1/events", Some(own_token)),
        ("/api/v1/server", None),
        ("/healthz", None),
    ] {
        let mut req = h.http.get(format!("{}{path}", h.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let key = format!("{path} signed in: {}", token.is_some());
        view.insert(key, answer(req.send().await.unwrap()).await);
    }
    serde_json::Value::Object(view)
}

/// A response as the attacker sees it: status, Retry-After and body.
async fn answer(res: reqwest::Response) -> serde_json::Value {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    serde_json::json!({"status": status, "retry_after": retry_after, "body": body})
}

/// The answers to failed sign-ins against `name` with the attacker's own key: named ones
/// until the (name, network) limit refuses, then a usernameless one presenting the first
/// credential ID the name's options list, with the attacker's signature.
async fn probe(
    h: &Harness,
    key: &mut keyward_softkey::SoftKey,
    name: &str,
) -> Vec<serde_json::Value> {
    let finish = |begin: AssertionBegin, credential: PublicKeyCredential| {
        let req = SignInFinishRequest {
            ceremony_id: begin.ceremony_id,
            credential,
            client: client("probe"),
            device_secret: None,
            binding: None,
        };
        let url = format!("{}/api/v1/sign-in/finish", h.base);
        async move { answer(h.http.post(url).json(&req).send().await.unwrap()).await }
    };
    let mut answers = Vec::new();
    let named = Limits::default().failures_per_target_address.max + 1;
    let mut listed = None;
    for _ in 0..named {
        let begin = h.sign_in_begin(Some(name)).await;
        listed = Some(
            serde_json::to_value(&begin.options).unwrap()["publicKey"]["allowCredentials"][0]["id"]
                .clone(),
        );
        let mut options = begin.options.clone();
        options.public_key.allow_credentials.clear();
        let credential = key.authenticate(&h.origin, &options).unwrap();
        answers.push(finish(begin, credential).await);
    }
    let begin = h.sign_in_begin(None).await;
    let mut credential =
        serde_json::to_value(key.authenticate(&h.origin, &begin.options).unwrap()).unwrap();
    credential["id"] = listed.clone().unwrap();
    credential["rawId"] = listed.unwrap();
    let credential = serde_json::from_value(credential).unwrap();
    answers.push(finish(begin, credential).await);
    answers
}

/// Item 6 of issue 10, reopened by the signed log checkpoints: failed sign-ins against a real
/// name are logged on its account, against an unknown name nowhere. Nothing the attacker can
/// see tells the two apart: the checkpoint is not served anonymously, the attacker's own
/// account's head does not move, and the failures are answered and rate-limited alike (the
/// 11th from one network is refused whether or not the name exists).
#[tokio::test]
async fn the_log_checkpoint_does_not_tell_whether_a_name_exists() {
    let h = Harness::start().await;
    let mut ada_key = new_key();
    let ada = h.create_account(&mut ada_key, "ada").await;
    let mut eve_key = new_key();
    let eve = h.create_account(&mut eve_key, "eve").await;

    let mut runs = Vec::new();
    for name in ["ada", "nobody"] {
        let before = public_view(&h, &eve.token).await;
        let answers = probe(&h, &mut eve_key, name).await;
        let after = public_view(&h, &eve.token).await;
        assert_eq!(
            before, after,
            "probing {name} changed what the attacker sees"
        );
        runs.push((before, answers));
    }
    assert_eq!(
        runs[0], runs[1],
        "a real name and an unknown one look the same"
    );
    let (view, answers) = &runs[0];
    assert_eq!(
        view["/api/v1/log/checkpoint signed in: false"]["status"], 401,
        "{view}"
    );
    let codes: Vec<_> = answers
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    let mut expected = vec![400; Limits::default().failures_per_target_address.max as usize];
    expected.extend([429, 400]);
    assert_eq!(codes, expected, "{answers:?}");
    // The failures against ada were logged, on ada's log, which only ada's sessions see.
    let failed = h
        .events(&ada.token)
        .await
        .iter()
        .filter(|e| e.kind == EventKind::SignInFailed)
        .count();
    assert_eq!(
        failed,
        expected.len() - 1,
        "all but the one refused before checking"
    );
}
