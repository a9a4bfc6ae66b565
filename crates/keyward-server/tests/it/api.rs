//! The service surface: health, OpenAPI, the error shape and security headers.

use keyward_proto::*;

use crate::harness::*;

#[tokio::test]
async fn health_and_openapi_describe_every_endpoint() {
    let h = Harness::start().await;
    let health: Health = h
        .http
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    let info: ServerInfo = h
        .http
        .get(format!("{}/api/v1/server", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info.rp_id, "localhost");
    assert_eq!(info.origins, vec![h.origin.origin().ascii_serialization()]);
    assert_eq!(info.session_idle_ms, 15 * 60 * 1000);
    let doc = h.public_json("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/api/v1/registration/begin",
        "/api/v1/registration/finish",
        "/api/v1/sign-in/begin",
        "/api/v1/sign-in/finish",
        "/api/v1/step-up/begin",
        "/api/v1/step-up/finish",
        "/api/v1/account",
        "/api/v1/readiness",
        "/api/v1/authenticators",
        "/api/v1/authenticators/{id}",
        "/api/v1/authenticators/{id}/removal-impact",
        "/api/v1/authenticators/{id}/report-lost",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/end-others",
        "/api/v1/sign-out",
        "/api/v1/browser-session/register",
        "/api/v1/browser-session/refresh",
        "/api/v1/recovery-key",
        "/api/v1/recovery-key/challenge",
        "/api/v1/recovery-key/verify",
        "/api/v1/recovery/redeem/begin",
        "/api/v1/recovery/redeem/finish",
        "/api/v1/recovery/cancel/begin",
        "/api/v1/recovery/cancel/finish",
        "/api/v1/events",
        "/api/v1/events/stream",
        "/api/v1/log/checkpoint",
    ] {
        assert!(paths.contains_key(p), "openapi is missing {p}");
    }
    assert!(doc["components"]["schemas"].get("ApiError").is_some());
    // No password anywhere in the API.
    assert!(
        !doc.to_string().to_lowercase().contains("\"password\""),
        "no password field"
    );
}

#[tokio::test]
async fn responses_carry_security_headers_and_errors_hide_internals() {
    let h = Harness::start().await;
    let res = h
        .http
        .get(format!("{}/api/v1/account", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(
        res.headers().get("strict-transport-security").is_none(),
        "HSTS only with TLS"
    );
    let body: ApiError = res.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::Unauthenticated);
    assert!(!body.message.is_empty());
    // The wire shape is pinned.
    let internal =
        keyward_server::ServerError::Internal("secret detail: /var/lib/db".into()).to_wire();
    assert_eq!(
        serde_json::to_string(&internal).unwrap(),
        r#"{"code":"internal","message":"Something went wrong on the server."}"#
    );
    let unavailable =
        keyward_server::ServerError::Unavailable("connection to 10.0.0.5 refused".into()).to_wire();
    assert_eq!(
        serde_json::to_string(&unavailable).unwrap(),
        r#"{"code":"unavailable","message":"the service is unavailable for a moment; try again shortly"}"#
    );
}
