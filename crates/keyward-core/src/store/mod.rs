//! The store: SQLite (the embedded default: one file, nothing to install) or PostgreSQL (for
//! several keywardd instances on one database). Every state change runs inside one
//! [`Store::write`] transaction, so consuming a challenge, updating a counter, creating a
//! session and logging the event commit together or not at all.
//!
//! - SQLite: WAL with `synchronous=FULL` (an acknowledged sign-in survives a power cut), one
//!   connection behind a lock, IMMEDIATE transactions: writes are serialised.
//! - PostgreSQL: a pool of connections, SERIALIZABLE transactions: each commits as if it ran
//!   alone, which is what SQLite's single writer gives. One that loses a conflict to a
//!   concurrent transaction (on this instance or another) is rolled back and run again, so
//!   the closures passed to `write` are `FnMut` and must not act outside the transaction.
//!
//! Layout: this file opens the database and runs transactions; [`sql`] runs one statement on
//! either engine; [`postgres`](self::pg) holds the pool; each table's row types, SQL (written
//! once, for both engines) and row decoders live in its own module and add methods to [`Tx`].
//! The log's rules (urgency, hashing, chain checks) are in [`crate::security_log`], not in SQL.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, TransactionBehavior};
use uuid::Uuid;

use keyward_proto::SecurityEvent;

use crate::details::DetailKek;
use crate::error::{CoreError, Result};

mod accounts;
mod authenticators;
pub mod backup;
mod browser_bindings;
mod ceremonies;
mod checkpoints;
mod copy;
mod events;
mod limits;
mod oidc_clients;
mod oidc_consents;
mod oidc_device_codes;
mod oidc_grants;
mod oidc_keys;
mod oidc_logouts;
mod oidc_requests;
mod oidc_tokens;
mod pg;
mod proof_replays;
mod recovery_keys;
mod sessions;
pub(crate) mod sql;
pub mod testing;

pub use self::accounts::{Account, Disabled, PendingRecovery};
pub use self::authenticators::Authenticator;
pub use self::browser_bindings::{BrowserBinding, BrowserBindingKind};
pub use self::ceremonies::{Ceremony, CeremonyCaps};
pub use self::checkpoints::AccountHead;
pub use self::copy::{CopyReport, TABLES};
pub use self::events::{ExportedRow, NewEvent};
pub use self::oidc_clients::{ClientAuthMethod, ClientSource, OidcClient};
pub use self::oidc_consents::Consent;
pub use self::oidc_device_codes::{DeviceCode, DeviceCodeStatus};
pub use self::oidc_grants::Grant;
pub use self::oidc_keys::SigningKeyRecord;
pub use self::oidc_logouts::{Logout, LogoutOutcome, LogoutRecord};
pub use self::oidc_requests::PendingAuthorization;
pub use self::oidc_tokens::{TokenKind, TokenRecord};
pub use self::pg::{PostgresOptions, RemoteCommit, SslMode};
pub use self::recovery_keys::RecoveryKeyRecord;
pub use self::sessions::{Device, Session};
pub use self::sql::{Column, Engine, Param};
pub use crate::security_log::{
    AccountCheckpoint, ChainReport, Checkpoint, LogProblem, LogReport, urgency_of,
};

use self::sql::{Db, PgTx};

/// The schema's versions, the same for both engines: version N of one is version N of the
/// other, table for table and column for column (types differ only in spelling).
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_ceremony_caps.sql"),
    include_str!("../../migrations/sqlite/0003_event_numbers.sql"),
    include_str!("../../migrations/sqlite/0004_log_checkpoints.sql"),
    include_str!("../../migrations/sqlite/0005_limit_hits.sql"),
    include_str!("../../migrations/sqlite/0006_account_disabled.sql"),
    include_str!("../../migrations/sqlite/0007_oidc.sql"),
    include_str!("../../migrations/sqlite/0008_backchannel.sql"),
    include_str!("../../migrations/sqlite/0009_browser_bindings.sql"),
    include_str!("../../migrations/sqlite/0010_sealed_details.sql"),
    include_str!("../../migrations/sqlite/0011_device_grant.sql"),
    include_str!("../../migrations/sqlite/0012_session_binding.sql"),
];
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_ceremony_caps.sql"),
    include_str!("../../migrations/postgres/0003_event_numbers.sql"),
    include_str!("../../migrations/postgres/0004_log_checkpoints.sql"),
    include_str!("../../migrations/postgres/0005_limit_hits.sql"),
    include_str!("../../migrations/postgres/0006_account_disabled.sql"),
    include_str!("../../migrations/postgres/0007_oidc.sql"),
    include_str!("../../migrations/postgres/0008_backchannel.sql"),
    include_str!("../../migrations/postgres/0009_browser_bindings.sql"),
    include_str!("../../migrations/postgres/0010_sealed_details.sql"),
    include_str!("../../migrations/postgres/0011_device_grant.sql"),
    include_str!("../../migrations/postgres/0012_session_binding.sql"),
];

/// Where the data lives: `--db`'s value, parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Box<PostgresOptions>),
}

impl Location {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; `sqlite:PATH` or a plain path is a
    /// SQLite file.
    pub fn parse(text: &str) -> Result<Location> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Location::Postgres(Box::new(PostgresOptions::from_url(
                text,
            )?)));
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        if path.is_empty() {
            return Err(CoreError::BadLocation("an empty database path".into()));
        }
        Ok(Location::Sqlite(PathBuf::from(path)))
    }
}

/// Never shows a password.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Location::Postgres(o) => write!(f, "{o:?}"),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Sqlite(p)
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Location::Sqlite(p.to_path_buf())
    }
}

type CommitHook = Box<dyn Fn(&[SecurityEvent]) + Send + Sync>;
type LogoutHook = Box<dyn Fn() + Send + Sync>;

enum Backend {
    /// One connection behind a lock: writes are serialised, which is also what gives the
    /// security log its single order.
    Sqlite(Mutex<Connection>),
    Postgres(Box<pg::Pool>),
}

pub struct Store {
    backend: Backend,
    on_commit: RwLock<Option<CommitHook>>,
    /// Called after each commit that queued back-channel logouts: wakes the sender.
    on_logouts: RwLock<Option<LogoutHook>>,
    /// The server's log key: with it, every commit that appends events also signs the new head.
    log_key: RwLock<Option<SigningKey>>,
    /// Derived from the log key: seals the accounts' data keys, so events' details are sealed.
    kek: RwLock<Option<DetailKek>>,
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `location`.
    pub fn connect(location: &Location) -> Result<Store> {
        match location {
            Location::Sqlite(path) => Self::open(path),
            Location::Postgres(options) => Ok(Self::with_backend(Backend::Postgres(Box::new(
                pg::Pool::connect(options, POSTGRES_MIGRATIONS)?,
            )))),
        }
    }

    /// Opens (creating and migrating as needed) a SQLite file.
    pub fn open(path: &Path) -> Result<Store> {
        Self::from_connection(Connection::open(path)?)
    }

    pub fn open_in_memory() -> Result<Store> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted rows are overwritten with zeros, not left in free space: a deleted account's
        // names and addresses must not stay readable in the file.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate_sqlite(&mut conn)?;
        Ok(Self::with_backend(Backend::Sqlite(Mutex::new(conn))))
    }

    fn with_backend(backend: Backend) -> Store {
        Store {
            backend,
            on_commit: RwLock::new(None),
            on_logouts: RwLock::new(None),
            log_key: RwLock::new(None),
            kek: RwLock::new(None),
        }
    }

    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
        }
    }

    /// Called with the events of each committed write, after the commit: the live stream.
    pub fn set_commit_hook(&self, hook: impl Fn(&[SecurityEvent]) + Send + Sync + 'static) {
        *self.on_commit.write() = Some(Box::new(hook));
    }

    /// Called after each commit that queued back-channel logouts (`oidc_logouts`), on this
    /// instance; the hook must not block.
    pub fn set_logout_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.on_logouts.write() = Some(Box::new(hook));
    }

    /// Hands `hook` what other instances on the same database commit, as it happens (a
    /// PostgreSQL listener; see [`RemoteCommit`]). SQLite serves one instance: nothing to hear.
    pub fn listen_for_other_instances(
        &self,
        hook: impl Fn(RemoteCommit) + Send + Sync + 'static,
    ) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pool) => pool.listen(hook),
        }
    }

    /// From now on every commit that appends events also stores a checkpoint of the new head
    /// signed with `key`, in the same transaction.
    pub fn set_log_key(&self, key: SigningKey) {
        *self.kek.write() = Some(DetailKek::from_log_key(&key));
        *self.log_key.write() = Some(key);
    }

    /// Runs `f` in one write transaction; commits if it returns `Ok`, rolls back otherwise.
    /// On PostgreSQL `f` may run more than once (see the module's note).
    pub fn write<T, E: From<CoreError>>(
        &self,
        f: impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.write_with(Durability::Synced, f)
    }

    /// Like `write`, but the commit does not wait for the disk (SQLite: synchronous=NORMAL;
    /// PostgreSQL: synchronous_commit off): it is atomic, and a later durable commit carries
    /// it to disk. Only for rows whose loss in a power cut costs nothing but a retry: ceremony
    /// starts.
    pub fn write_unsynced<T, E: From<CoreError>>(
        &self,
        f: impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.write_with(Durability::Unsynced, f)
    }

    fn write_with<T, E: From<CoreError>>(
        &self,
        durability: Durability,
        f: impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let started = std::time::Instant::now();
        let key = self.log_key.read();
        let key = match durability {
            Durability::Synced => key.as_ref(),
            Durability::Unsynced => None,
        };
        let kek = self.kek.read().clone();
        let value = match &self.backend {
            Backend::Sqlite(conn) => {
                let mut conn = conn.lock();
                let (value, committed) = sqlite_transact(&mut conn, durability, key, kek, f)?;
                // Published while the writer lock is still held, so live subscribers see
                // events in commit order. The hook must not block.
                self.publish(&committed);
                value
            }
            Backend::Postgres(pool) => {
                let (value, appended) =
                    pool.transact(durability, key, kek, f, |committed| self.publish(committed))?;
                debug_assert!(durability == Durability::Synced || appended == 0);
                value
            }
        };
        // From the call to the commit: waiting for the writer, the work, any retries, the
        // commit and (synced) its flush to disk. A no-op unless a metrics recorder is set.
        metrics::histogram!(
            "keyward_commit_seconds",
            "engine" => self.engine().as_str(),
            "durability" => match durability {
                Durability::Synced => "synced",
                Durability::Unsynced => "unsynced",
            },
        )
        .record(started.elapsed().as_secs_f64());
        Ok(value)
    }

    fn publish(&self, committed: &Committed) {
        if !committed.events.is_empty()
            && let Some(hook) = self.on_commit.read().as_ref()
        {
            hook(&committed.events);
        }
        if committed.logouts_queued
            && let Some(hook) = self.on_logouts.read().as_ref()
        {
            hook();
        }
    }

    /// Runs `f` in a read transaction (one consistent snapshot), which is always rolled back.
    pub fn read<T, E: From<CoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let kek = self.kek.read().clone();
        match &self.backend {
            Backend::Sqlite(conn) => {
                let mut conn = conn.lock();
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .map_err(CoreError::from)?;
                f(&mut Tx::new(Db::Sqlite(tx), kek))
            }
            Backend::Postgres(pool) => pool.read(kek, f),
        }
    }

    /// Account `account_id`'s log head for its clients, signed with the log key now (see
    /// [`AccountHead`]); with `seen`, the digest at that event of the account's.
    pub fn account_head(&self, account_id: Uuid, seen: Option<i64>) -> Result<AccountHead> {
        // A copy, so this lock is never held while waiting for the connection's.
        let key = self.log_key.read().clone().ok_or(CoreError::NoLogKey)?;
        self.read(|tx| tx.account_head(&key, account_id, seen))
    }

    /// Walks the security log from the start and recomputes every hash.
    /// After a deletion: SQLite's write-ahead log still holds the pages as they were before
    /// it, so it is checkpointed into the file (whose deleted cells `secure_delete` zeroed) and
    /// truncated. PostgreSQL keeps deleted rows' old versions until VACUUM reclaims them
    /// (autovacuum, or the operator's own); nothing to do here.
    pub fn erase_freed(&self) -> Result<()> {
        if let Backend::Sqlite(conn) = &self.backend {
            conn.lock()
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// The log key's signature over an account's export: its (seq, chain hash) pairs, as
    /// [`crate::security_log::export_message`] frames them (a message of its own context).
    pub fn sign_export(
        &self,
        account_id: Uuid,
        exported_at: keyward_proto::Millis,
        entries: &[(i64, [u8; 32])],
    ) -> Result<[u8; 64]> {
        use ed25519_dalek::Signer;
        let key = self.log_key.read();
        let key = key.as_ref().ok_or(CoreError::NoLogKey)?;
        let message = crate::security_log::export_message(account_id, exported_at, entries);
        Ok(key.sign(&message).to_bytes())
    }

    pub fn verify_chain(&self) -> Result<ChainReport> {
        self.read(|tx| tx.verify_log())
    }

    /// Walks the log and holds it to its latest signed checkpoint (`key`: the log key's public
    /// half, None if it is missing).
    pub fn verify_log(&self, key: Option<&VerifyingKey>) -> Result<LogReport> {
        self.read(|tx| tx.verify_log_against(key))
    }
}

/// Whether a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Synced,
    Unsynced,
}

/// One IMMEDIATE transaction around `f`, committed if it returns `Ok`; gives back the events
/// it appended, for the caller to publish.
fn sqlite_transact<T, E: From<CoreError>>(
    conn: &mut Connection,
    durability: Durability,
    log_key: Option<&SigningKey>,
    kek: Option<DetailKek>,
    f: impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
) -> std::result::Result<(T, Committed), E> {
    if durability == Durability::Unsynced {
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(CoreError::from)?;
    }
    let outcome = sqlite_commit(conn, log_key, kek, f);
    if durability == Durability::Unsynced {
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(CoreError::from)?;
    }
    outcome
}

fn sqlite_commit<T, E: From<CoreError>>(
    conn: &mut Connection,
    log_key: Option<&SigningKey>,
    kek: Option<DetailKek>,
    mut f: impl FnMut(&mut Tx<'_>) -> std::result::Result<T, E>,
) -> std::result::Result<(T, Committed), E> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(CoreError::from)?;
    let mut wrapped = Tx::new(Db::Sqlite(tx), kek);
    let value = f(&mut wrapped)?;
    let appended = wrapped.finish(log_key)?;
    Ok((value, appended))
}

/// Applies the migrations the database has not seen yet; `user_version` counts those applied.
fn migrate_sqlite(conn: &mut Connection) -> Result<()> {
    let known = SQLITE_MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(CoreError::SchemaTooNew { found, known });
    }
    for (i, sql) in SQLITE_MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// What a committed write did that others are told of after the commit.
pub(crate) struct Committed {
    /// The events it appended (the live stream).
    pub events: Vec<SecurityEvent>,
    /// Whether it queued back-channel logouts (the sender is woken).
    pub logouts_queued: bool,
}

/// One transaction, read or write, on either engine. Each table's module adds its methods.
pub struct Tx<'c> {
    db: Db<'c>,
    /// Opens and seals the accounts' data keys; None without a log key (details in clear).
    kek: Option<DetailKek>,
    /// Events appended so far, published by [`Store::write`] once the commit succeeds.
    appended: Vec<SecurityEvent>,
    /// Sessions whose token this transaction replaced (told to other instances on commit).
    replaced_tokens: Vec<Uuid>,
    /// The log's head once this transaction appended to it: (seq, hash, at). Later appends
    /// and the checkpoint at commit start from it instead of reading the head again.
    appended_head: Option<(i64, [u8; 32], keyward_proto::Millis)>,
    /// Whether this transaction queued a back-channel logout (the sender is woken on commit).
    logouts_queued: std::cell::Cell<bool>,
}

impl<'c> Tx<'c> {
    fn new(db: Db<'c>, kek: Option<DetailKek>) -> Self {
        Tx {
            db,
            kek,
            appended: Vec::new(),
            replaced_tokens: Vec::new(),
            appended_head: None,
            logouts_queued: std::cell::Cell::new(false),
        }
    }

    /// Signs the new head if events were appended, then commits; what it committed.
    fn finish(self, log_key: Option<&SigningKey>) -> Result<Committed> {
        if let Some(key) = log_key
            && let Some((seq, hash, at)) = self.appended_head
        {
            self.insert_checkpoint(&Checkpoint::sign(key, seq, hash, at))?;
        }
        match self.db {
            Db::Sqlite(tx) => tx.commit()?,
            Db::Postgres(pg) => {
                let PgTx { tx, .. } = pg.into_inner();
                futures::executor::block_on(tx.commit())?
            }
        }
        Ok(Committed {
            events: self.appended,
            logouts_queued: self.logouts_queued.get(),
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.query_row(
            "SELECT value FROM meta WHERE key = ?1",
            sql::args![key],
            |r| r.get(0),
        )
    }

    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            sql::args![key, value],
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding helpers shared by the table modules

fn uuid_of(bytes: Vec<u8>) -> Result<Uuid> {
    Uuid::from_slice(&bytes).map_err(|e| CoreError::Corrupt(format!("a stored UUID: {e}")))
}

fn opt_uuid(bytes: Option<Vec<u8>>) -> Result<Option<Uuid>> {
    bytes.map(uuid_of).transpose()
}

/// A text column held a value this build does not know.
fn bad_value(what: &str, value: String) -> CoreError {
    CoreError::Corrupt(format!("unexpected {what} '{value}'"))
}

/// Rows the table modules' tests build on.
#[cfg(test)]
mod fixtures {
    #![allow(clippy::unwrap_used)]
    use keyward_proto::AccountState;
    use uuid::Uuid;

    use super::{Account, Device, Store, Tx};

    /// A store on the engine the suite runs on (see [`super::testing`]).
    pub fn store() -> Store {
        super::testing::store().unwrap()
    }

    /// Drops a trigger, as someone with the database could.
    pub fn drop_trigger(tx: &Tx<'_>, name: &str, table: &str) -> crate::Result<()> {
        match tx.engine() {
            super::Engine::Sqlite => tx.raw_execute(&format!("DROP TRIGGER {name}")),
            super::Engine::Postgres => tx.raw_execute(&format!("DROP TRIGGER {name} ON {table}")),
        }
    }

    pub fn account(name: &str) -> Account {
        Account {
            id: Uuid::new_v4(),
            username: name.into(),
            display_name: name.into(),
            created_at: 1,
            state: AccountState::Active,
            recovery: None,
            disabled: None,
        }
    }

    pub fn device(account_id: Uuid) -> Device {
        Device {
            id: Uuid::new_v4(),
            account_id,
            name: "laptop".into(),
            platform: "linux".into(),
            first_seen_at: 1,
            last_seen_at: 1,
            address: "127.0.0.1".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_location_is_a_sqlite_path_or_a_postgres_url_and_never_shows_a_password() {
        assert_eq!(
            Location::parse("sqlite:/var/k.db").unwrap(),
            Location::Sqlite("/var/k.db".into())
        );
        assert_eq!(
            Location::parse("k.db").unwrap(),
            Location::Sqlite("k.db".into())
        );
        assert!(Location::parse("sqlite:").is_err());
        let pg = Location::parse("postgres://keyward:s3cret@db:5432/keyward").unwrap();
        assert!(matches!(pg, Location::Postgres(_)));
        for shown in [format!("{pg}"), format!("{pg:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("keyward@db:5432/keyward"), "{shown}");
        }
        assert!(Location::parse("postgres://db/k?no_such_option=1").is_err());
    }

    #[test]
    fn meta_values_are_set_and_replaced() {
        let store = fixtures::store();
        store
            .write(|tx| {
                assert_eq!(tx.meta("k")?, None);
                tx.set_meta("k", b"one")?;
                tx.set_meta("k", b"two")?;
                assert_eq!(tx.meta("k")?.as_deref(), Some(&b"two"[..]));
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    /// On PostgreSQL a writer holds a lock on its connection: a closure that panics must not
    /// put that connection back in the pool still holding it, or every later write would wait
    /// for ever.
    #[test]
    fn a_write_that_panics_leaves_no_lock_behind() {
        let store = std::sync::Arc::new(fixtures::store());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = store.write(|_tx| -> Result<()> { panic!("a bug in a closure") });
        }));
        assert!(panicked.is_err());
        // Writers at once, so that some use other connections than the panicked one.
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let (writer, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..8u8 {
                    writer.write(|tx| tx.set_meta("k", &[i])).unwrap();
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..4 {
            finished
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("writes after a panicked one went through");
        }
    }

    #[test]
    fn a_failed_write_rolls_back_and_publishes_nothing() {
        let store = fixtures::store();
        let published = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = published.clone();
        store.set_commit_hook(move |events| {
            seen.fetch_add(events.len(), std::sync::atomic::Ordering::SeqCst);
        });
        let a = fixtures::account("ada");
        let failed = store.write(|tx| {
            tx.insert_account(&a)?;
            tx.append_event(
                NewEvent::new(a.id, keyward_proto::EventKind::AccountCreated),
                1,
            )?;
            Err::<(), _>(CoreError::UsernameTaken)
        });
        assert!(failed.is_err());
        assert!(store.read(|tx| tx.account(a.id)).unwrap().is_none());
        assert_eq!(published.load(std::sync::atomic::Ordering::SeqCst), 0);
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                tx.append_event(
                    NewEvent::new(a.id, keyward_proto::EventKind::AccountCreated),
                    1,
                )
            })
            .unwrap();
        assert_eq!(published.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SQLITE_MIGRATIONS.len() as i64 + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(CoreError::SchemaTooNew { .. })
        ));
    }
}
