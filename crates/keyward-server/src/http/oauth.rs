//! The OpenID provider's HTTP surface: the OAuth endpoints (`/oauth2/*`, discovery), which
//! answer in OAuth's own shapes (form bodies in, `{error, error_description}` out, no
//! caching), and the web UI's JSON API for pending requests and consents (`/api/v1/oauth/*`,
//! `{code, message}` as the rest of the API). Thin: each parses, makes one call into
//! `oidc` (methods of the relying party), and answers.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyward_proto::{
    ApiError, AppConsentView, AuthorizationDecision, AuthorizationRequestView, DeviceApproval,
    DeviceCodeEntry, DeviceDecision, DeviceRequestView, OAuthErrorBody, RevokedConsent,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::browser;
use super::extract::{ApiJson, ApiPath, ClientAddr};
use crate::error::ServerError;
use crate::oidc::{Authorization, ClientAuth, EndSession, OAuthCode};
use crate::relying_party::Authed;

/// The OAuth endpoints, outside `/api` and its OpenAPI document.
pub fn oauth_routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/oauth2/authorize", get(authorize_get).post(authorize_post))
        .route("/oauth2/token", axum::routing::post(token))
        .route(
            "/oauth2/device_authorization",
            axum::routing::post(device_authorization),
        )
        .route("/oauth2/introspect", axum::routing::post(introspect))
        .route("/oauth2/revoke", axum::routing::post(revoke))
        .route("/oauth2/userinfo", get(userinfo).post(userinfo))
        .route("/oauth2/logout", get(logout_get).post(logout_post))
        .route("/oauth2/jwks", get(jwks))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

/// The web UI's JSON API for the consent screen and the apps the account allowed.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorization_request))
        .routes(routes!(approve))
        .routes(routes!(deny))
        .routes(routes!(list_consents))
        .routes(routes!(revoke_consent))
        .routes(routes!(device_lookup))
        .routes(routes!(device_approve))
        .routes(routes!(device_deny))
}

// ---- answers --------------------------------------------------------------------------------

fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// An error as OAuth says it (RFC 6749 5.2); internals logged, never sent.
fn oauth_error(e: ServerError) -> Response {
    let (status, code, description) = match e {
        ServerError::OAuth(o) => {
            let status = match o.code {
                OAuthCode::InvalidClient | OAuthCode::InvalidToken => StatusCode::UNAUTHORIZED,
                OAuthCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                OAuthCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, o.code, o.description)
        }
        ServerError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                OAuthCode::ServerError,
                "Something went wrong on the server.".into(),
            )
        }
        ServerError::Unavailable(detail) => {
            tracing::warn!(%detail, "database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                OAuthCode::TemporarilyUnavailable,
                "try again shortly".into(),
            )
        }
        ServerError::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            OAuthCode::TemporarilyUnavailable,
            e.to_string(),
        ),
        other => (
            StatusCode::BAD_REQUEST,
            OAuthCode::InvalidRequest,
            other.to_string(),
        ),
    };
    let mut res = (
        status,
        Json(OAuthErrorBody {
            error: code.as_str().into(),
            error_description: description,
        }),
    )
        .into_response();
    match code {
        OAuthCode::InvalidClient => {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"keyward\""),
            );
        }
        OAuthCode::InvalidToken => {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        _ => {}
    }
    no_store(res)
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small page of keywardd's own (the OAuth routes carry `default-src 'none'; frame-ancestors
/// 'none'`, set in `security_headers`).
fn page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyward</title>\
         </head><body><h1>Keyward</h1><p>{}</p></body></html>",
        escape_html(message)
    );
    no_store(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

fn answer(a: Authorization) -> Response {
    match a {
        Authorization::ErrorPage(m) => page(StatusCode::BAD_REQUEST, &m),
        Authorization::Message(m) => page(StatusCode::OK, &m),
        Authorization::Redirect(to) => match HeaderValue::from_str(&to) {
            Ok(v) => no_store((StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response()),
            Err(_) => page(StatusCode::BAD_REQUEST, "That address cannot be sent to."),
        },
    }
}

// ---- parsing --------------------------------------------------------------------------------

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// A form body, or `invalid_request` if it is not one.
fn form_body(headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, ServerError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(crate::oidc::oauth_error(
            OAuthCode::InvalidRequest,
            "send the body as application/x-www-form-urlencoded",
        ));
    }
    Ok(form_pairs(body))
}

fn client_auth(headers: &HeaderMap, params: &[(String, String)]) -> ClientAuth {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    ClientAuth::from_request(basic, params)
}

// ---- the OAuth endpoints --------------------------------------------------------------------

async fn authorize_get(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = form_pairs(query.unwrap_or_default().as_bytes());
    authorize(s, addr, headers, params).await
}

async fn authorize_post(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form_pairs(&body);
    authorize(s, addr, headers, params).await
}

async fn authorize(
    s: AppState,
    addr: String,
    headers: HeaderMap,
    params: Vec<(String, String)>,
) -> Response {
    let session = browser::cookie(&headers, browser::SESSION_COOKIE);
    match s
        .blocking(move |rp| rp.authorize(params, session, &addr))
        .await
    {
        Ok(a) => answer(a),
        Err(e) => e.into_response(),
    }
}

async fn token(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match form_body(&headers, &body) {
        Ok(p) => p,
        Err(e) => return oauth_error(e),
    };
    let auth = client_auth(&headers, &params);
    match s.blocking(move |rp| rp.token(params, auth)).await {
        Ok(t) => no_store(Json(t).into_response()),
        Err(e) => oauth_error(e),
    }
}

/// RFC 8628 3.1: an agent or CLI asks for a device code and a user code to show.
async fn device_authorization(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match form_body(&headers, &body) {
        Ok(p) => p,
        Err(e) => return oauth_error(e),
    };
    let auth = client_auth(&headers, &params);
    match s
        .blocking(move |rp| rp.device_authorization(params, auth, &addr))
        .await
    {
        Ok(d) => no_store(Json(d).into_response()),
        Err(e) => oauth_error(e),
    }
}

async fn introspect(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match form_body(&headers, &body) {
        Ok(p) => p,
        Err(e) => return oauth_error(e),
    };
    let auth = client_auth(&headers, &params);
    match s.blocking(move |rp| rp.introspect(auth, &params)).await {
        Ok(t) => no_store(Json(t).into_response()),
        Err(e) => oauth_error(e),
    }
}

async fn revoke(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match form_body(&headers, &body) {
        Ok(p) => p,
        Err(e) => return oauth_error(e),
    };
    let auth = client_auth(&headers, &params);
    match s.blocking(move |rp| rp.revoke_token(auth, &params)).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => oauth_error(e),
    }
}

async fn userinfo(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
    else {
        return oauth_error(crate::oidc::oauth_error(
            OAuthCode::InvalidToken,
            "send the access token as Authorization: Bearer",
        ));
    };
    match s.blocking(move |rp| rp.userinfo(&token)).await {
        Ok(u) => no_store(Json(u).into_response()),
        Err(e) => oauth_error(e),
    }
}

fn end_session_of(params: Vec<(String, String)>) -> EndSession {
    let mut req = EndSession::default();
    for (k, v) in params {
        match k.as_str() {
            "id_token_hint" => req.id_token_hint = Some(v),
            "post_logout_redirect_uri" => req.post_logout_redirect_uri = Some(v),
            "state" => req.state = Some(v),
            "client_id" => req.client_id = Some(v),
            _ => {}
        }
    }
    req
}

async fn logout_get(State(s): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let req = end_session_of(form_pairs(query.unwrap_or_default().as_bytes()));
    match s.blocking(move |rp| rp.end_app_session(req)).await {
        Ok(a) => answer(a),
        Err(e) => e.into_response(),
    }
}

async fn logout_post(State(s): State<AppState>, body: Bytes) -> Response {
    let req = end_session_of(form_pairs(&body));
    match s.blocking(move |rp| rp.end_app_session(req)).await {
        Ok(a) => answer(a),
        Err(e) => e.into_response(),
    }
}

async fn jwks(State(s): State<AppState>) -> Response {
    match s.blocking(|rp| rp.jwks()).await {
        Ok(j) => no_store(Json(j).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn metadata(State(s): State<AppState>) -> Response {
    Json(s.relying_party().provider_metadata()).into_response()
}

// ---- the web UI's JSON API ------------------------------------------------------------------

/// Every POST of the consent screen must come from Keyward's own page (Origin and
/// `X-Keyward-CSRF: 1`), whatever carries its session.
pub struct OwnPage;

impl FromRequestParts<AppState> for OwnPage {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServerError> {
        browser::require_own_page(&parts.headers, state)?;
        Ok(OwnPage)
    }
}

/// The session if the request carries a usable one; none otherwise (not a refusal).
pub struct MaybeAuthed(Option<Authed>);

impl FromRequestParts<AppState> for MaybeAuthed {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServerError> {
        Ok(MaybeAuthed(
            Authed::from_request_parts(parts, state).await.ok(),
        ))
    }
}

/// A pending authorization request, for the consent screen; signed in or not.
#[utoipa::path(get, path = "/api/v1/oauth/requests/{id}", tag = "apps",
    params(("id" = String, Path, description = "The request ID from /#/authorize/<id>")),
    responses((status = 200, body = AuthorizationRequestView), (status = 404, body = ApiError)))]
async fn authorization_request(
    State(s): State<AppState>,
    MaybeAuthed(authed): MaybeAuthed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AuthorizationRequestView>, ServerError> {
    s.blocking(move |rp| rp.authorization_request(&id, authed.as_ref()))
        .await
        .map(Json)
}

/// Allow the app: consent is remembered, the code issued; the UI goes to `redirect_to`.
#[utoipa::path(post, path = "/api/v1/oauth/requests/{id}/approve", tag = "apps",
    params(("id" = String, Path)),
    responses((status = 200, body = AuthorizationDecision), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn approve(
    State(s): State<AppState>,
    _own: OwnPage,
    authed: Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AuthorizationDecision>, ServerError> {
    s.blocking(move |rp| rp.approve_authorization(&authed, &id))
        .await
        .map(Json)
}

/// Decline: the app is told `access_denied`.
#[utoipa::path(post, path = "/api/v1/oauth/requests/{id}/deny", tag = "apps",
    params(("id" = String, Path)),
    responses((status = 200, body = AuthorizationDecision), (status = 404, body = ApiError)))]
async fn deny(
    State(s): State<AppState>,
    _own: OwnPage,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AuthorizationDecision>, ServerError> {
    s.blocking(move |rp| rp.deny_authorization(&id))
        .await
        .map(Json)
}

/// The apps this account allowed.
#[utoipa::path(get, path = "/api/v1/oauth/consents", tag = "apps",
    responses((status = 200, body = Vec<AppConsentView>), (status = 401, body = ApiError)))]
async fn list_consents(
    State(s): State<AppState>,
    authed: Authed,
) -> Result<Json<Vec<AppConsentView>>, ServerError> {
    s.blocking(move |rp| rp.list_app_consents(&authed))
        .await
        .map(Json)
}

/// Revoke an app: its consent and every sign-in it holds end at once.
#[utoipa::path(delete, path = "/api/v1/oauth/consents/{client_id}", tag = "apps",
    params(("client_id" = String, Path)),
    responses((status = 200, body = RevokedConsent), (status = 404, body = ApiError)))]
async fn revoke_consent(
    State(s): State<AppState>,
    authed: Authed,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Json<RevokedConsent>, ServerError> {
    s.blocking(move |rp| rp.revoke_app_consent(&authed, &client_id))
        .await
        .map(Json)
}

/// A device code an agent shows (RFC 8628): which agent asks, from where, for what. A code
/// that names no waiting request counts against the network.
#[utoipa::path(post, path = "/api/v1/oauth/device/lookup", tag = "apps",
    request_body = DeviceCodeEntry,
    responses((status = 200, body = DeviceRequestView), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
async fn device_lookup(
    State(s): State<AppState>,
    authed: Authed,
    ClientAddr(addr): ClientAddr,
    ApiJson(entry): ApiJson<DeviceCodeEntry>,
) -> Result<Json<DeviceRequestView>, ServerError> {
    s.blocking(move |rp| rp.device_request(&authed, &entry.user_code, &addr))
        .await
        .map(Json)
}

/// Approve a device code with a fresh key ceremony (a step-up assertion begun with
/// `/api/v1/step-up/begin`, verified here): the agent gets a session of its own.
#[utoipa::path(post, path = "/api/v1/oauth/device/approve", tag = "apps",
    request_body = DeviceApproval,
    responses((status = 200, body = DeviceDecision), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 404, body = ApiError),
        (status = 429, body = ApiError)))]
async fn device_approve(
    State(s): State<AppState>,
    authed: Authed,
    ClientAddr(addr): ClientAddr,
    ApiJson(approval): ApiJson<DeviceApproval>,
) -> Result<Json<DeviceDecision>, ServerError> {
    s.blocking(move |rp| rp.approve_device(&authed, &approval, &addr))
        .await
        .map(Json)
}

/// Deny a device code: the agent is told `access_denied`.
#[utoipa::path(post, path = "/api/v1/oauth/device/deny", tag = "apps",
    request_body = DeviceCodeEntry,
    responses((status = 200, body = DeviceDecision), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
async fn device_deny(
    State(s): State<AppState>,
    authed: Authed,
    ClientAddr(addr): ClientAddr,
    ApiJson(entry): ApiJson<DeviceCodeEntry>,
) -> Result<Json<DeviceDecision>, ServerError> {
    s.blocking(move |rp| rp.deny_device(&authed, &entry.user_code, &addr))
        .await
        .map(Json)
}
