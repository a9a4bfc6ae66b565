//! Starting keywardd: the store opened, the relying party and state built from the config, and
//! the router served on a socket, plain or over TLS, in the background.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::TokioTimer;
use keyward_core::{Clock, Store};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{AppState, HttpSettings, router};
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
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the store and builds everything a router needs.
pub fn build_state(config: &Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    let relying_party = open_relying_party(config, clock)?;
    Ok(AppState::new(relying_party, HttpSettings::of(config)))
}

/// The relying party over the configured database, with its log sealed, and no HTTP: for
/// serving, and for `keywardd admin`, which acts through the same rules.
pub fn open_relying_party(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<RelyingParty, StartError> {
    config.validate()?;
    let store = Store::connect(&config.db).map_err(|source| StartError::Database {
        path: config.db.to_string(),
        source,
    })?;
    RelyingParty::new(config, store, clock).map_err(|e| match e {
        SetupError::Store(source) => StartError::Database {
            path: config.db.to_string(),
            source,
        },
        other => StartError::Setup(other),
    })
}

/// A server running in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    handle: axum_server::Handle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics: Option<tokio::task::JoinHandle<()>>,
    /// The back-channel logout sender (`crate::backchannel`).
    logouts: tokio::task::JoinHandle<()>,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.abort();
        }
        self.logouts.abort();
    }
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to `grace`), and waits.
    pub async fn shutdown(mut self, grace: Duration) {
        self.handle.graceful_shutdown(Some(grace));
        let _ = (&mut self.task).await;
        // A delivery cut short here is sent again once its lease runs out.
        self.logouts.abort();
        let _ = (&mut self.logouts).await;
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(mut self) -> std::io::Result<()> {
        (&mut self.task).await.map_err(std::io::Error::other)?
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
    // TCP_NODELAY: an alert is a small write that must leave at once, not wait for the peer's
    // delayed ACK (Nagle), which cost ~20 ms per event on a live stream. And at most
    // `max_connections` at once: one more is closed on arrival.
    let tcp = ConnectionLimit::new(
        axum_server::accept::NoDelayAcceptor::new(),
        config.max_connections,
    );
    // hyper applies a header-read timeout only with a timer: without one a client sending
    // a byte at a time holds its connection for ever (slowloris).
    let timeouts = |builder: &mut hyper_util::server::conn::auto::Builder<_>| {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
    };
    let task = match &config.tls {
        None => {
            let mut server = axum_server::from_tcp(listener)
                .acceptor(tcp)
                .handle(handle.clone());
            timeouts(server.http_builder());
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
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls).acceptor(tcp);
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            timeouts(server.http_builder());
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    let (metrics_addr, metrics) = match config.metrics_listen {
        None => (None, None),
        Some(at) => {
            let served = std::net::TcpListener::bind(at)
                .and_then(|l| crate::metrics::serve(l, state.clone()))
                .map_err(|source| StartError::Metrics { addr: at, source });
            match served {
                Ok((addr, task)) => (Some(addr), Some(task)),
                Err(e) => {
                    handle.shutdown();
                    return Err(e);
                }
            }
        }
    };
    let logouts = crate::backchannel::spawn(state.clone());
    tracing::info!(%addr, rp_id = %config.rp_id, tls = config.tls.is_some(), ?metrics_addr, "keywardd listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        state,
        handle,
        task,
        metrics,
        logouts,
    })
}

/// An acceptor that serves at most `max` connections at once: past that, a new connection is
/// closed as it arrives (before TLS or HTTP cost anything), and the place frees when one ends.
#[derive(Clone)]
struct ConnectionLimit<A> {
    inner: A,
    permits: Arc<Semaphore>,
}

impl<A> ConnectionLimit<A> {
    fn new(inner: A, max: usize) -> Self {
        ConnectionLimit {
            inner,
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

impl<A, S> axum_server::accept::Accept<TcpStream, S> for ConnectionLimit<A>
where
    A: axum_server::accept::Accept<TcpStream, S> + Clone + Send + Sync + 'static,
    A::Future: Send,
    A::Stream: Send,
    A::Service: Send,
    S: Send + 'static,
{
    type Stream = Counted<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, std::io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        let inner = self.inner.clone();
        Box::pin(async move {
            let Ok(permit) = permit else {
                tracing::warn!("connection limit reached; closing a new connection");
                return Err(std::io::Error::other("connection limit reached"));
            };
            let (stream, service) = inner.accept(stream, service).await?;
            Ok((
                Counted {
                    inner: stream,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// A connection holding one of [`ConnectionLimit`]'s places until it is dropped.
struct Counted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
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
