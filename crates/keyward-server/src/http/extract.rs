//! Request extractors whose rejections speak the `{code, message}` wire shape.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::browser;
use crate::error::ServerError;
use crate::net;
use crate::relying_party::{Authed, RequestProof};

/// JSON body. Wrong content type → 415, bad JSON → 400, too large → 413, all as `ApiError`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ServerError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ServerError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => Err(ServerError::InvalidInput(format!(
                "the request body does not fit this endpoint: {}",
                e.body_text().trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: "
                )
            ))),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ServerError::PayloadTooLarge)
            }
            Err(_) => Err(ServerError::MalformedBody),
        }
    }
}

pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServerError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e: PathRejection| {
                ServerError::InvalidInput(format!("bad path: {}", e.body_text()))
            })
    }
}

pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServerError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| {
                ServerError::InvalidInput(format!("bad query: {}", e.body_text()))
            })
    }
}

/// The client's full address as text: the TCP peer, or, when the peer is a configured trusted
/// proxy, the client its `Forwarded` / `X-Forwarded-For` names (`net::client_address`). Limits
/// count it by network (`rate_limit::Network`); alerts show it whole.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServerError> {
        let Some(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
        else {
            return Ok(ClientAddr("unknown".into()));
        };
        let values = |name: header::HeaderName| -> Vec<&str> {
            parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        let forwarded = values(header::FORWARDED);
        let x_forwarded_for = values(header::HeaderName::from_static("x-forwarded-for"));
        let ip = net::client_address(peer, state.trusted_proxies(), &forwarded, &x_forwarded_for);
        Ok(ClientAddr(ip.to_string()))
    }
}

/// The `User-Agent`, used to name a client that did not name itself.
pub struct UserAgent(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserAgent {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ServerError> {
        Ok(UserAgent(
            parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        ))
    }
}

/// A valid session from `Authorization: Bearer <token>`, from `Authorization: DPoP <token>`
/// with its `DPoP` proof header (RFC 9449: a session bound to a device key takes only that),
/// or from a browser's session cookie (then a state-changing request must also come from
/// Keyward's own page: CSRF). Checking it counts as activity.
impl FromRequestParts<AppState> for Authed {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServerError> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let scheme = |name: &str| {
            authorization
                .and_then(|v| v.split_once(' '))
                .filter(|(s, _)| s.eq_ignore_ascii_case(name))
                .map(|(_, t)| t.trim().to_string())
        };
        let (token, proof) = if let Some(token) = scheme("Bearer") {
            (token, None)
        } else if let Some(token) = scheme("DPoP") {
            (token, Some(request_proof(parts, state)?))
        } else {
            let token = browser::cookie(&parts.headers, browser::SESSION_COOKIE)
                .ok_or(ServerError::Unauthenticated)?;
            if !parts.method.is_safe() {
                browser::require_own_page(&parts.headers, state)?;
            }
            (token, None)
        };
        state
            .blocking(move |s| {
                let authed = s.authenticate(&token, proof.as_ref())?;
                // A browser-bound session's token lives minutes (`browser_binding`).
                s.check_browser_binding(&authed)?;
                Ok(authed)
            })
            .await
    }
}

/// The request's one `DPoP` header, and the URLs it may have been sent to: as the client
/// addressed it (`Host`), and each configured origin (behind a proxy that rewrites `Host`).
fn request_proof(parts: &Parts, state: &AppState) -> Result<RequestProof, ServerError> {
    let mut proofs = parts.headers.get_all("dpop").iter();
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err(ServerError::ProofInvalid(
            "send exactly one DPoP header with the DPoP token".into(),
        ));
    };
    let proof = proof
        .to_str()
        .map_err(|_| ServerError::ProofInvalid("the DPoP header is not text".into()))?
        .trim()
        .to_string();
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(parts.uri.path(), |u| u.0.path());
    let scheme = if state.tls() { "https" } else { "http" };
    let mut urls: Vec<String> = state
        .relying_party()
        .info()
        .origins
        .iter()
        .map(|o| format!("{o}{path}"))
        .collect();
    if let Some(host) = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
    {
        urls.push(format!("{scheme}://{host}{path}"));
    }
    Ok(RequestProof {
        proof,
        method: parts.method.as_str().to_string(),
        urls,
    })
}
