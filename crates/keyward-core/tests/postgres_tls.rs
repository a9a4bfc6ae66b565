//! TLS to a real PostgreSQL: a throwaway cluster of this test's own with `ssl=on`, a CA and a
//! server certificate made here, and a `pg_hba.conf` that takes only TLS (`hostssl`, SCRAM);
//! and a second cluster that takes only client certificates (`hostssl … cert`, the CA as its
//! `ssl_ca_file`), with CRLs made here for the server's certificate.
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

/// A CA and a server certificate for `localhost` and 127.0.0.1 under it (serial
/// [`SERVER_SERIAL`]), client certificates, CRLs, and a second CA that signed a client
/// certificate only.
struct Certificates {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    /// CN `keyward` (the cluster's user), by the CA; its key is owner-only.
    client: ClientFiles,
    /// CN `keyward`, by the other CA.
    client_of_other_ca: ClientFiles,
    /// CN `mallory`, by the CA: a certificate the server trusts, for another user.
    client_for_mallory: ClientFiles,
    /// The CA's CRL listing the server's certificate.
    crl_revoking_server: PathBuf,
    /// The CA's CRL listing another certificate only.
    crl_revoking_another: PathBuf,
}

struct ClientFiles {
    cert: PathBuf,
    key: PathBuf,
}

const SERVER_SERIAL: u64 = 0x5e17;

fn make_certificates(dir: &Path) -> Certificates {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevocationReason, RevokedCertParams, SerialNumber, date_time_ymd,
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
    let (other_ca_pem, other_issuer) = ca("Some other CA");
    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.serial_number = Some(SerialNumber::from(SERVER_SERIAL));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();

    let client = |name: &str, user: &str, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer).unwrap();
        let files = ClientFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        run(Command::new("chmod").arg("600").arg(&files.key));
        files
    };
    let crl = |name: &str, serial: u64| {
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: date_time_ymd(2024, 1, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        let path = dir.join(name);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    };

    let certificates = Certificates {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client: client("client", "keyward", &issuer),
        client_of_other_ca: client("client-other-ca", "keyward", &other_issuer),
        client_for_mallory: client("client-mallory", "mallory", &issuer),
        crl_revoking_server: crl("revoking-server.crl", SERVER_SERIAL),
        crl_revoking_another: crl("revoking-another.crl", SERVER_SERIAL + 1),
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

/// TCP connections accepted only over TLS with SCRAM.
const SCRAM_OVER_TLS: &str = "local all all trust\n\
    hostssl all all 127.0.0.1/32 scram-sha-256\n\
    hostssl all all ::1/128 scram-sha-256\n";

/// TCP connections accepted only over TLS with a client certificate, by the CA, whose CN is
/// the user's name (`cert` is `clientcert=verify-full`).
const CLIENT_CERTIFICATES: &str = "local all all trust\n\
    hostssl all all 127.0.0.1/32 cert\n\
    hostssl all all ::1/128 cert\n";

/// initdb with a password for `keyward`, TLS on with `certificates`, and `hba` as
/// `pg_hba.conf`; with `client_ca`, the CA is the server's `ssl_ca_file` (client certificates
/// are asked for and must chain to it).
fn start_cluster(hba: &str, client_ca: bool) -> (Cluster, Certificates) {
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
    std::fs::write(data.join("pg_hba.conf"), hba).unwrap();

    // In postgresql.conf rather than on the command line, so ALTER SYSTEM can turn TLS off.
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    let mut settings = format!(
        "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        certificates.server_cert.display(),
        key.display()
    );
    if client_ca {
        settings.push_str(&format!("ssl_ca_file = '{}'\n", certificates.ca.display()));
    }
    std::io::Write::write_all(&mut conf, settings.as_bytes()).unwrap();
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
fn refused<T: std::fmt::Debug>(outcome: keyward_core::Result<T>, because: &[&str]) {
    match outcome {
        Ok(seen) => panic!("connected (saw {seen:?}); should have been refused: {because:?}"),
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
    let (cluster, certificates) = start_cluster(SCRAM_OVER_TLS, false);
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
        disabled: None,
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

/// The client certificate's subject, as the server saw it on this connection.
fn client_dn(options: &PostgresOptions) -> keyward_core::Result<Option<String>> {
    let client = options.connect_once()?;
    let row = block_on(client.query_one(
        "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    ))?;
    Ok(row.get(0))
}

#[test]
fn client_certificates_and_crls_on_a_real_postgresql() {
    if !keyward_core::store::testing::on_postgres() {
        eprintln!("KEYWARD_TEST_POSTGRES is not set: not starting a PostgreSQL with TLS");
        return;
    }
    let (cluster, certificates) = start_cluster(CLIENT_CERTIFICATES, true);
    let ca = certificates.ca.display().to_string();
    let with_client = |files: &ClientFiles| {
        format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
            files.cert.display(),
            files.key.display()
        )
    };

    // The CA's certificate for `keyward`, named in the URL: in, as /CN=keyward.
    let by_url = cluster
        .options("localhost", &with_client(&certificates.client))
        .unwrap();
    assert_eq!(client_dn(&by_url).unwrap().as_deref(), Some("/CN=keyward"));

    // The same from --db-cert-file and --db-key-file, for a store: its pool and its
    // listener, over TLS with the certificate.
    let mut by_flags = cluster.options("localhost", "sslmode=verify-full").unwrap();
    by_flags.set_ca_file(certificates.ca.clone()).unwrap();
    by_flags
        .set_client_cert(
            certificates.client.cert.clone(),
            certificates.client.key.clone(),
        )
        .unwrap();
    let store = Store::connect(&Location::Postgres(Box::new(by_flags.clone()))).unwrap();
    let (heard, hearing) = std::sync::mpsc::channel();
    store
        .listen_for_other_instances(move |commit| {
            let _ = heard.send(commit);
        })
        .unwrap();
    let dn: Option<String> = store
        .read(|tx| {
            tx.raw_value(
                "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
        })
        .unwrap();
    assert_eq!(dn.as_deref(), Some("/CN=keyward"));
    match hearing.recv_timeout(Duration::from_secs(10)) {
        Ok(RemoteCommit::MayHaveMissed) => {}
        other => panic!("the listener did not connect with the certificate: {other:?}"),
    }
    drop(store);

    // No certificate: the server refuses, and says so.
    let without = cluster
        .options(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        )
        .unwrap();
    refused(
        client_dn(&without),
        &["connection requires a valid client certificate"],
    );
    // A certificate from another CA: refused by the server's TLS, the certificate named.
    refused(
        client_dn(
            &cluster
                .options("localhost", &with_client(&certificates.client_of_other_ca))
                .unwrap(),
        ),
        &[
            "refused keywardd's client certificate",
            &certificates.client_of_other_ca.cert.display().to_string(),
        ],
    );
    // The CA's certificate for another user: refused by the server's authentication.
    refused(
        client_dn(
            &cluster
                .options("localhost", &with_client(&certificates.client_for_mallory))
                .unwrap(),
        ),
        &["certificate authentication failed for user \"keyward\""],
    );
    // A key open to others is refused before connecting, naming the file (not its text).
    run(Command::new("chmod")
        .arg("644")
        .arg(&certificates.client.key));
    let error = Store::connect(&Location::Postgres(Box::new(by_flags.clone())))
        .err()
        .expect("a key open to others was used")
        .to_string();
    assert!(
        error.contains(&certificates.client.key.display().to_string()) && error.contains("644"),
        "{error}"
    );
    assert!(!error.contains("PRIVATE KEY"), "{error}");
    run(Command::new("chmod")
        .arg("600")
        .arg(&certificates.client.key));

    // A CRL that lists the server's certificate: refused, in verify-full and verify-ca, by
    // the URL's sslcrl and by --db-crl-file.
    let revoking = certificates.crl_revoking_server.display().to_string();
    let revoked = format!("{}&sslcrl={revoking}", with_client(&certificates.client));
    refused(
        client_dn(&cluster.options("localhost", &revoked).unwrap()),
        &["certificate is refused", "revoked", &revoking],
    );
    let mut revoked_ca_only = cluster
        .options(
            "db.example.org",
            &format!(
                "sslmode=verify-ca&sslrootcert={ca}&hostaddr=127.0.0.1&sslcrl={revoking}&\
                 sslcert={}&sslkey={}",
                certificates.client.cert.display(),
                certificates.client.key.display()
            ),
        )
        .unwrap();
    refused(client_dn(&revoked_ca_only), &["revoked"]);
    assert!(
        revoked_ca_only
            .set_crl_file(certificates.crl_revoking_another.clone())
            .is_err(),
        "a second CRL"
    );
    let mut by_flag = by_flags.clone();
    by_flag
        .set_crl_file(certificates.crl_revoking_server.clone())
        .unwrap();
    match Store::connect(&Location::Postgres(Box::new(by_flag))) {
        Ok(_) => panic!("a store connected to a server whose certificate is revoked"),
        Err(e) => assert!(e.to_string().contains("revoked"), "{e}"),
    }
    // The CA's CRL that lists another certificate: in.
    let mut not_revoked = by_flags.clone();
    not_revoked
        .set_crl_file(certificates.crl_revoking_another.clone())
        .unwrap();
    assert_eq!(
        client_dn(&not_revoked).unwrap().as_deref(),
        Some("/CN=keyward")
    );

    // The store's listener outlives it (it reconnects for as long as the process lives):
    // its connection's end, the server gone, must leave the I/O thread free. (It once
    // spun there on the ended connection, filling memory, and every connection hung.)
    drop(cluster);
    std::thread::sleep(Duration::from_secs(1));
    let before = resident_bytes();
    std::thread::sleep(Duration::from_secs(2));
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "{} MB more memory in 2 s with nothing to do",
        grown >> 20
    );
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(not_revoked.connect_once().is_err());
    });
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(5)),
        Ok(true),
        "the PostgreSQL I/O thread is stuck"
    );
}

/// This process's resident memory (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
