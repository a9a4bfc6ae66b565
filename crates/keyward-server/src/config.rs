//! keywardd's configuration: a TOML file, environment variables and flags, in rising priority.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use keyward_core::Policy;
use keyward_core::store::Location;
use serde::Deserialize;
use url::Url;

use crate::net::Cidr;
use crate::relying_party::rate_limit::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Command-line flags. Each also reads a `KEYWARD_*` environment variable.
#[derive(Debug, Parser, Default)]
#[command(
    name = "keywardd",
    version,
    about = "Keyward: the passwordless account-security service (a WebAuthn relying party)"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on. Loopback by default; put a TLS-terminating proxy or --tls-cert in front of anything else.
    #[arg(long, env = "KEYWARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The database: a SQLite file (a path or sqlite:PATH, created if missing) or PostgreSQL
    /// (postgres://user@host/db, for several instances on one database; TLS by ?sslmode=:
    /// prefer by default, disable, require, verify-ca, verify-full; every TLS session verified).
    #[arg(long, env = "KEYWARD_DB")]
    pub db: Option<String>,
    /// A file holding the PostgreSQL password (or set KEYWARD_DB_PASSWORD); never put it in --db.
    #[arg(long, env = "KEYWARD_DB_PASSWORD_FILE")]
    pub db_password_file: Option<PathBuf>,
    /// PostgreSQL connections this instance keeps (default 8).
    #[arg(long, env = "KEYWARD_DB_POOL")]
    pub db_pool: Option<u32>,
    /// PEM CA certificates to verify PostgreSQL's TLS certificate with, instead of the
    /// system's (or sslrootcert=PATH in --db; not both).
    #[arg(long, env = "KEYWARD_DB_CA_FILE")]
    pub db_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) to show PostgreSQL, with --db-key-file (or sslcert=PATH
    /// and sslkey=PATH in --db; not both).
    #[arg(long, env = "KEYWARD_DB_CERT_FILE")]
    pub db_cert_file: Option<PathBuf>,
    /// PEM private key of --db-cert-file, unencrypted, in an owner-only file (chmod 600).
    #[arg(long, env = "KEYWARD_DB_KEY_FILE")]
    pub db_key_file: Option<PathBuf>,
    /// PEM CRLs to check PostgreSQL's certificate chain against (or sslcrl=PATH in --db; not
    /// both): a listed certificate, one no CRL covers, or an expired CRL refuses the server.
    #[arg(long, env = "KEYWARD_DB_CRL_FILE")]
    pub db_crl_file: Option<PathBuf>,
    /// The security log's signing key (made on first start, owner-only). Default: DB + ".log-key"
    /// for SQLite; required for PostgreSQL (every instance needs the same key).
    #[arg(long, env = "KEYWARD_LOG_KEY")]
    pub log_key: Option<PathBuf>,
    /// WebAuthn relying-party ID: the domain credentials are bound to.
    #[arg(long, env = "KEYWARD_RP_ID")]
    pub rp_id: Option<String>,
    /// Name shown by authenticators during registration.
    #[arg(long, env = "KEYWARD_RP_NAME")]
    pub rp_name: Option<String>,
    /// An exact origin allowed to run ceremonies (repeat for several). Must sit within the RP ID.
    #[arg(long = "origin", env = "KEYWARD_ORIGINS", value_delimiter = ',')]
    pub origins: Vec<Url>,
    /// Idle timeout in seconds (default 900: NIST AAL3).
    #[arg(long, env = "KEYWARD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Absolute session lifetime in seconds (default 43200: NIST AAL3).
    #[arg(long, env = "KEYWARD_SESSION_LIFETIME")]
    pub session_lifetime: Option<u64>,
    /// Seconds a browser-bound session's cookie lives before the browser's key must sign a
    /// refresh for a new one (default 300).
    #[arg(long, env = "KEYWARD_BROWSER_COOKIE_LIFE")]
    pub browser_cookie_life: Option<u64>,
    /// Seconds an agent's session (a device code approved) may stay unused (default 28800;
    /// at most 86400).
    #[arg(long, env = "KEYWARD_AGENT_IDLE_TIMEOUT")]
    pub agent_idle_timeout: Option<u64>,
    /// An agent's session's absolute lifetime in seconds (default 604800; at most 2592000).
    #[arg(long, env = "KEYWARD_AGENT_LIFETIME")]
    pub agent_lifetime: Option<u64>,
    /// Seconds a redeemed recovery key waits before it takes effect (default 86400; 0 = at once).
    #[arg(long, env = "KEYWARD_RECOVERY_WINDOW")]
    pub recovery_window: Option<u64>,
    /// After the window, seconds a recovery session has to enrol a new key and recovery key
    /// (default 2592000: 30 days). No idle timeout applies to it until then.
    #[arg(long, env = "KEYWARD_RECOVERY_ENROLMENT_DEADLINE")]
    pub recovery_enrolment_deadline: Option<u64>,
    /// Refuse synced passkeys: only device-bound keys may register or sign in (AAL3 mode).
    #[arg(long, env = "KEYWARD_REQUIRE_DEVICE_BOUND")]
    pub require_device_bound: bool,
    /// Open only sessions bound to a key on the client's device: every request then carries
    /// a DPoP proof by it (RFC 9449), and a sign-in without a key to bind to is refused.
    #[arg(long, env = "KEYWARD_REQUIRE_BOUND_SESSIONS")]
    pub require_bound_sessions: bool,
    /// Refuse requests whose Host is not an origin's host:port (DNS rebinding). Leave off
    /// behind a proxy that rewrites Host to the upstream address.
    #[arg(long, env = "KEYWARD_CHECK_HOST")]
    pub check_host: bool,
    /// Offline CSV of `CIDR,place` lines: shows a coarse place for sessions and sign-ins.
    #[arg(long, env = "KEYWARD_PLACE_DB")]
    pub place_db: Option<PathBuf>,
    /// PEM certificate chain; with --tls-key, serve HTTPS and send HSTS.
    #[arg(long, env = "KEYWARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "KEYWARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The built web UI (`ui/dist`): serve it to browsers at `/`, signed in by cookie.
    #[arg(long, env = "KEYWARD_WEB_UI")]
    pub web_ui: Option<PathBuf>,
    /// A reverse proxy's address range (repeat for several): only from these is the client
    /// address read from `Forwarded` / `X-Forwarded-For`. None by default: the TCP peer.
    #[arg(
        long = "trusted-proxy",
        env = "KEYWARD_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,
    /// Seconds a client may take to send a request's headers before the connection is closed
    /// (default 10; against slowloris).
    #[arg(long, env = "KEYWARD_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Open connections served at once; more are closed as they arrive (default 1024).
    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How keywardd logs: text for people (the default), or json, one object per line with
    /// the request's ID (also sent back as X-Request-Id). Never a token, secret or key.
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default). Counts and latencies
    /// only, no user data; still, keep it on an address only your monitoring reaches.
    #[arg(long, env = "KEYWARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// An authenticator model admitted in attested (AAL3) mode: its vendor's attestation root and
/// its AAGUID. With any configured, only these models can register, proven by attestation.
#[derive(Debug, Clone)]
pub struct AttestedModel {
    /// PEM of the vendor's attestation root certificate.
    pub ca_pem: String,
    pub aaguid: uuid::Uuid,
    pub name: String,
}

/// The files that go with a PostgreSQL `--db`: only paths here; the TLS files are read when
/// the store connects.
#[derive(Debug, Clone, Default)]
pub struct DbFiles {
    /// `--db-password-file`.
    pub password: Option<PathBuf>,
    /// `--db-ca-file`.
    pub ca: Option<PathBuf>,
    /// `--db-cert-file`, with `key`.
    pub cert: Option<PathBuf>,
    /// `--db-key-file`, with `cert`.
    pub key: Option<PathBuf>,
    /// `--db-crl-file`.
    pub crl: Option<PathBuf>,
}

impl DbFiles {
    /// From the environment alone, as the subcommands take them: `KEYWARD_DB_PASSWORD_FILE`,
    /// `KEYWARD_DB_CA_FILE`, `KEYWARD_DB_CERT_FILE`, `KEYWARD_DB_KEY_FILE`,
    /// `KEYWARD_DB_CRL_FILE`.
    pub fn from_env() -> DbFiles {
        let path = |name: &str| std::env::var_os(name).map(PathBuf::from);
        DbFiles {
            password: path("KEYWARD_DB_PASSWORD_FILE"),
            ca: path("KEYWARD_DB_CA_FILE"),
            cert: path("KEYWARD_DB_CERT_FILE"),
            key: path("KEYWARD_DB_KEY_FILE"),
            crl: path("KEYWARD_DB_CRL_FILE"),
        }
    }

    fn any(&self) -> bool {
        let DbFiles {
            password,
            ca,
            cert,
            key,
            crl,
        } = self;
        [password, ca, cert, key, crl].iter().any(|f| f.is_some())
    }
}

/// `--db` and its credentials: a SQLite path by default; for PostgreSQL, the password from
/// a file or `KEYWARD_DB_PASSWORD`, never from the URL's place in a process listing, the CA
/// its TLS certificate is verified with, a client certificate and key, and CRLs.
pub fn database(
    db: Option<String>,
    files: DbFiles,
    pool: Option<u32>,
) -> Result<Location, ConfigError> {
    let text = db.unwrap_or_else(|| "keyward.db".into());
    let mut location =
        Location::parse(&text).map_err(|e| ConfigError::Invalid(format!("--db: {e}")))?;
    if let Location::Postgres(options) = &mut location {
        let password = match files.password {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|source| ConfigError::Read { path, source })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => std::env::var("KEYWARD_DB_PASSWORD").ok(),
        };
        if let Some(password) = password {
            options.set_password(&password);
        }
        if let Some(n) = pool {
            if n == 0 {
                return Err(ConfigError::Invalid("--db-pool must be at least 1".into()));
            }
            options.pool_size = n;
        }
        if let Some(path) = files.ca {
            options
                .set_ca_file(path)
                .map_err(|e| ConfigError::Invalid(format!("--db-ca-file: {e}")))?;
        }
        match (files.cert, files.key) {
            (Some(cert), Some(key)) => options.set_client_cert(cert, key).map_err(|e| {
                ConfigError::Invalid(format!("--db-cert-file and --db-key-file: {e}"))
            })?,
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "--db-cert-file and --db-key-file go together".into(),
                ));
            }
        }
        if let Some(path) = files.crl {
            options
                .set_crl_file(path)
                .map_err(|e| ConfigError::Invalid(format!("--db-crl-file: {e}")))?;
        }
    } else if files.any() || pool.is_some() {
        return Err(ConfigError::Invalid(
            "--db-password-file, --db-pool, --db-ca-file, --db-cert-file, --db-key-file and \
             --db-crl-file are for PostgreSQL"
                .into(),
        ));
    }
    Ok(location)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The log key's file: the one named, or beside a SQLite database; None for PostgreSQL
/// without one (it has no file to put it beside).
pub fn log_key_path(named: Option<PathBuf>, db: &Location) -> Option<PathBuf> {
    match (named, db) {
        (Some(path), _) => Some(path),
        (None, Location::Sqlite(path)) => Some(crate::log_seal::default_key_path(path)),
        (None, Location::Postgres(_)) => None,
    }
}

/// `keywardd admin …`: everything the operator may do to accounts.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Every account with its state and readiness (no credential material, devices or
    /// addresses).
    Accounts,
    /// How many accounts have a backup key, a confirmed recovery key, only device-bound keys,
    /// and only phishing-resistant sign-ins: what an organisation shows an auditor.
    Report,
    /// Disable an account for abuse: its sessions end at once, and its owner is shown REASON
    /// when they next sign in with a key.
    Disable {
        username: String,
        /// What the owner is told (at most 300 characters).
        #[arg(long)]
        reason: String,
    },
    /// Enable a disabled account again.
    Enable { username: String },
    /// Delete an account (abuse, a legal order): its sessions are told and end, its keys,
    /// recovery key, devices and app sign-ins are removed, and its events' details can no
    /// longer be read. Nothing of it can be signed in to or recovered afterwards.
    Delete { username: String },
}

/// What keywardd does besides serving (the default).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register, list or remove the apps that sign people in through Keyward (OpenID
    /// Connect). Apps can also be registered in the config file's [[oidc_clients]].
    Client {
        #[command(subcommand)]
        action: ClientCommand,
    },
    /// Rotate the OpenID provider's ID-token signing key: a new key signs from now on (on
    /// every running instance, from its next token); the old one stays in the JWKS until every
    /// token it signed has expired. Exit 0 rotated, 2 nothing changed.
    RotateSigningKey {
        /// The database, as for serving.
        #[arg(long)]
        db: String,
        /// The log key (the signing keys are sealed under a key derived from it). Default: DB
        /// + ".log-key" for SQLite; required for PostgreSQL.
        #[arg(long)]
        log_key: Option<PathBuf>,
    },
    /// Verify the security log: walk its hash chain and hold it to its latest checkpoint signed
    /// by the log key. Exit 0 if intact, 1 if tampered with, 2 if it cannot be read.
    VerifyLog {
        /// The database, as for serving: a SQLite file or postgres://… (the password from
        /// KEYWARD_DB_PASSWORD_FILE or KEYWARD_DB_PASSWORD; TLS files from
        /// KEYWARD_DB_CA_FILE, KEYWARD_DB_CERT_FILE, KEYWARD_DB_KEY_FILE, KEYWARD_DB_CRL_FILE).
        #[arg(long)]
        db: String,
        /// The log key. Default: DB + ".log-key".
        #[arg(long)]
        log_key: Option<PathBuf>,
    },
    /// Read everything keywardd would read at start (the settings, the log key, the TLS files,
    /// the web UI, the database's answer) without serving or changing anything. Takes the
    /// same flags, environment and --config as serving, given before it:
    /// `keywardd --config /etc/keyward/keywardd.toml check-config`. Exit 0 fine, 2 not.
    CheckConfig,
    /// The operator's console, over the database keywardd serves (the same flags, environment
    /// and --config, given before it: `keywardd --config FILE admin accounts`). It can see
    /// how protected accounts are and disable one for abuse; it cannot add or reset a key,
    /// shorten a recovery, or sign anyone in. Prints JSON. Exit 0 done, 2 refused.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Back up the database while keywardd serves: a consistent copy as of one commit (SQLite's
    /// online backup API; PostgreSQL through pg_dump's custom format). The log key is not in
    /// it: keep that file apart. Exit 0 done, 2 nothing written.
    Backup {
        /// The database, as for serving: a SQLite file or postgres://… (the password from
        /// KEYWARD_DB_PASSWORD_FILE or KEYWARD_DB_PASSWORD, a CA from KEYWARD_DB_CA_FILE).
        #[arg(long)]
        db: String,
        /// The backup file to write; refused if it exists.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into a database holding no Keyward data (a new SQLite file, or an
    /// empty PostgreSQL database), then verify its security log with the log key. Exit 0
    /// restored and intact, 1 the restored log fails verification, 2 nothing restored.
    Restore {
        /// The backup file `keywardd backup` wrote.
        #[arg(long)]
        from: PathBuf,
        /// Where to restore it, as for serving.
        #[arg(long)]
        db: String,
        /// The log key. Default: DB + ".log-key" for SQLite; required for PostgreSQL.
        #[arg(long)]
        log_key: Option<PathBuf>,
    },
    /// Move a deployment from SQLite to PostgreSQL: copy every row into an empty database in
    /// one transaction, keeping the security log's numbers, hashes and signed checkpoints, then
    /// verify the copy's log with the log key. Stop keywardd first. Exit 0 done, 1 the copy's
    /// log fails verification, 2 nothing copied.
    Migrate {
        /// The SQLite database: sqlite:PATH or a path.
        #[arg(long)]
        from: String,
        /// The empty database to copy into: postgres://… (the password from
        /// KEYWARD_DB_PASSWORD_FILE or KEYWARD_DB_PASSWORD; TLS files from
        /// KEYWARD_DB_CA_FILE, KEYWARD_DB_CERT_FILE, KEYWARD_DB_KEY_FILE, KEYWARD_DB_CRL_FILE).
        #[arg(long)]
        to: String,
        /// The log key, which the new deployment keeps using. Default: the SQLite file +
        /// ".log-key".
        #[arg(long)]
        log_key: Option<PathBuf>,
    },
}

/// `keywardd client …`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Register an app. A confidential app's secret is printed once; only its hash is kept.
    Add {
        /// The database, as for serving.
        #[arg(long)]
        db: String,
        /// The name people see on the consent screen.
        #[arg(long)]
        name: String,
        /// An exact redirect URI (repeat for several); https, or http only to localhost.
        #[arg(long = "redirect-uri", required_unless_present = "device")]
        redirect_uris: Vec<String>,
        /// Where the app may send people after signing them out (repeat for several).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// A scope it may ask for (repeat): openid, profile. Default: both.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// client_secret_basic (default), client_secret_post, private_key_jwt (with
        /// --jwks-file), or none for a public app (a
        /// browser or native app that cannot keep a secret; PKCE is required of all apps).
        #[arg(long)]
        auth_method: Option<String>,
        /// The app's OpenID back-channel logout endpoint.
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// The client ID to use instead of a random one.
        #[arg(long)]
        client_id: Option<String>,
        /// Allow the device authorization grant (RFC 8628): an AI agent or CLI shows a code
        /// that the person approves with a key touch. Needs no redirect URI.
        #[arg(long)]
        device: bool,
        /// For private_key_jwt: a file with the app's public keys (a JWKS); the app then
        /// authenticates with JWTs signed by them instead of a secret.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
    },
    /// List the registered apps (never their secrets).
    List {
        #[arg(long)]
        db: String,
    },
    /// Remove an app: its consents, sign-ins and tokens end with it.
    Remove {
        #[arg(long)]
        db: String,
        #[arg(long)]
        client_id: String,
    },
    /// Make a secret for a confidential app of the config file: prints the secret (for the
    /// app) and its hash (for the file's secret_hash). Touches no database.
    NewSecret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestedModelFile {
    ca_pem_file: PathBuf,
    aaguid: uuid::Uuid,
    name: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    attested_models: Vec<AttestedModelFile>,
    listen: Option<SocketAddr>,
    db: Option<String>,
    db_password_file: Option<PathBuf>,
    db_pool: Option<u32>,
    db_ca_file: Option<PathBuf>,
    db_cert_file: Option<PathBuf>,
    db_key_file: Option<PathBuf>,
    db_crl_file: Option<PathBuf>,
    log_key: Option<PathBuf>,
    rp_id: Option<String>,
    rp_name: Option<String>,
    #[serde(default)]
    origins: Vec<Url>,
    idle_timeout: Option<u64>,
    session_lifetime: Option<u64>,
    browser_cookie_life: Option<u64>,
    agent_idle_timeout: Option<u64>,
    agent_lifetime: Option<u64>,
    recovery_window: Option<u64>,
    recovery_enrolment_deadline: Option<u64>,
    #[serde(default)]
    require_device_bound: bool,
    #[serde(default)]
    require_bound_sessions: bool,
    #[serde(default)]
    check_host: bool,
    place_db: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    web_ui: Option<PathBuf>,
    #[serde(default)]
    trusted_proxies: Vec<Cidr>,
    header_timeout: Option<u64>,
    max_connections: Option<usize>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    oidc_clients: Vec<crate::oidc::NewClient>,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub db: Location,
    /// The security log's signing key; None: beside a SQLite database (`<db>.log-key`).
    pub log_key: Option<PathBuf>,
    pub rp_id: String,
    pub rp_name: String,
    pub origins: Vec<Url>,
    pub policy: Policy,
    pub limits: Limits,
    pub tls: Option<Tls>,
    /// Empty: any user-verifying authenticator may register. Otherwise only these models.
    pub attested_models: Vec<AttestedModel>,
    pub place_db: Option<PathBuf>,
    /// A folder holding the built web UI; browsers get it at `/`.
    pub web_ui: Option<PathBuf>,
    /// Reverse proxies whose forwarded headers name the client; empty: the TCP peer is.
    pub trusted_proxies: Vec<Cidr>,
    /// How long a connection may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// Event streams one session may hold open; one more is refused.
    pub max_streams_per_session: usize,
    /// Where `/metrics` is served; None: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How often an event stream reads the log even if it heard of no commit (a PostgreSQL
    /// notification can be lost while a listener reconnects).
    pub stream_poll_every: Duration,
    /// Apps the config file registers (`[[oidc_clients]]`), kept in the database as it says.
    pub oidc_clients: Vec<crate::oidc::NewClient>,
    /// Refuse a request whose `Host` is not one of the origins' host:port (for a `localhost`
    /// origin, a loopback address on its port too): a page on another site that rebinds its
    /// name to 127.0.0.1 then reaches nothing. On for loopback servers (`Config::local`, the
    /// desktop's embedded keywardd); opt-in elsewhere, because a reverse proxy may send the
    /// upstream's address as Host.
    pub check_host: bool,
}

pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_STREAMS_PER_SESSION: usize = 8;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

impl Config {
    /// Where the security log's signing key rests. PostgreSQL has no file to put it beside:
    /// `validate` requires it to be configured.
    pub fn log_key_path(&self) -> Result<PathBuf, ConfigError> {
        match log_key_path(self.log_key.clone(), &self.db) {
            Some(path) => Ok(path),
            None => Err(ConfigError::Invalid(
                "with PostgreSQL, --log-key must name the log key's file (the same key on every \
                 instance)"
                    .into(),
            )),
        }
    }

    /// A configuration for a server on loopback, as tests and the desktop app's embedded
    /// server use. The origin must still be set to the real port once it is known.
    pub fn local(db: impl Into<Location>, origin: Url) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db: db.into(),
            log_key: None,
            rp_id: "localhost".into(),
            rp_name: "Keyward".into(),
            origins: vec![origin],
            policy: Policy::default(),
            limits: Limits::default(),
            tls: None,
            attested_models: Vec::new(),
            place_db: None,
            web_ui: None,
            trusted_proxies: Vec::new(),
            header_read_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams_per_session: DEFAULT_MAX_STREAMS_PER_SESSION,
            metrics_listen: None,
            stream_poll_every: crate::http::stream::POLL_EVERY,
            check_host: true,
            oidc_clients: Vec::new(),
        }
    }

    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(Tls { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key go together".into(),
                ));
            }
        };
        let rp_id = args
            .rp_id
            .or(file.rp_id)
            .unwrap_or_else(|| "localhost".into());
        let mut origins = if args.origins.is_empty() {
            file.origins
        } else {
            args.origins
        };
        if origins.is_empty() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://{rp_id}:{}", listen.port());
            origins.push(
                Url::parse(&url).map_err(|e| ConfigError::Invalid(format!("origin {url}: {e}")))?,
            );
        }
        let secs = |v: Option<u64>| v.map(|s| (s as i64).saturating_mul(1000));
        let mut policy = Policy::default();
        if let Some(ms) = secs(args.idle_timeout.or(file.idle_timeout)) {
            policy.session_idle_ms = ms;
        }
        if let Some(ms) = secs(args.session_lifetime.or(file.session_lifetime)) {
            policy.session_absolute_ms = ms;
        }
        if let Some(ms) = secs(args.browser_cookie_life.or(file.browser_cookie_life)) {
            policy.browser_cookie_ms = ms;
        }
        // A cookie outliving the idle timeout would be refused before it expired anyway.
        policy.browser_cookie_ms = policy.browser_cookie_ms.min(policy.session_idle_ms);
        if let Some(ms) = secs(args.agent_idle_timeout.or(file.agent_idle_timeout)) {
            policy.agent_idle_ms = ms;
        }
        if let Some(ms) = secs(args.agent_lifetime.or(file.agent_lifetime)) {
            policy.agent_absolute_ms = ms;
        }
        if let Some(ms) = secs(args.recovery_window.or(file.recovery_window)) {
            policy.recovery_window_ms = ms;
        }
        if let Some(ms) = secs(
            args.recovery_enrolment_deadline
                .or(file.recovery_enrolment_deadline),
        ) {
            policy.recovery_enrolment_ms = ms;
        }
        policy.require_device_bound = args.require_device_bound || file.require_device_bound;
        policy.require_bound_sessions = args.require_bound_sessions || file.require_bound_sessions;
        let attested_models = file
            .attested_models
            .into_iter()
            .map(|m| {
                let ca_pem = std::fs::read_to_string(&m.ca_pem_file).map_err(|source| {
                    ConfigError::Read {
                        path: m.ca_pem_file.clone(),
                        source,
                    }
                })?;
                Ok(AttestedModel {
                    ca_pem,
                    aaguid: m.aaguid,
                    name: m.name,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let config = Config {
            attested_models,
            place_db: args.place_db.or(file.place_db),
            web_ui: args.web_ui.or(file.web_ui),
            check_host: args.check_host || file.check_host,
            listen,
            log_key: args.log_key.or(file.log_key),
            db: database(
                args.db.or(file.db),
                DbFiles {
                    password: args.db_password_file.or(file.db_password_file),
                    ca: args.db_ca_file.or(file.db_ca_file),
                    cert: args.db_cert_file.or(file.db_cert_file),
                    key: args.db_key_file.or(file.db_key_file),
                    crl: args.db_crl_file.or(file.db_crl_file),
                },
                args.db_pool.or(file.db_pool),
            )?,
            rp_name: args
                .rp_name
                .or(file.rp_name)
                .unwrap_or_else(|| "Keyward".into()),
            rp_id,
            origins,
            policy,
            limits: Limits::default(),
            tls,
            trusted_proxies: if args.trusted_proxies.is_empty() {
                file.trusted_proxies
            } else {
                args.trusted_proxies
            },
            header_read_timeout: args
                .header_timeout
                .or(file.header_timeout)
                .map_or(DEFAULT_HEADER_TIMEOUT, Duration::from_secs),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_streams_per_session: DEFAULT_MAX_STREAMS_PER_SESSION,
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            stream_poll_every: crate::http::stream::POLL_EVERY,
            oidc_clients: file.oidc_clients,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses a configuration whose origins could not run ceremonies for the RP ID, and
    /// lifetimes that break the AAL3 bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.rp_id.is_empty() || self.rp_id.contains(['/', ':']) {
            return invalid(format!(
                "RP ID '{}' must be a bare domain such as example.com",
                self.rp_id
            ));
        }
        if self.origins.is_empty() {
            return invalid("at least one origin is needed".into());
        }
        for origin in &self.origins {
            let host = origin.host_str().unwrap_or_default();
            let within = host == self.rp_id || host.ends_with(&format!(".{}", self.rp_id));
            if !within {
                return invalid(format!(
                    "origin {origin} is not within RP ID '{}': credentials made there could never be used",
                    self.rp_id
                ));
            }
            match origin.scheme() {
                "https" => {}
                "http" if host == "localhost" => {}
                _ => {
                    return invalid(format!(
                        "origin {origin} must be https (http only for localhost)"
                    ));
                }
            }
            if origin.path() != "/" || origin.query().is_some() {
                return invalid(format!(
                    "origin {origin} must be scheme://host[:port] with nothing after"
                ));
            }
        }
        self.log_key_path()?;
        let p = &self.policy;
        if p.session_idle_ms <= 0 || p.session_absolute_ms <= 0 {
            return invalid("session lifetimes must be positive".into());
        }
        if p.session_idle_ms > p.session_absolute_ms {
            return invalid("the idle timeout cannot exceed the session lifetime".into());
        }
        if p.browser_cookie_ms < 1000 {
            return invalid("a browser-bound cookie lives at least a second".into());
        }
        if p.agent_idle_ms <= 0 || p.agent_idle_ms > keyward_core::policy::AGENT_IDLE_CAP_MS {
            return invalid("an agent's idle timeout is 1 s to 24 h".into());
        }
        if p.agent_absolute_ms < p.agent_idle_ms
            || p.agent_absolute_ms > keyward_core::policy::AGENT_ABSOLUTE_CAP_MS
        {
            return invalid(
                "an agent's lifetime is at least its idle timeout and at most 30 days".into(),
            );
        }
        if p.ceremony_ttl_ms > 5 * 60_000 {
            return invalid("ceremonies may live at most 5 minutes".into());
        }
        if p.recovery_window_ms < 0 {
            return invalid("the recovery window cannot be negative".into());
        }
        if self.header_read_timeout.is_zero() {
            return invalid("the header timeout must be positive".into());
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1".into());
        }
        if let Some(dir) = &self.web_ui
            && !dir.join("index.html").is_file()
        {
            return invalid(format!(
                "web UI folder {} has no index.html (build it with `npm run build` in ui/)",
                dir.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn args(rp: &str, origin: &str) -> Args {
        Args {
            rp_id: Some(rp.into()),
            origins: vec![Url::parse(origin).unwrap()],
            ..Args::default()
        }
    }

    #[test]
    fn refuses_an_rp_id_that_does_not_match_the_origins() {
        let err = Config::from_args(args("example.com", "https://evil.org")).unwrap_err();
        assert!(err.to_string().contains("not within RP ID"), "{err}");
        assert!(Config::from_args(args("example.com", "https://notexample.com")).is_err());
        assert!(
            Config::from_args(args("example.com", "http://login.example.com")).is_err(),
            "plain http"
        );
        assert!(Config::from_args(args("example.com", "https://login.example.com")).is_ok());
        assert!(Config::from_args(args("localhost", "http://localhost:8443")).is_ok());
    }

    #[test]
    fn the_db_ca_file_is_for_postgresql_and_the_ca_is_given_once() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let ca_only = || DbFiles {
            ca: Some(ca.clone()),
            ..DbFiles::default()
        };
        let sqlite = database(Some("keyward.db".into()), ca_only(), None);
        assert!(sqlite.unwrap_err().to_string().contains("for PostgreSQL"));
        let twice = database(
            Some("postgres://k@db/k?sslrootcert=/etc/ca.pem".into()),
            ca_only(),
            None,
        );
        assert!(twice.unwrap_err().to_string().contains("--db-ca-file"));
        let plain = database(
            Some("postgres://k@db/k?sslmode=disable".into()),
            ca_only(),
            None,
        );
        assert!(plain.is_err());
        let location = database(
            Some("postgres://k@db/k?sslmode=verify-full".into()),
            DbFiles {
                password: Some(password),
                ..ca_only()
            },
            None,
        )
        .unwrap();
        let Location::Postgres(options) = &location else {
            panic!("{location:?}")
        };
        assert_eq!(options.ssl_mode(), keyward_core::store::SslMode::VerifyFull);
        assert!(options.has_password());
        assert_eq!(
            location.to_string(),
            "postgres://k@db/k?sslmode=verify-full"
        );
        let file: FileConfig = toml::from_str("db_ca_file = \"/etc/keyward/db-ca.pem\"").unwrap();
        assert_eq!(
            file.db_ca_file,
            Some(PathBuf::from("/etc/keyward/db-ca.pem"))
        );
    }

    #[test]
    fn the_db_client_certificate_and_crl_files_are_for_postgresql_and_given_once() {
        let files = |cert: Option<&str>, key: Option<&str>, crl: Option<&str>| DbFiles {
            cert: cert.map(PathBuf::from),
            key: key.map(PathBuf::from),
            crl: crl.map(PathBuf::from),
            ..DbFiles::default()
        };
        let url = |query: &str| Some(format!("postgres://k@db/k?sslmode=verify-full{query}"));
        let error =
            |db: Option<String>, files: DbFiles| database(db, files, None).unwrap_err().to_string();
        // Flags alone: the files are only named here (read when the store connects).
        database(
            url(""),
            files(Some("/c.pem"), Some("/k.pem"), Some("/crl.pem")),
            None,
        )
        .unwrap();
        let sqlite = error(
            Some("keyward.db".into()),
            files(None, None, Some("/crl.pem")),
        );
        assert!(sqlite.contains("for PostgreSQL"), "{sqlite}");
        let half = error(url(""), files(Some("/c.pem"), None, None));
        assert!(half.contains("go together"), "{half}");
        let half = error(url(""), files(None, Some("/k.pem"), None));
        assert!(half.contains("go together"), "{half}");
        let twice = error(
            url("&sslcert=/u.pem&sslkey=/u.key"),
            files(Some("/c.pem"), Some("/k.pem"), None),
        );
        assert!(
            twice.contains("--db-cert-file") && twice.contains("twice"),
            "{twice}"
        );
        let twice = error(url("&sslcrl=/u.crl"), files(None, None, Some("/crl.pem")));
        assert!(
            twice.contains("--db-crl-file") && twice.contains("twice"),
            "{twice}"
        );
        let plain = error(
            Some("postgres://k@db/k?sslmode=disable".into()),
            files(Some("/c.pem"), Some("/k.pem"), None),
        );
        assert!(plain.contains("sslmode=disable"), "{plain}");

        let file: FileConfig = toml::from_str(
            "db_cert_file = \"/etc/keyward/db.crt\"\n\
             db_key_file = \"/etc/keyward/db.key\"\n\
             db_crl_file = \"/etc/keyward/db.crl\"\n",
        )
        .unwrap();
        assert_eq!(
            file.db_cert_file,
            Some(PathBuf::from("/etc/keyward/db.crt"))
        );
        assert_eq!(file.db_key_file, Some(PathBuf::from("/etc/keyward/db.key")));
        assert_eq!(file.db_crl_file, Some(PathBuf::from("/etc/keyward/db.crl")));
    }

    #[test]
    fn reads_a_toml_file_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.toml");
        std::fs::write(
            &path,
            "rp_id = \"example.com\"\norigins = [\"https://example.com\"]\nidle_timeout = 600\n",
        )
        .unwrap();
        let c = Config::from_args(Args {
            config: Some(path.clone()),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(c.rp_id, "example.com");
        assert_eq!(c.policy.session_idle_ms, 600_000);
        let c = Config::from_args(Args {
            config: Some(path),
            idle_timeout: Some(60),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(c.policy.session_idle_ms, 60_000);
    }

    #[test]
    fn trusted_proxies_come_from_flags_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.toml");
        std::fs::write(
            &path,
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nheader_timeout = 5\n",
        )
        .unwrap();
        let c = Config::from_args(Args {
            config: Some(path.clone()),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.header_read_timeout, Duration::from_secs(5));
        let c = Config::from_args(Args {
            config: Some(path.clone()),
            trusted_proxies: vec!["192.0.2.1".parse().unwrap()],
            ..Args::default()
        })
        .unwrap();
        assert_eq!(c.trusted_proxies, vec!["192.0.2.1".parse().unwrap()]);
        std::fs::write(&path, "trusted_proxies = [\"nonsense\"]\n").unwrap();
        assert!(
            Config::from_args(Args {
                config: Some(path),
                ..Args::default()
            })
            .is_err()
        );
    }

    mod fuzz {
        use super::*;
        proptest::proptest! {
            /// Any text as the TOML file: settings, or a clear `ConfigError`, never a panic.
            #[test]
            fn any_text_as_the_config_file_is_read_or_refused(text in "\\PC{0,200}") {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("keyward.toml");
                std::fs::write(&path, &text).unwrap();
                let _ = Config::from_args(Args { config: Some(path), ..Args::default() });
            }

            /// TOML-shaped lines with known keys and arbitrary values.
            #[test]
            fn known_keys_with_arbitrary_values_are_read_or_refused(
                key in proptest::sample::select(vec!["rp_id", "origins", "idle_timeout", "listen",
                    "db", "session_lifetime", "recovery_window", "require_device_bound", "require_bound_sessions", "log_key",
                    "db_ca_file", "db_cert_file", "db_key_file", "db_crl_file"]),
                value in "\\PC{0,40}",
            ) {
                let _ = toml::from_str::<FileConfig>(&format!("{key} = {value}"));
            }
        }
    }
}
