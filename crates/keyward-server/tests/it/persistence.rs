//! Restarting keywardd on the same file keeps everything, and the log's hash chain holds.

use keyward_proto::*;

use crate::harness::*;

#[tokio::test]
async fn a_restart_keeps_accounts_sessions_and_the_log() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let other = h.sign_in(&mut key, None, "phone").await.unwrap();
    let events_before = h.events(&me.token).await;

    let h = h.restart().await;
    let account: AccountView = h
        .get("/api/v1/account", &me.token)
        .await
        .expect("session survives restart");
    assert_eq!(account.username, "ada");
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &other.token).await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(h.events(&me.token).await, events_before);
    h.sign_in(&mut key, None, "after restart")
        .await
        .expect("counters persisted");
    let report = h.state().relying_party().store().verify_chain().unwrap();
    assert_eq!(report.first_broken, None);
    assert!(report.events >= 3);
}

#[test]
fn the_database_runs_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyward_core::Store::open(&dir.path().join("k.db")).unwrap();
    store
        .read(|tx| {
            let conn = tx.sqlite().unwrap();
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            assert_eq!(mode, "wal");
            assert_eq!(sync, 2, "FULL");
            Ok::<_, keyward_core::CoreError>(())
        })
        .unwrap();
}
