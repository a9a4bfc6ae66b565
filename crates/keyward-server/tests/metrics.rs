//! `/metrics` (issue 15): off unless `--metrics-listen` names an address; then Prometheus text
//! with sign-ins, failures by reason, refusals by code, request latency by route, commit
//! latency and the gauges read at each scrape, and no user data. A test binary of its own: the
//! `metrics` facade has one recorder per process, which other tests' servers would count into.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "it/harness.rs"]
mod harness;

use harness::*;

/// The value of the one sample whose line starts with `name` and holds every label in `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_what_happened_and_name_no_one() {
    let off = Harness::start().await;
    assert_eq!(
        off.server.as_ref().unwrap().metrics_addr,
        None,
        "off by default"
    );
    drop(off);

    let h = Harness::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let at = h.server.as_ref().unwrap().metrics_addr.unwrap();
    let mut key = new_key();
    let me = h.create_account(&mut key, "zebulon-watched").await;
    h.sign_in(&mut key, None, "phone").await.unwrap();
    h.sign_in(&mut key, None, "tablet").await.unwrap();
    let mut forged = key.clone();
    forged.behaviour.corrupt_signature = true;
    let begin = h.sign_in_begin(Some("zebulon-watched")).await;
    let cred = forged.authenticate(&h.origin, &begin.options).unwrap();
    h.sign_in_finish(&begin, cred, "x", None).await.unwrap_err();

    let res = reqwest::get(format!("http://{at}/metrics")).await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert!(
        res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    if std::env::var_os("KEYWARD_SHOW_METRICS").is_some() {
        println!("{text}");
    }

    assert_eq!(
        sample(&text, "keyward_sign_ins_total", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keyward_sign_in_failures_total",
            &["reason=\"signature or client data did not verify\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keyward_refusals_total",
            &["code=\"authentication_failed\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keyward_http_requests_seconds_count",
            &[
                "route=\"/api/v1/sign-in/finish\"",
                "status=\"200\"",
                "method=\"POST\""
            ]
        ),
        Some(2.0),
        "{text}"
    );
    let engine = if keyward_core::store::testing::on_postgres() {
        "engine=\"postgres\""
    } else {
        "engine=\"sqlite\""
    };
    assert!(
        sample(
            &text,
            "keyward_commit_seconds_count",
            &[engine, "durability=\"synced\""]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "keyward_sessions_open", &[]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "keyward_ceremonies_cap", &[]),
        Some(10_000.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "keyward_event_streams_open", &[]),
        Some(0.0),
        "{text}"
    );

    // Counts and latencies only: no name, address, ID or token.
    for private in [
        "zebulon".to_string(),
        "127.0.0.1".to_string(),
        me.token.clone(),
        me.session.id.to_string(),
        me.account.id.to_string(),
    ] {
        assert!(!text.contains(&private), "{private} in {text}");
    }

    // Only GET /metrics is there, and the API is not.
    let other = reqwest::get(format!("http://{at}/api/v1/account"))
        .await
        .unwrap();
    assert_eq!(other.status(), reqwest::StatusCode::NOT_FOUND);
}
