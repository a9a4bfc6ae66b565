//! HTTP handlers: parse, call the relying party, serialise. Each is registered together with its
//! OpenAPI description, so `/api/v1/openapi.json` cannot drift from the routes.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keyward_proto::*;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::browser::{self, Carrier, Delivery};
use super::browser_binding::{self, BrowserKey};
use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr, UserAgent};
use crate::error::Result;
use crate::relying_party::Authed;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyward",
        description = "Passwordless account security: every sign-in is a WebAuthn ceremony, \
            sessions are short, recovery is by backup keys and a recovery key only. \
            Errors are always `{code, message}` (schema ApiError). Authenticated endpoints take \
            `Authorization: Bearer <token>`; browsers send `X-Keyward-Session: cookie` when \
            signing in and are then authenticated by an HttpOnly cookie, with `Origin` and \
            `X-Keyward-CSRF: 1` required on every state-changing request."
    ),
    components(schemas(ApiError, ErrorCode, SecurityEvent, EventKind))
)]
pub struct ApiDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(server_info))
        .routes(routes!(registration_begin))
        .routes(routes!(registration_finish))
        .routes(routes!(sign_in_begin))
        .routes(routes!(sign_in_finish))
        .routes(routes!(step_up_begin))
        .routes(routes!(step_up_finish))
        .routes(routes!(get_account, delete_account))
        .routes(routes!(export_log))
        .routes(routes!(get_readiness))
        .routes(routes!(list_authenticators))
        .routes(routes!(add_authenticator_begin))
        .routes(routes!(add_authenticator_finish))
        .routes(routes!(rename_authenticator, remove_authenticator))
        .routes(routes!(removal_impact))
        .routes(routes!(report_lost))
        .routes(routes!(current_session))
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
        .routes(routes!(end_other_sessions))
        .routes(routes!(sign_out))
        .routes(routes!(browser_binding::dbsc_register))
        .routes(routes!(browser_binding::browser_session_refresh))
        .routes(routes!(recovery_key_status, set_recovery_key))
        .routes(routes!(recovery_challenge))
        .routes(routes!(recovery_verify))
        .routes(routes!(redeem_begin))
        .routes(routes!(redeem_finish))
        .routes(routes!(recovery_cancel_begin))
        .routes(routes!(recovery_cancel_finish))
        .routes(routes!(complete_recovery))
        .routes(routes!(list_events))
        .routes(routes!(log_head))
        .routes(routes!(super::stream::event_stream))
}

#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The RP ID and origins ceremonies must use, and the session lifetimes in force.
#[utoipa::path(get, path = "/api/v1/server", tag = "service", responses((status = 200, body = ServerInfo)))]
async fn server_info(State(s): State<AppState>) -> Json<ServerInfo> {
    Json(s.relying_party().info().clone())
}

// ---- registration ------------------------------------------------------------------------

/// Start creating an account: the first authenticator's registration options.
#[utoipa::path(post, path = "/api/v1/registration/begin", tag = "sign-in",
    request_body = RegistrationBeginRequest,
    responses((status = 200, body = RegistrationBegin), (status = 409, body = ApiError), (status = 400, body = ApiError)))]
async fn registration_begin(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<RegistrationBeginRequest>,
) -> Result<Json<RegistrationBegin>> {
    s.blocking(move |s| s.registration_begin(req, &addr))
        .await
        .map(Json)
}

/// Finish creating an account; returns its first session.
#[utoipa::path(post, path = "/api/v1/registration/finish", tag = "sign-in",
    request_body = RegistrationFinishRequest,
    responses((status = 200, body = SignedIn), (status = 400, body = ApiError)))]
async fn registration_finish(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    UserAgent(ua): UserAgent,
    delivery: Delivery,
    key: BrowserKey,
    ApiJson(mut req): ApiJson<RegistrationFinishRequest>,
) -> Result<Response> {
    req.device_secret = delivery.device_secret(req.device_secret.take());
    let signed_in = s
        .blocking(move |s| s.registration_finish(req, &addr, &ua))
        .await?;
    browser_binding::respond_signed_in(&s, delivery, key, signed_in).await
}

// ---- sign-in -------------------------------------------------------------------------------

/// Start a sign-in; omit `username` for a usernameless (discoverable) sign-in.
#[utoipa::path(post, path = "/api/v1/sign-in/begin", tag = "sign-in",
    request_body = SignInBeginRequest,
    responses((status = 200, body = AssertionBegin), (status = 429, body = ApiError)))]
async fn sign_in_begin(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<SignInBeginRequest>,
) -> Result<Json<AssertionBegin>> {
    s.blocking(move |s| s.sign_in_begin(req, &addr))
        .await
        .map(Json)
}

/// Finish a sign-in; returns a new session.
#[utoipa::path(post, path = "/api/v1/sign-in/finish", tag = "sign-in",
    request_body = SignInFinishRequest,
    responses((status = 200, body = SignedIn), (status = 400, body = ApiError), (status = 429, body = ApiError)))]
async fn sign_in_finish(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    UserAgent(ua): UserAgent,
    delivery: Delivery,
    key: BrowserKey,
    ApiJson(mut req): ApiJson<SignInFinishRequest>,
) -> Result<Response> {
    req.device_secret = delivery.device_secret(req.device_secret.take());
    let signed_in = s
        .blocking(move |s| s.sign_in_finish(req, &addr, &ua))
        .await?;
    browser_binding::respond_signed_in(&s, delivery, key, signed_in).await
}

/// Start a step-up: a fresh user-verified assertion for sensitive operations.
#[utoipa::path(post, path = "/api/v1/step-up/begin", tag = "sign-in",
    responses((status = 200, body = AssertionBegin), (status = 401, body = ApiError)))]
async fn step_up_begin(State(s): State<AppState>, authed: Authed) -> Result<Json<AssertionBegin>> {
    s.blocking(move |s| s.step_up_begin(&authed))
        .await
        .map(Json)
}

/// Finish a step-up. The session stays the same, but its token is replaced: the answer carries
/// the new one (a browser gets it as its session cookie instead, blank in the body), the token
/// the step-up was made with is refused from then on, and event streams opened with it end.
#[utoipa::path(post, path = "/api/v1/step-up/finish", tag = "sign-in",
    request_body = AssertionFinishRequest,
    responses((status = 200, body = SteppedUp), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn step_up_finish(
    State(s): State<AppState>,
    authed: Authed,
    carrier: Carrier,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<AssertionFinishRequest>,
) -> Result<Response> {
    let session = authed.session.id;
    let stepped = s
        .blocking(move |s| s.step_up_finish(&authed, req, &addr))
        .await?;
    s.token_replaced(session);
    Ok(carrier.respond(stepped))
}

// ---- account ------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/account", tag = "account",
    responses((status = 200, body = AccountView), (status = 401, body = ApiError)))]
async fn get_account(State(s): State<AppState>, authed: Authed) -> Json<AccountView> {
    Json(s.relying_party().account(&authed))
}

/// Delete the account: needs a step-up within the last minutes. Every session's stream first
/// gets an urgent `account_deleted` event, then the account, its sessions, devices, keys,
/// recovery key and app sign-ins are gone, and its events' details can no longer be read.
#[utoipa::path(delete, path = "/api/v1/account", tag = "account",
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn delete_account(State(s): State<AppState>, authed: Authed) -> Result<Response> {
    s.blocking(move |s| s.delete_account(&authed)).await?;
    Ok(browser::clear_session_cookie(
        axum::http::StatusCode::NO_CONTENT.into_response(),
    ))
}

/// The account's whole security log as JSON, with the details, and what verifies each event
/// against the server's hash chain (`keyward verify-export FILE`).
#[utoipa::path(get, path = "/api/v1/events/export", tag = "events",
    responses((status = 200, body = LogExport), (status = 401, body = ApiError),
        (status = 403, body = ApiError)))]
async fn export_log(State(s): State<AppState>, authed: Authed) -> Result<Json<LogExport>> {
    s.blocking(move |s| s.export_log(&authed)).await.map(Json)
}

/// How protected the account is, and the next step that matters.
#[utoipa::path(get, path = "/api/v1/readiness", tag = "account",
    responses((status = 200, body = Readiness), (status = 401, body = ApiError)))]
async fn get_readiness(State(s): State<AppState>, authed: Authed) -> Result<Json<Readiness>> {
    s.blocking(move |s| s.readiness(&authed)).await.map(Json)
}

// ---- authenticators -----------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/authenticators", tag = "authenticators",
    responses((status = 200, body = Vec<AuthenticatorView>), (status = 401, body = ApiError)))]
async fn list_authenticators(
    State(s): State<AppState>,
    authed: Authed,
) -> Result<Json<Vec<AuthenticatorView>>> {
    s.blocking(move |s| s.list_authenticators(&authed))
        .await
        .map(Json)
}

/// Start adding a key (needs step-up).
#[utoipa::path(post, path = "/api/v1/authenticators/begin", tag = "authenticators",
    responses((status = 200, body = RegistrationBegin), (status = 403, body = ApiError)))]
async fn add_authenticator_begin(
    State(s): State<AppState>,
    authed: Authed,
) -> Result<Json<RegistrationBegin>> {
    s.blocking(move |s| s.add_authenticator_begin(&authed))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/authenticators/finish", tag = "authenticators",
    request_body = AddAuthenticatorFinishRequest,
    responses((status = 200, body = AuthenticatorView), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
async fn add_authenticator_finish(
    State(s): State<AppState>,
    authed: Authed,
    ApiJson(req): ApiJson<AddAuthenticatorFinishRequest>,
) -> Result<Json<AuthenticatorView>> {
    s.blocking(move |s| s.add_authenticator_finish(&authed, req))
        .await
        .map(Json)
}

#[utoipa::path(patch, path = "/api/v1/authenticators/{id}", tag = "authenticators",
    params(("id" = Uuid, Path)), request_body = RenameAuthenticatorRequest,
    responses((status = 200, body = AuthenticatorView), (status = 404, body = ApiError)))]
async fn rename_authenticator(
    State(s): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RenameAuthenticatorRequest>,
) -> Result<Json<AuthenticatorView>> {
    s.blocking(move |s| s.rename_authenticator(&authed, id, req))
        .await
        .map(Json)
}

/// Remove a key (needs step-up; never the last one). Ends the sessions it opened.
#[utoipa::path(delete, path = "/api/v1/authenticators/{id}", tag = "authenticators",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndedSessions), (status = 409, body = ApiError), (status = 403, body = ApiError)))]
async fn remove_authenticator(
    State(s): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndedSessions>> {
    s.blocking(move |s| s.remove_authenticator(&authed, id))
        .await
        .map(Json)
}

/// What removing a key would do: sessions that end and readiness afterwards.
#[utoipa::path(get, path = "/api/v1/authenticators/{id}/removal-impact", tag = "authenticators",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = RemovalImpact), (status = 404, body = ApiError)))]
async fn removal_impact(
    State(s): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<RemovalImpact>> {
    s.blocking(move |s| s.removal_impact(&authed, id))
        .await
        .map(Json)
}

/// Report a key lost: disabled at once, its sessions end (needs step-up with another key).
#[utoipa::path(post, path = "/api/v1/authenticators/{id}/report-lost", tag = "authenticators",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndedSessions), (status = 403, body = ApiError)))]
async fn report_lost(
    State(s): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndedSessions>> {
    s.blocking(move |s| s.report_lost(&authed, id))
        .await
        .map(Json)
}

// ---- sessions -----------------------------------------------------------------------------

/// The session this request was made with (a recovery session may see its own, not others).
#[utoipa::path(get, path = "/api/v1/session", tag = "sessions",
    responses((status = 200, body = SessionView), (status = 401, body = ApiError)))]
async fn current_session(State(s): State<AppState>, authed: Authed) -> Result<Json<SessionView>> {
    s.blocking(move |s| s.current_session(&authed))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions",
    responses((status = 200, body = Vec<SessionView>), (status = 401, body = ApiError)))]
async fn list_sessions(
    State(s): State<AppState>,
    authed: Authed,
) -> Result<Json<Vec<SessionView>>> {
    s.blocking(move |s| s.list_sessions(&authed))
        .await
        .map(Json)
}

/// End one session (another session needs step-up; your own is signing out).
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndedSessions), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
async fn end_session(
    State(s): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndedSessions>> {
    s.blocking(move |s| s.end_session(&authed, id))
        .await
        .map(Json)
}

/// End every session but this one (needs step-up).
#[utoipa::path(post, path = "/api/v1/sessions/end-others", tag = "sessions",
    responses((status = 200, body = EndedSessions), (status = 403, body = ApiError)))]
async fn end_other_sessions(
    State(s): State<AppState>,
    authed: Authed,
) -> Result<Json<EndedSessions>> {
    s.blocking(move |s| s.end_other_sessions(&authed))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/sign-out", tag = "sessions",
    responses((status = 200, body = EndedSessions), (status = 401, body = ApiError)))]
async fn sign_out(State(s): State<AppState>, authed: Authed) -> Result<Response> {
    let id = authed.session.id;
    let ended = s.blocking(move |s| s.end_session(&authed, id)).await?;
    Ok(browser::clear_session_cookie(Json(ended).into_response()))
}

// ---- recovery key -------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/recovery-key", tag = "recovery",
    responses((status = 200, body = RecoveryKeyStatus), (status = 401, body = ApiError)))]
async fn recovery_key_status(
    State(s): State<AppState>,
    authed: Authed,
) -> Result<Json<RecoveryKeyStatus>> {
    s.blocking(move |s| s.recovery_key_status(&authed))
        .await
        .map(Json)
}

/// Store the public key derived from a new recovery key (needs step-up). Replaces the old key.
#[utoipa::path(put, path = "/api/v1/recovery-key", tag = "recovery",
    request_body = SetRecoveryKeyRequest,
    responses((status = 200, body = RecoveryKeyStatus), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
async fn set_recovery_key(
    State(s): State<AppState>,
    authed: Authed,
    ApiJson(req): ApiJson<SetRecoveryKeyRequest>,
) -> Result<Json<RecoveryKeyStatus>> {
    s.blocking(move |s| s.set_recovery_key(&authed, req))
        .await
        .map(Json)
}

/// Once the window has ended and a new key and a new recovery key are enrolled, the recovery
/// session becomes a full one with a new token (a browser gets it as its cookie); the
/// recovery token is refused from then on.
#[utoipa::path(post, path = "/api/v1/recovery/complete", tag = "recovery",
    responses((status = 200, body = SignedIn), (status = 409, body = ApiError), (status = 401, body = ApiError)))]
async fn complete_recovery(
    State(s): State<AppState>,
    authed: Authed,
    carrier: Carrier,
) -> Result<Response> {
    let session = authed.session.id;
    let signed = s.blocking(move |s| s.complete_recovery(&authed)).await?;
    s.token_replaced(session);
    Ok(carrier.respond(signed))
}

/// A challenge to sign with the recovery key, to confirm it was saved or to drill.
#[utoipa::path(post, path = "/api/v1/recovery-key/challenge", tag = "recovery",
    request_body = RecoveryChallengeRequest,
    responses((status = 200, body = RecoveryChallenge), (status = 404, body = ApiError)))]
async fn recovery_challenge(
    State(s): State<AppState>,
    authed: Authed,
    ApiJson(req): ApiJson<RecoveryChallengeRequest>,
) -> Result<Json<RecoveryChallenge>> {
    s.blocking(move |s| s.recovery_challenge(&authed, req))
        .await
        .map(Json)
}

/// Prove possession of the recovery key without using it up.
#[utoipa::path(post, path = "/api/v1/recovery-key/verify", tag = "recovery",
    request_body = RecoveryProof,
    responses((status = 200, body = RecoveryKeyStatus), (status = 400, body = ApiError)))]
async fn recovery_verify(
    State(s): State<AppState>,
    authed: Authed,
    ApiJson(req): ApiJson<RecoveryProof>,
) -> Result<Json<RecoveryKeyStatus>> {
    s.blocking(move |s| s.recovery_verify(&authed, req))
        .await
        .map(Json)
}

/// Start redeeming a recovery key (no session needed).
#[utoipa::path(post, path = "/api/v1/recovery/redeem/begin", tag = "recovery",
    request_body = RedeemBeginRequest,
    responses((status = 200, body = RecoveryChallenge), (status = 429, body = ApiError)))]
async fn redeem_begin(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<RedeemBeginRequest>,
) -> Result<Json<RecoveryChallenge>> {
    s.blocking(move |s| s.redeem_begin(req, &addr))
        .await
        .map(Json)
}

/// Redeem: opens the recovery window and returns a recovery-scoped session.
#[utoipa::path(post, path = "/api/v1/recovery/redeem/finish", tag = "recovery",
    request_body = RedeemFinishRequest,
    responses((status = 200, body = RecoveryStarted), (status = 400, body = ApiError), (status = 429, body = ApiError)))]
async fn redeem_finish(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    UserAgent(ua): UserAgent,
    delivery: Delivery,
    ApiJson(req): ApiJson<RedeemFinishRequest>,
) -> Result<Response> {
    let started = s
        .blocking(move |s| s.redeem_finish(req, &addr, &ua))
        .await?;
    let max_age = s.relying_party().recovery_session_left_ms(&started.window) / 1000;
    Ok(delivery.respond_lasting(started, Some(max_age.max(0) as u64)))
}

/// Start cancelling a pending recovery with any enrolled key.
#[utoipa::path(post, path = "/api/v1/recovery/cancel/begin", tag = "recovery",
    request_body = RecoveryCancelBeginRequest,
    responses((status = 200, body = AssertionBegin)))]
async fn recovery_cancel_begin(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<RecoveryCancelBeginRequest>,
) -> Result<Json<AssertionBegin>> {
    s.blocking(move |s| s.recovery_cancel_begin(req, &addr))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/recovery/cancel/finish", tag = "recovery",
    request_body = SignInFinishRequest,
    responses((status = 200, body = AccountView), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn recovery_cancel_finish(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    UserAgent(ua): UserAgent,
    ApiJson(req): ApiJson<SignInFinishRequest>,
) -> Result<Json<AccountView>> {
    s.blocking(move |s| s.recovery_cancel_finish(req, &addr, &ua))
        .await
        .map(Json)
}

// ---- events -------------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventPageQuery {
    /// Only events older than this ID.
    before: Option<i64>,
    /// Page size, 1..=200 (default 50).
    limit: Option<u32>,
}

/// The account's security log, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventPageQuery),
    responses((status = 200, body = EventPage), (status = 401, body = ApiError)))]
async fn list_events(
    State(s): State<AppState>,
    authed: Authed,
    ApiQuery(q): ApiQuery<EventPageQuery>,
) -> Result<Json<EventPage>> {
    s.blocking(move |s| s.events_page(&authed, q.before, q.limit))
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LogHeadQuery {
    /// An event ID of the account's that the client remembers from an earlier checkpoint: the
    /// log's digest at that event is returned.
    seen: Option<i64>,
}

/// The signed-in account's head of the security log, signed by the server's log key, and
/// that key. Lets the account's clients notice a log that was cut short or rewritten since
/// they last looked. Only for the account's own full sessions: the log's global position is
/// never served, since it would count every account's events.
#[utoipa::path(get, path = "/api/v1/log/checkpoint", tag = "events", params(LogHeadQuery),
    responses((status = 200, body = LogHead), (status = 401, body = ApiError),
        (status = 403, body = ApiError)))]
async fn log_head(
    State(s): State<AppState>,
    authed: Authed,
    ApiQuery(q): ApiQuery<LogHeadQuery>,
) -> Result<Json<LogHead>> {
    s.blocking(move |s| s.log_head(&authed, q.seen))
        .await
        .map(Json)
}
