//! The desktop's IPC commands on Tauri's mock runtime, against the real embedded keywardd and a
//! virtual key: what the UI calls, with the `{code, message}` errors it gets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keyward_desktop::vault::{MemoryVault, TokenVault};
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{WebviewWindow, WebviewWindowBuilder};

fn app(
    data: &std::path::Path,
    clock: Arc<keyward_core::ManualClock>,
) -> (tauri::App<MockRuntime>, WebviewWindow<MockRuntime>) {
    app_with_vault(data, clock, Arc::new(MemoryVault::default()))
}

fn app_with_vault(
    data: &std::path::Path,
    clock: Arc<keyward_core::ManualClock>,
    vault: Arc<MemoryVault>,
) -> (tauri::App<MockRuntime>, WebviewWindow<MockRuntime>) {
    app_dating_proofs_by(data, clock, vault, Arc::new(keyward_core::SystemClock))
}

/// As `app_with_vault`, its DPoP proofs dated by `proofs` (keywardd's clock).
fn app_dating_proofs_by(
    data: &std::path::Path,
    clock: Arc<keyward_core::ManualClock>,
    vault: Arc<MemoryVault>,
    proofs: Arc<dyn keyward_core::Clock>,
) -> (tauri::App<MockRuntime>, WebviewWindow<MockRuntime>) {
    let client = keyward_proto::ClientInfo {
        name: "Test desktop".into(),
        platform: "Linux".into(),
    };
    let desktop = keyward_desktop::desktop::Desktop::with(data, client, clock, Box::new(vault))
        .unwrap()
        .dating_proofs_by(proofs);
    let app = keyward_desktop::with_commands(mock_builder())
        .manage(desktop)
        .build(mock_context(noop_assets()))
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    // No hardware here: these tests use the virtual key (the hardware path has its own tests
    // in keyward-client, against Nitrokey's fido-authenticator).
    let status = invoke(&window, "choose_key", json!({ "kind": "virtual" })).unwrap();
    assert_eq!(status["key_kind"], "virtual");
    (app, window)
}

fn invoke(window: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    get_ipc_response(
        window,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap())
}

#[test]
fn the_commands_a_person_uses_work_over_ipc_with_one_error_shape() {
    let data = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(keyward_core::ManualClock::new(0));
    let (_app, w) = app(data.path(), clock.clone());

    // Before connecting: a clear error, in the wire shape.
    let err = invoke(&w, "overview", json!({})).unwrap_err();
    assert_eq!(
        err,
        json!({"code": "unauthenticated", "message": "sign in with your security key first"})
    );

    let status = invoke(&w, "connect", json!({"server": null})).unwrap();
    assert_eq!(status["embedded"], true);
    assert_eq!(status["rp_id"], "localhost");
    // The origin the key signs for is the address the app talks to, without a trailing slash.
    let server = status["server"].as_str().unwrap();
    assert!(server.starts_with("http://localhost:"), "{server}");
    assert_eq!(status["origin"], server.trim_end_matches('/'));
    // A plain-http server on another computer is refused before it is asked anything.
    let far = invoke(
        &w,
        "connect",
        json!({"server": "http://keyward.example.com:9"}),
    )
    .unwrap_err();
    assert_eq!(far["code"], "wrong_site", "{far}");
    let status = invoke(&w, "connect", json!({"server": null})).unwrap();
    assert!(status["key_label"].as_str().unwrap().contains("not secure"));

    let bad = invoke(&w, "connect", json!({"server": "not a url"})).unwrap_err();
    assert_eq!(bad["code"], "invalid_input");
    let status = invoke(&w, "connect", json!({"server": ""})).unwrap();
    assert_eq!(status["embedded"], true, "empty means the built-in server");

    let account = invoke(
        &w,
        "create_account",
        json!({"username": "Ada", "displayName": "Ada L"}),
    )
    .unwrap();
    assert_eq!(account["username"], "ada");
    let taken = invoke(
        &w,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap_err();
    assert_eq!(taken["code"], "username_unavailable");

    let overview = invoke(&w, "overview", json!({})).unwrap();
    assert_eq!(overview["readiness"]["level"], "at_risk");
    assert_eq!(overview["sessions"].as_array().unwrap().len(), 1);

    let added = invoke(&w, "add_key", json!({"nickname": "Spare"})).unwrap();
    assert_eq!(added["nickname"], "Spare");
    assert_eq!(
        added["transports"],
        json!(["internal"]),
        "a virtual key says so"
    );

    let made = invoke(&w, "create_recovery_key", json!({})).unwrap();
    let key = made["key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 39);
    let typo = invoke(
        &w,
        "prove_recovery_key",
        json!({"typed": "ABCD", "purpose": "confirm"}),
    )
    .unwrap_err();
    assert_eq!(typo["code"], "invalid_input");
    let confirmed = invoke(
        &w,
        "prove_recovery_key",
        json!({"typed": key, "purpose": "confirm"}),
    )
    .unwrap();
    assert!(confirmed["confirmed_at"].is_number());
    let overview = invoke(&w, "overview", json!({})).unwrap();
    assert_eq!(overview["readiness"]["level"], "protected");

    let missing = invoke(
        &w,
        "end_session",
        json!({"id": "6b657977-6172-4476-8972-7475616c6b79"}),
    )
    .unwrap_err();
    assert_eq!(missing["code"], "not_found");

    invoke(&w, "sign_out", json!({})).unwrap();
    let status = invoke(&w, "status", json!({})).unwrap();
    assert!(status["account"].is_null());
    // The virtual keys persist: sign in again, usernameless.
    let again = invoke(&w, "sign_in", json!({"username": null})).unwrap();
    assert_eq!(again["username"], "ada");
}

#[test]
fn the_app_locks_after_the_idle_timeout_and_a_touch_unlocks_it() {
    let data = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(keyward_core::ManualClock::new(0));
    let (_app, w) = app(data.path(), clock.clone());
    invoke(&w, "connect", json!({"server": null})).unwrap();
    invoke(
        &w,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap();

    clock.advance_secs(14 * 60);
    invoke(&w, "sessions", json!({})).expect("still within the idle timeout");
    clock.advance_secs(14 * 60);
    let status = invoke(&w, "status", json!({})).unwrap();
    assert_eq!(status["locked"], false, "activity 14 minutes ago");
    clock.advance_secs(60);
    let status = invoke(&w, "status", json!({})).unwrap();
    assert_eq!(status["locked"], true);
    assert!(status["account"].is_null());
    assert_eq!(
        invoke(&w, "overview", json!({})).unwrap_err()["code"],
        "unauthenticated"
    );

    invoke(&w, "sign_in", json!({"username": null})).unwrap();
    let status = invoke(&w, "status", json!({})).unwrap();
    assert_eq!(status["locked"], false);
    assert_eq!(status["account"]["username"], "ada");
}

#[test]
fn recovering_on_a_new_machine_and_cancelling_it_from_the_old_one() {
    let clock = std::sync::Arc::new(keyward_core::ManualClock::new(0));
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a_app, a) = app(a_dir.path(), clock.clone());
    let (_b_app, b) = app(b_dir.path(), clock.clone());

    let server = invoke(&a, "connect", json!({"server": null})).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    invoke(
        &a,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap();
    let key = invoke(&a, "create_recovery_key", json!({})).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    invoke(
        &a,
        "prove_recovery_key",
        json!({"typed": key, "purpose": "confirm"}),
    )
    .unwrap();

    // Machine B has lost every key but has the recovery key.
    invoke(&b, "connect", json!({"server": server})).unwrap();
    let wrong = invoke(
        &b,
        "redeem_recovery_key",
        json!({"username": "ada", "typed": "0000"}),
    )
    .unwrap_err();
    assert_eq!(
        wrong["code"], "invalid_input",
        "a mistyped key is caught before it counts"
    );
    let started = invoke(
        &b,
        "redeem_recovery_key",
        json!({"username": "ada", "typed": key}),
    )
    .unwrap();
    assert_eq!(started["account"]["state"], "recovery_pending");
    let b_status = invoke(&b, "status", json!({})).unwrap();
    assert_eq!(b_status["recovering"], true);
    assert!(b_status["session_id"].is_string());

    // Machine A sees it and cancels with one touch of its key.
    let a_status = invoke(&a, "overview", json!({})).unwrap();
    assert_eq!(a_status["account"]["state"], "recovery_pending");
    let cancelled = invoke(&a, "cancel_recovery", json!({})).unwrap();
    assert_eq!(cancelled["state"], "active");
    assert_eq!(
        invoke(&b, "overview", json!({})).unwrap_err()["code"],
        "unauthenticated"
    );
}

#[test]
fn a_restart_resumes_the_session_from_the_secret_store_and_signing_out_forgets_it() {
    let clock = Arc::new(keyward_core::ManualClock::new(0));
    let vault = Arc::new(MemoryVault::default());
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_first_app, first) = app_with_vault(first_dir.path(), clock.clone(), vault.clone());
    let server = invoke(&first, "connect", json!({"server": null})).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    invoke(
        &first,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap();
    let saved = vault.load().expect("the token rests in the vault");
    assert_eq!(saved.server, server);
    assert!(
        !std::fs::read_dir(first_dir.path()).unwrap().any(|f| {
            std::fs::read(f.unwrap().path()).is_ok_and(|b| {
                b.windows(saved.token.len())
                    .any(|w| w == saved.token.as_bytes())
            })
        }),
        "the token is in no file of the data folder"
    );

    // "Restart": a new app instance, same vault, same server.
    let (_second_app, second) = app_with_vault(second_dir.path(), clock.clone(), vault.clone());
    let status = invoke(&second, "connect", json!({"server": server})).unwrap();
    assert_eq!(
        status["account"]["username"], "ada",
        "resumed without a touch"
    );
    invoke(&second, "overview", json!({})).unwrap();

    invoke(&second, "sign_out", json!({})).unwrap();
    assert!(vault.load().is_none(), "signing out forgets the token");
    let (_third_app, third) = app_with_vault(second_dir.path(), clock, vault);
    let status = invoke(&third, "connect", json!({"server": server})).unwrap();
    assert!(status["account"].is_null());
}

#[test]
fn the_key_choice_is_remembered_and_a_stray_pin_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let clock = Arc::new(keyward_core::ManualClock::new(1_795_478_400_000));
    {
        let (_app, window) = app(data.path(), clock.clone());
        let status = invoke(&window, "choose_key", json!({ "kind": "security_key" })).unwrap();
        assert_eq!(status["key_kind"], "security_key");
        assert_eq!(status["key_label"], "Security key (USB or NFC)");
        let err = invoke(&window, "choose_key", json!({ "kind": "fingerprint" })).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let err = invoke(&window, "answer_pin", json!({ "pin": "1234" })).unwrap_err();
        assert_eq!(err["code"], "invalid_input");
        invoke(&window, "cancel_key", json!({})).unwrap();
    }
    let desktop = keyward_desktop::desktop::Desktop::with(
        data.path(),
        keyward_proto::ClientInfo {
            name: "again".into(),
            platform: "Linux".into(),
        },
        clock,
        Box::new(Arc::new(MemoryVault::default())),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(desktop.status()).unwrap();
    assert_eq!(status.key_kind, keyward_desktop::keys::KeyKind::SecurityKey);
}

/// The person recovering is told to come back when the window ends; they may come back much
/// later. The app's idle lock leaves a recovery session alone (the server bounds it by its
/// enrolment deadline instead), and a restart resumes it from the secret store.
#[test]
fn a_recovery_session_survives_the_idle_lock_and_a_restart() {
    let clock = Arc::new(keyward_core::ManualClock::new(0));
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a_app, a) = app(a_dir.path(), clock.clone());
    let server = invoke(&a, "connect", json!({"server": null})).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    invoke(
        &a,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap();
    let key = invoke(&a, "create_recovery_key", json!({})).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();

    let vault = Arc::new(MemoryVault::default());
    let (_b_app, b) = app_with_vault(b_dir.path(), clock.clone(), vault.clone());
    invoke(&b, "connect", json!({"server": server})).unwrap();
    invoke(
        &b,
        "redeem_recovery_key",
        json!({"username": "ada", "typed": key}),
    )
    .unwrap();
    // Far past the idle timeout: still held, not locked.
    clock.advance_secs(3 * 24 * 3600);
    let status = invoke(&b, "status", json!({})).unwrap();
    assert_eq!(status["locked"], false);
    assert_eq!(status["recovering"], true);
    assert_eq!(status["account"]["state"], "recovery_pending");
    // During the window it sees its window, and nothing of the account.
    assert_eq!(
        invoke(&b, "sessions", json!({})).unwrap_err()["code"],
        "recovery_in_progress"
    );

    // "Restart": a new app instance, same vault: the recovery session resumes.
    let b2_dir = tempfile::tempdir().unwrap();
    let (_b2_app, b2) = app_with_vault(b2_dir.path(), clock.clone(), vault.clone());
    let status = invoke(&b2, "connect", json!({"server": server})).unwrap();
    assert_eq!(status["recovering"], true);
    assert_eq!(status["account"]["state"], "recovery_pending");
    assert!(status["session_id"].is_string());
    assert!(vault.load().is_some_and(|s| s.recovery));

    // A full session still locks after the idle timeout.
    clock.advance_secs(16 * 60);
    assert_eq!(invoke(&a, "status", json!({})).unwrap()["locked"], true);
}

/// keywardd on `listener` over the database `db`, on Tauri's runtime (which outlives the call).
fn keywardd(
    listener: std::net::TcpListener,
    db: &std::path::Path,
) -> keyward_server::RunningServer {
    keywardd_on(listener, db, Arc::new(keyward_core::SystemClock))
}

/// As `keywardd`, telling time by `clock`.
fn keywardd_on(
    listener: std::net::TcpListener,
    db: &std::path::Path,
    clock: Arc<dyn keyward_core::Clock>,
) -> keyward_server::RunningServer {
    let port = listener.local_addr().unwrap().port();
    let origin = url::Url::parse(&format!("http://localhost:{port}")).unwrap();
    let config = keyward_server::Config::local(db.to_path_buf(), origin);
    tauri::async_runtime::block_on(keyward_server::start_on(listener, config, clock)).unwrap()
}

/// A step-up replaces the session's token (the server refuses the old one from then on): the
/// app carries on with the new one, keeps it in the secret store in place of the old, and its
/// live feed reconnects with it instead of being cut off.
#[test]
fn a_step_up_s_new_token_is_used_kept_in_the_secret_store_and_followed_by_the_feed() {
    use tauri::Manager;
    let (data, served) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // One clock for keywardd and the app: moving it makes the sign-in's touch too old.
    let clock = Arc::new(keyward_core::ManualClock::new(1_795_478_400_000));
    let _server = keywardd_on(listener, &served.path().join("keyward.db"), clock.clone());
    let url = format!("http://localhost:{port}/");
    let vault = Arc::new(MemoryVault::default());
    let (app, w) = app_dating_proofs_by(data.path(), clock.clone(), vault.clone(), clock.clone());
    invoke(&w, "connect", json!({"server": url})).unwrap();
    invoke(
        &w,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap();
    let old = vault.load().unwrap().token;
    let desktop = app.state::<keyward_desktop::desktop::Desktop>();
    let (followed, session_id) = tauri::async_runtime::block_on(desktop.watch_session()).unwrap();
    let (mut events, feed) = tauri::async_runtime::block_on(async {
        keyward_client::EventFeed::follow(followed.clone(), session_id, Some(0))
    });

    clock.advance_secs(301);
    invoke(&w, "add_key", json!({"nickname": "Spare"})).expect("stepped up, then added");
    let new = vault.load().unwrap().token;
    assert_ne!(new, old, "the secret store holds the new token");
    assert_eq!(followed.borrow().token(), Some(new.as_str()));
    let base = url::Url::parse(&url).unwrap();
    let refused = tauri::async_runtime::block_on(
        keyward_client::Api::new(base.clone())
            .with_token(&old)
            .account(),
    )
    .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(keyward_proto::ErrorCode::Unauthenticated)
    );
    let overview = invoke(&w, "overview", json!({})).expect("the app uses the new token");
    assert_eq!(overview["sessions"][0]["id"], json!(session_id));
    tauri::async_runtime::block_on(async {
        loop {
            let e = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
                .await
                .expect("the feed reconnected with the new token")
                .expect("the feed goes on");
            if e.kind == keyward_proto::EventKind::AuthenticatorAdded {
                break;
            }
        }
    });
    assert!(!feed.is_finished());

    // A restart resumes with the new token from the secret store.
    let again = tempfile::tempdir().unwrap();
    let (_app, w) = app_dating_proofs_by(again.path(), clock.clone(), vault, clock);
    let status = invoke(&w, "connect", json!({"server": url})).unwrap();
    assert_eq!(status["account"]["username"], "ada");
    assert_eq!(status["session_id"], json!(session_id));
}

#[test]
fn the_app_raises_the_alarm_when_the_server_s_log_no_longer_extends_what_it_saw() {
    let (data, served) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = served.path().join("keyward.db");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = keywardd(listener, &db);
    let url = format!("http://localhost:{port}/");
    let (_app, w) = app(data.path(), Arc::new(keyward_core::ManualClock::new(0)));

    let status = invoke(&w, "connect", json!({"server": url})).unwrap();
    assert!(status["log_alarm"].is_null());
    let ada = invoke(
        &w,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap();
    invoke(&w, "add_key", json!({"nickname": "Spare"})).unwrap();
    invoke(&w, "overview", json!({})).unwrap();
    let seen = std::fs::read_to_string(data.path().join("log-heads.json")).unwrap();
    assert!(
        seen.contains(&url) && seen.contains(ada["id"].as_str().unwrap()),
        "the account's signed head is remembered per server and account: {seen}"
    );
    // Looking again, with nothing changed, raises nothing.
    let status = invoke(&w, "connect", json!({"server": url})).unwrap();
    assert!(status["log_alarm"].is_null(), "{status}");

    // The operator, with the database and the log key, cuts the log short and re-signs its
    // new head: keywardd itself cannot tell any more, so it starts.
    tauri::async_runtime::block_on(server.shutdown(std::time::Duration::from_secs(1)));
    let key = keyward_server::log_seal::load_key(&keyward_server::log_seal::default_key_path(&db))
        .unwrap()
        .unwrap();
    let store = keyward_core::Store::open(&db).unwrap();
    store
        .write(|tx| {
            tx.raw_execute(
                "DROP TRIGGER events_no_delete; DROP TRIGGER log_checkpoints_no_delete;
                 DELETE FROM events WHERE seq > 1; DELETE FROM log_checkpoints WHERE seq > 1;",
            )?;
            tx.checkpoint_head(&key)?;
            Ok::<_, keyward_core::CoreError>(())
        })
        .unwrap();
    drop(store);
    let _server = keywardd(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
        &db,
    );

    // The app remembers what it saw, and says so.
    let status = invoke(&w, "connect", json!({"server": url})).unwrap();
    let alarm = status["log_alarm"].as_str().expect("the alarm is raised");
    assert!(alarm.contains("shorter than before"), "{alarm}");
    // It stands: the old head stays remembered, so every later check raises it again.
    let status = invoke(&w, "connect", json!({"server": url})).unwrap();
    assert!(status["log_alarm"].as_str().is_some());
    assert_eq!(
        std::fs::read_to_string(data.path().join("log-heads.json")).unwrap(),
        seen,
        "the head seen before is kept"
    );
}

fn sign_in_event(device_name: &str) -> keyward_proto::SecurityEvent {
    keyward_proto::SecurityEvent {
        id: 7,
        account_id: uuid::Uuid::new_v4(),
        kind: keyward_proto::EventKind::SignIn,
        at: 0,
        urgency: keyward_proto::Urgency::Urgent,
        session_id: Some(uuid::Uuid::new_v4()),
        device_id: Some(uuid::Uuid::new_v4()),
        device_name: Some(device_name.into()),
        address: Some("203.0.113.9".into()),
        detail: keyward_proto::EventDetail {
            authenticator_name: Some("YubiKey".into()),
            known_device: Some(false),
            place: Some("Berlin, DE".into()),
            ..Default::default()
        },
    }
}

#[test]
fn a_sign_in_alert_says_what_the_server_knows_and_marks_the_device_s_own_name() {
    let event = sign_in_event("(scheduled drill, ignore)” Keyward: all is well “");
    let alert = keyward_desktop::desktop::alert_for(&event, uuid::Uuid::new_v4()).unwrap();
    assert_eq!(alert.title, "New sign-in to your account");
    let body = &alert.body;
    assert!(
        body.starts_with("A device new to your account signed in with the key “YubiKey”"),
        "{body}"
    );
    assert!(body.contains("from 203.0.113.9 (Berlin, DE)"), "{body}");
    assert!(
        body.contains("on a device that calls itself “(scheduled drill, ignore)' Keyward: all …”"),
        "the name is marked as the device's own and cut short: {body}"
    );
    assert!(body.contains("proves nothing"), "{body}");
    // The name cannot close its quotes early and speak as the server.
    assert_eq!(body.matches('“').count(), 2, "{body}");
    assert_eq!(body.matches('”').count(), 2, "{body}");
}

#[test]
fn notification_bodies_escape_markup() {
    let event = sign_in_event("<b>Keyward</b> & <i>co</i>");
    let alert = keyward_desktop::desktop::alert_for(&event, uuid::Uuid::new_v4()).unwrap();
    let shown = keyward_desktop::notify::body_text(&alert.body);
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        assert!(!shown.contains('<') && !shown.contains('>'), "{shown}");
        assert!(
            shown.contains("&lt;b&gt;Keyward&lt;/b&gt; &amp; &lt;i&gt;co&lt;/i&gt;"),
            "{shown}"
        );
        assert!(shown.contains("the device&apos;s own"), "{shown}");
    }
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    assert_eq!(shown, alert.body);
}

#[test]
fn the_device_secret_rests_in_the_secret_store_and_an_old_plain_file_moves_there() {
    let data = tempfile::tempdir().unwrap();
    let old_file = data.path().join("device-secret");
    std::fs::write(&old_file, "secret-from-an-old-version\n").unwrap();
    let vault = Arc::new(MemoryVault::default());
    let clock = Arc::new(keyward_core::ManualClock::new(0));
    let (_app, w) = app_with_vault(data.path(), clock, vault.clone());
    assert_eq!(
        vault.load_device_secret().as_deref(),
        Some("secret-from-an-old-version"),
        "moved into the secret store"
    );
    assert!(!old_file.exists(), "and the plain file is gone");

    invoke(&w, "connect", json!({"server": null})).unwrap();
    invoke(
        &w,
        "create_account",
        json!({"username": "ada", "displayName": null}),
    )
    .unwrap();
    let secret = vault.load_device_secret().unwrap();
    assert_ne!(
        secret, "secret-from-an-old-version",
        "the server's secret is kept"
    );
    assert!(!old_file.exists());
    let in_a_file = std::fs::read_dir(data.path()).unwrap().any(|f| {
        std::fs::read(f.unwrap().path())
            .is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
    });
    assert!(
        !in_a_file,
        "the device secret is in no file of the data folder"
    );

    // Signing in again is recognised as this device, by the secret from the store.
    invoke(&w, "sign_out", json!({})).unwrap();
    invoke(&w, "sign_in", json!({"username": "ada"})).unwrap();
    let page = invoke(&w, "events", json!({"before": null})).unwrap();
    let newest_sign_in = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "sign_in")
        .unwrap()
        .clone();
    assert_eq!(
        newest_sign_in["detail"]["known_device"], true,
        "{newest_sign_in}"
    );
}
