//! Starting keywardd: the store opened, the relying party and state built from the config, and
//! the router served on a socket, plain or over TLS, in the background.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::{Clock, Store};

use super::{AppState, router};
use crate::config::{self, Config};
use crate::relying_party::{RelyingParty, SetupError};

/// Why keywardd could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the database {path}: {source}")]
    Database {
        path: String,
        source: keyward_core::CoreError,
    },
    #[error(transparent)]
    Setup(#[from] SetupError),
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
    let relying_party = RelyingParty::new(config, store, clock).map_err(|e| match e {
        SetupError::Store(source) => StartError::Database {
            path: config.db.display().to_string(),
            source,
        },
        other => StartError::Setup(other),
    })?;
    let allowed_hosts = config.check_host.then(|| allowed_hosts(&config.origins));
    Ok(AppState::new(
        relying_party,
        config.tls.is_some(),
        config.web_ui.clone(),
        allowed_hosts,
    ))
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

/// The `Host` values a request may carry when `check_host` is on: each origin's host:port as a
/// browser sends it (no port when it is the scheme's default) and, for a `localhost` origin,
/// the loopback addresses on that port (a native client may connect by address; no web page
/// can make a browser send an address it is not itself served from).
pub(crate) fn allowed_hosts(origins: &[url::Url]) -> Vec<String> {
    let mut hosts = Vec::new();
    for o in origins {
        let Some(host) = o.host_str() else { continue };
        let with_port = |h: &str| match o.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        };
        hosts.push(with_port(&host.to_ascii_lowercase()));
        if host.eq_ignore_ascii_case("localhost") {
            hosts.push(with_port("127.0.0.1"));
            hosts.push(with_port("[::1]"));
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allowed_hosts_are_the_origins_and_loopback_for_localhost() {
        let o = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            allowed_hosts(&[o("http://localhost:4100"), o("https://keys.example.com")]),
            [
                "localhost:4100",
                "127.0.0.1:4100",
                "[::1]:4100",
                "keys.example.com"
            ]
        );
    }
}
