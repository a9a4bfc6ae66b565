//! The virtual key as a contactless card behind a real PC/SC stack: connects to vsmartcard's
//! `vpcd` reader driver (loaded by `pcscd`), which shows it to every PC/SC client, including
//! webauthn-authenticator-rs's NFC transport, as a card in a reader.
//!
//! The vpcd wire protocol: each message is a 2-byte big-endian length and a payload. A
//! 1-byte payload is a control code (power off, power on, reset, ask for the ATR); anything
//! longer is a command APDU, answered with the response APDU.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::FidoVirt;
use crate::card::{ATR, Card};

/// Where vpcd listens by default (`/etc/reader.conf.d/vpcd`).
pub const DEFAULT_PORT: u16 = 0x8C7B;

const POWER_OFF: u8 = 0x00;
const POWER_ON: u8 = 0x01;
const RESET: u8 = 0x02;
const GET_ATR: u8 = 0x04;

/// Keeps the card on the reader for as long as the process lives: serves it, and whenever vpcd
/// is not listening or hangs up (pcscd restarted, or a socket-activated pcscd quit while idle,
/// as Debian's does a minute after its last client), connects again once it is back. The key's
/// state (credentials, PIN, counters) carries over: only the card's session is new.
pub fn hold(key: FidoVirt, vpcd: SocketAddr) -> ! {
    let mut said = None;
    loop {
        if let Err(e) = serve(key.clone(), vpcd) {
            // Said once per kind of failure: a reader that is away for a while is not news
            // every tenth of a second.
            if said != Some(e.kind()) {
                eprintln!("virtual card: vpcd at {vpcd}: {e}; trying again");
                said = Some(e.kind());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The address vpcd listens on by default, on loopback.
pub fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
}

/// Connects to vpcd and serves the card until vpcd hangs up.
pub fn serve(key: FidoVirt, vpcd: impl ToSocketAddrs) -> io::Result<()> {
    let mut stream = TcpStream::connect(vpcd)?;
    stream.set_nodelay(true)?;
    let mut card = Card::new(key);
    loop {
        let mut len = [0u8; 2];
        if let Err(e) = stream.read_exact(&mut len) {
            return if e.kind() == io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(e)
            };
        }
        let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut message)?;
        let reply = match message.as_slice() {
            [POWER_OFF] | [POWER_ON] | [RESET] => {
                card.reset();
                continue;
            }
            [GET_ATR] => ATR.to_vec(),
            [_] => continue,
            apdu => card.transmit(apdu),
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        stream.write_all(&framed)?;
    }
}
