//! Prometheus metrics, on a listen address of their own (`--metrics-listen`, off by default):
//! what an operator watches, never who did what. Recorded through the `metrics` facade (a
//! no-op until a recorder is installed) and exposed by `metrics-exporter-prometheus`.
//!
//! - `keyward_http_requests_seconds{method, route, status}`: request latency, by route
//!   pattern (never the path itself, which holds IDs).
//! - `keyward_sign_ins_total`, `keyward_sign_in_failures_total{reason}`: sign-ins finished
//!   and assertions refused, by the reason logged.
//! - `keyward_refusals_total{code}`: every error answered, by its wire code (`rate_limited` is
//!   a rate-limit refusal, `unavailable` a database away).
//! - `keyward_commit_seconds{engine, durability}`: how long write transactions take to commit
//!   (recorded by the store).
//! - `keyward_backchannel_deliveries_total{outcome}`: back-channel logout attempts, by what
//!   became of them (`delivered`, `retry`, `gave_up`).
//! - Read at each scrape: `keyward_ceremonies_pending` beside `keyward_ceremonies_cap`,
//!   `keyward_sessions_open`, `keyward_event_streams_open`, `keyward_backchannel_pending`
//!   (logouts neither delivered nor given up).
//!
//! Labels hold routes, codes and reasons only: no address, username, ID or token.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::http::AppState;

/// The process's one recorder (the `metrics` facade has one global), installed by the first
/// server that serves metrics.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (an embedding program's) keeps receiving; this
        // handle then renders only what was recorded before, which is nothing.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed already; /metrics will be empty");
        }
        describe();
        handle
    })
}

/// Each metric's `# HELP` line.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "keyward_http_requests_seconds",
        Unit::Seconds,
        "Request latency by method, route pattern and status"
    );
    describe_counter!("keyward_sign_ins_total", "Sign-ins finished");
    describe_counter!(
        "keyward_sign_in_failures_total",
        "Assertions refused, by the reason logged"
    );
    describe_counter!(
        "keyward_refusals_total",
        "Errors answered, by wire code (rate_limited: a rate-limit refusal)"
    );
    describe_histogram!(
        "keyward_commit_seconds",
        Unit::Seconds,
        "Write transactions, from the call to the commit (waiting, retries and flush included)"
    );
    describe_gauge!(
        "keyward_ceremonies_pending",
        "Ceremonies begun and not yet finished"
    );
    describe_gauge!(
        "keyward_ceremonies_cap",
        "The most ceremonies pending at once"
    );
    describe_gauge!("keyward_sessions_open", "Sessions neither ended nor lapsed");
    describe_gauge!(
        "keyward_event_streams_open",
        "Event streams open on this instance"
    );
    describe_counter!(
        "keyward_backchannel_deliveries_total",
        "Back-channel logout attempts, by outcome (delivered, retry, gave_up)"
    );
    describe_gauge!(
        "keyward_backchannel_pending",
        "Back-channel logouts neither delivered nor given up"
    );
}

/// Serves `GET /metrics` on `listener` until the process ends (the task is aborted on
/// shutdown).
pub(crate) fn serve(
    listener: std::net::TcpListener,
    state: AppState,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let handle = recorder();
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state((state, handle));
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    });
    Ok((addr, task))
}

async fn scrape(State((state, handle)): State<(AppState, &'static PrometheusHandle)>) -> Response {
    // Counts the store answers, read now rather than kept in step with every change.
    let counts = state.blocking(|rp| rp.gauges()).await;
    match counts {
        Ok(g) => {
            metrics::gauge!("keyward_ceremonies_pending").set(g.ceremonies_pending as f64);
            metrics::gauge!("keyward_ceremonies_cap").set(g.ceremonies_cap as f64);
            metrics::gauge!("keyward_sessions_open").set(g.sessions_open as f64);
            metrics::gauge!("keyward_backchannel_pending").set(g.backchannel_pending as f64);
        }
        Err(error) => tracing::warn!(%error, "reading the gauges for /metrics"),
    }
    metrics::gauge!("keyward_event_streams_open").set(state.open_streams() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Times every request, labelled by its route's pattern.
pub(crate) async fn track_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    metrics::histogram!(
        "keyward_http_requests_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

pub(crate) fn signed_in() {
    metrics::counter!("keyward_sign_ins_total").increment(1);
}

pub(crate) fn sign_in_failed(reason: &'static str) {
    metrics::counter!("keyward_sign_in_failures_total", "reason" => reason).increment(1);
}

pub(crate) fn refused(code: keyward_proto::ErrorCode) {
    let code = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    metrics::counter!("keyward_refusals_total", "code" => code).increment(1);
}

pub(crate) fn logout_attempted(outcome: keyward_core::store::LogoutOutcome) {
    use keyward_core::store::LogoutOutcome;
    let outcome = match outcome {
        LogoutOutcome::Delivered => "delivered",
        LogoutOutcome::RetryAt(_) => "retry",
        LogoutOutcome::GaveUp => "gave_up",
    };
    metrics::counter!("keyward_backchannel_deliveries_total", "outcome" => outcome).increment(1);
}
