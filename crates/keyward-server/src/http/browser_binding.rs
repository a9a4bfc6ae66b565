//! Browser sessions bound to a key in the browser, over HTTP: the DBSC headers
//! (`Secure-Session-Registration`, `Secure-Session-Challenge`, `Secure-Session-Response`,
//! `Sec-Secure-Session-Id`), the registration and refresh endpoints, and the web UI's own key
//! sent with its sign-in (`X-Keyward-Browser-Key`). The rules are in
//! `relying_party::browser_binding`.
//!
//! Both endpoints answer like every `/api/` path: `Cache-Control: no-store`, no framing
//! (`X-Frame-Options: DENY`, `frame-ancestors 'none'`), and no CORS grant at all, so another
//! site can neither read them nor send them credentials; they add
//! `Cross-Origin-Resource-Policy: same-origin`. A refresh names its session by
//! `Sec-Secure-Session-Id`, a header only the browser itself can set (script cannot set
//! `Sec-` headers), or, from the web UI, by `X-Keyward-Browser-Session` together with the
//! own-page checks (`Origin`, `X-Keyward-CSRF`).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyward_proto::{ApiError, SignedIn};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::browser::{self, Delivery};
use crate::error::{Result, ServerError};
use crate::relying_party::browser_binding::{REFRESH_PATH, REGISTRATION_PATH, Refresh, Refreshed};

/// The web UI's public key (a P-256 JWK as JSON, in base64url), sent with its sign-in.
pub const BROWSER_KEY_HEADER: &str = "x-keyward-browser-key";
/// The session the web UI refreshes (its ID), in place of DBSC's `Sec-Secure-Session-Id`.
pub const BROWSER_SESSION_HEADER: &str = "x-keyward-browser-session";
pub const REGISTRATION_HEADER: &str = "secure-session-registration";
pub const CHALLENGE_HEADER: &str = "secure-session-challenge";
pub const RESPONSE_HEADER: &str = "secure-session-response";
pub const SESSION_ID_HEADER: &str = "sec-secure-session-id";

/// The web UI's public key, if its sign-in sent one.
pub struct BrowserKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for BrowserKey {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let Some(value) = parts.headers.get(BROWSER_KEY_HEADER) else {
            return Ok(BrowserKey(None));
        };
        URL_SAFE_NO_PAD
            .decode(value.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|jwk| BrowserKey(Some(jwk)))
            .ok_or_else(|| {
                ServerError::InvalidInput(format!(
                    "{BROWSER_KEY_HEADER} must be a JWK in base64url"
                ))
            })
    }
}

/// The answer to a sign-in: to a browser (cookie delivery) with its session bound to the web
/// UI's key if it sent one, and an invitation to register a DBSC key either way.
pub async fn respond_signed_in(
    state: &AppState,
    delivery: Delivery,
    BrowserKey(key): BrowserKey,
    signed_in: SignedIn,
) -> Result<Response> {
    if matches!(delivery, Delivery::Body) {
        return Ok(delivery.respond(signed_in));
    }
    let token = signed_in.token.clone();
    let start = state
        .blocking(move |s| s.start_browser_binding(&token, key.as_deref()))
        .await?;
    let mut response = delivery.respond_lasting(signed_in, start.cookie_max_age_secs);
    let registration = format!(
        "(ES256);path=\"{REGISTRATION_PATH}\";challenge=\"{}\"",
        start.registration_challenge
    );
    if let Ok(v) = HeaderValue::from_str(&registration) {
        response.headers_mut().insert(REGISTRATION_HEADER, v);
    }
    Ok(response)
}

/// A Structured Field string (`"…"`) as sent in DBSC's headers; a bare token is taken as is.
fn sf_string(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    let v = v.split(';').next().unwrap_or(v).trim();
    Some(
        v.strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v)
            .to_string(),
    )
}

/// DBSC's session instructions (the spec's "JSON session instructions").
#[derive(Serialize, ToSchema)]
pub struct SessionInstructions {
    session_identifier: String,
    refresh_url: &'static str,
    scope: InstructionScope,
    credentials: Vec<InstructionCredential>,
}

#[derive(Serialize, ToSchema)]
struct InstructionScope {
    include_site: bool,
}

#[derive(Serialize, ToSchema)]
struct InstructionCredential {
    r#type: &'static str,
    name: &'static str,
    attributes: &'static str,
}

/// The session's new short-lived cookie, and the instructions that say it is bound.
fn refreshed(r: Refreshed) -> Response {
    let instructions = SessionInstructions {
        session_identifier: r.session_id.to_string(),
        refresh_url: REFRESH_PATH,
        scope: InstructionScope {
            include_site: false,
        },
        credentials: vec![InstructionCredential {
            r#type: "cookie",
            name: browser::SESSION_COOKIE,
            attributes: "Path=/; Secure; HttpOnly; SameSite=Strict",
        }],
    };
    let response = axum::Json(instructions).into_response();
    not_embeddable(browser::with_session_cookie(
        response,
        &r.token,
        r.max_age_secs,
    ))
}

fn not_embeddable(mut response: Response) -> Response {
    response.headers_mut().insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// DBSC registration: the browser's new key, in a proof signed over the challenge the sign-in
/// gave (`Secure-Session-Response`), binds the session it holds the cookie of.
#[utoipa::path(post, path = "/api/v1/browser-session/register", tag = "sessions",
    responses((status = 200, body = SessionInstructions), (status = 401, body = ApiError),
        (status = 403, body = ApiError)))]
pub async fn dbsc_register(State(s): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let token =
        browser::cookie(&headers, browser::SESSION_COOKIE).ok_or(ServerError::Unauthenticated)?;
    let proof = sf_string(&headers, RESPONSE_HEADER)
        .ok_or(ServerError::Forbidden("send the registration proof"))?;
    let r = s.blocking(move |s| s.register_dbsc(&token, &proof)).await?;
    Ok(refreshed(r))
}

/// Refreshes a bound session's short-lived cookie: 403 with a `Secure-Session-Challenge` to
/// sign until a proof by the session's key over the current challenge comes, then a new
/// cookie; 401 once the session is over.
#[utoipa::path(post, path = "/api/v1/browser-session/refresh", tag = "sessions",
    responses((status = 200, body = SessionInstructions), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub async fn browser_session_refresh(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response> {
    let (id, by_web_ui) = match sf_string(&headers, SESSION_ID_HEADER) {
        Some(id) => (id, false),
        None => {
            browser::require_own_page(&headers, &s)?;
            let id =
                sf_string(&headers, BROWSER_SESSION_HEADER).ok_or(ServerError::Unauthenticated)?;
            (id, true)
        }
    };
    let id: Uuid = id.parse().map_err(|_| ServerError::Unauthenticated)?;
    let proof = sf_string(&headers, RESPONSE_HEADER);
    let answer = s
        .blocking(move |s| s.refresh_browser_session(id, proof.as_deref(), by_web_ui))
        .await
        .map_err(|e| match e {
            // The browser must stop using a session that is over.
            ServerError::SessionExpired => ServerError::Unauthenticated,
            e => e,
        })?;
    Ok(match answer {
        Refresh::Refreshed(r) => refreshed(r),
        Refresh::Challenge {
            session_id,
            challenge,
            refused,
        } => {
            let message = refused.unwrap_or("sign this challenge with the session's key");
            let mut response = ServerError::Forbidden(message).into_response();
            let value = format!("\"{challenge}\";id=\"{session_id}\"");
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(CHALLENGE_HEADER, v);
            }
            debug_assert_eq!(response.status(), StatusCode::FORBIDDEN);
            not_embeddable(response)
        }
    })
}
