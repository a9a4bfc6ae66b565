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

/// The Debian package's /etc/keyward/keywardd.toml (packaging/keywardd/keywardd.toml): accepted
/// as shipped (with its paths pointed into a scratch folder, as flags win over the file), and
/// every setting it shows commented out is one keywardd reads, written as keywardd reads it.
#[test]
fn the_packaged_config_passes_and_its_commented_settings_are_real() {
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/keywardd/keywardd.toml"
    );
    let text = std::fs::read_to_string(shipped).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ui = dir.path().join("web-ui");
    std::fs::create_dir(&ui).unwrap();
    std::fs::write(ui.join("index.html"), "<!doctype html>").unwrap();
    let scratch = |name: &str| dir.path().join(name).display().to_string();
    let local = [
        "--db",
        &scratch("keyward.db"),
        "--log-key",
        &scratch("keyward.db.log-key"),
        "--web-ui",
        &scratch("web-ui"),
    ];
    let (code, out) = check(&[&["--config", shipped], &local[..]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("origins [\"http://localhost:8443\"]"), "{out}");
    for key in [
        "listen = \"127.0.0.1:8443\"",
        "db = \"/var/lib/keyward/",
        "log_key = \"/var/lib/keyward/",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(key)),
            "{key} in {shipped}"
        );
    }

    // Each `# key = value` line, uncommented in place of the key's live line, still parses.
    let setting = |line: &str| {
        let rest = line.strip_prefix("# ")?;
        let (key, _) = rest.split_once(" = ")?;
        key.chars()
            .all(|c| c.is_ascii_lowercase() || c == '_')
            .then(|| (key.to_string(), rest.to_string()))
    };
    let commented: Vec<_> = text.lines().filter_map(setting).collect();
    assert!(commented.len() >= 10, "{commented:?}");
    for (key, line) in commented {
        let mut file: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} = ")))
            .collect();
        file.push(&line);
        let path = dir.path().join("variant.toml");
        std::fs::write(&path, file.join("\n")).unwrap();
        let path = path.display().to_string();
        let (_, out) = check(&[&["--config", &path], &local[..]].concat());
        assert!(
            !out.contains("config file"),
            "`{line}` from {shipped} is not a setting keywardd reads: {out}"
        );
    }
}
