//! An authenticator Keyward did not write: the Nitrokey 3 firmware's FIDO2 app
//! (`fido-authenticator`, CTAP 2.1 with clientPIN and credential management) running on
//! trussed's virtual platform, in memory.
//!
//! It is reached two ways, both at the byte level a real key is:
//! - [`VirtTransport`] / [`VirtToken`]: a webauthn-authenticator-rs `Transport` whose token
//!   carries raw CTAP2 CBOR, as the USB HID path does after framing. The ceremony driver uses
//!   the same `CtapAuthenticator` code for it as for a YubiKey on USB.
//! - [`FidoVirt::apdu`]: ISO 7816-4 APDUs as an NFC reader sends them (SELECT of the FIDO
//!   applet, NFCCTAP_MSG, command chaining, GET RESPONSE), so a virtual contactless card can
//!   sit behind a real PC/SC stack (see [`vpcd`]).
//!
//! Only the finger is simulated: whether the user touches the key is a switch
//! ([`FidoVirt::set_touch`]).

pub mod card;
pub mod vpcd;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use fido_authenticator::{Authenticator, Config, Conforming};
use futures::stream::BoxStream;
use trussed::backend::BackendId;
use trussed::platform::{Platform as _, UserInterface};
use trussed::types::ui::Status;
use trussed::virt::{self, StoreConfig};
use trussed_core::types::consent::Level;
use trussed_core::types::reboot::To;
use trussed_staging::virt::{BackendIds, Dispatcher};
use webauthn_authenticator_rs::error::{CtapError, WebauthnCError};
use webauthn_authenticator_rs::transport::{Token, TokenEvent, Transport};
use webauthn_authenticator_rs::types::{CableRequestType, CableState, EnrollSampleStatus};
use webauthn_authenticator_rs::ui::UiCallback;
use webauthn_rs_proto::AuthenticatorTransport;

/// Largest CTAP message the virtual key accepts (a USB HID message tops out at 7609 bytes).
const MAX_MESSAGE: usize = 7609;

#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    #[error("the virtual key has stopped")]
    Stopped,
}

enum Job {
    Cbor(Vec<u8>, mpsc::Sender<Vec<u8>>),
    Apdu(Vec<u8>, mpsc::Sender<Vec<u8>>),
}

/// Handle to one running virtual key. Cheap to clone; the key stops when the last handle goes.
#[derive(Clone)]
pub struct FidoVirt {
    jobs: mpsc::Sender<Job>,
    touch: Arc<AtomicBool>,
    /// CTAP2 messages handled, for tests that must prove a path really reached the key.
    handled: Arc<AtomicUsize>,
}

impl std::fmt::Debug for FidoVirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FidoVirt").finish_non_exhaustive()
    }
}

/// What the key's "user" does when asked for presence.
struct Finger {
    touch: Arc<AtomicBool>,
}

impl UserInterface for Finger {
    fn check_user_presence(&mut self) -> Level {
        if self.touch.load(Ordering::SeqCst) {
            Level::Normal
        } else {
            Level::None
        }
    }
    fn set_status(&mut self, _status: Status) {}
    fn refresh(&mut self) {}
    fn uptime(&mut self) -> Duration {
        Duration::ZERO
    }
    fn reboot(&mut self, _to: To) -> ! {
        // The firmware only reboots on vendor commands Keyward never sends; a virtual key that
        // is asked to anyway stops its thread.
        std::process::abort()
    }
    fn wink(&mut self, _duration: Duration) {}
}

impl FidoVirt {
    /// Starts a factory-fresh key (no PIN, no credentials) on its own thread.
    pub fn start() -> FidoVirt {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let touch = Arc::new(AtomicBool::new(true));
        let handled = Arc::new(AtomicUsize::new(0));
        let finger = Finger {
            touch: touch.clone(),
        };
        let counter = handled.clone();
        thread::Builder::new()
            .name("fido-virt".into())
            .spawn(move || run_key(inbox, finger, counter))
            .ok();
        FidoVirt {
            jobs,
            touch,
            handled,
        }
    }

    /// Whether the simulated user touches the key when it asks.
    pub fn set_touch(&self, touches: bool) {
        self.touch.store(touches, Ordering::SeqCst);
    }

    pub fn messages_handled(&self) -> usize {
        self.handled.load(Ordering::SeqCst)
    }

    /// One CTAP2 message (command byte + CBOR) in; status byte + CBOR out.
    pub fn ctap2(&self, message: &[u8]) -> Result<Vec<u8>, VirtError> {
        self.ask(|reply| Job::Cbor(message.to_vec(), reply))
    }

    /// One short APDU, already unchained, for the FIDO applet; response data + SW1 SW2 out.
    pub(crate) fn applet_apdu(&self, apdu: &[u8]) -> Result<Vec<u8>, VirtError> {
        self.ask(|reply| Job::Apdu(apdu.to_vec(), reply))
    }

    fn ask(&self, job: impl FnOnce(mpsc::Sender<Vec<u8>>) -> Job) -> Result<Vec<u8>, VirtError> {
        let (reply, answer) = mpsc::channel();
        self.jobs.send(job(reply)).map_err(|_| VirtError::Stopped)?;
        answer.recv().map_err(|_| VirtError::Stopped)
    }
}

fn run_key(inbox: mpsc::Receiver<Job>, finger: Finger, handled: Arc<AtomicUsize>) {
    virt::with_platform(StoreConfig::ram(), |mut platform| {
        platform.user_interface().set_inner(Box::new(finger));
        platform.run_client_with_backends(
            "fido",
            Dispatcher::default(),
            &[
                BackendId::Custom(BackendIds::StagingBackend),
                BackendId::Core,
            ],
            |client| {
                let config = Config {
                    max_msg_size: MAX_MESSAGE,
                    skip_up_timeout: None,
                    max_resident_credential_count: Some(10),
                    large_blobs: None,
                    nfc_transport: true,
                    ccid_transport: false,
                    firmware_version: None,
                    credential_id_version: None,
                    long_touch_for_reset: false,
                    fido2_up_timeout: Some(100),
                };
                let mut authenticator = Authenticator::new(client, Conforming {}, config);
                while let Ok(job) = inbox.recv() {
                    match job {
                        Job::Cbor(message, reply) => {
                            let mut response = heapless_bytes::Bytes::<MAX_MESSAGE>::new();
                            let outcome = ctaphid_app::App::call(
                                &mut authenticator,
                                ctaphid_app::Command::Cbor,
                                &message,
                                response.as_mut_view(),
                            );
                            handled.fetch_add(1, Ordering::SeqCst);
                            let bytes = match outcome {
                                Ok(()) => response.to_vec(),
                                Err(_) => vec![CTAP1_ERR_INVALID_LENGTH],
                            };
                            reply.send(bytes).ok();
                        }
                        Job::Apdu(apdu, reply) => {
                            handled.fetch_add(1, Ordering::SeqCst);
                            reply
                                .send(card::call_applet(&mut authenticator, &apdu))
                                .ok();
                        }
                    }
                }
            },
        )
    })
}

const CTAP1_ERR_INVALID_LENGTH: u8 = 0x03;

/// The virtual key as a token: raw CTAP2 over an in-memory wire, where USB would frame it
/// into HID reports. Everything above this (`CtapAuthenticator`, PIN protocol, ceremonies)
/// is the library's and Keyward's real code.
#[derive(Debug)]
pub struct VirtToken {
    key: FidoVirt,
}

#[async_trait]
impl Token for VirtToken {
    type Id = ();

    fn get_transport(&self) -> AuthenticatorTransport {
        AuthenticatorTransport::Usb
    }

    async fn transmit_raw<U>(&mut self, cbor: &[u8], ui: &U) -> Result<Vec<u8>, WebauthnCError>
    where
        U: UiCallback,
    {
        // A USB key answers with keep-alives while it waits for a touch; the library turns
        // those into this prompt. The in-memory key answers at once, so prompt up front.
        if needs_presence(cbor) {
            ui.request_touch();
        }
        let key = self.key.clone();
        let message = cbor.to_vec();
        let mut response = tokio_free_blocking(move || key.ctap2(&message))
            .await
            .and_then(|r| r)
            .map_err(|_| WebauthnCError::Internal)?;
        if response.is_empty() {
            return Err(WebauthnCError::Cbor);
        }
        let status = response.remove(0);
        if status == 0 {
            Ok(response)
        } else {
            Err(WebauthnCError::Ctap(CtapError::from(status)))
        }
    }

    async fn cancel(&mut self) -> Result<(), WebauthnCError> {
        Ok(())
    }

    async fn init(&mut self) -> Result<(), WebauthnCError> {
        Ok(())
    }

    async fn close(&mut self) -> Result<(), WebauthnCError> {
        Ok(())
    }
}

/// makeCredential, getAssertion and selection wait for a touch.
fn needs_presence(message: &[u8]) -> bool {
    matches!(message.first(), Some(0x01 | 0x02 | 0x0B))
}

/// Runs a blocking call without tying up whatever executor polls us.
async fn tokio_free_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, VirtError> {
    let (tx, rx) = futures::channel::oneshot::channel();
    thread::spawn(move || {
        tx.send(f()).ok();
    });
    rx.await.map_err(|_| VirtError::Stopped)
}

/// Presents the virtual key the way a USB transport presents a plugged-in key: one token,
/// then "enumeration complete". Each watch hands out the same key.
#[derive(Debug, Clone)]
pub struct VirtTransport {
    key: FidoVirt,
    /// Present or unplugged, for "key removed" tests.
    present: Arc<Mutex<bool>>,
}

impl VirtTransport {
    pub fn new(key: FidoVirt) -> VirtTransport {
        VirtTransport {
            key,
            present: Arc::new(Mutex::new(true)),
        }
    }

    pub fn key(&self) -> &FidoVirt {
        &self.key
    }

    /// Plugs the key in or pulls it out.
    pub fn set_present(&self, present: bool) {
        if let Ok(mut p) = self.present.lock() {
            *p = present;
        }
    }

    fn is_present(&self) -> bool {
        self.present.lock().map(|p| *p).unwrap_or(false)
    }
}

#[async_trait]
impl<'b> Transport<'b> for VirtTransport {
    type Token = VirtToken;

    async fn watch(&self) -> Result<BoxStream<'_, TokenEvent<VirtToken>>, WebauthnCError> {
        let mut events = Vec::new();
        if self.is_present() {
            events.push(TokenEvent::Added(VirtToken {
                key: self.key.clone(),
            }));
        }
        events.push(TokenEvent::EnumerationComplete);
        let listed = futures::stream::iter(events);
        // A real transport keeps watching for keys plugged in later; so does this one (it
        // never yields again), which is what lets "no key presented" time out.
        Ok(Box::pin(futures::StreamExt::chain(
            listed,
            futures::stream::pending(),
        )))
    }

    async fn tokens(&self) -> Result<Vec<VirtToken>, WebauthnCError> {
        Ok(if self.is_present() {
            vec![VirtToken {
                key: self.key.clone(),
            }]
        } else {
            vec![]
        })
    }
}

/// A `UiCallback` with nobody behind it: for set-up steps (setting a PIN) where no prompt is
/// expected. Asked for a PIN, it has none.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUser;

impl UiCallback for NoUser {
    fn request_pin(&self) -> Option<String> {
        None
    }
    fn request_touch(&self) {}
    fn processing(&self) {}
    fn fingerprint_enrollment_feedback(&self, _: u32, _: Option<EnrollSampleStatus>) {}
    fn cable_qr_code(&self, _: CableRequestType, _: String) {}
    fn dismiss_qr_code(&self) {}
    fn cable_status_update(&self, _: CableState) {}
}
