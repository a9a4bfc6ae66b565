//! Bounds no single party can turn against anyone else (issue 10): pending ceremonies per
//! session, account and network with a reserve for the recovery veto, recovery guesses that
//! cannot lock the owner out or tell names apart, addresses behind a trusted proxy and IPv6
//! by /64, renames, pruning, event streams per session, slow clients and connection counts.

use std::time::{Duration, Instant};

use keyward_core::recovery_key::RecoveryKey;
use keyward_core::secret::{b64, unb64};
use keyward_proto::*;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::recovery::{redeem, set_up};

/// The test client stands for a reverse proxy on loopback, naming the client it forwards.
fn behind_proxy(c: &mut keyward_server::Config) {
    c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
}

/// A request forwarded for `client` (`X-Forwarded-For`).
async fn post_from<R: DeserializeOwned>(
    h: &Harness,
    client: &str,
    path: &str,
    token: Option<&str>,
    body: &impl Serialize,
) -> Res<R> {
    let mut req = h
        .http
        .post(format!("{}{path}", h.base))
        .header("x-forwarded-for", client)
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    if status.is_success() {
        Ok(serde_json::from_str(&text).unwrap())
    } else {
        Err(Failure {
            status,
            error: serde_json::from_str(&text).unwrap(),
        })
    }
}

async fn sign_in_begin_from(
    h: &Harness,
    client: &str,
    username: Option<&str>,
) -> Res<AssertionBegin> {
    post_from(
        h,
        client,
        "/api/v1/sign-in/begin",
        None,
        &SignInBeginRequest {
            username: username.map(str::to_string),
        },
    )
    .await
}

fn assert_429<T: std::fmt::Debug>(r: Res<T>) {
    let e = r.unwrap_err();
    assert_eq!(
        (e.status, e.error.code),
        (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
    );
}

#[tokio::test]
async fn a_ceremony_flood_fills_only_the_flooders_share_and_the_veto_stays_open() {
    let h = Harness::start_with(|c| {
        behind_proxy(c);
        c.policy.max_pending_ceremonies = 6;
        c.policy.max_pending_per_session = 3;
        c.policy.max_pending_per_account = 4;
        c.policy.max_pending_per_network = 2;
    })
    .await;
    let (mut ada_key, mut bob_key) = (new_key(), new_key());
    let ada = h.create_account(&mut ada_key, "ada").await;
    h.create_account(&mut bob_key, "bob").await;
    // Someone holding ada's stolen recovery key starts a recovery.
    let rk = set_up(&h, &ada.token).await;
    redeem(&h, "ada", &rk).await.unwrap();

    // A signed-in session floods step-ups: its own share runs out, nobody else's.
    let bob = h.sign_in(&mut bob_key, None, "bob's laptop").await.unwrap();
    for _ in 0..3 {
        let _: AssertionBegin = h
            .post_empty("/api/v1/step-up/begin", &bob.token)
            .await
            .unwrap();
    }
    assert_429(
        h.post_empty::<AssertionBegin>("/api/v1/step-up/begin", &bob.token)
            .await,
    );
    assert_429(
        h.post_empty::<RegistrationBegin>("/api/v1/authenticators/begin", &bob.token)
            .await,
    );

    // One network floods sign-in starts: its share runs out, other networks sign in.
    for _ in 0..2 {
        sign_in_begin_from(&h, "203.0.113.1", None).await.unwrap();
    }
    assert_429(sign_in_begin_from(&h, "203.0.113.1", None).await);
    let begin = sign_in_begin_from(&h, "198.51.100.20", Some("bob"))
        .await
        .unwrap();
    let cred = bob_key.authenticate(&h.origin, &begin.options).unwrap();
    h.sign_in_finish(&begin, cred, "bob's phone", None)
        .await
        .unwrap();

    // A handful of networks fill the shared pool: sign-ins wait, but the veto does not.
    for net in ["203.0.113.2", "203.0.113.3"] {
        for _ in 0..2 {
            sign_in_begin_from(&h, net, None).await.unwrap();
        }
    }
    assert_429(sign_in_begin_from(&h, "203.0.113.4", None).await);
    let begin: AssertionBegin = post_from(
        &h,
        "192.0.2.50",
        "/api/v1/recovery/cancel/begin",
        None,
        &RecoveryCancelBeginRequest {
            username: Some("ada".into()),
        },
    )
    .await
    .unwrap();
    let cred = ada_key.authenticate(&h.origin, &begin.options).unwrap();
    let cancelled: AccountView = post_from(
        &h,
        "192.0.2.50",
        "/api/v1/recovery/cancel/finish",
        None,
        &SignInFinishRequest {
            ceremony_id: begin.ceremony_id,
            credential: cred,
            client: client("ada's phone"),
            device_secret: None,
            binding: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(cancelled.state, AccountState::Active);
}

async fn redeem_from(h: &Harness, client: &str, username: &str, key: &RecoveryKey) -> StatusCode {
    let c: RecoveryChallenge = match post_from(
        h,
        client,
        "/api/v1/recovery/redeem/begin",
        None,
        &RedeemBeginRequest {
            username: username.into(),
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return e.status,
    };
    let sig = key.sign(
        RecoveryPurpose::Redeem,
        "localhost",
        &unb64(&c.challenge).unwrap(),
    );
    let r: Res<RecoveryStarted> = post_from(
        h,
        client,
        "/api/v1/recovery/redeem/finish",
        None,
        &RedeemFinishRequest {
            challenge_id: c.challenge_id,
            signature: b64(&sig),
            client: client_info(),
            binding: None,
        },
    )
    .await;
    match r {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    }
}

fn client_info() -> ClientInfo {
    client("new laptop")
}

#[tokio::test]
async fn recovery_guesses_cannot_spend_the_owners_attempts_or_tell_names_apart() {
    let h = Harness::start_with(behind_proxy).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = set_up(&h, &me.token).await;
    let before = h.table_counts();
    // The same guesses against a real name and a made-up one, each from its own network.
    let mut real = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..12 {
        real.push(redeem_from(&h, "203.0.113.7", "ada", &RecoveryKey::generate()).await);
        unknown.push(redeem_from(&h, "203.0.113.8", "nobody", &RecoveryKey::generate()).await);
    }
    assert_eq!(real, unknown, "known and unknown names answer alike");
    assert_eq!(real[0], StatusCode::BAD_REQUEST);
    assert_eq!(
        real[11],
        StatusCode::TOO_MANY_REQUESTS,
        "the guessing network is stopped"
    );
    // Nothing but the owner's log of the guesses changed.
    let after = h.table_counts();
    assert_eq!(
        after
            .iter()
            .filter(|(t, _)| t != "events")
            .collect::<Vec<_>>(),
        before
            .iter()
            .filter(|(t, _)| t != "events")
            .collect::<Vec<_>>()
    );
    // The owner's correct key, from the owner's network, is not refused.
    assert_eq!(
        redeem_from(&h, "192.0.2.10", "ada", &rk).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn addresses_come_from_trusted_proxies_only_and_ipv6_counts_by_64() {
    let h = Harness::start_with(|c| {
        behind_proxy(c);
        c.limits.begins_per_address.max = 3;
    })
    .await;
    // A /64 is one network, however many addresses it rotates through.
    for a in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
        sign_in_begin_from(&h, a, None).await.unwrap();
    }
    assert_429(sign_in_begin_from(&h, "2001:db8:1:2::9", None).await);
    // Other networks are not affected, and what the client prepends is ignored.
    sign_in_begin_from(&h, "2001:db8:1:3::1", None)
        .await
        .unwrap();
    sign_in_begin_from(&h, "2001:db8:1:3::1, 198.51.100.7", None)
        .await
        .unwrap();
    // The full address shows where the owner looks.
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let begin = sign_in_begin_from(&h, "2001:db8:9:9::42", None)
        .await
        .unwrap();
    let cred = key.authenticate(&h.origin, &begin.options).unwrap();
    let me: SignedIn = post_from(
        &h,
        "2001:db8:9:9::42",
        "/api/v1/sign-in/finish",
        None,
        &SignInFinishRequest {
            ceremony_id: begin.ceremony_id,
            credential: cred,
            client: client("laptop"),
            device_secret: None,
            binding: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(me.session.address, "2001:db8:9:9::42");

    // Without a trusted proxy the header is the client's own claim: it changes nothing.
    let direct = Harness::start_with(|c| c.limits.begins_per_address.max = 3).await;
    for i in 0..3 {
        sign_in_begin_from(&direct, &format!("198.51.100.{i}"), None)
            .await
            .unwrap();
    }
    assert_429(sign_in_begin_from(&direct, "198.51.100.99", None).await);
}

/// Pending ceremonies are bounded per /64 and per /48 as well: a party holding a whole
/// allocation cannot multiply its share by rotating through its networks.
#[tokio::test]
async fn pending_ceremonies_are_bounded_per_64_and_per_48() {
    let h = Harness::start_with(|c| {
        behind_proxy(c);
        c.policy.max_pending_per_network = 2;
        c.policy.max_pending_per_wide_network = 3;
    })
    .await;
    for a in ["2001:db8:1:a::1", "2001:db8:1:a::2"] {
        sign_in_begin_from(&h, a, None).await.unwrap();
    }
    assert_429(sign_in_begin_from(&h, "2001:db8:1:a::3", None).await);
    sign_in_begin_from(&h, "2001:db8:1:b::1", None)
        .await
        .unwrap();
    assert_429(sign_in_begin_from(&h, "2001:db8:1:c::1", None).await);
    sign_in_begin_from(&h, "2001:db8:2:a::1", None)
        .await
        .unwrap();
    sign_in_begin_from(&h, "198.51.100.1", None).await.unwrap();
}

#[tokio::test]
async fn renames_are_limited_per_account_and_a_refusal_changes_nothing() {
    let h = Harness::start_with(|c| c.limits.renames_per_account.max = 3).await;
    let (mut ada_key, mut bob_key) = (new_key(), new_key());
    let ada = h.create_account(&mut ada_key, "ada").await;
    let bob = h.create_account(&mut bob_key, "bob").await;
    let rename = |token: String, n: usize| {
        let h = &h;
        async move {
            let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", &token).await?;
            h.send::<AuthenticatorView>(
                reqwest::Method::PATCH,
                &format!("/api/v1/authenticators/{}", keys[0].id),
                Some(&token),
                Some(&RenameAuthenticatorRequest {
                    nickname: format!("key {n}"),
                }),
            )
            .await
        }
    };
    for n in 0..3 {
        rename(ada.token.clone(), n).await.unwrap();
    }
    let before = h.table_counts();
    assert_429(rename(ada.token.clone(), 3).await);
    assert_eq!(h.table_counts(), before, "a refused rename writes nothing");
    rename(bob.token.clone(), 0).await.unwrap();
    // The window passes and renaming is open again.
    h.clock.advance_secs(3601);
    let ada = h.sign_in(&mut ada_key, None, "laptop").await.unwrap();
    rename(ada.token.clone(), 4).await.unwrap();
}

fn count(h: &Harness, table: &str) -> i64 {
    h.table_counts()
        .into_iter()
        .find(|(t, _)| t == table)
        .unwrap()
        .1
}

#[tokio::test]
async fn old_sessions_and_devices_are_pruned_in_bounded_runs_and_the_log_is_kept() {
    let h = Harness::start_with(|c| {
        c.policy.session_retention_ms = 24 * 3_600_000;
        c.policy.prune_batch = 2;
    })
    .await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    for i in 0..3 {
        h.sign_in(&mut key, None, &format!("laptop {i}"))
            .await
            .unwrap();
    }
    let _: serde_json::Value = h.post_empty("/api/v1/sign-out", &me.token).await.unwrap();
    assert_eq!((count(&h, "sessions"), count(&h, "devices")), (4, 4));
    let events = count(&h, "events");
    // Two days on, every one of them is past its lifetime and the retention period.
    h.clock.advance_secs(2 * 24 * 3600);
    h.sign_in(&mut key, None, "new laptop").await.unwrap();
    assert_eq!(
        (count(&h, "sessions"), count(&h, "devices")),
        (3, 3),
        "one run deletes at most a batch, then the new sign-in"
    );
    h.clock.advance_secs(3601);
    let now = h.sign_in(&mut key, None, "newer laptop").await.unwrap();
    assert_eq!((count(&h, "sessions"), count(&h, "devices")), (2, 2));
    assert!(
        count(&h, "events") > events,
        "the security log keeps its history"
    );
    let page: EventPage = h.get("/api/v1/events?limit=200", &now.token).await.unwrap();
    assert!(
        page.events
            .iter()
            .any(|e| e.device_name.as_deref() == Some("laptop 0"))
    );
}

#[tokio::test]
async fn a_session_cannot_hold_more_event_streams_than_its_cap() {
    let h = Harness::start_with(|c| c.max_streams_per_session = 2).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let other = h.sign_in(&mut key, None, "phone").await.unwrap();
    let open = |token: String| {
        let h = &h;
        async move {
            h.http
                .get(format!("{}/api/v1/events/stream", h.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let first = open(me.token.clone()).await;
    let second = open(me.token.clone()).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = open(me.token.clone()).await;
    assert_eq!(third.status(), StatusCode::CONFLICT);
    let error: ApiError = third.json().await.unwrap();
    assert_eq!(error.code, ErrorCode::Conflict);
    assert!(error.message.contains("event streams"), "{}", error.message);
    // Another session of the same account is not affected.
    assert_eq!(open(other.token.clone()).await.status(), StatusCode::OK);
}

/// Reads until the server closes the connection; how long that took.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let h = Harness::start_with(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let addr = h.server.as_ref().unwrap().addr;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5))
        .await
        .expect("the server must close a connection whose headers never end");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    // A client that sends its request is served as before.
    let ok = h
        .http
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_a_freed_place_is_reused() {
    let h = Harness::start_with(|c| c.max_connections = 2).await;
    let addr = h.server.as_ref().unwrap().addr;
    let a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(2))
            .await
            .is_some(),
        "a third connection is closed at once"
    );
    drop(a);
    // Once the server has seen the first one go, its place takes a new client.
    let started = Instant::now();
    loop {
        let mut d = TcpStream::connect(addr).await.unwrap();
        // The loopback server answers only its own Host (DNS-rebinding guard).
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        );
        d.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), d.read_to_end(&mut reply)).await;
        if reply.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
