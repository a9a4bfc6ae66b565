//! The `keyward` binary as people script it: WebAuthn ceremonies for a relying party that is
//! not keywardd, from its options JSON; and, through pcscd + vpcd, key management and sign-up
//! with an NFC key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use keyward_client::{CancelSwitch, KeyPrompter, SecurityKey};
use keyward_fido_virt::{FidoVirt, VirtTransport, vpcd};
use keyward_proto::KeyPrompt;
use url::Url;
use webauthn_rs::prelude::*;

struct Output {
    ok: bool,
    stdout: serde_json::Value,
    stderr: String,
}

async fn keyward(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.args(args).env_remove("KEYWARD_PIN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A real keywardd on loopback over a SQLite file in `dir`; its address for `--server`.
async fn local_keywardd(dir: &Path) -> (keyward_server::RunningServer, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = Url::parse(&format!("http://localhost:{port}")).unwrap();
    let server = keyward_server::start_on(
        listener,
        keyward_server::Config::local(dir.join("k.db"), origin),
        Arc::new(keyward_core::SystemClock),
    )
    .await
    .unwrap();
    (server, format!("http://localhost:{port}"))
}

/// A relying party that is not keywardd: webauthn-rs configured for another site.
fn other_site() -> (Webauthn, Url) {
    let origin = Url::parse("https://login.example.org").unwrap();
    let rp = WebauthnBuilder::new("example.org", &origin)
        .unwrap()
        .rp_name("Example")
        .build()
        .unwrap();
    (rp, origin)
}

fn write_json(dir: &Path, name: &str, v: &impl serde::Serialize) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(v).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Registers with and signs in to `rp` through `keyward webauthn`, with the authenticator
/// `extra` selects; both finishes are the relying party's own checks.
async fn ceremonies_for_another_site(extra: &[&str], env: &[(&str, &str)]) {
    let (rp, origin) = other_site();
    let dir = tempfile::tempdir().unwrap();
    let (ccr, reg) = rp
        .start_passkey_registration(Uuid::new_v4(), "grace", "Grace", None)
        .unwrap();
    let options = write_json(dir.path(), "create.json", &ccr);
    let mut args = vec![
        "webauthn",
        "register",
        &options,
        "--origin",
        origin.as_str(),
    ];
    args.extend_from_slice(extra);
    let out = keyward(&args, env).await;
    assert!(out.ok, "{}", out.stderr);
    let credential: RegisterPublicKeyCredential = serde_json::from_value(out.stdout).unwrap();
    let passkey = rp.finish_passkey_registration(&credential, &reg).unwrap();

    let (rcr, auth) = rp
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    let options = write_json(dir.path(), "get.json", &rcr);
    let mut args = vec![
        "webauthn",
        "authenticate",
        &options,
        "--origin",
        origin.as_str(),
    ];
    args.extend_from_slice(extra);
    let out = keyward(&args, env).await;
    assert!(out.ok, "{}", out.stderr);
    let assertion: PublicKeyCredential = serde_json::from_value(out.stdout).unwrap();
    let result = rp.finish_passkey_authentication(&assertion, &auth).unwrap();
    assert!(result.user_verified());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_key_file_does_ceremonies_for_another_relying_party() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    ceremonies_for_another_site(&["--key-file", key_file.to_str().unwrap()], &[]).await;

    // Not options at all: a clear error, exit code 1, nothing else happens.
    let bad = write_json(
        dir.path(),
        "bad.json",
        &serde_json::json!({ "publicKey": 5 }),
    );
    let out = keyward(
        &[
            "webauthn",
            "register",
            &bad,
            "--origin",
            "https://login.example.org",
        ],
        &[],
    )
    .await;
    assert!(!out.ok);
    let err: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(err["code"], "invalid_input");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not WebAuthn options")
    );

    let out = keyward(&["key", "reset"], &[]).await;
    assert!(!out.ok, "a reset needs the explicit flag");
    assert!(out.stderr.contains("--yes-erase-everything"));
}

/// `keyward webauthn register` and `authenticate` print WebAuthn L3's
/// `PublicKeyCredential.toJSON()` shape, which strict relying parties require.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_json_is_what_webauthn_l3_to_json_writes() {
    use keyward_core::secret::unb64;
    let bytes = |v: &serde_json::Value| unb64(v.as_str().unwrap()).unwrap();
    let (rp, origin) = other_site();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    let key_file = key_file.to_str().unwrap();
    let (ccr, reg) = rp
        .start_passkey_registration(Uuid::new_v4(), "grace", "Grace", None)
        .unwrap();
    let options = write_json(dir.path(), "create.json", &ccr);
    let out = keyward(
        &[
            "webauthn",
            "register",
            &options,
            "--origin",
            origin.as_str(),
            "--key-file",
            key_file,
        ],
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let r = &out.stdout;
    assert_eq!(r["type"], "public-key");
    assert_eq!(bytes(&r["rawId"]), bytes(&r["id"]));
    assert_eq!(r["clientExtensionResults"], serde_json::json!({}));
    assert!(r.get("extensions").is_none(), "{r}");
    let response = &r["response"];
    for field in ["clientDataJSON", "attestationObject", "authenticatorData"] {
        assert!(response[field].is_string(), "{field}: {r}");
    }
    assert!(response["transports"].is_array(), "{r}");
    assert_eq!(response["publicKeyAlgorithm"], -7, "ES256: {r}");
    // authenticatorData is exactly the authData inside the attestation object.
    let attestation: serde_cbor_2::Value =
        serde_cbor_2::from_slice(&bytes(&response["attestationObject"])).unwrap();
    let serde_cbor_2::Value::Map(attestation) = attestation else {
        panic!("attestation object is not a map")
    };
    assert_eq!(
        attestation.get(&serde_cbor_2::Value::Text("authData".into())),
        Some(&serde_cbor_2::Value::Bytes(bytes(
            &response["authenticatorData"]
        )))
    );
    // A relying party still takes it.
    let credential: RegisterPublicKeyCredential = serde_json::from_value(r.clone()).unwrap();
    let passkey = rp.finish_passkey_registration(&credential, &reg).unwrap();

    let (rcr, auth) = rp
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    let options = write_json(dir.path(), "get.json", &rcr);
    let out = keyward(
        &[
            "webauthn",
            "authenticate",
            &options,
            "--origin",
            origin.as_str(),
            "--key-file",
            key_file,
        ],
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let a = &out.stdout;
    assert_eq!(a["type"], "public-key");
    assert_eq!(a["clientExtensionResults"], serde_json::json!({}));
    assert!(a.get("extensions").is_none(), "{a}");
    for field in [
        "clientDataJSON",
        "authenticatorData",
        "signature",
        "userHandle",
    ] {
        assert!(a["response"][field].is_string(), "{field}: {a}");
    }
    let assertion: PublicKeyCredential = serde_json::from_value(a.clone()).unwrap();
    rp.finish_passkey_authentication(&assertion, &auth).unwrap();
}

struct Nobody;
impl KeyPrompter for Nobody {
    fn prompt(&self, _: KeyPrompt) {}
    fn ask_pin(&self, _: Option<u32>, _: bool) -> Option<String> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pcscd with vsmartcard's vpcd driver; `./dev test` starts them and runs this"]
async fn an_nfc_key_is_managed_and_used_from_the_command_line_through_pcscd() {
    // The key's owner set its PIN once, then holds it to the reader.
    let key = FidoVirt::start();
    let transport = VirtTransport::new(key.clone());
    SecurityKey::new(
        move || {
            let t = transport.clone();
            Box::pin(async move { Ok(t) })
        },
        Arc::new(Nobody),
        CancelSwitch::default(),
    )
    .set_pin("4321")
    .unwrap();
    let card = key.clone();
    std::thread::spawn(move || vpcd::hold(card, vpcd::default_address()));

    let info = keyward(&["key", "info"], &[]).await;
    assert!(info.ok, "{}", info.stderr);
    assert_eq!(info.stdout["pin_set"], true);
    assert_eq!(info.stdout["pin_retries"], 8);
    assert!(
        info.stderr.contains("hold it to the reader"),
        "{}",
        info.stderr
    );

    // Sign up to a real keywardd with the NFC key; the PIN comes from KEYWARD_PIN.
    let dir = tempfile::tempdir().unwrap();
    let (_server, server) = local_keywardd(dir.path()).await;
    let pin = [("KEYWARD_PIN", "4321")];
    let signed = keyward(&["--server", &server, "sign-up", "ada"], &pin).await;
    assert!(signed.ok, "{}", signed.stderr);
    assert_eq!(signed.stdout["account"]["username"], "ada");

    let listed = keyward(&["key", "passkeys"], &pin).await;
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.stdout["passkeys"][0]["rp_id"], "localhost");
    assert_eq!(listed.stdout["passkeys"][0]["user_name"], "ada");

    // A wrong PIN from the environment is not retried (the key would count every try).
    let wrong = keyward(&["key", "passkeys"], &[("KEYWARD_PIN", "0000")]).await;
    assert!(!wrong.ok);
    let err: serde_json::Value =
        serde_json::from_str(wrong.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(err["code"], "cancelled");

    // And ceremonies for another site, over NFC.
    ceremonies_for_another_site(&[], &pin).await;
}

#[tokio::test]
async fn an_export_of_the_log_verifies_and_a_tampered_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, server) = local_keywardd(dir.path()).await;
    let key_file = dir.path().join("key.json");
    let key_file = key_file.to_str().unwrap();
    let signed = keyward(
        &[
            "--server",
            &server,
            "sign-up",
            "ada",
            "--key-file",
            key_file,
        ],
        &[],
    )
    .await;
    assert!(signed.ok, "{}", signed.stderr);
    let again = keyward(
        &[
            "--server",
            &server,
            "sign-in",
            "--key-file",
            key_file,
            "--name",
            "Heron desk",
        ],
        &[],
    )
    .await;
    assert!(again.ok, "{}", again.stderr);
    let token = again.stdout["token"].as_str().unwrap().to_string();

    let export = keyward(&["--server", &server, "export", "--token", &token], &[]).await;
    assert!(export.ok, "{}", export.stderr);
    let events = export.stdout["events"].as_array().unwrap().clone();
    let heron = events
        .iter()
        .position(|e| e["event"]["device_name"] == "Heron desk")
        .expect("the sign-in's device, opened");
    let file = dir.path().join("export.json");
    std::fs::write(&file, export.stdout.to_string()).unwrap();
    let checked = keyward(&["verify-export", file.to_str().unwrap()], &[]).await;
    assert!(checked.ok, "{}", checked.stderr);
    assert_eq!(checked.stdout["events"], events.len());

    let mut tampered = export.stdout.clone();
    tampered["events"][heron]["event"]["address"] = "198.51.100.1".into();
    std::fs::write(&file, tampered.to_string()).unwrap();
    let refused = keyward(&["verify-export", file.to_str().unwrap()], &[]).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("export_invalid"),
        "{}",
        refused.stderr
    );
}

/// `--session-key`: the new session is bound to a key kept in its own owner-only file, apart
/// from the printed token. The token alone (or with another key) is refused; with the key
/// file it works. The token copied off the machine is worth nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_bound_to_a_key_file_refuses_its_token_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, server) = local_keywardd(dir.path()).await;
    let key_file = dir.path().join("key.json");
    let session_key = dir.path().join("session.key");
    let signed = keyward(
        &[
            "--server",
            &server,
            "sign-up",
            "ada",
            "--key-file",
            key_file.to_str().unwrap(),
            "--session-key",
            session_key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(signed.ok, "{}", signed.stderr);
    assert_eq!(signed.stdout["session"]["binding"], "software");
    assert!(
        signed.stdout["binding"]
            .as_str()
            .unwrap()
            .starts_with("software-bound")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&session_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the session key file is the owner's only"
        );
    }
    let token = signed.stdout["token"].as_str().unwrap().to_string();
    let key_text = std::fs::read_to_string(&session_key).unwrap();
    assert!(!key_text.contains(&token) && !token.contains(key_text.trim()));

    let with_key = keyward(
        &[
            "--server",
            &server,
            "sessions",
            "--token",
            &token,
            "--session-key",
            session_key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(with_key.ok, "{}", with_key.stderr);
    assert_eq!(with_key.stdout[0]["binding"], "software");

    // The token copied to another machine: alone, then with that machine's own key.
    let alone = keyward(&["--server", &server, "account", "--token", &token], &[]).await;
    assert!(!alone.ok);
    assert!(alone.stderr.contains("proof_required"), "{}", alone.stderr);
    let other_key = dir.path().join("other.key");
    std::fs::write(
        &other_key,
        keyward_core::proof_key::ProofKey::generate().to_secret(),
    )
    .unwrap();
    let other = keyward(
        &[
            "--server",
            &server,
            "account",
            "--token",
            &token,
            "--session-key",
            other_key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!other.ok);
    assert!(other.stderr.contains("proof_invalid"), "{}", other.stderr);
}
