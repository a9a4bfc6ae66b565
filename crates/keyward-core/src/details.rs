//! The person's details in the security log, sealed under a key of their account's own.
//!
//! Every account has a data key: 32 random bytes, stored only sealed (AES-256-GCM) under the
//! deployment's key-encryption key, itself derived with HKDF-SHA256 from the log key (which
//! rests in its own owner-only file, apart from the database). Each event's personal details
//! (the device's name, the address, and its detail: place, key names, the app, the operator's
//! words) are one AES-256-GCM ciphertext under that data key, bound to the account and the
//! event's place in the log. The chain hashes the ciphertext
//! ([`crate::security_log::sealed_event_hash`]), so deleting the account, which destroys its
//! data key, leaves every hash and checkpoint verifiable and the details unreadable.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use keyward_proto::{EventDetail, SecurityEvent};

use crate::error::{CoreError, Result};
use crate::secret::random_bytes;

const NONCE_LEN: usize = 12;
const KEK_SALT: &[u8] = b"keyward event details kek v1";
const DATA_KEY_AAD: &[u8] = b"keyward account data key v1\0";
const DETAILS_AAD: &[u8] = b"keyward event details v1\0";

/// The deployment's key-encryption key for account data keys, derived from the log key.
#[derive(Clone)]
pub struct DetailKek(Aes256Gcm);

/// One account's data key, in the clear: only in memory, and in the account's own export.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

/// Never shows the key.
impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// What an event seals: everything in it that can name or place the person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    pub device_name: Option<String>,
    pub address: Option<String>,
    pub detail: EventDetail,
}

impl Details {
    /// Takes the details out of `event`, leaving it with none.
    pub fn take(event: &mut SecurityEvent) -> Details {
        Details {
            device_name: event.device_name.take(),
            address: event.address.take(),
            detail: std::mem::take(&mut event.detail),
        }
    }

    /// Puts the details into `event`.
    pub fn put(self, event: &mut SecurityEvent) {
        event.device_name = self.device_name;
        event.address = self.address;
        event.detail = self.detail;
    }
}

fn seal(cipher: &Aes256Gcm, clear: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let nonce = random_bytes::<NONCE_LEN>();
    let body = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: clear, aad })
        .map_err(|_| CoreError::Corrupt("sealing failed".into()))?;
    Ok([nonce.as_slice(), &body].concat())
}

fn open(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return Err(CoreError::Corrupt("a sealed value is too short".into()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .map_err(|_| CoreError::Corrupt("a sealed value does not open with this key".into()))
}

fn details_aad(account_id: Uuid, seq: i64) -> Vec<u8> {
    [DETAILS_AAD, account_id.as_bytes(), &seq.to_be_bytes()].concat()
}

impl DetailKek {
    pub fn from_log_key(log_key: &SigningKey) -> DetailKek {
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit: cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(KEK_SALT), log_key.as_bytes())
            .expand(b"aes-256-gcm", &mut key);
        DetailKek(Aes256Gcm::new(&key.into()))
    }

    pub fn seal_data_key(&self, account_id: Uuid, key: &DataKey) -> Result<Vec<u8>> {
        seal(
            &self.0,
            &key.0,
            &[DATA_KEY_AAD, account_id.as_bytes()].concat(),
        )
    }

    pub fn open_data_key(&self, account_id: Uuid, sealed: &[u8]) -> Result<DataKey> {
        let clear = open(
            &self.0,
            sealed,
            &[DATA_KEY_AAD, account_id.as_bytes()].concat(),
        )?;
        <[u8; 32]>::try_from(clear.as_slice())
            .map(DataKey)
            .map_err(|_| CoreError::Corrupt("an account data key is not 32 bytes".into()))
    }
}

impl DataKey {
    pub fn generate() -> DataKey {
        DataKey(random_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }

    /// The details of account `account_id`'s event at `seq` (its place in the global log).
    pub fn seal_details(&self, account_id: Uuid, seq: i64, details: &Details) -> Result<Vec<u8>> {
        let clear = serde_json::to_vec(details)?;
        seal(&self.cipher(), &clear, &details_aad(account_id, seq))
    }

    pub fn open_details(&self, account_id: Uuid, seq: i64, sealed: &[u8]) -> Result<Details> {
        let clear = open(&self.cipher(), sealed, &details_aad(account_id, seq))?;
        Ok(serde_json::from_slice(&clear)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn details_open_only_with_their_key_account_and_place() {
        let kek = DetailKek::from_log_key(&SigningKey::from_bytes(&[1; 32]));
        let other_kek = DetailKek::from_log_key(&SigningKey::from_bytes(&[2; 32]));
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let key = DataKey::generate();
        let sealed_key = kek.seal_data_key(ada, &key).unwrap();
        assert_eq!(kek.open_data_key(ada, &sealed_key).unwrap(), key);
        assert!(kek.open_data_key(bob, &sealed_key).is_err());
        assert!(other_kek.open_data_key(ada, &sealed_key).is_err());

        let details = Details {
            device_name: Some("Ada's Zebrafish laptop".into()),
            address: Some("192.0.2.7".into()),
            detail: EventDetail {
                place: Some("Lyon, France".into()),
                ..EventDetail::default()
            },
        };
        let sealed = key.seal_details(ada, 7, &details).unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"Zebrafish"));
        assert_eq!(key.open_details(ada, 7, &sealed).unwrap(), details);
        assert!(
            key.open_details(ada, 8, &sealed).is_err(),
            "bound to its place"
        );
        assert!(
            key.open_details(bob, 7, &sealed).is_err(),
            "bound to its account"
        );
        assert!(DataKey::generate().open_details(ada, 7, &sealed).is_err());
    }
}
