//! The SQLite store. WAL with `synchronous=FULL`: an acknowledged sign-in survives a power cut.
//! Every state change runs inside one [`Store::write`] transaction, so consuming a challenge,
//! updating a counter, creating a session and logging the event commit together or not at all.
//!
//! Layout: this file opens the database and runs transactions; each table's row types
//! (engine-neutral), SQL and row decoders live in its own module and add methods to [`Tx`].
//! The log's rules (urgency, hashing, chain checks) are in [`crate::security_log`], not in SQL.
//! A second engine (PostgreSQL) would sit beside these modules behind the same `Store`/`Tx`
//! API, reusing the row types and `security_log`.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use keyward_proto::SecurityEvent;

use crate::error::{CoreError, Result};

mod accounts;
mod authenticators;
mod ceremonies;
mod checkpoints;
mod events;
mod recovery_keys;
mod sessions;

pub use self::accounts::{Account, PendingRecovery};
pub use self::authenticators::Authenticator;
pub use self::ceremonies::{Ceremony, CeremonyCaps};
pub use self::checkpoints::AccountHead;
pub use self::events::NewEvent;
pub use self::recovery_keys::RecoveryKeyRecord;
pub use self::sessions::{Device, Session};
pub use crate::security_log::{
    AccountCheckpoint, ChainReport, Checkpoint, LogProblem, LogReport, urgency_of,
};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_ceremony_caps.sql"),
    include_str!("../../migrations/0003_event_numbers.sql"),
    include_str!("../../migrations/0004_log_checkpoints.sql"),
];

type CommitHook = Box<dyn Fn(&[SecurityEvent]) + Send + Sync>;

/// One SQLite connection behind a lock: writes are serialised, which is also what gives the
/// security log its single order.
pub struct Store {
    conn: Mutex<Connection>,
    on_commit: RwLock<Option<CommitHook>>,
    /// The server's log key: with it, every commit that appends events also signs the new head.
    log_key: RwLock<Option<SigningKey>>,
}

impl Store {
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
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            on_commit: RwLock::new(None),
            log_key: RwLock::new(None),
        })
    }

    /// Called with the events of each committed write, after the commit: the live stream.
    pub fn set_commit_hook(&self, hook: impl Fn(&[SecurityEvent]) + Send + Sync + 'static) {
        *self.on_commit.write() = Some(Box::new(hook));
    }

    /// From now on every commit that appends events also stores a checkpoint of the new head
    /// signed with `key`, in the same transaction.
    pub fn set_log_key(&self, key: SigningKey) {
        *self.log_key.write() = Some(key);
    }

    /// Runs `f` in one IMMEDIATE transaction; commits if it returns `Ok`, rolls back otherwise.
    pub fn write<T, E: From<CoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.conn.lock();
        let key = self.log_key.read();
        let (value, appended) = transact(&mut conn, key.as_ref(), f)?;
        // Published while the writer lock is still held, so live subscribers see events in
        // commit order. The hook must not block.
        if !appended.is_empty()
            && let Some(hook) = self.on_commit.read().as_ref()
        {
            hook(&appended);
        }
        Ok(value)
    }

    /// Like `write`, but the commit does not wait for the disk (WAL, synchronous=NORMAL): it is
    /// atomic, and the next `write` commit's fsync carries it to disk. Only for rows whose loss
    /// in a power cut costs nothing but a retry: ceremony starts.
    pub fn write_unsynced<T, E: From<CoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.conn.lock();
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(CoreError::from)?;
        let outcome = transact(&mut conn, None, f);
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(CoreError::from)?;
        let (value, appended) = outcome?;
        debug_assert!(appended.is_empty(), "events are always written durably");
        Ok(value)
    }

    /// Runs `f` in a read transaction, which is always rolled back.
    pub fn read<T, E: From<CoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(CoreError::from)?;
        let mut wrapped = Tx {
            tx,
            appended: Vec::new(),
        };
        f(&mut wrapped)
    }

    /// Account `account_id`'s log head for its clients, signed with the log key now (see
    /// [`AccountHead`]); with `seen`, the digest at that event of the account's.
    pub fn account_head(&self, account_id: Uuid, seen: Option<i64>) -> Result<AccountHead> {
        // A copy, so this lock is never held while waiting for the connection's.
        let key = self.log_key.read().clone().ok_or(CoreError::NoLogKey)?;
        self.read(|tx| tx.account_head(&key, account_id, seen))
    }

    /// Walks the security log from the start and recomputes every hash.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        self.read(|tx| tx.verify_log())
    }

    /// Walks the log and holds it to its latest signed checkpoint (`key`: the log key's public
    /// half, None if it is missing).
    pub fn verify_log(&self, key: Option<&VerifyingKey>) -> Result<LogReport> {
        self.read(|tx| tx.verify_log_against(key))
    }
}

/// One IMMEDIATE transaction around `f`, committed if it returns `Ok`; gives back the events
/// it appended, for the caller to publish.
fn transact<T, E: From<CoreError>>(
    conn: &mut Connection,
    log_key: Option<&SigningKey>,
    f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
) -> std::result::Result<(T, Vec<SecurityEvent>), E> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(CoreError::from)?;
    let mut wrapped = Tx {
        tx,
        appended: Vec::new(),
    };
    let value = f(&mut wrapped)?;
    if let Some(key) = log_key
        && !wrapped.appended.is_empty()
    {
        wrapped.checkpoint_head(key)?;
    }
    let Tx { tx, appended } = wrapped;
    tx.commit().map_err(CoreError::from)?;
    Ok((value, appended))
}

/// Applies the migrations the database has not seen yet; `user_version` counts those applied.
fn migrate(conn: &mut Connection) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(CoreError::SchemaTooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// One transaction, read or write. Each table's module adds its methods here.
pub struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
    /// Events appended so far, published by [`Store::write`] once the commit succeeds.
    appended: Vec<SecurityEvent>,
}

impl Tx<'_> {
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The underlying connection, bypassing the API. Only tests use it (keyward-core's and
    /// keyward-server's integration tests, which `cfg(test)` cannot reach): to prove the log
    /// refuses updates, count rows and read pragmas. Not for production code.
    pub fn raw(&self) -> &rusqlite::Connection {
        &self.tx
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding helpers shared by the table modules

fn uuid_of(bytes: Vec<u8>) -> rusqlite::Result<Uuid> {
    Uuid::from_slice(&bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn opt_uuid(bytes: Option<Vec<u8>>) -> rusqlite::Result<Option<Uuid>> {
    bytes.map(uuid_of).transpose()
}

/// A text column held a value this build does not know.
fn bad_value(what: &str, value: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unexpected {what} '{value}'").into(),
    )
}

/// Rows the table modules' tests build on.
#[cfg(test)]
mod fixtures {
    use keyward_proto::AccountState;
    use uuid::Uuid;

    use super::{Account, Device};

    pub fn account(name: &str) -> Account {
        Account {
            id: Uuid::new_v4(),
            username: name.into(),
            display_name: name.into(),
            created_at: 1,
            state: AccountState::Active,
            recovery: None,
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
    fn meta_values_are_set_and_replaced() {
        let store = Store::open_in_memory().unwrap();
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

    #[test]
    fn a_failed_write_rolls_back_and_publishes_nothing() {
        let store = Store::open_in_memory().unwrap();
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
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(CoreError::SchemaTooNew { .. })
        ));
    }
}
