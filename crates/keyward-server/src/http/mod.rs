//! keywardd's HTTP surface over the relying party: the router, the handlers (`api`), request
//! extractors, what browsers get (`browser`), the live event stream, the errors' status codes
//! and serving on a socket. Handlers parse, make one relying-party call, and serialise.

pub mod api;
pub mod browser;
pub mod browser_binding;
mod error;
pub mod extract;
pub mod oauth;
pub mod serve;
pub mod stream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use keyward_core::store::RemoteCommit;
use keyward_proto::SecurityEvent;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::ServerError;
use crate::net::Cidr;
use crate::relying_party::RelyingParty;

/// Largest request body accepted. WebAuthn responses are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares: the relying party, and the fan-out of committed events.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    relying_party: RelyingParty,
    /// Every committed security event, in commit order; streams filter by account.
    events: broadcast::Sender<Published>,
    /// Sessions whose token was just replaced (step-up), here or (heard through PostgreSQL's
    /// LISTEN/NOTIFY) on another instance: their streams check they may go on.
    tokens_replaced: broadcast::Sender<Uuid>,
    tls: bool,
    /// The built web UI served at `/`, if configured.
    web_ui: Option<PathBuf>,
    /// Proxies whose forwarded headers name the client.
    trusted_proxies: Vec<Cidr>,
    /// Open event streams per session, and how many one session may hold.
    streams: Mutex<HashMap<Uuid, usize>>,
    max_streams_per_session: usize,
    stream_poll_every: std::time::Duration,
    /// With `check_host`: the only `Host` values answered (see `serve::allowed_hosts`).
    allowed_hosts: Option<Vec<String>>,
    metrics: bool,
}

/// What [`AppState::new`] takes from the configuration besides the relying party.
pub struct HttpSettings {
    pub tls: bool,
    pub web_ui: Option<PathBuf>,
    pub trusted_proxies: Vec<Cidr>,
    pub max_streams_per_session: usize,
    pub stream_poll_every: std::time::Duration,
    /// With `check_host`: the only `Host` values answered (see `serve::allowed_hosts`).
    pub allowed_hosts: Option<Vec<String>>,
    /// Requests are timed for `/metrics` (only when metrics are served).
    pub metrics: bool,
}

impl HttpSettings {
    pub fn of(config: &crate::Config) -> HttpSettings {
        HttpSettings {
            tls: config.tls.is_some(),
            web_ui: config.web_ui.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            max_streams_per_session: config.max_streams_per_session,
            stream_poll_every: config.stream_poll_every,
            metrics: config.metrics_listen.is_some(),
            allowed_hosts: config
                .check_host
                .then(|| serve::allowed_hosts(&config.origins)),
        }
    }
}

/// One open event stream of a session; dropping it (the stream ends) frees the place.
pub(crate) struct StreamSlot {
    state: AppState,
    session: Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.state.0.streams.lock();
        if let Some(n) = streams.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.session);
            }
        }
    }
}

/// What open streams hear of.
#[derive(Debug, Clone)]
pub(crate) enum Published {
    /// An event this instance committed.
    Event(Box<SecurityEvent>),
    /// Another instance committed events for these accounts: read them from the log.
    Elsewhere(Vec<Uuid>),
    /// Another instance's commits may have gone unheard: every stream catches up from the log.
    MayHaveMissed,
}

impl AppState {
    /// Serves `relying_party`; every event its store commits is published to open streams.
    pub fn new(relying_party: RelyingParty, settings: HttpSettings) -> AppState {
        let (events, _) = broadcast::channel(4096);
        let publisher = events.clone();
        relying_party.store().set_commit_hook(move |committed| {
            for e in committed {
                // No subscriber is fine: the store keeps everything for replay.
                let _ = publisher.send(Published::Event(Box::new(e.clone())));
            }
        });
        let publisher = events.clone();
        let tokens_replaced = broadcast::channel(256).0;
        let replacements = tokens_replaced.clone();
        let listening =
            relying_party
                .store()
                .listen_for_other_instances(move |remote| match remote {
                    RemoteCommit::Changed {
                        accounts,
                        tokens_replaced,
                    } => {
                        if !accounts.is_empty() {
                            let _ = publisher.send(Published::Elsewhere(accounts));
                        }
                        for session in tokens_replaced {
                            let _ = replacements.send(session);
                        }
                    }
                    RemoteCommit::MayHaveMissed => {
                        let _ = publisher.send(Published::MayHaveMissed);
                    }
                });
        if let Err(error) = listening {
            // Streams still catch up by polling the log (`stream::POLL_EVERY`).
            tracing::warn!(%error, "cannot listen for other instances' commits");
        }
        AppState(Arc::new(Shared {
            relying_party,
            events,
            tokens_replaced,
            tls: settings.tls,
            web_ui: settings.web_ui,
            trusted_proxies: settings.trusted_proxies,
            streams: Mutex::default(),
            max_streams_per_session: settings.max_streams_per_session,
            stream_poll_every: settings.stream_poll_every,
            allowed_hosts: settings.allowed_hosts,
            metrics: settings.metrics,
        }))
    }

    pub(crate) fn trusted_proxies(&self) -> &[Cidr] {
        &self.0.trusted_proxies
    }

    /// Event streams open now, over all sessions.
    pub(crate) fn open_streams(&self) -> usize {
        self.0.streams.lock().values().sum()
    }

    /// A place for one more event stream of `session`, or a refusal once it holds the most.
    pub(crate) fn open_stream(&self, session: Uuid) -> Result<StreamSlot, ServerError> {
        let mut streams = self.0.streams.lock();
        let n = streams.entry(session).or_default();
        if *n >= self.0.max_streams_per_session {
            return Err(ServerError::Conflict(
                "this session has too many event streams open; close one first",
            ));
        }
        *n += 1;
        Ok(StreamSlot {
            state: self.clone(),
            session,
        })
    }

    pub fn relying_party(&self) -> &RelyingParty {
        &self.0.relying_party
    }

    /// Served over HTTPS (what a request's URL starts with, for DPoP's `htu`).
    pub(crate) fn tls(&self) -> bool {
        self.0.tls
    }

    fn stream_poll_every(&self) -> std::time::Duration {
        self.0.stream_poll_every
    }

    fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.0.events.subscribe()
    }

    /// Tells open streams that `session`'s token was replaced (after the commit): those opened
    /// with the old token end, as any request with it is now refused.
    pub(crate) fn token_replaced(&self, session: Uuid) {
        // No stream open is fine.
        let _ = self.0.tokens_replaced.send(session);
    }

    fn subscribe_tokens_replaced(&self) -> broadcast::Receiver<Uuid> {
        self.0.tokens_replaced.subscribe()
    }

    /// Runs blocking store work (and the CPU-bound signature checks inside it) off the
    /// async workers.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&RelyingParty) -> crate::error::Result<T> + Send + 'static,
    ) -> crate::error::Result<T> {
        let state = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(state.relying_party())))
            .await
            .map_err(|e| ServerError::Internal(format!("worker: {e}")))?
    }
}

/// The whole HTTP surface, with the OpenAPI document served from what was registered.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = api::routes().merge(oauth::api_routes()).split_for_parts();
    let openapi = Arc::new(openapi);
    let tls = state.0.tls;
    let not_found = || async { ServerError::NotFound("endpoint").into_response() };
    let routes = routes.route(
        "/api/v1/openapi.json",
        get(move || async move { Json((*openapi).clone()) }),
    );
    let routes = routes.merge(oauth::oauth_routes());
    let routes = match &state.0.web_ui {
        Some(dir) => browser::serve_web_ui(routes.route("/api/{*rest}", any(not_found)), dir),
        None => routes.fallback(not_found),
    };
    let routes = if state.0.metrics {
        routes.layer(middleware::from_fn(crate::metrics::track_requests))
    } else {
        routes
    };
    routes
        .method_not_allowed_fallback(|| async {
            ServerError::InvalidInput("that method is not allowed here".into()).into_response()
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), dpop_nonce))
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .layer(middleware::from_fn(move |req, next| {
            security_headers(req, next, tls)
        }))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request an ID of ours: logged with everything done for it (a span, carried
/// into the blocking pool by `AppState::blocking`) and sent back as `X-Request-Id`, so a
/// person who reports an error can name it. A client's own `X-Request-Id` is not used: it
/// could make two requests' lines look like one.
async fn request_id(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = Uuid::new_v4().simple().to_string();
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Refuses a request for a Host that is not this server's own (DNS rebinding: a page on
/// another site whose name now points at 127.0.0.1). Only when `check_host` is configured.
async fn check_host(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(allowed) = &state.0.allowed_hosts {
        // HTTP/1.1 sends Host; HTTP/2 the URI's authority.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(str::to_ascii_lowercase);
        if !host.is_some_and(|h| allowed.contains(&h)) {
            return ServerError::Forbidden("this server does not answer for that host name")
                .into_response();
        }
    }
    next.run(req).await
}

/// Every API answer carries the current DPoP nonce (RFC 9449 section 8), so a client always
/// holds one for its next proof: stateless, an HMAC of the time slot (`dpop::Nonces`).
async fn dpop_nonce(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    if api
        && !res.headers().contains_key("dpop-nonce")
        && let Ok(v) = HeaderValue::from_str(&state.relying_party().dpop_nonce())
    {
        res.headers_mut().insert("dpop-nonce", v);
    }
    res
}

async fn security_headers(req: Request, next: Next, tls: bool) -> Response {
    let path = req.uri().path();
    let web_page = !(path.starts_with("/api/")
        || path == "/healthz"
        || path.starts_with("/oauth2/")
        || path.starts_with("/.well-known/"));
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if web_page {
        // The web UI: revalidated each time (a new build shows at once), its own strict CSP,
        // and WebAuthn allowed to this page only, never to something it embeds.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(browser::WEB_UI_CSP),
        );
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        h.insert(
            "permissions-policy",
            HeaderValue::from_static(
                "publickey-credentials-create=(self), publickey-credentials-get=(self)",
            ),
        );
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    res
}
