//! A consumer of `/api/v1/events/stream` that survives the network: it reconnects with
//! exponential backoff and resumes with `Last-Event-ID`, so every event arrives once, in order.
//! It also survives a step-up: the server then replaces the session's token and ends streams
//! opened with the old one, and a feed that follows the session's token ([`EventFeed::follow`])
//! reconnects with the new one.

use std::time::Duration;

use futures::StreamExt;
use keyward_proto::{EventKind, SecurityEvent};
use reqwest::Method;
use tokio::sync::{mpsc, watch};

use crate::api::Api;

/// Why a feed stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEnd {
    /// This session was ended (the event that said so was delivered first).
    SessionEnded,
    /// The server no longer accepts the token (expired, or ended while we were away).
    Unauthenticated,
    /// The receiver was dropped.
    Closed,
}

pub struct EventFeed;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a refused token waits for its replacement before the feed gives up. The server
/// ends the old token's stream when the step-up commits, a moment before the step-up's answer
/// (with the new token) is back with the client, so a reconnect can be refused in between.
const RENEWAL_GRACE: Duration = Duration::from_secs(5);

impl EventFeed {
    /// Starts a background task that sends events to the returned channel, starting after
    /// `after` (None: only new events), always with `api`'s token. The task's result says why
    /// it stopped; a step-up on this session stops it (`Unauthenticated`): see [`Self::follow`].
    pub fn spawn(
        api: Api,
        session_id: uuid::Uuid,
        after: Option<i64>,
    ) -> (
        mpsc::Receiver<SecurityEvent>,
        tokio::task::JoinHandle<FeedEnd>,
    ) {
        Self::follow(watch::channel(api).1, session_id, after)
    }

    /// As [`Self::spawn`], connecting each time with the latest `Api` in `api`: whoever holds
    /// the sender puts the session's new token there after a step-up, and the feed reconnects
    /// with it (resuming with `Last-Event-ID`) instead of stopping.
    pub fn follow(
        api: watch::Receiver<Api>,
        session_id: uuid::Uuid,
        after: Option<i64>,
    ) -> (
        mpsc::Receiver<SecurityEvent>,
        tokio::task::JoinHandle<FeedEnd>,
    ) {
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(run(api, session_id, after, tx));
        (rx, task)
    }
}

async fn run(
    mut api: watch::Receiver<Api>,
    session_id: uuid::Uuid,
    mut last: Option<i64>,
    tx: mpsc::Sender<SecurityEvent>,
) -> FeedEnd {
    let mut backoff = Duration::from_millis(200);
    // At most one immediate retry for a fresh nonce between two successful connections.
    let mut nonce_retried = false;
    loop {
        // Marks the token as seen: a change after this is a newer one.
        let current = api.borrow_and_update().clone();
        let mut req = current.request(Method::GET, "/api/v1/events/stream");
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id.to_string());
        }
        match req.send().await {
            Ok(res) if res.status() == reqwest::StatusCode::UNAUTHORIZED => {
                current.note_nonce(res.headers());
                let wants_nonce = res
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("use_dpop_nonce"));
                if wants_nonce && !nonce_retried {
                    // A bound session's proof needs the server's newer nonce, now noted.
                    nonce_retried = true;
                    continue;
                }
                // Refused: unless a new token arrives (a step-up), the session is over.
                match tokio::time::timeout(RENEWAL_GRACE, api.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return FeedEnd::Unauthenticated,
                }
            }
            Ok(res) if res.status().is_success() => {
                backoff = Duration::from_millis(200);
                nonce_retried = false;
                let mut body = res.bytes_stream();
                let mut buf = String::new();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buf.find("\n\n") {
                        let frame: String = buf.drain(..end + 2).collect();
                        let Some(event) = parse_frame(&frame) else {
                            continue;
                        };
                        last = Some(event.id);
                        let ends_me = event.kind == EventKind::SessionEnded
                            && event.detail.ended_session_id == Some(session_id);
                        if tx.send(event).await.is_err() {
                            return FeedEnd::Closed;
                        }
                        if ends_me {
                            return FeedEnd::SessionEnded;
                        }
                    }
                }
                // Stream closed without telling us why: reconnect and let the server decide.
            }
            Ok(res) => tracing::warn!(status = %res.status(), "event stream refused; retrying"),
            Err(e) => tracing::info!(error = %e, "event stream unreachable; retrying"),
        }
        if tx.is_closed() {
            return FeedEnd::Closed;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn parse_frame(frame: &str) -> Option<SecurityEvent> {
    if !frame
        .lines()
        .any(|l| l.trim_end() == "event: security_event")
    {
        return None;
    }
    let data: String = frame
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&data).ok()
}
