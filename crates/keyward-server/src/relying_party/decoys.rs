//! Decoy credentials for usernames that do not exist, so sign-in options do not reveal which
//! accounts exist.
//!
//! webauthn-rs ships a generator, but its distribution is for sites where passkeys are optional
//! and gives some usernames no credentials at all. Every Keyward account has at least one key, so
//! an empty list would itself be the tell. This one always gives 1 to 3 IDs, with lengths
//! that hardware keys and Keyward's virtual key produce, each with the transports a real
//! client reports (an attested key's options carry them), derived from an HMAC of the username
//! under a persisted secret: stable per username, unpredictable without the secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use webauthn_rs_proto::AuthenticatorTransport;

/// A decoy credential: its ID and the transports its "client" reported at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoy {
    pub id: Vec<u8>,
    pub transports: Vec<AuthenticatorTransport>,
}

/// Transports as browsers and keys report them, roughly as often as they occur: platform and
/// phone passkeys, then USB and NFC security keys.
fn transports_for(pick: u8) -> Vec<AuthenticatorTransport> {
    use AuthenticatorTransport::{Hybrid, Internal, Nfc, Usb};
    match pick % 100 {
        0..30 => vec![Hybrid, Internal],
        30..45 => vec![Internal],
        45..70 => vec![Nfc, Usb],
        70..85 => vec![Usb],
        _ => vec![Usb, Nfc],
    }
}

pub struct DecoyCredentials {
    key: [u8; 32],
}

impl DecoyCredentials {
    pub fn new(key: [u8; 32]) -> Self {
        DecoyCredentials { key }
    }

    fn prf(&self, parts: &[&[u8]]) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return [0; 32]; // HMAC takes keys of any length; unreachable.
        };
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    pub fn for_username(&self, username: &str) -> Vec<Decoy> {
        let seed = self.prf(&[b"count", username.as_bytes()]);
        let count = match seed[0] % 100 {
            0..55 => 1,
            55..90 => 2,
            _ => 3,
        };
        (0u8..count)
            .map(|i| {
                let a = self.prf(&[b"id", username.as_bytes(), &[i, 0]]);
                let b = self.prf(&[b"id", username.as_bytes(), &[i, 1]]);
                let len = if a[0] % 10 < 7 { 64 } else { 32 };
                let t = self.prf(&[b"transports", username.as_bytes(), &[i]]);
                Decoy {
                    id: a.iter().chain(b.iter()).take(len).copied().collect(),
                    transports: transports_for(t[0]),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_are_never_empty_and_stable_per_username() {
        let d = DecoyCredentials::new([9; 32]);
        for i in 0..2000 {
            let name = format!("user{i}");
            let ids = d.for_username(&name);
            assert!((1..=3).contains(&ids.len()));
            assert!(ids.iter().all(|d| d.id.len() == 32 || d.id.len() == 64));
            assert!(ids.iter().all(|d| !d.transports.is_empty()));
            assert_eq!(ids, d.for_username(&name));
        }
        assert_ne!(
            d.for_username("a"),
            DecoyCredentials::new([8; 32]).for_username("a")
        );
    }
}
