//! Property tests (fuzzing on stable) of the parsers keyward-core applies to outside input:
//! base64url (credential IDs, keys, signatures from clients) and the recovery-key text a person
//! types. Each must return a clear error, never panic. The committed corpus in `tests/corpus/`
//! is replayed first; proptest's own regressions land in `proptest-regressions/`. Cases per
//! property: `PROPTEST_CASES` (CI sets it so the whole fuzz run takes about a minute).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Named `fuzz` so `cargo test fuzz` picks these out.
mod fuzz {
    use keyward_core::recovery_key::RecoveryKey;
    use keyward_core::secret::{b64, unb64};
    use proptest::prelude::*;

    fn corpus(name: &str) -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus")
            .join(name);
        let mut seeds: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|f| {
                let path = f.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                (
                    name,
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string(),
                )
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no corpus in {}", dir.display());
        seeds
    }

    #[test]
    fn the_recovery_key_corpus_parses_or_is_refused_as_named() {
        for (name, text) in corpus("recovery_key") {
            let parsed = RecoveryKey::parse(&text);
            if name.starts_with("bad-") {
                assert!(parsed.is_err(), "{name} must be refused");
            } else {
                assert!(parsed.is_ok(), "{name} must parse");
            }
        }
        // A real key round-trips, in any case and spacing a person might type it.
        let key = RecoveryKey::from_random([7; 16]);
        let shown = key.to_display();
        for typed in [shown.clone(), shown.to_lowercase(), shown.replace('-', " ")] {
            assert_eq!(RecoveryKey::parse(&typed).unwrap().to_display(), shown);
        }
    }

    #[test]
    fn the_base64url_corpus_never_panics() {
        for (name, text) in corpus("base64url") {
            // Padding is tolerated (clients differ); whatever decodes re-encodes to the same bytes.
            if let Some(bytes) = unb64(&text) {
                assert_eq!(unb64(&b64(&bytes)), Some(bytes), "{name}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_text_as_a_recovery_key_parses_or_is_refused(text in "\\PC{0,80}") {
            let _ = RecoveryKey::parse(&text);
        }

        #[test]
        fn near_miss_recovery_keys_are_refused_or_round_trip(
            random in any::<[u8; 16]>(), at in 0usize..39, c in any::<char>()
        ) {
            let shown = RecoveryKey::from_random(random).to_display();
            let mut typed: Vec<char> = shown.chars().collect();
            typed[at] = c;
            let typed: String = typed.into_iter().collect();
            if let Ok(key) = RecoveryKey::parse(&typed) {
                // Only a change the format ignores (case, a dash, a look-alike) may still parse,
                // and then it is the same key: the checksum catches every other typo.
                prop_assert_eq!(key.to_display(), shown);
            }
        }

        #[test]
        fn any_text_as_base64url_decodes_or_is_refused(text in "\\PC{0,64}") {
            let _ = unb64(&text);
        }

        #[test]
        fn any_bytes_round_trip_through_base64url(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            prop_assert_eq!(unb64(&b64(&bytes)), Some(bytes));
        }
    }
}
