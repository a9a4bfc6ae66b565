//! The relying party's rules without HTTP: a real SQLite file, the manual clock, software keys
//! standing in for the finger on the key. The HTTP suite (`tests/it`) keeps the wire contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keyward_core::recovery_key::RecoveryKey;
use keyward_core::secret::{b64, unb64};
use keyward_core::{ManualClock, Store};
use keyward_proto::*;
use keyward_softkey::SoftKey;
use url::Url;

use super::RelyingParty;
use super::authenticators::removal_refusal;
use super::sessions::Authed;
use crate::config::Config;
use crate::error::{Result, ServerError};

const ADDRESS: &str = "192.0.2.7";

struct Fixture {
    rp: RelyingParty,
    clock: Arc<ManualClock>,
    origin: Url,
    _dir: tempfile::TempDir,
}

fn client(name: &str) -> ClientInfo {
    ClientInfo {
        name: name.into(),
        platform: "test".into(),
    }
}

fn new_key() -> SoftKey {
    SoftKey::new(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY)
}

fn fixture_with(tweak: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let origin = Url::parse("http://localhost:8080").unwrap();
    let db = dir.path().join("keyward.db");
    let mut config = Config::local(
        keyward_core::store::testing::location(&db).unwrap(),
        origin.clone(),
    );
    config.log_key = Some(dir.path().join("keyward.db.log-key"));
    tweak(&mut config);
    let clock = Arc::new(ManualClock::new(1_760_000_000_000));
    let store = Store::connect(&config.db).unwrap();
    let rp = RelyingParty::new(&config, store, clock.clone()).unwrap();
    Fixture {
        rp,
        clock,
        origin,
        _dir: dir,
    }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

impl Fixture {
    fn create_account(&self, key: &mut SoftKey, username: &str) -> SignedIn {
        let begin = self
            .rp
            .registration_begin(
                RegistrationBeginRequest {
                    username: username.into(),
                    display_name: None,
                },
                ADDRESS,
            )
            .unwrap();
        let credential = key.register(&self.origin, &begin.options).unwrap();
        self.rp
            .registration_finish(
                RegistrationFinishRequest {
                    ceremony_id: begin.ceremony_id,
                    credential,
                    nickname: Some(format!("{username}'s first key")),
                    client: client("first laptop"),
                    device_secret: None,
                    binding: None,
                },
                ADDRESS,
                "",
            )
            .unwrap()
    }

    fn sign_in(&self, key: &mut SoftKey, name: &str) -> Result<SignedIn> {
        let begin = self
            .rp
            .sign_in_begin(SignInBeginRequest { username: None }, ADDRESS)
            .unwrap();
        let credential = key.authenticate(&self.origin, &begin.options).unwrap();
        self.rp.sign_in_finish(
            SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                client: client(name),
                device_secret: None,
                binding: None,
            },
            ADDRESS,
            "",
        )
    }

    fn authed(&self, token: &str) -> Authed {
        self.rp.authenticate(token, None).unwrap()
    }

    fn events(&self, token: &str) -> Vec<SecurityEvent> {
        self.rp
            .events_page(&self.authed(token), None, Some(200))
            .unwrap()
            .events
    }

    /// Sets a recovery key for the signed-in account and confirms it.
    fn set_recovery_key(&self, token: &str) -> RecoveryKey {
        let rk = RecoveryKey::generate();
        let authed = self.authed(token);
        self.rp
            .set_recovery_key(
                &authed,
                SetRecoveryKeyRequest {
                    public_key: b64(&rk.public_key()),
                },
            )
            .unwrap();
        rk
    }

    fn redeem(&self, username: &str, rk: &RecoveryKey) -> Result<RecoveryStarted> {
        let c = self.rp.redeem_begin(
            RedeemBeginRequest {
                username: username.into(),
            },
            ADDRESS,
        )?;
        let signature = rk.sign(
            RecoveryPurpose::Redeem,
            "localhost",
            &unb64(&c.challenge).unwrap(),
        );
        self.rp.redeem_finish(
            RedeemFinishRequest {
                challenge_id: c.challenge_id,
                signature: b64(&signature),
                client: client("new laptop"),
                binding: None,
            },
            ADDRESS,
            "",
        )
    }
}

#[test]
fn the_last_active_key_cannot_be_removed_and_nothing_changes() {
    let f = fixture();
    let mut key = new_key();
    let me = f.create_account(&mut key, "ada");
    let authed = f.authed(&me.token);
    let keys = f.rp.list_authenticators(&authed).unwrap();
    let impact = f.rp.removal_impact(&authed, keys[0].id).unwrap();
    assert_eq!(
        impact.refused.map(|e| e.code),
        Some(ErrorCode::LastAuthenticator)
    );
    let err = f.rp.remove_authenticator(&authed, keys[0].id).unwrap_err();
    assert!(matches!(err, ServerError::LastAuthenticator), "{err:?}");
    assert_eq!(f.rp.list_authenticators(&authed).unwrap().len(), 1);
    assert!(
        f.rp.list_sessions(&authed)
            .unwrap()
            .iter()
            .any(|s| s.current),
        "the session the key opened lives on"
    );
}

#[test]
fn removal_is_refused_only_for_the_last_active_key() {
    let f = fixture();
    let mut key = new_key();
    let me = f.create_account(&mut key, "ada");
    let authed = f.authed(&me.token);
    let rows =
        f.rp.store
            .read::<_, ServerError>(|tx| Ok(tx.authenticators(authed.account.id)?))
            .unwrap();
    let only = rows[0].clone();
    assert!(removal_refusal(&rows, &only).is_some());
    let lost = keyward_core::store::Authenticator {
        status: AuthenticatorStatus::Lost,
        ..only.clone()
    };
    assert!(
        removal_refusal(std::slice::from_ref(&lost), &lost).is_none(),
        "a lost key is no access to keep"
    );
    let spare = keyward_core::store::Authenticator {
        id: uuid::Uuid::new_v4(),
        ..only.clone()
    };
    assert!(removal_refusal(&[only.clone(), spare], &only).is_none());
}

#[test]
fn a_counter_regression_is_refused_and_warns_of_a_cloned_key() {
    let f = fixture();
    let mut key = new_key();
    let me = f.create_account(&mut key, "ada");
    let mut clone = key.clone();
    f.sign_in(&mut key, "laptop").unwrap();
    let err = f.sign_in(&mut clone, "clone").unwrap_err();
    assert!(matches!(err, ServerError::AuthenticationFailed), "{err:?}");
    let events = f.events(&me.token);
    assert!(
        events.iter().any(|e| e.kind == EventKind::ClonedKeyWarning),
        "cloned-key warning"
    );
    let failed = events
        .iter()
        .find(|e| e.kind == EventKind::SignInFailed)
        .expect("the refusal is in the log");
    assert_eq!(failed.detail.reason.as_deref(), Some("counter regression"));
    let stored = f.rp.list_authenticators(&f.authed(&me.token)).unwrap();
    assert_eq!(
        stored[0].sign_count, key.credentials[0].sign_count,
        "the stored counter never moves back"
    );
}

#[test]
fn a_recovery_window_settles_on_the_first_touch_after_it_ends() {
    let f = fixture_with(|c| c.policy.recovery_window_ms = 20 * 60 * 1000);
    let mut key = new_key();
    let me = f.create_account(&mut key, "ada");
    let rk = f.set_recovery_key(&me.token);
    let started = f.redeem("ada", &rk).unwrap();
    assert_eq!(started.account.state, AccountState::RecoveryPending);

    f.clock.advance_secs(14 * 60);
    f.authed(&me.token);
    f.clock.advance_secs(6 * 60);
    // Nothing ran at the window's end; the next touch settles it.
    let err = f.rp.authenticate(&me.token, None).unwrap_err();
    assert!(matches!(err, ServerError::Unauthenticated), "{err:?}");
    let recovering = f.authed(&started.token);
    assert_eq!(recovering.account.state, AccountState::RecoveryEnrolment);
    // A recovery session may not read the log (it sees only its window): read the store.
    assert!(matches!(
        f.rp.events_page(&recovering, None, None),
        Err(ServerError::RecoveryInProgress(_))
    ));
    let events =
        f.rp.store()
            .read(|tx| tx.events_page(started.account.id, None, 200))
            .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::RecoveryCompleted)
    );
    assert!(events.iter().any(|e| {
        e.kind == EventKind::SessionEnded
            && e.detail.reason.as_deref() == Some("recovery")
            && e.detail.ended_session_id == Some(me.session.id)
    }));
    // The spent key cannot start another recovery.
    assert!(f.redeem("ada", &rk).is_err());
}

#[test]
fn a_key_sign_in_during_enrolment_cancels_the_recovery() {
    let f = fixture_with(|c| c.policy.recovery_window_ms = 60_000);
    let mut key = new_key();
    let me = f.create_account(&mut key, "ada");
    let rk = f.set_recovery_key(&me.token);
    let started = f.redeem("ada", &rk).unwrap();
    f.clock.advance_secs(61);
    let owner = f.sign_in(&mut key, "laptop").unwrap();
    assert_eq!(owner.account.state, AccountState::Active);
    let err = f.rp.authenticate(&started.token, None).unwrap_err();
    assert!(matches!(err, ServerError::Unauthenticated), "{err:?}");
}

/// The relying party holds the rules; HTTP is the `http` module's business. Like the
/// no-password test of the API, this keeps a boundary that review alone would let slip.
/// Two step-ups made with one token (both authenticated before either finished): the first
/// replaces the token, the second was made with a token already refused and is refused too,
/// so the token the first one handed out stays the session's.
#[test]
fn of_two_step_ups_raced_with_one_token_only_the_first_replaces_it() {
    let f = fixture();
    let mut key = new_key();
    let me = f.create_account(&mut key, "ada");
    let authed = f.authed(&me.token);
    let mut finish = |authed: &Authed| {
        let begin = f.rp.step_up_begin(authed).unwrap();
        let credential = key.authenticate(&f.origin, &begin.options).unwrap();
        f.rp.step_up_finish(
            authed,
            AssertionFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
            },
            ADDRESS,
        )
    };
    let first = finish(&authed).unwrap();
    assert_eq!(first.session.id, me.session.id);
    let second = finish(&authed).unwrap_err();
    assert!(matches!(second, ServerError::Unauthenticated), "{second:?}");
    assert!(matches!(
        f.rp.authenticate(&me.token, None).unwrap_err(),
        ServerError::Unauthenticated
    ));
    assert_eq!(f.authed(&first.token).session.id, me.session.id);
}

#[test]
fn no_http_in_the_relying_party() {
    // The OpenID provider's rules (`src/oidc`) are held to the same.
    for (folder, at_least) in [("src/relying_party", 10), ("src/oidc", 7)] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let forbidden = [
            "axum",
            "hyper",
            "tower",
            "reqwest",
            "crate::http",
            "StatusCode",
            "HeaderMap",
        ];
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "tests.rs") {
                continue; // this file names them to forbid them
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for word in forbidden {
                assert!(
                    !text.contains(word),
                    "{} mentions {word}: the rules must not know HTTP",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(
            checked >= at_least,
            "only {checked} files read from {}",
            dir.display()
        );
    }
}
