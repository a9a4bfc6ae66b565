//! Devices (a browser or app, known by a secret it keeps) and the sessions signed in on them.

use uuid::Uuid;

use keyward_proto::{Millis, SessionBinding, SessionScope};

use super::sql::{Row, args};
use super::{Tx, bad_value, opt_uuid, uuid_of};
use crate::error::Result;

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
    /// An agent's session (the device grant): its own idle limit, in place of the
    /// deployment's. None for every other session.
    pub idle_ms: Option<i64>,
    /// An agent's session: the client (agent, CLI) it was approved for.
    pub agent_client_id: Option<String>,
    /// How its token is bound to a key on the device, and that key's RFC 7638 thumbprint
    /// (`None` exactly when unbound).
    pub binding: SessionBinding,
    pub binding_jkt: Option<String>,
}

impl Session {
    /// When the session lapses if unused: `idle_ms` after its last use (or `active_from`),
    /// but never past its absolute lifetime. A recovery session has no idle timeout, only its
    /// lifetime (the window's end plus the enrolment deadline): it ends, or becomes a full
    /// session, when enrolment is done.
    /// An agent's session uses its own idle limit in place of `idle_ms`.
    pub fn idle_expires_at(&self, idle_ms: i64) -> Millis {
        if self.scope == SessionScope::Recovery {
            return self.expires_at;
        }
        let idle_ms = self.idle_ms.unwrap_or(idle_ms);
        (self.last_seen_at.max(self.active_from) + idle_ms).min(self.expires_at)
    }
    pub fn is_live(&self, now: Millis, idle_ms: i64) -> bool {
        self.ended_at.is_none() && now < self.idle_expires_at(idle_ms)
    }
}

fn binding_str(b: SessionBinding) -> &'static str {
    match b {
        SessionBinding::Unbound => "unbound",
        SessionBinding::Software => "software",
        SessionBinding::Hardware => "hardware",
        SessionBinding::Browser => "browser",
        SessionBinding::Dbsc => "dbsc",
    }
}

fn binding_of(text: String) -> Result<SessionBinding> {
    Ok(match text.as_str() {
        "unbound" => SessionBinding::Unbound,
        "software" => SessionBinding::Software,
        "hardware" => SessionBinding::Hardware,
        "browser" => SessionBinding::Browser,
        "dbsc" => SessionBinding::Dbsc,
        _ => return Err(bad_value("session binding", text)),
    })
}

fn scope_str(s: SessionScope) -> &'static str {
    match s {
        SessionScope::Full => "full",
        SessionScope::Recovery => "recovery",
    }
}

const DEVICE_COLS: &str = "id, account_id, name, platform, first_seen_at, last_seen_at, address";

fn device_from_row(r: &Row<'_>) -> Result<Device> {
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

/// When the idle clock last restarted: the later of the last use and `active_from` (SQLite's
/// two-argument `MAX` is PostgreSQL's `GREATEST`; `CASE` is both).
const LAST_ACTIVE: &str =
    "(CASE WHEN last_seen_at > active_from THEN last_seen_at ELSE active_from END)";

/// `LAST_ACTIVE` of a session aliased `s` in a join.
pub(super) const LAST_ACTIVE_OF_S: &str =
    "(CASE WHEN s.last_seen_at > s.active_from THEN s.last_seen_at ELSE s.active_from END)";
/// A session's idle limit: its own (an agent's), else the deployment's, bound as `?N`.
fn idle_of(param: &str) -> String {
    format!("COALESCE(idle_ms, {param})")
}

const SESSION_COLS: &str = "id, account_id, device_id, scope, created_at, last_seen_at,
    verified_at, expires_at, opened_by, address, ended_at, ended_reason, active_from, idle_ms,
    agent_client_id, binding_kind, binding_jkt";

fn session_from_row(r: &Row<'_>) -> Result<Session> {
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
        idle_ms: r.get(13)?,
        agent_client_id: r.get(14)?,
        binding: binding_of(r.get(15)?)?,
        binding_jkt: r.get(16)?,
    })
}

// -- devices ----------------------------------------------------------------------------------

impl Tx<'_> {
    /// The account's device holding this secret; another account's device never matches.
    pub fn device_by_secret(&self, account_id: Uuid, secret_hash: &[u8]) -> Result<Option<Device>> {
        self.query_row(
            &format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE secret_hash = ?1 AND account_id = ?2"
            ),
            args![secret_hash, account_id.as_bytes()],
            device_from_row,
        )
    }

    pub fn device(&self, id: Uuid) -> Result<Option<Device>> {
        self.query_row(
            &format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"),
            args![id.as_bytes()],
            device_from_row,
        )
    }

    pub fn insert_device(&self, d: &Device, secret_hash: &[u8]) -> Result<()> {
        self.execute(
            "INSERT INTO devices (id, account_id, secret_hash, name, platform, first_seen_at,
                 last_seen_at, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
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
        self.execute(
            "UPDATE devices SET secret_hash = ?2, name = ?3, platform = ?4, last_seen_at = ?5,
                 address = ?6 WHERE id = ?1",
            args![
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
}

// -- sessions ---------------------------------------------------------------------------------

impl Tx<'_> {
    /// Stores a new, open session; only the hash of its bearer token is kept.
    pub fn insert_session(&self, s: &Session, token_hash: &[u8]) -> Result<()> {
        // Prepared once per connection: the benchmark writes a million sessions through here.
        self.execute(
            "INSERT INTO sessions (id, account_id, device_id, token_hash, scope, created_at,
                 last_seen_at, verified_at, expires_at, opened_by, address, active_from, idle_ms,
                 agent_client_id, binding_kind, binding_jkt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            args![
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
                s.active_from,
                s.idle_ms,
                s.agent_client_id,
                binding_str(s.binding),
                s.binding_jkt
            ],
        )?;
        Ok(())
    }

    /// The session a bearer token belongs to, ended or not: callers check [`Session::is_live`].
    pub fn session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Session>> {
        self.query_row(
            &format!("SELECT {SESSION_COLS} FROM sessions WHERE token_hash = ?1"),
            args![token_hash],
            session_from_row,
        )
    }

    pub fn session(&self, id: Uuid) -> Result<Option<Session>> {
        self.query_row(
            &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"),
            args![id.as_bytes()],
            session_from_row,
        )
    }

    /// Sessions not ended and not past their lifetimes at `now`, newest first.
    pub fn live_sessions(
        &self,
        account_id: Uuid,
        now: Millis,
        idle_ms: i64,
    ) -> Result<Vec<Session>> {
        self.query_rows(
            &format!(
                "SELECT {SESSION_COLS} FROM sessions
                 WHERE account_id = ?1 AND ended_at IS NULL AND expires_at > ?2
                   AND (scope = 'recovery' OR {LAST_ACTIVE} + {idle} > ?2)
                 ORDER BY created_at DESC",
                idle = idle_of("?3")
            ),
            args![account_id.as_bytes(), now, idle_ms],
            session_from_row,
        )
    }

    /// Records a use, restarting the idle clock.
    pub fn touch_session(&self, id: Uuid, now: Millis) -> Result<()> {
        self.execute(
            "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1",
            args![id.as_bytes(), now],
        )?;
        Ok(())
    }

    /// A fresh user verification (step-up); counts as a use too.
    pub fn mark_session_verified(&self, id: Uuid, now: Millis) -> Result<()> {
        self.execute(
            "UPDATE sessions SET verified_at = ?2, last_seen_at = ?2 WHERE id = ?1",
            args![id.as_bytes(), now],
        )?;
        Ok(())
    }

    /// Changes a session's scope; from `now` its idle clock runs and it lives until
    /// `expires_at`, as a session opened then would.
    pub fn upgrade_session_scope(
        &self,
        id: Uuid,
        scope: SessionScope,
        opened_by: Uuid,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        self.execute(
            "UPDATE sessions SET scope = ?2, opened_by = ?3, active_from = ?4, last_seen_at = ?4,
                 expires_at = ?5 WHERE id = ?1",
            args![
                id.as_bytes(),
                scope_str(scope),
                opened_by.as_bytes(),
                now,
                expires_at
            ],
        )?;
        Ok(())
    }

    /// Gives a session a new bearer token in place of `old_hash`, the one the request was
    /// made with: the old one is refused from now on. False (nothing changed) if `old_hash` is
    /// no longer the session's, so of two replacements raced with one token only one wins.
    pub fn rotate_session_token(
        &mut self,
        id: Uuid,
        old_hash: &[u8],
        new_hash: &[u8],
    ) -> Result<bool> {
        let n = self.execute(
            "UPDATE sessions SET token_hash = ?3 WHERE id = ?1 AND token_hash = ?2",
            args![id.as_bytes(), old_hash, new_hash],
        )?;
        if n == 1 {
            self.replaced_tokens.push(id);
        }
        Ok(n == 1)
    }

    /// Gives a session a new bearer token whatever its current one (a browser session's
    /// refresh, proven by its key rather than by the token); the old one is refused from now on.
    pub fn replace_session_token(&mut self, id: Uuid, new_hash: &[u8]) -> Result<bool> {
        let n = self.execute(
            "UPDATE sessions SET token_hash = ?2 WHERE id = ?1 AND ended_at IS NULL",
            args![id.as_bytes(), new_hash],
        )?;
        if n == 1 {
            self.replaced_tokens.push(id);
        }
        Ok(n == 1)
    }

    /// Sessions neither ended nor lapsed (idle or absolute) at `now`.
    pub fn open_sessions(&self, now: Millis, idle_ms: i64) -> Result<i64> {
        self.query_value(
            &format!(
                "SELECT COUNT(*) FROM sessions
                 WHERE ended_at IS NULL AND expires_at > ?1 AND {LAST_ACTIVE} + {idle} > ?1",
                idle = idle_of("?2")
            ),
            args![now, idle_ms],
        )
    }

    /// Ends a session if it is still open; true if this call ended it. Every app signed in
    /// through it with a back-channel logout URI gets a logout queued in this same
    /// transaction (`oidc_logouts`), whatever the reason: this is the one place sessions end.
    pub fn end_session(&self, id: Uuid, reason: &str, now: Millis) -> Result<bool> {
        let n = self.execute(
            "UPDATE sessions SET ended_at = ?2, ended_reason = ?3
             WHERE id = ?1 AND ended_at IS NULL",
            args![id.as_bytes(), now, reason],
        )?;
        if n == 1 {
            self.enqueue_session_logouts(id, reason, now)?;
        }
        Ok(n == 1)
    }

    /// Deletes up to `batch` sessions that ended or lapsed (idle or absolute) before `before`,
    /// then up to `batch` devices that no session refers to, last seen before `before`. The
    /// security log keeps their history (it refers to them by ID, never by key). Returns the
    /// numbers deleted.
    pub fn prune_sessions(
        &self,
        before: Millis,
        idle_ms: i64,
        batch: u32,
    ) -> Result<(usize, usize)> {
        let sessions = self.execute(
            &format!(
                "DELETE FROM sessions WHERE id IN (
                     SELECT id FROM sessions
                     WHERE COALESCE(ended_at, CASE WHEN {LAST_ACTIVE} + {idle} < expires_at
                         THEN {LAST_ACTIVE} + {idle} ELSE expires_at END) < ?1
                     LIMIT ?3)",
                idle = idle_of("?2")
            ),
            args![before, idle_ms, i64::from(batch)],
        )?;
        let devices = self.execute(
            "DELETE FROM devices WHERE id IN (
                 SELECT d.id FROM devices d
                 WHERE d.last_seen_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = d.id)
                 LIMIT ?2)",
            args![before, i64::from(batch)],
        )?;
        Ok((sessions, devices))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Store, fixtures};
    use super::*;
    use crate::error::CoreError;

    const IDLE: i64 = 100;

    fn session(d: &Device, created_at: Millis, expires_at: Millis) -> Session {
        Session {
            id: Uuid::new_v4(),
            account_id: d.account_id,
            device_id: d.id,
            scope: SessionScope::Full,
            created_at,
            last_seen_at: created_at,
            verified_at: created_at,
            expires_at,
            opened_by: None,
            address: "127.0.0.1".into(),
            ended_at: None,
            ended_reason: None,
            active_from: created_at,
            idle_ms: None,
            agent_client_id: None,
            binding: SessionBinding::Unbound,
            binding_jkt: None,
        }
    }

    /// An account with one device, ready for sessions.
    fn setup(store: &Store) -> Device {
        let a = fixtures::account("ada");
        let d = fixtures::device(a.id);
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                tx.insert_device(&d, b"device-secret")
            })
            .unwrap();
        d
    }

    #[test]
    fn a_device_is_found_by_its_secret_only_for_its_account() {
        let store = fixtures::store();
        let d = setup(&store);
        store
            .write(|tx| {
                assert_eq!(
                    tx.device_by_secret(d.account_id, b"device-secret")?
                        .unwrap()
                        .id,
                    d.id
                );
                assert!(
                    tx.device_by_secret(Uuid::new_v4(), b"device-secret")?
                        .is_none()
                );
                let mut again = d.clone();
                again.name = "new laptop".into();
                again.last_seen_at = 50;
                tx.refresh_device(&again, b"rotated")?;
                assert!(
                    tx.device_by_secret(d.account_id, b"device-secret")?
                        .is_none()
                );
                let got = tx.device_by_secret(d.account_id, b"rotated")?.unwrap();
                assert_eq!((got.name.as_str(), got.last_seen_at), ("new laptop", 50));
                assert_eq!(got.first_seen_at, d.first_seen_at);
                assert_eq!(tx.device(d.id)?.unwrap().name, "new laptop");
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn a_session_is_found_by_token_and_ends_once() {
        let store = fixtures::store();
        let d = setup(&store);
        let s = session(&d, 10, 1000);
        store
            .write(|tx| {
                tx.insert_session(&s, b"token-hash")?;
                let got = tx.session_by_token_hash(b"token-hash")?.unwrap();
                assert_eq!((got.id, got.scope), (s.id, SessionScope::Full));
                assert!(got.is_live(50, IDLE));
                assert!(tx.end_session(s.id, "signed_out", 60)?);
                assert!(!tx.end_session(s.id, "again", 70)?, "already ended");
                let got = tx.session(s.id)?.unwrap();
                assert_eq!(got.ended_at, Some(60));
                assert_eq!(got.ended_reason.as_deref(), Some("signed_out"));
                assert!(!got.is_live(61, IDLE));
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one_once() {
        let store = Store::open_in_memory().unwrap();
        let d = setup(&store);
        let s = session(&d, 10, 1000);
        store
            .write(|tx| {
                tx.insert_session(&s, b"first")?;
                assert!(tx.rotate_session_token(s.id, b"first", b"second")?);
                assert!(tx.session_by_token_hash(b"first")?.is_none());
                assert_eq!(tx.session_by_token_hash(b"second")?.unwrap().id, s.id);
                assert!(
                    !tx.rotate_session_token(s.id, b"first", b"third")?,
                    "the old token cannot replace the new one"
                );
                assert!(tx.session_by_token_hash(b"third")?.is_none());
                assert_eq!(tx.session_by_token_hash(b"second")?.unwrap().id, s.id);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn live_sessions_leave_out_ended_idle_and_expired_ones() {
        let store = fixtures::store();
        let d = setup(&store);
        let now = 500;
        let live = session(&d, 450, 1000);
        let touched = session(&d, 300, 1000); // idle since 300, but touched below
        let idle = session(&d, 350, 1000); // last use 350: idle by 450
        let expired = session(&d, 460, 500); // lifetime over at `now`
        let ended = session(&d, 470, 1000);
        let mut waiting = session(&d, 200, 1000); // a recovery session whose window ends at 480
        waiting.scope = SessionScope::Recovery;
        waiting.active_from = 480;
        store
            .write(|tx| {
                for (i, s) in [&live, &touched, &idle, &expired, &ended, &waiting]
                    .into_iter()
                    .enumerate()
                {
                    tx.insert_session(s, format!("token-{i}").as_bytes())?;
                }
                tx.touch_session(touched.id, 490)?;
                tx.end_session(ended.id, "signed_out", 480)?;
                let ids: Vec<Uuid> = tx
                    .live_sessions(d.account_id, now, IDLE)?
                    .iter()
                    .map(|s| s.id)
                    .collect();
                assert_eq!(ids, [live.id, touched.id, waiting.id], "newest first");
                for s in tx.live_sessions(d.account_id, now, IDLE)? {
                    assert!(s.is_live(now, IDLE), "the SQL and is_live agree");
                }
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn idle_expiry_never_passes_the_lifetime() {
        let store = fixtures::store();
        let d = setup(&store);
        let mut s = session(&d, 0, 150);
        assert_eq!(s.idle_expires_at(IDLE), 100);
        s.active_from = 80;
        assert_eq!(s.idle_expires_at(IDLE), 150, "capped by expires_at");
        store
            .write(|tx| {
                tx.insert_session(&s, b"t")?;
                tx.mark_session_verified(s.id, 40)?;
                let opener = Uuid::new_v4();
                tx.upgrade_session_scope(s.id, SessionScope::Recovery, opener, 40, s.expires_at)?;
                let got = tx.session(s.id)?.unwrap();
                assert_eq!((got.verified_at, got.last_seen_at), (40, 40));
                assert_eq!(
                    (got.scope, got.opened_by),
                    (SessionScope::Recovery, Some(opener))
                );
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }
}
