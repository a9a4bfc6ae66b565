//! Sealing secrets at rest: AES-256-GCM under a key derived with HKDF-SHA256 from the log key,
//! which rests in its own owner-only file apart from the database. A database copy alone (a
//! backup, a dump) therefore holds no usable signing key or pairwise secret. Each sealed value
//! is bound to what it is (the associated data), so one cannot be swapped for another.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::error::ServerError;

const NONCE_LEN: usize = 12;

pub struct SealKey(Aes256Gcm);

impl SealKey {
    pub fn from_log_key(log_key: &ed25519_dalek::SigningKey) -> SealKey {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(
            Some(b"keyward oidc seal v1"),
            log_key.to_bytes().as_slice(),
        );
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit (255 * 32).
        if hk.expand(b"aes-256-gcm", &mut key).is_err() {
            key = [0u8; 32];
        }
        SealKey(Aes256Gcm::new(&key.into()))
    }

    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, clear: &[u8], what: &[u8]) -> Result<Vec<u8>, ServerError> {
        let nonce = keyward_core::secret::random_bytes::<NONCE_LEN>();
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: clear,
                    aad: what,
                },
            )
            .map_err(|_| ServerError::Internal("sealing failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, sealed: &[u8], what: &[u8]) -> Result<Vec<u8>, ServerError> {
        if sealed.len() < NONCE_LEN {
            return Err(ServerError::Internal("a sealed value is too short".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: what,
                },
            )
            .map_err(|_| {
                ServerError::Internal(
                    "a sealed value does not open with this log key (another deployment's key?)"
                        .into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_label() {
        let key = SealKey::from_log_key(&ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
        let other = SealKey::from_log_key(&ed25519_dalek::SigningKey::from_bytes(&[2; 32]));
        let sealed = key.seal(b"secret", b"label").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(&sealed, b"label").unwrap(), b"secret");
        assert!(key.open(&sealed, b"other label").is_err());
        assert!(other.open(&sealed, b"label").is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(key.open(&flipped, b"label").is_err());
    }
}
