//! Browsers: the web UI, and sessions carried in cookies instead of a bearer token.
//!
//! A browser never sees its session token. A sign-in that asks with `X-Keyward-Session: cookie`
//! gets the token and the device secret in `__Host-` cookies (Secure, HttpOnly,
//! SameSite=Strict, Path=/, no Domain) and finds them blank in the body, so script on the page
//! (an XSS) has nothing to steal or send elsewhere. Because a browser attaches cookies by
//! itself, every state-changing request authenticated by cookie, and every cookie sign-in,
//! must prove it comes from Keyward's own page: its `Origin` is one of the configured origins
//! and it carries `X-Keyward-CSRF: 1`, a header another site's page cannot add without a CORS
//! preflight, which keywardd never grants. SameSite=Strict is the third, independent layer.

use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use keyward_proto::{RecoveryStarted, SignedIn, SteppedUp};
use tower_http::services::{ServeDir, ServeFile};

use super::AppState;
use crate::error::{Result, ServerError};

pub const SESSION_COOKIE: &str = "__Host-keyward-session";
pub const DEVICE_COOKIE: &str = "__Host-keyward-device";
/// `cookie`: deliver the new session as cookies (browsers); absent: in the body (apps, CLI).
pub const DELIVERY_HEADER: &str = "x-keyward-session";
pub const CSRF_HEADER: &str = "x-keyward-csrf";
/// How long a browser keeps its device secret: the longest lifetime browsers allow (400 days).
const DEVICE_COOKIE_MAX_AGE_SECS: u64 = 400 * 24 * 60 * 60;

/// The value of cookie `name` in the request, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Refuses a request that did not come from Keyward's own page (see the module comment).
pub fn require_own_page(headers: &HeaderMap, state: &AppState) -> Result<()> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let own_origin = origin.is_some_and(|o| {
        state
            .relying_party()
            .info()
            .origins
            .iter()
            .any(|allowed| allowed == o)
    });
    let marked = headers
        .get(CSRF_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    if own_origin && marked {
        Ok(())
    } else {
        Err(ServerError::Forbidden(
            "this request did not come from Keyward's own page",
        ))
    }
}

/// How a new session travels back to the client that signed in.
pub enum Delivery {
    /// In the response body, for `Authorization: Bearer` (the desktop app, the CLI).
    Body,
    /// In cookies, for a browser; the device secret it already holds comes from its cookie.
    Cookie { device_secret: Option<String> },
}

impl FromRequestParts<AppState> for Delivery {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let mut values = parts.headers.get_all(DELIVERY_HEADER).iter();
        match (values.next().map(|v| v.as_bytes()), values.next()) {
            (None, _) => Ok(Delivery::Body),
            (Some(b"cookie"), None) => {
                // A sign-in forced on a browser by another site (login CSRF) is refused too.
                require_own_page(&parts.headers, state)?;
                Ok(Delivery::Cookie {
                    device_secret: cookie(&parts.headers, DEVICE_COOKIE),
                })
            }
            _ => Err(ServerError::InvalidInput(format!(
                "{DELIVERY_HEADER} may only be `cookie`, once"
            ))),
        }
    }
}

impl Delivery {
    /// The device secret to recognise this device by: the body's, else the browser's cookie.
    pub fn device_secret(&self, from_body: Option<String>) -> Option<String> {
        match self {
            Delivery::Cookie { device_secret } => from_body.or_else(|| device_secret.clone()),
            Delivery::Body => from_body,
        }
    }

    /// The answer to a sign-in (or a redemption): as it is, or with its secrets moved into
    /// cookies.
    pub fn respond<T: NewSession>(self, answer: T) -> Response {
        self.respond_lasting(answer, None)
    }

    /// As `respond`, with a session cookie that outlives the browser for `max_age_secs`: a
    /// recovery session, which must survive a browser restart until its enrolment deadline.
    pub fn respond_lasting<T: NewSession>(
        self,
        mut answer: T,
        max_age_secs: Option<u64>,
    ) -> Response {
        match self {
            Delivery::Body => Json(answer).into_response(),
            Delivery::Cookie { .. } => {
                let (token, device) = answer.take_secrets();
                with_cookies(
                    Json(answer).into_response(),
                    &token,
                    device.as_deref(),
                    max_age_secs,
                )
            }
        }
    }
}

/// How the request's own session token came: a browser's cookie or an `Authorization` header
/// (`Bearer`, or `DPoP` for a session bound to a device key). A
/// session whose token is replaced (recovery becoming a full session, step-up) gets the new
/// one the same way, so a cookie session's token never appears in a body script could read.
pub enum Carrier {
    Bearer,
    Cookie,
}

impl<S: Send + Sync> FromRequestParts<S> for Carrier {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, _)| {
                scheme.eq_ignore_ascii_case("Bearer") || scheme.eq_ignore_ascii_case("DPoP")
            });
        Ok(if bearer {
            Carrier::Bearer
        } else {
            Carrier::Cookie
        })
    }
}

impl Carrier {
    /// The answer carrying a replaced token: as it is, or with its secrets in cookies.
    pub fn respond<T: NewSession>(self, answer: T) -> Response {
        match self {
            Carrier::Bearer => Delivery::Body.respond(answer),
            Carrier::Cookie => Delivery::Cookie {
                device_secret: None,
            }
            .respond(answer),
        }
    }
}

/// An answer that opens a session or replaces its token: it carries the session token and,
/// unless the device keeps the secret it has, a new device secret.
pub trait NewSession: serde::Serialize {
    /// Takes them out, leaving them empty.
    fn take_secrets(&mut self) -> (String, Option<String>);
}

impl NewSession for SignedIn {
    fn take_secrets(&mut self) -> (String, Option<String>) {
        (
            std::mem::take(&mut self.token),
            Some(std::mem::take(&mut self.device_secret)),
        )
    }
}

impl NewSession for RecoveryStarted {
    fn take_secrets(&mut self) -> (String, Option<String>) {
        (
            std::mem::take(&mut self.token),
            Some(std::mem::take(&mut self.device_secret)),
        )
    }
}

/// A step-up replaces the session token only; the device cookie is left as it is.
impl NewSession for SteppedUp {
    fn take_secrets(&mut self) -> (String, Option<String>) {
        (std::mem::take(&mut self.token), None)
    }
}

fn with_cookies(
    mut response: Response,
    token: &str,
    device_secret: Option<&str>,
    session_max_age_secs: Option<u64>,
) -> Response {
    // Tokens and device secrets are base64url, so they need no quoting in a cookie. A full
    // session's cookie has no Max-Age: it ends with the browser, and the server's idle and
    // absolute limits end it sooner. A recovery session's lasts until its enrolment deadline.
    let max_age = session_max_age_secs
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    let session =
        format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict{max_age}");
    let device = device_secret.map(|d| {
        format!(
            "{DEVICE_COOKIE}={d}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={DEVICE_COOKIE_MAX_AGE_SECS}"
        )
    });
    for c in std::iter::once(session).chain(device) {
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// Sets a browser-bound session's short-lived session cookie (`browser_binding`).
pub fn with_session_cookie(response: Response, token: &str, max_age_secs: u64) -> Response {
    with_cookies(response, token, None, Some(max_age_secs))
}

/// Tells the browser to drop its session cookie (sign-out); harmless to other clients.
pub fn clear_session_cookie(mut response: Response) -> Response {
    let expired =
        format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&expired) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The built web UI at `/`; any path that is not a file gets `index.html`.
pub fn serve_web_ui<S: Clone + Send + Sync + 'static>(router: Router<S>, dir: &Path) -> Router<S> {
    router.fallback_service(ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html"))))
}

/// The page's Content-Security-Policy: only its own scripts, styles and API; no frames, no
/// plugins, no forms posting elsewhere, no inline script.
pub const WEB_UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_a_cookie_among_others_and_ignores_empty_ones() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-keyward-session=tok; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-keyward-device="),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, DEVICE_COOKIE), None);
        assert_eq!(cookie(&h, "missing"), None);
    }
}
