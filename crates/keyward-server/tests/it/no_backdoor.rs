//! No backdoor (issue 15): the model's promise is that support cannot recover an account, so
//! no one can be talked into it. Every keywardd command and every API operation is on a
//! reviewed list below; a new one fails this test until someone reviews it and adds it, and
//! nothing on either surface may add or reset a credential, shorten or skip a recovery
//! window, or sign anyone in without a ceremony.

use clap::CommandFactory;

use crate::harness::*;

/// Words that would name a way around the keys, anywhere.
const FORBIDDEN: &[&str] = &[
    "impersonat",
    "reset",
    "bypass",
    "skip",
    "override",
    "unlock",
    "shorten",
    "sign-in-as",
    "login-as",
    "force",
];

/// And in an operator's command: it must not hand out a session or put a key on an account
/// (the API has its token endpoints, each behind a ceremony).
const FORBIDDEN_IN_COMMANDS: &[&str] = &["grant", "token", "add-key", "add-credential", "set-key"];

/// keywardd's commands, each reviewed: none acts for a person.
const REVIEWED_COMMANDS: &[&str] = &[
    // Read-only, or maintenance of the whole database with the log verified after.
    "verify-log",
    "check-config",
    "backup",
    "restore",
    "migrate",
    // The apps that may ask a person to sign in through Keyward (OpenID Connect): a client
    // gets nothing without that person's ceremony and consent.
    "client",
    "client add",
    "client list",
    "client remove",
    "client new-secret",
    // The ID-token signing key, rotated; the old one verifies until its tokens expire.
    "rotate-signing-key",
    // The operator's console: readiness, the report, disable and enable (operator.rs).
    "admin",
    "admin accounts",
    "admin report",
    "admin disable",
    "admin enable",
    // Deleting an account (abuse, a legal order; erasure.rs): it ends and removes, it gives
    // no one a session or a key, and nothing of the account can be signed in to afterwards.
    "admin delete",
];

/// The API, each operation reviewed: every one that opens a session or changes a credential
/// first needs a WebAuthn ceremony with the account's key, a fresh step-up, or the recovery
/// key's proof and its window.
const REVIEWED_OPERATIONS: &[&str] = &[
    "GET /healthz",
    "GET /api/v1/server",
    "POST /api/v1/registration/begin",
    "POST /api/v1/registration/finish",
    "POST /api/v1/sign-in/begin",
    "POST /api/v1/sign-in/finish",
    "POST /api/v1/step-up/begin",
    "POST /api/v1/step-up/finish",
    "GET /api/v1/account",
    "DELETE /api/v1/account",
    "GET /api/v1/readiness",
    "GET /api/v1/authenticators",
    "POST /api/v1/authenticators/begin",
    "POST /api/v1/authenticators/finish",
    "PATCH /api/v1/authenticators/{id}",
    "DELETE /api/v1/authenticators/{id}",
    "GET /api/v1/authenticators/{id}/removal-impact",
    "POST /api/v1/authenticators/{id}/report-lost",
    "GET /api/v1/session",
    "GET /api/v1/sessions",
    "DELETE /api/v1/sessions/{id}",
    "POST /api/v1/sessions/end-others",
    "POST /api/v1/sign-out",
    // A browser-bound session's DBSC registration and cookie refresh: proven by the browser's
    // key over a server challenge; they never open a session, only renew a bound one's cookie.
    "POST /api/v1/browser-session/register",
    "POST /api/v1/browser-session/refresh",
    "GET /api/v1/recovery-key",
    "PUT /api/v1/recovery-key",
    "POST /api/v1/recovery-key/challenge",
    "POST /api/v1/recovery-key/verify",
    "POST /api/v1/recovery/redeem/begin",
    "POST /api/v1/recovery/redeem/finish",
    "POST /api/v1/recovery/cancel/begin",
    "POST /api/v1/recovery/cancel/finish",
    "POST /api/v1/recovery/complete",
    "GET /api/v1/events",
    "GET /api/v1/events/export",
    "GET /api/v1/events/stream",
    "GET /api/v1/log/checkpoint",
    // An app's authorization request, seen and decided by the signed-in person (the cookie
    // session and its own-page check); consents listed and revoked by their owner.
    "GET /api/v1/oauth/requests/{id}",
    "POST /api/v1/oauth/requests/{id}/approve",
    "POST /api/v1/oauth/requests/{id}/deny",
    "GET /api/v1/oauth/consents",
    "DELETE /api/v1/oauth/consents/{client_id}",
    // An agent's device code (RFC 8628), looked up and decided by a signed-in person; approval
    // carries its own key ceremony, verified in that request (agents.rs proves a used one fails).
    "POST /api/v1/oauth/device/lookup",
    "POST /api/v1/oauth/device/approve",
    "POST /api/v1/oauth/device/deny",
];

/// The OpenID provider's protocol endpoints, as discovery names them: each issues only what a
/// person's ceremony and consent (or the app's own valid grant) already allowed.
const REVIEWED_PROTOCOL_ENDPOINTS: &[&str] = &[
    "authorization_endpoint /oauth2/authorize",
    "token_endpoint /oauth2/token",
    "introspection_endpoint /oauth2/introspect",
    "revocation_endpoint /oauth2/revoke",
    "userinfo_endpoint /oauth2/userinfo",
    "end_session_endpoint /oauth2/logout",
    "jwks_uri /oauth2/jwks",
    // RFC 8628: issues codes only; nothing is granted until a person approves with a key.
    "device_authorization_endpoint /oauth2/device_authorization",
];

fn commands(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, Vec<String>)>) {
    for sub in cmd.get_subcommands() {
        let name = format!("{prefix}{}", sub.get_name());
        let flags = sub
            .get_arguments()
            .map(|a| a.get_long().unwrap_or(a.get_id().as_str()).to_string())
            .collect();
        out.push((name.clone(), flags));
        commands(sub, &format!("{name} "), out);
    }
}

fn forbidden_word(text: &str, words: &[&'static str]) -> Option<&'static str> {
    let text = text.to_lowercase().replace('_', "-");
    words.iter().copied().find(|w| text.contains(w))
}

fn forbidden_in_command(text: &str) -> Option<&'static str> {
    forbidden_word(text, FORBIDDEN).or(forbidden_word(text, FORBIDDEN_IN_COMMANDS))
}

#[test]
fn every_keywardd_command_is_reviewed_and_none_acts_for_a_person() {
    let mut found = Vec::new();
    commands(&keyward_server::Args::command(), "", &mut found);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted_names = names.clone();
    sorted_names.sort();
    let mut reviewed = REVIEWED_COMMANDS.to_vec();
    reviewed.sort();
    assert_eq!(
        sorted_names, reviewed,
        "a keywardd command changed: review it for a backdoor"
    );
    for (name, flags) in &found {
        for text in std::iter::once(name).chain(flags) {
            assert_eq!(forbidden_in_command(text), None, "keywardd {name}: {text}");
        }
    }
    // The flags of serving itself, too: none skips a check.
    for arg in keyward_server::Args::command().get_arguments() {
        let flag = arg.get_long().unwrap_or(arg.get_id().as_str());
        assert_eq!(forbidden_in_command(flag), None, "keywardd --{flag}");
    }
}

#[tokio::test]
async fn every_api_operation_is_reviewed_and_none_acts_without_a_ceremony() {
    let h = Harness::start().await;
    let doc = h.public_json("/api/v1/openapi.json").await;
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations.sort();
    let mut reviewed: Vec<String> = REVIEWED_OPERATIONS.iter().map(|s| s.to_string()).collect();
    reviewed.sort();
    assert_eq!(
        operations, reviewed,
        "the API changed: review it for a backdoor"
    );
    for op in &operations {
        assert_eq!(forbidden_word(op, FORBIDDEN), None, "{op}");
    }
    let discovery = h.public_json("/.well-known/openid-configuration").await;
    let issuer = discovery["issuer"].as_str().unwrap().trim_end_matches('/');
    let mut endpoints: Vec<String> = discovery
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.ends_with("_endpoint") || name.ends_with("_uri"))
        .filter_map(|(name, url)| Some(format!("{name} {}", url.as_str()?.strip_prefix(issuer)?)))
        .collect();
    endpoints.sort();
    let mut reviewed: Vec<String> = REVIEWED_PROTOCOL_ENDPOINTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    reviewed.sort();
    assert_eq!(
        endpoints, reviewed,
        "the OpenID provider changed: review it for a backdoor"
    );
    // And nothing answers where an admin API would sit.
    for path in ["/api/v1/admin", "/api/v1/admin/accounts", "/admin"] {
        let status = h
            .http
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{path}");
    }
}
