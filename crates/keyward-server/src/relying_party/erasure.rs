//! Deleting an account, and the person's own export of their security log.
//!
//! Deletion first logs an urgent `account_deleted` event (so every open stream of the
//! account's, on any instance, gets it and then ends), then in the same transaction deletes
//! the account and everything that is its own, including its data key: the events stay, as the
//! chain needs them, but their sealed details can never be opened again
//! (`keyward_core::details`). The owner needs a fresh step-up; the operator
//! (`keywardd admin delete`) needs none, and gets nothing from it: no session, no key.

use keyward_core::secret::b64;
use keyward_core::security_log::{EXPORT_FORMAT, hex};
use keyward_proto::{EventDetail, EventKind, ExportedEvent, LogExport};
use uuid::Uuid;

use super::RelyingParty;
use super::input::normalize_username;
use super::sessions::Authed;
use crate::error::{Result, ServerError};

impl RelyingParty {
    /// The owner deletes their account: a full session stepped up within the last minutes.
    pub fn delete_account(&self, authed: &Authed) -> Result<()> {
        self.require_fresh(authed)?;
        self.erase(authed.account.id)
    }

    /// The operator deletes an account (abuse, a legal order); `not_found` if there is none.
    pub fn operator_delete(&self, username: &str) -> Result<()> {
        let username = normalize_username(username)?;
        let account = self
            .store
            .read(|tx| tx.account_by_username(&username))?
            .ok_or(ServerError::NotFound("account"))?;
        self.erase(account.id)
    }

    /// The alert, then the account gone, in one transaction; then the freed space wiped.
    fn erase(&self, account_id: Uuid) -> Result<()> {
        self.store.write(|tx| {
            // No actor: the event names no device or address, so nothing in it needs the key
            // that is destroyed below for its streams to read it.
            self.record(
                tx,
                account_id,
                EventKind::AccountDeleted,
                None,
                EventDetail::default(),
            )?;
            if !tx.delete_account(account_id)? {
                return Err(ServerError::NotFound("account"));
            }
            Ok(())
        })?;
        Ok(self.store.erase_freed()?)
    }

    /// The account's whole log with its details, and what verifies it against the chain:
    /// each event's place, stored hash and the hash before it, the data key, the newest
    /// account checkpoint, and the log key's signature over every (place, hash).
    pub fn export_log(&self, authed: &Authed) -> Result<LogExport> {
        authed.require_not_recovery()?;
        let account_id = authed.account.id;
        // The head first: events logged meanwhile are left out, so it names the newest one.
        let head = self.log_head(authed, None)?;
        let newest = head.checkpoint.as_ref().map_or(0, |c| c.id);
        let (mut rows, data_key) = self.store.read(|tx| tx.export_rows(account_id))?;
        rows.retain(|r| r.number <= newest);
        let exported_at = self.now();
        let signed: Vec<(i64, [u8; 32])> = rows
            .iter()
            .map(|r| (r.entry.event.id, r.entry.hash))
            .collect();
        let signature = self.store.sign_export(account_id, exported_at, &signed)?;
        let events = rows
            .into_iter()
            .map(|r| {
                let seq = r.entry.event.id;
                let mut event = r.entry.event;
                event.id = r.number;
                ExportedEvent {
                    event,
                    seq,
                    prev_hash: hex(&r.prev_hash),
                    hash: hex(&r.entry.hash),
                    sealed: r.entry.sealed.as_deref().map(b64),
                }
            })
            .collect();
        Ok(LogExport {
            format: EXPORT_FORMAT.into(),
            account_id,
            username: authed.account.username.clone(),
            exported_at,
            public_key: head.public_key,
            data_key: data_key.map(|k| b64(k.as_bytes())),
            events,
            checkpoint: head.checkpoint,
            signature: b64(&signature),
        })
    }
}
