//! keywardd: Keyward's relying party as a library, so the desktop app can embed it and tests
//! can run it on loopback. The binary in `main.rs` is a thin wrapper over [`start`].

pub mod api;
pub mod browser;
pub mod config;
pub mod decoy;
pub mod error;
pub mod extract;
pub mod place;
pub mod rate_limit;
pub mod relying_party;
pub mod state;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use keyward_core::{Clock, Store};
use tokio::sync::broadcast;
use webauthn_rs::WebauthnBuilder;

pub use config::{Args, Config};
pub use error::ServerError;
pub use state::AppState;

/// Largest request body accepted. WebAuthn responses are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the database {path}: {source}")]
    Database {
        path: String,
        source: keyward_core::CoreError,
    },
    #[error("WebAuthn setup: {0}")]
    Webauthn(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

/// Opens the store and builds everything a router needs.
pub fn build_state(config: &Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    config.validate()?;
    let store = Store::open(&config.db).map_err(|source| StartError::Database {
        path: config.db.display().to_string(),
        source,
    })?;
    let first = config
        .origins
        .first()
        .ok_or_else(|| StartError::Webauthn("no origin".into()))?;
    let mut builder = WebauthnBuilder::new(&config.rp_id, first)
        .map_err(|e| StartError::Webauthn(e.to_string()))?
        .rp_name(&config.rp_name)
        .timeout(Duration::from_millis(config.policy.ceremony_ttl_ms as u64))
        .allow_subdomains(false)
        .allow_any_port(false);
    for origin in &config.origins[1..] {
        builder = builder.append_allowed_origin(origin);
    }
    let webauthn = builder
        .build()
        .map_err(|e| StartError::Webauthn(e.to_string()))?;

    // The decoy-credential key must persist, or decoys would change across restarts and
    // give unknown usernames away.
    let fake_key = store
        .write(|tx| {
            if let Some(k) = tx.meta("fake_credential_hmac_key")? {
                return Ok::<_, keyward_core::CoreError>(k);
            }
            let k = keyward_core::secret::random_bytes::<32>().to_vec();
            tx.set_meta("fake_credential_hmac_key", &k)?;
            Ok(k)
        })
        .map_err(|source| StartError::Database {
            path: config.db.display().to_string(),
            source,
        })?;
    let fake_key: [u8; 32] = fake_key
        .try_into()
        .map_err(|_| StartError::Webauthn("stored decoy key is not 32 bytes".into()))?;
    let decoys = decoy::DecoyCredentials::new(fake_key);

    let attestation = if config.attested_models.is_empty() {
        None
    } else {
        let mut builder = webauthn_rs::prelude::AttestationCaListBuilder::new();
        for m in &config.attested_models {
            builder
                .insert_device_pem(
                    m.ca_pem.as_bytes(),
                    m.aaguid,
                    m.name.clone(),
                    Default::default(),
                )
                .map_err(|e| StartError::Webauthn(format!("attested model {}: {e:?}", m.name)))?;
        }
        Some(builder.build())
    };

    let places = match &config.place_db {
        Some(path) => place::PlaceDb::load(path)
            .map_err(|e| StartError::Config(config::ConfigError::Invalid(e.to_string())))?,
        None => place::PlaceDb::default(),
    };

    let (events, _) = broadcast::channel(4096);
    let publisher = events.clone();
    store.set_commit_hook(move |committed| {
        for e in committed {
            // No subscriber is fine: the store keeps everything for replay.
            let _ = publisher.send(e.clone());
        }
    });

    Ok(AppState(Arc::new(state::Inner {
        store,
        webauthn,
        policy: config.policy.clone(),
        limits: config.limits.clone(),
        clock,
        rp_id: config.rp_id.clone(),
        info: keyward_proto::ServerInfo {
            rp_id: config.rp_id.clone(),
            rp_name: config.rp_name.clone(),
            origins: config
                .origins
                .iter()
                .map(|o| o.origin().ascii_serialization())
                .collect(),
            version: env!("CARGO_PKG_VERSION").into(),
            session_idle_ms: config.policy.session_idle_ms,
            session_absolute_ms: config.policy.session_absolute_ms,
            recovery_window_ms: config.policy.recovery_window_ms,
        },
        tls: config.tls.is_some(),
        events,
        limiter: rate_limit::RateLimiter::default(),
        decoys,
        attestation,
        places,
        web_ui: config.web_ui.clone(),
    })))
}

/// The whole HTTP surface, with the OpenAPI document served from what was registered.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = api::routes().split_for_parts();
    let openapi = Arc::new(openapi);
    let tls = state.tls;
    let not_found = || async { ServerError::NotFound("endpoint").into_response() };
    let routes = routes.route(
        "/api/v1/openapi.json",
        get(move || async move { Json((*openapi).clone()) }),
    );
    let routes = match &state.web_ui {
        Some(dir) => browser::serve_web_ui(routes.route("/api/{*rest}", any(not_found)), dir),
        None => routes.fallback(not_found),
    };
    routes
        .method_not_allowed_fallback(|| async {
            ServerError::InvalidInput("that method is not allowed here".into()).into_response()
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(move |req, next| {
            security_headers(req, next, tls)
        }))
        .with_state(state)
}

async fn security_headers(req: Request, next: Next, tls: bool) -> Response {
    let path = req.uri().path();
    let web_page = !(path.starts_with("/api/") || path == "/healthz");
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

/// A server running in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    handle: axum_server::Handle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to `grace`), and waits.
    pub async fn shutdown(self, grace: Duration) {
        self.handle.graceful_shutdown(Some(grace));
        let _ = self.task.await;
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }

    pub fn handle(&self) -> axum_server::Handle {
        self.handle.clone()
    }
}

/// Binds `config.listen` (port 0 picks a free port) and serves in the background.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<RunningServer, StartError> {
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    start_on(listener, config, clock).await
}

/// Serves on a listener the caller bound already: the port is then known before the origin
/// is chosen (tests, the desktop app's embedded server).
pub async fn start_on(
    listener: std::net::TcpListener,
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    let state = build_state(&config, clock)?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let task = match &config.tls {
        None => {
            // TCP_NODELAY: an alert is a small write that must leave at once, not wait for
            // the peer's delayed ACK (Nagle), which cost ~20 ms per event on a live stream.
            let server = axum_server::from_tcp(listener)
                .acceptor(axum_server::accept::NoDelayAcceptor::new())
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|e| {
                    StartError::Tls(format!(
                        "{} / {}: {e}",
                        tls.cert.display(),
                        tls.key.display()
                    ))
                })?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            let server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    tracing::info!(%addr, rp_id = %config.rp_id, tls = config.tls.is_some(), "keywardd listening");
    Ok(RunningServer {
        addr,
        state,
        handle,
        task,
    })
}
