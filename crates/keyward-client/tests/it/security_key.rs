//! The USB/NFC ceremony path (`SecurityKey` over webauthn-authenticator-rs's CTAP2 code) against
//! a real keywardd, with an authenticator we did not write standing in for the hardware:
//! Nitrokey's fido-authenticator on trussed's virtual platform. Only the finger is simulated.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_client::*;
use keyward_fido_virt::{FidoVirt, VirtTransport};
use keyward_proto::*;
use webauthn_authenticator_rs::ctap2::CtapAuthenticator;
use webauthn_authenticator_rs::transport::Transport;

use crate::Server;

/// The person in front of the screen: answers PIN prompts from a script, remembers what they saw.
#[derive(Default)]
pub(crate) struct Person {
    pins: Mutex<VecDeque<Option<String>>>,
    saw: Mutex<Vec<KeyPrompt>>,
}

impl Person {
    pub(crate) fn typing(pins: &[Option<&str>]) -> Arc<Person> {
        Arc::new(Person {
            pins: Mutex::new(pins.iter().map(|p| p.map(str::to_string)).collect()),
            saw: Mutex::default(),
        })
    }
    pub(crate) fn saw(&self) -> Vec<KeyPrompt> {
        self.saw.lock().unwrap().clone()
    }
    fn pin_prompts(&self) -> Vec<KeyPrompt> {
        self.saw()
            .into_iter()
            .filter(|p| matches!(p, KeyPrompt::Pin { .. }))
            .collect()
    }
}

impl KeyPrompter for Person {
    fn prompt(&self, prompt: KeyPrompt) {
        self.saw.lock().unwrap().push(prompt);
    }
    fn ask_pin(&self, _retries: Option<u32>, _wrong: bool) -> Option<String> {
        self.pins.lock().unwrap().pop_front().flatten()
    }
}

pub(crate) fn key_for(
    transport: &VirtTransport,
    person: Arc<Person>,
) -> SecurityKey<VirtTransport> {
    let transport = transport.clone();
    let mut key = SecurityKey::new(
        move || {
            let t = transport.clone();
            Box::pin(async move { Ok(t) })
        },
        person,
        CancelSwitch::default(),
    );
    key.wait_for_key = Duration::from_millis(500);
    key
}

/// A fresh virtual key with its PIN set, as its owner would have done once.
pub(crate) async fn key_with_pin(pin: &str) -> VirtTransport {
    let transport = VirtTransport::new(FidoVirt::start());
    let token = transport.tokens().await.unwrap().remove(0);
    let nobody = keyward_fido_virt::NoUser;
    let mut key = CtapAuthenticator::new(token, &nobody).await.unwrap();
    key.set_new_pin(pin).await.unwrap();
    transport
}

fn key_error(e: ClientError) -> AuthenticatorError {
    match e {
        ClientError::Authenticator(a) => a,
        other => panic!("expected a key error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_we_did_not_write_registers_and_signs_in_with_its_pin() {
    let server = Server::start().await;
    let c = server.ceremonies("Keyward desktop");
    let transport = key_with_pin("4321").await;

    let person = Person::typing(&[Some("4321")]);
    let mut key = key_for(&transport, person.clone());
    let me = c
        .create_account(&mut key, "ada", None, Some("Nitrokey"))
        .await
        .unwrap();
    let saw = person.saw();
    assert_eq!(saw.first(), Some(&KeyPrompt::InsertOrTap), "{saw:?}");
    assert!(
        saw.contains(&KeyPrompt::Pin {
            retries: Some(8),
            wrong: false
        }),
        "{saw:?}"
    );
    assert!(saw.contains(&KeyPrompt::Touch), "{saw:?}");
    assert_eq!(saw.last(), Some(&KeyPrompt::Finished));

    // Usernameless: the key finds its own passkey and says whose it is.
    let person = Person::typing(&[Some("4321")]);
    let mut key = key_for(&transport, person);
    let again = c.sign_in(&mut key, None, None).await.unwrap();
    assert_eq!(again.account.username, "ada");

    // Username first, with the allow list.
    let person = Person::typing(&[Some("4321")]);
    let mut key = key_for(&transport, person);
    c.sign_in(&mut key, Some("ada"), Some(me.device_secret))
        .await
        .unwrap();

    let keys = c
        .api
        .with_token(&again.token)
        .authenticators()
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].backup_eligible, "a hardware key is device-bound");
    assert!(transport.key().messages_handled() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_asked_again_with_the_tries_left() {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let transport = key_with_pin("4321").await;
    let mut key = key_for(&transport, Person::typing(&[Some("4321")]));
    c.create_account(&mut key, "ada", None, None).await.unwrap();

    let person = Person::typing(&[Some("0000"), Some("1111"), Some("4321")]);
    let mut key = key_for(&transport, person.clone());
    c.sign_in(&mut key, Some("ada"), None).await.unwrap();
    assert_eq!(
        person.pin_prompts(),
        vec![
            KeyPrompt::Pin {
                retries: Some(8),
                wrong: false
            },
            KeyPrompt::Pin {
                retries: Some(7),
                wrong: true
            },
            KeyPrompt::Pin {
                retries: Some(6),
                wrong: true
            },
        ]
    );
    // The right PIN resets the counter on the key.
    let person = Person::typing(&[Some("4321")]);
    let mut key = key_for(&transport, person.clone());
    c.sign_in(&mut key, Some("ada"), None).await.unwrap();
    assert_eq!(
        person.pin_prompts(),
        vec![KeyPrompt::Pin {
            retries: Some(8),
            wrong: false
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_pins_in_a_row_pause_the_key_until_it_is_reinserted() {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let transport = key_with_pin("4321").await;
    let mut key = key_for(&transport, Person::typing(&[Some("4321")]));
    c.create_account(&mut key, "ada", None, None).await.unwrap();

    let wrong = Person::typing(&[Some("0000"), Some("0001"), Some("0002"), Some("0003")]);
    let mut key = key_for(&transport, wrong);
    let err = key_error(c.sign_in(&mut key, Some("ada"), None).await.unwrap_err());
    assert!(matches!(err, AuthenticatorError::PinPaused), "{err}");
    assert_eq!(err.code(), "pin_paused");
    assert!(
        err.to_string().contains("remove the key, insert it again"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_at_the_pin_prompt_signs_nobody_in() {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let transport = key_with_pin("4321").await;
    let mut key = key_for(&transport, Person::typing(&[Some("4321")]));
    let me = c.create_account(&mut key, "ada", None, None).await.unwrap();
    let session = c.api.with_token(&me.token);
    let before = session.sessions().await.unwrap().len();

    let person = Person::typing(&[None]);
    let mut key = key_for(&transport, person.clone());
    let err = key_error(c.sign_in(&mut key, None, None).await.unwrap_err());
    assert!(matches!(err, AuthenticatorError::Cancelled), "{err}");
    assert_eq!(person.saw().last(), Some(&KeyPrompt::Finished));
    assert_eq!(session.sessions().await.unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hardware_errors_a_person_meets_are_named() {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let transport = key_with_pin("4321").await;
    let mut key = key_for(&transport, Person::typing(&[Some("4321")]));
    c.create_account(&mut key, "ada", None, None).await.unwrap();

    // Another key, never registered.
    let other = key_with_pin("9999").await;
    let mut key = key_for(&other, Person::typing(&[Some("9999")]));
    let err = key_error(c.sign_in(&mut key, Some("ada"), None).await.unwrap_err());
    assert!(matches!(err, AuthenticatorError::NotRegistered), "{err}");

    // The same key again as a "second" key for the account.
    let person = Person::typing(&[Some("4321"), Some("4321")]);
    let me = {
        let mut key = key_for(&transport, person.clone());
        c.sign_in(&mut key, Some("ada"), None).await.unwrap()
    };
    let mut session = c.api.with_token(&me.token);
    let mut key = key_for(&transport, person);
    let err = key_error(c.add_key(&mut session, &mut key, None).await.unwrap_err());
    assert!(
        matches!(err, AuthenticatorError::AlreadyRegistered),
        "{err}"
    );

    // No key plugged in or tapped.
    transport.set_present(false);
    let mut key = key_for(&transport, Person::typing(&[]));
    let err = key_error(c.sign_in(&mut key, Some("ada"), None).await.unwrap_err());
    assert!(matches!(err, AuthenticatorError::NoKey), "{err}");
    transport.set_present(true);

    // Plugged in, never touched.
    transport.key().set_touch(false);
    let mut key = key_for(&transport, Person::typing(&[Some("4321")]));
    let err = key_error(c.sign_in(&mut key, Some("ada"), None).await.unwrap_err());
    assert!(matches!(err, AuthenticatorError::NotTouched), "{err}");
    transport.key().set_touch(true);

    // A factory-fresh key has no PIN, and Keyward requires user verification.
    let fresh = VirtTransport::new(FidoVirt::start());
    let mut key = key_for(&fresh, Person::typing(&[]));
    let err = key_error(
        c.create_account(&mut key, "grace", None, None)
            .await
            .unwrap_err(),
    );
    assert!(matches!(err, AuthenticatorError::PinNotSet), "{err}");
}

/// Key management, as Yubico Authenticator does it, against the authenticator we did not
/// write: info, PIN set and change, the passkeys on the key, delete one, factory reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_itself_is_managed_info_pin_passkeys_and_reset() {
    let server = Server::start().await;
    let c = server.ceremonies("desktop");
    let transport = VirtTransport::new(FidoVirt::start());
    let admin = key_for(&transport, Person::typing(&[]));

    let info = admin.info().unwrap();
    assert!(!info.pin_set);
    assert_eq!(info.pin_retries, None);
    assert!(info.credential_management);
    assert!(info.versions.iter().any(|v| v == "FIDO_2_1"), "{info:?}");
    assert!(info.transports.iter().any(|t| t == "nfc"), "{info:?}");

    admin.set_pin("4321").unwrap();
    let info = admin.info().unwrap();
    assert!(info.pin_set);
    assert_eq!(info.pin_retries, Some(8));

    // A wrong current PIN is refused once (not asked again: the person did not type it at a
    // prompt of ours), and the key counts it.
    let err = admin.change_pin("0000", "5678").unwrap_err();
    assert!(matches!(err, AuthenticatorError::WrongPin { .. }), "{err}");
    assert_eq!(admin.info().unwrap().pin_retries, Some(7));
    admin.change_pin("4321", "5678").unwrap();
    assert_eq!(admin.info().unwrap().pin_retries, Some(8));

    // Register with Keyward: the passkey shows up on the key, with the room left.
    let mut key = key_for(&transport, Person::typing(&[Some("5678")]));
    let me = c.create_account(&mut key, "ada", None, None).await.unwrap();
    let on_key = key_for(&transport, Person::typing(&[Some("5678")]))
        .passkeys()
        .unwrap();
    assert_eq!(on_key.passkeys.len(), 1);
    let passkey = &on_key.passkeys[0];
    assert_eq!(passkey.rp_id, "localhost");
    assert_eq!(passkey.user_name.as_deref(), Some("ada"));
    assert_eq!(
        passkey.user_handle,
        keyward_core::secret::b64(me.account.id.as_bytes())
    );
    assert_eq!(on_key.free_slots, 9);

    // Delete it from the key: the key can no longer sign in, with or without a username.
    let id = keyward_core::secret::unb64(&passkey.credential_id).unwrap();
    // One PIN entry deletes and lists what remains.
    let remaining = key_for(&transport, Person::typing(&[Some("5678")]))
        .delete_passkey(&id)
        .unwrap();
    assert!(remaining.passkeys.is_empty());
    assert_eq!(remaining.free_slots, 10);
    let on_key = key_for(&transport, Person::typing(&[Some("5678")]))
        .passkeys()
        .unwrap();
    assert!(on_key.passkeys.is_empty());
    let mut key = key_for(&transport, Person::typing(&[Some("5678")]));
    let err = key_error(c.sign_in(&mut key, None, None).await.unwrap_err());
    assert!(matches!(err, AuthenticatorError::NotRegistered), "{err}");

    // Factory reset: no PIN, nothing stored.
    admin.factory_reset().unwrap();
    let info = admin.info().unwrap();
    assert!(!info.pin_set);
}
