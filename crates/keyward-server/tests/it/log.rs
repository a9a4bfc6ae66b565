//! The security log is anchored: every commit that appends events signs the new head with the
//! server's log key, keywardd refuses to start on a log that no longer matches its last signed
//! checkpoint, `keywardd verify-log` says so on demand, and each account gets its own signed head.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use keyward_core::security_log::{
    AccountCheckpoint, GENESIS_HASH, account_digest, event_hash, sealed_event_hash,
};
use keyward_core::store::{Engine, Location};
use keyward_core::{ManualClock, Store};
use keyward_proto::*;
use url::Url;
use uuid::Uuid;

use crate::harness::*;

/// A stopped server's database: the path its log key rests beside, and `--db`.
struct Stopped {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    url: String,
}

impl Stopped {
    fn key_path(&self) -> std::path::PathBuf {
        self.db.with_extension("db.log-key")
    }
    fn store(&self) -> Store {
        Store::connect(&Location::parse(&self.url).unwrap()).unwrap()
    }
}

/// A server with one account and a few events in its log, stopped; its database and
/// account.
async fn a_stopped_server_with_a_log() -> (Stopped, Uuid) {
    let mut h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    h.sign_in(&mut key, None, "phone").await.unwrap();
    h.sign_in(&mut key, None, "tablet").await.unwrap();
    h.server
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(1))
        .await;
    let Harness {
        dir, db, db_url, ..
    } = h;
    (
        Stopped {
            _dir: dir,
            db,
            url: db_url,
        },
        me.account.id,
    )
}

/// Starting keywardd again on `db`: the error it refuses with, if it does.
async fn restart_error(db: &Stopped) -> Option<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = Url::parse(&format!("http://localhost:{port}")).unwrap();
    let config = local_config(&db.db, &db.url, origin);
    match keyward_server::start_on(listener, config, Arc::new(ManualClock::new(T0))).await {
        Ok(server) => {
            server.shutdown(Duration::from_secs(1)).await;
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

/// What someone with the database, but not the log key, can do: past the triggers.
fn tamper(
    db: &Stopped,
    f: impl FnMut(&mut keyward_core::store::Tx<'_>) -> keyward_core::Result<()>,
) {
    db.store().write(f).unwrap();
}

fn drop_trigger(tx: &keyward_core::store::Tx<'_>, name: &str) -> keyward_core::Result<()> {
    match tx.engine() {
        Engine::Sqlite => tx.raw_execute(&format!("DROP TRIGGER {name}")),
        Engine::Postgres => tx.raw_execute(&format!("DROP TRIGGER {name} ON events")),
    }
}

/// Edits event 2 and recomputes every hash after it, as the unkeyed chain allows (over the
/// sealed details, which need no key to hash).
fn rewrite_and_reseal(db: &Stopped, account: Uuid) {
    let events = db
        .store()
        .read(|tx| tx.events_after(account, 0, 10_000))
        .unwrap();
    tamper(db, |tx| {
        drop_trigger(tx, "events_no_update")?;
        tx.raw_execute("UPDATE events SET at = at + 1 WHERE seq = 2")?;
        let mut prev = GENESIS_HASH;
        for event in &events {
            let mut event = event.clone();
            if event.id == 2 {
                event.at += 1;
            }
            let sealed: Option<Vec<u8>> = tx.raw_value(
                &format!("SELECT sealed FROM events WHERE seq = {}", event.id),
                &[],
            )?;
            let hash = match &sealed {
                Some(sealed) => sealed_event_hash(&prev, &event, sealed),
                None => event_hash(&prev, &event),
            };
            tx.raw_execute(&format!(
                "UPDATE events SET hash = {} WHERE seq = {}",
                blob_literal(tx, &hash),
                event.id
            ))?;
            prev = hash;
        }
        Ok(())
    });
}

/// A byte string as an SQL literal in the engine's spelling.
fn blob_literal(tx: &keyward_core::store::Tx<'_>, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match tx.engine() {
        Engine::Sqlite => format!("X'{hex}'"),
        Engine::Postgres => format!("'\\x{hex}'::bytea"),
    }
}

pub(crate) fn verify_log(db: &str, key: &Path) -> (i32, String) {
    keywardd_tool([
        "verify-log".as_ref(),
        "--db".as_ref(),
        db.as_ref(),
        "--log-key".as_ref(),
        key.as_os_str(),
    ])
}

#[tokio::test]
async fn an_untouched_log_starts_and_verifies() {
    let (db, _) = a_stopped_server_with_a_log().await;
    assert!(
        db.key_path().is_file(),
        "the log key rests beside the database"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(db.key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
    }
    let (code, text) = verify_log(&db.url, &db.key_path());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact"), "{text}");
    assert_eq!(restart_error(&db).await, None);
}

#[tokio::test]
async fn a_truncated_log_is_refused_at_start_up_and_by_verify_log() {
    let (db, _) = a_stopped_server_with_a_log().await;
    tamper(&db, |tx| {
        drop_trigger(tx, "events_no_delete")?;
        tx.raw_execute("DELETE FROM events WHERE seq > 2")
    });
    // The chain that is left is intact: only the signed checkpoint shows the tail is gone.
    assert_eq!(db.store().verify_chain().unwrap().first_broken, None);
    let refused = restart_error(&db).await.expect("keywardd must not start");
    assert!(refused.contains("removed from its end"), "{refused}");
    let (code, text) = verify_log(&db.url, &db.key_path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("removed from its end"), "{text}");
}

#[tokio::test]
async fn a_recomputed_log_is_refused_at_start_up_and_by_verify_log() {
    let (db, account) = a_stopped_server_with_a_log().await;
    rewrite_and_reseal(&db, account);
    assert_eq!(
        db.store().verify_chain().unwrap().first_broken,
        None,
        "the unkeyed chain alone cannot tell"
    );
    let refused = restart_error(&db).await.expect("keywardd must not start");
    assert!(refused.contains("rewritten"), "{refused}");
    let (code, text) = verify_log(&db.url, &db.key_path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("rewritten"), "{text}");
}

#[tokio::test]
async fn a_lost_log_key_is_not_replaced_by_a_new_one() {
    // Deleting the key file so keywardd makes a fresh one (and signs whatever the log now
    // holds) does not work: the old checkpoints stay, signed by a key that is gone.
    let (db, _) = a_stopped_server_with_a_log().await;
    std::fs::remove_file(db.key_path()).unwrap();
    let refused = restart_error(&db).await.expect("keywardd must not start");
    assert!(
        refused.contains("log key that signed them is missing"),
        "{refused}"
    );
    assert!(!db.key_path().exists());
}

#[tokio::test]
async fn verify_log_refuses_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = verify_log(
        &dir.path().join("nothing.db").display().to_string(),
        &dir.path().join("nothing.db.log-key"),
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        !dir.path().join("nothing.db").exists(),
        "verify-log creates nothing"
    );
}

fn unhex(s: &str) -> [u8; 32] {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The account's head: its own newest event, signed now by the log key over a keyed digest of
/// the chain hash stored with that event; with `seen`, the digest at that event. Only for the
/// account's sessions.
#[tokio::test]
async fn an_account_gets_its_own_signed_head_and_the_digest_of_what_it_saw() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut bob_key = new_key();
    h.create_account(&mut bob_key, "bob").await;
    let head_of = |token: Option<String>, seen: i64| {
        let h = &h;
        async move {
            h.send::<LogHead>(
                reqwest::Method::GET,
                &format!("/api/v1/log/checkpoint?seen={seen}"),
                token.as_deref(),
                None::<&()>,
            )
            .await
        }
    };
    let refused = head_of(None, 1).await.unwrap_err();
    assert_eq!(
        (refused.status, refused.error.code),
        (
            reqwest::StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated
        ),
        "no head for anyone who is not signed in"
    );
    let head = head_of(Some(me.token.clone()), 1).await.unwrap();
    let public: [u8; 32] = keyward_core::secret::unb64(&head.public_key)
        .unwrap()
        .try_into()
        .unwrap();
    let public = VerifyingKey::from_bytes(&public).unwrap();
    let wire = head.checkpoint.unwrap();
    let events = h.events(&me.token).await;
    let newest = events.iter().map(|e| e.id).max().unwrap();
    assert_eq!(
        (wire.account_id, wire.id),
        (me.account.id, newest),
        "ada's own newest event, though bob's came after it"
    );
    let checkpoint = AccountCheckpoint {
        account_id: wire.account_id,
        number: wire.id,
        digest: unhex(&wire.hash),
        at: wire.at,
        signature: keyward_core::secret::unb64(&wire.signature)
            .unwrap()
            .try_into()
            .unwrap(),
    };
    assert!(checkpoint.is_signed_by(&public));
    // Ada's event 1 (her account's creation) is the log's first: the digest at it is keyed over
    // the chain hash the server stored with it, which clients never get.
    let log_key = keyward_server::log_seal::load_key(&h.db.with_extension("db.log-key"))
        .unwrap()
        .unwrap();
    let stored = h
        .state()
        .relying_party()
        .store()
        .read(|tx| tx.event_hash_at(1))
        .unwrap()
        .unwrap();
    let expected = account_digest(&log_key, me.account.id, 1, &stored);
    assert_eq!(
        head.seen_hash,
        Some(keyward_core::security_log::hex(&expected))
    );
    assert_ne!(expected, stored);
    let beyond = head_of(Some(me.token.clone()), 999).await.unwrap();
    assert_eq!(beyond.seen_hash, None);
}
