//! Test-only crate: `tests/kat.rs` holds the ES256 verification of the patched
//! webauthn-rs-core (`vendor/webauthn-rs-core`, ring) to the original one (RustCrypto's p256
//! through crypto-glue) on the same vectors. See `vendor/webauthn-rs-core/KEYWARD-PATCH.md`.
