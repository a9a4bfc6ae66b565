//! Property tests (fuzzing on stable) of the contactless card's ISO 7816-4 layer: what a reader
//! (or anything pretending to be one) sends it. Arbitrary bytes and arbitrary sequences of
//! APDUs, well-formed or not, chained or not, short or extended, must each get a response
//! ending in a status word, a malformed one an error status word, and never a panic; the card
//! must still answer a SELECT afterwards. The committed corpus in `tests/corpus/apdu/` (real
//! APDUs with the status word each must get) is replayed first; proptest's own regressions land
//! in `proptest-regressions/`. Cases: proptest's default, or `PROPTEST_CASES`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Named `fuzz` so `cargo test fuzz` picks these out.
mod fuzz {
    use std::sync::{LazyLock, Mutex, MutexGuard};

    use keyward_fido_virt::FidoVirt;
    use keyward_fido_virt::card::{Card, FIDO_AID};
    use proptest::prelude::*;

    const SW_OK: [u8; 2] = [0x90, 0x00];
    const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];

    /// One card for every case: starting a key per case would dominate the run, and a card
    /// that has seen all the earlier cases must still work, which is part of the property.
    static CARD: LazyLock<Mutex<Card>> = LazyLock::new(|| Mutex::new(Card::new(FidoVirt::start())));

    fn card() -> MutexGuard<'static, Card> {
        // A failed case poisons the lock; the next case still gets the card.
        let mut card = CARD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        card.reset();
        card
    }

    fn select() -> Vec<u8> {
        let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, FIDO_AID.len() as u8];
        apdu.extend_from_slice(&FIDO_AID);
        apdu.push(0x00);
        apdu
    }

    fn sw(response: &[u8]) -> [u8; 2] {
        assert!(response.len() >= 2, "no status word: {response:02X?}");
        [response[response.len() - 2], response[response.len() - 1]]
    }

    /// The card still answers: SELECT of the FIDO AID gets the applet's version and 9000.
    fn still_usable(card: &mut Card) -> Result<(), TestCaseError> {
        let reply = card.transmit(&select());
        prop_assert_eq!(sw(&reply), SW_OK, "{:02X?}", reply);
        prop_assert_eq!(&reply[..reply.len() - 2], b"U2F_V2");
        Ok(())
    }

    fn hex(text: &str) -> Vec<u8> {
        assert!(text.len().is_multiple_of(2), "odd hex {text}");
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Each corpus file: `#` comments, then lines of `<APDU hex> <status word>`, where `.` in the
    /// status word matches any hex digit. They run in order on a freshly reset card.
    #[test]
    fn the_apdu_corpus_gets_the_status_words_it_names() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/apdu");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 10, "corpus in {}", dir.display());
        let mut card = card();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            card.reset();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                let (apdu, want) = line.split_once(' ').unwrap();
                let reply = card.transmit(&hex(apdu));
                let got = format!("{:02X}{:02X}", sw(&reply)[0], sw(&reply)[1]);
                assert!(
                    want.len() == 4
                        && want
                            .chars()
                            .zip(got.chars())
                            .all(|(w, g)| w == '.' || w == g),
                    "{name}: {apdu} answered {got}, want {want}"
                );
            }
            still_usable(&mut card).unwrap();
        }
    }

    /// Found by the fuzzing: a body of 00 and one more byte took the extended-length path and
    /// read Lc past the end of the APDU (index out of bounds, a panic in the card's thread).
    #[test]
    fn a_two_byte_body_starting_00_is_refused_not_read_past_the_end() {
        let mut card = card();
        for apdu in [
            [0x00, 0xA4, 0x04, 0x00, 0x00, 0x00],
            [0x80, 0x10, 0x00, 0x00, 0x00, 0x04],
        ] {
            assert_eq!(card.transmit(&apdu), SW_WRONG_LENGTH);
        }
        still_usable(&mut card).unwrap();
    }

    #[test]
    fn a_chained_command_longer_than_an_extended_apdu_is_refused_and_forgotten() {
        let mut card = card();
        still_usable(&mut card).unwrap();
        // 300 chained parts of 255 bytes: more than the 65,535 bytes an extended Lc can carry.
        let mut part = vec![0x90, 0x10, 0x00, 0x00, 0xFF];
        part.extend_from_slice(&[0xA0; 255]);
        let refused = (0..300)
            .map(|_| sw(&card.transmit(&part)))
            .position(|sw| sw != SW_OK)
            .expect("the chain is cut off");
        assert!(refused * 255 <= usize::from(u16::MAX));
        assert_eq!(sw(&card.transmit(&part)), SW_OK, "a new chain starts");
        still_usable(&mut card).unwrap();
    }

    /// Whether ISO 7816-4 allows these bytes as a command APDU: a header, then nothing (case 1),
    /// a short Le (2S), an extended Le (2E), or a non-zero Lc with exactly that much data and
    /// maybe an Le of the same kind (3S, 4S, 3E, 4E).
    fn well_formed(apdu: &[u8]) -> bool {
        let Some(body) = apdu.get(4..) else {
            return false;
        };
        match body {
            [] | [_] | [0, _, _] => true,
            [0, hi, lo, rest @ ..] => {
                let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
                lc > 0 && (rest.len() == lc || rest.len() == lc + 2)
            }
            [0, ..] => false,
            [lc, rest @ ..] => rest.len() == usize::from(*lc) || rest.len() == usize::from(*lc) + 1,
        }
    }

    /// The length fields of a command APDU as a reader might build them, right or wrong.
    #[derive(Debug, Clone)]
    enum Lengths {
        /// Nothing after the header (case 1).
        None,
        /// Short Le (case 2S).
        ShortLe(u8),
        /// Short Lc, the data (at most 255 bytes), maybe a short Le (cases 3S, 4S).
        Short(Option<u8>),
        /// Extended Le only (case 2E).
        ExtendedLe(u16),
        /// Extended Lc, the data, maybe an extended Le (cases 3E, 4E).
        Extended(Option<u16>),
        /// An Lc that need not match the data that follows, then maybe more bytes.
        AnyLc {
            extended: bool,
            lc: u16,
            trailer: Vec<u8>,
        },
    }

    fn lengths() -> impl Strategy<Value = Lengths> {
        prop_oneof![
            Just(Lengths::None),
            any::<u8>().prop_map(Lengths::ShortLe),
            any::<Option<u8>>().prop_map(Lengths::Short),
            any::<u16>().prop_map(Lengths::ExtendedLe),
            any::<Option<u16>>().prop_map(Lengths::Extended),
            (
                any::<bool>(),
                prop_oneof![0u16..8, any::<u16>()],
                prop::collection::vec(any::<u8>(), 0..3)
            )
                .prop_map(|(extended, lc, trailer)| Lengths::AnyLc {
                    extended,
                    lc,
                    trailer
                }),
        ]
    }

    /// One APDU: the class byte with and without the chaining bit, the instructions the card
    /// and the applet know (SELECT, NFCCTAP_MSG, GET RESPONSE, U2F) and any other, any data.
    fn apdu() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![
                Just(0x00u8),
                Just(0x80),
                Just(0x10),
                Just(0x90),
                any::<u8>()
            ],
            prop_oneof![
                Just(0xA4u8),
                Just(0x10),
                Just(0xC0),
                Just(0x01),
                Just(0x02),
                any::<u8>()
            ],
            prop_oneof![Just(0x04u8), Just(0x00), any::<u8>()],
            prop_oneof![Just(0x00u8), any::<u8>()],
            lengths(),
            prop_oneof![
                Just(FIDO_AID.to_vec()),
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 0..600),
            ],
        )
            .prop_map(|(cla, ins, p1, p2, lengths, data)| {
                let mut apdu = vec![cla, ins, p1, p2];
                let short = &data[..data.len().min(255)];
                match lengths {
                    Lengths::None => {}
                    Lengths::ShortLe(le) => apdu.push(le),
                    Lengths::Short(le) => {
                        apdu.push(short.len() as u8);
                        apdu.extend_from_slice(short);
                        apdu.extend(le);
                    }
                    Lengths::ExtendedLe(le) => {
                        apdu.push(0);
                        apdu.extend_from_slice(&le.to_be_bytes());
                    }
                    Lengths::Extended(le) => {
                        apdu.push(0);
                        apdu.extend_from_slice(&(data.len() as u16).to_be_bytes());
                        apdu.extend_from_slice(&data);
                        apdu.extend(le.map(u16::to_be_bytes).into_iter().flatten());
                    }
                    Lengths::AnyLc {
                        extended,
                        lc,
                        trailer,
                    } => {
                        if extended {
                            apdu.push(0);
                            apdu.extend_from_slice(&lc.to_be_bytes());
                            apdu.extend_from_slice(&data);
                        } else {
                            apdu.push(lc as u8);
                            apdu.extend_from_slice(short);
                        }
                        apdu.extend_from_slice(&trailer);
                    }
                }
                apdu
            })
    }

    /// Sends `apdus`, each of which must get a status word, and 6700 if it is malformed.
    fn send_all(card: &mut Card, apdus: &[Vec<u8>]) -> Result<(), TestCaseError> {
        for apdu in apdus {
            let reply = card.transmit(apdu);
            let sw = sw(&reply);
            if !well_formed(apdu) {
                prop_assert_eq!(sw, SW_WRONG_LENGTH, "{:02X?}", apdu);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_get_a_status_word_and_leave_the_card_usable(
            apdus in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8)
        ) {
            let mut card = card();
            send_all(&mut card, &apdus)?;
            still_usable(&mut card)?;
        }

        #[test]
        fn arbitrary_apdu_sequences_get_status_words_and_leave_the_card_usable(
            apdus in prop::collection::vec(apdu(), 1..10), selected in any::<bool>()
        ) {
            let mut card = card();
            if selected {
                still_usable(&mut card)?;
            }
            send_all(&mut card, &apdus)?;
            still_usable(&mut card)?;
        }
    }
}
