//! Deleting an account and exporting its log (issue 15): deletion needs a fresh step-up, every
//! open stream gets the urgent `account_deleted` alert and then ends, nothing of the account
//! works afterwards (its tokens, its key, its recovery key), the chain and its checkpoints still
//! verify, and the person's device names and addresses are gone from the database's bytes. The
//! export verifies on its own, and a tampered one does not.

use std::sync::Arc;

use keyward_core::security_log::{ExportProblem, verify_export};
use keyward_proto::*;
use keyward_server::config::AdminCommand;
use reqwest::StatusCode;

use crate::harness::*;
use crate::stream::Sse;

/// A device name no other part of the database could hold by chance.
const DEVICE: &str = "Zebrafish-7Q workstation";

async fn delete_account(h: &Harness, token: &str) -> StatusCode {
    let res = h
        .http
        .delete(format!("{}/api/v1/account", h.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    res.status()
}

fn stored_mentions(h: &Harness, text: &str) -> bool {
    let bytes = h.everything_stored();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

fn verify_log_passes(h: &Harness) {
    let mut key = h.db.as_os_str().to_owned();
    key.push(".log-key");
    let (code, text) = crate::log::verify_log(&h.db_url, std::path::Path::new(&key));
    assert_eq!(code, 0, "{text}");
}

#[tokio::test]
async fn deleting_needs_a_step_up_alerts_every_stream_and_leaves_nothing_usable() {
    let h = Harness::start().await;
    let mut key = new_key();
    let first = h.create_account(&mut key, "ada").await;
    let second = h.sign_in(&mut key, Some("ada"), DEVICE).await.unwrap();
    let recovery_key = crate::recovery::set_up(&h, &second.token).await;
    let mut bystander_key = new_key();
    let bystander = h.create_account(&mut bystander_key, "grace").await;
    assert!(
        stored_mentions(&h, DEVICE),
        "the device's name is stored while the account lives"
    );

    // A session whose last touch is older than the step-up window may not delete.
    h.clock.advance_secs(6 * 60);
    let refused = h
        .send::<serde_json::Value>(
            reqwest::Method::DELETE,
            "/api/v1/account",
            Some(&second.token),
            None::<&()>,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::StepUpRequired);
    h.get::<AccountView>("/api/v1/account", &second.token)
        .await
        .unwrap();

    let token = h.step_up(&second.token, &mut key).await;
    let mut streams = vec![
        Sse::open(&h, &first.token, None).await,
        Sse::open(&h, &token, None).await,
    ];
    assert_eq!(delete_account(&h, &token).await, StatusCode::NO_CONTENT);

    // Every stream's last event is the urgent alert, then it ends.
    for stream in &mut streams {
        let mut last = None;
        while let Some(e) = stream.next().await {
            last = Some(e);
        }
        let last = last.expect("the stream got the alert");
        assert_eq!(last.kind, EventKind::AccountDeleted);
        assert_eq!(last.urgency, Urgency::Urgent);
    }
    // Nothing of the account answers: its sessions, its key, its recovery key.
    for token in [&first.token, &second.token, &token] {
        let refused = h
            .get::<AccountView>("/api/v1/account", token)
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
    let refused = h.sign_in(&mut key, None, "laptop").await.unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::AuthenticationFailed);
    assert!(
        crate::recovery::redeem(&h, "ada", &recovery_key)
            .await
            .is_err()
    );
    // The bystander is untouched, the chain and its checkpoints verify, and the person's
    // device name is nowhere in the database's bytes.
    h.get::<AccountView>("/api/v1/account", &bystander.token)
        .await
        .unwrap();
    assert_eq!(h.store().verify_chain().unwrap().first_broken, None);
    verify_log_passes(&h);
    assert!(
        !stored_mentions(&h, DEVICE),
        "the device's name outlived the account"
    );
    assert!(
        !stored_mentions(&h, "ada's first key"),
        "the key's name outlived the account"
    );
    // The name is free again: a new account, with nothing of the old one.
    let mut new_owner_key = new_key();
    let again = h.create_account(&mut new_owner_key, "ada").await;
    assert_ne!(again.account.id, first.account.id);
    assert_eq!(h.events(&again.token).await.len(), 1);
}

#[tokio::test]
async fn the_export_verifies_against_the_chain_and_a_tampered_one_does_not() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let mut other_key = new_key();
    h.create_account(&mut other_key, "grace").await;
    let me = h.sign_in(&mut key, Some("ada"), DEVICE).await.unwrap();
    h.sign_in(&mut other_key, Some("grace"), "elsewhere")
        .await
        .unwrap();
    h.add_key(&me.token, &mut new_key(), "Spare key")
        .await
        .unwrap();

    let export: LogExport = h.get("/api/v1/events/export", &me.token).await.unwrap();
    let shown = h.events(&me.token).await;
    assert_eq!(export.events.len(), shown.len());
    assert!(export.events.iter().all(|e| e.sealed.is_some()));
    assert!(
        export
            .events
            .iter()
            .any(|e| e.event.device_name.as_deref() == Some(DEVICE))
    );
    let head: LogHead = h.get("/api/v1/log/checkpoint", &me.token).await.unwrap();
    let public = ed25519_dalek::VerifyingKey::from_bytes(
        &keyward_core::secret::unb64(&head.public_key)
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(verify_export(&export, Some(&public)), Ok(shown.len()));

    let tampered = |f: &dyn Fn(&mut LogExport)| {
        let mut copy = export.clone();
        f(&mut copy);
        verify_export(&copy, Some(&public)).unwrap_err()
    };
    let renamed = tampered(&|x| x.events[1].event.device_name = Some("my phone".into()));
    assert!(matches!(renamed, ExportProblem::Details(_)), "{renamed}");
    let moved = tampered(&|x| x.events[1].event.at += 1);
    assert!(matches!(moved, ExportProblem::Hash(_)), "{moved}");
    let dropped = tampered(&|x| {
        x.events.remove(1);
    });
    assert_eq!(dropped, ExportProblem::Signature);
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    assert_eq!(
        verify_export(&export, Some(&other)),
        Err(ExportProblem::OtherKey)
    );
}

#[tokio::test]
async fn the_operator_deletes_an_account_without_a_ceremony_and_gains_nothing() {
    let h = Harness::start().await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let mut stream = Sse::open(&h, &me.token, None).await;
    let config = local_config(&h.db, &h.db_url, h.origin.clone());
    let delete = || AdminCommand::Delete {
        username: "ada".into(),
    };
    let out = keyward_server::admin::run(&config, delete(), h.clock.clone() as Arc<_>).unwrap();
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["deleted"], true);
    let mut last = None;
    while let Some(e) = stream.next().await {
        last = Some(e);
    }
    assert_eq!(last.map(|e| e.kind), Some(EventKind::AccountDeleted));
    let refused = h
        .get::<AccountView>("/api/v1/account", &me.token)
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let refused = h.sign_in(&mut key, None, "laptop").await.unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::AuthenticationFailed);
    // Gone is gone: a second delete finds nothing, and the log verifies.
    assert!(keyward_server::admin::run(&config, delete(), h.clock.clone() as Arc<_>).is_err());
    verify_log_passes(&h);
    assert!(!stored_mentions(&h, "first laptop"));
}
