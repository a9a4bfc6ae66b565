//! Shared server state.

use std::ops::Deref;
use std::sync::Arc;

use keyward_core::{Clock, Policy, Store};
use keyward_proto::SecurityEvent;
use tokio::sync::broadcast;
use webauthn_rs::Webauthn;

use crate::rate_limit::{Limits, RateLimiter};

#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub webauthn: Webauthn,
    pub policy: Policy,
    pub limits: Limits,
    pub clock: Arc<dyn Clock>,
    pub rp_id: String,
    pub info: keyward_proto::ServerInfo,
    pub tls: bool,
    /// Every committed security event, in commit order; streams filter by account.
    pub events: broadcast::Sender<SecurityEvent>,
    pub limiter: RateLimiter,
    /// Believable credential IDs for usernames that do not exist (no account enumeration).
    pub decoys: crate::decoy::DecoyCredentials,
    /// Attested (AAL3) mode: the vendor roots and models allowed to register.
    pub attestation: Option<webauthn_rs::prelude::AttestationCaList>,
    /// The operator's offline address → coarse place table; empty when none is configured.
    pub places: crate::place::PlaceDb,
    /// The built web UI served at `/`, if configured.
    pub web_ui: Option<std::path::PathBuf>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Runs blocking store work (and the CPU-bound signature checks inside it) off the
    /// async workers.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> crate::error::Result<T> + Send + 'static,
    ) -> crate::error::Result<T> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(|e| crate::error::ServerError::Internal(format!("worker: {e}")))?
    }
}
