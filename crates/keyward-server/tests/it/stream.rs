//! The live event stream: alerts arrive at once, a client that was away gets every missed event
//! in order exactly once, a revoked session's stream is told and closed, and a stream opened
//! with a token a step-up replaced is closed.

use std::time::Duration;

use futures::StreamExt;
use keyward_proto::*;

use crate::harness::*;

pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    pub async fn open(h: &Harness, token: &str, last_event_id: Option<i64>) -> Sse {
        Sse::try_open(&h.http, &h.base, token, last_event_id)
            .await
            .unwrap()
    }

    /// A stream of the keywardd at `base`, or why it was not opened (no answer, or a refusal).
    pub async fn try_open(
        http: &reqwest::Client,
        base: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> Result<Sse, String> {
        let mut req = http
            .get(format!("{base}/api/v1/events/stream"))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        if res.status() != 200 {
            let status = res.status();
            return Err(format!(
                "{status}: {}",
                res.text().await.unwrap_or_default()
            ));
        }
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Ok(Sse {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        })
    }

    /// The next security event, or None if the stream ends or nothing comes within 5 s.
    pub async fn next(&mut self) -> Option<SecurityEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if frame.lines().any(|l| l == "event: security_event") {
                    return Some(serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(5), self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }
}

#[tokio::test]
async fn a_new_sign_in_reaches_other_sessions_live() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut stream = Sse::open(&h, &me.token, None).await;
    let other = h.sign_in(&mut key, None, "someone's PC").await.unwrap();
    let e = stream.next().await.expect("live event");
    assert_eq!(e.kind, EventKind::SignIn);
    assert_eq!(e.session_id, Some(other.session.id));
    assert_eq!(e.device_name.as_deref(), Some("someone's PC"));
    assert_eq!(e.urgency, Urgency::Urgent);
}

#[tokio::test]
async fn a_client_that_was_away_resumes_with_every_missed_event_once_in_order() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut stream = Sse::open(&h, &me.token, None).await;
    h.sign_in(&mut key, None, "one").await.unwrap();
    let seen = stream.next().await.unwrap();
    drop(stream); // offline

    for name in ["two", "three", "four"] {
        h.sign_in(&mut key, None, name).await.unwrap();
    }
    let mut resumed = Sse::open(&h, &me.token, Some(seen.id)).await;
    let mut names = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let e = resumed.next().await.unwrap();
        names.push(e.device_name.clone().unwrap());
        ids.push(e.id);
    }
    assert_eq!(names, ["two", "three", "four"]);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // And then live again, with no duplicates.
    h.sign_in(&mut key, None, "five").await.unwrap();
    let e = resumed.next().await.unwrap();
    assert_eq!(e.device_name.as_deref(), Some("five"));
    assert!(e.id > *ids.last().unwrap());
}

#[tokio::test]
async fn a_revoked_sessions_stream_is_told_and_closed() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let victim = h.sign_in(&mut key, None, "stolen laptop").await.unwrap();
    let mut stream = Sse::open(&h, &victim.token, None).await;
    let _: EndedSessions = h
        .delete(
            &format!("/api/v1/sessions/{}", victim.session.id),
            &me.token,
        )
        .await
        .unwrap();
    let e = stream.next().await.expect("told");
    assert_eq!(e.kind, EventKind::SessionEnded);
    assert_eq!(e.detail.ended_session_id, Some(victim.session.id));
    assert!(stream.next().await.is_none(), "closed");
    let refused = h
        .send::<SecurityEvent>(
            reqwest::Method::GET,
            "/api/v1/events/stream",
            Some(&victim.token),
            None::<&()>,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::Unauthenticated);
}

/// A stream ends at its session's own idle deadline, not at some periodic check after it.
#[tokio::test]
async fn a_stream_ends_at_its_sessions_idle_deadline() {
    let h = Harness::start_with(|c| c.policy.session_idle_ms = 2_000).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut stream = Sse::open(&h, &me.token, None).await;
    // The session's idle time runs out (the server's clock), with no request to notice it.
    h.clock.advance_ms(2_000);
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        while stream.body.next().await.is_some_and(|c| c.is_ok()) {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its session");
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// A step-up replaces the session's token; a stream opened with the old one ends at once (the
/// old token is refused everywhere, a stream included), and the new token resumes where it
/// left off. Other sessions' streams are untouched.
#[tokio::test]
async fn a_stream_opened_with_a_replaced_token_ends_and_the_new_token_resumes() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let other = h.sign_in(&mut key, None, "phone").await.unwrap();
    let mut mine = Sse::open(&h, &me.token, None).await;
    let mut theirs = Sse::open(&h, &other.token, None).await;
    h.sign_in(&mut key, None, "tablet").await.unwrap();
    let seen = mine.next().await.unwrap();
    theirs.next().await.unwrap();

    let new = h.step_up(&me.token, &mut key).await;
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while mine.body.next().await.is_some_and(|c| c.is_ok()) {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    let refused = h
        .send::<SecurityEvent>(
            reqwest::Method::GET,
            "/api/v1/events/stream",
            Some(&me.token),
            None::<&()>,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error.code, ErrorCode::Unauthenticated);

    h.sign_in(&mut key, None, "desktop").await.unwrap();
    let mut resumed = Sse::open(&h, &new, Some(seen.id)).await;
    let e = resumed.next().await.unwrap();
    assert_eq!(
        e.device_name.as_deref(),
        Some("desktop"),
        "nothing missed, nothing twice"
    );
    let e = theirs
        .next()
        .await
        .expect("another session's stream goes on");
    assert_eq!(e.device_name.as_deref(), Some("desktop"));
}
