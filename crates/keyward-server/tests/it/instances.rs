//! Several keywardd instances on one database, as behind a load balancer (what PostgreSQL is
//! for; a SQLite file serves two processes on one machine too): the database is the one
//! truth, so what one instance begins another finishes, exactly once, and what one ends the
//! other refuses at the next request.

use std::sync::Arc;

use keyward_proto::*;

use crate::harness::*;

#[tokio::test]
async fn a_ceremony_finished_at_once_on_two_instances_opens_one_session() {
    let a = Arc::new(Harness::start().await);
    let b = Arc::new(a.second_instance().await);
    let mut key = new_key();
    a.create_account(&mut key, "ada").await;
    let begin = a.sign_in_begin(None).await;
    let cred = key.authenticate(&a.origin, &begin.options).unwrap();
    let mut racers = Vec::new();
    for i in 0..16 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (begin, cred) = (begin.clone(), cred.clone());
        racers.push(tokio::spawn(async move {
            h.sign_in_finish(&begin, cred, &format!("racer {i}"), None)
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(e.error.code, ErrorCode::CeremonyExpired, "{e:?}"),
        }
    }
    assert_eq!(won, 1);
    let sessions = a
        .store()
        .read(|tx| tx.raw_value::<i64>("SELECT COUNT(*) FROM sessions", &[]))
        .unwrap();
    assert_eq!(
        sessions, 2,
        "the account's first session and the race's one winner"
    );
    assert_eq!(a.store().verify_chain().unwrap().first_broken, None);
}

#[tokio::test]
async fn a_ceremony_begun_on_one_instance_finishes_on_the_other() {
    let a = Harness::start().await;
    let b = a.second_instance().await;
    let mut key = new_key();
    a.create_account(&mut key, "ada").await;
    let begin = a.sign_in_begin(Some("ada")).await;
    let cred = key.authenticate(&a.origin, &begin.options).unwrap();
    let me = b
        .sign_in_finish(&begin, cred, "laptop", None)
        .await
        .unwrap();
    let account: AccountView = a.get("/api/v1/account", &me.token).await.unwrap();
    assert_eq!(account.username, "ada");
}

#[tokio::test]
async fn a_session_ended_on_one_instance_is_refused_on_the_other_at_once() {
    let a = Harness::start().await;
    let b = a.second_instance().await;
    let mut key = new_key();
    a.create_account(&mut key, "ada").await;
    let me = a.sign_in(&mut key, None, "laptop").await.unwrap();
    let _: AccountView = b.get("/api/v1/account", &me.token).await.unwrap();
    let _: EndedSessions = a.post_empty("/api/v1/sign-out", &me.token).await.unwrap();
    let refused = b
        .get::<AccountView>("/api/v1/account", &me.token)
        .await
        .unwrap_err();
    assert_eq!(refused.status, reqwest::StatusCode::UNAUTHORIZED);
}
