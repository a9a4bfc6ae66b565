//! `keywardd backup` taken while keywardd serves, and `keywardd restore`: every account,
//! session and event back, the security log intact under the same log key (issue 15), on
//! whichever engine the suite runs.

use keyward_core::store::{Location, TABLES};
use keyward_proto::*;

use crate::harness::*;

fn keywardd(args: &[&str]) -> (i32, String) {
    keywardd_tool(args)
}

/// Rows per table of the database at `url`.
fn counts(url: &str) -> Vec<(String, i64)> {
    let store = keyward_core::Store::connect(&Location::parse(url).unwrap()).unwrap();
    store
        .read(|tx| {
            TABLES
                .iter()
                .map(|t| {
                    let n = tx.raw_value::<i64>(&format!("SELECT COUNT(*) FROM {t}"), &[])?;
                    Ok((t.to_string(), n))
                })
                .collect::<Result<Vec<_>, keyward_core::CoreError>>()
        })
        .unwrap()
}

/// A place to restore into that holds nothing yet: a new SQLite file, or a new PostgreSQL
/// database whose search path names this test's schema (which the restore creates, or, with
/// `schema_exists`, finds already there, as every database's `public` is).
fn empty_target(h: &Harness, name: &str, schema_exists: bool) -> String {
    if !keyward_core::store::testing::on_postgres() {
        return h
            .dir
            .path()
            .join(format!("{name}.db"))
            .display()
            .to_string();
    }
    let server = std::env::var(keyward_core::store::testing::POSTGRES_VARIABLE).unwrap();
    let database = format!("r_{}", uuid::Uuid::new_v4().simple());
    let admin = keyward_core::store::PostgresOptions::from_url(&server)
        .unwrap()
        .connect_once()
        .unwrap();
    futures::executor::block_on(admin.batch_execute(&format!("CREATE DATABASE {database}")))
        .unwrap();
    let (base, query) = h.db_url.split_once('?').unwrap();
    let base = base.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{database}?{query}");
    if schema_exists {
        let schema = query.rsplit_once("%3D").unwrap().1;
        let client = keyward_core::store::PostgresOptions::from_url(&url)
            .unwrap()
            .connect_once()
            .unwrap();
        futures::executor::block_on(client.batch_execute(&format!("CREATE SCHEMA {schema}")))
            .unwrap();
    }
    url
}

#[tokio::test]
async fn a_backup_taken_while_signing_in_restores_everything_with_the_chain_intact() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    h.sign_in(&mut key, None, "phone").await.unwrap();
    let mut other_key = new_key();
    let other = h.create_account(&mut other_key, "grace").await;
    let before = counts(&h.db_url);
    let key_path = h.db.with_extension("db.log-key");
    let key_arg = key_path.display().to_string();

    // Sign-ins go on while the backup is taken.
    let during = h.dir.path().join("during.backup");
    let (db, to) = (h.db_url.clone(), during.display().to_string());
    let backup =
        tokio::task::spawn_blocking(move || keywardd(&["backup", "--db", &db, "--to", &to]));
    for i in 0..10 {
        h.sign_in(&mut other_key, None, &format!("laptop {i}"))
            .await
            .unwrap();
    }
    let (code, text) = backup.await.unwrap();
    assert_eq!(code, 0, "{text}");
    let during_target = empty_target(&h, "during", false);
    let (code, text) = restore(&during, &during_target, &key_arg);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact"), "{text}");
    // A copy as of one commit: of what only grows here, everything from before it began and
    // nothing past the end. (Ceremonies and rate-limit hits come and go.)
    let (restored, now) = (counts(&during_target), counts(&h.db_url));
    for ((table, at_start), ((_, copied), (_, at_end))) in
        before.iter().zip(restored.iter().zip(now.iter()))
    {
        if ["ceremonies", "limit_hits", "meta"].contains(&table.as_str()) {
            continue;
        }
        assert!(
            at_start <= copied && copied <= at_end,
            "{table}: {at_start} before, {copied} copied, {at_end} after"
        );
    }

    // Quiet, a backup restores to the very same rows, and a server on it carries on.
    let quiet = h.dir.path().join("quiet.backup");
    let (code, text) = keywardd(&["backup", "--db", &h.db_url, "--to", &to_str(&quiet)]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = keywardd(&["backup", "--db", &h.db_url, "--to", &to_str(&quiet)]);
    assert_eq!(code, 2, "a backup never overwrites: {text}");
    let target = empty_target(&h, "quiet", true);
    let (code, text) = restore(&quiet, &target, &key_arg);
    assert_eq!(code, 0, "{text}");
    let (code, text) = restore(&quiet, &target, &key_arg);
    assert_eq!(code, 2, "a restore never lands on data: {text}");
    assert_eq!(counts(&target), counts(&h.db_url));
    let events = h.events(&me.token).await;
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &me.token).await.unwrap();

    let h = h.restart_on(target).await;
    assert_eq!(
        h.events(&me.token).await,
        events,
        "the same log, numbers and all"
    );
    let restored_sessions: Vec<SessionView> = h.get("/api/v1/sessions", &me.token).await.unwrap();
    assert_eq!(
        restored_sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
        sessions.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    let _: AccountView = h.get("/api/v1/account", &other.token).await.unwrap();
    h.sign_in(&mut key, None, "after the restore")
        .await
        .unwrap();
    assert_eq!(h.store().verify_chain().unwrap().first_broken, None);
}

/// `keywardd restore` of `from` into `db` with the log key `key`.
fn restore(from: &std::path::Path, db: &str, key: &str) -> (i32, String) {
    keywardd(&[
        "restore",
        "--from",
        &to_str(from),
        "--db",
        db,
        "--log-key",
        key,
    ])
}

fn to_str(p: &std::path::Path) -> String {
    p.display().to_string()
}
