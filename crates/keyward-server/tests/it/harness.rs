use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::ManualClock;
use keyward_core::store::Location;
use keyward_proto::*;
use keyward_server::{Config, RunningServer};
use keyward_softkey::SoftKey;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

/// Runs the `keywardd` binary with `args` (a subcommand, as an operator would); its exit code
/// and everything it printed. `KEYWARD_DB` from the environment never leaks into it.
pub fn keywardd_tool<I, S>(args: I) -> (i32, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = keywardd_output(args);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

/// As `keywardd_tool`, with what it printed on stdout and stderr apart (for JSON output).
pub fn keywardd_output<I, S>(args: I) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(env!("CARGO_BIN_EXE_keywardd"))
        .args(args)
        .env_remove("KEYWARD_DB")
        .output()
        .unwrap()
}

/// 2026-11-24T00:00:00Z: tests move this clock instead of sleeping.
pub const T0: i64 = 1_795_478_400_000;

pub struct Harness {
    pub server: Option<RunningServer>,
    pub clock: Arc<ManualClock>,
    pub base: String,
    pub origin: Url,
    /// The SQLite file's path on SQLite; on either engine, the log key rests beside it.
    pub db: PathBuf,
    /// `--db` as keywardd was given it: this path, or a PostgreSQL schema of this test's own
    /// (see `keyward_core::store::testing`).
    pub db_url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub error: ApiError,
}

pub type Res<T> = Result<T, Failure>;

pub fn new_key() -> SoftKey {
    SoftKey::new(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY)
}

pub fn client(name: &str) -> ClientInfo {
    ClientInfo {
        name: name.into(),
        platform: "Linux".into(),
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keyward.db");
        let db_url = keyward_core::store::testing::database_url(&db).unwrap();
        Self::start_at(dir, db, db_url, Arc::new(ManualClock::new(T0)), tweak).await
    }

    /// A server on a SQLite file, whichever engine the suite runs on (`keywardd migrate`
    /// starts from one).
    pub async fn start_on_sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keyward.db");
        let db_url = db.display().to_string();
        Self::start_at(dir, db, db_url, Arc::new(ManualClock::new(T0)), |_| {}).await
    }

    /// Stops the server (for `restart_on`).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(1)).await;
        }
    }

    /// Stops this server and starts one on `db_url` instead, keeping the log key and clock.
    pub async fn restart_on(self, db_url: String) -> Harness {
        self.restart_on_with(db_url, |_| {}).await
    }

    /// `restart_on`, with `tweak` applied to the new server's configuration.
    pub async fn restart_on_with(
        mut self,
        db_url: String,
        tweak: impl FnOnce(&mut Config),
    ) -> Harness {
        self.stop().await;
        let clock = self.clock.clone();
        Self::start_at(self.dir, self.db, db_url, clock, tweak).await
    }

    async fn start_at(
        dir: tempfile::TempDir,
        db: PathBuf,
        db_url: String,
        clock: Arc<ManualClock>,
        tweak: impl FnOnce(&mut Config),
    ) -> Harness {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let origin = Url::parse(&format!("http://localhost:{port}")).unwrap();
        let mut config = local_config(&db, &db_url, origin.clone());
        tweak(&mut config);
        let server = keyward_server::start_on(listener, config, clock.clone())
            .await
            .unwrap();
        Harness {
            base: format!("http://127.0.0.1:{port}"),
            server: Some(server),
            clock,
            origin,
            db,
            db_url,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// A second keywardd on the same database, as behind a load balancer: its own port and
    /// process state, the same origin, clock and log key.
    pub async fn second_instance(&self) -> Harness {
        self.second_instance_with(|_| {}).await
    }

    pub async fn second_instance_with(&self, tweak: impl FnOnce(&mut Config)) -> Harness {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = local_config(&self.db, &self.db_url, self.origin.clone());
        // Requests reach it under its own port; the origin is the first instance's.
        config.check_host = false;
        tweak(&mut config);
        let server = keyward_server::start_on(listener, config, self.clock.clone())
            .await
            .unwrap();
        Harness {
            base: format!("http://127.0.0.1:{port}"),
            server: Some(server),
            clock: self.clock.clone(),
            origin: self.origin.clone(),
            db: self.db.clone(),
            db_url: self.db_url.clone(),
            http: reqwest::Client::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Stops the server and starts a new one on the same database file.
    pub async fn restart(mut self) -> Harness {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(1)).await;
        }
        let clock = self.clock.clone();
        Self::start_at(self.dir, self.db, self.db_url, clock, |_| {}).await
    }

    /// Stops the server and starts one with another configuration on the same database.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> Harness {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(1)).await;
        }
        let clock = self.clock.clone();
        Self::start_at(self.dir, self.db, self.db_url, clock, tweak).await
    }

    pub fn state(&self) -> &keyward_server::AppState {
        &self.server.as_ref().unwrap().state
    }

    pub async fn send<R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&impl Serialize>,
    ) -> Res<R> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        if status.is_success() {
            Ok(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
        } else {
            let error = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path} {status}: not ApiError ({e}): {text}"));
            Err(Failure { status, error })
        }
    }

    /// A public document (no session): OpenAPI, discovery.
    pub async fn public_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str, token: &str) -> Res<R> {
        self.send(reqwest::Method::GET, path, Some(token), None::<&()>)
            .await
    }
    pub async fn post<R: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl Serialize,
    ) -> Res<R> {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }
    pub async fn post_empty<R: DeserializeOwned>(&self, path: &str, token: &str) -> Res<R> {
        self.send(reqwest::Method::POST, path, Some(token), None::<&()>)
            .await
    }
    pub async fn delete<R: DeserializeOwned>(&self, path: &str, token: &str) -> Res<R> {
        self.send(reqwest::Method::DELETE, path, Some(token), None::<&()>)
            .await
    }

    pub async fn create_account(&self, key: &mut SoftKey, username: &str) -> SignedIn {
        self.try_create_account(key, username).await.unwrap()
    }

    pub async fn try_create_account(&self, key: &mut SoftKey, username: &str) -> Res<SignedIn> {
        self.try_create_account_bound(key, username, None).await
    }

    /// Account creation whose first session is bound to `binding`'s key (if given).
    pub async fn try_create_account_bound(
        &self,
        key: &mut SoftKey,
        username: &str,
        binding: Option<SessionKeyBinding>,
    ) -> Res<SignedIn> {
        let begin: RegistrationBegin = self
            .post(
                "/api/v1/registration/begin",
                None,
                &RegistrationBeginRequest {
                    username: username.into(),
                    display_name: None,
                },
            )
            .await?;
        let credential = key.register(&self.origin, &begin.options).unwrap();
        self.post(
            "/api/v1/registration/finish",
            None,
            &RegistrationFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                nickname: Some(format!("{username}'s first key")),
                client: client("first laptop"),
                device_secret: None,
                binding,
            },
        )
        .await
    }

    pub async fn sign_in_begin(&self, username: Option<&str>) -> AssertionBegin {
        self.post(
            "/api/v1/sign-in/begin",
            None,
            &SignInBeginRequest {
                username: username.map(str::to_string),
            },
        )
        .await
        .unwrap()
    }

    pub async fn sign_in_finish(
        &self,
        begin: &AssertionBegin,
        credential: PublicKeyCredential,
        name: &str,
        device_secret: Option<String>,
    ) -> Res<SignedIn> {
        self.sign_in_finish_bound(begin, credential, name, device_secret, None)
            .await
    }

    /// `sign_in_finish`, the session bound to `binding`'s key (if given).
    pub async fn sign_in_finish_bound(
        &self,
        begin: &AssertionBegin,
        credential: PublicKeyCredential,
        name: &str,
        device_secret: Option<String>,
        binding: Option<SessionKeyBinding>,
    ) -> Res<SignedIn> {
        self.post(
            "/api/v1/sign-in/finish",
            None,
            &SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                client: client(name),
                device_secret,
                binding,
            },
        )
        .await
    }

    pub async fn sign_in(
        &self,
        key: &mut SoftKey,
        username: Option<&str>,
        name: &str,
    ) -> Res<SignedIn> {
        let begin = self.sign_in_begin(username).await;
        let credential = key.authenticate(&self.origin, &begin.options).unwrap();
        self.sign_in_finish(&begin, credential, name, None).await
    }

    /// A step-up with `key`; returns the session's new token (the one given is refused after).
    #[must_use = "a step-up replaces the token: use the new one"]
    pub async fn step_up(&self, token: &str, key: &mut SoftKey) -> String {
        let begin: AssertionBegin = self
            .post_empty("/api/v1/step-up/begin", token)
            .await
            .unwrap();
        let credential = key.authenticate(&self.origin, &begin.options).unwrap();
        let stepped: SteppedUp = self
            .post(
                "/api/v1/step-up/finish",
                Some(token),
                &AssertionFinishRequest {
                    ceremony_id: begin.ceremony_id,
                    credential,
                },
            )
            .await
            .unwrap();
        stepped.token
    }

    pub async fn add_key(
        &self,
        token: &str,
        key: &mut SoftKey,
        nickname: &str,
    ) -> Res<AuthenticatorView> {
        let begin: RegistrationBegin = self
            .post_empty("/api/v1/authenticators/begin", token)
            .await?;
        let credential = key.register(&self.origin, &begin.options).unwrap();
        self.post(
            "/api/v1/authenticators/finish",
            Some(token),
            &AddAuthenticatorFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                nickname: Some(nickname.into()),
            },
        )
        .await
    }

    pub async fn events(&self, token: &str) -> Vec<SecurityEvent> {
        let page: EventPage = self.get("/api/v1/events?limit=200", token).await.unwrap();
        page.events
    }

    /// Counts rows in every table: "nothing changed" means these are equal before and after.
    pub fn table_counts(&self) -> Vec<(String, i64)> {
        self.store()
            .read(|tx| {
                let mut out = Vec::new();
                for t in [
                    "accounts",
                    "authenticators",
                    "devices",
                    "sessions",
                    "recovery_keys",
                    "events",
                ] {
                    out.push((
                        t.to_string(),
                        tx.raw_value::<i64>(&format!("SELECT COUNT(*) FROM {t}"), &[])?,
                    ));
                }
                Ok::<_, keyward_core::CoreError>(out)
            })
            .unwrap()
    }

    /// Everything the database holds, as bytes to search: the SQLite file and its WAL, or
    /// every PostgreSQL row as text.
    pub fn everything_stored(&self) -> Vec<u8> {
        if !keyward_core::store::testing::on_postgres() {
            let mut bytes = std::fs::read(&self.db).unwrap();
            let mut wal = self.db.as_os_str().to_owned();
            wal.push("-wal");
            bytes.extend(std::fs::read(PathBuf::from(wal)).unwrap_or_default());
            return bytes;
        }
        self.store()
            .read(|tx| {
                let mut all = Vec::new();
                for t in keyward_core::store::TABLES {
                    let rows: Option<String> = tx.raw_value(
                        &format!("SELECT string_agg(r::text, ' ') FROM {t} AS r"),
                        &[],
                    )?;
                    all.extend(rows.unwrap_or_default().into_bytes());
                }
                Ok::<_, keyward_core::CoreError>(all)
            })
            .unwrap()
    }

    /// The database opened a second time, as a tool or another instance would.
    pub fn store(&self) -> keyward_core::Store {
        keyward_core::Store::connect(&Location::parse(&self.db_url).unwrap()).unwrap()
    }
}

/// `Config::local` on `db_url`, with the log key beside `db` (PostgreSQL has no file of its
/// own to put it beside).
pub fn local_config(db: &std::path::Path, db_url: &str, origin: Url) -> Config {
    let mut config = Config::local(Location::parse(db_url).unwrap(), origin);
    let mut key = db.as_os_str().to_owned();
    key.push(".log-key");
    config.log_key = Some(PathBuf::from(key));
    config
}

/// A vendor CA and one batch attestation certificate under it, as a security-key maker has.
pub fn vendor(aaguid: uuid::Uuid) -> (String, keyward_softkey::AttestationIdentity) {
    use p256::pkcs8::EncodePrivateKey;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "Test Vendor Root CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca, ca_key);

    let batch = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let batch_der = batch.to_pkcs8_der().unwrap();
    let batch_key = KeyPair::try_from(batch_der.as_bytes()).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf.distinguished_name.push(DnType::CountryName, "SE");
    leaf.distinguished_name
        .push(DnType::OrganizationName, "Test Vendor AB");
    leaf.distinguished_name
        .push(DnType::OrganizationalUnitName, "Authenticator Attestation");
    leaf.distinguished_name
        .push(DnType::CommonName, "Test Key Serial 1");
    let mut ext = vec![0x04, 0x10];
    ext.extend_from_slice(aaguid.as_bytes());
    leaf.custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4],
            ext,
        ));
    let leaf_cert = leaf.signed_by(&batch_key, &ca_issuer).unwrap();
    let identity = keyward_softkey::AttestationIdentity {
        certificate_der: leaf_cert.der().to_vec(),
        private_key: batch.to_bytes().to_vec(),
    };
    (ca_cert.pem(), identity)
}
