//! The SQLite store. WAL with `synchronous=FULL`: an acknowledged sign-in survives a power cut.
//! Every state change runs inside one [`Store::write`] transaction, so consuming a challenge,
//! updating a counter, creating a session and logging the event commit together or not at all.

use std::path::Path;

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use keyward_proto::{
    AccountState, AuthenticatorStatus, EventDetail, EventKind, Millis, SecurityEvent, SessionScope,
    Urgency,
};

use crate::error::{CoreError, Result};

const MIGRATIONS: &[&str] = &[include_str!("../migrations/0001_init.sql")];

type CommitHook = Box<dyn Fn(&[SecurityEvent]) + Send + Sync>;

pub struct Store {
    conn: Mutex<Connection>,
    on_commit: RwLock<Option<CommitHook>>,
}

// ---------------------------------------------------------------------------------------------
// Rows

#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub created_at: Millis,
    pub state: AccountState,
    pub recovery: Option<PendingRecovery>,
}

#[derive(Debug, Clone)]
pub struct PendingRecovery {
    pub started_at: Millis,
    pub ends_at: Millis,
    pub device_name: String,
    pub address: String,
    pub session_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    pub id: Uuid,
    pub account_id: Uuid,
    pub credential_id: Vec<u8>,
    /// The relying-party library's serialised credential; opaque to this crate.
    pub credential: String,
    pub nickname: String,
    pub aaguid: Option<Uuid>,
    pub transports: Vec<String>,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub sign_count: u32,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub status: AuthenticatorStatus,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub platform: String,
    pub first_seen_at: Millis,
    pub last_seen_at: Millis,
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub account_id: Uuid,
    pub device_id: Uuid,
    pub scope: SessionScope,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub verified_at: Millis,
    pub expires_at: Millis,
    pub opened_by: Option<Uuid>,
    pub address: String,
    pub ended_at: Option<Millis>,
    pub ended_reason: Option<String>,
    /// The idle clock runs from here or from the last use, whichever is later. A recovery
    /// session becomes usable only when its window ends, so its idle clock starts then.
    pub active_from: Millis,
}

impl Session {
    pub fn idle_expires_at(&self, idle_ms: i64) -> Millis {
        (self.last_seen_at.max(self.active_from) + idle_ms).min(self.expires_at)
    }
    pub fn is_live(&self, now: Millis, idle_ms: i64) -> bool {
        self.ended_at.is_none() && now < self.idle_expires_at(idle_ms)
    }
}

#[derive(Debug, Clone)]
pub struct Ceremony {
    pub id: Uuid,
    pub kind: String,
    pub account_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// The server's serialised ceremony state; opaque to this crate.
    pub state: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone)]
pub struct RecoveryKeyRecord {
    pub account_id: Uuid,
    pub public_key: Vec<u8>,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub last_verified_at: Option<Millis>,
}

/// An event about to be appended; the store gives it its place, time and hash.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub account_id: Uuid,
    pub kind: EventKind,
    pub session_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub device_name: Option<String>,
    pub address: Option<String>,
    pub detail: EventDetail,
}

impl NewEvent {
    pub fn new(account_id: Uuid, kind: EventKind) -> Self {
        NewEvent {
            account_id,
            kind,
            session_id: None,
            device_id: None,
            device_name: None,
            address: None,
            detail: EventDetail::default(),
        }
    }
}

/// How loudly clients should tell the user. A new device, a key change or a recovery is urgent;
/// a known device signing in again, a failed attempt or a routine check is quiet.
pub fn urgency_of(kind: EventKind, detail: &EventDetail) -> Urgency {
    match kind {
        EventKind::SignIn if detail.known_device == Some(true) => Urgency::Quiet,
        EventKind::SignIn
        | EventKind::AuthenticatorAdded
        | EventKind::AuthenticatorRemoved
        | EventKind::AuthenticatorReportedLost
        | EventKind::RecoveryKeyGenerated
        | EventKind::RecoveryStarted
        | EventKind::RecoveryCancelled
        | EventKind::RecoveryCompleted
        | EventKind::ClonedKeyWarning => Urgency::Urgent,
        EventKind::AccountCreated
        | EventKind::SignInFailed
        | EventKind::SessionEnded
        | EventKind::AuthenticatorRenamed
        | EventKind::RecoveryKeyConfirmed
        | EventKind::RecoveryKeyVerified => Urgency::Quiet,
    }
}

/// Result of walking the whole hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub events: u64,
    /// The first event whose hash does not follow from its predecessor, if any.
    pub first_broken: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Opening and transactions

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
        })
    }

    /// Called with the events of each committed write, after the commit: the live stream.
    pub fn set_commit_hook(&self, hook: impl Fn(&[SecurityEvent]) + Send + Sync + 'static) {
        *self.on_commit.write() = Some(Box::new(hook));
    }

    /// Runs `f` in one IMMEDIATE transaction; commits if it returns `Ok`, rolls back otherwise.
    pub fn write<T, E: From<CoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.conn.lock();
        let (value, appended) = transact(&mut conn, f)?;
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
        let outcome = transact(&mut conn, f);
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

    /// Walks the security log from the start and recomputes every hash.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        self.read(|tx| {
            let mut stmt = tx.tx.prepare(
                "SELECT seq, account_id, kind, at, urgency, session_id, device_id, device_name,
                        address, detail, hash FROM events ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            let mut prev = [0u8; 32];
            let mut count = 0u64;
            while let Some(row) = rows.next()? {
                let (event, stored) = event_from_row(row)?;
                count += 1;
                if event_hash(&prev, &event) != stored {
                    return Ok(ChainReport {
                        events: count,
                        first_broken: Some(event.id),
                    });
                }
                prev = stored;
            }
            Ok(ChainReport {
                events: count,
                first_broken: None,
            })
        })
    }
}

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

// ---------------------------------------------------------------------------------------------
// Conversions

fn uuid_of(bytes: Vec<u8>) -> rusqlite::Result<Uuid> {
    Uuid::from_slice(&bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn opt_uuid(bytes: Option<Vec<u8>>) -> rusqlite::Result<Option<Uuid>> {
    bytes.map(uuid_of).transpose()
}

fn bad_value(what: &str, value: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unexpected {what} '{value}'").into(),
    )
}

fn account_state_str(s: AccountState) -> &'static str {
    match s {
        AccountState::Active => "active",
        AccountState::RecoveryPending => "recovery_pending",
        AccountState::RecoveryEnrolment => "recovery_enrolment",
    }
}

fn scope_str(s: SessionScope) -> &'static str {
    match s {
        SessionScope::Full => "full",
        SessionScope::Recovery => "recovery",
    }
}

fn urgency_str(u: Urgency) -> &'static str {
    match u {
        Urgency::Quiet => "quiet",
        Urgency::Urgent => "urgent",
    }
}

const ACCOUNT_COLS: &str = "id, username, display_name, created_at, state, recovery_started_at,
    recovery_ends_at, recovery_device_name, recovery_address, recovery_session_id";

fn account_from_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    let state: String = r.get(4)?;
    let state = match state.as_str() {
        "active" => AccountState::Active,
        "recovery_pending" => AccountState::RecoveryPending,
        "recovery_enrolment" => AccountState::RecoveryEnrolment,
        _ => return Err(bad_value("account state", state)),
    };
    let recovery = match (r.get::<_, Option<i64>>(5)?, r.get::<_, Option<i64>>(6)?) {
        (Some(started_at), Some(ends_at)) => Some(PendingRecovery {
            started_at,
            ends_at,
            device_name: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            address: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            session_id: opt_uuid(r.get(9)?)?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Account {
        id: uuid_of(r.get(0)?)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        created_at: r.get(3)?,
        state,
        recovery,
    })
}

const AUTHENTICATOR_COLS: &str = "id, account_id, credential_id, credential, nickname, aaguid,
    transports, backup_eligible, backup_state, sign_count, created_at, last_used_at, status";

fn authenticator_from_row(r: &Row<'_>) -> rusqlite::Result<Authenticator> {
    let transports: String = r.get(6)?;
    let status: String = r.get(12)?;
    Ok(Authenticator {
        id: uuid_of(r.get(0)?)?,
        account_id: uuid_of(r.get(1)?)?,
        credential_id: r.get(2)?,
        credential: r.get(3)?,
        nickname: r.get(4)?,
        aaguid: opt_uuid(r.get(5)?)?,
        transports: serde_json::from_str(&transports).unwrap_or_default(),
        backup_eligible: r.get(7)?,
        backup_state: r.get(8)?,
        sign_count: r.get(9)?,
        created_at: r.get(10)?,
        last_used_at: r.get(11)?,
        status: match status.as_str() {
            "active" => AuthenticatorStatus::Active,
            "lost" => AuthenticatorStatus::Lost,
            _ => return Err(bad_value("authenticator status", status)),
        },
    })
}

const DEVICE_COLS: &str = "id, account_id, name, platform, first_seen_at, last_seen_at, address";

fn device_from_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: uuid_of(r.get(0)?)?,
        account_id: uuid_of(r.get(1)?)?,
        name: r.get(2)?,
        platform: r.get(3)?,
        first_seen_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        address: r.get(6)?,
    })
}

const SESSION_COLS: &str = "id, account_id, device_id, scope, created_at, last_seen_at,
    verified_at, expires_at, opened_by, address, ended_at, ended_reason, active_from";

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    let scope: String = r.get(3)?;
    Ok(Session {
        id: uuid_of(r.get(0)?)?,
        account_id: uuid_of(r.get(1)?)?,
        device_id: uuid_of(r.get(2)?)?,
        scope: match scope.as_str() {
            "full" => SessionScope::Full,
            "recovery" => SessionScope::Recovery,
            _ => return Err(bad_value("session scope", scope)),
        },
        created_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        verified_at: r.get(6)?,
        expires_at: r.get(7)?,
        opened_by: opt_uuid(r.get(8)?)?,
        address: r.get(9)?,
        ended_at: r.get(10)?,
        ended_reason: r.get(11)?,
        active_from: r.get(12)?,
    })
}

fn event_from_row(r: &Row<'_>) -> Result<(SecurityEvent, [u8; 32])> {
    let kind: String = r.get(2)?;
    let urgency: String = r.get(4)?;
    let detail: String = r.get(9)?;
    let hash: Vec<u8> = r.get(10)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| CoreError::Corrupt("event hash is not 32 bytes".into()))?;
    let event = SecurityEvent {
        id: r.get(0)?,
        account_id: uuid_of(r.get(1)?)?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| CoreError::Corrupt(format!("unknown event kind '{kind}'")))?,
        at: r.get(3)?,
        urgency: if urgency == "urgent" {
            Urgency::Urgent
        } else {
            Urgency::Quiet
        },
        session_id: opt_uuid(r.get(5)?)?,
        device_id: opt_uuid(r.get(6)?)?,
        device_name: r.get(7)?,
        address: r.get(8)?,
        detail: serde_json::from_str(&detail)?,
        hash: hex(&hash),
    };
    Ok((event, hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// hash = SHA-256(previous hash ‖ the event's canonical JSON, without its own hash).
fn event_hash(prev: &[u8; 32], event: &SecurityEvent) -> [u8; 32] {
    let canonical = serde_json::json!([
        event.id,
        event.account_id,
        event.kind,
        event.at,
        event.urgency,
        event.session_id,
        event.device_id,
        event.device_name,
        event.address,
        event.detail,
    ]);
    Sha256::new_with_prefix(prev)
        .chain_update(canonical.to_string().as_bytes())
        .finalize()
        .into()
}

// ---------------------------------------------------------------------------------------------
// The transaction API

pub struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
    appended: Vec<SecurityEvent>,
}

impl Tx<'_> {
    // -- meta --------------------------------------------------------------------------------

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

    // -- ceremonies --------------------------------------------------------------------------

    /// Stores a ceremony's state, first sweeping expired ones; refuses past `max_pending`.
    pub fn insert_ceremony(&self, c: &Ceremony, max_pending: u32) -> Result<()> {
        self.tx.execute(
            "DELETE FROM ceremonies WHERE expires_at <= ?1",
            [c.created_at],
        )?;
        let pending: i64 = self
            .tx
            .query_row("SELECT COUNT(*) FROM ceremonies", [], |r| r.get(0))?;
        if pending >= i64::from(max_pending) {
            return Err(CoreError::TooManyCeremonies);
        }
        self.tx.execute(
            "INSERT INTO ceremonies (id, kind, account_id, session_id, state, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                c.id.as_bytes(),
                c.kind,
                c.account_id.map(|u| u.as_bytes().to_vec()),
                c.session_id.map(|u| u.as_bytes().to_vec()),
                c.state,
                c.created_at,
                c.expires_at
            ],
        )?;
        Ok(())
    }

    /// The ceremony, left in place (see `take_ceremony` for using it).
    pub fn peek_ceremony(&self, id: Uuid) -> Result<Option<Ceremony>> {
        Ok(self
            .tx
            .query_row(
                "SELECT id, kind, account_id, session_id, state, created_at, expires_at
                 FROM ceremonies WHERE id = ?1",
                [id.as_bytes()],
                ceremony_row,
            )
            .optional()?)
    }

    /// Removes and returns a ceremony of `kind` if it exists and has not expired. Whatever the
    /// outcome, the ceremony is gone afterwards: a challenge is good for one attempt.
    pub fn take_ceremony(&self, id: Uuid, kind: &str, now: Millis) -> Result<Option<Ceremony>> {
        let row = self
            .tx
            .query_row(
                "DELETE FROM ceremonies WHERE id = ?1
                 RETURNING id, kind, account_id, session_id, state, created_at, expires_at",
                [id.as_bytes()],
                ceremony_row,
            )
            .optional()?;
        Ok(row.filter(|c| c.kind == kind && now < c.expires_at))
    }

    pub fn pending_ceremonies(&self) -> Result<i64> {
        Ok(self
            .tx
            .query_row("SELECT COUNT(*) FROM ceremonies", [], |r| r.get(0))?)
    }

    // -- accounts ----------------------------------------------------------------------------

    pub fn insert_account(&self, a: &Account) -> Result<()> {
        let inserted = self.tx.execute(
            "INSERT INTO accounts (id, username, display_name, created_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(username) DO NOTHING",
            params![
                a.id.as_bytes(),
                a.username,
                a.display_name,
                a.created_at,
                account_state_str(a.state)
            ],
        )?;
        if inserted == 0 {
            return Err(CoreError::UsernameTaken);
        }
        Ok(())
    }

    pub fn account(&self, id: Uuid) -> Result<Option<Account>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"),
                [id.as_bytes()],
                account_from_row,
            )
            .optional()?)
    }

    pub fn account_by_username(&self, username: &str) -> Result<Option<Account>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE username = ?1"),
                [username],
                account_from_row,
            )
            .optional()?)
    }

    pub fn username_exists(&self, username: &str) -> Result<bool> {
        Ok(self
            .tx
            .query_row(
                "SELECT 1 FROM accounts WHERE username = ?1",
                [username],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn start_recovery(&self, account_id: Uuid, r: &PendingRecovery) -> Result<()> {
        self.tx.execute(
            "UPDATE accounts SET state = 'recovery_pending', recovery_started_at = ?2,
                 recovery_ends_at = ?3, recovery_device_name = ?4, recovery_address = ?5,
                 recovery_session_id = ?6
             WHERE id = ?1",
            params![
                account_id.as_bytes(),
                r.started_at,
                r.ends_at,
                r.device_name,
                r.address,
                r.session_id.as_bytes()
            ],
        )?;
        Ok(())
    }

    pub fn set_account_state(&self, account_id: Uuid, state: AccountState) -> Result<()> {
        let clear = state == AccountState::Active;
        self.tx.execute(
            "UPDATE accounts SET state = ?2,
                 recovery_started_at = CASE WHEN ?3 THEN NULL ELSE recovery_started_at END,
                 recovery_ends_at = CASE WHEN ?3 THEN NULL ELSE recovery_ends_at END,
                 recovery_device_name = CASE WHEN ?3 THEN NULL ELSE recovery_device_name END,
                 recovery_address = CASE WHEN ?3 THEN NULL ELSE recovery_address END,
                 recovery_session_id = CASE WHEN ?3 THEN NULL ELSE recovery_session_id END
             WHERE id = ?1",
            params![account_id.as_bytes(), account_state_str(state), clear],
        )?;
        Ok(())
    }

    // -- authenticators ----------------------------------------------------------------------

    pub fn insert_authenticator(&self, a: &Authenticator) -> Result<()> {
        let inserted = self.tx.execute(
            "INSERT INTO authenticators (id, account_id, credential_id, credential, nickname,
                 aaguid, transports, backup_eligible, backup_state, sign_count, created_at,
                 last_used_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'active')
             ON CONFLICT(credential_id) DO NOTHING",
            params![
                a.id.as_bytes(),
                a.account_id.as_bytes(),
                a.credential_id,
                a.credential,
                a.nickname,
                a.aaguid.map(|u| u.as_bytes().to_vec()),
                serde_json::to_string(&a.transports)?,
                a.backup_eligible,
                a.backup_state,
                a.sign_count,
                a.created_at,
                a.last_used_at
            ],
        )?;
        if inserted == 0 {
            return Err(CoreError::CredentialInUse);
        }
        Ok(())
    }

    pub fn authenticators(&self, account_id: Uuid) -> Result<Vec<Authenticator>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {AUTHENTICATOR_COLS} FROM authenticators WHERE account_id = ?1
             ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([account_id.as_bytes()], authenticator_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn authenticator(&self, id: Uuid) -> Result<Option<Authenticator>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {AUTHENTICATOR_COLS} FROM authenticators WHERE id = ?1"),
                [id.as_bytes()],
                authenticator_from_row,
            )
            .optional()?)
    }

    pub fn authenticator_by_credential_id(&self, cred_id: &[u8]) -> Result<Option<Authenticator>> {
        Ok(self
            .tx
            .query_row(
                &format!(
                    "SELECT {AUTHENTICATOR_COLS} FROM authenticators WHERE credential_id = ?1"
                ),
                [cred_id],
                authenticator_from_row,
            )
            .optional()?)
    }

    /// Records a successful assertion: the new credential record, counter and backup flags.
    pub fn record_authenticator_use(&self, a: &Authenticator, now: Millis) -> Result<()> {
        self.tx.execute(
            "UPDATE authenticators SET credential = ?2, sign_count = ?3, backup_eligible = ?4,
                 backup_state = ?5, last_used_at = ?6 WHERE id = ?1",
            params![
                a.id.as_bytes(),
                a.credential,
                a.sign_count,
                a.backup_eligible,
                a.backup_state,
                now
            ],
        )?;
        Ok(())
    }

    pub fn rename_authenticator(&self, id: Uuid, nickname: &str) -> Result<()> {
        self.tx.execute(
            "UPDATE authenticators SET nickname = ?2 WHERE id = ?1",
            params![id.as_bytes(), nickname],
        )?;
        Ok(())
    }

    pub fn mark_authenticator_lost(&self, id: Uuid) -> Result<()> {
        self.tx.execute(
            "UPDATE authenticators SET status = 'lost' WHERE id = ?1",
            [id.as_bytes()],
        )?;
        Ok(())
    }

    pub fn delete_authenticator(&self, id: Uuid) -> Result<()> {
        self.tx
            .execute("DELETE FROM authenticators WHERE id = ?1", [id.as_bytes()])?;
        Ok(())
    }

    // -- devices -----------------------------------------------------------------------------

    pub fn device_by_secret(&self, account_id: Uuid, secret_hash: &[u8]) -> Result<Option<Device>> {
        Ok(self
            .tx
            .query_row(
                &format!(
                    "SELECT {DEVICE_COLS} FROM devices WHERE secret_hash = ?1 AND account_id = ?2"
                ),
                params![secret_hash, account_id.as_bytes()],
                device_from_row,
            )
            .optional()?)
    }

    pub fn device(&self, id: Uuid) -> Result<Option<Device>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"),
                [id.as_bytes()],
                device_from_row,
            )
            .optional()?)
    }

    pub fn insert_device(&self, d: &Device, secret_hash: &[u8]) -> Result<()> {
        self.tx.execute(
            "INSERT INTO devices (id, account_id, secret_hash, name, platform, first_seen_at,
                 last_seen_at, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                d.id.as_bytes(),
                d.account_id.as_bytes(),
                secret_hash,
                d.name,
                d.platform,
                d.first_seen_at,
                d.last_seen_at,
                d.address
            ],
        )?;
        Ok(())
    }

    /// A known device signed in again: new secret (rotated at every sign-in), name and address.
    pub fn refresh_device(&self, d: &Device, secret_hash: &[u8]) -> Result<()> {
        self.tx.execute(
            "UPDATE devices SET secret_hash = ?2, name = ?3, platform = ?4, last_seen_at = ?5,
                 address = ?6 WHERE id = ?1",
            params![
                d.id.as_bytes(),
                secret_hash,
                d.name,
                d.platform,
                d.last_seen_at,
                d.address
            ],
        )?;
        Ok(())
    }

    // -- sessions ----------------------------------------------------------------------------

    pub fn insert_session(&self, s: &Session, token_hash: &[u8]) -> Result<()> {
        self.tx.execute(
            "INSERT INTO sessions (id, account_id, device_id, token_hash, scope, created_at,
                 last_seen_at, verified_at, expires_at, opened_by, address, active_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                s.id.as_bytes(),
                s.account_id.as_bytes(),
                s.device_id.as_bytes(),
                token_hash,
                scope_str(s.scope),
                s.created_at,
                s.last_seen_at,
                s.verified_at,
                s.expires_at,
                s.opened_by.map(|u| u.as_bytes().to_vec()),
                s.address,
                s.active_from
            ],
        )?;
        Ok(())
    }

    pub fn session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Session>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE token_hash = ?1"
        ))?;
        Ok(stmt.query_row([token_hash], session_from_row).optional()?)
    }

    pub fn session(&self, id: Uuid) -> Result<Option<Session>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"),
                [id.as_bytes()],
                session_from_row,
            )
            .optional()?)
    }

    /// Sessions not ended and not past their lifetimes at `now`.
    pub fn live_sessions(
        &self,
        account_id: Uuid,
        now: Millis,
        idle_ms: i64,
    ) -> Result<Vec<Session>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {SESSION_COLS} FROM sessions
             WHERE account_id = ?1 AND ended_at IS NULL AND expires_at > ?2
               AND MAX(last_seen_at, active_from) > ?3
             ORDER BY created_at DESC"
        ))?;
        let rows = stmt.query_map(
            params![account_id.as_bytes(), now, now - idle_ms],
            session_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn touch_session(&self, id: Uuid, now: Millis) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1")?;
        stmt.execute(params![id.as_bytes(), now])?;
        Ok(())
    }

    pub fn mark_session_verified(&self, id: Uuid, now: Millis) -> Result<()> {
        self.tx.execute(
            "UPDATE sessions SET verified_at = ?2, last_seen_at = ?2 WHERE id = ?1",
            params![id.as_bytes(), now],
        )?;
        Ok(())
    }

    pub fn upgrade_session_scope(
        &self,
        id: Uuid,
        scope: SessionScope,
        opened_by: Uuid,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE sessions SET scope = ?2, opened_by = ?3 WHERE id = ?1",
            params![id.as_bytes(), scope_str(scope), opened_by.as_bytes()],
        )?;
        Ok(())
    }

    /// Ends a session if it is still open; true if this call ended it.
    pub fn end_session(&self, id: Uuid, reason: &str, now: Millis) -> Result<bool> {
        let n = self.tx.execute(
            "UPDATE sessions SET ended_at = ?2, ended_reason = ?3
             WHERE id = ?1 AND ended_at IS NULL",
            params![id.as_bytes(), now, reason],
        )?;
        Ok(n == 1)
    }

    // -- recovery keys -----------------------------------------------------------------------

    pub fn recovery_key(&self, account_id: Uuid) -> Result<Option<RecoveryKeyRecord>> {
        Ok(self
            .tx
            .query_row(
                "SELECT account_id, public_key, created_at, confirmed_at, last_verified_at
                 FROM recovery_keys WHERE account_id = ?1",
                [account_id.as_bytes()],
                |r| {
                    Ok(RecoveryKeyRecord {
                        account_id: uuid_of(r.get(0)?)?,
                        public_key: r.get(1)?,
                        created_at: r.get(2)?,
                        confirmed_at: r.get(3)?,
                        last_verified_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Replaces the account's recovery key; the new one starts unconfirmed.
    pub fn set_recovery_key(&self, account_id: Uuid, public_key: &[u8], now: Millis) -> Result<()> {
        self.tx.execute(
            "INSERT INTO recovery_keys (account_id, public_key, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(account_id) DO UPDATE SET public_key = excluded.public_key,
                 created_at = excluded.created_at, confirmed_at = NULL, last_verified_at = NULL",
            params![account_id.as_bytes(), public_key, now],
        )?;
        Ok(())
    }

    pub fn mark_recovery_key_verified(
        &self,
        account_id: Uuid,
        confirm: bool,
        now: Millis,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE recovery_keys SET last_verified_at = ?2,
                 confirmed_at = CASE WHEN ?3 THEN COALESCE(confirmed_at, ?2) ELSE confirmed_at END
             WHERE account_id = ?1",
            params![account_id.as_bytes(), now, confirm],
        )?;
        Ok(())
    }

    /// A redeemed key is used up.
    pub fn delete_recovery_key(&self, account_id: Uuid) -> Result<()> {
        self.tx.execute(
            "DELETE FROM recovery_keys WHERE account_id = ?1",
            [account_id.as_bytes()],
        )?;
        Ok(())
    }

    // -- events ------------------------------------------------------------------------------

    /// Appends to the hash-chained log. The event goes to live streams after the commit.
    pub fn append_event(&mut self, e: NewEvent, now: Millis) -> Result<SecurityEvent> {
        let head: Option<(i64, Vec<u8>)> = self
            .tx
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (seq, prev) = match head {
            Some((seq, hash)) => (
                seq + 1,
                <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| CoreError::Corrupt("event hash is not 32 bytes".into()))?,
            ),
            None => (1, [0u8; 32]),
        };
        let urgency = urgency_of(e.kind, &e.detail);
        let mut event = SecurityEvent {
            id: seq,
            account_id: e.account_id,
            kind: e.kind,
            at: now,
            urgency,
            session_id: e.session_id,
            device_id: e.device_id,
            device_name: e.device_name,
            address: e.address,
            detail: e.detail,
            hash: String::new(),
        };
        let hash = event_hash(&prev, &event);
        event.hash = hex(&hash);
        self.tx.execute(
            "INSERT INTO events (seq, account_id, kind, at, urgency, session_id, device_id,
                 device_name, address, detail, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                seq,
                event.account_id.as_bytes(),
                event.kind.as_str(),
                event.at,
                urgency_str(urgency),
                event.session_id.map(|u| u.as_bytes().to_vec()),
                event.device_id.map(|u| u.as_bytes().to_vec()),
                event.device_name,
                event.address,
                serde_json::to_string(&event.detail)?,
                hash.as_slice()
            ],
        )?;
        self.appended.push(event.clone());
        Ok(event)
    }

    /// Newest first, strictly older than `before` if given.
    pub fn events_page(
        &self,
        account_id: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SecurityEvent>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, account_id, kind, at, urgency, session_id, device_id, device_name,
                    address, detail, hash
             FROM events WHERE account_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![
            account_id.as_bytes(),
            before.unwrap_or(i64::MAX),
            limit
        ])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(event_from_row(row)?.0);
        }
        Ok(out)
    }

    /// Oldest first, strictly newer than `after`: what a resuming stream missed.
    pub fn events_after(
        &self,
        account_id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SecurityEvent>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, account_id, kind, at, urgency, session_id, device_id, device_name,
                    address, detail, hash
             FROM events WHERE account_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![account_id.as_bytes(), after, limit])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(event_from_row(row)?.0);
        }
        Ok(out)
    }

    pub fn latest_event_id(&self, account_id: Uuid) -> Result<i64> {
        Ok(self.tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE account_id = ?1",
            [account_id.as_bytes()],
            |r| r.get(0),
        )?)
    }

    /// For tests of the append-only guarantee and for operators' tooling.
    pub fn raw(&self) -> &rusqlite::Connection {
        &self.tx
    }
}

/// One IMMEDIATE transaction around `f`, committed if it returns `Ok`; gives back the events
/// it appended, for the caller to publish.
fn transact<T, E: From<CoreError>>(
    conn: &mut Connection,
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
    let Tx { tx, appended } = wrapped;
    tx.commit().map_err(CoreError::from)?;
    Ok((value, appended))
}

/// A `ceremonies` row selected (or returned) as id, kind, account_id, session_id, state,
/// created_at, expires_at.
fn ceremony_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ceremony> {
    Ok(Ceremony {
        id: uuid_of(r.get(0)?)?,
        kind: r.get(1)?,
        account_id: opt_uuid(r.get(2)?)?,
        session_id: opt_uuid(r.get(3)?)?,
        state: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn account(name: &str) -> Account {
        Account {
            id: Uuid::new_v4(),
            username: name.into(),
            display_name: name.into(),
            created_at: 1,
            state: AccountState::Active,
            recovery: None,
        }
    }

    #[test]
    fn events_form_a_verifiable_append_only_chain() {
        let store = Store::open_in_memory().unwrap();
        let a = account("ada");
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                for kind in [
                    EventKind::AccountCreated,
                    EventKind::SignIn,
                    EventKind::SessionEnded,
                ] {
                    tx.append_event(NewEvent::new(a.id, kind), 10)?;
                }
                Ok::<_, CoreError>(())
            })
            .unwrap();
        assert_eq!(
            store.verify_chain().unwrap(),
            ChainReport {
                events: 3,
                first_broken: None
            }
        );
        let tamper = store.write(|tx| {
            tx.raw()
                .execute("UPDATE events SET at = 99 WHERE seq = 2", [])?;
            Ok::<_, CoreError>(())
        });
        assert!(tamper.is_err(), "the log must refuse updates");
        let delete = store.write(|tx| {
            tx.raw().execute("DELETE FROM events", [])?;
            Ok::<_, CoreError>(())
        });
        assert!(delete.is_err(), "the log must refuse deletes");
    }

    #[test]
    fn a_ceremony_is_taken_once_and_not_after_expiry() {
        let store = Store::open_in_memory().unwrap();
        let c = Ceremony {
            id: Uuid::new_v4(),
            kind: "sign_in".into(),
            account_id: None,
            session_id: None,
            state: "{}".into(),
            created_at: 0,
            expires_at: 100,
        };
        store
            .write(|tx| {
                tx.insert_ceremony(&c, 10)?;
                assert!(tx.take_ceremony(c.id, "sign_in", 50)?.is_some());
                assert!(
                    tx.take_ceremony(c.id, "sign_in", 50)?.is_none(),
                    "second take"
                );
                tx.insert_ceremony(&c, 10)?;
                assert!(tx.take_ceremony(c.id, "sign_in", 100)?.is_none(), "expired");
                tx.insert_ceremony(&c, 10)?;
                assert!(
                    tx.take_ceremony(c.id, "step_up", 50)?.is_none(),
                    "wrong kind"
                );
                assert!(
                    tx.take_ceremony(c.id, "sign_in", 50)?.is_none(),
                    "burnt by wrong kind"
                );
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn pending_ceremonies_are_bounded() {
        let store = Store::open_in_memory().unwrap();
        let result = store.write(|tx| {
            for i in 0..4 {
                tx.insert_ceremony(
                    &Ceremony {
                        id: Uuid::new_v4(),
                        kind: "sign_in".into(),
                        account_id: None,
                        session_id: None,
                        state: "{}".into(),
                        created_at: i,
                        expires_at: 1000,
                    },
                    3,
                )?;
            }
            Ok::<_, CoreError>(())
        });
        assert!(matches!(result, Err(CoreError::TooManyCeremonies)));
    }
}
