//! A software WebAuthn client and authenticator in one.
//!
//! It does what a browser plus a FIDO2 key do: builds clientDataJSON exactly as WebAuthn L3
//! serialises it (`type`, `challenge`, `origin`, `crossOrigin`, in that order), checks the RP ID
//! against the origin, and signs authenticator data with a P-256 key. Every knob an attack test
//! needs is in [`Behaviour`]. Credentials are discoverable: assertions carry the user handle.
//!
//! It is **not secure**: private keys live in memory and in whatever file the caller saves.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use url::Url;
use uuid::Uuid;
use webauthn_rs_proto::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};

#[derive(Debug, Error)]
pub enum SoftKeyError {
    #[error("the relying party ID {rp_id} does not belong to origin {origin}")]
    RpIdMismatch { rp_id: String, origin: String },
    #[error("this key holds no credential for that request")]
    NoCredential,
    #[error("this key is already registered (excluded credential)")]
    Excluded,
    #[error("no supported algorithm offered (this key does ES256 only)")]
    NoAlgorithm,
    #[error("could not build the response: {0}")]
    Encode(String),
}

/// What the "user" and "client" do; the defaults are an honest browser and a user who touches
/// the key and enters the PIN.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Behaviour {
    pub user_present: bool,
    pub user_verified: bool,
    /// Claim the credential may be synced (BE) and is (BS), like a password-manager passkey.
    pub backup_eligible: bool,
    /// Report this origin in clientDataJSON instead of the real one (a phishing page).
    pub origin_override: Option<String>,
    /// Claim the ceremony ran in a frame of another site (`crossOrigin: true`).
    pub cross_origin: bool,
    /// The top-level site's origin of that frame (`topOrigin`), if any.
    pub top_origin: Option<String>,
    /// Hash this RP ID into authenticator data instead of the requested one.
    pub rp_id_override: Option<String>,
    /// Flip a bit in the signature.
    pub corrupt_signature: bool,
    /// Leave the user handle out of assertions.
    pub omit_user_handle: bool,
    /// Register with this credential ID instead of a fresh random one (a key answering with
    /// another account's credential ID).
    #[serde(default)]
    pub reuse_credential_id: Option<Vec<u8>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            user_present: true,
            user_verified: true,
            backup_eligible: false,
            origin_override: None,
            cross_origin: false,
            top_origin: None,
            rp_id_override: None,
            corrupt_signature: false,
            omit_user_handle: false,
            reuse_credential_id: None,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct StoredCredential {
    pub id: Vec<u8>,
    pub rp_id: String,
    pub user_handle: Vec<u8>,
    pub user_name: String,
    /// P-256 private scalar.
    secret: Vec<u8>,
    pub sign_count: u32,
    /// `secret` parsed into ring's signer, on first use. Rebuilding a key from the scalar for
    /// every assertion (a scalar multiplication for its public key) cost about as much as the
    /// signature, and the benchmark's load generator signs on the cores it measures. Shared by
    /// clones (the key is the same); `secret` never changes after registration.
    #[serde(skip)]
    signer: OnceLock<Arc<EcdsaKeyPair>>,
}

impl StoredCredential {
    fn signer(&self) -> Result<&EcdsaKeyPair, SoftKeyError> {
        if let Some(signer) = self.signer.get() {
            return Ok(signer);
        }
        let encode =
            |e: &dyn std::fmt::Display| SoftKeyError::Encode(format!("credential key: {e}"));
        let key = SigningKey::from_slice(&self.secret).map_err(|e| encode(&e))?;
        let public = key.verifying_key().to_encoded_point(false);
        let signer = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &key.to_bytes(),
            public.as_bytes(),
            &SystemRandom::new(),
        )
        .map_err(|e| encode(&e))?;
        Ok(self.signer.get_or_init(|| Arc::new(signer)))
    }
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("id", &URL_SAFE_NO_PAD.encode(&self.id))
            .field("rp_id", &self.rp_id)
            .field("user_name", &self.user_name)
            .field("sign_count", &self.sign_count)
            .finish_non_exhaustive()
    }
}

/// A batch attestation identity: a certificate (DER) issued to this "model" by its vendor CA,
/// and the certificate's P-256 private key (SEC1 scalar). With one, registrations carry
/// `packed` attestation with `x5c`; without, `none`.
#[derive(Clone, Serialize, Deserialize)]
pub struct AttestationIdentity {
    pub certificate_der: Vec<u8>,
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for AttestationIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttestationIdentity(…)")
    }
}

/// A software authenticator. `Clone` it to model a cloned key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoftKey {
    pub aaguid: Uuid,
    pub credentials: Vec<StoredCredential>,
    pub behaviour: Behaviour,
    #[serde(default)]
    pub attestation: Option<AttestationIdentity>,
    /// What the client reports about how the key is reached: a stand-in for a USB/NFC key by
    /// default, `internal` for the desktop's virtual key.
    #[serde(default = "default_transports")]
    pub transports: Vec<String>,
}

fn default_transports() -> Vec<String> {
    vec!["usb".into(), "nfc".into()]
}

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;

impl SoftKey {
    pub fn new(aaguid: Uuid) -> Self {
        SoftKey {
            aaguid,
            credentials: Vec::new(),
            behaviour: Behaviour::default(),
            attestation: None,
            transports: default_transports(),
        }
    }

    fn check_rp(origin: &Url, rp_id: &str) -> Result<(), SoftKeyError> {
        let host = origin.host_str().unwrap_or_default();
        if host == rp_id || host.ends_with(&format!(".{rp_id}")) {
            Ok(())
        } else {
            Err(SoftKeyError::RpIdMismatch {
                rp_id: rp_id.into(),
                origin: origin.to_string(),
            })
        }
    }

    fn client_data(&self, kind: &str, challenge: &[u8], origin: &Url) -> Vec<u8> {
        let origin = self
            .behaviour
            .origin_override
            .clone()
            .unwrap_or_else(|| origin.origin().ascii_serialization());
        let top_origin = match &self.behaviour.top_origin {
            Some(top) => format!(r#","topOrigin":{}"#, serde_json::Value::String(top.clone())),
            None => String::new(),
        };
        // Built by hand so the member order is exactly WebAuthn L3 §5.8.1.1's.
        format!(
            r#"{{"type":"{kind}","challenge":"{}","origin":{},"crossOrigin":{}{top_origin}}}"#,
            URL_SAFE_NO_PAD.encode(challenge),
            serde_json::Value::String(origin),
            self.behaviour.cross_origin
        )
        .into_bytes()
    }

    fn flags(&self, attested: bool) -> u8 {
        let b = &self.behaviour;
        let mut f = 0;
        if b.user_present {
            f |= FLAG_UP;
        }
        if b.user_verified {
            f |= FLAG_UV;
        }
        if b.backup_eligible {
            f |= FLAG_BE | FLAG_BS;
        }
        if attested {
            f |= FLAG_AT;
        }
        f
    }

    fn rp_hash(&self, rp_id: &str) -> [u8; 32] {
        let rp = self.behaviour.rp_id_override.as_deref().unwrap_or(rp_id);
        Sha256::digest(rp.as_bytes()).into()
    }

    /// navigator.credentials.create(), answered by this key.
    pub fn register(
        &mut self,
        origin: &Url,
        options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, SoftKeyError> {
        let o = &options.public_key;
        Self::check_rp(origin, &o.rp.id)?;
        if !o.pub_key_cred_params.iter().any(|p| p.alg == -7) {
            return Err(SoftKeyError::NoAlgorithm);
        }
        let excluded = o.exclude_credentials.iter().flatten();
        if excluded.into_iter().any(|ex| {
            self.credentials
                .iter()
                .any(|c| c.id.as_slice() == AsRef::<[u8]>::as_ref(&ex.id))
        }) {
            return Err(SoftKeyError::Excluded);
        }
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let id: Vec<u8> = match &self.behaviour.reuse_credential_id {
            Some(id) => id.clone(),
            None => (0..32).map(|_| rand::random::<u8>()).collect(),
        };
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = match (point.x(), point.y()) {
            (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
            _ => return Err(SoftKeyError::Encode("public key point".into())),
        };
        let mut cose = Vec::new();
        cbor::map(&mut cose, 5);
        cbor::int(&mut cose, 1);
        cbor::int(&mut cose, 2); // kty: EC2
        cbor::int(&mut cose, 3);
        cbor::int(&mut cose, -7); // alg: ES256
        cbor::int(&mut cose, -1);
        cbor::int(&mut cose, 1); // crv: P-256
        cbor::int(&mut cose, -2);
        cbor::bytes(&mut cose, &x);
        cbor::int(&mut cose, -3);
        cbor::bytes(&mut cose, &y);

        let mut auth_data = Vec::new();
        auth_data.extend_from_slice(&self.rp_hash(&o.rp.id));
        auth_data.push(self.flags(true));
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(self.aaguid.as_bytes());
        auth_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&cose);

        let client_data = self.client_data("webauthn.create", o.challenge.as_ref(), origin);
        let mut attestation = Vec::new();
        cbor::map(&mut attestation, 3);
        cbor::text(&mut attestation, "fmt");
        match &self.attestation {
            None => {
                cbor::text(&mut attestation, "none");
                cbor::text(&mut attestation, "attStmt");
                cbor::map(&mut attestation, 0);
            }
            Some(identity) => {
                // packed, full attestation: sig over authData ‖ SHA-256(clientDataJSON).
                let batch_key = SigningKey::from_slice(&identity.private_key)
                    .map_err(|e| SoftKeyError::Encode(format!("attestation key: {e}")))?;
                let mut signed = auth_data.clone();
                signed.extend_from_slice(&Sha256::digest(&client_data));
                let sig: Signature = batch_key.sign(&signed);
                cbor::text(&mut attestation, "packed");
                cbor::text(&mut attestation, "attStmt");
                cbor::map(&mut attestation, 3);
                cbor::text(&mut attestation, "alg");
                cbor::int(&mut attestation, -7);
                cbor::text(&mut attestation, "sig");
                cbor::bytes(&mut attestation, sig.to_der().as_bytes());
                cbor::text(&mut attestation, "x5c");
                cbor::array(&mut attestation, 1);
                cbor::bytes(&mut attestation, &identity.certificate_der);
            }
        }
        cbor::text(&mut attestation, "authData");
        cbor::bytes(&mut attestation, &auth_data);

        self.credentials.push(StoredCredential {
            id: id.clone(),
            rp_id: o.rp.id.clone(),
            user_handle: o.user.id.to_vec(),
            user_name: o.user.name.clone(),
            secret: key.to_bytes().to_vec(),
            sign_count: 0,
            signer: OnceLock::new(),
        });
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let json = serde_json::json!({
            "id": b64(&id),
            "rawId": b64(&id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
                "transports": self.transports,
            },
            "extensions": {},
        });
        serde_json::from_value(json).map_err(|e| SoftKeyError::Encode(e.to_string()))
    }

    /// navigator.credentials.get(), answered by this key.
    pub fn authenticate(
        &mut self,
        origin: &Url,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, SoftKeyError> {
        let o = &options.public_key;
        Self::check_rp(origin, &o.rp_id)?;
        let allowed: Vec<&[u8]> = o.allow_credentials.iter().map(|c| c.id.as_ref()).collect();
        let index = self
            .credentials
            .iter()
            .rposition(|c| {
                c.rp_id == o.rp_id && (allowed.is_empty() || allowed.contains(&c.id.as_slice()))
            })
            .ok_or(SoftKeyError::NoCredential)?;
        let flags = self.flags(false);
        let rp_hash = self.rp_hash(&o.rp_id);
        let client_data = self.client_data("webauthn.get", o.challenge.as_ref(), origin);
        let behaviour = self.behaviour.clone();
        let cred = &mut self.credentials[index];
        cred.sign_count += 1;
        let mut auth_data = Vec::new();
        auth_data.extend_from_slice(&rp_hash);
        auth_data.push(flags);
        auth_data.extend_from_slice(&cred.sign_count.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        // ECDSA P-256 over SHA-256 of `signed`, DER-encoded (as p256's `sign` and `to_der`
        // gave before); ring's nonce is random, hedged with the key and the message.
        let signature = cred
            .signer()?
            .sign(&SystemRandom::new(), &signed)
            .map_err(|_| SoftKeyError::Encode("signature".into()))?;
        let mut signature = signature.as_ref().to_vec();
        if behaviour.corrupt_signature
            && let Some(last) = signature.last_mut()
        {
            *last ^= 0x01;
        }
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let user_handle = (!behaviour.omit_user_handle).then(|| b64(&cred.user_handle));
        let json = serde_json::json!({
            "id": b64(&cred.id),
            "rawId": b64(&cred.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(&signature),
                "userHandle": user_handle,
            },
            "extensions": {},
        });
        serde_json::from_value(json).map_err(|e| SoftKeyError::Encode(e.to_string()))
    }
}

/// The few CBOR encodings a credential needs (RFC 8949, definite lengths, CTAP2 canonical order
/// is kept by the callers).
mod cbor {
    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let m = major << 5;
        match n {
            0..=23 => out.push(m | n as u8),
            24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
            0x100..=0xffff => {
                out.push(m | 25);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 26);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }
    pub fn int(out: &mut Vec<u8>, v: i64) {
        if v >= 0 {
            head(out, 0, v as u64)
        } else {
            head(out, 1, (-1 - v) as u64)
        }
    }
    pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        head(out, 2, b.len() as u64);
        out.extend_from_slice(b);
    }
    pub fn text(out: &mut Vec<u8>, s: &str) {
        head(out, 3, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    pub fn map(out: &mut Vec<u8>, n: u64) {
        head(out, 5, n);
    }
    pub fn array(out: &mut Vec<u8>, n: u64) {
        head(out, 4, n);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};
    use webauthn_rs::prelude::{Passkey, Webauthn, WebauthnBuilder};

    fn origin() -> Url {
        Url::parse("https://login.example.com").unwrap()
    }

    fn relying_party() -> Webauthn {
        WebauthnBuilder::new("example.com", &origin())
            .unwrap()
            .build()
            .unwrap()
    }

    fn registered(rp: &Webauthn) -> (SoftKey, Passkey) {
        let mut key = SoftKey::new(Uuid::nil());
        let (ccr, state) = rp
            .start_passkey_registration(Uuid::new_v4(), "ada", "Ada", None)
            .unwrap();
        let credential = key.register(&origin(), &ccr).unwrap();
        let passkey = rp.finish_passkey_registration(&credential, &state).unwrap();
        (key, passkey)
    }

    /// The assertion's signature, checked by p256 (not ring) against the credential's key over
    /// authenticatorData ‖ SHA-256(clientDataJSON).
    fn p256_accepts(key: &SoftKey, assertion: &PublicKeyCredential) -> bool {
        let secret = SigningKey::from_slice(&key.credentials[0].secret).unwrap();
        let verifying = VerifyingKey::from(&secret);
        let mut signed = assertion.response.authenticator_data.to_vec();
        signed.extend_from_slice(&Sha256::digest(AsRef::<[u8]>::as_ref(
            &assertion.response.client_data_json,
        )));
        let Ok(signature) = DerSignature::from_bytes(assertion.response.signature.as_ref()) else {
            return false;
        };
        verifying.verify(&signed, &signature).is_ok()
    }

    #[test]
    fn assertions_verify_with_the_registered_key_and_count_up() {
        let rp = relying_party();
        let (mut key, passkey) = registered(&rp);
        for n in 1..=3u32 {
            let (rcr, state) = rp
                .start_passkey_authentication(std::slice::from_ref(&passkey))
                .unwrap();
            let assertion = key.authenticate(&origin(), &rcr).unwrap();
            assert!(
                p256_accepts(&key, &assertion),
                "p256 verifies assertion {n}"
            );
            let result = rp
                .finish_passkey_authentication(&assertion, &state)
                .unwrap();
            assert_eq!(result.counter(), n);
            assert!(result.user_verified());
        }
    }

    #[test]
    fn a_corrupt_signature_is_refused() {
        let rp = relying_party();
        let (mut key, passkey) = registered(&rp);
        key.behaviour.corrupt_signature = true;
        let (rcr, state) = rp
            .start_passkey_authentication(std::slice::from_ref(&passkey))
            .unwrap();
        let assertion = key.authenticate(&origin(), &rcr).unwrap();
        assert!(!p256_accepts(&key, &assertion));
        assert!(
            rp.finish_passkey_authentication(&assertion, &state)
                .is_err()
        );
    }

    #[test]
    fn a_saved_or_cloned_key_signs_with_the_same_credential() {
        let rp = relying_party();
        let (mut key, passkey) = registered(&rp);
        // Sign once so the cached signer exists, then save, reload and clone.
        let (rcr, state) = rp
            .start_passkey_authentication(std::slice::from_ref(&passkey))
            .unwrap();
        let first = key.authenticate(&origin(), &rcr).unwrap();
        rp.finish_passkey_authentication(&first, &state).unwrap();
        let saved = serde_json::to_string(&key).unwrap();
        assert!(!saved.contains("signer"), "the cache is not saved: {saved}");
        let mut reloaded: SoftKey = serde_json::from_str(&saved).unwrap();
        let mut cloned = key.clone();
        for k in [&mut reloaded, &mut cloned] {
            let (rcr, state) = rp
                .start_passkey_authentication(std::slice::from_ref(&passkey))
                .unwrap();
            let assertion = k.authenticate(&origin(), &rcr).unwrap();
            assert_eq!(
                rp.finish_passkey_authentication(&assertion, &state)
                    .unwrap()
                    .counter(),
                2
            );
        }
    }

    #[test]
    fn signatures_are_randomised() {
        let rp = relying_party();
        let (mut key, passkey) = registered(&rp);
        let (rcr, _) = rp
            .start_passkey_authentication(std::slice::from_ref(&passkey))
            .unwrap();
        let a = key.authenticate(&origin(), &rcr).unwrap();
        key.credentials[0].sign_count -= 1;
        let b = key.authenticate(&origin(), &rcr).unwrap();
        assert_eq!(a.response.authenticator_data, b.response.authenticator_data);
        assert_ne!(a.response.signature, b.response.signature);
        assert!(p256_accepts(&key, &a) && p256_accepts(&key, &b));
    }
}
