//! Keyward's client side, shared by the desktop app and the command-line tool.
//!
//! - [`Api`]: the typed keywardd HTTP API; every error is the server's `{code, message}`.
//! - [`EventFeed`]: the live security-event stream, reconnecting with backoff and resuming from
//!   the last event seen, so no alert is lost while offline and none is shown twice.
//! - [`Authenticator`] and [`Ceremonies`]: run registration and sign-in ceremonies with
//!   whatever authenticator the user presents: a security key over USB or NFC (CTAP2, or the
//!   Windows WebAuthn API, [`windows_key`]) in [`security_key`], or the clearly labelled
//!   [`VirtualKey`].

mod api;
mod authenticator;
mod ceremony;
pub mod credential_json;
mod feed;
pub mod log_watch;
pub mod security_key;
pub mod site;
pub mod windows_key;

pub use api::{Api, ClientError, Result};
pub use authenticator::{Authenticator, AuthenticatorError, VirtualKey, write_private};
pub use ceremony::Ceremonies;
pub use feed::{EventFeed, FeedEnd};
pub use security_key::{CancelSwitch, KeyPrompter, SecurityKey, UsbOrNfc, platform_security_key};
pub use site::{Site, SiteError};
