//! Bearer secrets (session tokens, device secrets): 256 random bits, shown once, stored only as
//! SHA-256 hashes. A plain hash suffices for secrets this long (ASVS 6.5.2): there is nothing to
//! brute-force, and lookup by hash keeps verification constant-work.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh 256-bit secret, base64url without padding (43 characters).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a secret. Secrets of the wrong shape hash too (and match nothing), so
/// callers need no separate validation path that could behave differently.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keyward-secret-v1\0");
    h.update(secret.as_bytes());
    h.finalize().into()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}
