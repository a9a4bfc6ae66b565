//! `keywardd check-config` (issue 15): reads what a start would read, changes nothing, and
//! names what is wrong.

use crate::harness::keywardd_tool;

fn check(args: &[&str]) -> (i32, String) {
    keywardd_tool(args.iter().chain(&["check-config"]))
}

const SITE: &[&str] = &["--rp-id", "localhost", "--origin", "http://localhost:8443"];

#[test]
fn a_fine_configuration_passes_and_nothing_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.db");
    let db_arg = db.display().to_string();
    let (code, text) = check(&[&["--db", &db_arg], SITE].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("made at the first start"), "{text}");
    assert!(text.contains("the configuration is fine"), "{text}");
    assert!(!db.exists(), "checking made the database");
    assert!(!dir.path().join("keyward.db.log-key").exists());
}

#[test]
fn each_problem_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.db").display().to_string();
    // TLS files that are not there.
    let (code, text) = check(
        &[
            &[
                "--db",
                &db,
                "--tls-cert",
                "/no/such/cert.pem",
                "--tls-key",
                "/no/such/key.pem",
            ],
            SITE,
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("problem: TLS certificate") && text.contains("/no/such/cert.pem"),
        "{text}"
    );

    // A log key others may read.
    let key = dir.path().join("log-key");
    std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let key_arg = key.display().to_string();
    let (code, text) = check(&[&["--db", &db, "--log-key", &key_arg], SITE].concat());
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("problem: log key") && text.contains("chmod 600"),
        "{text}"
    );

    // A database folder that does not exist.
    let (code, text) = check(&[&["--db", "/no/such/folder/keyward.db"], SITE].concat());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("/no/such/folder"), "{text}");

    // A PostgreSQL server that does not answer (port 1 on loopback).
    let (code, text) = check(
        &[
            &[
                "--db",
                "postgres://keyward@127.0.0.1:1/keyward",
                "--log-key",
                &key_arg,
            ],
            SITE,
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("problem: PostgreSQL at"), "{text}");

    // Settings that cannot work are refused before anything is read.
    let (code, text) = check(&[
        "--db",
        &db,
        "--rp-id",
        "https://bad",
        "--origin",
        "http://localhost:8443",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("RP ID"), "{text}");
}
