//! Property tests (fuzzing on stable) of keywardd's request bodies over a real loopback
//! server: arbitrary bytes and arbitrary credential JSON at every endpoint that takes a
//! WebAuthn credential get a `{code, message}` 4xx, never a 5xx or a dropped connection. The
//! committed corpus in `tests/corpus/request_bodies/` is replayed first. Cases: proptest's
//! default, or `PROPTEST_CASES`.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::harness::*;

const ENDPOINTS: &[&str] = &[
    "/api/v1/registration/finish",
    "/api/v1/sign-in/finish",
    "/api/v1/recovery/cancel/finish",
];

async fn post_raw(h: &Harness, path: &str, body: Vec<u8>) -> (u16, Value) {
    let res = h
        .http
        .post(format!("{}{path}", h.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} {status}: {e}: {text}"));
    (status, body)
}

fn assert_clear_refusal(path: &str, status: u16, body: &Value) {
    assert!((400..500).contains(&status), "{path}: {status} {body}");
    assert_ne!(status, 404, "{path} is a route");
    assert!(
        body["code"].is_string() && body["message"].is_string(),
        "{path}: {body}"
    );
}

/// One server for all cases (a fresh one per case would spend the run starting servers); with
/// the begin rate limit out of the way, as these never begin a ceremony.
fn server() -> (tokio::runtime::Runtime, Harness) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(Harness::start());
    (rt, h)
}

#[test]
fn the_request_body_corpus_is_refused_clearly() {
    let (rt, h) = server();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/request_bodies");
    let mut seeds = 0;
    for file in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        for path in ENDPOINTS {
            let (status, body) = rt.block_on(post_raw(&h, path, bytes.clone()));
            assert_clear_refusal(path, status, &body);
        }
        seeds += 1;
    }
    assert!(seeds >= 5);
}

/// Credential-shaped JSON with arbitrary field values: the WebAuthn JSON and base64url
/// parsing, and the relying party's checks behind them.
fn credential_json() -> impl Strategy<Value = Value> {
    let text = prop_oneof!["[A-Za-z0-9_-]{0,64}", "\\PC{0,32}", Just(String::new()),];
    (
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text,
        proptest::option::of("[A-Za-z0-9_-]{0,16}"),
    )
        .prop_map(|(id, auth, client, sig, att, handle)| {
            json!({
                "ceremony_id": "00000000-0000-0000-0000-000000000000",
                "credential": {
                    "id": id, "rawId": id, "type": "public-key", "extensions": {},
                    "response": {
                        "authenticatorData": auth, "clientDataJSON": client,
                        "signature": sig, "userHandle": handle, "attestationObject": att,
                    },
                },
                "client": {"name": "fuzz", "platform": "fuzz"},
            })
        })
}

#[test]
fn arbitrary_bodies_and_credentials_are_refused_clearly() {
    let (rt, h) = server();
    let config = ProptestConfig {
        // Each case is a real request: fewer than the default, so the run stays short.
        cases: (ProptestConfig::default().cases / 8).max(16),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(bytes in proptest::collection::vec(any::<u8>(), 0..512), which in 0..ENDPOINTS.len())| {
        let (status, body) = rt.block_on(post_raw(&h, ENDPOINTS[which], bytes));
        assert_clear_refusal(ENDPOINTS[which], status, &body);
    });
    proptest!(config, |(credential in credential_json(), which in 0..ENDPOINTS.len())| {
        let bytes = serde_json::to_vec(&credential).unwrap();
        let (status, body) = rt.block_on(post_raw(&h, ENDPOINTS[which], bytes));
        assert_clear_refusal(ENDPOINTS[which], status, &body);
    });
}
