//! The client's watch over the log (`log_watch::check_head`) against a real keywardd whose
//! database is then tampered with by someone holding the log key, so keywardd's own start-up
//! check passes: the account's client still notices a log cut short or rewritten under the
//! head it remembers, other accounts' events included.

use keyward_client::log_watch::{LogAlarm, SeenHead, check_head};
use keyward_client::*;
use keyward_core::Store;
use keyward_core::security_log::{ChainEntry, GENESIS_HASH};
use keyward_proto::*;
use uuid::Uuid;

use crate::Server;

/// Ada and bob with accounts, bob's events between ada's, and ada's client remembering her
/// signed head; ada's signed-in API.
async fn ada_watching() -> (Server, Api, Uuid, SeenHead) {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let mut ada_key = VirtualKey::ephemeral();
    let ada = c
        .create_account(&mut ada_key, "ada", None, None)
        .await
        .unwrap();
    let mut bob_key = VirtualKey::ephemeral();
    c.create_account(&mut bob_key, "bob", None, None)
        .await
        .unwrap();
    let api = c.api.with_token(&ada.token);
    let first = check_head(ada.account.id, None, &api.log_head(None).await.unwrap())
        .unwrap()
        .unwrap();
    // The log grows (ada's sign-in, after bob's events): the head moves on, no alarm.
    c.sign_in(&mut ada_key, Some("ada"), None).await.unwrap();
    let head = api.log_head(Some(first.id)).await.unwrap();
    let seen = check_head(ada.account.id, Some(&first), &head)
        .unwrap()
        .unwrap();
    assert!(seen.id > first.id);
    (server, api, ada.account.id, seen)
}

/// What the operator does with the database and the log key while keywardd is stopped:
/// `sql` past the triggers, then the log's checkpoints replaced by one of its new head, so
/// keywardd starts on it.
fn tamper_and_re_sign(db: &std::path::Path, sql: &str, reseal: bool) {
    let key = keyward_server::log_seal::load_key(&keyward_server::log_seal::default_key_path(db))
        .unwrap()
        .unwrap();
    let store = Store::open(db).unwrap();
    store
        .write(|tx| {
            let conn = tx.sqlite().unwrap();
            conn.execute_batch(sql)?;
            if reseal {
                reseal_chain(conn);
            }
            conn.execute_batch(
                "DROP TRIGGER IF EXISTS log_checkpoints_no_delete; DELETE FROM log_checkpoints;",
            )?;
            tx.checkpoint_head(&key)?;
            Ok::<_, keyward_core::CoreError>(())
        })
        .unwrap();
    assert_eq!(
        store
            .verify_log(Some(&key.verifying_key()))
            .unwrap()
            .problem,
        None,
        "keywardd itself cannot tell any more"
    );
}

/// Recomputes every hash of the chain, as the unkeyed hash allows.
fn reseal_chain(conn: &rusqlite::Connection) {
    let mut stmt = conn
        .prepare(
            "SELECT seq, account_id, kind, at, urgency, session_id, device_id, device_name,
                    address, detail, sealed FROM events ORDER BY seq",
        )
        .unwrap();
    let uuid = |b: Option<Vec<u8>>| b.map(|b| Uuid::from_slice(&b).unwrap());
    let events: Vec<ChainEntry> = stmt
        .query_map([], |r| {
            let event = SecurityEvent {
                id: r.get(0)?,
                account_id: uuid(r.get(1)?).unwrap(),
                kind: EventKind::parse(&r.get::<_, String>(2)?).unwrap(),
                at: r.get(3)?,
                urgency: if r.get::<_, String>(4)? == "urgent" {
                    Urgency::Urgent
                } else {
                    Urgency::Quiet
                },
                session_id: uuid(r.get(5)?),
                device_id: uuid(r.get(6)?),
                device_name: r.get(7)?,
                address: r.get(8)?,
                detail: serde_json::from_str(&r.get::<_, String>(9)?).unwrap(),
            };
            // Sealed details (format 2) are hashed as their ciphertext, as keywardd does.
            Ok(ChainEntry {
                event,
                sealed: r.get(10)?,
                hash: [0; 32],
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = GENESIS_HASH;
    for entry in events {
        let hash = entry.expected_hash(&prev);
        conn.execute(
            "UPDATE events SET hash = ?1 WHERE seq = ?2",
            rusqlite::params![hash.as_slice(), entry.event.id],
        )
        .unwrap();
        prev = hash;
    }
}

#[tokio::test]
async fn a_log_cut_short_under_the_remembered_head_raises_the_alarm() {
    let (mut server, api, ada, seen) = ada_watching().await;
    server.stop().await;
    // The newest event (ada's sign-in) is removed.
    tamper_and_re_sign(
        &server.db,
        "DROP TRIGGER events_no_delete;
         DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events);",
        false,
    );
    server.start_again().await;
    let head = api.log_head(Some(seen.id)).await.unwrap();
    assert_eq!(
        check_head(ada, Some(&seen), &head),
        Err(LogAlarm::Shorter {
            seen: seen.id,
            now: seen.id - 1
        })
    );
}

#[tokio::test]
async fn another_account_s_event_rewritten_under_the_remembered_head_raises_the_alarm() {
    let (mut server, api, ada, seen) = ada_watching().await;
    // Untouched, a restart changes nothing.
    server.restart().await;
    let head = api.log_head(Some(seen.id)).await.unwrap();
    assert_eq!(check_head(ada, Some(&seen), &head), Ok(Some(seen.clone())));
    server.stop().await;
    // Bob's account creation, logged before ada's newest event, gets another time (its
    // details are sealed under bob's key); the chain is re-hashed and its head re-signed.
    // Ada's head is the same event as before.
    tamper_and_re_sign(
        &server.db,
        &format!(
            "DROP TRIGGER events_no_update;
             UPDATE events SET at = at - 1
             WHERE account_id = x'{}' AND kind = 'account_created';",
            account_hex(&server, "bob")
        ),
        true,
    );
    server.start_again().await;
    let head = api.log_head(Some(seen.id)).await.unwrap();
    assert_eq!(head.checkpoint.as_ref().unwrap().id, seen.id);
    assert_eq!(
        check_head(ada, Some(&seen), &head),
        Err(LogAlarm::Rewritten { id: seen.id })
    );
}

/// The account ID of `username`, in hex, read from the stopped server's database.
fn account_hex(server: &Server, username: &str) -> String {
    let store = Store::open(&server.db).unwrap();
    let account = store
        .read(|tx| tx.account_by_username(username))
        .unwrap()
        .unwrap();
    keyward_core::security_log::hex(account.id.as_bytes())
}
