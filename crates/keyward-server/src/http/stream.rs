//! The live security-event stream (SSE), per account, resumable with `Last-Event-ID`.
//!
//! Order of work matters: subscribe to live events first, then replay what the store has after
//! the client's last ID, then forward live events newer than the last one sent. Nothing
//! committed in between can be missed, and nothing is sent twice. A stream whose own session
//! ends is told (`session_ended`) and closed; one whose token a step-up replaced, on this instance or another, is closed (the
//! client reconnects with the new token and resumes with `Last-Event-ID`). Either way it reads
//! the log once more before it closes, so what ended it is sent even when the session was
//! found over between a read of the log and the commit that ended it. A session holds at
//! most `max_streams_per_session` streams at once; one more is refused (`conflict`, 409).
//!
//! The log is the outbox: a stream sends events in their account's order by reading the log
//! from its position. What it hears live only says when to read: an event of this instance's
//! that is the very next one is sent as heard (no read); anything else (a gap, which several
//! PostgreSQL connections committing close together can cause; another instance's commit,
//! heard through PostgreSQL's LISTEN/NOTIFY; a listener that was reconnected and may have
//! missed some) makes it read the log from where it stands. Notifications can be lost, so
//! every stream also reads the log every `POLL_EVERY` whatever it heard.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use keyward_proto::{EventKind, SecurityEvent};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::extract::ApiQuery;
use super::{AppState, Published};
use crate::error::{Result, ServerError};
use crate::relying_party::Authed;

/// How often a stream reads the log even when it heard nothing (notifications can be lost).
pub const POLL_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Replay events after this ID (like `Last-Event-ID`); 0 replays the whole log.
    after: Option<i64>,
}

fn sse_event(e: &SecurityEvent) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event("security_event")
        .json_data(e)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}

/// Live security events for this account as Server-Sent Events (`event: security_event`,
/// `id` = event ID, `data` = SecurityEvent JSON).
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, content_type = "text/event-stream", body = SecurityEvent), (status = 401, body = keyward_proto::ApiError)))]
pub async fn event_stream(
    State(state): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let header_id = last_event_id(&headers)?;
    state.relying_party().may_stream(&authed)?;
    let account_id = authed.account.id;
    let session_id = authed.session.id;
    // Held for as long as the stream is open: one session cannot pile up streams.
    let slot = state.open_stream(session_id)?;
    let mut live = state.subscribe();
    // Before the first check of the token below, so a replacement in between is not missed.
    let mut replaced = state.subscribe_tokens_replaced();
    let start = match header_id.or(q.after) {
        Some(id) => id,
        None => {
            state
                .blocking(move |s| s.latest_event_id(account_id))
                .await?
        }
    };

    let stream = async_stream::stream! {
        let _slot = slot;
        let mut last = start;
        let mut replay = true;
        let mut recheck = false;
        // The session is over (or this stream's token was replaced): one last read of the log
        // sends the event that says so, if it is there, and the stream ends. (It may have
        // been committed just after the stream last read the log.)
        let mut closing = false;
        // The session's own deadline: the stream ends then, not at some later check. None
        // once the session is over or this stream's token was replaced.
        let time_left = |state: AppState, authed: Authed| async move {
            match state.blocking(move |s| s.session_time_left(&authed)).await {
                Ok(Some(ms)) => Some(Duration::from_millis(ms.max(1) as u64)),
                _ => None,
            }
        };
        let left = time_left(state.clone(), authed.clone()).await.unwrap_or_else(|| {
            closing = true;
            Duration::ZERO
        });
        let deadline = tokio::time::sleep(left);
        tokio::pin!(deadline);
        let mut poll = tokio::time::interval(state.stream_poll_every());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if replay {
                // Catch up from the store, in pages.
                loop {
                    let page = match state.blocking(move |s| s.events_after(account_id, last, 500)).await {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                    let n = page.len();
                    for e in page {
                        last = e.id;
                        let ends_me = ends_session(&e, session_id);
                        if !closing || ends_me {
                            yield Ok(sse_event(&e));
                        }
                        if ends_me { return; }
                    }
                    if n < 500 { break; }
                }
                replay = false;
            }
            if closing {
                return;
            }
            if recheck {
                recheck = false;
                if time_left(state.clone(), authed.clone()).await.is_none() {
                    closing = true;
                    replay = true;
                    continue;
                }
            }
            tokio::select! {
                received = live.recv() => match received {
                    Ok(Published::Event(e)) if e.account_id == account_id && e.id == last + 1 => {
                        last = e.id;
                        let ends_me = ends_session(&e, session_id);
                        yield Ok(sse_event(&e));
                        if ends_me { return; }
                    }
                    // Ours but not the next one: an earlier one is still on its way.
                    Ok(Published::Event(e)) if e.account_id == account_id && e.id > last => {
                        replay = true;
                    }
                    Ok(Published::Elsewhere(accounts)) if accounts.contains(&account_id) => {
                        replay = true;
                    }
                    // A step-up elsewhere may have gone unheard too.
                    Ok(Published::MayHaveMissed) => {
                        replay = true;
                        recheck = true;
                    }
                    Ok(_) => {}
                    // Fell behind the channel: the store has everything, replay from it.
                    Err(RecvError::Lagged(_)) => replay = true,
                    Err(RecvError::Closed) => return,
                },
                // The poll also notices a token replaced where no notice reaches (a SQLite
                // file shared by two processes; a lost notification), after the catch-up, so
                // a session ended elsewhere is told before the stream closes.
                _ = poll.tick() => {
                    replay = true;
                    recheck = true;
                }
                // Lifetimes run out without an event; a stream must not outlive its session.
                // Use elsewhere may have moved the deadline on: then wait for the new one.
                () = &mut deadline => match time_left(state.clone(), authed.clone()).await {
                    Some(left) => deadline.as_mut().reset(tokio::time::Instant::now() + left),
                    None => {
                        closing = true;
                        replay = true;
                    }
                },
                // A step-up replaced some session's token: if this stream's, it ends now. A
                // lagged receiver may have missed ours, so it checks too.
                changed = replaced.recv() => match changed {
                    Ok(id) if id != session_id => {}
                    Err(RecvError::Closed) => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        if time_left(state.clone(), authed.clone()).await.is_none() {
                            closing = true;
                            replay = true;
                        }
                    }
                },
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `Last-Event-ID`, if sent: an event ID, or a clear `invalid_input`.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>> {
    headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()))
        .map(|v| {
            v.ok_or(ServerError::InvalidInput(
                "Last-Event-ID must be an event ID".into(),
            ))
        })
        .transpose()
}

/// The event that ends this stream: its session ended, or the whole account deleted (every
/// stream of the account gets that alert last).
fn ends_session(e: &SecurityEvent, session_id: uuid::Uuid) -> bool {
    e.kind == EventKind::AccountDeleted
        || (e.kind == EventKind::SessionEnded && e.detail.ended_session_id == Some(session_id))
}

#[cfg(test)]
mod fuzz {
    //! Property tests of `Last-Event-ID`: any header value is an ID or a clear refusal.
    #![allow(clippy::unwrap_used)]
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn with(value: HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", value);
        h
    }

    #[test]
    fn last_event_id_reads_ids_and_refuses_the_rest() {
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            last_event_id(&with(HeaderValue::from_static(" 42 "))).unwrap(),
            Some(42)
        );
        for bad in ["", "x", "1.5", "99999999999999999999", "0x10"] {
            let err = last_event_id(&with(HeaderValue::from_str(bad).unwrap())).unwrap_err();
            assert!(matches!(err, ServerError::InvalidInput(_)), "{bad}");
        }
        let opaque = HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap();
        assert!(last_event_id(&with(opaque)).is_err());
    }

    proptest! {
        #[test]
        fn any_header_value_is_an_id_or_a_clear_refusal(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                match last_event_id(&with(value)) {
                    Ok(id) => prop_assert!(id.is_some()),
                    Err(e) => prop_assert!(matches!(e, ServerError::InvalidInput(_))),
                }
            }
        }

        #[test]
        fn every_id_is_read_back(id in any::<i64>()) {
            let value = HeaderValue::from_str(&id.to_string()).unwrap();
            prop_assert_eq!(last_event_id(&with(value)).unwrap(), Some(id));
        }
    }
}
