//! keywardd: Keyward's relying party as a library, so the desktop app can embed it and tests
//! can run it on loopback. The binary in `main.rs` is a thin wrapper over [`start`].
//!
//! `relying_party` holds every rule and knows nothing of HTTP; `http` is the axum surface
//! over it; `config` reads flags, environment and TOML; `error` is the crate's one error.

pub mod admin;
mod backchannel;
pub mod check;
pub mod config;
pub mod dpop;
mod error;
mod http;
pub mod log_seal;
mod metrics;
mod net;
pub mod oidc;
mod relying_party;

pub use config::{Args, Config};
pub use error::ServerError;
pub use http::AppState;
pub use http::browser::{CSRF_HEADER, DELIVERY_HEADER, DEVICE_COOKIE, SESSION_COOKIE};
pub use http::serve::{RunningServer, StartError, start, start_on};
pub use net::Cidr;
pub use relying_party::rate_limit::{Limit, Limits};
pub use relying_party::{Authed, RelyingParty, RequestProof, SetupError};
