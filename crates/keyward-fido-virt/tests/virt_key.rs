//! The virtual key answers the library's CTAP2 code and a reader's APDUs.

use keyward_fido_virt::card::{Card, FIDO_AID};
use keyward_fido_virt::{FidoVirt, NoUser, VirtTransport};
use webauthn_authenticator_rs::ctap2::CtapAuthenticator;
use webauthn_authenticator_rs::transport::Transport;

#[tokio::test]
async fn the_library_sees_a_ctap_2_1_key_with_pin_support_and_credential_management() {
    let transport = VirtTransport::new(FidoVirt::start());
    let token = transport.tokens().await.unwrap().remove(0);
    let ui = NoUser;
    let key = CtapAuthenticator::new(token, &ui)
        .await
        .expect("a CTAP2 key");
    assert!(matches!(key, CtapAuthenticator::Fido21(_)));
    assert!(
        key.get_info().versions.contains("FIDO_2_1"),
        "{:?}",
        key.get_info().versions
    );
    assert_eq!(
        key.get_info()
            .options
            .as_ref()
            .and_then(|o| o.get("clientPin")),
        Some(&false)
    );
    assert!(key.supports_credential_management());
    assert!(transport.key().messages_handled() >= 1);
}

#[test]
fn a_reader_selects_the_applet_and_chains_commands_and_responses() {
    let mut card = Card::new(FidoVirt::start());

    // Before SELECT the applet is not reachable.
    assert_eq!(
        card.transmit(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04]),
        [0x69, 0x85]
    );

    let mut select = vec![0x00, 0xA4, 0x04, 0x00, FIDO_AID.len() as u8];
    select.extend_from_slice(&FIDO_AID);
    select.push(0x00);
    let reply = card.transmit(&select);
    assert_eq!(&reply[reply.len() - 2..], [0x90, 0x00]);
    assert_eq!(&reply[..reply.len() - 2], b"U2F_V2");

    // An unknown AID is "not found".
    assert_eq!(
        card.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x02, 0xD2, 0x76, 0x00]),
        [0x6A, 0x82]
    );
    card.transmit(&select);

    // getInfo (0x04) sent as two chained parts: 10 80 … then 80 ….
    assert_eq!(card.transmit(&[0x90, 0x10, 0x00, 0x00]), [0x90, 0x00]);
    let first = card.transmit(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00]);
    let mut info = first[..first.len() - 2].to_vec();
    let mut sw = first[first.len() - 2..].to_vec();
    let mut fetches = 0;
    while sw[0] == 0x61 {
        let next = card.transmit(&[0x00, 0xC0, 0x00, 0x00, sw[1]]);
        info.extend_from_slice(&next[..next.len() - 2]);
        sw = next[next.len() - 2..].to_vec();
        fetches += 1;
    }
    assert_eq!(sw, [0x90, 0x00]);
    assert!(
        fetches >= 1,
        "getInfo is longer than 256 bytes, so it must come in parts"
    );
    assert_eq!(info[0], 0x00, "CTAP2 status OK");
    let text = String::from_utf8_lossy(&info);
    assert!(text.contains("FIDO_2_1") && text.contains("nfc"), "{text}");
}
