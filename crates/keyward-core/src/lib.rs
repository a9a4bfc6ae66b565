//! Keyward's domain engine: the rules of Advanced Account Security and the durable state they
//! act on. It knows nothing about HTTP, WebAuthn wire formats or Tauri: the server verifies
//! ceremonies and calls in here to record what they proved, one transaction per state change.

pub mod aaguid;
pub mod clock;
pub mod details;
pub mod error;
pub mod policy;
pub mod proof_key;
pub mod readiness;
pub mod recovery_key;
pub mod secret;
pub mod security_log;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{CoreError, Result};
pub use policy::Policy;
pub use store::Store;
