//! The UI's wire types are generated from the Rust ones (ts-rs) and committed as
//! `ui/src/lib/wire.ts`. This test fails when that file is stale; regenerate it with
//! `KEYWARD_UPDATE_WIRE=1 cargo test --test wire_types`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keyward_desktop::desktop::{AppStatus, FeedMessage, NewRecoveryKey, Overview};
use keyward_proto::*;
use ts_rs::{Config, TS};

fn declarations() -> String {
    // Times are Unix milliseconds: exact as JS numbers until the year 287,396.
    let cfg = Config::new().with_large_int("number");
    let decls = [
        ApiError::decl(&cfg),
        KeyPrompt::decl(&cfg),
        KeyInfo::decl(&cfg),
        KeyPasskey::decl(&cfg),
        KeyPasskeys::decl(&cfg),
        keyward_desktop::desktop::KeyPasskeyView::decl(&cfg),
        keyward_desktop::desktop::KeyPasskeysView::decl(&cfg),
        ErrorCode::decl(&cfg),
        ClientInfo::decl(&cfg),
        AccountState::decl(&cfg),
        AccountView::decl(&cfg),
        RecoveryWindow::decl(&cfg),
        AuthenticatorStatus::decl(&cfg),
        AuthenticatorView::decl(&cfg),
        DeviceView::decl(&cfg),
        SessionScope::decl(&cfg),
        SessionBinding::decl(&cfg),
        SessionView::decl(&cfg),
        SteppedUp::decl(&cfg),
        EndedSessions::decl(&cfg),
        RemovalImpact::decl(&cfg),
        RecoveryKeyStatus::decl(&cfg),
        RecoveryPurpose::decl(&cfg),
        RecoveryStarted::decl(&cfg),
        ReadinessLevel::decl(&cfg),
        NextStep::decl(&cfg),
        Readiness::decl(&cfg),
        EventKind::decl(&cfg),
        Urgency::decl(&cfg),
        EventDetail::decl(&cfg),
        SecurityEvent::decl(&cfg),
        EventPage::decl(&cfg),
        ServerInfo::decl(&cfg),
        AuthorizationRequestView::decl(&cfg),
        ScopeView::decl(&cfg),
        AuthorizationDecision::decl(&cfg),
        AppStatus::decl(&cfg),
        keyward_desktop::keys::KeyKind::decl(&cfg),
        Overview::decl(&cfg),
        NewRecoveryKey::decl(&cfg),
        FeedMessage::decl(&cfg),
    ];
    let mut out = String::from(
        "// Generated from the Rust wire types (keyward-proto, src-tauri/desktop.rs) by\n\
         // tests/wire_types.rs. Do not edit: `KEYWARD_UPDATE_WIRE=1 cargo test --test wire_types`.\n\n",
    );
    for d in decls {
        out.push_str("export ");
        out.push_str(&d);
        out.push_str("\n\n");
    }
    out.trim_end().to_string() + "\n"
}

#[test]
fn ui_wire_types_are_generated_from_rust_and_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ui/src/lib/wire.ts");
    let fresh = declarations();
    if std::env::var_os("KEYWARD_UPDATE_WIRE").is_some() {
        std::fs::write(path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == fresh,
        "ui/src/lib/wire.ts is stale: run KEYWARD_UPDATE_WIRE=1 cargo test --test wire_types"
    );
}
