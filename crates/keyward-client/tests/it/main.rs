//! keyward-client against a real keywardd on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use keyward_client::*;
use keyward_core::ManualClock;
use keyward_proto::*;
use keyward_server::{Config, RunningServer};
use url::Url;

pub(crate) struct Server {
    running: Option<RunningServer>,
    port: u16,
    db: std::path::PathBuf,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keyward.db");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let clock = Arc::new(ManualClock::new(1_795_478_400_000));
        let running = keyward_server::start_on(listener, config(&db, port), clock.clone())
            .await
            .unwrap();
        Server {
            running: Some(running),
            port,
            db,
            clock,
            _dir: dir,
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    async fn stop(&mut self) {
        self.running
            .take()
            .unwrap()
            .shutdown(Duration::from_millis(200))
            .await;
    }

    /// Starts keywardd again on the same port and database after `stop`.
    async fn start_again(&mut self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.running = Some(
            keyward_server::start_on(listener, config(&self.db, self.port), self.clock.clone())
                .await
                .unwrap(),
        );
    }

    pub(crate) fn ceremonies(&self, name: &str) -> Ceremonies {
        let base = Url::parse(&format!("http://localhost:{}", self.port)).unwrap();
        Ceremonies::new(
            Api::new(base.clone()),
            Site::of(&base, "localhost").unwrap(),
            ClientInfo {
                name: name.into(),
                platform: "Linux".into(),
            },
        )
    }
}

fn config(db: &std::path::Path, port: u16) -> Config {
    Config::local(
        db.to_path_buf(),
        Url::parse(&format!("http://localhost:{port}")).unwrap(),
    )
}

#[tokio::test]
async fn a_persisted_virtual_key_walks_the_whole_account_lifecycle() {
    let server = Server::start().await;
    let c = server.ceremonies("Keyward desktop");
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("virtual-key.json");

    let mut key = VirtualKey::open(&key_path).unwrap();
    let me = c
        .create_account(&mut key, "ada", Some("Ada"), Some("Virtual key"))
        .await
        .unwrap();
    drop(key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // The key file carries the credential and its counter across restarts of the app.
    let mut key = VirtualKey::open(&key_path).unwrap();
    let again = c
        .sign_in(&mut key, None, Some(me.device_secret.clone()))
        .await
        .unwrap();
    let mut session = c.api.with_token(&again.token);
    let mut key = VirtualKey::open(&key_path).unwrap();
    c.sign_in(&mut key, Some("ada"), None).await.unwrap();

    // Adding a backup with the ring makes a second, distinct virtual key.
    let mut ring = VirtualKey::open(&key_path).unwrap();
    let added = c
        .add_key(&mut session, &mut ring, Some("Backup"))
        .await
        .unwrap();
    assert_eq!(added.nickname, "Backup");
    assert_eq!(ring.len(), 2);
    assert_eq!(session.authenticators().await.unwrap().len(), 2);

    // Recovery key: made here, shown once, typed back, drilled.
    let (rk, status) = c.new_recovery_key(&mut session, &mut key).await.unwrap();
    assert!(status.present && status.confirmed_at.is_none());
    let typed = rk.to_display().to_lowercase().replace('-', " ");
    let confirmed = c
        .prove_recovery_key(&session, &typed, RecoveryPurpose::Confirm)
        .await
        .unwrap();
    assert!(confirmed.confirmed_at.is_some());
    let mistyped = c
        .prove_recovery_key(&session, "0000-0000", RecoveryPurpose::Drill)
        .await
        .unwrap_err();
    assert_eq!(mistyped.code(), Some(ErrorCode::InvalidInput));
    let readiness = session.readiness().await.unwrap();
    assert_eq!(readiness.level, ReadinessLevel::Protected);

    // A new machine redeems the key; the owner's key cancels it with one touch.
    let elsewhere = server.ceremonies("New laptop");
    let started = elsewhere
        .redeem_recovery_key("ada", &rk.to_display())
        .await
        .unwrap();
    assert_eq!(started.account.state, AccountState::RecoveryPending);
    let mut key = VirtualKey::open(&key_path).unwrap();
    let account = c.cancel_recovery(&mut key).await.unwrap();
    assert_eq!(account.state, AccountState::Active);

    // Errors arrive as the server's codes, or in the authenticator's own words.
    let mut stranger = VirtualKey::ephemeral();
    let err = c
        .sign_in(&mut stranger, Some("nobody"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Authenticator(AuthenticatorError::NotRegistered)
        ),
        "{err}"
    );
    let ended = session.sign_out().await.unwrap();
    assert_eq!(ended.ended.len(), 1);
    assert_eq!(
        session.account().await.unwrap_err().code(),
        Some(ErrorCode::Unauthenticated)
    );
}

#[tokio::test]
async fn the_feed_survives_a_server_restart_and_misses_nothing() {
    let mut server = Server::start().await;
    let c = server.ceremonies("desktop");
    let mut key = VirtualKey::ephemeral();
    let me = c.create_account(&mut key, "ada", None, None).await.unwrap();
    let (mut events, task) = EventFeed::spawn(c.api.with_token(&me.token), me.session.id, None);
    // Give the feed a moment to subscribe, then make an event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.sign_in(&mut key, None, None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.kind, EventKind::SignIn);

    server.restart().await;
    let c = server.ceremonies("phone");
    for _ in 0..3 {
        c.sign_in(&mut key, None, None).await.unwrap();
    }
    let mut ids = vec![first.id];
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, EventKind::SignIn);
        assert_eq!(e.device_name.as_deref(), Some("phone"));
        ids.push(e.id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {ids:?}"
    );

    // Ending this session from elsewhere ends the feed, after delivering the news.
    let other = c.sign_in(&mut key, None, None).await.unwrap();
    let other_api = c.api.with_token(&other.token);
    let _ = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    other_api.end_session(me.session.id).await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.kind, EventKind::SessionEnded);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap(),
        FeedEnd::SessionEnded
    );
}
mod log_watch;
mod nfc;
mod phishing;
mod security_key;
mod windows_key;

/// After a step-up the server refuses the token it was made with; `with_step_up` leaves the
/// caller holding the session's new one, which carries the fresh touch.
#[tokio::test]
async fn with_step_up_leaves_the_caller_with_a_working_token() {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let mut key = VirtualKey::ephemeral();
    let me = c.create_account(&mut key, "ada", None, None).await.unwrap();
    let phone = c.sign_in(&mut key, None, None).await.unwrap();
    server.clock.advance_secs(301); // the sign-in's touch is too old for a sensitive change
    let mut session = c.api.with_token(&me.token);
    let before = session.clone();

    let ended = c
        .with_step_up(&mut session, &mut key, |api| async move {
            api.end_other_sessions().await
        })
        .await
        .unwrap();
    assert_eq!(ended.ended, vec![phone.session.id]);
    assert_ne!(session.token(), before.token(), "a new token");
    assert_eq!(session.current_session().await.unwrap().id, me.session.id);
    assert_eq!(
        before.current_session().await.unwrap_err().code(),
        Some(ErrorCode::Unauthenticated),
        "the old token is refused"
    );

    // The fresh touch is the new token's: the next sensitive change asks no key (a stranger's
    // key would fail if it were asked).
    let mut stranger = VirtualKey::ephemeral();
    let again = c
        .with_step_up(&mut session, &mut stranger, |api| async move {
            api.end_other_sessions().await
        })
        .await
        .unwrap();
    assert!(again.ended.is_empty());

    // And a plain step-up adopts the new token the same way.
    let held = session.clone();
    let view = c.step_up(&mut session, &mut key).await.unwrap();
    assert_eq!(view.id, me.session.id);
    assert_ne!(session.token(), held.token());
    assert_eq!(session.account().await.unwrap().username, "ada");
    assert!(held.account().await.is_err());
}

/// The server ends a stream when a step-up replaces its token; a feed that follows the token
/// reconnects with the new one and misses nothing, one fixed to the old token stops.
#[tokio::test]
async fn a_feed_that_follows_the_token_survives_a_step_up() {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let mut key = VirtualKey::ephemeral();
    let me = c.create_account(&mut key, "ada", None, None).await.unwrap();
    let mut session = c.api.with_token(&me.token);
    let (tokens, followed) = tokio::sync::watch::channel(session.clone());
    let (mut events, task) = EventFeed::follow(followed, me.session.id, None);
    let (_fixed_events, fixed) = EventFeed::spawn(session.clone(), me.session.id, None);
    tokio::time::sleep(Duration::from_millis(200)).await;

    c.step_up(&mut session, &mut key).await.unwrap();
    tokens.send(session.clone()).unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), fixed)
            .await
            .unwrap()
            .unwrap(),
        FeedEnd::Unauthenticated,
        "the old token's stream was ended"
    );
    c.sign_in(&mut key, None, None).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.kind, EventKind::SignIn);
    assert!(!task.is_finished());
}

/// A session bound to a key the client generated: every request (and the event stream) is
/// proven with it, fetching the server's nonce on the first refusal; a step-up keeps the key.
/// The same token without the key, or with another key, is refused.
#[tokio::test]
async fn a_bound_session_proves_every_request_and_its_token_alone_is_refused() {
    let server = Server::start().await;
    let c = server.ceremonies("cli");
    let mut key = VirtualKey::ephemeral();
    let session_key = keyward_core::proof_key::ProofKey::generate();
    let bound = c.binding_sessions_to(session_key.clone());
    let me = bound
        .create_account(&mut key, "ada", None, None)
        .await
        .unwrap();
    assert_eq!(me.session.binding, SessionBinding::Software);
    let mut session =
        c.api
            .with_bound_token_at(&me.token, session_key.clone(), server.clock.clone());
    let sessions = session.sessions().await.unwrap();
    assert_eq!(sessions[0].binding, SessionBinding::Software);

    c.step_up(&mut session, &mut key).await.unwrap();
    assert_eq!(
        session.proof_key().unwrap().thumbprint(),
        session_key.thumbprint()
    );
    session.account().await.unwrap();
    let (mut events, _task) = EventFeed::spawn(session.clone(), me.session.id, None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.sign_in(&mut key, None, None).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.kind, EventKind::SignIn, "the bound stream delivers");

    let token = session.token().unwrap().to_string();
    let alone = c.api.with_token(&token).account().await.unwrap_err();
    assert_eq!(alone.code(), Some(ErrorCode::ProofRequired));
    let thief = c.api.with_bound_token_at(
        &token,
        keyward_core::proof_key::ProofKey::generate(),
        server.clock.clone(),
    );
    assert_eq!(
        thief.account().await.unwrap_err().code(),
        Some(ErrorCode::ProofInvalid)
    );
    session.account().await.unwrap();
}
