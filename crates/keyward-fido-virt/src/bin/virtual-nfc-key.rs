//! `virtual-nfc-key [--pin PIN]`: holds a virtual FIDO2 card (Nitrokey's fido-authenticator)
//! to vsmartcard's vpcd reader under pcscd until killed, and again whenever pcscd comes back.
//! For end-to-end tests of apps that look for NFC keys through PC/SC, such as the Keyward
//! desktop app.

use std::process::ExitCode;

use keyward_fido_virt::{FidoVirt, NoUser, VirtTransport, vpcd};
use webauthn_authenticator_rs::ctap2::CtapAuthenticator;
use webauthn_authenticator_rs::transport::Transport;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let pin = args
        .iter()
        .position(|a| a == "--pin")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let key = FidoVirt::start();
    if let Some(pin) = pin {
        let set = async {
            let transport = VirtTransport::new(key.clone());
            let token = transport.tokens().await.ok()?.pop()?;
            let mut authenticator = CtapAuthenticator::new(token, &NoUser).await?;
            authenticator.set_new_pin(&pin).await.ok()
        };
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("virtual-nfc-key: {e}");
                return ExitCode::FAILURE;
            }
        };
        if runtime.block_on(set).is_none() {
            eprintln!("virtual-nfc-key: could not set the PIN");
            return ExitCode::FAILURE;
        }
    }
    eprintln!("virtual-nfc-key: on the reader");
    vpcd::hold(key, vpcd::default_address())
}
