//! Hardware security keys over USB and NFC at once (CTAP2, webauthn-authenticator-rs), with
//! the library's `UiCallback` bridged to whoever shows prompts: "insert or tap your key",
//! "touch your key", PIN entry with tries left, fingerprint feedback, cancel.
//!
//! The ceremony code is generic over the library's `Transport`, so tests drive the very same
//! path with an authenticator we did not write (keyward-fido-virt) where no HID device exists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::BoxFuture;
use keyward_proto::{
    CreationChallengeResponse, KeyInfo, KeyPasskey, KeyPasskeys, KeyPrompt, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse,
};
use url::Url;
use webauthn_authenticator_rs::AuthenticatorBackendHashedClientData;
use webauthn_authenticator_rs::ctap2::{CtapAuthenticator, select_one_device};
use webauthn_authenticator_rs::error::{CtapError, WebauthnCError};
use webauthn_authenticator_rs::transport::{Token, TokenEvent, Transport};
use webauthn_authenticator_rs::types::{CableRequestType, CableState, EnrollSampleStatus};
use webauthn_authenticator_rs::ui::UiCallback;
use webauthn_rs_proto::{
    AuthenticatorAssertionResponseRaw, AuthenticatorAttestationResponseRaw, AuthenticatorTransport,
    ResidentKeyRequirement,
};

use crate::authenticator::{Authenticator, AuthenticatorError};
use crate::site::{Site, client_data};

/// Shows prompts and asks for the PIN. Called from the ceremony's own thread, so `ask_pin`
/// may block until the person answers.
pub trait KeyPrompter: Send + Sync {
    fn prompt(&self, prompt: KeyPrompt);
    /// The key's PIN, or `None` if the person cancelled.
    fn ask_pin(&self, retries: Option<u32>, last_was_wrong: bool) -> Option<String>;
}

/// Ends a running ceremony from another thread ("Cancel" in the UI).
#[derive(Clone, Default, Debug)]
pub struct CancelSwitch(Arc<AtomicBool>);

impl CancelSwitch {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
    fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// One operation on the chosen key (a registration or an assertion).
type KeyOp<'k, Tk, R> = dyn Fn(
        &mut CtapAuthenticator<'_, Observed<Tk>, Bridge>,
        &tokio::runtime::Runtime,
    ) -> Result<R, WebauthnCError>
    + Sync
    + 'k;

type Connect<Tr> = Box<dyn Fn() -> BoxFuture<'static, Result<Tr, WebauthnCError>> + Send + Sync>;

/// A security key the person presents on any transport `Tr` offers, waited for up to
/// `wait_for_key`.
pub struct SecurityKey<Tr> {
    connect: Connect<Tr>,
    prompter: Arc<dyn KeyPrompter>,
    cancel: CancelSwitch,
    pub wait_for_key: Duration,
}

/// USB HID and NFC (PC/SC) together: whichever key the person plugs in or taps first.
pub type UsbOrNfc = webauthn_authenticator_rs::transport::AnyTransport;

impl SecurityKey<UsbOrNfc> {
    pub fn usb_or_nfc(prompter: Arc<dyn KeyPrompter>, cancel: CancelSwitch) -> Self {
        SecurityKey::new(
            move || Box::pin(webauthn_authenticator_rs::transport::AnyTransport::new()),
            prompter,
            cancel,
        )
    }
}

impl<Tr> SecurityKey<Tr>
where
    Tr: Transport<'static> + Send + Sync + 'static,
{
    pub fn new(
        connect: impl Fn() -> BoxFuture<'static, Result<Tr, WebauthnCError>> + Send + Sync + 'static,
        prompter: Arc<dyn KeyPrompter>,
        cancel: CancelSwitch,
    ) -> Self {
        SecurityKey {
            connect: Box::new(connect),
            prompter,
            cancel,
            wait_for_key: Duration::from_secs(60),
        }
    }

    /// Finds a key, then runs `op` against it, asking again for the PIN while the key says it
    /// was wrong. Runs on a thread of its own: the library blocks while the key waits.
    fn with_key<R: Send>(
        &self,
        op: &KeyOp<'_, Tr::Token, R>,
        seen: &Arc<Mutex<Seen>>,
    ) -> Result<R, AuthenticatorError> {
        self.cancel.reset();
        let job = || self.run(op, seen);
        let outcome = on_own_thread(job);
        self.prompter.prompt(KeyPrompt::Finished);
        outcome
    }

    fn run<R>(
        &self,
        op: &KeyOp<'_, Tr::Token, R>,
        seen: &Arc<Mutex<Seen>>,
    ) -> Result<R, AuthenticatorError> {
        // The library's USB and NFC code needs a Tokio runtime driven by a worker while this
        // thread blocks inside the ceremony.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| AuthenticatorError::Unavailable(e.to_string()))?;
        let outcome = self.run_in(&runtime, op, seen);
        // Dropping the runtime waits for the NFC watcher's blocking task, which notices within
        // a second that nobody listens any more. Leaving it running instead would let it race
        // the next ceremony for a card tapped meanwhile.
        drop(runtime);
        outcome
    }

    fn run_in<R>(
        &self,
        runtime: &tokio::runtime::Runtime,
        op: &KeyOp<'_, Tr::Token, R>,
        seen: &Arc<Mutex<Seen>>,
    ) -> Result<R, AuthenticatorError> {
        let _context = runtime.enter();
        let transport = runtime
            .block_on((self.connect)())
            .map_err(|e| map_error(e, None))?;
        let bridge = Bridge {
            prompter: self.prompter.clone(),
            seen: seen.clone(),
            cancel: self.cancel.clone(),
        };
        self.prompter.prompt(KeyPrompt::InsertOrTap);
        let chosen = runtime.block_on(async {
            let events = transport.watch().await?;
            let observed = events
                .map(|event| match event {
                    TokenEvent::Added(token) => {
                        lock(seen).key_found = true;
                        TokenEvent::Added(Observed {
                            inner: token,
                            seen: seen.clone(),
                        })
                    }
                    TokenEvent::Removed(id) => TokenEvent::Removed(id),
                    TokenEvent::EnumerationComplete => TokenEvent::EnumerationComplete,
                })
                .boxed();
            let cancelled = async {
                loop {
                    if self.cancel.take() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            tokio::select! {
                key = select_one_device(observed, &bridge) => key.ok_or(WebauthnCError::NoSelectedToken),
                _ = tokio::time::sleep(self.wait_for_key) => Err(WebauthnCError::NoSelectedToken),
                _ = cancelled => Err(WebauthnCError::Cancelled),
            }
        });
        let key = match chosen {
            // A key is there but the person never touched it to choose it.
            Err(WebauthnCError::NoSelectedToken) if lock(seen).key_found => {
                return Err(AuthenticatorError::NotTouched);
            }
            other => other.map_err(|e| map_error(e, None))?,
        };
        let mut key = key;
        loop {
            match op(&mut key, runtime) {
                // Only a PIN the person typed at our prompt is asked again; a PIN given to
                // the operation itself (change PIN) is simply wrong.
                Err(WebauthnCError::Ctap(CtapError::Ctap2PinInvalid)) if lock(seen).pin_asked => {
                    let retries = lock(seen).pin_retries;
                    if retries == Some(0) {
                        return Err(AuthenticatorError::PinBlocked);
                    }
                    lock(seen).last_pin_wrong = true;
                }
                Err(e) => {
                    let retries = lock(seen).pin_retries;
                    return Err(map_error(e, retries));
                }
                Ok(r) => return Ok(r),
            }
        }
    }
}

impl<Tr> Authenticator for SecurityKey<Tr>
where
    Tr: Transport<'static> + Send + Sync + 'static,
{
    fn label(&self) -> String {
        "Security key (USB or NFC)".into()
    }

    fn register(
        &mut self,
        origin: &Url,
        options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, AuthenticatorError> {
        let seen = Arc::new(Mutex::new(Seen {
            want_resident_key: wants_resident_key(options),
            ..Seen::default()
        }));
        let client_data = registration_client_data(origin, options)?;
        let credential = self.with_key(
            &|key, _| {
                AuthenticatorBackendHashedClientData::perform_register(
                    key,
                    client_data.hash.clone(),
                    options.public_key.clone(),
                    timeout_ms(options.public_key.timeout),
                )
            },
            &seen,
        )?;
        // The library leaves the credential ID out (and names the attestation format as the
        // type): the ID is the one the attestation object attests.
        let attestation_object = credential.response.attestation_object;
        let credential_id = crate::credential_json::attested_credential_id(&attestation_object)
            .map_err(|e| AuthenticatorError::Refused(e.to_string()))?;
        Ok(registration_credential(
            credential_id,
            attestation_object,
            client_data.json,
            credential.response.transports,
        ))
    }

    fn authenticate(
        &mut self,
        origin: &Url,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, AuthenticatorError> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let client_data = assertion_client_data(origin, options)?;
        let credential = self.with_key(
            &|key, _| {
                AuthenticatorBackendHashedClientData::perform_auth(
                    key,
                    client_data.hash.clone(),
                    options.public_key.clone(),
                    timeout_ms(options.public_key.timeout),
                )
            },
            &seen,
        )?;
        // webauthn-authenticator-rs 0.6 drops the user handle the key returns; a usernameless
        // sign-in needs it, so put back what the key said.
        let user_handle = credential
            .response
            .user_handle
            .or_else(|| lock(&seen).user_handle.take());
        Ok(assertion_credential(
            credential.raw_id,
            credential.response.authenticator_data,
            credential.response.signature,
            user_handle,
            client_data.json,
        ))
    }
}

// -------------------------------------------------------------------------------------------
// What both security-key paths share, the CTAP one here and Windows' WebAuthn API
// (`windows_key.rs`): the client data they send and the credentials they answer with.

/// The clientDataJSON a ceremony sends ([`client_data`], the one definition of it) and its
/// SHA-256: the CTAP path hands the key the hash, Windows' API takes the JSON and hashes it.
pub(crate) struct ClientData {
    pub json: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The client data of a registration for `origin`, refused, as a browser would refuse it, when
/// the RP ID the options name is not the origin's to claim. The library's own client data has
/// the origin as a URL with a trailing slash, which an exact origin check rightly refuses.
pub(crate) fn registration_client_data(
    origin: &Url,
    options: &CreationChallengeResponse,
) -> Result<ClientData, AuthenticatorError> {
    let site = Site::of(origin, &options.public_key.rp.id)?;
    let (json, hash) = client_data(
        "webauthn.create",
        &options.public_key.challenge,
        site.origin_url(),
    );
    Ok(ClientData { json, hash })
}

/// The client data of an assertion for `origin`, refused as [`registration_client_data`] is.
pub(crate) fn assertion_client_data(
    origin: &Url,
    options: &RequestChallengeResponse,
) -> Result<ClientData, AuthenticatorError> {
    let site = Site::of(origin, &options.public_key.rp_id)?;
    let (json, hash) = client_data(
        "webauthn.get",
        &options.public_key.challenge,
        site.origin_url(),
    );
    Ok(ClientData { json, hash })
}

/// The relying party wants a discoverable credential (so a usernameless sign-in can find it).
pub(crate) fn wants_resident_key(options: &CreationChallengeResponse) -> bool {
    options
        .public_key
        .authenticator_selection
        .as_ref()
        .is_some_and(|s| {
            s.require_resident_key
                || matches!(
                    s.resident_key,
                    Some(ResidentKeyRequirement::Required | ResidentKeyRequirement::Preferred)
                )
        })
}

/// A new credential as every security-key path reports it: the ID the key chose, type
/// "public-key", our client data, no client extension outputs (none are asked of the key).
pub(crate) fn registration_credential(
    credential_id: Vec<u8>,
    attestation_object: Vec<u8>,
    client_data_json: Vec<u8>,
    transports: Option<Vec<AuthenticatorTransport>>,
) -> RegisterPublicKeyCredential {
    RegisterPublicKeyCredential {
        id: keyward_core::secret::b64(&credential_id),
        raw_id: credential_id,
        response: AuthenticatorAttestationResponseRaw {
            attestation_object,
            client_data_json,
            transports,
        },
        type_: PUBLIC_KEY.into(),
        extensions: Default::default(),
    }
}

/// An assertion as every security-key path reports it.
pub(crate) fn assertion_credential(
    credential_id: Vec<u8>,
    authenticator_data: Vec<u8>,
    signature: Vec<u8>,
    user_handle: Option<Vec<u8>>,
    client_data_json: Vec<u8>,
) -> PublicKeyCredential {
    PublicKeyCredential {
        id: keyward_core::secret::b64(&credential_id),
        raw_id: credential_id,
        response: AuthenticatorAssertionResponseRaw {
            authenticator_data,
            client_data_json,
            signature,
            user_handle,
        },
        extensions: Default::default(),
        type_: PUBLIC_KEY.into(),
    }
}

/// The one credential type WebAuthn defines.
pub(crate) const PUBLIC_KEY: &str = "public-key";

/// The ceremony's timeout as a browser clamps it: at most a minute, a minute if unset.
pub(crate) fn timeout_ms(asked: Option<u32>) -> u32 {
    asked.map_or(60_000, |t| t.min(60_000))
}

/// Runs `job` on a fresh thread and waits, telling a multi-threaded Tokio runtime (the desktop's)
/// that this worker blocks, so other tasks move elsewhere.
pub(crate) fn on_own_thread<R: Send>(job: impl FnOnce() -> R + Send) -> R {
    let run = || {
        std::thread::scope(|s| match s.spawn(job).join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(run)
        }
        _ => run(),
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the key told us that the library does not pass on.
#[derive(Debug, Default)]
pub struct Seen {
    /// The relying party wants a discoverable credential (see `Observed`).
    want_resident_key: bool,
    key_found: bool,
    pin_retries: Option<u32>,
    last_pin_wrong: bool,
    /// The PIN came from our prompt (so a wrong one may be asked again).
    pin_asked: bool,
    /// What the person typed, for the rest of this one operation only.
    typed_pin: Option<String>,
    /// Ask the key for its PIN tries left right after getInfo (key management).
    probe_pin_retries: bool,
    user_handle: Option<Vec<u8>>,
}

/// The library's `UiCallback`, forwarded to a [`KeyPrompter`].
#[derive(Clone)]
pub struct Bridge {
    prompter: Arc<dyn KeyPrompter>,
    seen: Arc<Mutex<Seen>>,
    cancel: CancelSwitch,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

impl UiCallback for Bridge {
    fn request_pin(&self) -> Option<String> {
        if self.cancel.take() {
            return None;
        }
        let (retries, wrong) = {
            let mut seen = lock(&self.seen);
            let wrong = std::mem::take(&mut seen.last_pin_wrong);
            if wrong {
                seen.typed_pin = None;
            }
            // One operation may need several PIN tokens (listing passkeys takes one per
            // step): the person types the PIN once per operation.
            if let Some(pin) = seen.typed_pin.clone() {
                return Some(pin);
            }
            (seen.pin_retries, wrong)
        };
        self.prompter.prompt(KeyPrompt::Pin { retries, wrong });
        lock(&self.seen).pin_asked = true;
        let pin = self.prompter.ask_pin(retries, wrong);
        if pin.is_some() {
            self.prompter.prompt(KeyPrompt::Processing);
        }
        lock(&self.seen).typed_pin = pin.clone();
        pin
    }

    fn request_touch(&self) {
        self.prompter.prompt(KeyPrompt::Touch);
    }

    fn processing(&self) {
        self.prompter.prompt(KeyPrompt::Processing);
    }

    fn fingerprint_enrollment_feedback(
        &self,
        remaining_samples: u32,
        _feedback: Option<EnrollSampleStatus>,
    ) {
        self.prompter.prompt(KeyPrompt::Fingerprint {
            remaining: remaining_samples,
        });
    }

    // caBLE (phones as keys over Bluetooth) is not a transport Keyward enables.
    fn cable_qr_code(&self, _request_type: CableRequestType, _url: String) {}
    fn dismiss_qr_code(&self) {}
    fn cable_status_update(&self, _state: CableState) {}
}

/// A token whose messages we read on the way past: PIN tries left (clientPIN getPinRetries)
/// and the user handle of an assertion. It also asks for a discoverable credential when the
/// relying party wants one: webauthn-authenticator-rs 0.6 never sets makeCredential's `rk`
/// option, which would make usernameless sign-in impossible with a hardware key. The PIN/UV
/// auth parameter covers only the client data hash, so adding the option is sound.
#[derive(Debug)]
pub struct Observed<T> {
    inner: T,
    seen: Arc<Mutex<Seen>>,
}

const CMD_MAKE_CREDENTIAL: u8 = 0x01;
const CMD_GET_INFO: u8 = 0x04;
/// authenticatorClientPIN {pinUvAuthProtocol: 1, subCommand: getPinRetries}
const GET_PIN_RETRIES: [u8; 6] = [0x06, 0xA2, 0x01, 0x01, 0x02, 0x01];

fn record_pin_retries(response: &[u8], seen: &Mutex<Seen>) {
    remember(notice(Some(CMD_CLIENT_PIN), response), seen);
}

/// What one response from the key tells us that the library does not pass on.
#[derive(Debug, PartialEq, Eq)]
enum Noticed {
    Nothing,
    /// clientPIN's pinRetries (key 3); `None` when the number there is no count of tries.
    PinRetries(Option<u32>),
    /// getAssertion's user (key 4) id: the user handle.
    UserHandle(Vec<u8>),
}

/// Reads the response (CBOR, the status byte already gone) the key gave to `command`. Bytes
/// that are not one CBOR map, or a map without the expected key and type, tell nothing.
fn notice(command: Option<u8>, response: &[u8]) -> Noticed {
    use serde_cbor_2::Value;
    let Ok(Value::Map(map)) = serde_cbor_2::from_slice::<Value>(response) else {
        return Noticed::Nothing;
    };
    let field = |k: i128| map.get(&Value::Integer(k));
    match command {
        Some(CMD_CLIENT_PIN) => match field(3) {
            Some(Value::Integer(n)) => Noticed::PinRetries(u32::try_from(*n).ok()),
            _ => Noticed::Nothing,
        },
        Some(CMD_GET_ASSERTION) => match field(4) {
            Some(Value::Map(user)) => match user.get(&Value::Text("id".into())) {
                Some(Value::Bytes(id)) => Noticed::UserHandle(id.clone()),
                _ => Noticed::Nothing,
            },
            _ => Noticed::Nothing,
        },
        _ => Noticed::Nothing,
    }
}

fn remember(noticed: Noticed, seen: &Mutex<Seen>) {
    match noticed {
        Noticed::Nothing => {}
        Noticed::PinRetries(n) => lock(seen).pin_retries = n,
        Noticed::UserHandle(id) => lock(seen).user_handle = Some(id),
    }
}
const CMD_GET_ASSERTION: u8 = 0x02;
const MAKE_CREDENTIAL_OPTIONS: i128 = 7;

/// makeCredential with `options.rk = true`.
fn with_resident_key(message: &[u8]) -> Result<Vec<u8>, WebauthnCError> {
    use serde_cbor_2::Value;
    let Some((command, body)) = message.split_first() else {
        return Err(WebauthnCError::Cbor);
    };
    let Value::Map(mut request) =
        serde_cbor_2::from_slice::<Value>(body).map_err(|_| WebauthnCError::Cbor)?
    else {
        return Err(WebauthnCError::Cbor);
    };
    let options = request
        .entry(Value::Integer(MAKE_CREDENTIAL_OPTIONS))
        .or_insert_with(|| Value::Map(Default::default()));
    if let Value::Map(options) = options {
        options.insert(Value::Text("rk".into()), Value::Bool(true));
    }
    let mut out = vec![*command];
    out.extend(serde_cbor_2::to_vec(&Value::Map(request)).map_err(|_| WebauthnCError::Cbor)?);
    Ok(out)
}
const CMD_CLIENT_PIN: u8 = 0x06;

#[async_trait]
impl<T: Token> Token for Observed<T> {
    type Id = T::Id;

    fn has_button(&self) -> bool {
        self.inner.has_button()
    }

    fn get_transport(&self) -> AuthenticatorTransport {
        self.inner.get_transport()
    }

    async fn transmit_raw<U>(&mut self, cbor: &[u8], ui: &U) -> Result<Vec<u8>, WebauthnCError>
    where
        U: UiCallback,
    {
        let want_resident_key = lock(&self.seen).want_resident_key;
        let patched;
        let cbor = if cbor.first() == Some(&CMD_MAKE_CREDENTIAL) && want_resident_key {
            patched = with_resident_key(cbor)?;
            patched.as_slice()
        } else {
            cbor
        };
        let response = self.inner.transmit_raw(cbor, ui).await?;
        if cbor.first() == Some(&CMD_GET_INFO) && lock(&self.seen).probe_pin_retries {
            // clientPIN getPinRetries (protocol 1): the library has no call for it. A key
            // without PIN support answers with an error, which just leaves the count unknown.
            if let Ok(answer) = self.inner.transmit_raw(&GET_PIN_RETRIES, ui).await {
                record_pin_retries(&answer, &self.seen);
            }
        }
        remember(notice(cbor.first().copied(), &response), &self.seen);
        Ok(response)
    }

    async fn cancel(&mut self) -> Result<(), WebauthnCError> {
        self.inner.cancel().await
    }

    async fn init(&mut self) -> Result<(), WebauthnCError> {
        self.inner.init().await
    }

    async fn close(&mut self) -> Result<(), WebauthnCError> {
        self.inner.close().await
    }
}

/// The library's errors in the terms a person acts on.
fn map_error(e: WebauthnCError, pin_retries: Option<u32>) -> AuthenticatorError {
    use CtapError::*;
    match e {
        WebauthnCError::Cancelled | WebauthnCError::Ctap(Ctap2KeepAliveCancel) => {
            AuthenticatorError::Cancelled
        }
        WebauthnCError::NoSelectedToken => AuthenticatorError::NoKey,
        WebauthnCError::NotSupported
        | WebauthnCError::NoHidDevices
        | WebauthnCError::PermissionDenied => AuthenticatorError::Unavailable(
            "this machine gives Keyward no access to USB or NFC security keys".into(),
        ),
        WebauthnCError::Ctap(code) => match code {
            Ctap2NoCredentials => AuthenticatorError::NotRegistered,
            Ctap2CredentialExcluded => AuthenticatorError::AlreadyRegistered,
            Ctap2PinInvalid => AuthenticatorError::WrongPin {
                retries: pin_retries,
            },
            Ctap2PinBlocked => AuthenticatorError::PinBlocked,
            Ctap2PinAuthBlocked => AuthenticatorError::PinPaused,
            Ctap2PinNotSet | Ctap2PUATRequired => AuthenticatorError::PinNotSet,
            Ctap2UserActionTimeout | Ctap2ActionTimeout | Ctap2OperationDenied => {
                AuthenticatorError::NotTouched
            }
            Ctap2KeyStoreFull => AuthenticatorError::KeyFull,
            other => AuthenticatorError::Refused(format!("{other:?}")),
        },
        WebauthnCError::UserVerificationRequired => AuthenticatorError::PinNotSet,
        WebauthnCError::PinTooShort
        | WebauthnCError::PinTooLong
        | WebauthnCError::PinContainsNull => AuthenticatorError::Refused(e.to_string()),
        WebauthnCError::ApduTransmission | WebauthnCError::Closed | WebauthnCError::IoError(_) => {
            AuthenticatorError::KeyRemoved
        }
        #[cfg(not(windows))]
        WebauthnCError::HidError(_) | WebauthnCError::PcscError(_) => {
            AuthenticatorError::KeyRemoved
        }
        other => AuthenticatorError::Refused(other.to_string()),
    }
}

/// The security key this platform should use: USB and NFC directly, except on Windows, where
/// direct access to keys needs administrator rights and the Windows WebAuthn API (which
/// shows its own PIN and touch prompts) is the way in.
pub fn platform_security_key(
    prompter: Arc<dyn KeyPrompter>,
    cancel: CancelSwitch,
) -> Box<dyn Authenticator> {
    #[cfg(windows)]
    {
        // Windows' own dialog has the Cancel button there; this switch does not reach it.
        let _ = cancel;
        Box::new(crate::windows_key::WindowsKey::new(
            crate::windows_key::WebAuthnDll,
            prompter,
        ))
    }
    #[cfg(not(windows))]
    {
        Box::new(SecurityKey::usb_or_nfc(prompter, cancel))
    }
}

// -------------------------------------------------------------------------------------------
// Managing the key itself, as Yubico Authenticator does: what it is, its PIN, the passkeys it
// holds, a factory reset. The same transports, prompts and cancel as ceremonies.

impl<Tr> SecurityKey<Tr>
where
    Tr: Transport<'static> + Send + Sync + 'static,
{
    fn manage<R: Send>(
        &self,
        probe_pin_retries: bool,
        op: &KeyOp<'_, Tr::Token, R>,
    ) -> Result<(R, Option<u32>), AuthenticatorError> {
        let seen = Arc::new(Mutex::new(Seen {
            probe_pin_retries,
            ..Seen::default()
        }));
        let r = self.with_key(op, &seen)?;
        let retries = lock(&seen).pin_retries;
        Ok((r, retries))
    }

    /// What the key is, whether it has a PIN and how many tries are left. Needs no PIN.
    pub fn info(&self) -> Result<KeyInfo, AuthenticatorError> {
        let (info, retries) = self.manage(true, &|key, _| {
            let i = key.get_info();
            let pin_set = i
                .options
                .as_ref()
                .and_then(|o| o.get("clientPin"))
                .copied()
                .unwrap_or(false);
            Ok(KeyInfo {
                aaguid: i.aaguid,
                model: i
                    .aaguid
                    .and_then(|a| keyward_core::aaguid::model_name(&a))
                    .map(str::to_string),
                versions: i.versions.iter().cloned().collect(),
                transports: i.transports.clone().unwrap_or_default(),
                firmware: i.firmware_version.and_then(|v| i64::try_from(v).ok()),
                pin_set,
                pin_retries: None,
                min_pin_length: i.min_pin_length.and_then(|n| u32::try_from(n).ok()),
                credential_management: key.supports_credential_management(),
            })
        })?;
        Ok(KeyInfo {
            pin_retries: if info.pin_set { retries } else { None },
            ..info
        })
    }

    /// Sets the first PIN of a key that has none.
    pub fn set_pin(&self, new_pin: &str) -> Result<(), AuthenticatorError> {
        self.manage(false, &|key, rt| rt.block_on(key.set_new_pin(new_pin)))
            .map(|_| ())
    }

    pub fn change_pin(&self, old_pin: &str, new_pin: &str) -> Result<(), AuthenticatorError> {
        self.manage(false, &|key, rt| {
            rt.block_on(key.change_pin(old_pin, new_pin))
        })
        .map(|_| ())
    }

    /// The passkeys on the key, for every site, and the room left. Asks for the PIN.
    pub fn passkeys(&self) -> Result<KeyPasskeys, AuthenticatorError> {
        self.manage(false, &list_passkeys).map(|(p, _)| p)
    }

    /// Deletes one passkey from the key (the account's record of it is the server's
    /// business) and lists what remains, all with one PIN entry.
    pub fn delete_passkey(&self, credential_id: &[u8]) -> Result<KeyPasskeys, AuthenticatorError> {
        use webauthn_authenticator_rs::ctap2::commands::PublicKeyCredentialDescriptorCM;
        self.manage(false, &|key, rt| {
            let cm = key
                .credential_management()
                .ok_or(WebauthnCError::NotSupported)?;
            rt.block_on(cm.delete_credential(PublicKeyCredentialDescriptorCM {
                type_: "public-key".into(),
                id: credential_id.to_vec(),
            }))?;
            list_passkeys(key, rt)
        })
        .map(|(p, _)| p)
    }

    /// Erases every passkey and the PIN. Keys accept this only within seconds of being
    /// plugged in or tapped, with a touch.
    pub fn factory_reset(&self) -> Result<(), AuthenticatorError> {
        self.manage(false, &|key, rt| rt.block_on(key.factory_reset()))
            .map(|_| ())
    }
}

/// Every passkey on the key, with the room left (credential management; needs the PIN).
fn list_passkeys<T: Token>(
    key: &mut CtapAuthenticator<'_, T, Bridge>,
    rt: &tokio::runtime::Runtime,
) -> Result<KeyPasskeys, WebauthnCError> {
    let aaguid = key.get_info().aaguid;
    let cm = key
        .credential_management()
        .ok_or(WebauthnCError::NotSupported)?;
    let metadata = rt.block_on(cm.get_credentials_metadata())?;
    let mut passkeys = Vec::new();
    if metadata.existing_resident_credentials_count > 0 {
        for rp in rt.block_on(cm.enumerate_rps())? {
            let Some(rp_id) = rp.id else { continue };
            for c in rt.block_on(cm.enumerate_credentials_by_rpid(&rp_id))? {
                let (Some(user), Some(id)) = (c.user, c.credential_id) else {
                    continue;
                };
                passkeys.push(KeyPasskey {
                    rp_id: rp_id.clone(),
                    user_name: user.name,
                    user_display_name: user.display_name,
                    user_handle: keyward_core::secret::b64(&user.id),
                    credential_id: keyward_core::secret::b64(&id.id),
                });
            }
        }
    }
    Ok(KeyPasskeys {
        aaguid,
        passkeys,
        free_slots: metadata.max_possible_remaining_resident_credentials_count,
    })
}

/// Property tests (fuzzing on stable) of what the client itself reads from a security key's
/// responses (`notice`, as `Observed` applies it to every response): arbitrary bytes, and CBOR
/// maps with any value under the keys it reads, give the value it names or nothing, never a
/// panic. Real responses are checked first. Cases: proptest's default, or `PROPTEST_CASES`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod fuzz {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_cbor_2::Value;

    use super::*;

    /// Any CBOR value, nested a few levels, with integers over CBOR's whole range.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Integer(n.into())),
            any::<u64>().prop_map(|n| Value::Integer(n.into())),
            (-(1i128 << 64)..0).prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Float),
            prop::collection::vec(any::<u8>(), 0..70).prop_map(Value::Bytes),
            "\\PC{0,12}".prop_map(Value::Text),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(inner.clone(), inner.clone(), 0..4)
                    .prop_map(Value::Map),
                (any::<u64>(), inner).prop_map(|(tag, v)| Value::Tag(tag, Box::new(v))),
            ]
        })
    }

    /// The value as the decoder gives it back: serde_cbor_2 reads a tagged item as the item.
    fn untagged(value: Value) -> Value {
        match value {
            Value::Tag(_, inner) => untagged(*inner),
            Value::Array(items) => Value::Array(items.into_iter().map(untagged).collect()),
            Value::Map(map) => Value::Map(
                map.into_iter()
                    .map(|(k, v)| (untagged(k), untagged(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    fn cbor(entries: Vec<(Value, Value)>) -> Vec<u8> {
        serde_cbor_2::to_vec(&Value::Map(entries.into_iter().collect())).unwrap()
    }

    fn int(n: i128) -> Value {
        Value::Integer(n)
    }

    #[test]
    fn real_responses_are_read_and_their_near_misses_tell_nothing() {
        // clientPIN getPinRetries of a fresh key: {3: 8}.
        let retries = [0xA1, 0x03, 0x08];
        assert_eq!(
            notice(Some(CMD_CLIENT_PIN), &retries),
            Noticed::PinRetries(Some(8))
        );
        // getAssertion: credential, authData, signature, user {id, name}.
        let mut user = BTreeMap::new();
        user.insert(
            Value::Text("id".into()),
            Value::Bytes(vec![0x4B, 0x57, 0x01]),
        );
        user.insert(Value::Text("name".into()), Value::Text("ada".into()));
        let assertion = cbor(vec![
            (int(1), Value::Map(BTreeMap::new())),
            (int(2), Value::Bytes(vec![0; 37])),
            (int(3), Value::Bytes(vec![0x30; 70])),
            (int(4), Value::Map(user)),
        ]);
        assert_eq!(
            notice(Some(CMD_GET_ASSERTION), &assertion),
            Noticed::UserHandle(vec![0x4B, 0x57, 0x01])
        );
        // The same bytes as the answer to another command tell nothing.
        assert_eq!(notice(Some(CMD_GET_ASSERTION), &retries), Noticed::Nothing);
        assert_eq!(notice(Some(CMD_CLIENT_PIN), &assertion), Noticed::Nothing);
        assert_eq!(notice(Some(CMD_GET_INFO), &retries), Noticed::Nothing);
        assert_eq!(notice(None, &retries), Noticed::Nothing);
        // A count that is no u32 leaves the count unknown.
        for n in [-1, 1 << 32, -(1 << 64)] {
            assert_eq!(
                notice(Some(CMD_CLIENT_PIN), &cbor(vec![(int(3), int(n))])),
                Noticed::PinRetries(None)
            );
        }
        // Empty, truncated, or followed by more bytes: not one CBOR map.
        for bad in [&[][..], &retries[..2], &[0xA1, 0x03, 0x08, 0x00], &[0xFF]] {
            assert_eq!(notice(Some(CMD_CLIENT_PIN), bad), Noticed::Nothing);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_as_a_response_never_panic(
            command in any::<Option<u8>>(), response in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            let noticed = notice(command, &response);
            if !matches!(command, Some(CMD_CLIENT_PIN | CMD_GET_ASSERTION)) {
                prop_assert_eq!(noticed, Noticed::Nothing);
            }
        }

        #[test]
        fn any_value_as_pin_retries_is_a_count_or_unknown(
            retries in value(), others in prop::collection::vec((value(), value()), 0..4)
        ) {
            let mut entries = others;
            entries.retain(|(k, _)| untagged(k.clone()) != int(3));
            entries.push((int(3), retries.clone()));
            let noticed = notice(Some(CMD_CLIENT_PIN), &cbor(entries));
            match untagged(retries) {
                Value::Integer(n) => prop_assert_eq!(noticed, Noticed::PinRetries(u32::try_from(n).ok())),
                _ => prop_assert_eq!(noticed, Noticed::Nothing),
            }
        }

        #[test]
        fn any_value_as_the_user_or_its_id_is_a_user_handle_or_nothing(
            id in value(),
            user_others in prop::collection::vec((value(), value()), 0..3),
            user_is_a_map in any::<bool>(),
            other_user in value(),
        ) {
            let id_key = Value::Text("id".into());
            let mut user: BTreeMap<Value, Value> = user_others
                .into_iter()
                .filter(|(k, _)| untagged(k.clone()) != id_key)
                .collect();
            user.insert(id_key.clone(), id);
            let user = if user_is_a_map { Value::Map(user) } else { other_user };
            let noticed = notice(Some(CMD_GET_ASSERTION), &cbor(vec![(int(4), user.clone())]));
            match untagged(user) {
                Value::Map(user) => match user.get(&id_key) {
                    Some(Value::Bytes(id)) => {
                        prop_assert_eq!(noticed, Noticed::UserHandle(id.clone()))
                    }
                    _ => prop_assert_eq!(noticed, Noticed::Nothing),
                },
                _ => prop_assert_eq!(noticed, Noticed::Nothing),
            }
        }

        #[test]
        fn a_truncated_or_extended_response_tells_nothing(
            retries in any::<u32>(), cut in any::<prop::sample::Index>(), more in prop::collection::vec(any::<u8>(), 1..8)
        ) {
            let whole = cbor(vec![(int(3), int(retries.into()))]);
            let cut = cut.index(whole.len());
            prop_assert_eq!(notice(Some(CMD_CLIENT_PIN), &whole[..cut]), Noticed::Nothing);
            let mut longer = whole.clone();
            longer.extend_from_slice(&more);
            prop_assert_eq!(notice(Some(CMD_CLIENT_PIN), &longer), Noticed::Nothing);
            prop_assert_eq!(notice(Some(CMD_CLIENT_PIN), &whole), Noticed::PinRetries(Some(retries)));
        }
    }
}
