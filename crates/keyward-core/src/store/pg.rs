//! PostgreSQL: a pool of connections (r2d2), each with its prepared statements, and the
//! SERIALIZABLE transactions the store runs on them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use keyward_proto::SecurityEvent;
use postgres::{IsolationLevel, NoTls};

use super::sql::{Db, PgTx};
use super::{Durability, Tx};
use crate::error::{CoreError, Result};

/// How often a transaction that lost a serialisation conflict is run again before the
/// conflict is reported. Each retry waits a little longer, with jitter, so that the
/// transactions that collided do not collide again in step.
const ATTEMPTS: u32 = 12;

/// Serialises schema migrations across instances starting at once (an arbitrary key for
/// `pg_advisory_xact_lock`: "KW" and a version).
const MIGRATION_LOCK: i64 = 0x4b57_0001;

/// How to reach PostgreSQL: `--db postgres://…` plus what may not sit in the URL.
#[derive(Clone)]
pub struct PostgresOptions {
    config: postgres::Config,
    /// The URL as logs may show it: without its password.
    shown: String,
    /// Connections kept open by this instance.
    pub pool_size: u32,
}

impl PostgresOptions {
    pub fn from_url(url: &str) -> Result<PostgresOptions> {
        let config = postgres::Config::from_str(url)
            .map_err(|e| CoreError::BadLocation(format!("a PostgreSQL URL: {e}")))?;
        let shown = redact(url);
        Ok(PostgresOptions {
            config,
            shown,
            pool_size: 8,
        })
    }

    /// The password, read from a file or the environment rather than the command line.
    pub fn set_password(&mut self, password: &str) {
        self.config.password(password);
    }

    /// Adds `-c name=value` to the server options of every connection (tests give each
    /// harness its own schema through `search_path`).
    pub fn set_server_option(&mut self, option: &str) {
        let options = match self.config.get_options() {
            Some(existing) => format!("{existing} {option}"),
            None => option.to_string(),
        };
        self.config.options(&options);
    }

    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// A single connection outside the pool (tests, tools).
    pub fn connect_once(&self) -> Result<postgres::Client> {
        Ok(self.config.connect(NoTls)?)
    }
}

impl PartialEq for PostgresOptions {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown
    }
}
impl Eq for PostgresOptions {}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The URL with any password replaced, for logs and errors.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "postgres://…".into();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let query = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=…",
                    _ => pair,
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}?{query}")
        }
    };
    format!("{scheme}://{authority}{tail}")
}

/// A pooled connection and the statements prepared on it.
pub(super) struct Connection {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Connection, postgres::Error> {
        Ok(Connection {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> std::result::Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed()
    }
}

pub(super) struct Pool {
    pool: r2d2::Pool<Manager>,
}

impl Pool {
    /// Connects and brings the schema up to date; fails at once if the server cannot be
    /// reached, rather than at the first request.
    pub(super) fn connect(options: &PostgresOptions, migrations: &[&str]) -> Result<Pool> {
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .error_handler(Box::new(QuietErrors))
            .build(Manager {
                config: options.config.clone(),
            })
            .map_err(|e| CoreError::Unavailable(format!("PostgreSQL at {options:?}: {e}")))?;
        let pool = Pool { pool };
        pool.migrate(migrations)?;
        Ok(pool)
    }

    fn get(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool
            .get()
            .map_err(|e| CoreError::Unavailable(format!("no PostgreSQL connection: {e}")))
    }

    /// Applies the migrations the database has not seen; `keyward_schema.version` counts them.
    fn migrate(&self, migrations: &[&str]) -> Result<()> {
        let mut conn = self.get()?;
        let mut tx = conn.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS keyward_schema (version BIGINT NOT NULL);
             INSERT INTO keyward_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM keyward_schema);",
        )?;
        let found: i64 = tx.query_one("SELECT version FROM keyward_schema", &[])?.get(0);
        let known = migrations.len() as i64;
        if found > known {
            return Err(CoreError::SchemaTooNew { found, known });
        }
        for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql)?;
            tx.execute(
                "UPDATE keyward_schema SET version = $1",
                &[&((i + 1) as i64)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in SERIALIZABLE transactions until one commits, or fails for a reason other
    /// than a conflict, or the attempts run out. `publish` gets the events of the one that
    /// committed.
    pub(super) fn transact<T, E: From<CoreError>>(
        &self,
        durability: Durability,
        log_key: Option<&SigningKey>,
        mut f: impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
        publish: impl Fn(&[SecurityEvent]),
    ) -> std::result::Result<(T, usize), E> {
        let mut conn = self.get()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Connection { client, statements } = &mut *conn;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::Serializable)
                .start()
                .map_err(CoreError::from)?;
            let mut wrapped = Tx::new(Db::Postgres(RefCell::new(PgTx {
                tx,
                statements,
                conflicted: false,
            })));
            if durability == Durability::Unsynced {
                wrapped.execute("SET LOCAL synchronous_commit = off", &[])?;
            }
            let outcome = f(&mut wrapped);
            let conflicted = wrapped.conflicted();
            let retry = match outcome {
                Ok(value) => match wrapped.finish(log_key) {
                    Ok(appended) => {
                        publish(&appended);
                        return Ok((value, appended.len()));
                    }
                    Err(e) if e.is_conflict() && attempt < ATTEMPTS => true,
                    Err(e) => return Err(e.into()),
                },
                // Dropping the transaction rolls it back.
                Err(_) if conflicted && attempt < ATTEMPTS => true,
                Err(e) => return Err(e),
            };
            debug_assert!(retry);
            backoff(attempt);
        }
    }

    /// Runs `f` in a read-only REPEATABLE READ transaction: one snapshot, then rolled back.
    pub(super) fn read<T, E: From<CoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.get()?;
        let Connection { client, statements } = &mut *conn;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(CoreError::from)?;
        f(&mut Tx::new(Db::Postgres(RefCell::new(PgTx {
            tx,
            statements,
            conflicted: false,
        }))))
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

/// 1, 2, 4 … ms (capped at 64), times a random factor in [0.5, 1.5).
fn backoff(attempt: u32) {
    use rand::Rng;
    let base = 1u64 << attempt.min(6);
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    std::thread::sleep(Duration::from_micros((base as f64 * 1000.0 * jitter) as u64));
}

/// r2d2 logs every failed connection attempt through `log`; the store reports failures
/// itself, once, through its own error.
#[derive(Debug)]
struct QuietErrors;
impl r2d2::HandleError<postgres::Error> for QuietErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::debug!(%error, "PostgreSQL connection attempt failed");
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

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
    }
}
