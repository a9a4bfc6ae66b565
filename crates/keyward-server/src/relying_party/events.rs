//! The security log as the relying party writes and reads it. Every event a session causes
//! goes through [`RelyingParty::record`] with its [`Actor`], so each names the session, device
//! and address the same way. Events with no acting session (a failed attempt, a recovery window
//! settling) are appended directly with what is known of their source.

use keyward_core::security_log::hex;
use keyward_core::store::{NewEvent, Session, Tx};
use keyward_proto::{EventDetail, EventKind, EventPage, LogCheckpoint, LogHead, SecurityEvent};
use uuid::Uuid;

use super::RelyingParty;
use super::sessions::{Actor, Authed};
use crate::error::Result;

impl RelyingParty {
    /// `session` as an actor, its device's name read from the store.
    pub(crate) fn actor<'a>(&self, tx: &Tx<'_>, session: &'a Session) -> Result<Actor<'a>> {
        let device_name = tx
            .device(session.device_id)?
            .map(|d| d.name)
            .unwrap_or_default();
        Ok(Actor {
            session,
            device_name,
        })
    }

    /// Appends an event to `account_id`'s log, by `actor` (none: the server's own doing).
    pub(crate) fn record(
        &self,
        tx: &mut Tx<'_>,
        account_id: Uuid,
        kind: EventKind,
        actor: Option<&Actor<'_>>,
        detail: EventDetail,
    ) -> Result<SecurityEvent> {
        let mut e = NewEvent::new(account_id, kind);
        if let Some(actor) = actor {
            e.session_id = Some(actor.session.id);
            e.device_id = Some(actor.session.device_id);
            e.device_name = Some(actor.device_name.clone());
            e.address = Some(actor.session.address.clone());
        }
        e.detail = detail;
        Ok(tx.append_event(e, self.now())?)
    }

    /// Appends an event done by the signed-in session making the request.
    pub(super) fn record_own(
        &self,
        tx: &mut Tx<'_>,
        authed: &Authed,
        kind: EventKind,
        detail: EventDetail,
    ) -> Result<SecurityEvent> {
        let actor = self.actor(tx, &authed.session)?;
        self.record(tx, authed.account.id, kind, Some(&actor), detail)
    }

    /// The account's log, newest first, a page at a time.
    pub fn events_page(
        &self,
        authed: &Authed,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<EventPage> {
        authed.require_not_recovery()?;
        let limit = limit.unwrap_or(50).clamp(1, 200);
        self.store.read(|tx| {
            let events = tx.events_page(authed.account.id, before, limit)?;
            let next_before = (events.len() as u32 == limit)
                .then(|| events.last().map(|e| e.id))
                .flatten();
            Ok(EventPage {
                events,
                next_before,
            })
        })
    }

    /// May this session open the live stream? Not a recovery session (`require_not_recovery`).
    pub fn may_stream(&self, authed: &Authed) -> Result<()> {
        authed.require_not_recovery()
    }

    /// Events after `after`, oldest first (a stream catching up).
    pub fn events_after(
        &self,
        account_id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SecurityEvent>> {
        self.store
            .read(|tx| Ok(tx.events_after(account_id, after, limit)?))
    }

    pub fn latest_event_id(&self, account_id: Uuid) -> Result<i64> {
        self.store.read(|tx| Ok(tx.latest_event_id(account_id)?))
    }

    /// The account's log head, signed now, and the server's log key; with `seen`, the digest
    /// at that event of the account's, so a client can check the log still holds what it saw.
    /// Per account and for its own sessions only: the global head's position counts every
    /// account's events, so it would tell anyone whether a failed sign-in was logged against a
    /// name, i.e. whether that name exists.
    pub fn log_head(&self, authed: &Authed, seen: Option<i64>) -> Result<LogHead> {
        authed.require_not_recovery()?;
        let head = self.store.account_head(authed.account.id, seen)?;
        Ok(LogHead {
            public_key: keyward_core::secret::b64(self.log_public_key.as_bytes()),
            checkpoint: head.checkpoint.map(|c| LogCheckpoint {
                account_id: c.account_id,
                id: c.number,
                hash: hex(&c.digest),
                at: c.at,
                signature: keyward_core::secret::b64(&c.signature),
            }),
            seen_hash: head.seen_digest.map(|d| hex(&d)),
        })
    }
}
