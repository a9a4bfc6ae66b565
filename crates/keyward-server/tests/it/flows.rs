//! The happy paths a person walks, through the HTTP API.

use keyward_proto::*;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::{AuthenticatorBackendHashedClientData, WebauthnAuthenticator};

use crate::harness::*;

#[tokio::test]
async fn create_account_then_sign_in_usernameless_and_username_first() {
    let h = Harness::start().await;
    let mut key = new_key();
    let created = h.create_account(&mut key, "Ada").await;
    assert_eq!(created.account.username, "ada", "usernames are normalised");
    assert_eq!(created.account.state, AccountState::Active);
    assert_eq!(created.token.len(), 43, "256-bit token, base64url");

    let usernameless = h.sign_in(&mut key, None, "phone").await.unwrap();
    assert_eq!(usernameless.account.id, created.account.id);
    let username_first = h.sign_in(&mut key, Some("ada"), "tablet").await.unwrap();
    assert_eq!(username_first.account.id, created.account.id);
    assert_ne!(
        usernameless.token, username_first.token,
        "a new token at every sign-in"
    );

    let account: AccountView = h
        .get("/api/v1/account", &username_first.token)
        .await
        .unwrap();
    assert_eq!(account.username, "ada");
    let keys: Vec<AuthenticatorView> = h
        .get("/api/v1/authenticators", &account_token(&username_first))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].sign_count, 2, "counter recorded after each sign-in");
    assert_eq!(
        keys[0].model.as_deref(),
        Some("Keyward virtual key (not secure)"),
        "AAGUID read from authData"
    );
    assert!(!keys[0].backup_eligible);
    assert_eq!(keys[0].transports, vec!["usb", "nfc"]);
    assert!(keys[0].last_used_at.is_some());
}

fn account_token(s: &SignedIn) -> String {
    s.token.clone()
}

/// clientDataJSON as a browser on `origin` writes it, and its hash.
fn browser_client_data(kind: &str, challenge: &[u8], origin: &url::Url) -> (Vec<u8>, Vec<u8>) {
    use sha2::Digest;
    let json = format!(
        r#"{{"type":"{kind}","challenge":"{}","origin":"{}","crossOrigin":false}}"#,
        keyward_core::secret::b64(challenge),
        origin.origin().ascii_serialization()
    )
    .into_bytes();
    let hash = sha2::Sha256::digest(&json).to_vec();
    (json, hash)
}

/// An authenticator we did not write (webauthn-authenticator-rs's SoftPasskey), driven the way
/// Keyward's native clients drive security keys: the client data is the client's, the
/// authenticator signs its hash.
#[tokio::test]
async fn webauthn_authenticator_rs_soft_passkey_registers_and_signs_in() {
    let h = Harness::start().await;
    let mut passkey = SoftPasskey::new(true);
    let begin: RegistrationBegin = h
        .post(
            "/api/v1/registration/begin",
            None,
            &RegistrationBeginRequest {
                username: "grace".into(),
                display_name: Some("Grace".into()),
            },
        )
        .await
        .unwrap();
    let options = begin.options.public_key;
    let (json, hash) = browser_client_data("webauthn.create", &options.challenge, &h.origin);
    let mut credential = passkey.perform_register(hash, options, 60_000).unwrap();
    credential.response.client_data_json = json;
    let signed: SignedIn = h
        .post(
            "/api/v1/registration/finish",
            None,
            &RegistrationFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                nickname: None,
                client: client("laptop"),
                device_secret: None,
                binding: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(signed.account.display_name, "Grace");
    let begin = h.sign_in_begin(Some("grace")).await;
    let options = begin.options.public_key.clone();
    let (json, hash) = browser_client_data("webauthn.get", &options.challenge, &h.origin);
    let mut credential = passkey.perform_auth(hash, options, 60_000).unwrap();
    credential.response.client_data_json = json;
    let again = h
        .sign_in_finish(
            &begin,
            credential,
            "laptop",
            Some(signed.device_secret.clone()),
        )
        .await
        .unwrap();
    assert_eq!(again.account.id, signed.account.id);

    // The library's own client data writes the origin as a URL, with a trailing slash
    // (`http://localhost:PORT/`), which no browser writes: refused, as WebAuthn asks.
    let begin = h.sign_in_begin(Some("grace")).await;
    let credential = passkey
        .do_authentication(h.origin.clone(), begin.options.clone())
        .unwrap();
    let origin = serde_json::from_slice::<serde_json::Value>(&credential.response.client_data_json)
        .unwrap()["origin"]
        .clone();
    assert_eq!(
        origin,
        format!("{}/", h.origin.origin().ascii_serialization())
    );
    let err = h
        .sign_in_finish(&begin, credential, "laptop", None)
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::AuthenticationFailed);
}

#[tokio::test]
async fn a_known_device_signs_in_quietly_and_a_new_one_urgently() {
    let h = Harness::start().await;
    let mut key = new_key();
    let first = h.create_account(&mut key, "ada").await;
    let begin = h.sign_in_begin(None).await;
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    let known = h
        .sign_in_finish(
            &begin,
            cred,
            "first laptop",
            Some(first.device_secret.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        known.session.device.id, first.session.device.id,
        "same device record"
    );
    let stranger = h.sign_in(&mut key, None, "unknown PC").await.unwrap();
    assert_ne!(stranger.session.device.id, first.session.device.id);
    let events = h.events(&stranger.token).await;
    let sign_ins: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::SignIn)
        .collect();
    assert_eq!(sign_ins.len(), 2);
    assert_eq!(
        sign_ins[0].urgency,
        Urgency::Urgent,
        "newest first: the unknown PC"
    );
    assert_eq!(sign_ins[0].device_name.as_deref(), Some("unknown PC"));
    assert_eq!(sign_ins[1].urgency, Urgency::Quiet);
}

#[tokio::test]
async fn adding_renaming_and_removing_keys_with_step_up() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut backup = new_key();

    // Sensitive operations need a touch no older than five minutes.
    h.clock.advance_secs(301);
    let refused = h
        .add_key(&me.token, &mut backup, "backup")
        .await
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::StepUpRequired);
    let token = h.step_up(&me.token, &mut key).await;
    let added = h
        .add_key(&token, &mut backup, "Backup in the safe")
        .await
        .unwrap();
    assert_eq!(added.nickname, "Backup in the safe");

    // Registered keys are excluded from further registrations.
    let begin: RegistrationBegin = h
        .post_empty("/api/v1/authenticators/begin", &token)
        .await
        .unwrap();
    assert_eq!(
        begin
            .options
            .public_key
            .exclude_credentials
            .as_ref()
            .map(Vec::len),
        Some(2)
    );
    assert!(matches!(
        backup.register(&h.origin, &begin.options),
        Err(keyward_softkey::SoftKeyError::Excluded)
    ));

    let renamed: AuthenticatorView = h
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/authenticators/{}", added.id),
            Some(&token),
            Some(&RenameAuthenticatorRequest {
                nickname: "  Safe key  ".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(renamed.nickname, "Safe key");

    // A session opened by the backup key; removing the key ends it.
    let via_backup = h
        .sign_in(&mut backup, Some("ada"), "borrowed PC")
        .await
        .unwrap();
    let impact: RemovalImpact = h
        .get(
            &format!("/api/v1/authenticators/{}/removal-impact", added.id),
            &token,
        )
        .await
        .unwrap();
    assert_eq!(
        impact
            .sessions_ending
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![via_backup.session.id]
    );
    assert_eq!(impact.readiness_after.independent_authenticators, 1);
    assert!(impact.refused.is_none());
    let ended: EndedSessions = h
        .delete(&format!("/api/v1/authenticators/{}", added.id), &token)
        .await
        .unwrap();
    assert_eq!(ended.ended, vec![via_backup.session.id]);
    let gone = h
        .get::<AccountView>("/api/v1/account", &via_backup.token)
        .await
        .unwrap_err();
    assert_eq!(gone.error.code, ErrorCode::Unauthenticated);

    // Never the last key.
    let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &token).await.unwrap();
    let impact: RemovalImpact = h
        .get(
            &format!("/api/v1/authenticators/{}/removal-impact", keys[0].id),
            &token,
        )
        .await
        .unwrap();
    assert_eq!(impact.refused.unwrap().code, ErrorCode::LastAuthenticator);
    let last = h
        .delete::<EndedSessions>(&format!("/api/v1/authenticators/{}", keys[0].id), &token)
        .await
        .unwrap_err();
    assert_eq!(last.error.code, ErrorCode::LastAuthenticator);
    assert_eq!(last.status, reqwest::StatusCode::CONFLICT);
}

#[tokio::test]
async fn report_lost_disables_the_key_and_ends_its_sessions_in_one_step() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut spare = new_key();
    let spare_view = h.add_key(&me.token, &mut spare, "spare").await.unwrap();
    let thief = h.sign_in(&mut spare, None, "thief laptop").await.unwrap();
    let ended: EndedSessions = h
        .post_empty(
            &format!("/api/v1/authenticators/{}/report-lost", spare_view.id),
            &me.token,
        )
        .await
        .unwrap();
    assert_eq!(ended.ended, vec![thief.session.id]);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &thief.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );
    let refused = h
        .sign_in(&mut spare, None, "thief laptop")
        .await
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::AuthenticationFailed);
    let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &me.token).await.unwrap();
    assert_eq!(
        keys.iter().find(|k| k.id == spare_view.id).unwrap().status,
        AuthenticatorStatus::Lost
    );
    let events = h.events(&me.token).await;
    assert!(events.iter().any(|e| e.kind == EventKind::AuthenticatorReportedLost && e.urgency == Urgency::Urgent));
}

#[tokio::test]
async fn sessions_are_listed_and_ended_one_or_all_others() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let phone = h.sign_in(&mut key, None, "phone").await.unwrap();
    let tablet = h.sign_in(&mut key, None, "tablet").await.unwrap();

    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &me.token).await.unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(
        sessions
            .iter()
            .filter(|s| s.current)
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![me.session.id]
    );
    let phone_view = sessions.iter().find(|s| s.id == phone.session.id).unwrap();
    assert_eq!(phone_view.device.name, "phone");
    assert_eq!(phone_view.address, "127.0.0.1");

    // Ending another session needs a fresh touch.
    h.clock.advance_secs(400);
    let _: SessionView = h
        .get::<AccountView>("/api/v1/account", &me.token)
        .await
        .map(|_| me.session.clone())
        .unwrap();
    let refused = h
        .delete::<EndedSessions>(&format!("/api/v1/sessions/{}", phone.session.id), &me.token)
        .await
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::StepUpRequired);
    let token = h.step_up(&me.token, &mut key).await;
    let ended: EndedSessions = h
        .delete(&format!("/api/v1/sessions/{}", phone.session.id), &token)
        .await
        .unwrap();
    assert_eq!(ended.ended, vec![phone.session.id]);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &phone.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );

    let _ = h
        .get::<AccountView>("/api/v1/account", &tablet.token)
        .await
        .unwrap();
    let ended: EndedSessions = h
        .post_empty("/api/v1/sessions/end-others", &token)
        .await
        .unwrap();
    assert_eq!(ended.ended, vec![tablet.session.id]);
    assert!(
        h.get::<AccountView>("/api/v1/account", &tablet.token)
            .await
            .is_err()
    );
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &token).await.unwrap();
    assert_eq!(sessions.len(), 1);

    // Signing out ends the current session; the token is refused on the very next request.
    let _: EndedSessions = h.post_empty("/api/v1/sign-out", &token).await.unwrap();
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;

    // Activity within 15 minutes keeps a session alive...
    for _ in 0..3 {
        h.clock.advance_secs(14 * 60);
        h.get::<AccountView>("/api/v1/account", &me.token)
            .await
            .unwrap();
    }
    // ...15 idle minutes end it.
    h.clock.advance_secs(15 * 60);
    let idle = h
        .get::<AccountView>("/api/v1/account", &me.token)
        .await
        .unwrap_err();
    assert_eq!(idle.error.code, ErrorCode::SessionExpired);
    assert_eq!(idle.status, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &me.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::Unauthenticated
    );

    // Constant activity cannot stretch a session past 12 hours.
    let s = h.sign_in(&mut key, None, "laptop").await.unwrap();
    for _ in 0..(12 * 60 / 10 - 1) {
        h.clock.advance_secs(10 * 60);
        h.get::<AccountView>("/api/v1/account", &s.token)
            .await
            .unwrap();
    }
    h.clock.advance_secs(10 * 60);
    assert_eq!(
        h.get::<AccountView>("/api/v1/account", &s.token)
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::SessionExpired
    );
}

#[tokio::test]
async fn readiness_names_the_single_point_of_failure_and_the_next_step() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let r: Readiness = h.get("/api/v1/readiness", &me.token).await.unwrap();
    assert_eq!(r.level, ReadinessLevel::AtRisk);
    assert!(
        r.single_point_of_failure
            .unwrap()
            .contains("ada's first key")
    );
    assert_eq!(r.next_step.unwrap().code, "add_backup_key");

    let mut backup = new_key();
    h.add_key(&me.token, &mut backup, "backup").await.unwrap();
    let r: Readiness = h.get("/api/v1/readiness", &me.token).await.unwrap();
    assert_eq!(r.level, ReadinessLevel::Partial);
    assert!(r.has_backup);
    assert_eq!(r.next_step.unwrap().code, "set_up_recovery_key");
}

#[tokio::test]
async fn a_policy_can_refuse_synced_passkeys() {
    let h = Harness::start_with(|c| c.policy.require_device_bound = true).await;
    let mut synced = new_key();
    synced.behaviour.backup_eligible = true;
    let refused = h.try_create_account(&mut synced, "ada").await.unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::PolicyRefused);
    let mut hardware = new_key();
    h.create_account(&mut hardware, "ada").await;
}

#[tokio::test]
async fn attested_mode_admits_only_the_configured_models() {
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

    // A key without attestation (or a virtual key) is refused.
    let mut plain = new_key();
    let refused = h.try_create_account(&mut plain, "ada").await.unwrap_err();
    assert_eq!(
        refused.error.code,
        ErrorCode::PolicyRefused,
        "{}",
        refused.error.message
    );

    // The same model but from another vendor's CA is refused.
    let (_, forged_identity) = vendor(model);
    let mut forged = keyward_softkey::SoftKey::new(model);
    forged.attestation = Some(forged_identity);
    assert_eq!(
        h.try_create_account(&mut forged, "ada")
            .await
            .unwrap_err()
            .error
            .code,
        ErrorCode::PolicyRefused
    );

    // A genuine one registers and signs in.
    let mut genuine = keyward_softkey::SoftKey::new(model);
    genuine.attestation = Some(identity);
    let me = h.create_account(&mut genuine, "ada").await;
    assert_eq!(me.account.username, "ada");
    h.sign_in(&mut genuine, None, "laptop").await.unwrap();
}

#[tokio::test]
async fn an_operator_place_database_names_places_offline() {
    let places = tempfile::tempdir().unwrap();
    let db = places.path().join("places.csv");
    std::fs::write(&db, "127.0.0.0/8,This machine\n").unwrap();
    let h = Harness::start_with(|c| c.place_db = Some(db.clone())).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    assert_eq!(me.session.device.place.as_deref(), Some("This machine"));
    let s = h.sign_in(&mut key, None, "laptop").await.unwrap();
    let e = h
        .events(&s.token)
        .await
        .into_iter()
        .find(|e| e.kind == EventKind::SignIn)
        .unwrap();
    assert_eq!(e.detail.place.as_deref(), Some("This machine"));
    // Without a database there is no place at all.
    let plain = Harness::start().await;
    let me = plain.create_account(&mut new_key(), "ada").await;
    assert_eq!(me.session.device.place, None);
}

#[tokio::test]
async fn activity_is_recorded_at_most_every_30_seconds_and_never_stretches_the_idle_timeout() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let last_seen = |sessions: Vec<SessionView>| sessions[0].last_seen_at;
    let first = last_seen(h.get("/api/v1/sessions", &me.token).await.unwrap());

    // A check 10 s later is answered without a write: nothing changes.
    h.clock.advance_secs(10);
    let same = last_seen(h.get("/api/v1/sessions", &me.token).await.unwrap());
    assert_eq!(same, first);

    // After 30 s the activity is recorded.
    h.clock.advance_secs(20);
    let later = last_seen(h.get("/api/v1/sessions", &me.token).await.unwrap());
    assert_eq!(later, first + 30_000);

    // The idle timeout counts from the recorded activity: 15 min after it, the session is
    // over, even though a request came 10 s after that record.
    h.clock.advance_secs(10);
    h.get::<AccountView>("/api/v1/account", &me.token)
        .await
        .unwrap();
    h.clock.advance_secs(15 * 60 - 10);
    let err = h
        .get::<AccountView>("/api/v1/account", &me.token)
        .await
        .unwrap_err();
    assert_eq!(err.error.code, ErrorCode::SessionExpired);
}
