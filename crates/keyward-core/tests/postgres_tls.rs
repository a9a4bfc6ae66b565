//! TLS to a real PostgreSQL: a throwaway cluster of this test's own with `ssl=on`, a CA and a
//! server certificate made here, and a `pg_hba.conf` that takes only TLS (`hostssl`, SCRAM).
//! Runs when `KEYWARD_TEST_POSTGRES` is set (`./dev test` sets it for the PostgreSQL pass);
//! the suite's own server is not used: this one needs TLS and its own certificates. The
//! binaries are PostgreSQL's `initdb` and `pg_ctl` (`KEYWARD_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin`), run as `postgres` when the test runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use keyward_core::store::{Account, Location, PostgresOptions, RemoteCommit, SslMode, Store};
use keyward_proto::AccountState;

const PASSWORD: &str = "correct horse battery staple";

/// A CA and a server certificate for `localhost` and 127.0.0.1 under it, and a second CA
/// that signed nothing here.
struct Certificates {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn make_certificates(dir: &Path) -> Certificates {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("Keyward test database CA");
    let (other_ca_pem, _) = ca("Some other CA");
    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();

    let certificates = Certificates {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    std::fs::write(&certificates.ca, ca_pem).unwrap();
    std::fs::write(&certificates.other_ca, other_ca_pem).unwrap();
    std::fs::write(&certificates.server_cert, server_cert.pem()).unwrap();
    std::fs::write(&certificates.server_key, server_key.serialize_pem()).unwrap();
    certificates
}

/// A running cluster; stopped, and its folder removed, when dropped (a failed assertion
/// included).
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Dropped after the server stops.
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program`, run as `postgres` if we are root (initdb and the server refuse root).
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn postgres_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEYWARD_PG_BIN") {
        return bin.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries: set KEYWARD_PG_BIN")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let version = path.file_name()?.to_str()?.parse().ok()?;
            Some((version, path.join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb")
        .1
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// initdb with a password for `keyward`, TLS on with `certificates`, and TCP connections
/// accepted only over TLS with SCRAM.
fn start_cluster() -> (Cluster, Certificates) {
    let bin = postgres_bin();
    let dir = tempfile::tempdir().unwrap();
    let root = running_as_root();
    if root {
        run(Command::new("chown").arg("postgres").arg(dir.path()));
    }
    let data = dir.path().join("data");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    run(as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "keyward", "--no-sync", "--auth=scram-sha-256"])
        .arg(format!("--pwfile={}", password_file.display())));

    let certificates = make_certificates(dir.path());
    // The server insists that its key be its own and private.
    let key = data.join("server.key");
    std::fs::copy(&certificates.server_key, &key).unwrap();
    if root {
        run(Command::new("chown").arg("postgres").arg(&key));
    }
    run(Command::new("chmod").arg("600").arg(&key));
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostssl all all ::1/128 scram-sha-256\n",
    )
    .unwrap();

    // In postgresql.conf rather than on the command line, so ALTER SYSTEM can turn TLS off.
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    std::io::Write::write_all(
        &mut conf,
        format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            certificates.server_cert.display(),
            key.display()
        )
        .as_bytes(),
    )
    .unwrap();
    drop(conf);

    let port = free_port();
    run(as_postgres(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.path().join("log"))
        .arg("-w")
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.path().display(),
        ))
        .arg("start"));
    (
        Cluster {
            bin,
            data,
            port,
            _dir: dir,
        },
        certificates,
    )
}

impl Cluster {
    /// `postgres://keyward@HOST:PORT/postgres?QUERY`, with the password set beside the URL
    /// as `--db-password-file` sets it.
    fn options(&self, host: &str, query: &str) -> keyward_core::Result<PostgresOptions> {
        let mut options = PostgresOptions::from_url(&format!(
            "postgres://keyward@{host}:{}/postgres?{query}",
            self.port
        ))?;
        options.set_password(PASSWORD);
        Ok(options)
    }
}

/// Whether this connection's session is encrypted, as the server sees it.
fn encrypted(options: &PostgresOptions) -> keyward_core::Result<bool> {
    let client = options.connect_once()?;
    let row = block_on(client.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    ))?;
    Ok(row.get(0))
}

/// The connection failed, with an error that says each of `because`.
fn refused(outcome: keyward_core::Result<bool>, because: &[&str]) {
    match outcome {
        Ok(ssl) => panic!("connected (ssl = {ssl}); should have been refused: {because:?}"),
        Err(e) => {
            eprintln!("refused as it should be: {e}");
            let text = e.to_string();
            for reason in because {
                assert!(
                    text.contains(reason),
                    "refused, but not for {reason:?}: {e}"
                );
            }
        }
    }
}

#[test]
fn tls_to_a_real_postgresql_is_verified_and_required() {
    if !keyward_core::store::testing::on_postgres() {
        eprintln!("KEYWARD_TEST_POSTGRES is not set: not starting a PostgreSQL with TLS");
        return;
    }
    let (cluster, certificates) = start_cluster();
    let ca = certificates.ca.display().to_string();

    // verify-full with the right CA, named in the URL: the host name is in the certificate.
    let full = cluster
        .options(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        )
        .unwrap();
    assert_eq!(full.ssl_mode(), SslMode::VerifyFull);
    assert!(encrypted(&full).unwrap(), "pg_stat_ssl says not encrypted");

    // The same CA from --db-ca-file, to the certificate's IP address, with SCRAM bound to
    // the TLS channel (tokio-postgres-rustls's tls-server-end-point binding).
    let mut by_flag = cluster
        .options("127.0.0.1", "sslmode=require&channel_binding=require")
        .unwrap();
    by_flag.set_ca_file(certificates.ca.clone()).unwrap();
    assert!(encrypted(&by_flag).unwrap());

    // Another CA: refused, and the error says why.
    let other = cluster
        .options(
            "localhost",
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                certificates.other_ca.display()
            ),
        )
        .unwrap();
    refused(
        encrypted(&other),
        &[
            "certificate is refused",
            "not issued by a trusted CA",
            "other-ca.pem",
        ],
    );

    // The right CA, a host name the certificate does not carry (the same server, reached
    // through hostaddr): refused.
    let wrong_name = format!("sslmode=verify-full&sslrootcert={ca}&hostaddr=127.0.0.1");
    let wrong_host = cluster.options("db.example.org", &wrong_name).unwrap();
    refused(encrypted(&wrong_host), &["not valid for name"]);
    // `require` checks the name too (stricter than libpq's `require`).
    let mut require = cluster
        .options("db.example.org", "sslmode=require&hostaddr=127.0.0.1")
        .unwrap();
    require.set_ca_file(certificates.ca.clone()).unwrap();
    refused(encrypted(&require), &["not valid for name"]);
    // verify-ca does not look at the name, only at the chain.
    let ca_only = cluster
        .options(
            "db.example.org",
            &format!("sslmode=verify-ca&sslrootcert={ca}&hostaddr=127.0.0.1"),
        )
        .unwrap();
    assert!(encrypted(&ca_only).unwrap());
    let ca_only_other = cluster
        .options(
            "localhost",
            &format!(
                "sslmode=verify-ca&sslrootcert={}",
                certificates.other_ca.display()
            ),
        )
        .unwrap();
    refused(encrypted(&ca_only_other), &["UnknownIssuer"]);

    // The default, prefer, verifies too when the server offers TLS: this CA is not among
    // the system's, so the connection is refused rather than left unverified.
    let prefer = cluster.options("localhost", "").unwrap();
    assert_eq!(prefer.ssl_mode(), SslMode::Prefer);
    refused(encrypted(&prefer), &["UnknownIssuer"]);

    // Without TLS, a server that takes only hostssl refuses the connection.
    let plain = cluster.options("127.0.0.1", "sslmode=disable").unwrap();
    refused(encrypted(&plain), &["no encryption"]);

    // A store over TLS: migrations, a write and a read on its pool, and its listener (a
    // connection of its own) connected, which this server allows only over TLS.
    let mut options = cluster.options("localhost", "sslmode=verify-full").unwrap();
    options.set_ca_file(certificates.ca.clone()).unwrap();
    let store = Store::connect(&Location::Postgres(Box::new(options))).unwrap();
    let (heard, hearing) = std::sync::mpsc::channel();
    store
        .listen_for_other_instances(move |commit| {
            let _ = heard.send(commit);
        })
        .unwrap();
    let account = Account {
        id: uuid::Uuid::new_v4(),
        username: "tls-alice".into(),
        display_name: "Alice".into(),
        created_at: 1_700_000_000_000,
        state: AccountState::Active,
        recovery: None,
    };
    store.write(|tx| tx.insert_account(&account)).unwrap();
    let (read, ssl) = store
        .read(|tx| {
            let ssl: bool = tx.raw_value(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?;
            Ok::<_, keyward_core::CoreError>((tx.account_by_username("tls-alice")?, ssl))
        })
        .unwrap();
    assert_eq!(read.map(|a| a.id), Some(account.id));
    assert!(ssl, "the store's pooled connection is not encrypted");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match hearing.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(RemoteCommit::MayHaveMissed) => break,
            Ok(RemoteCommit::Changed { .. }) => {}
            Err(e) => panic!("the listener never connected over TLS: {e}"),
        }
    }
    drop(store);

    // A store whose CA is wrong fails at once, with the reason (not the pool's timeout).
    let started = Instant::now();
    let mut options = cluster.options("localhost", "sslmode=verify-full").unwrap();
    options.set_ca_file(certificates.other_ca.clone()).unwrap();
    match Store::connect(&Location::Postgres(Box::new(options))) {
        Ok(_) => panic!("a store connected to a server its CA did not sign"),
        Err(e) => assert!(e.to_string().contains("UnknownIssuer"), "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // The same server with TLS turned off and plain TCP allowed: `require` refuses it, and
    // `prefer` falls back to a plain session (what libpq's prefer does too: only `require`
    // and the verify modes hold against an attacker who strips TLS).
    let admin = full.connect_once().unwrap();
    std::fs::write(
        cluster.data.join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    block_on(admin.batch_execute("ALTER SYSTEM SET ssl = off")).unwrap();
    block_on(admin.batch_execute("SELECT pg_reload_conf()")).unwrap();
    drop(admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while encrypted(&prefer).ok() != Some(false) {
        assert!(Instant::now() < deadline, "the server kept TLS on");
        std::thread::sleep(Duration::from_millis(50));
    }
    refused(encrypted(&by_flag), &["server does not support TLS"]);
    refused(encrypted(&full), &["server does not support TLS"]);
    drop(cluster);
}
