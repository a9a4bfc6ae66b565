//! The contactless card around the FIDO applet: what a reader sees of an NFC security key.
//!
//! ISO 7816-4 as CTAP 2.1 §11.3 uses it: SELECT of the FIDO AID, NFCCTAP_MSG carrying CTAP2
//! CBOR, command chaining (CLA bit 0x10) for requests longer than one short APDU, and
//! response chaining (SW 61xx, then GET RESPONSE) for answers longer than 256 bytes.

use apdu_app::Interface;
use iso7816::Status;
use iso7816::command::CommandView;

use crate::FidoVirt;

/// The FIDO applet's application identifier.
pub const FIDO_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];

/// Answer-to-reset of an ISO 14443-4 (type A) contactless card as a PC/SC reader reports it
/// (PC/SC part 3 §3.1.3.2.3): `3B 8D 80 01`, then the historical bytes as compact TLV
/// (card capabilities `73 C0 21 C0`: command chaining and extended Lc/Le supported, then
/// the card's name "Keyward"), then the check byte. A YubiKey 5 NFC reports the same shape.
pub const ATR: [u8; 18] = [
    0x3B, 0x8D, 0x80, 0x01, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x4B, 0x65, 0x79, 0x77, 0x61, 0x72,
    0x64, 0xDE,
];

const INS_SELECT: u8 = 0xA4;
const INS_GET_RESPONSE: u8 = 0xC0;
const CLA_CHAINING: u8 = 0x10;
const SHORT_RESPONSE: usize = 256;
/// The most data one extended APDU to the applet can carry, so the most a chain may collect.
const MAX_COMMAND: usize = u16::MAX as usize;

/// One card in the field. `reset` is what removing it and tapping again does.
pub struct Card {
    key: FidoVirt,
    selected: bool,
    /// Data of a chained command so far, with the header of its first part.
    chained: Option<(Vec<u8>, Vec<u8>)>,
    /// Response bytes still to be fetched with GET RESPONSE.
    pending: Vec<u8>,
}

impl Card {
    pub fn new(key: FidoVirt) -> Card {
        Card {
            key,
            selected: false,
            chained: None,
            pending: Vec::new(),
        }
    }

    pub fn reset(&mut self) {
        self.selected = false;
        self.chained = None;
        self.pending.clear();
    }

    /// One APDU from the reader; the response data and status word back.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        match self.handle(apdu) {
            Ok(response) => response,
            Err(status) => status_word(status).to_vec(),
        }
    }

    fn handle(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Status> {
        let parsed = Apdu::parse(apdu).ok_or(Status::WrongLength)?;
        if parsed.ins == INS_GET_RESPONSE {
            return Ok(self.next_chunk());
        }
        self.pending.clear();
        if parsed.ins == INS_SELECT && parsed.p1 == 0x04 {
            self.chained = None;
            self.selected = parsed.data == FIDO_AID;
            if !self.selected {
                return Err(Status::NotFound);
            }
            let select = extended_apdu(0x00, INS_SELECT, 0x04, 0x00, &FIDO_AID);
            let response = self
                .key
                .applet_apdu(&select)
                .map_err(|_| Status::UnspecifiedNonpersistentExecutionError)?;
            return Ok(response);
        }
        if !self.selected {
            return Err(Status::ConditionsOfUseNotSatisfied);
        }
        if parsed.cla & CLA_CHAINING != 0 {
            let (_, data) = self.chained.get_or_insert_with(|| {
                (
                    vec![parsed.cla & !CLA_CHAINING, parsed.ins, parsed.p1, parsed.p2],
                    Vec::new(),
                )
            });
            if data.len() + parsed.data.len() > MAX_COMMAND {
                self.chained = None;
                return Err(Status::WrongLength);
            }
            data.extend_from_slice(parsed.data);
            return Ok(status_word(Status::Success).to_vec());
        }
        let (cla, ins, p1, p2, data) = match self.chained.take() {
            Some((header, mut data)) => {
                if data.len() + parsed.data.len() > MAX_COMMAND {
                    return Err(Status::WrongLength);
                }
                data.extend_from_slice(parsed.data);
                (header[0], header[1], header[2], header[3], data)
            }
            None => (
                parsed.cla,
                parsed.ins,
                parsed.p1,
                parsed.p2,
                parsed.data.to_vec(),
            ),
        };
        let whole = extended_apdu(cla, ins, p1, p2, &data);
        let mut response = self
            .key
            .applet_apdu(&whole)
            .map_err(|_| Status::UnspecifiedNonpersistentExecutionError)?;
        let sw = response.split_off(response.len().saturating_sub(2));
        if sw != [0x90, 0x00] {
            return Ok(sw);
        }
        self.pending = response;
        Ok(self.next_chunk())
    }

    /// Up to 256 bytes of the pending response, with 61xx while more remains.
    fn next_chunk(&mut self) -> Vec<u8> {
        let take = self.pending.len().min(SHORT_RESPONSE);
        let mut chunk: Vec<u8> = self.pending.drain(..take).collect();
        let left = self.pending.len();
        if left == 0 {
            chunk.extend_from_slice(&[0x90, 0x00]);
        } else {
            chunk.extend_from_slice(&[0x61, left.min(0xFF) as u8]);
        }
        chunk
    }
}

/// Runs one whole (unchained) APDU through an ISO 7816 applet, as a card OS would.
pub(crate) fn call_applet<A: apdu_app::App>(applet: &mut A, apdu: &[u8]) -> Vec<u8> {
    let Ok(command) = CommandView::try_from(apdu) else {
        return status_word(Status::WrongLength).to_vec();
    };
    let mut reply = heapless::Vec::<u8, 7609>::new();
    let outcome = if u8::from(command.instruction()) == INS_SELECT {
        applet.select(Interface::Contactless, command, &mut reply)
    } else {
        applet.call(Interface::Contactless, command, &mut reply)
    };
    let mut out = reply.to_vec();
    match outcome {
        Ok(()) => out.extend_from_slice(&status_word(Status::Success)),
        Err(status) => {
            out.clear();
            out.extend_from_slice(&status_word(status));
        }
    }
    out
}

fn status_word(status: Status) -> [u8; 2] {
    status.into()
}

/// An extended-length APDU (case 3E, or case 1 without data) carrying `data`.
fn extended_apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let mut apdu = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        let len = data.len() as u16;
        apdu.push(0);
        apdu.extend_from_slice(&len.to_be_bytes());
        apdu.extend_from_slice(data);
    }
    // Le = 0 (extended): up to 65,536 bytes back.
    if data.is_empty() {
        apdu.extend_from_slice(&[0, 0, 0]);
    } else {
        apdu.extend_from_slice(&[0, 0]);
    }
    apdu
}

/// The parts of a command APDU the card layer needs (short or extended length).
struct Apdu<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
}

impl<'a> Apdu<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Apdu<'a>> {
        let (&[cla, ins, p1, p2], body) = bytes.split_first_chunk::<4>()?;
        let data = match body.len() {
            // Case 1, or case 2 with a short Le.
            0 | 1 => &[][..],
            _ if body[0] != 0 => {
                let lc = body[0] as usize;
                // Case 3S (exactly Lc bytes) or 4S (plus one Le byte).
                if body.len() != 1 + lc && body.len() != 2 + lc {
                    return None;
                }
                &body[1..1 + lc]
            }
            // 00 and one byte: neither a short Lc (which is never 0) nor an extended length.
            2 => return None,
            // Case 2E: 00 Le1 Le2.
            3 => &[][..],
            _ => {
                let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
                // Case 3E (exactly Lc bytes, Lc 1 to 65,535) or 4E (plus two Le bytes).
                if lc == 0 || (body.len() != 3 + lc && body.len() != 5 + lc) {
                    return None;
                }
                &body[3..3 + lc]
            }
        };
        Some(Apdu {
            cla,
            ins,
            p1,
            p2,
            data,
        })
    }
}
