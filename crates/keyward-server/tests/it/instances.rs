//! Several keywardd instances on one database, as behind a load balancer (what PostgreSQL is
//! for; a SQLite file serves two processes on one machine too): the database is the one
//! truth, so what one instance begins another finishes, exactly once, and what one ends the
//! other refuses at the next request.

use std::sync::Arc;

use keyward_proto::*;

use crate::harness::*;
use crate::stream::Sse;

/// Two instances whose streams must hear each other. A stream reads the log when it hears of a
/// commit, and every so often regardless. On PostgreSQL that "so often" is made too long to
/// matter here, so only LISTEN/NOTIFY can deliver in time; a SQLite file shared by two
/// processes has no notifications, so there the poll does it.
async fn two_instances() -> (Harness, Harness) {
    let poll = if keyward_core::store::testing::on_postgres() {
        std::time::Duration::from_secs(600)
    } else {
        std::time::Duration::from_millis(100)
    };
    let a = Harness::start_with(|c| c.stream_poll_every = poll).await;
    let b = a.second_instance_with(|c| c.stream_poll_every = poll).await;
    (a, b)
}

#[tokio::test]
async fn a_sign_in_on_one_instance_reaches_a_stream_on_the_other() {
    let (a, b) = two_instances().await;
    let mut key = new_key();
    let me = a.create_account(&mut key, "ada").await;
    let mut stream = Sse::open(&b, &me.token, None).await;
    let other = a.sign_in(&mut key, None, "someone's PC").await.unwrap();
    let e = stream
        .next()
        .await
        .expect("the alert reaches the other instance's stream");
    assert_eq!(e.kind, EventKind::SignIn);
    assert_eq!(e.session_id, Some(other.session.id));
    assert_eq!(e.urgency, Urgency::Urgent);
}

#[tokio::test]
async fn ending_a_session_on_one_instance_tells_its_stream_on_the_other() {
    let (a, b) = two_instances().await;
    let mut key = new_key();
    let me = a.create_account(&mut key, "ada").await;
    let victim = a.sign_in(&mut key, None, "stolen laptop").await.unwrap();
    let mut stream = Sse::open(&b, &victim.token, None).await;
    let _: EndedSessions = a
        .delete(
            &format!("/api/v1/sessions/{}", victim.session.id),
            &me.token,
        )
        .await
        .unwrap();
    let e = stream.next().await.expect("told, on the other instance");
    assert_eq!(e.kind, EventKind::SessionEnded);
    assert_eq!(e.detail.ended_session_id, Some(victim.session.id));
    assert!(stream.next().await.is_none(), "closed");
}

/// Events committed close together on several connections can be heard out of order; the
/// stream sends them in the account's order all the same, each once.
#[tokio::test]
async fn events_committed_together_reach_a_stream_once_each_in_order() {
    let (a, b) = two_instances().await;
    let mut key = new_key();
    let me = a.create_account(&mut key, "ada").await;
    let mut others = Vec::new();
    for i in 0..6 {
        others.push(
            a.sign_in(&mut key, None, &format!("tab {i}"))
                .await
                .unwrap(),
        );
    }
    let mut stream = Sse::open(&a, &me.token, None).await;
    // Six sessions ended at once, half through each instance: six events committed together.
    let paths: Vec<String> = others
        .iter()
        .map(|o| format!("/api/v1/sessions/{}", o.session.id))
        .collect();
    let ends = paths.iter().enumerate().map(|(i, path)| {
        let h = if i % 2 == 0 { &a } else { &b };
        h.delete::<EndedSessions>(path, &me.token)
    });
    for outcome in futures::future::join_all(ends).await {
        outcome.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(stream.next().await.expect("every sign-in").id);
    }
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

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

#[tokio::test]
async fn a_step_up_on_one_instance_ends_the_old_tokens_stream_on_the_other() {
    let (a, b) = two_instances().await;
    let mut key = new_key();
    let me = a.create_account(&mut key, "ada").await;
    let mut stream = Sse::open(&b, &me.token, None).await;
    let new = a.step_up(&me.token, &mut key).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the old token's stream outlived it elsewhere"
    );
    let _: AccountView = b.get("/api/v1/account", &new).await.unwrap();
}

/// A correct sign-in's refusal, if any.
async fn refused(
    h: &Harness,
    key: &mut keyward_softkey::SoftKey,
) -> (reqwest::StatusCode, ErrorCode) {
    let begin = h.sign_in_begin(Some("ada")).await;
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    let e = h.sign_in_finish(&begin, cred, "x", None).await.unwrap_err();
    (e.status, e.error.code)
}

/// Failures counted on one instance count on the other, and a restart forgets none: the hits
/// are rows of the one database, not any process's memory.
#[tokio::test]
async fn a_rate_limit_counts_across_instances_and_survives_a_restart() {
    let tight = |c: &mut keyward_server::Config| {
        c.limits.failures_per_address.max = 4;
        c.limits.failures_per_target_address.max = 4;
    };
    let a = Harness::start_with(tight).await;
    let b = a.second_instance_with(tight).await;
    let mut key = new_key();
    a.create_account(&mut key, "ada").await;
    let mut forged = key.clone();
    forged.behaviour.corrupt_signature = true;
    // Two failures on each instance: four from this address in all.
    for h in [&a, &b, &a, &b] {
        let begin = h.sign_in_begin(Some("ada")).await;
        let cred = forged.authenticate(&h.origin, &begin.options).unwrap();
        let e = h.sign_in_finish(&begin, cred, "x", None).await.unwrap_err();
        assert_eq!(e.error.code, ErrorCode::AuthenticationFailed);
    }
    let blocked = (
        reqwest::StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
    );
    // Either instance now refuses even a correct assertion from here.
    assert_eq!(refused(&a, &mut key).await, blocked);
    assert_eq!(refused(&b, &mut key).await, blocked);
    // Restarted, the instance still remembers.
    drop(b);
    let db_url = a.db_url.clone();
    let a = a.restart_on_with(db_url, tight).await;
    assert_eq!(refused(&a, &mut key).await, blocked);
    // The window passes: the owner signs in again.
    a.clock.advance_secs(15 * 60 + 1);
    a.sign_in(&mut key, None, "owner").await.unwrap();
}
