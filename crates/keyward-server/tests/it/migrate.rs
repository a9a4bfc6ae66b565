//! `keywardd migrate`: a SQLite deployment moved to PostgreSQL (or, when the suite runs on
//! SQLite, to a second SQLite file, through the same copy) keeps everything: accounts, keys and
//! their counters, sessions and devices, and a security log that still verifies against
//! its signed checkpoints.

use keyward_proto::*;

use crate::harness::*;

fn migrate(from: &std::path::Path, to: &str, key: &std::path::Path) -> (i32, String) {
    let from = format!("sqlite:{}", from.display());
    let key = key.display().to_string();
    keywardd_tool(["migrate", "--from", &from, "--to", to, "--log-key", &key])
}

/// Where the copy goes: a fresh PostgreSQL schema, or a new SQLite file.
fn target(h: &Harness) -> String {
    if keyward_core::store::testing::on_postgres() {
        keyward_core::store::testing::database_url(&h.db).unwrap()
    } else {
        h.dir.path().join("moved.db").display().to_string()
    }
}

#[tokio::test]
async fn a_migrated_deployment_keeps_its_accounts_sessions_and_log() {
    let mut h = Harness::start_on_sqlite().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    h.sign_in(&mut key, None, "phone").await.unwrap();
    let events_before = h.events(&me.token).await;
    let sessions_before: Vec<SessionView> = h.get("/api/v1/sessions", &me.token).await.unwrap();
    let counts_before = h.table_counts();
    let from = h.db.clone();
    let key_path = h.db.with_extension("db.log-key");
    let to = target(&h);

    h.stop().await;
    let (code, text) = migrate(&from, &to, &key_path);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact"), "{text}");

    let h = h.restart_on(to.clone()).await;
    assert_eq!(h.table_counts(), counts_before);
    // The same session token works; the log reads the same, numbers and all.
    assert_eq!(h.events(&me.token).await, events_before);
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &me.token).await.unwrap();
    assert_eq!(
        sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
        sessions_before.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    // The key's counter came along: its next assertion is newer, and accepted.
    h.sign_in(&mut key, None, "after the move").await.unwrap();
    assert_eq!(h.store().verify_chain().unwrap().first_broken, None);

    // A second copy into the same database is refused and changes nothing.
    let counts = h.table_counts();
    let (code, text) = migrate(&from, &to, &key_path);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not empty"), "{text}");
    assert_eq!(h.table_counts(), counts);
}

#[tokio::test]
async fn a_tampered_log_is_not_migrated() {
    let mut h = Harness::start_on_sqlite().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    h.sign_in(&mut key, None, "phone").await.unwrap();
    h.stop().await;
    // Someone with the file cuts the log short; a copy would launder that.
    rusqlite::Connection::open(&h.db)
        .unwrap()
        .execute_batch("DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq > 1;")
        .unwrap();
    let to = target(&h);
    let (code, text) = migrate(&h.db, &to, &h.db.with_extension("db.log-key"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("fails verification"), "{text}");
    let target =
        keyward_core::Store::connect(&keyward_core::store::Location::parse(&to).unwrap()).unwrap();
    let accounts = target
        .read(|tx| tx.raw_value::<i64>("SELECT COUNT(*) FROM accounts", &[]))
        .unwrap();
    assert_eq!(accounts, 0, "nothing copied");
}
