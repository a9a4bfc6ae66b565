//! keywardd's own logs (issue 15): with `--log-format json` every line is one JSON object,
//! what was done for a request carries the ID sent back to its client as `X-Request-Id`, and
//! no line holds a token, device secret or recovery key, even at debug level.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::ManualClock;
use keyward_core::secret::b64;
use keyward_proto::*;
use url::Url;

use crate::harness::*;

struct Logged {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// keywardd as a process, logging JSON at debug level into a file; a harness that talks to it.
async fn keywardd_logging_json() -> (Harness, Logged) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.db");
    let db_url = keyward_core::store::testing::database_url(&db).unwrap();
    let log = dir.path().join("keywardd.log");
    let out = std::fs::File::create(&log).unwrap();
    let origin = "http://localhost:8443";
    let child = Command::new(env!("CARGO_BIN_EXE_keywardd"))
        .args(["--db", &db_url, "--log-key"])
        .arg(db.with_extension("db.log-key"))
        .args(["--listen", "127.0.0.1:0", "--origin", origin])
        .args(["--log-format", "json"])
        .env("KEYWARD_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let logged = Logged { child, log };
    let mut base = None;
    for _ in 0..400 {
        let text = std::fs::read_to_string(&logged.log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.strip_prefix("keywardd listening on "))
        {
            base = Some(format!("http://{}", addr.trim()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = base.unwrap_or_else(|| {
        panic!(
            "keywardd never listened:\n{}",
            std::fs::read_to_string(&logged.log).unwrap_or_default()
        )
    });
    let harness = Harness {
        server: None,
        clock: Arc::new(ManualClock::new(T0)),
        base,
        origin: Url::parse(origin).unwrap(),
        db,
        db_url,
        http: reqwest::Client::new(),
        dir,
    };
    (harness, logged)
}

#[tokio::test]
async fn json_logs_carry_request_ids_and_never_a_secret() {
    let (h, logged) = keywardd_logging_json().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let other = h.sign_in(&mut key, None, "phone").await.unwrap();
    // A recovery key set up and confirmed: the server sees its public half and a proof.
    let recovery = crate::recovery::set_up(&h, &me.token).await;
    // A refused sign-in, whose request ID the client is given.
    let mut forged = key.clone();
    forged.behaviour.corrupt_signature = true;
    let begin = h.sign_in_begin(Some("ada")).await;
    let credential = forged.authenticate(&h.origin, &begin.options).unwrap();
    let res = h
        .http
        .post(format!("{}/api/v1/sign-in/finish", h.base))
        .json(&SignInFinishRequest {
            ceremony_id: begin.ceremony_id,
            credential,
            client: client("x"),
            device_secret: None,
            binding: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::BAD_REQUEST);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");

    // Let the last lines reach the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&logged.log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.starts_with("keywardd listening on "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{text}");
    let refusal = lines
        .iter()
        .find(|l| l["message"] == "assertion refused")
        .unwrap_or_else(|| panic!("the refusal is logged:\n{text}"));
    assert_eq!(refusal["span"]["id"], id.as_str(), "{refusal}");
    assert_eq!(refusal["span"]["path"], "/api/v1/sign-in/finish");

    for secret in [
        me.token.clone(),
        me.device_secret.clone(),
        other.token.clone(),
        other.device_secret.clone(),
        recovery.to_display(),
        b64(&recovery.public_key()),
    ] {
        assert!(!secret.is_empty());
        assert!(!text.contains(&secret), "a secret in the log:\n{text}");
    }
}
