//! The back-channel logout sender: posts each logout token the outbox holds (`oidc_logouts`,
//! rules in `oidc::logout_tokens`) to its app as `logout_token=...`
//! (`application/x-www-form-urlencoded`, Back-Channel Logout 1.0, 2.5).
//!
//! Woken by the store as soon as a transaction that queued logouts commits, so a logout
//! leaves at once; and every [`POLL_EVERY`] regardless, so rows due for a retry, rows left by
//! a restart or by another instance that died are sent too. Each row is claimed with a lease
//! before it is sent, so instances on one PostgreSQL database never both send it. Redirects
//! are not followed (the registered URI is the only address posted to), and each attempt has
//! [`TIMEOUT`] to answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::http::AppState;
use crate::oidc::logout_tokens::{Attempt, CLAIM_BATCH, LogoutDelivery};

/// How long an app has to answer one attempt.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Due rows are looked for at least this often (and lapsed sessions noticed).
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Starts the sender for `state`'s store; it runs until the task is aborted.
pub(crate) fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    state
        .relying_party()
        .store()
        .set_logout_hook(move || waker.notify_one());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .user_agent(concat!("keywardd/", env!("CARGO_PKG_VERSION")))
        .build();
    tokio::spawn(async move {
        let http = match http {
            Ok(http) => http,
            Err(error) => {
                tracing::error!(%error, "no HTTP client: back-channel logouts are not sent");
                return;
            }
        };
        loop {
            if let Err(error) = state.blocking(|rp| rp.end_lapsed_app_sessions()).await {
                tracing::warn!(%error, "noticing lapsed sessions");
            }
            send_due(&state, &http).await;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    })
}

/// Sends every logout due now, a batch at a time, each batch's posts at once.
async fn send_due(state: &AppState, http: &reqwest::Client) {
    loop {
        let batch = match state.blocking(|rp| rp.claim_logouts()).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "claiming back-channel logouts");
                return;
            }
        };
        let full = batch.len() >= CLAIM_BATCH as usize;
        futures::future::join_all(batch.into_iter().map(|d| deliver(state, http, d))).await;
        if !full {
            return;
        }
    }
}

async fn deliver(state: &AppState, http: &reqwest::Client, delivery: LogoutDelivery) {
    let attempt = match http
        .post(&delivery.uri)
        .header(reqwest::header::CACHE_CONTROL, "no-store")
        .form(&[("logout_token", delivery.token.as_str())])
        .send()
        .await
    {
        Ok(response) => Attempt::Status(response.status().as_u16()),
        Err(error) if error.is_timeout() => Attempt::TimedOut,
        // Without the URL: it may carry a query the operator registered, not for logs.
        Err(error) => Attempt::Failed(error.without_url().to_string()),
    };
    let delivery = Arc::new(delivery);
    let recorded = {
        let (delivery, attempt) = (delivery.clone(), attempt.clone());
        state
            .blocking(move |rp| rp.record_logout_attempt(&delivery, &attempt))
            .await
    };
    match recorded {
        Ok(outcome) => {
            crate::metrics::logout_attempted(outcome);
            if outcome != keyward_core::store::LogoutOutcome::Delivered {
                tracing::info!(
                    attempt = delivery.attempts,
                    outcome = ?outcome,
                    met = ?attempt,
                    "a back-channel logout was not delivered"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "recording a back-channel logout attempt"),
    }
}
