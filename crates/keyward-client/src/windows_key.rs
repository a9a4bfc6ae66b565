//! Security keys on Windows, through Windows' WebAuthn API (webauthn.dll): Windows lets only
//! administrators talk CTAP to a key, and shows its own dialogs (insert, PIN, touch) instead.
//!
//! The API is given our clientDataJSON, the very bytes the CTAP path hashes for the key
//! (`security_key::registration_client_data`), so the server sees the same exact origin from
//! every platform; its answer becomes the same credential the CTAP path makes
//! (`security_key::registration_credential`). Everything but the call itself is plain data
//! here, built and read on any platform, and the call sits behind [`WebAuthnApi`], so tests run
//! this whole path with the CTAP path standing in for webauthn.dll.

use std::sync::Arc;

use keyward_proto::{
    CreationChallengeResponse, KeyPrompt, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};
pub use keyward_windows_webauthn::{
    Assertion, Attestation, Credential, Failure, GetAssertion, MakeCredential, abi,
};
use url::Url;
use webauthn_rs_proto::{
    AttestationConveyancePreference, AuthenticatorAttachment, AuthenticatorTransport,
    UserVerificationPolicy,
};

use crate::authenticator::{Authenticator, AuthenticatorError};
use crate::security_key::{
    KeyPrompter, PUBLIC_KEY, assertion_client_data, assertion_credential, on_own_thread,
    registration_client_data, registration_credential, timeout_ms, wants_resident_key,
};

/// What webauthn.dll does: one blocking call per ceremony, Windows' dialogs in between.
pub trait WebAuthnApi: Send + Sync {
    fn make_credential(&self, request: &MakeCredential) -> Result<Attestation, Failure>;
    fn get_assertion(&self, request: &GetAssertion) -> Result<Assertion, Failure>;
}

/// webauthn.dll itself.
#[cfg(windows)]
pub struct WebAuthnDll;

#[cfg(windows)]
impl WebAuthnApi for WebAuthnDll {
    fn make_credential(&self, request: &MakeCredential) -> Result<Attestation, Failure> {
        keyward_windows_webauthn::make_credential(request)
    }
    fn get_assertion(&self, request: &GetAssertion) -> Result<Assertion, Failure> {
        keyward_windows_webauthn::get_assertion(request)
    }
}

/// A security key (or Windows Hello) behind Windows' WebAuthn API.
pub struct WindowsKey<A> {
    api: A,
    prompter: Arc<dyn KeyPrompter>,
}

impl<A: WebAuthnApi> WindowsKey<A> {
    pub fn new(api: A, prompter: Arc<dyn KeyPrompter>) -> Self {
        WindowsKey { api, prompter }
    }

    /// Runs one call on a thread of its own (it blocks while Windows' dialog is up).
    fn run<R: Send>(
        &self,
        call: impl FnOnce(&A) -> Result<R, Failure> + Send,
    ) -> Result<R, AuthenticatorError> {
        self.prompter.prompt(KeyPrompt::InsertOrTap);
        let outcome = on_own_thread(|| call(&self.api));
        self.prompter.prompt(KeyPrompt::Finished);
        outcome.map_err(map_failure)
    }
}

impl<A: WebAuthnApi> Authenticator for WindowsKey<A> {
    fn label(&self) -> String {
        "Security key (Windows)".into()
    }

    fn register(
        &mut self,
        origin: &Url,
        options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, AuthenticatorError> {
        let request = make_credential_request(origin, options)?;
        let attestation = self.run(|api| api.make_credential(&request))?;
        Ok(registration(request.client_data_json, attestation))
    }

    fn authenticate(
        &mut self,
        origin: &Url,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, AuthenticatorError> {
        let request = get_assertion_request(origin, options)?;
        let assertion = self.run(|api| api.get_assertion(&request))?;
        Ok(assertion_answer(request.client_data_json, assertion))
    }
}

/// The registration Windows is asked for: the options as a browser passes them on, with our
/// client data. Refused before Windows is asked when the origin does not own the RP ID.
fn make_credential_request(
    origin: &Url,
    options: &CreationChallengeResponse,
) -> Result<MakeCredential, AuthenticatorError> {
    let client_data = registration_client_data(origin, options)?;
    let o = &options.public_key;
    let selection = o.authenticator_selection.as_ref();
    Ok(MakeCredential {
        rp_id: o.rp.id.clone(),
        rp_name: o.rp.name.clone(),
        user_id: o.user.id.clone(),
        user_name: o.user.name.clone(),
        user_display_name: o.user.display_name.clone(),
        // As a browser does, skip what it cannot pass on: other credential types, and
        // algorithms outside COSE's 32-bit range (none is registered there).
        algorithms: o
            .pub_key_cred_params
            .iter()
            .filter(|p| p.type_ == PUBLIC_KEY)
            .filter_map(|p| i32::try_from(p.alg).ok())
            .collect(),
        client_data_json: client_data.json,
        timeout_ms: timeout_ms(o.timeout),
        attachment: match selection.and_then(|s| s.authenticator_attachment) {
            None => abi::ATTACHMENT_ANY,
            Some(AuthenticatorAttachment::Platform) => abi::ATTACHMENT_PLATFORM,
            Some(AuthenticatorAttachment::CrossPlatform) => abi::ATTACHMENT_CROSS_PLATFORM,
        },
        // The CTAP path's rule, so both make the same kind of credential.
        require_resident_key: wants_resident_key(options),
        // WebAuthn's default when the options say nothing is "preferred".
        user_verification: selection.map_or(abi::UV_PREFERRED, |s| {
            user_verification(&s.user_verification)
        }),
        // WebAuthn's default when the options say nothing is "none".
        attestation: match o.attestation {
            None | Some(AttestationConveyancePreference::None) => abi::ATTESTATION_NONE,
            Some(AttestationConveyancePreference::Indirect) => abi::ATTESTATION_INDIRECT,
            Some(AttestationConveyancePreference::Direct) => abi::ATTESTATION_DIRECT,
        },
        exclude: o
            .exclude_credentials
            .iter()
            .flatten()
            .filter(|c| c.type_ == PUBLIC_KEY)
            .map(|c| Credential {
                id: c.id.clone(),
                transports: transport_bits(c.transports.as_deref()),
            })
            .collect(),
    })
}

/// The sign-in Windows is asked for, with our client data; refused as a registration is.
fn get_assertion_request(
    origin: &Url,
    options: &RequestChallengeResponse,
) -> Result<GetAssertion, AuthenticatorError> {
    let client_data = assertion_client_data(origin, options)?;
    let o = &options.public_key;
    Ok(GetAssertion {
        rp_id: o.rp_id.clone(),
        client_data_json: client_data.json,
        timeout_ms: timeout_ms(o.timeout),
        user_verification: user_verification(&o.user_verification),
        allow: o
            .allow_credentials
            .iter()
            .filter(|c| c.type_ == PUBLIC_KEY)
            .map(|c| Credential {
                id: c.id.clone(),
                transports: transport_bits(c.transports.as_deref()),
            })
            .collect(),
    })
}

fn user_verification(policy: &UserVerificationPolicy) -> u32 {
    match policy {
        UserVerificationPolicy::Required => abi::UV_REQUIRED,
        UserVerificationPolicy::Preferred => abi::UV_PREFERRED,
        UserVerificationPolicy::Discouraged_DO_NOT_USE => abi::UV_DISCOURAGED,
    }
}

/// Each transport and its bit; one Windows has no bit for is left out (0 means any).
const TRANSPORTS: [(AuthenticatorTransport, u32); 6] = [
    (AuthenticatorTransport::Ble, abi::TRANSPORT_BLE),
    (AuthenticatorTransport::Hybrid, abi::TRANSPORT_HYBRID),
    (AuthenticatorTransport::Internal, abi::TRANSPORT_INTERNAL),
    (AuthenticatorTransport::Nfc, abi::TRANSPORT_NFC),
    (AuthenticatorTransport::Test, abi::TRANSPORT_TEST),
    (AuthenticatorTransport::Usb, abi::TRANSPORT_USB),
];

fn transport_bits(transports: Option<&[AuthenticatorTransport]>) -> u32 {
    transports
        .unwrap_or_default()
        .iter()
        .filter_map(|t| TRANSPORTS.iter().find(|(known, _)| known == t))
        .fold(0, |bits, (_, bit)| bits | bit)
}

/// The transports in `bits`, in lexicographic order as `getTransports()` lists them.
fn transports_of(bits: u32) -> Vec<AuthenticatorTransport> {
    TRANSPORTS
        .iter()
        .filter(|(_, bit)| bits & bit != 0)
        .map(|(t, _)| t.clone())
        .collect()
}

/// Windows' answer as the credential every path makes, with the client data Windows was given.
fn registration(client_data_json: Vec<u8>, a: Attestation) -> RegisterPublicKeyCredential {
    registration_credential(
        a.credential_id,
        a.attestation_object,
        client_data_json,
        a.used_transport.map(transports_of),
    )
}

fn assertion_answer(client_data_json: Vec<u8>, a: Assertion) -> PublicKeyCredential {
    assertion_credential(
        a.credential_id,
        a.authenticator_data,
        a.signature,
        a.user_id,
        client_data_json,
    )
}

/// Windows' failures in the terms a person acts on. Windows reports a dialog the person closed
/// and one that timed out alike (NotAllowedError), so both read as cancelled.
fn map_failure(failure: Failure) -> AuthenticatorError {
    match failure {
        Failure::Windows { hresult, name } => match hresult {
            abi::NTE_USER_CANCELLED | abi::HRESULT_CANCELLED => AuthenticatorError::Cancelled,
            abi::HRESULT_TIMEOUT => AuthenticatorError::NotTouched,
            abi::NTE_EXISTS => AuthenticatorError::AlreadyRegistered,
            abi::NTE_NOT_FOUND => AuthenticatorError::NotRegistered,
            abi::NTE_DEVICE_NOT_FOUND => AuthenticatorError::NoKey,
            abi::NTE_TOKEN_KEYSET_STORAGE_FULL => AuthenticatorError::KeyFull,
            // Chromium reads an excluded credential from the name too.
            _ if name == "InvalidStateError" => AuthenticatorError::AlreadyRegistered,
            _ => AuthenticatorError::Refused(format!(
                "Windows answered {} (0x{:08X})",
                if name.is_empty() { "an error" } else { &name },
                hresult as u32
            )),
        },
        Failure::NoWindow => AuthenticatorError::Unavailable(
            "Windows shows its security key dialog over a window, and none is open".into(),
        ),
        Failure::Unrepresentable(what) => {
            AuthenticatorError::Refused(format!("{what} cannot be passed to Windows"))
        }
        Failure::Malformed(what) => AuthenticatorError::Refused(what.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_softkey::SoftKey;
    use serde_json::json;

    fn origin() -> Url {
        Url::parse("https://login.example.com:8443/sign-in?x=1").unwrap()
    }

    /// Registration options as keywardd (webauthn-rs) sends them, with a few additions a
    /// browser would skip.
    fn creation(mut selection: serde_json::Value) -> CreationChallengeResponse {
        if let Some(s) = selection.as_object_mut() {
            s.entry("requireResidentKey").or_insert(json!(false));
        }
        serde_json::from_value(json!({ "publicKey": {
            "rp": { "id": "example.com", "name": "Keyward" },
            "user": { "id": "S1cB", "name": "ada", "displayName": "Ada L." },
            "challenge": "AQIDBA",
            "pubKeyCredParams": [
                { "type": "public-key", "alg": -7 },
                { "type": "public-key", "alg": -257 },
                { "type": "password", "alg": -8 },
                { "type": "public-key", "alg": 1_i64 << 40 },
            ],
            "timeout": 300_000,
            "excludeCredentials": [
                { "type": "public-key", "id": "qrvM", "transports": ["usb", "nfc", "smoke-signal"] },
                { "type": "public-key", "id": "dHV2" },
                { "type": "password", "id": "eHl6" },
            ],
            "authenticatorSelection": selection,
            "attestation": "direct",
        }}))
        .unwrap()
    }

    fn request(allow: serde_json::Value) -> RequestChallengeResponse {
        serde_json::from_value(json!({ "publicKey": {
            "challenge": "BQYH",
            "timeout": 30_000,
            "rpId": "example.com",
            "allowCredentials": allow,
            "userVerification": "required",
        }}))
        .unwrap()
    }

    #[test]
    fn windows_is_given_the_client_data_the_ctap_path_hashes_byte_for_byte() {
        let options =
            creation(json!({ "residentKey": "required", "userVerification": "required" }));
        let windows = make_credential_request(&origin(), &options).unwrap();
        let ctap = registration_client_data(&origin(), &options).unwrap();
        let expected = br#"{"type":"webauthn.create","challenge":"AQIDBA","origin":"https://login.example.com:8443","crossOrigin":false}"#;
        assert_eq!(windows.client_data_json, expected);
        assert_eq!(ctap.json, expected);
        // Windows hashes it with SHA-256, which is the hash the CTAP path gives the key.
        use sha2::Digest;
        assert_eq!(ctap.hash, sha2::Sha256::digest(expected).to_vec());

        let sign_in = request(json!([]));
        let windows = get_assertion_request(&origin(), &sign_in).unwrap();
        let ctap = assertion_client_data(&origin(), &sign_in).unwrap();
        let expected = br#"{"type":"webauthn.get","challenge":"BQYH","origin":"https://login.example.com:8443","crossOrigin":false}"#;
        assert_eq!(windows.client_data_json, expected);
        assert_eq!(ctap.json, expected);
    }

    /// keyward-softkey builds clientDataJSON on its own (as a browser would); both agree.
    #[test]
    fn the_client_data_is_what_an_independent_client_writes() {
        let options =
            creation(json!({ "residentKey": "required", "userVerification": "required" }));
        let mut soft = SoftKey::new(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY);
        let registered = soft.register(&origin(), &options).unwrap();
        let windows = make_credential_request(&origin(), &options).unwrap();
        assert_eq!(
            windows.client_data_json,
            registered.response.client_data_json
        );

        let sign_in = request(json!([{ "type": "public-key", "id": registered.id }]));
        let signed = soft.authenticate(&origin(), &sign_in).unwrap();
        let windows = get_assertion_request(&origin(), &sign_in).unwrap();
        assert_eq!(windows.client_data_json, signed.response.client_data_json);
    }

    #[test]
    fn the_options_reach_windows_as_a_browser_passes_them_on() {
        let options = creation(json!({
            "authenticatorAttachment": "cross-platform",
            "residentKey": "required",
            "requireResidentKey": true,
            "userVerification": "required",
        }));
        let r = make_credential_request(&origin(), &options).unwrap();
        assert_eq!(
            (r.rp_id.as_str(), r.rp_name.as_str()),
            ("example.com", "Keyward")
        );
        assert_eq!(r.user_id, b"KW\x01");
        assert_eq!(
            (r.user_name.as_str(), r.user_display_name.as_str()),
            ("ada", "Ada L.")
        );
        assert_eq!(r.algorithms, [-7, -257]);
        assert_eq!(r.timeout_ms, 60_000, "clamped as a browser clamps it");
        assert_eq!(r.attachment, abi::ATTACHMENT_CROSS_PLATFORM);
        assert!(r.require_resident_key);
        assert_eq!(r.user_verification, abi::UV_REQUIRED);
        assert_eq!(r.attestation, abi::ATTESTATION_DIRECT);
        assert_eq!(
            r.exclude,
            [
                Credential {
                    id: vec![0xAA, 0xBB, 0xCC],
                    transports: abi::TRANSPORT_USB | abi::TRANSPORT_NFC,
                },
                Credential {
                    id: b"tuv".to_vec(),
                    transports: 0,
                },
            ]
        );

        // A discoverable credential when preferred too, as the CTAP path asks for one.
        let preferred =
            creation(json!({ "residentKey": "preferred", "userVerification": "preferred" }));
        let r = make_credential_request(&origin(), &preferred).unwrap();
        assert!(r.require_resident_key);
        assert_eq!(r.attachment, abi::ATTACHMENT_ANY);
        assert_eq!(r.user_verification, abi::UV_PREFERRED);
        let discouraged =
            creation(json!({ "residentKey": "discouraged", "userVerification": "discouraged" }));
        let r = make_credential_request(&origin(), &discouraged).unwrap();
        assert!(!r.require_resident_key);
        assert_eq!(r.user_verification, abi::UV_DISCOURAGED);
        let mut unsaid = creation(json!(null));
        unsaid.public_key.attestation = None;
        let r = make_credential_request(&origin(), &unsaid).unwrap();
        assert_eq!(r.user_verification, abi::UV_PREFERRED);
        assert_eq!(r.attestation, abi::ATTESTATION_NONE);

        let sign_in = request(json!([
            { "type": "public-key", "id": "qrvM", "transports": ["internal", "hybrid"] },
        ]));
        let r = get_assertion_request(&origin(), &sign_in).unwrap();
        assert_eq!(r.rp_id, "example.com");
        assert_eq!(r.timeout_ms, 30_000);
        assert_eq!(r.user_verification, abi::UV_REQUIRED);
        assert_eq!(
            r.allow,
            [Credential {
                id: vec![0xAA, 0xBB, 0xCC],
                transports: abi::TRANSPORT_INTERNAL | abi::TRANSPORT_HYBRID,
            }]
        );
        assert!(
            get_assertion_request(&origin(), &request(json!([])))
                .unwrap()
                .allow
                .is_empty()
        );
    }

    /// Windows is never asked to sign for a site the origin does not own.
    #[test]
    fn a_foreign_rp_id_is_refused_before_windows_is_asked() {
        struct Unreachable;
        impl WebAuthnApi for Unreachable {
            fn make_credential(&self, _: &MakeCredential) -> Result<Attestation, Failure> {
                unreachable!("asked Windows to register for another site")
            }
            fn get_assertion(&self, _: &GetAssertion) -> Result<Assertion, Failure> {
                unreachable!("asked Windows to sign for another site")
            }
        }
        struct Nobody;
        impl KeyPrompter for Nobody {
            fn prompt(&self, _: KeyPrompt) {}
            fn ask_pin(&self, _: Option<u32>, _: bool) -> Option<String> {
                None
            }
        }
        let mut key = WindowsKey::new(Unreachable, Arc::new(Nobody));
        let phishing = Url::parse("https://examp1e.com").unwrap();
        let options =
            creation(json!({ "residentKey": "required", "userVerification": "required" }));
        assert!(matches!(
            key.register(&phishing, &options),
            Err(AuthenticatorError::Site(_))
        ));
        assert!(matches!(
            key.authenticate(&phishing, &request(json!([]))),
            Err(AuthenticatorError::Site(_))
        ));
    }

    #[test]
    fn windows_answers_become_the_credentials_every_path_makes() {
        let registered = registration(
            b"{}".to_vec(),
            Attestation {
                credential_id: vec![0xFB, 0xFF, 0x01],
                attestation_object: vec![0xA0],
                used_transport: Some(abi::TRANSPORT_USB | abi::TRANSPORT_NFC),
            },
        );
        assert_eq!(
            serde_json::to_value(&registered).unwrap(),
            json!({
                "id": "-_8B",
                "rawId": "-_8B",
                "type": "public-key",
                "response": {
                    "attestationObject": "oA",
                    "clientDataJSON": "e30",
                    "transports": ["nfc", "usb"],
                },
                "extensions": {},
            })
        );
        let older_windows = registration(
            Vec::new(),
            Attestation {
                credential_id: vec![1],
                attestation_object: vec![0xA0],
                used_transport: None,
            },
        );
        assert_eq!(older_windows.response.transports, None);

        let signed = assertion_answer(
            b"{}".to_vec(),
            Assertion {
                credential_id: vec![0xFB, 0xFF, 0x01],
                authenticator_data: vec![1, 2],
                signature: vec![3],
                user_id: Some(b"KW\x01".to_vec()),
            },
        );
        assert_eq!(
            serde_json::to_value(&signed).unwrap(),
            json!({
                "id": "-_8B",
                "rawId": "-_8B",
                "type": "public-key",
                "response": {
                    "authenticatorData": "AQI",
                    "clientDataJSON": "e30",
                    "signature": "Aw",
                    "userHandle": "S1cB",
                },
                "extensions": serde_json::to_value(
                    webauthn_rs_proto::AuthenticationExtensionsClientOutputs::default()
                )
                .unwrap(),
            })
        );
    }

    #[test]
    fn transports_go_both_ways() {
        use AuthenticatorTransport::*;
        let all = [Usb, Nfc, Ble, Internal, Hybrid, Test];
        let bits = transport_bits(Some(&all));
        assert_eq!(bits, 0x3F);
        assert_eq!(transports_of(bits), [Ble, Hybrid, Internal, Nfc, Test, Usb]);
        assert_eq!(transport_bits(Some(&[Unknown])), 0);
        assert_eq!(transport_bits(None), 0);
        assert_eq!(transports_of(0x40), []);
    }

    #[test]
    fn windows_failures_read_as_what_the_person_can_do() {
        let windows = |hresult: i32, name: &str| {
            map_failure(Failure::Windows {
                hresult,
                name: name.into(),
            })
        };
        use AuthenticatorError as E;
        assert!(matches!(
            windows(abi::NTE_USER_CANCELLED, "NotAllowedError"),
            E::Cancelled
        ));
        assert!(matches!(windows(abi::HRESULT_CANCELLED, ""), E::Cancelled));
        assert!(matches!(windows(abi::HRESULT_TIMEOUT, ""), E::NotTouched));
        assert!(matches!(
            windows(abi::NTE_EXISTS, "InvalidStateError"),
            E::AlreadyRegistered
        ));
        assert!(matches!(
            windows(0x8000_4005_u32 as i32, "InvalidStateError"),
            E::AlreadyRegistered
        ));
        assert!(matches!(
            windows(abi::NTE_NOT_FOUND, "NotAllowedError"),
            E::NotRegistered
        ));
        assert!(matches!(windows(abi::NTE_DEVICE_NOT_FOUND, ""), E::NoKey));
        assert!(matches!(
            windows(abi::NTE_TOKEN_KEYSET_STORAGE_FULL, "ConstraintError"),
            E::KeyFull
        ));
        match windows(abi::NTE_NOT_SUPPORTED, "NotSupportedError") {
            E::Refused(m) => assert_eq!(m, "Windows answered NotSupportedError (0x80090029)"),
            other => panic!("{other:?}"),
        }
        match windows(0x8000_4005_u32 as i32, "") {
            E::Refused(m) => assert_eq!(m, "Windows answered an error (0x80004005)"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(map_failure(Failure::NoWindow), E::Unavailable(_)));
        assert!(matches!(
            map_failure(Failure::Unrepresentable("the RP ID")),
            E::Refused(_)
        ));
        assert!(matches!(
            map_failure(Failure::Malformed("no ID")),
            E::Refused(_)
        ));
    }
}
