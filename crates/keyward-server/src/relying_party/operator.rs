//! What the service's operator may do (`keywardd admin`), and nothing more: see each account's
//! readiness, report on the organisation, disable an account for abuse and enable it again.
//!
//! By design there is no operation here (or anywhere) that adds or resets a credential,
//! shortens or skips a recovery window, or opens a session: an operator who can be talked into
//! recovering an account is a way around every key. `tests/it/no_backdoor.rs` holds the
//! admin commands and the API to a reviewed list.

use keyward_core::readiness;
use keyward_core::store::{Account, Disabled, Tx};
use keyward_proto::{
    AccountState, AuthenticatorStatus, EventDetail, EventKind, Millis, ReadinessLevel,
};
use serde::Serialize;

use super::RelyingParty;
use super::input::{clean_text, normalize_username};
use crate::error::{Result, ServerError};

/// The longest reason an operator may give; the owner reads it at sign-in.
const MAX_REASON_CHARS: usize = 300;

/// One account as the operator sees it: its state and how protected it is. No credential
/// material, no key IDs, no device or address: what support needs to answer "is this account
/// set up well", and nothing a takeover could use.
#[derive(Debug, Clone, Serialize)]
pub struct AccountSummary {
    pub username: String,
    pub created_at: Millis,
    pub state: AccountState,
    /// The operator's reason, while disabled.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Millis>,
    pub readiness: ReadinessLevel,
    pub active_keys: u32,
    pub has_backup_key: bool,
    pub recovery_key_confirmed: bool,
    pub live_sessions: u32,
}

/// What an organisation shows an auditor: how many accounts meet each bar.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OrganisationReport {
    pub accounts: u64,
    pub disabled: u64,
    /// At least two independent keys (synced passkeys of one provider count once).
    pub with_backup_key: u64,
    pub with_confirmed_recovery_key: u64,
    /// Every active key is device-bound (none can be synced off the device).
    pub device_bound_keys_only: u64,
    /// Every session ever opened came from a WebAuthn ceremony with a key: the account never
    /// completed a recovery (a recovery key is typed, so it can be phished).
    pub phishing_resistant_sign_ins_only: u64,
    /// Readiness `protected`: two independent keys and a confirmed recovery key.
    pub protected: u64,
}

impl RelyingParty {
    /// Every account, in username order.
    pub fn operator_accounts(&self) -> Result<Vec<AccountSummary>> {
        let mut summaries = Vec::new();
        self.each_account(|tx, account| {
            summaries.push(self.summary(tx, account)?);
            Ok(())
        })?;
        Ok(summaries)
    }

    pub fn operator_report(&self) -> Result<OrganisationReport> {
        let mut report = OrganisationReport::default();
        self.each_account(|tx, account| {
            let keys = tx.authenticators(account.id)?;
            let rk = tx.recovery_key(account.id)?;
            let r = readiness::assess(&keys, rk.as_ref(), self.now(), &self.policy);
            let count = |yes: bool| u64::from(yes);
            report.accounts += 1;
            report.disabled += count(account.disabled.is_some());
            report.with_backup_key += count(r.has_backup);
            report.with_confirmed_recovery_key += count(r.recovery_key.confirmed_at.is_some());
            report.device_bound_keys_only += count(r.active_authenticators > 0 && r.synced == 0);
            report.phishing_resistant_sign_ins_only +=
                count(!tx.account_has_event(account.id, EventKind::RecoveryCompleted)?);
            report.protected += count(r.level == ReadinessLevel::Protected);
            Ok(())
        })?;
        Ok(report)
    }

    /// Disables the account: every session ends at once (the person's other devices are told
    /// through their streams), and sign-ins are refused with `reason` once the person has
    /// proven one of its keys. Returns false if it was already disabled (its first reason
    /// stays).
    pub fn operator_disable(&self, username: &str, reason: &str) -> Result<bool> {
        let reason = clean_text(reason, MAX_REASON_CHARS);
        if reason.is_empty() {
            return Err(ServerError::InvalidInput(
                "give the reason the account's owner will be shown".into(),
            ));
        }
        let username = normalize_username(username)?;
        self.store.write(|tx| {
            let account = self.account_named(tx, &username)?;
            let disabled = Disabled {
                at: self.now(),
                reason: reason.clone(),
            };
            if !tx.set_account_disabled(account.id, Some(&disabled))? {
                return Ok(false);
            }
            let sessions = self.live_sessions(tx, account.id)?;
            self.end_sessions(tx, account.id, &sessions, "account_disabled", None)?;
            let detail = EventDetail {
                reason: Some(reason.clone()),
                ..EventDetail::default()
            };
            self.record(tx, account.id, EventKind::AccountDisabled, None, detail)?;
            Ok(true)
        })
    }

    /// Enables a disabled account; its owner signs in with a key as before. Returns false if
    /// it was not disabled.
    pub fn operator_enable(&self, username: &str) -> Result<bool> {
        let username = normalize_username(username)?;
        self.store.write(|tx| {
            let account = self.account_named(tx, &username)?;
            if !tx.set_account_disabled(account.id, None)? {
                return Ok(false);
            }
            let detail = EventDetail::default();
            self.record(tx, account.id, EventKind::AccountEnabled, None, detail)?;
            Ok(true)
        })
    }

    fn account_named(&self, tx: &Tx<'_>, username: &str) -> Result<Account> {
        tx.account_by_username(username)?
            .ok_or(ServerError::NotFound("account"))
    }

    /// Walks every account a page at a time, each page in a read transaction of its own, so
    /// a large deployment is neither loaded at once nor held in one long transaction.
    fn each_account(&self, mut visit: impl FnMut(&Tx<'_>, &Account) -> Result<()>) -> Result<()> {
        const PAGE: u32 = 500;
        let mut after: Option<String> = None;
        loop {
            let last = self.store.read(|tx| {
                let page = tx.accounts_page(after.as_deref(), PAGE)?;
                for account in &page {
                    visit(tx, account)?;
                }
                Ok::<_, ServerError>(page.last().map(|a| a.username.clone()))
            })?;
            match last {
                Some(name) => after = Some(name),
                None => return Ok(()),
            }
        }
    }

    fn summary(&self, tx: &Tx<'_>, account: &Account) -> Result<AccountSummary> {
        let keys = tx.authenticators(account.id)?;
        let rk = tx.recovery_key(account.id)?;
        let r = readiness::assess(&keys, rk.as_ref(), self.now(), &self.policy);
        Ok(AccountSummary {
            username: account.username.clone(),
            created_at: account.created_at,
            state: account.state,
            disabled_reason: account.disabled.as_ref().map(|d| d.reason.clone()),
            disabled_at: account.disabled.as_ref().map(|d| d.at),
            readiness: r.level,
            active_keys: keys
                .iter()
                .filter(|k| k.status == AuthenticatorStatus::Active)
                .count() as u32,
            has_backup_key: r.has_backup,
            recovery_key_confirmed: r.recovery_key.confirmed_at.is_some(),
            live_sessions: self.live_sessions(tx, account.id)?.len() as u32,
        })
    }
}
