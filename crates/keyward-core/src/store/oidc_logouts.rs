//! The back-channel logout outbox (`oidc_logouts`): one row per app sign-in to tell that it
//! has ended (OpenID Back-Channel Logout 1.0). Rows are written by the transaction that ends
//! the Keyward session ([`Tx::end_session`] calls [`Tx::enqueue_session_logouts`]) or the
//! grant, so a crash loses none and a rollback sends nothing; keywardd's sender claims due
//! rows with a lease (one sender per row, on any number of instances), signs and posts the
//! logout token, and records the outcome.

use keyward_proto::Millis;
use uuid::Uuid;

use super::sql::{Row, args};
use super::{Tx, uuid_of};
use crate::error::Result;

/// A logout claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    pub id: Uuid,
    pub client_id: String,
    pub account_id: Uuid,
    pub sid: String,
    pub created_at: Millis,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// A logout as the outbox holds it (for operators and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRecord {
    pub sid: String,
    pub delivered_at: Option<Millis>,
    pub gave_up_at: Option<Millis>,
    pub attempts: i64,
    /// What the last attempt met, e.g. "status 503".
    pub last_outcome: Option<String>,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutOutcome {
    /// The app answered 200 (or 204): done.
    Delivered,
    /// A failure worth retrying: due again at this time.
    RetryAt(Millis),
    /// The app refused it, or retries ran out: never sent again.
    GaveUp,
}

const LOGOUT_COLS: &str = "id, client_id, account_id, sid, created_at, attempts";

fn logout_from_row(r: &Row<'_>) -> Result<Logout> {
    Ok(Logout {
        id: uuid_of(r.get(0)?)?,
        client_id: r.get(1)?,
        account_id: uuid_of(r.get(2)?)?,
        sid: r.get(3)?,
        created_at: r.get(4)?,
        attempts: r.get(5)?,
    })
}

/// Grants whose app is to be told: it exchanged its code (so it holds a sign-in), the grant is
/// still open (an app that signed out or revoked has been told by itself), and it registered
/// a back-channel logout URI.
const TELLABLE: &str = "g.ended_at IS NULL AND g.code_used_at IS NOT NULL
    AND c.backchannel_logout_uri IS NOT NULL";

impl Tx<'_> {
    /// Queues a logout for every app signed in through the Keyward session `session_id`
    /// (one per app: its `sid` names the sign-in). Called by [`Tx::end_session`], so every
    /// way a session ends queues them. Returns how many were queued.
    pub fn enqueue_session_logouts(
        &self,
        session_id: Uuid,
        reason: &str,
        now: Millis,
    ) -> Result<usize> {
        self.enqueue_where(
            "g.session_id = ?1",
            args![session_id.as_bytes()],
            reason,
            now,
        )
    }

    /// Queues a logout for the app of one grant ended on Keyward's side (a reused code or
    /// refresh token), if it is one to tell. Call before ending the grant.
    pub fn enqueue_grant_logout(&self, grant_id: Uuid, reason: &str, now: Millis) -> Result<usize> {
        self.enqueue_where("g.id = ?1", args![grant_id.as_bytes()], reason, now)
    }

    /// Queues a logout for each open sign-in of the account to the client (the person revoked
    /// the app in Keyward). Call before ending the grants.
    pub fn enqueue_client_logouts(
        &self,
        account_id: Uuid,
        client_id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<usize> {
        self.enqueue_where(
            "g.account_id = ?1 AND g.client_id = ?2",
            args![account_id.as_bytes(), client_id],
            reason,
            now,
        )
    }

    /// Queues one logout per (app, sid) among the grants `filter` selects that are to be told.
    fn enqueue_where(
        &self,
        filter: &str,
        filter_args: &[&dyn super::sql::Param],
        reason: &str,
        now: Millis,
    ) -> Result<usize> {
        let tellable: Vec<(String, Vec<u8>, String)> = self.query_rows(
            &format!(
                "SELECT DISTINCT g.client_id, g.account_id, g.sid
                 FROM oidc_grants g JOIN oidc_clients c ON c.client_id = g.client_id
                 WHERE {filter} AND {TELLABLE}
                 ORDER BY g.client_id"
            ),
            filter_args,
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut queued = 0;
        for (client_id, account_id, sid) in tellable {
            queued += self.insert_logout(&client_id, &account_id, &sid, reason, now)?;
        }
        Ok(queued)
    }

    /// One row, due at once; none if this sign-in was queued already (one logout per `sid`).
    fn insert_logout(
        &self,
        client_id: &str,
        account_id: &[u8],
        sid: &str,
        reason: &str,
        now: Millis,
    ) -> Result<usize> {
        let n = self.execute(
            "INSERT INTO oidc_logouts (id, client_id, account_id, sid, reason, created_at,
                 next_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (client_id, sid) DO NOTHING",
            args![
                Uuid::new_v4().as_bytes(),
                client_id,
                account_id,
                sid,
                reason,
                now
            ],
        )?;
        if n > 0 {
            self.logouts_queued.set(true);
        }
        Ok(n)
    }

    /// Claims up to `limit` due logouts for `lease_ms`: no other sender (on this instance or
    /// another) takes them until the lease runs out, when a sender that died is replaced.
    pub fn claim_logouts(&self, now: Millis, lease_ms: i64, limit: u32) -> Result<Vec<Logout>> {
        self.query_rows(
            &format!(
                "UPDATE oidc_logouts SET leased_until = ?2, attempts = attempts + 1
                 WHERE id IN (
                     SELECT id FROM oidc_logouts
                     WHERE delivered_at IS NULL AND gave_up_at IS NULL
                       AND next_at <= ?1 AND leased_until <= ?1
                     ORDER BY next_at LIMIT ?3)
                 RETURNING {LOGOUT_COLS}"
            ),
            args![now, now + lease_ms, i64::from(limit)],
            logout_from_row,
        )
    }

    /// Whether any logout is due and unclaimed at `now` (a read, so that an idle sender does
    /// not take the writer every time it looks).
    pub fn logouts_due(&self, now: Millis) -> Result<bool> {
        // COUNT, not a literal: PostgreSQL's `1` is an int4, which no i64 reads.
        let due: i64 = self.query_value(
            "SELECT COUNT(*) FROM (SELECT id FROM oidc_logouts
                 WHERE delivered_at IS NULL AND gave_up_at IS NULL
                   AND next_at <= ?1 AND leased_until <= ?1
                 LIMIT 1) AS due",
            args![now],
        )?;
        Ok(due > 0)
    }

    /// Records an attempt's outcome (`detail`: what happened, e.g. "status 503") and lifts
    /// the lease.
    pub fn record_logout(
        &self,
        id: Uuid,
        outcome: LogoutOutcome,
        detail: &str,
        now: Millis,
    ) -> Result<()> {
        let (delivered, gave_up, next_at) = match outcome {
            LogoutOutcome::Delivered => (Some(now), None, None),
            LogoutOutcome::GaveUp => (None, Some(now), None),
            LogoutOutcome::RetryAt(at) => (None, None, Some(at)),
        };
        self.execute(
            "UPDATE oidc_logouts SET delivered_at = ?2, gave_up_at = ?3,
                 next_at = COALESCE(?4, next_at), leased_until = 0, last_outcome = ?5
             WHERE id = ?1",
            args![id.as_bytes(), delivered, gave_up, next_at, detail],
        )?;
        Ok(())
    }

    /// Logouts neither delivered nor given up.
    pub fn pending_logouts(&self) -> Result<i64> {
        self.query_value(
            "SELECT COUNT(*) FROM oidc_logouts WHERE delivered_at IS NULL AND gave_up_at IS NULL",
            args![],
        )
    }

    /// Each logout of a client, oldest first.
    pub fn client_logouts(&self, client_id: &str) -> Result<Vec<LogoutRecord>> {
        self.query_rows(
            "SELECT sid, delivered_at, gave_up_at, attempts, last_outcome FROM oidc_logouts
             WHERE client_id = ?1 ORDER BY created_at",
            args![client_id],
            |r| {
                Ok(LogoutRecord {
                    sid: r.get(0)?,
                    delivered_at: r.get(1)?,
                    gave_up_at: r.get(2)?,
                    attempts: r.get(3)?,
                    last_outcome: r.get(4)?,
                })
            },
        )
    }

    /// Deletes up to `batch` logouts delivered or given up before `before`.
    pub fn prune_logouts(&self, before: Millis, batch: u32) -> Result<usize> {
        self.execute(
            "DELETE FROM oidc_logouts WHERE id IN (
                 SELECT id FROM oidc_logouts
                 WHERE COALESCE(delivered_at, gave_up_at) < ?1 LIMIT ?2)",
            args![before, i64::from(batch)],
        )
    }

    /// Up to `limit` sessions lapsed at `now` (idle or past their lifetime) but never marked
    /// ended, behind which an app with a back-channel URI is still signed in: for the sender
    /// to end them (which queues their logouts) rather than wait for someone to notice.
    pub fn lapsed_sessions_to_tell(
        &self,
        now: Millis,
        idle_ms: i64,
        limit: u32,
    ) -> Result<Vec<(Uuid, &'static str)>> {
        let rows: Vec<(Vec<u8>, Millis)> = self.query_rows(
            &format!(
                "SELECT DISTINCT s.id, s.expires_at
                 FROM oidc_grants g
                 JOIN oidc_clients c ON c.client_id = g.client_id
                 JOIN sessions s ON s.id = g.session_id
                 WHERE {TELLABLE} AND s.ended_at IS NULL AND s.scope = 'full'
                   AND (s.expires_at <= ?1 OR {} + ?2 <= ?1)
                 LIMIT ?3",
                super::sessions::LAST_ACTIVE_OF_S
            ),
            args![now, idle_ms, i64::from(limit)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.into_iter()
            .map(|(id, expires_at)| {
                let reason = if now >= expires_at {
                    "lifetime"
                } else {
                    "idle_timeout"
                };
                Ok((uuid_of(id)?, reason))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::fixtures;
    use crate::store::{ClientAuthMethod, ClientSource, Grant, OidcClient, Session};
    use keyward_proto::SessionScope;

    fn client(id: &str, uri: Option<&str>) -> OidcClient {
        OidcClient {
            client_id: id.into(),
            name: id.into(),
            redirect_uris: vec!["https://app.example/cb".into()],
            post_logout_redirect_uris: vec![],
            scopes: vec!["openid".into()],
            auth_method: ClientAuthMethod::None,
            secret_hash: None,
            backchannel_logout_uri: uri.map(str::to_string),
            jwks: None,
            source: ClientSource::Command,
            created_at: 1,
            device_grant: false,
        }
    }

    fn grant(account_id: Uuid, client_id: &str, session_id: Uuid, used: bool) -> Grant {
        Grant {
            id: Uuid::new_v4(),
            account_id,
            client_id: client_id.into(),
            sid: format!("sid-{client_id}"),
            session_id,
            scopes: "openid".into(),
            nonce: None,
            auth_time: 10,
            acr: "phr".into(),
            amr: "pop user".into(),
            code_hash: Uuid::new_v4().as_bytes().to_vec(),
            code_challenge: "c".into(),
            redirect_uri: "https://app.example/cb".into(),
            code_expires_at: 70,
            code_used_at: used.then_some(20),
            created_at: 10,
            ended_at: None,
            ended_reason: None,
        }
    }

    #[test]
    fn ending_a_session_queues_one_logout_per_app_to_tell_and_a_rollback_queues_none() {
        let store = fixtures::store();
        let account = fixtures::account("ada");
        let device = fixtures::device(account.id);
        let session = Session {
            id: Uuid::new_v4(),
            account_id: account.id,
            device_id: device.id,
            scope: SessionScope::Full,
            created_at: 10,
            last_seen_at: 10,
            verified_at: 10,
            expires_at: 1000,
            opened_by: None,
            address: "127.0.0.1".into(),
            ended_at: None,
            ended_reason: None,
            active_from: 10,
            idle_ms: None,
            agent_client_id: None,
            binding: keyward_proto::SessionBinding::Unbound,
            binding_jkt: None,
        };
        store
            .write(|tx| {
                tx.insert_account(&account)?;
                tx.insert_device(&device, b"d")?;
                tx.insert_session(&session, b"t")?;
                tx.insert_oidc_client(&client("chat", Some("https://chat.example/bcl")))?;
                tx.insert_oidc_client(&client("wiki", Some("https://wiki.example/bcl")))?;
                tx.insert_oidc_client(&client("mute", None))?;
                tx.insert_oidc_client(&client("late", Some("https://late.example/bcl")))?;
                // Two sign-ins of chat in one session share its sid: one logout.
                tx.insert_grant(&grant(account.id, "chat", session.id, true))?;
                tx.insert_grant(&grant(account.id, "chat", session.id, true))?;
                tx.insert_grant(&grant(account.id, "wiki", session.id, true))?;
                tx.insert_grant(&grant(account.id, "mute", session.id, true))?;
                // A code never exchanged: the app holds no sign-in to end.
                tx.insert_grant(&grant(account.id, "late", session.id, false))?;
                Ok::<_, crate::CoreError>(())
            })
            .unwrap();
        let rolled_back = store.write(|tx| {
            tx.end_session(session.id, "sign_out", 50)?;
            Err::<(), _>(crate::CoreError::UsernameTaken)
        });
        assert!(rolled_back.is_err());
        assert_eq!(store.read(|tx| tx.pending_logouts()).unwrap(), 0);

        store
            .write(|tx| tx.end_session(session.id, "sign_out", 50))
            .unwrap();
        let claimed = store.write(|tx| tx.claim_logouts(50, 1000, 10)).unwrap();
        let mut apps: Vec<&str> = claimed.iter().map(|l| l.client_id.as_str()).collect();
        apps.sort_unstable();
        assert_eq!(apps, ["chat", "wiki"]);
        assert!(claimed.iter().all(|l| l.attempts == 1));
        assert!(
            store
                .write(|tx| tx.claim_logouts(60, 1000, 10))
                .unwrap()
                .is_empty(),
            "leased: no second sender takes them"
        );
        store
            .write(|tx| {
                tx.record_logout(claimed[0].id, LogoutOutcome::Delivered, "status 200", 60)?;
                tx.record_logout(claimed[1].id, LogoutOutcome::RetryAt(500), "status 503", 60)
            })
            .unwrap();
        assert_eq!(store.read(|tx| tx.pending_logouts()).unwrap(), 1);
        assert!(!store.read(|tx| tx.logouts_due(499)).unwrap());
        assert!(
            store
                .write(|tx| tx.claim_logouts(499, 1000, 10))
                .unwrap()
                .is_empty()
        );
        let again = store.write(|tx| tx.claim_logouts(500, 1000, 10)).unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));
        store
            .write(|tx| tx.record_logout(again[0].id, LogoutOutcome::GaveUp, "status 400", 510))
            .unwrap();
        assert_eq!(store.read(|tx| tx.pending_logouts()).unwrap(), 0);
        assert_eq!(store.write(|tx| tx.prune_logouts(511, 10)).unwrap(), 2);
    }
}
