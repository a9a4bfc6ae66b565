//! NFC through the real PC/SC stack: pcscd with vsmartcard's vpcd reader driver, and a
//! virtual contactless card (Nitrokey's fido-authenticator behind keyward-fido-virt's ISO
//! 7816-4 layer) connected to it. The desktop's own `SecurityKey::usb_or_nfc` finds the card
//! exactly as it would find a YubiKey 5 NFC on a reader.

use std::time::Duration;

use keyward_client::*;
use keyward_fido_virt::vpcd;
use keyward_proto::*;

use crate::Server;
use crate::security_key::{Person, key_with_pin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pcscd with vsmartcard's vpcd driver; `./dev test` starts them and runs this"]
async fn register_and_sign_in_over_nfc_with_a_pin_through_pcscd() {
    let server = Server::start().await;
    let c = server.ceremonies("Keyward desktop");

    // No card yet: the wait ends promptly on Cancel (the NFC watcher blocks in pcscd until a
    // card arrives; the ceremony must not wait for it).
    let cancel = CancelSwitch::default();
    let mut waiting = SecurityKey::usb_or_nfc(Person::typing(&[]), cancel.clone());
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let err = c
        .sign_in(&mut waiting, Some("nobody"), None)
        .await
        .unwrap_err();
    canceller.join().unwrap();
    assert!(
        matches!(
            err,
            ClientError::Authenticator(AuthenticatorError::Cancelled)
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let transport = key_with_pin("4321").await;
    let key = transport.key().clone();
    let card = key.clone();
    // Hold the card to the reader.
    std::thread::spawn(move || vpcd::hold(card, vpcd::default_address()));

    let before = key.messages_handled();

    let person = Person::typing(&[Some("4321")]);
    let mut nfc = SecurityKey::usb_or_nfc(person.clone(), CancelSwitch::default());
    nfc.wait_for_key = Duration::from_secs(20);
    let me = c
        .create_account(&mut nfc, "ada", None, Some("NFC key"))
        .await
        .unwrap();
    assert!(
        person.saw().contains(&KeyPrompt::Pin {
            retries: Some(8),
            wrong: false
        }),
        "{:?}",
        person.saw()
    );

    // Usernameless sign-in over NFC, with a wrong PIN first.
    let person = Person::typing(&[Some("0000"), Some("4321")]);
    let mut nfc = SecurityKey::usb_or_nfc(person.clone(), CancelSwitch::default());
    nfc.wait_for_key = Duration::from_secs(20);
    let again = c.sign_in(&mut nfc, None, None).await.unwrap();
    assert_eq!(again.account.username, "ada");
    assert!(person.saw().contains(&KeyPrompt::Pin {
        retries: Some(7),
        wrong: true
    }));

    let keys = c.api.with_token(&me.token).authenticators().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(
        key.messages_handled() - before > 10,
        "the APDUs went through pcscd to the card"
    );
}
