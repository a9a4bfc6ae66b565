//! The recovery key: 128 random bits the user writes down, shown once.
//!
//! The key never reaches the server. It derives an Ed25519 key pair (HKDF-SHA256); the server
//! stores only the public key and the user proves possession by signing a server challenge. A
//! stolen database therefore yields nothing that can recover an account, and a drill can prove
//! the user still has the key without using it up.
//!
//! Written form: 20 bytes (16 random + a 4-byte checksum) in Crockford base32, eight groups of
//! four, e.g. `7T3K-…`. The checksum catches a mistyped key on the client, before it counts as a
//! failed attempt; Crockford decoding forgives case and the I/L/1 and O/0 confusions.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use thiserror::Error;

use keyward_proto::RecoveryPurpose;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_LEN: usize = 16;
const CHECKSUM_LEN: usize = 4;
const ENCODED_LEN: usize = 32; // (16 + 4) bytes * 8 / 5

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecoveryKeyFormatError {
    #[error("a recovery key has 32 characters (8 groups of 4); this has {0}")]
    WrongLength(usize),
    #[error("'{0}' cannot appear in a recovery key")]
    BadCharacter(char),
    #[error("this recovery key has a typo: check each group against your saved copy")]
    ChecksumMismatch,
}

/// A recovery key in memory. Debug prints nothing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryKey([u8; RANDOM_LEN]);

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryKey(…)")
    }
}

fn checksum(random: &[u8; RANDOM_LEN]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::new_with_prefix(b"keyward-recovery-key-checksum-v1")
        .chain_update(random)
        .finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

impl RecoveryKey {
    pub fn generate() -> Self {
        RecoveryKey(crate::secret::random_bytes())
    }

    pub fn from_random(bytes: [u8; RANDOM_LEN]) -> Self {
        RecoveryKey(bytes)
    }

    /// The form shown to and typed by people: `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`.
    pub fn to_display(&self) -> String {
        let mut bytes = Vec::with_capacity(RANDOM_LEN + CHECKSUM_LEN);
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(&checksum(&self.0));
        let mut out = String::with_capacity(ENCODED_LEN + 7);
        let (mut acc, mut bits) = (0u32, 0u32);
        let mut written = 0;
        for b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                if written > 0 && written % 4 == 0 {
                    out.push('-');
                }
                out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
                written += 1;
            }
        }
        out
    }

    /// Parses what a person typed: case, spaces and dashes do not matter.
    pub fn parse(input: &str) -> Result<Self, RecoveryKeyFormatError> {
        let mut values = Vec::with_capacity(ENCODED_LEN);
        for c in input.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let v = match c.to_ascii_uppercase() {
                'O' => 0,
                'I' | 'L' => 1,
                u => ALPHABET
                    .iter()
                    .position(|&a| a as char == u)
                    .ok_or(RecoveryKeyFormatError::BadCharacter(c))? as u32,
            };
            values.push(v);
        }
        if values.len() != ENCODED_LEN {
            return Err(RecoveryKeyFormatError::WrongLength(values.len()));
        }
        let mut bytes = Vec::with_capacity(RANDOM_LEN + CHECKSUM_LEN);
        let (mut acc, mut bits) = (0u32, 0u32);
        for v in values {
            acc = (acc << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push(((acc >> bits) & 0xff) as u8);
            }
        }
        let mut random = [0u8; RANDOM_LEN];
        random.copy_from_slice(&bytes[..RANDOM_LEN]);
        if bytes[RANDOM_LEN..] != checksum(&random) {
            return Err(RecoveryKeyFormatError::ChecksumMismatch);
        }
        Ok(RecoveryKey(random))
    }

    fn signing_key(&self) -> SigningKey {
        let hk = Hkdf::<Sha256>::new(Some(b"keyward-recovery-key-v1"), &self.0);
        let mut seed = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(b"ed25519 signing key", &mut seed);
        SigningKey::from_bytes(&seed)
    }

    /// The public key the server stores.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    /// Proves possession for one server challenge.
    pub fn sign(&self, purpose: RecoveryPurpose, rp_id: &str, challenge: &[u8]) -> [u8; 64] {
        self.signing_key()
            .sign(&proof_message(purpose, rp_id, challenge))
            .to_bytes()
    }
}

/// What a proof signs. The purpose and the RP ID are inside, so a drill signature cannot be
/// replayed as a redemption, nor a proof made for one Keyward deployment used at another.
pub fn proof_message(purpose: RecoveryPurpose, rp_id: &str, challenge: &[u8]) -> Vec<u8> {
    let purpose = match purpose {
        RecoveryPurpose::Confirm => "confirm",
        RecoveryPurpose::Drill => "drill",
        RecoveryPurpose::Redeem => "redeem",
    };
    let mut m = Vec::with_capacity(64 + rp_id.len() + challenge.len());
    m.extend_from_slice(b"keyward-recovery-proof-v1\n");
    m.extend_from_slice(purpose.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(rp_id.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(challenge);
    m
}

pub fn verify_proof(
    public_key: &[u8],
    purpose: RecoveryPurpose,
    rp_id: &str,
    challenge: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    let Ok(vk) = VerifyingKey::from_bytes(&pk) else {
        return false;
    };
    vk.verify_strict(
        &proof_message(purpose, rp_id, challenge),
        &Signature::from_bytes(&sig),
    )
    .is_ok()
}

/// Checks that bytes are a usable Ed25519 public key (not a small-order point).
pub fn is_valid_public_key(bytes: &[u8]) -> bool {
    <[u8; 32]>::try_from(bytes)
        .ok()
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .is_some_and(|vk| !vk.is_weak())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn display_round_trips_and_forgives_case_and_lookalikes() {
        let key = RecoveryKey::from_random([7; 16]);
        let shown = key.to_display();
        assert_eq!(shown.len(), 39);
        assert_eq!(shown.matches('-').count(), 7);
        assert_eq!(RecoveryKey::parse(&shown).unwrap(), key);
        let sloppy = shown
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        assert_eq!(RecoveryKey::parse(&sloppy).unwrap(), key);
    }

    #[test]
    fn a_single_typo_is_caught_by_the_checksum() {
        let key = RecoveryKey::generate();
        let shown = key.to_display();
        for i in (0..shown.len()).filter(|i| shown.as_bytes()[*i] != b'-') {
            let mut typo = shown.clone().into_bytes();
            typo[i] = if typo[i] == b'Z' { b'Y' } else { b'Z' };
            let typo = String::from_utf8(typo).unwrap();
            assert!(
                RecoveryKey::parse(&typo).is_err(),
                "typo at {i} slipped through"
            );
        }
        assert_eq!(
            RecoveryKey::parse("ABCD"),
            Err(RecoveryKeyFormatError::WrongLength(4))
        );
        assert_eq!(
            RecoveryKey::parse(&shown.replace(&shown[0..1], "U")),
            Err(RecoveryKeyFormatError::BadCharacter('U'))
        );
    }

    #[test]
    fn proofs_bind_purpose_rp_and_challenge() {
        let key = RecoveryKey::generate();
        let pk = key.public_key();
        assert!(is_valid_public_key(&pk));
        let sig = key.sign(RecoveryPurpose::Drill, "example.com", b"challenge");
        assert!(verify_proof(
            &pk,
            RecoveryPurpose::Drill,
            "example.com",
            b"challenge",
            &sig
        ));
        assert!(!verify_proof(
            &pk,
            RecoveryPurpose::Redeem,
            "example.com",
            b"challenge",
            &sig
        ));
        assert!(!verify_proof(
            &pk,
            RecoveryPurpose::Drill,
            "evil.com",
            b"challenge",
            &sig
        ));
        assert!(!verify_proof(
            &pk,
            RecoveryPurpose::Drill,
            "example.com",
            b"other",
            &sig
        ));
        let other = RecoveryKey::generate();
        assert!(!verify_proof(
            &other.public_key(),
            RecoveryPurpose::Drill,
            "example.com",
            b"challenge",
            &sig
        ));
    }
}
/// A known answer shared with the web UI's implementation (ui/src/lib/recovery.test.ts): the
/// browser must derive the same key pair and sign the same proof as the desktop and the CLI.
#[cfg(test)]
mod known_answer {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::Engine;

    #[test]
    fn the_same_recovery_key_gives_the_same_display_public_key_and_proof_everywhere() {
        let key = RecoveryKey::from_random([7; 16]);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(key.to_display(), "0W3G-E1R7-0W3G-E1R7-0W3G-E1R7-0XRG-PRKT");
        assert_eq!(
            b64.encode(key.public_key()),
            "kWb0JURynwmhbp9mChqmwPwFfPPBz7HoLyZmlVGFSNo"
        );
        assert_eq!(
            b64.encode(key.sign(RecoveryPurpose::Drill, "localhost", &[1; 32])),
            "leaZpHEWNiGebO0w7V2P31AriC0wBLWAlciJjEnctv4HvlzipdtooisaGZgNVhqLFkoZiz7pgnwfzg9PLwjMDQ"
        );
    }
}
