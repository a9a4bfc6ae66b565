//! PostgreSQL: a pool of connections (r2d2), each with its prepared statements, and the
//! SERIALIZABLE transactions the store runs on them. The connections are tokio-postgres's;
//! their sockets are driven by one small runtime of the store's own ([`io_runtime`]), and
//! the store's synchronous calls wait on their futures in place, so a store may be used (and
//! dropped) from any thread, inside an async runtime or not. Every connection is made with
//! [`tls`]'s connector: `sslmode`, the trusted CAs, the client certificate and the CRLs are
//! there.

mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::executor::block_on;
use tokio_postgres::IsolationLevel;

use super::sql::{Db, PgTx, args};
use super::{Durability, Tx};
use crate::details::DetailKek;
use crate::error::{CoreError, Result, with_causes};

pub use self::tls::SslMode;
use self::tls::{Connector, TlsOptions};

/// How long a transaction that keeps losing serialisation conflicts is run again before it
/// gives up (as [`CoreError::Unavailable`]: the database is too busy). A time, not a count:
/// how many attempts it takes grows with the load (six clients signing in back to back on
/// three instances needed up to 24, where a fixed 12 answered some of them with errors). Each
/// retry waits a little longer, with jitter, so that the transactions that collided do not
/// collide again in step.
const RETRY_FOR: Duration = Duration::from_secs(5);

/// Serialises schema migrations across instances starting at once (an arbitrary key for
/// `pg_advisory_xact_lock`: "KW" and a version).
const MIGRATION_LOCK: i64 = 0x4b57_0001;

/// Held (at session level, around each write transaction) by one writer at a time across every
/// instance on the database. The log's one global head, the global ceremony counts and the
/// per-network counters make nearly every pair of concurrent writers conflict under
/// SERIALIZABLE; without the lock, 64 clients signing in made transactions run out of
/// attempts (serialisation failures surfacing as 500s, measured with `./dev bench`). Taken
/// before BEGIN, so the transaction's snapshot is made after the previous writer committed.
/// SERIALIZABLE stays: correctness never rests on the lock. Lifting it (per-account chains,
/// counts that do not meet in one row) is issue 14's.
const WRITER_LOCK: i64 = 0x4b57_0002;

/// How to reach PostgreSQL: `--db postgres://…` plus what may not sit in the URL.
#[derive(Clone)]
pub struct PostgresOptions {
    pub(super) config: tokio_postgres::Config,
    /// `sslmode` and the TLS files (tokio-postgres's `Config` holds neither `verify-*` nor
    /// any of them).
    pub(super) tls: TlsOptions,
    /// The URL as logs may show it: without its password.
    shown: String,
    /// Connections kept open by this instance.
    pub pool_size: u32,
}

impl PostgresOptions {
    /// Parses `postgres://…`: tokio-postgres's options, plus `sslmode=verify-ca|verify-full`,
    /// `sslrootcert=PATH|system`, `sslcert=PATH`, `sslkey=PATH` and `sslcrl=PATH`, which it
    /// does not know (see [`tls`]).
    pub fn from_url(url: &str) -> Result<PostgresOptions> {
        let (rest, tls) = TlsOptions::take_from_url(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            CoreError::BadLocation(format!("a PostgreSQL URL: {}", with_causes(&e)))
        })?;
        config.ssl_mode(tls.mode.negotiation());
        Ok(PostgresOptions {
            config,
            tls,
            shown: redact(url),
            pool_size: 8,
        })
    }

    /// `--db-ca-file`: verify the server against the CA certificates in this PEM file rather
    /// than the system's. Refused if the URL names a CA too, or turns TLS off.
    pub fn set_ca_file(&mut self, path: PathBuf) -> Result<()> {
        self.tls.set_ca_file(path)
    }

    /// `--db-cert-file` and `--db-key-file`: show PostgreSQL this PEM certificate (chain),
    /// signing with the PEM private key in `key` (an owner-only file, checked when the store
    /// connects). Refused if the URL names a client certificate too, or turns TLS off.
    pub fn set_client_cert(&mut self, cert: PathBuf, key: PathBuf) -> Result<()> {
        self.tls.set_client_cert(cert, key)
    }

    /// `--db-crl-file`: check the server's certificate chain against the PEM CRLs in this
    /// file. Refused if the URL names a CRL too, or turns TLS off.
    pub fn set_crl_file(&mut self, path: PathBuf) -> Result<()> {
        self.tls.set_crl_file(path)
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// The password, read from a file or the environment rather than the command line.
    pub fn set_password(&mut self, password: &str) {
        self.config.password(password);
    }

    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// A single connection outside the pool (tests, tools).
    pub fn connect_once(&self) -> Result<tokio_postgres::Client> {
        connect(&self.config, &self.tls.connector()?)
    }
}

impl PartialEq for PostgresOptions {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown && self.tls == other.tls
    }
}
impl Eq for PostgresOptions {}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The URL's keys whose values never show: the password, and libpq's password for a client
/// key (which [`tls`] refuses, but the URL may still be shown). `sslkey` names a file, and
/// shows.
const SECRET_KEYS: &[&str] = &["password", "sslpassword"];

/// The URL with any password replaced, for logs and errors.
fn redact(url: &str) -> String {
    let Some(cut) = UrlCut::of(url) else {
        return "postgres://…".into();
    };
    let credentials = match cut.credentials {
        Some(credentials) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{user}@")
        }
        None => String::new(),
    };
    let query = match cut.query {
        None => String::new(),
        Some(query) => {
            let query = query
                .split('&')
                .map(|pair| {
                    let (key, _) = pair.split_once('=').unwrap_or((pair, ""));
                    // Decoded, as tokio-postgres reads keys: `pass%77ord` is the password.
                    let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
                    if SECRET_KEYS.contains(&key.as_ref()) {
                        format!("{key}=…")
                    } else {
                        pair.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("?{query}")
        }
    };
    format!("{}{credentials}{}{query}", cut.scheme, cut.hosts_and_path)
}

/// A `postgres://` URL cut where tokio-postgres cuts it: the credentials run to the first
/// `@` (a password may hold `?` or `/`), the query from the first `?` after them.
struct UrlCut<'a> {
    /// `postgres://`
    scheme: &'a str,
    /// `user[:password]`, without the `@`.
    credentials: Option<&'a str>,
    hosts_and_path: &'a str,
    /// Without the `?`.
    query: Option<&'a str>,
}

impl UrlCut<'_> {
    fn of(url: &str) -> Option<UrlCut<'_>> {
        let start = url.find("://")? + 3;
        let (scheme, rest) = url.split_at(start);
        let (credentials, rest) = match rest.split_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts_and_path, query) = match rest.split_once('?') {
            Some((hosts_and_path, query)) => (hosts_and_path, Some(query)),
            None => (rest, None),
        };
        Some(UrlCut {
            scheme,
            credentials,
            hosts_and_path,
            query,
        })
    }

    /// Everything before the query, as it was.
    fn base(&self) -> String {
        match self.credentials {
            Some(credentials) => format!("{}{credentials}@{}", self.scheme, self.hosts_and_path),
            None => format!("{}{}", self.scheme, self.hosts_and_path),
        }
    }
}

/// The runtime that drives every PostgreSQL connection's socket: one thread, for I/O only.
/// Process-wide and never dropped (a runtime may not be dropped inside another).
fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    // Built inside `get_or_init`, which makes racing callers wait: a second runtime built and
    // dropped by the loser of a race would panic inside an async context.
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("keyward-postgres")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| CoreError::Unavailable(format!("the PostgreSQL I/O thread: {e}")))
}

/// Opens a connection whose socket the I/O runtime drives.
fn connect(config: &tokio_postgres::Config, tls: &Connector) -> Result<tokio_postgres::Client> {
    let config = config.clone();
    let make = tls.make.clone();
    let connecting = io_runtime()?.spawn(async move {
        let (client, connection) = config.connect(make).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a PostgreSQL connection ended");
            }
        });
        Ok::<_, tokio_postgres::Error>(client)
    });
    block_on(connecting)
        .map_err(|e| CoreError::Unavailable(format!("the PostgreSQL I/O thread: {e}")))?
        .map_err(|e| tls.explain(e))
}

/// Applies the migrations the database has not seen; `keyward_schema.version` counts them.
fn migrate(client: &mut tokio_postgres::Client, migrations: &[&str]) -> Result<()> {
    block_on(async {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS keyward_schema (version BIGINT NOT NULL);
             INSERT INTO keyward_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM keyward_schema);",
        )
        .await?;
        let found: i64 = tx
            .query_one("SELECT version FROM keyward_schema", &[])
            .await?
            .get(0);
        let known = migrations.len() as i64;
        if found > known {
            return Err(CoreError::SchemaTooNew { found, known });
        }
        for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "UPDATE keyward_schema SET version = $1",
                &[&((i + 1) as i64)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// A pooled connection and the statements prepared on it.
pub(super) struct Connection {
    client: tokio_postgres::Client,
    statements: HashMap<String, tokio_postgres::Statement>,
    /// Releasing the writer lock failed: the connection may still hold it, so it is never
    /// used again (`has_broken`).
    may_hold_lock: bool,
}

struct Manager {
    config: tokio_postgres::Config,
    tls: Connector,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = CoreError;

    fn connect(&self) -> Result<Connection> {
        Ok(Connection {
            client: connect(&self.config, &self.tls)?,
            statements: HashMap::new(),
            may_hold_lock: false,
        })
    }

    /// Checked at every checkout without a round trip: a connection the server closed (a
    /// restart, say) is closed here by the time it is looked at again, since its I/O task
    /// reads the server's goodbye. One that dies unnoticed fails its first statement, which
    /// the caller sees as `unavailable`, and is dropped when it comes back.
    fn is_valid(&self, conn: &mut Connection) -> Result<()> {
        if conn.client.is_closed() || conn.may_hold_lock {
            return Err(CoreError::Unavailable(
                "the PostgreSQL connection closed".into(),
            ));
        }
        Ok(())
    }

    /// No connection goes back to the pool holding the writer lock.
    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed() || conn.may_hold_lock
    }
}

pub(super) struct Pool {
    pool: r2d2::Pool<Manager>,
    config: tokio_postgres::Config,
    tls: Connector,
    /// Names this process in its commits' notifications, so it can ignore its own.
    instance: String,
}

/// The channel every commit that appends events notifies, with the accounts it touched.
const EVENTS_CHANNEL: &str = "keyward_events";

/// What another instance committed, as the listener heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCommit {
    /// New events for these accounts (read them from the log), and sessions whose token was
    /// replaced (streams opened with the old one end).
    Changed {
        accounts: Vec<uuid::Uuid>,
        tokens_replaced: Vec<uuid::Uuid>,
    },
    /// The listener was (re)connected: notifications may have been lost while it was not, so
    /// every stream should catch up from the log.
    MayHaveMissed,
}

impl Pool {
    /// Connects and brings the schema up to date; fails at once if the server cannot be
    /// reached (or its certificate is refused), rather than at the first request, and with
    /// the reason rather than the pool's timeout.
    pub(super) fn connect(options: &PostgresOptions, migrations: &[&str]) -> Result<Pool> {
        let tls = options.tls.connector()?;
        let mut first = connect(&options.config, &tls)?;
        migrate(&mut first, migrations)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .error_handler(Box::new(QuietErrors))
            .build(Manager {
                config: options.config.clone(),
                tls: tls.clone(),
            })
            .map_err(|e| CoreError::Unavailable(format!("PostgreSQL at {options:?}: {e}")))?;
        Ok(Pool {
            pool,
            config: options.config.clone(),
            tls,
            instance: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    fn get(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool
            .get()
            .map_err(|e| CoreError::Unavailable(format!("no PostgreSQL connection: {e}")))
    }

    /// Runs `f` in SERIALIZABLE transactions until one commits, or fails for a reason other
    /// than a conflict, or [`RETRY_FOR`] has passed. `publish` gets the events of the one
    /// that committed.
    pub(super) fn transact<T, E: From<CoreError>>(
        &self,
        durability: Durability,
        log_key: Option<&SigningKey>,
        kek: Option<DetailKek>,
        mut f: impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
        publish: impl Fn(&super::Committed),
    ) -> std::result::Result<(T, usize), E> {
        let mut conn = self.get()?;
        block_on(
            conn.client
                .execute("SELECT pg_advisory_lock($1)", &[&WRITER_LOCK]),
        )
        .map_err(CoreError::from)?;
        // Until the unlock succeeds: should `f` panic, or the unlock fail, the pool closes the
        // connection rather than keep it (`Manager::has_broken`), and closing releases the lock.
        conn.may_hold_lock = true;
        let outcome = self.attempts(&mut conn, durability, log_key, kek, &mut f, &publish);
        match block_on(
            conn.client
                .execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK]),
        ) {
            Ok(_) => conn.may_hold_lock = false,
            Err(error) => tracing::warn!(%error, "releasing the PostgreSQL writer lock"),
        }
        outcome
    }

    /// `transact`'s attempts, under the writer lock.
    fn attempts<T, E: From<CoreError>>(
        &self,
        conn: &mut Connection,
        durability: Durability,
        log_key: Option<&SigningKey>,
        kek: Option<DetailKek>,
        f: &mut impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
        publish: &impl Fn(&super::Committed),
    ) -> std::result::Result<(T, usize), E> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Connection {
                client, statements, ..
            } = &mut *conn;
            let tx = block_on(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start(),
            )
            .map_err(CoreError::from)?;
            let mut wrapped = Tx::new(
                Db::Postgres(RefCell::new(PgTx {
                    tx,
                    statements,
                    conflicted: false,
                })),
                kek.clone(),
            );
            if durability == Durability::Unsynced {
                wrapped.execute("SET LOCAL synchronous_commit = off", &[])?;
            }
            let mut outcome = f(&mut wrapped);
            if outcome.is_ok()
                && !(wrapped.appended.is_empty() && wrapped.replaced_tokens.is_empty())
            {
                // NOTIFY is transactional: other instances hear of the commit when it commits,
                // in commit order, and never of one rolled back.
                if let Err(e) = wrapped.execute(
                    "SELECT pg_notify(?1, ?2)",
                    args![EVENTS_CHANNEL, self.notice_of(&wrapped)],
                ) {
                    outcome = Err(e.into());
                }
            }
            // A statement lost a conflict: the transaction is dead whatever `f` made of the
            // error (committing it would only roll it back), so it runs again. Dropping it
            // rolls it back.
            if !wrapped.conflicted() {
                match outcome {
                    Ok(value) => match wrapped.finish(log_key) {
                        Ok(committed) => {
                            publish(&committed);
                            return Ok((value, committed.events.len()));
                        }
                        Err(e) if e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    },
                    Err(e) => return Err(e),
                }
            }
            if started.elapsed() >= RETRY_FOR {
                return Err(CoreError::Unavailable(format!(
                    "too busy: {attempt} attempts in {RETRY_FOR:?} lost serialisation conflicts"
                ))
                .into());
            }
            backoff(attempt);
        }
    }

    /// "instance:account,account:session,session": who committed, whose events, and whose
    /// tokens it replaced. (8000 bytes at most: 33 per account and per session, and no
    /// transaction touches hundreds.)
    fn notice_of(&self, tx: &Tx<'_>) -> String {
        let mut accounts: Vec<String> = tx
            .appended
            .iter()
            .map(|e| e.account_id.simple().to_string())
            .collect();
        accounts.sort();
        accounts.dedup();
        let sessions: Vec<String> = tx
            .replaced_tokens
            .iter()
            .map(|s| s.simple().to_string())
            .collect();
        format!(
            "{}:{}:{}",
            self.instance,
            accounts.join(","),
            sessions.join(",")
        )
    }

    /// Listens, on a connection of its own, for other instances' commits and hands each to
    /// `hook`; reconnects for as long as the process lives, telling `hook` after each
    /// (re)connection that something may have been missed.
    pub(super) fn listen(&self, hook: impl Fn(RemoteCommit) + Send + Sync + 'static) -> Result<()> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let instance = self.instance.clone();
        io_runtime()?.spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                match listen_once(&config, &tls, &instance, &hook).await {
                    Ok(()) => wait = Duration::from_millis(100),
                    Err(error) => {
                        let error = tls.explain(error);
                        tracing::warn!(%error, "listening for other instances' commits");
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        });
        Ok(())
    }

    /// Runs `f` in a read-only REPEATABLE READ transaction: one snapshot, then rolled back.
    pub(super) fn read<T, E: From<CoreError>>(
        &self,
        kek: Option<DetailKek>,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.get()?;
        let Connection {
            client, statements, ..
        } = &mut *conn;
        let tx = block_on(
            client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .map_err(CoreError::from)?;
        f(&mut Tx::new(
            Db::Postgres(RefCell::new(PgTx {
                tx,
                statements,
                conflicted: false,
            })),
            kek,
        ))
    }
}

impl Tx<'_> {
    fn conflicted(&self) -> bool {
        match &self.db {
            Db::Postgres(pg) => pg.borrow().conflicted,
            Db::Sqlite(_) => false,
        }
    }
}

/// One listening connection, until it breaks.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &Connector,
    instance: &str,
    hook: &(impl Fn(RemoteCommit) + Send + Sync),
) -> std::result::Result<(), tokio_postgres::Error> {
    use futures::StreamExt;
    let (client, mut connection) = config.connect(tls.make.clone()).await?;
    let (sender, mut messages) = futures::channel::mpsc::unbounded();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            // An error is the connection's last word: polled again, it answers "closed" at
            // once, for ever, and this loop would hold the I/O thread and fill the channel.
            let last = message.is_err();
            if sender.unbounded_send(message).is_err() || last {
                break;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
        .await?;
    // Listening from here on; whatever was committed before is in the log.
    hook(RemoteCommit::MayHaveMissed);
    let mut outcome = Ok(());
    while let Some(message) = messages.next().await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if let Some(commit) = read_notice(n.payload(), instance) {
                    hook(commit);
                }
            }
            Ok(_) => {}
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    driver.abort();
    drop(client);
    outcome
}

/// Another instance's notice, or None for this instance's own (its streams heard already).
fn read_notice(payload: &str, instance: &str) -> Option<RemoteCommit> {
    let mut parts = payload.split(':');
    let from = parts.next()?;
    if from == instance {
        return None;
    }
    let ids = |list: Option<&str>| -> Option<Vec<uuid::Uuid>> {
        list?
            .split(',')
            .filter(|id| !id.is_empty())
            .map(|id| uuid::Uuid::try_parse(id).ok())
            .collect()
    };
    match (ids(parts.next()), ids(parts.next()), parts.next()) {
        (Some(accounts), Some(tokens_replaced), None) => Some(RemoteCommit::Changed {
            accounts,
            tokens_replaced,
        }),
        // A notice this build cannot read still means "something changed".
        _ => Some(RemoteCommit::MayHaveMissed),
    }
}

/// 1, 2, 4 … ms (capped at 64), times a random factor in [0.5, 1.5).
fn backoff(attempt: u32) {
    use rand::Rng;
    let base = 1u64 << attempt.min(6);
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    std::thread::sleep(Duration::from_micros(
        (base as f64 * 1000.0 * jitter) as u64,
    ));
}

/// r2d2 logs every failed connection attempt through `log`; the store reports failures
/// itself, once, through its own error.
#[derive(Debug)]
struct QuietErrors;
impl r2d2::HandleError<CoreError> for QuietErrors {
    fn handle_error(&self, error: CoreError) {
        tracing::debug!(%error, "PostgreSQL connection attempt failed");
    }
}

#[cfg(test)]
mod tests {
    use super::{PostgresOptions, RemoteCommit, read_notice, redact};
    use crate::error::CoreError;

    /// A server that is not there is "unavailable" (keywardd answers 503, try again), not a
    /// database error (500), and says why.
    #[test]
    fn a_server_that_is_not_there_is_unavailable() {
        // Nothing listens on loopback's port 1: refused at once.
        let options = PostgresOptions::from_url("postgres://keyward@127.0.0.1:1/keyward");
        let error = options.and_then(|o| o.connect_once()).err();
        assert!(
            matches!(&error, Some(CoreError::Unavailable(why)) if why.contains("refused")),
            "{error:?}"
        );
    }

    #[test]
    fn notices_name_their_accounts_and_replaced_tokens_and_our_own_are_ignored() {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let s = uuid::Uuid::new_v4();
        let payload = format!("other:{},{}:{}", a.simple(), b.simple(), s.simple());
        assert_eq!(
            read_notice(&payload, "me"),
            Some(RemoteCommit::Changed {
                accounts: vec![a, b],
                tokens_replaced: vec![s],
            })
        );
        assert_eq!(read_notice(&payload, "other"), None);
        assert_eq!(
            read_notice(&format!("other::{}", s.simple()), "me"),
            Some(RemoteCommit::Changed {
                accounts: vec![],
                tokens_replaced: vec![s],
            }),
            "a step-up appends no event"
        );
        assert_eq!(
            read_notice(&format!("other:{}:", a.simple()), "me"),
            Some(RemoteCommit::Changed {
                accounts: vec![a],
                tokens_replaced: vec![],
            })
        );
        // What this build cannot read still means "something changed".
        for unreadable in ["other:not-a-uuid:", "garbage", "other:", "other:::"] {
            assert_eq!(
                read_notice(unreadable, "me"),
                Some(RemoteCommit::MayHaveMissed),
                "{unreadable}"
            );
        }
    }

    #[test]
    fn the_query_starts_after_the_credentials_and_errors_name_the_option() {
        let options =
            super::PostgresOptions::from_url("postgres://k:p?sslmode=disable@db/k?sslmode=require")
                .unwrap();
        assert_eq!(
            options.config.get_password(),
            Some(&b"p?sslmode=disable"[..])
        );
        assert_eq!(options.ssl_mode(), super::SslMode::Require);
        // libpq's, but not supported (only sslcrl is).
        let error = super::PostgresOptions::from_url("postgres://db/k?sslcrldir=/crls")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("unknown option `sslcrldir`"), "{error}");
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://keyward:s3cret@db.example:5432/keyward?sslmode=require"),
            "postgres://keyward@db.example:5432/keyward?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://db/keyward?user=k&password=s3cret"),
            "postgresql://db/keyward?user=k&password=…"
        );
        assert_eq!(
            redact("postgres://db/k?password=s3cret"),
            "postgres://db/k?password=…"
        );
        assert_eq!(redact("postgres://localhost"), "postgres://localhost");
        // tokio-postgres reads the credentials up to the first '@', so may a password hold
        // '?' or '/'.
        assert_eq!(
            redact("postgres://k:p?ss/w@db/k?sslmode=require"),
            "postgres://k@db/k?sslmode=require"
        );
        // Keys are read percent-decoded, so they are matched decoded.
        assert_eq!(
            redact("postgres://db/k?pass%77ord=s3cret&sslmode=verify-full"),
            "postgres://db/k?password=…&sslmode=verify-full"
        );
        assert_eq!(
            redact("postgres://db/k?sslrootcert=/etc/ca.pem&sslpassword=s3cret"),
            "postgres://db/k?sslrootcert=/etc/ca.pem&sslpassword=…"
        );
        // Parsed options show as the URL did, without the password.
        let options = super::PostgresOptions::from_url(
            "postgres://k:s3cret@db/k?sslmode=verify-full&sslrootcert=/ca.pem&password=s3cret",
        )
        .unwrap();
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sslmode=verify-full"), "{shown}");
    }
}
