//! keywardd: Keyward's relying party as a library, so the desktop app can embed it and tests
//! can run it on loopback. The binary in `main.rs` is a thin wrapper over [`start`].
//!
//! `relying_party` holds every rule and knows nothing of HTTP; `http` is the axum surface
//! over it; `config` reads flags, environment and TOML; `error` is the crate's one error.

pub mod config;
mod error;
mod http;
mod relying_party;

use std::net::SocketAddr;
use std::sync::Arc;

use keyward_core::{Clock, Store};

pub use config::{Args, Config};
pub use error::ServerError;
pub use http::browser::{CSRF_HEADER, DELIVERY_HEADER, DEVICE_COOKIE, SESSION_COOKIE};
pub use http::serve::{RunningServer, start, start_on};
pub use http::{AppState, MAX_BODY_BYTES, router};
pub use relying_party::rate_limit::{Limit, Limits};
pub use relying_party::{Authed, RelyingParty, SetupError};

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
    Ok(AppState::new(
        relying_party,
        config.tls.is_some(),
        config.web_ui.clone(),
    ))
}
