//! The recovery key: generated on the client, only its public key on the server; confirm,
//! drill, redeem, the window, cancellation by any enrolled key, and enrolment afterwards.

use keyward_core::recovery_key::RecoveryKey;
use keyward_core::secret::{b64, unb64};
use keyward_proto::*;

use crate::harness::*;

async fn prove(
    h: &Harness,
    token: &str,
    key: &RecoveryKey,
    purpose: RecoveryPurpose,
) -> Res<RecoveryKeyStatus> {
    let c: RecoveryChallenge = h
        .post(
            "/api/v1/recovery-key/challenge",
            Some(token),
            &RecoveryChallengeRequest { purpose },
        )
        .await?;
    let sig = key.sign(purpose, "localhost", &unb64(&c.challenge).unwrap());
    h.post(
        "/api/v1/recovery-key/verify",
        Some(token),
        &RecoveryProof {
            challenge_id: c.challenge_id,
            signature: b64(&sig),
        },
    )
    .await
}

pub(crate) async fn set_up(h: &Harness, token: &str) -> RecoveryKey {
    let rk = RecoveryKey::generate();
    let _: RecoveryKeyStatus = h
        .send(
            reqwest::Method::PUT,
            "/api/v1/recovery-key",
            Some(token),
            Some(&SetRecoveryKeyRequest {
                public_key: b64(&rk.public_key()),
            }),
        )
        .await
        .unwrap();
    // The user types it back: parse what they typed, then prove it.
    let typed = RecoveryKey::parse(&rk.to_display().to_lowercase()).unwrap();
    prove(h, token, &typed, RecoveryPurpose::Confirm)
        .await
        .unwrap();
    rk
}

pub(crate) async fn redeem(h: &Harness, username: &str, key: &RecoveryKey) -> Res<RecoveryStarted> {
    let c: RecoveryChallenge = h
        .post(
            "/api/v1/recovery/redeem/begin",
            None,
            &RedeemBeginRequest {
                username: username.into(),
            },
        )
        .await?;
    let sig = key.sign(
        RecoveryPurpose::Redeem,
        "localhost",
        &unb64(&c.challenge).unwrap(),
    );
    h.post(
        "/api/v1/recovery/redeem/finish",
        None,
        &RedeemFinishRequest {
            challenge_id: c.challenge_id,
            signature: b64(&sig),
            client: client("new laptop"),
            binding: None,
        },
    )
    .await
}

#[tokio::test]
async fn generate_confirm_and_drill_without_using_the_key_up() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let status: RecoveryKeyStatus = h.get("/api/v1/recovery-key", &me.token).await.unwrap();
    assert!(status.present && status.confirmed_at.is_some());

    // The server holds only the public key: nothing in the database equals the key's bytes.
    let db = h.everything_stored();
    let shown = rk.to_display();
    assert!(!db.windows(shown.len()).any(|w| w == shown.as_bytes()));

    h.clock.advance_secs(91 * 24 * 3600);
    let me = h.sign_in(&mut key, None, "laptop").await.unwrap();
    let r: Readiness = h.get("/api/v1/readiness", &me.token).await.unwrap();
    assert!(r.recovery_key.drill_due);
    let drilled = prove(&h, &me.token, &rk, RecoveryPurpose::Drill)
        .await
        .unwrap();
    assert!(!drilled.drill_due);
    assert_eq!(drilled.last_verified_at, Some(h.clock_now()));
    // A drill with the wrong key fails and records nothing.
    let wrong = prove(
        &h,
        &me.token,
        &RecoveryKey::generate(),
        RecoveryPurpose::Drill,
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.error.code, ErrorCode::RecoveryFailed);
    // Still usable after drills.
    redeem(&h, "ada", &rk).await.unwrap();
}

impl Harness {
    fn clock_now(&self) -> i64 {
        use keyward_core::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn redeeming_opens_a_window_that_any_enrolled_key_can_cancel() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;

    let started = redeem(&h, "ada", &rk).await.unwrap();
    assert_eq!(started.account.state, AccountState::RecoveryPending);
    assert_eq!(
        started.window.ends_at - started.window.started_at,
        24 * 3600 * 1000
    );
    // Single use: the key is spent.
    assert_eq!(
        redeem(&h, "ada", &rk).await.unwrap_err().error.code,
        ErrorCode::RecoveryFailed
    );
    // The recovery session can watch but not act.
    let account: AccountView = h.get("/api/v1/account", &started.token).await.unwrap();
    assert_eq!(account.recovery.unwrap().device_name, "new laptop");
    let err = h
        .get::<Vec<SessionView>>("/api/v1/sessions", &started.token)
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::RecoveryInProgress);
    let err = h
        .post_empty::<RegistrationBegin>("/api/v1/authenticators/begin", &started.token)
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::RecoveryInProgress);

    // Every live session sees it, urgently.
    let events = h.events(&me.token).await;
    let alert = events
        .iter()
        .find(|e| e.kind == EventKind::RecoveryStarted)
        .unwrap();
    assert_eq!(alert.urgency, Urgency::Urgent);
    assert_eq!(alert.detail.ends_at, Some(started.window.ends_at));

    // One ceremony with an enrolled key cancels it, signed in or not.
    let begin: AssertionBegin = h
        .post(
            "/api/v1/recovery/cancel/begin",
            None,
            &RecoveryCancelBeginRequest { username: None },
        )
        .await
        .unwrap();
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    let cancelled: AccountView = h
        .post(
            "/api/v1/recovery/cancel/finish",
            None,
            &SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential: cred,
                client: client("phone"),
                device_secret: None,
                binding: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.state, AccountState::Active);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &started.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );
    h.get::<AccountView>("/api/v1/account", &me.token)
        .await
        .expect("the owner's session lives on");
    h.clock.advance_secs(25 * 3600);
    let owner = h.sign_in(&mut key, None, "laptop").await.unwrap();
    assert_eq!(
        owner.account.state,
        AccountState::Active,
        "nothing happens when the window would have ended"
    );
}

#[tokio::test]
async fn an_origin_that_is_not_exactly_the_configured_one_cannot_cancel_a_recovery() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    redeem(&h, "ada", &rk).await.unwrap();
    let mut near = key.clone();
    near.behaviour.origin_override = Some(format!("{}/", h.origin.origin().ascii_serialization()));
    let begin: AssertionBegin = h
        .post(
            "/api/v1/recovery/cancel/begin",
            None,
            &RecoveryCancelBeginRequest { username: None },
        )
        .await
        .unwrap();
    let cred = near.authenticate(&h.origin, &begin.options).unwrap();
    let err = h
        .post::<AccountView>(
            "/api/v1/recovery/cancel/finish",
            None,
            &SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential: cred,
                client: client("phone"),
                device_secret: None,
                binding: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::AuthenticationFailed);
    let account: AccountView = h.get("/api/v1/account", &me.token).await.unwrap();
    assert_eq!(account.state, AccountState::RecoveryPending);
}

#[tokio::test]
async fn when_the_window_ends_old_sessions_end_and_the_account_must_enrol() {
    let h = Harness::start_with(|c| c.policy.recovery_window_ms = 20 * 60 * 1000).await;
    let mut lost_key = new_key();
    let me = h.create_account(&mut lost_key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let started = redeem(&h, "ada", &rk).await.unwrap();

    // The old session stays active through the window...
    h.clock.advance_secs(14 * 60);
    h.get::<AccountView>("/api/v1/account", &me.token)
        .await
        .unwrap();
    h.clock.advance_secs(6 * 60);
    // The old session is ended by the window's end, on the very next request.
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &me.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );
    let account: AccountView = h.get("/api/v1/account", &started.token).await.unwrap();
    assert_eq!(account.state, AccountState::RecoveryEnrolment);
    // Nothing but enrolment.
    assert_eq!(
        h.post_empty::<EndedSessions>("/api/v1/sessions/end-others", &started.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::RecoveryInProgress
    );

    let mut new_key_ = new_key();
    h.add_key(&started.token, &mut new_key_, "replacement")
        .await
        .unwrap();
    let still: AccountView = h.get("/api/v1/account", &started.token).await.unwrap();
    assert_eq!(
        still.state,
        AccountState::RecoveryEnrolment,
        "a new recovery key is needed too"
    );
    let new_rk = RecoveryKey::generate();
    let _: RecoveryKeyStatus = h
        .send(
            reqwest::Method::PUT,
            "/api/v1/recovery-key",
            Some(&started.token),
            Some(&SetRecoveryKeyRequest {
                public_key: b64(&new_rk.public_key()),
            }),
        )
        .await
        .unwrap();
    let still: AccountView = h.get("/api/v1/account", &started.token).await.unwrap();
    assert_eq!(
        still.state,
        AccountState::RecoveryEnrolment,
        "until it asks to finish"
    );
    let done: SignedIn = h
        .post_empty("/api/v1/recovery/complete", &started.token)
        .await
        .unwrap();
    assert_eq!(done.account.state, AccountState::Active);
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &done.token).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].scope, SessionScope::Full);
    let kinds: Vec<EventKind> = h.events(&done.token).await.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::RecoveryCompleted));
    assert!(h.sign_in(&mut new_key_, None, "new laptop").await.is_ok());
}

#[tokio::test]
async fn a_zero_window_completes_at_once() {
    let h = Harness::start_with(|c| c.policy.recovery_window_ms = 0).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let started = redeem(&h, "ada", &rk).await.unwrap();
    assert_eq!(started.account.state, AccountState::RecoveryEnrolment);
    assert!(
        h.get::<AccountView>("/api/v1/account", &me.token)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn guessing_recovery_keys_stops_at_the_limit_even_for_the_right_key() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    // Counted per network (10 an hour), never per account: see limits.rs for the owner
    // redeeming from elsewhere while a guesser is blocked.
    for _ in 0..10 {
        let err = redeem(&h, "ada", &RecoveryKey::generate())
            .await
            .unwrap_err();
        assert_eq!(err.error.code, ErrorCode::RecoveryFailed);
    }
    let blocked = redeem(&h, "ada", &rk).await.unwrap_err();
    assert_eq!(blocked.error.code, ErrorCode::RateLimited);
    assert_eq!(blocked.status, reqwest::StatusCode::TOO_MANY_REQUESTS);
    let failures = h
        .events(&me.token)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::SignInFailed)
        .count();
    assert_eq!(failures, 10, "each guess is in the owner's log");
    // The key was not used up by being refused.
    h.clock.advance_secs(3601);
    redeem(&h, "ada", &rk).await.unwrap();
}

#[tokio::test]
async fn a_mistyped_key_is_caught_before_it_counts() {
    let rk = RecoveryKey::generate();
    let mut typed = rk.to_display();
    let last = typed.pop().unwrap();
    typed.push(if last == 'A' { 'B' } else { 'A' });
    assert!(RecoveryKey::parse(&typed).is_err());
}

async fn enrol(h: &Harness, token: &str) -> keyward_softkey::SoftKey {
    let mut replacement = new_key();
    h.add_key(token, &mut replacement, "replacement")
        .await
        .unwrap();
    let _: RecoveryKeyStatus = h
        .send(
            reqwest::Method::PUT,
            "/api/v1/recovery-key",
            Some(token),
            Some(&SetRecoveryKeyRequest {
                public_key: b64(&RecoveryKey::generate().public_key()),
            }),
        )
        .await
        .unwrap();
    replacement
}

/// The owner was told to come back when the window ends; they may come back much later (days,
/// not minutes) and still finish, until the documented enrolment deadline (30 days).
#[tokio::test]
async fn a_recovery_can_be_finished_however_late_its_owner_returns() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let started = redeem(&h, "ada", &rk).await.unwrap();
    // Sixteen minutes after the window (the old idle clock's end), and then days later.
    h.clock.advance_secs(24 * 3600 + 16 * 60);
    let account: AccountView = h.get("/api/v1/account", &started.token).await.unwrap();
    assert_eq!(account.state, AccountState::RecoveryEnrolment);
    h.clock.advance_secs(20 * 24 * 3600);
    let mut replacement = enrol(&h, &started.token).await;
    h.clock.advance_secs(9 * 24 * 3600);
    let recovery_session = recovery_session_id(&h, started.account.id);
    let done: SignedIn = h
        .post_empty("/api/v1/recovery/complete", &started.token)
        .await
        .unwrap();
    assert_eq!(done.account.state, AccountState::Active);
    assert_eq!(done.session.scope, SessionScope::Full);
    assert_eq!(
        done.session.id, recovery_session,
        "the same session, with a new token"
    );
    // A new token: the recovery token is refused from now on.
    assert_ne!(done.token, started.token);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &started.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &done.token).await.unwrap();
    assert_eq!(sessions.len(), 1);
    // An ordinary session now: the idle timeout applies.
    h.clock.advance_secs(16 * 60);
    assert!(
        h.get::<AccountView>("/api/v1/account", &done.token)
            .await
            .is_err()
    );
    h.sign_in(&mut replacement, None, "new laptop")
        .await
        .unwrap();
}

/// The recovery session's ID, as the store records the pending recovery.
fn recovery_session_id(h: &Harness, account: uuid::Uuid) -> uuid::Uuid {
    h.store()
        .read(|tx| Ok::<_, keyward_core::CoreError>(tx.account(account)?.unwrap().recovery))
        .unwrap()
        .unwrap()
        .session_id
}

/// The deadline is bounded: 30 days after the window the recovery session is gone.
#[tokio::test]
async fn a_recovery_session_ends_at_its_enrolment_deadline() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let started = redeem(&h, "ada", &rk).await.unwrap();
    h.clock.advance_secs(24 * 3600 + 30 * 24 * 3600 - 1);
    h.get::<AccountView>("/api/v1/account", &started.token)
        .await
        .unwrap();
    h.clock.advance_secs(1);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &started.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::SessionExpired
    );
}

/// Finishing too early changes nothing: not during the window, nor before both are enrolled.
#[tokio::test]
async fn completing_a_recovery_before_enrolment_is_refused_and_changes_nothing() {
    let h = Harness::start_with(|c| c.policy.recovery_window_ms = 60_000).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let started = redeem(&h, "ada", &rk).await.unwrap();
    let before = h.table_counts();
    let early = h
        .post_empty::<SignedIn>("/api/v1/recovery/complete", &started.token)
        .await
        .unwrap_err();
    assert_eq!(early.error.code, ErrorCode::RecoveryInProgress);
    assert_eq!(h.table_counts(), before, "nothing changed");
    h.clock.advance_secs(61);
    let account: AccountView = h.get("/api/v1/account", &started.token).await.unwrap();
    assert_eq!(account.state, AccountState::RecoveryEnrolment);
    let before = h.table_counts();
    let no_keys = h
        .post_empty::<SignedIn>("/api/v1/recovery/complete", &started.token)
        .await
        .unwrap_err();
    assert_eq!(no_keys.error.code, ErrorCode::RecoveryInProgress);
    assert_eq!(h.table_counts(), before, "nothing changed");
    let account: AccountView = h.get("/api/v1/account", &started.token).await.unwrap();
    assert_eq!(account.state, AccountState::RecoveryEnrolment);
    // A full session is not recovering anything. (The owner's old sessions ended with the
    // window, but their key still signs in, and so cancels the recovery.)
    let owner = h.sign_in(&mut key, None, "laptop").await.unwrap();
    assert_eq!(
        h.post_empty::<SignedIn>("/api/v1/recovery/complete", &owner.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Conflict
    );
}

/// During the window a recovery session sees its own window and nothing of the account: a
/// stolen recovery key learns neither the owner's devices, keys nor log, and cannot watch live
/// whether they noticed. After the window it sees what enrolment needs.
#[tokio::test]
async fn a_recovery_session_sees_only_its_window() {
    let h = Harness::start_with(|c| c.policy.recovery_window_ms = 60_000).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let started = redeem(&h, "ada", &rk).await.unwrap();
    let t = &started.token;
    let account: AccountView = h.get("/api/v1/account", t).await.unwrap();
    assert_eq!(account.recovery.unwrap().ends_at, started.window.ends_at);
    let own: SessionView = h.get("/api/v1/session", t).await.unwrap();
    assert_eq!((own.scope, own.current), (SessionScope::Recovery, true));
    let refused = |path: &'static str| {
        let (h, t) = (&h, t.clone());
        async move {
            let e = h.get::<serde_json::Value>(path, &t).await.unwrap_err();
            assert_eq!(
                (e.status, e.error.code),
                (
                    reqwest::StatusCode::FORBIDDEN,
                    ErrorCode::RecoveryInProgress
                ),
                "{path}"
            );
        }
    };
    for path in [
        "/api/v1/sessions",
        "/api/v1/authenticators",
        "/api/v1/events",
        "/api/v1/events/stream",
        "/api/v1/log/checkpoint",
        "/api/v1/readiness",
    ] {
        refused(path).await;
    }
    // After the window: readiness guides enrolment; the lists stay closed until it is done.
    h.clock.advance_secs(61);
    let r: Readiness = h.get("/api/v1/readiness", t).await.unwrap();
    assert_eq!(r.active_authenticators, 1);
    for path in [
        "/api/v1/sessions",
        "/api/v1/authenticators",
        "/api/v1/events",
        "/api/v1/events/stream",
        "/api/v1/log/checkpoint",
    ] {
        refused(path).await;
    }
    enrol(&h, t).await;
    let done: SignedIn = h.post_empty("/api/v1/recovery/complete", t).await.unwrap();
    let events = h.events(&done.token).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::RecoveryCompleted)
    );
}

/// Whoever still holds an enrolled key is the owner, during the window as after it: signing in
/// with one cancels the recovery and ends the recovery session.
#[tokio::test]
async fn a_sign_in_with_an_enrolled_key_during_the_window_cancels_the_recovery() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let started = redeem(&h, "ada", &rk).await.unwrap();
    h.clock.advance_secs(3600);
    let owner = h.sign_in(&mut key, None, "phone").await.unwrap();
    assert_eq!(owner.account.state, AccountState::Active);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &started.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );
    let kinds: Vec<EventKind> = h
        .events(&owner.token)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::RecoveryCancelled));
    h.clock.advance_secs(24 * 3600);
    let later = h.sign_in(&mut key, None, "phone").await.unwrap();
    assert_eq!(
        later.account.state,
        AccountState::Active,
        "nothing happens at the window's end"
    );
    let _ = me;
}
