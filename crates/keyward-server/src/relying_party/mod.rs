//! The relying party: every ceremony and account operation, as synchronous functions over one
//! store transaction each. It knows nothing of HTTP (`no_http_in_the_relying_party` holds it to
//! that): the handlers in the `http` module parse a request, call one method here and serialise.
//!
//! One file per concern: `ceremony` (kinds and server-side state), `client_data` (no
//! ceremony in a frame under another site, which webauthn-rs leaves loose), `input` (cleaning what
//! clients send), `views` (rows to wire types), `sessions`, `registration`, `assertion` (the
//! verification every sign-in-like ceremony shares), `sign_in` (sign-in and step-up),
//! `authenticators`, `recovery_key` (set, confirm, drill), `recovery_window` (redeem, settle,
//! cancel, enrol), `events` (recording and reading the log), `rate_limit`, `decoys`, `places`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use keyward_core::store::Tx;
use keyward_core::{Clock, Policy, Store};
use keyward_proto::{Millis, ServerInfo};
use webauthn_rs::prelude::AttestationCaList;
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::config::Config;
use crate::error::{Result, ServerError};

/// The accepted value of a [`Verdict`], or return its refusal for the transaction to commit.
macro_rules! granted {
    ($verdict:expr) => {
        match $verdict {
            $crate::relying_party::Verdict::Granted(v) => v,
            $crate::relying_party::Verdict::Refused(e) => {
                return Ok($crate::relying_party::Verdict::Refused(e));
            }
        }
    };
}
pub(crate) use granted;

mod assertion;
mod authenticators;
pub mod browser_binding;
mod ceremony;
mod client_data;
mod decoys;
mod erasure;
mod events;
mod input;
mod operator;
pub mod places;
pub mod rate_limit;
mod recovery_key;
mod recovery_window;
mod registration;
mod sessions;
mod sign_in;
#[cfg(test)]
mod tests;
mod views;

pub(crate) use sessions::AgentLimits;
pub use sessions::{Authed, RequestProof};

use decoys::DecoyCredentials;
use places::PlaceDb;
use rate_limit::{LimitKey, Network, RateLimiter, too_many_attempts};

/// The outcome of a transaction that commits whether or not the request is granted. A refusal
/// still commits what it used up or recorded (the consumed challenge, the failure's event, a
/// cloned-key warning); the caller gets the error after the commit. An `Err` from the
/// transaction closure rolls everything back instead.
pub(crate) enum Verdict<T> {
    Granted(T),
    Refused(ServerError),
}

/// The relying party and everything its rules consult.
/// Counts read from the store for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub ceremonies_pending: i64,
    pub ceremonies_cap: i64,
    pub sessions_open: i64,
    pub backchannel_pending: i64,
}

pub struct RelyingParty {
    pub(crate) store: Store,
    webauthn: Webauthn,
    pub(crate) policy: Policy,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) info: ServerInfo,
    pub(crate) limiter: RateLimiter,
    /// Believable credential IDs for usernames that do not exist (no account enumeration).
    decoys: DecoyCredentials,
    /// Attested (AAL3) mode: the vendor roots and models allowed to register.
    attestation: Option<AttestationCaList>,
    /// The operator's offline address → coarse place table; empty when none is configured.
    pub(crate) places: PlaceDb,
    /// When sessions and devices were last pruned.
    last_prune: AtomicI64,
    /// The public half of the log key that signs the log's checkpoints.
    log_public_key: ed25519_dalek::VerifyingKey,
    /// The OpenID Connect provider's own state (`crate::oidc`).
    pub(crate) oidc: crate::oidc::Provider,
    /// Stateless DPoP nonces, and how fresh a proof must be (`crate::dpop`).
    pub(crate) nonces: crate::dpop::Nonces,
    pub(crate) proof_window: crate::dpop::ProofWindow,
    /// Stateless challenges for browser sessions' refreshes (`browser_binding`).
    pub(crate) browser_challenges: browser_binding::RefreshChallenges,
}

/// A DPoP nonce is good for one to two of these.
const DPOP_NONCE_SLOT_MS: i64 = 5 * 60_000;

/// A 32-byte key kept in the database's meta table, made on first use: the same for every
/// instance and across restarts.
fn persistent_key(store: &Store, name: &str) -> std::result::Result<[u8; 32], SetupError> {
    let key = store.write(|tx| {
        if let Some(k) = tx.meta(name)? {
            return Ok::<_, keyward_core::CoreError>(k);
        }
        let k = keyward_core::secret::random_bytes::<32>().to_vec();
        tx.set_meta(name, &k)?;
        Ok(k)
    })?;
    key.try_into()
        .map_err(|_| SetupError::Webauthn(format!("the stored {name} is not 32 bytes")))
}

/// Why a relying party could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("WebAuthn setup: {0}")]
    Webauthn(String),
    #[error("the database: {0}")]
    Store(#[from] keyward_core::CoreError),
    #[error("{0}")]
    Places(#[from] places::PlaceDbError),
    #[error(transparent)]
    Log(#[from] crate::log_seal::LogSealError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the OpenID provider: {0}")]
    Oidc(String),
}

impl RelyingParty {
    /// The relying party `config` describes, over an opened store.
    pub fn new(
        config: &Config,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> std::result::Result<Self, SetupError> {
        let first = config
            .origins
            .first()
            .ok_or_else(|| SetupError::Webauthn("no origin".into()))?;
        let mut builder = WebauthnBuilder::new(&config.rp_id, first)
            .map_err(|e| SetupError::Webauthn(e.to_string()))?
            .rp_name(&config.rp_name)
            .timeout(Duration::from_millis(config.policy.ceremony_ttl_ms as u64))
            .allow_subdomains(false)
            .allow_any_port(false);
        for origin in &config.origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder
            .build()
            .map_err(|e| SetupError::Webauthn(e.to_string()))?;

        // Before anything else is written: the log must still extend its last signed head.
        let log_key_path = config.log_key_path()?;
        let log_public_key = crate::log_seal::seal(&store, &log_key_path)?;
        // The OpenID provider's secrets are sealed under a key derived from the log key.
        let log_key = crate::log_seal::load_key(&log_key_path)?
            .ok_or_else(|| SetupError::Oidc("the log key is missing".into()))?;
        let oidc = crate::oidc::Provider::new(
            &store,
            &log_key,
            first.origin().ascii_serialization(),
            !config.attested_models.is_empty(),
            &config.oidc_clients,
            clock.now(),
        )
        .map_err(|e| SetupError::Oidc(e.to_string()))?;

        // The decoy-credential key must persist, or decoys would change across restarts and
        // give unknown usernames away.
        let decoy_key = persistent_key(&store, "fake_credential_hmac_key")?;
        // DPoP nonces: one key for every instance on this database, so any accepts any's.
        let nonce_key = persistent_key(&store, "dpop_nonce_hmac_key")?;
        // Browser refresh challenges, likewise accepted by every instance.
        let browser_challenge_key = persistent_key(&store, "browser_challenge_hmac_key")?;

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
                    .map_err(|e| {
                        SetupError::Webauthn(format!("attested model {}: {e:?}", m.name))
                    })?;
            }
            Some(builder.build())
        };

        let places = match &config.place_db {
            Some(path) => PlaceDb::load(path)?,
            None => PlaceDb::default(),
        };

        Ok(RelyingParty {
            store,
            webauthn,
            policy: config.policy.clone(),
            clock,
            info: ServerInfo {
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
                browser_cookie_ms: config.policy.browser_cookie_ms,
            },
            limiter: RateLimiter::new(config.limits.clone()),
            decoys: DecoyCredentials::new(decoy_key),
            attestation,
            places,
            last_prune: AtomicI64::new(i64::MIN),
            log_public_key,
            oidc,
            nonces: crate::dpop::Nonces::new(nonce_key, DPOP_NONCE_SLOT_MS),
            proof_window: crate::dpop::ProofWindow::default(),
            browser_challenges: browser_binding::RefreshChallenges::new(browser_challenge_key),
        })
    }

    /// The DPoP nonce to hand out now (`DPoP-Nonce`).
    pub fn dpop_nonce(&self) -> String {
        self.nonces.current(self.now())
    }

    /// The RP ID and origins ceremonies must use, and the session lifetimes in force.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The durable state (for the commit hook, chain verification and benchmarks).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn now(&self) -> Millis {
        self.clock.now()
    }

    /// What `/metrics` reads at each scrape.
    pub fn gauges(&self) -> Result<Gauges> {
        let now = self.now();
        self.store.read(|tx| {
            Ok(Gauges {
                ceremonies_pending: tx.pending_ceremonies()?,
                ceremonies_cap: i64::from(self.policy.max_pending_ceremonies),
                sessions_open: tx.open_sessions(now, self.policy.session_idle_ms)?,
                backchannel_pending: tx.pending_logouts()?,
            })
        })
    }

    /// Unauthenticated ceremony starts are counted per address, in the start's transaction.
    pub(crate) fn count_begin(&self, tx: &Tx<'_>, address: &str) -> Result<()> {
        let key = LimitKey::Begin {
            network: Network::of(address),
        };
        match self.limiter.hit(tx, &key, self.now())? {
            Some(ms) => Err(too_many_attempts(ms)),
            None => Ok(()),
        }
    }

    /// Deletes sessions that ended or lapsed, and devices left with no session, once they are
    /// older than the retention period: at most every `prune_every_ms`, at most `prune_batch`
    /// rows of each per run, so it never holds the writer long. A failure is logged only: it
    /// must not fail the request that happened to trigger it.
    pub(super) fn prune_if_due(&self) {
        let now = self.now();
        let last = self.last_prune.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.policy.prune_every_ms
            || self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let p = &self.policy;
        let before = now - p.session_retention_ms;
        match self.store.write(|tx| {
            let (sessions, devices) =
                tx.prune_sessions(before, p.session_idle_ms, p.prune_batch)?;
            let hits = tx.prune_limit_hits(now, p.prune_batch)?
                + tx.prune_proof_replays(now, p.prune_batch)?
                + tx.prune_pending_authorizations(now, p.prune_batch)?
                + tx.prune_device_codes(now, p.prune_batch)?
                + tx.prune_grants(before, p.prune_batch)?
                + tx.prune_logouts(before, p.prune_batch)?;
            Ok::<_, ServerError>((sessions, devices, hits))
        }) {
            Ok((0, 0, 0)) => {}
            Ok((sessions, devices, hits)) => {
                tracing::info!(
                    sessions,
                    devices,
                    hits,
                    "pruned old sessions, rate-limit hits, authorization requests, app grants and logouts"
                )
            }
            Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
        }
    }

    /// A transaction that commits its [`Verdict`] either way; a refusal becomes `Err` after.
    pub(crate) fn write_verdict<T>(
        &self,
        f: impl FnMut(&mut Tx<'_>) -> Result<Verdict<T>>,
    ) -> Result<T> {
        match self.store.write::<Verdict<T>, ServerError>(f)? {
            Verdict::Granted(t) => Ok(t),
            Verdict::Refused(e) => Err(e),
        }
    }
}
