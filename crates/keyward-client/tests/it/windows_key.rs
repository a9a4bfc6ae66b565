//! The Windows path (`WindowsKey`: our requests to Windows' WebAuthn API and our reading of its
//! answers) against a real keywardd and its exact origin check, with the CTAP path standing in
//! for webauthn.dll and keyward-fido-virt for the key.

use std::sync::{Arc, Mutex};

use keyward_client::windows_key::{
    Assertion, Attestation, Failure, GetAssertion, MakeCredential, WebAuthnApi, WindowsKey, abi,
};
use keyward_client::*;
use keyward_core::secret::{b64, unb64};
use keyward_fido_virt::VirtTransport;
use keyward_proto::*;
use serde_json::json;
use url::Url;

use crate::Server;
use crate::security_key::{Person, key_for, key_with_pin};

/// webauthn.dll as far as its caller can tell: given a request and the client data, it has a
/// key sign the SHA-256 of that JSON and answers with what the key said. Here the CTAP path
/// does that for the same ceremony (origin and challenge read back from the JSON, the rest from
/// the request); its client data must be the very bytes Windows was given, or its signature
/// would be over another hash.
struct CtapAsWebAuthnDll {
    transport: VirtTransport,
    person: Arc<Person>,
    /// What the CTAP path answered last, to hold the Windows path's answer to.
    registered: Arc<Mutex<Option<RegisterPublicKeyCredential>>>,
}

/// The origin and challenge the client data names.
fn ceremony(client_data_json: &[u8]) -> (Url, String) {
    let cd: serde_json::Value = serde_json::from_slice(client_data_json).unwrap();
    let origin = Url::parse(cd["origin"].as_str().unwrap()).unwrap();
    (origin, cd["challenge"].as_str().unwrap().to_string())
}

fn user_verification(uv: u32) -> &'static str {
    match uv {
        abi::UV_REQUIRED => "required",
        abi::UV_PREFERRED => "preferred",
        abi::UV_DISCOURAGED => "discouraged",
        other => panic!("no such user verification requirement: {other}"),
    }
}

/// The key's refusals as Windows reports them.
fn as_windows(e: AuthenticatorError) -> Failure {
    let (hresult, name) = match e {
        AuthenticatorError::AlreadyRegistered => (abi::NTE_EXISTS, "InvalidStateError"),
        AuthenticatorError::NotRegistered => (abi::NTE_NOT_FOUND, "NotAllowedError"),
        AuthenticatorError::Cancelled => (abi::NTE_USER_CANCELLED, "NotAllowedError"),
        other => panic!("the stand-in has no HRESULT for {other}"),
    };
    Failure::Windows {
        hresult,
        name: name.into(),
    }
}

impl WebAuthnApi for CtapAsWebAuthnDll {
    fn make_credential(&self, r: &MakeCredential) -> Result<Attestation, Failure> {
        let (origin, challenge) = ceremony(&r.client_data_json);
        let options: CreationChallengeResponse = serde_json::from_value(json!({ "publicKey": {
            "rp": { "id": r.rp_id, "name": r.rp_name },
            "user": { "id": b64(&r.user_id), "name": r.user_name, "displayName": r.user_display_name },
            "challenge": challenge,
            "pubKeyCredParams": r.algorithms.iter()
                .map(|alg| json!({ "type": "public-key", "alg": alg }))
                .collect::<Vec<_>>(),
            "timeout": r.timeout_ms,
            "excludeCredentials": r.exclude.iter()
                .map(|c| json!({ "type": "public-key", "id": b64(&c.id) }))
                .collect::<Vec<_>>(),
            "authenticatorSelection": {
                "requireResidentKey": r.require_resident_key,
                "residentKey": if r.require_resident_key { "required" } else { "discouraged" },
                "userVerification": user_verification(r.user_verification),
            },
        }}))
        .unwrap();
        let credential = key_for(&self.transport, self.person.clone())
            .register(&origin, &options)
            .map_err(as_windows)?;
        assert_eq!(
            String::from_utf8_lossy(&credential.response.client_data_json),
            String::from_utf8_lossy(&r.client_data_json),
            "the CTAP path would have sent other client data"
        );
        let transports = credential.response.transports.clone().unwrap_or_default();
        let used_transport = if transports.contains(&webauthn_rs_proto::AuthenticatorTransport::Usb)
        {
            abi::TRANSPORT_USB
        } else {
            0
        };
        *self.registered.lock().unwrap() = Some(credential.clone());
        Ok(Attestation {
            credential_id: credential.raw_id,
            attestation_object: credential.response.attestation_object,
            used_transport: Some(used_transport),
        })
    }

    fn get_assertion(&self, r: &GetAssertion) -> Result<Assertion, Failure> {
        let (origin, challenge) = ceremony(&r.client_data_json);
        let options: RequestChallengeResponse = serde_json::from_value(json!({ "publicKey": {
            "challenge": challenge,
            "timeout": r.timeout_ms,
            "rpId": r.rp_id,
            "allowCredentials": r.allow.iter()
                .map(|c| json!({ "type": "public-key", "id": b64(&c.id) }))
                .collect::<Vec<_>>(),
            "userVerification": user_verification(r.user_verification),
        }}))
        .unwrap();
        let credential = key_for(&self.transport, self.person.clone())
            .authenticate(&origin, &options)
            .map_err(as_windows)?;
        assert_eq!(
            String::from_utf8_lossy(&credential.response.client_data_json),
            String::from_utf8_lossy(&r.client_data_json),
            "the CTAP path would have sent other client data"
        );
        Ok(Assertion {
            credential_id: credential.raw_id,
            authenticator_data: credential.response.authenticator_data,
            signature: credential.response.signature,
            user_id: credential.response.user_handle,
        })
    }
}

fn windows_key(
    transport: &VirtTransport,
    pin: &str,
) -> (
    WindowsKey<CtapAsWebAuthnDll>,
    Arc<Person>,
    Arc<Mutex<Option<RegisterPublicKeyCredential>>>,
) {
    let registered = Arc::new(Mutex::new(None));
    let dll = CtapAsWebAuthnDll {
        transport: transport.clone(),
        // Windows asks for the PIN in its own dialog, once per ceremony.
        person: Person::typing(&[Some(pin); 8]),
        registered: registered.clone(),
    };
    let person = Person::typing(&[]);
    (WindowsKey::new(dll, person.clone()), person, registered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keywardd_takes_the_windows_paths_registration_and_sign_ins() {
    let server = Server::start().await;
    let c = server.ceremonies("Keyward desktop");
    let transport = key_with_pin("4321").await;
    let (mut key, person, registered) = windows_key(&transport, "4321");

    let begin = c
        .api
        .registration_begin(&RegistrationBeginRequest {
            username: "ada".into(),
            display_name: None,
        })
        .await
        .unwrap();
    let credential = key.register(c.site().origin_url(), &begin.options).unwrap();
    assert_eq!(
        person.saw(),
        [KeyPrompt::InsertOrTap, KeyPrompt::Finished],
        "Windows shows the rest in its own dialog"
    );
    // From the same answer of the key, the same credential the CTAP path makes, but for the
    // transports: the CTAP path lists every one the key has, Windows the one it used.
    let ctap = registered.lock().unwrap().clone().unwrap();
    let without_transports = |c: &RegisterPublicKeyCredential| {
        let mut c = c.clone();
        c.response.transports = None;
        serde_json::to_value(c).unwrap()
    };
    assert_eq!(without_transports(&credential), without_transports(&ctap));
    assert_eq!(
        credential.response.transports,
        Some(vec![webauthn_rs_proto::AuthenticatorTransport::Usb])
    );
    assert_eq!(credential.type_, "public-key");
    assert_eq!(unb64(&credential.id), Some(credential.raw_id.clone()));
    assert!(!credential.raw_id.is_empty());
    let me = c
        .api
        .registration_finish(&RegistrationFinishRequest {
            ceremony_id: begin.ceremony_id,
            credential,
            nickname: Some("Nitrokey via Windows".into()),
            client: c.client.clone(),
            device_secret: None,
            binding: None,
        })
        .await
        .unwrap();
    assert_eq!(me.account.username, "ada");

    // Usernameless: the user handle comes through Windows' answer.
    let again = c.sign_in(&mut key, None, None).await.unwrap();
    assert_eq!(again.account.username, "ada");
    // Username first, with the allow list.
    c.sign_in(&mut key, Some("ada"), Some(me.device_secret))
        .await
        .unwrap();

    // A key that was never registered, as Windows reports it.
    let other = key_with_pin("9999").await;
    let (mut stranger, _, _) = windows_key(&other, "9999");
    match c.sign_in(&mut stranger, Some("ada"), None).await {
        Err(ClientError::Authenticator(AuthenticatorError::NotRegistered)) => {}
        other => panic!("expected the key to be unknown, got {other:?}"),
    }
}
