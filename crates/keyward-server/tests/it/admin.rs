//! `keywardd admin` (issue 15): the operator sees readiness and disables an account for
//! abuse, and can do nothing that takes an account over (`no_backdoor` holds the surface).

use std::sync::Arc;

use keyward_proto::*;
use keyward_server::config::AdminCommand;
use reqwest::StatusCode;

use crate::harness::*;

/// An admin command through the library, on the test's clock (the binary's clock is the
/// system's, and the harness's sessions live on a manual one).
fn admin(h: &Harness, command: AdminCommand) -> serde_json::Value {
    let config = local_config(&h.db, &h.db_url, h.origin.clone());
    let out = keyward_server::admin::run(&config, command, h.clock.clone() as Arc<_>).unwrap();
    serde_json::from_str(&out).unwrap()
}

fn disable(username: &str, reason: &str) -> AdminCommand {
    AdminCommand::Disable {
        username: username.into(),
        reason: reason.into(),
    }
}

#[tokio::test]
async fn a_disabled_account_loses_its_sessions_and_its_owner_is_told_why_only_after_a_key() {
    let h = Harness::start().await;
    let mut key = new_key();
    let first = h.create_account(&mut key, "ada").await;
    let second = h.sign_in(&mut key, Some("ada"), "phone").await.unwrap();
    let mut bystander_key = new_key();
    let bystander = h.create_account(&mut bystander_key, "grace").await;

    let out = admin(
        &h,
        disable("ada", "  spam reported from this account\u{7}  "),
    );
    assert_eq!(out["changed"], true);
    // Both sessions ended at once; another account's did not.
    for token in [&first.token, &second.token] {
        let refused = h
            .get::<SessionView>("/api/v1/session", token)
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
    h.get::<SessionView>("/api/v1/session", &bystander.token)
        .await
        .unwrap();

    // A username alone learns nothing: the begin looks as it always does.
    let begin = h.sign_in_begin(Some("ada")).await;
    assert!(!begin.options.public_key.allow_credentials.is_empty());
    // The owner, having proven the key, is told why, and no session is opened.
    let credential = key.authenticate(&h.origin, &begin.options).unwrap();
    let refused = h
        .sign_in_finish(&begin, credential, "laptop", None)
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error.code, ErrorCode::AccountDisabled);
    assert_eq!(
        refused.error.message,
        "this account was disabled by the service's operator: spam reported from this account"
    );
    // Usernameless, the same.
    let refused = h.sign_in(&mut key, None, "laptop").await.unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::AccountDisabled);

    // Disabling again keeps the first reason.
    assert_eq!(admin(&h, disable("ada", "another"))["changed"], false);
    let listed = admin(&h, AdminCommand::Accounts);
    let ada = &listed["accounts"][0];
    assert_eq!(ada["username"], "ada");
    assert_eq!(ada["disabled_reason"], "spam reported from this account");
    assert_eq!(ada["live_sessions"], 0);

    assert_eq!(
        admin(
            &h,
            AdminCommand::Enable {
                username: "ada".into()
            }
        )["changed"],
        true
    );
    let back = h.sign_in(&mut key, Some("ada"), "laptop").await.unwrap();
    let events = h.events(&back.token).await;
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    let disabled = events
        .iter()
        .find(|e| e.kind == EventKind::AccountDisabled)
        .unwrap();
    assert_eq!(
        disabled.detail.reason.as_deref(),
        Some("spam reported from this account")
    );
    assert_eq!(disabled.urgency, Urgency::Urgent);
    assert_eq!(disabled.session_id, None, "the operator has no session");
    let ended_by_disable = events
        .iter()
        .filter(|e| {
            e.kind == EventKind::SessionEnded
                && e.detail.reason.as_deref() == Some("account_disabled")
        })
        .count();
    assert_eq!(ended_by_disable, 2);
    assert!(kinds.contains(&EventKind::AccountEnabled));
}

#[tokio::test]
async fn bad_admin_input_is_refused_and_changes_nothing() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let config = local_config(&h.db, &h.db_url, h.origin.clone());
    let run = |command| keyward_server::admin::run(&config, command, h.clock.clone() as Arc<_>);
    let before = h.table_counts();
    assert!(
        run(disable("ada", " \u{1b} "))
            .unwrap_err()
            .contains("give the reason"),
        "an empty reason"
    );
    assert!(
        run(disable("nobody", "spam"))
            .unwrap_err()
            .contains("account not found")
    );
    assert!(
        run(disable("", "spam"))
            .unwrap_err()
            .contains("a username is")
    );
    assert!(
        run(AdminCommand::Enable {
            username: "ada".into()
        })
        .is_ok_and(|out| out.contains("\"changed\": false")),
        "enabling an enabled account changes nothing"
    );
    assert_eq!(h.table_counts(), before);
    h.get::<SessionView>("/api/v1/session", &me.token)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_report_counts_what_an_auditor_asks_and_the_listing_holds_no_secrets() {
    let h = Harness::start().await;
    // ada: two keys and a confirmed recovery key would be "protected"; here two keys only.
    let mut ada_key = new_key();
    let ada = h.create_account(&mut ada_key, "ada").await;
    let mut spare = new_key();
    h.add_key(&ada.token, &mut spare, "spare").await.unwrap();
    // grace: one key.
    let mut grace_key = new_key();
    h.create_account(&mut grace_key, "grace").await;
    admin(&h, disable("grace", "abuse"));

    // Through the binary, as an operator runs it (report and listing do not depend on the
    // clock); its log key is the one beside the database.
    let key_path = format!("{}.log-key", h.db.display());
    let origin = h.origin.to_string();
    let base = [
        "--db",
        &h.db_url,
        "--log-key",
        &key_path,
        "--rp-id",
        "localhost",
        "--origin",
        &origin,
    ];
    // JSON on stdout; stderr may carry the log (PostgreSQL's notices at info level).
    let json_of = |command: &[&str]| -> (serde_json::Value, String) {
        let out = keywardd_output(base.iter().chain(command));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}{errors}");
        (serde_json::from_str(&text).expect(&text), text)
    };
    let (report, _) = json_of(&["admin", "report"]);
    assert_eq!(report["accounts"], 2);
    assert_eq!(report["disabled"], 1);
    assert_eq!(report["with_backup_key"], 1);
    assert_eq!(report["with_confirmed_recovery_key"], 0);
    assert_eq!(report["device_bound_keys_only"], 2);
    assert_eq!(report["phishing_resistant_sign_ins_only"], 2);
    assert_eq!(report["protected"], 0);

    let (listed, text) = json_of(&["admin", "accounts"]);
    let names: Vec<&str> = listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "grace"]);
    assert_eq!(listed["accounts"][0]["active_keys"], 2);
    assert_eq!(listed["accounts"][0]["has_backup_key"], true);
    // Nothing a takeover could use: no credential IDs or public keys, no token, no address.
    let credential_ids: Vec<String> = h
        .get::<Vec<AuthenticatorView>>("/api/v1/authenticators", &ada.token)
        .await
        .unwrap()
        .iter()
        .map(|k| k.credential_id.clone())
        .collect();
    for secret in credential_ids
        .iter()
        .chain([&ada.token])
        .map(String::as_str)
        .chain(["127.0.0.1", "credential", "token", "address"])
    {
        assert!(!text.contains(secret), "the listing shows {secret}: {text}");
    }

    // A refusal through the binary: exit 2, the reason in words, nothing changed.
    let (code, text) = keywardd_tool(
        base.iter()
            .chain(&["admin", "disable", "nobody", "--reason", "x"]),
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("account not found"), "{text}");
}
