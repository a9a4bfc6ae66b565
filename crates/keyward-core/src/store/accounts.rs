//! Accounts, and the recovery an account may have pending (kept on the account's row).

use uuid::Uuid;

use keyward_proto::{AccountState, Millis};

use super::sql::{Row, args};
use super::{Tx, bad_value, opt_uuid, uuid_of};
use crate::error::{CoreError, Result};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub created_at: Millis,
    pub state: AccountState,
    pub recovery: Option<PendingRecovery>,
    /// Set while the service's operator has the account disabled.
    pub disabled: Option<Disabled>,
}

/// Why and since when the operator disabled an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    pub at: Millis,
    pub reason: String,
}

/// A recovery waiting out its window: who asked, from where, and the session it will unlock.
#[derive(Debug, Clone)]
pub struct PendingRecovery {
    pub started_at: Millis,
    pub ends_at: Millis,
    pub device_name: String,
    pub address: String,
    pub session_id: Uuid,
}

fn account_state_str(s: AccountState) -> &'static str {
    match s {
        AccountState::Active => "active",
        AccountState::RecoveryPending => "recovery_pending",
        AccountState::RecoveryEnrolment => "recovery_enrolment",
    }
}

const ACCOUNT_COLS: &str = "id, username, display_name, created_at, state, recovery_started_at,
    recovery_ends_at, recovery_device_name, recovery_address, recovery_session_id, disabled_at,
    disabled_reason";

fn account_from_row(r: &Row<'_>) -> Result<Account> {
    let state: String = r.get(4)?;
    let state = match state.as_str() {
        "active" => AccountState::Active,
        "recovery_pending" => AccountState::RecoveryPending,
        "recovery_enrolment" => AccountState::RecoveryEnrolment,
        _ => return Err(bad_value("account state", state)),
    };
    let recovery = match (r.get::<Option<i64>>(5)?, r.get::<Option<i64>>(6)?) {
        (Some(started_at), Some(ends_at)) => Some(PendingRecovery {
            started_at,
            ends_at,
            device_name: r.get::<Option<String>>(7)?.unwrap_or_default(),
            address: r.get::<Option<String>>(8)?.unwrap_or_default(),
            session_id: opt_uuid(r.get(9)?)?.unwrap_or_default(),
        }),
        _ => None,
    };
    let disabled = r.get::<Option<i64>>(10)?.map(|at| Disabled {
        at,
        reason: r
            .get::<Option<String>>(11)
            .ok()
            .flatten()
            .unwrap_or_default(),
    });
    Ok(Account {
        id: uuid_of(r.get(0)?)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        created_at: r.get(3)?,
        state,
        recovery,
        disabled,
    })
}

impl Tx<'_> {
    /// Refuses a username already in use with [`CoreError::UsernameTaken`].
    pub fn insert_account(&self, a: &Account) -> Result<()> {
        let inserted = self.execute(
            "INSERT INTO accounts (id, username, display_name, created_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(username) DO NOTHING",
            args![
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

    /// Deletes the account and everything that is its own: app tokens, grants and consents,
    /// sessions, devices, keys, the recovery key, pending ceremonies, and its data key (so its
    /// events' sealed details can never be opened again). Its events stay, as the chain needs
    /// them: opaque IDs, kinds, times and ciphertext. Returns whether the account existed.
    pub fn delete_account(&self, id: Uuid) -> Result<bool> {
        let id = id.as_bytes();
        for sql in [
            "DELETE FROM oidc_tokens WHERE grant_id IN
                 (SELECT id FROM oidc_grants WHERE account_id = ?1)",
            "DELETE FROM oidc_grants WHERE account_id = ?1",
            "DELETE FROM oidc_consents WHERE account_id = ?1",
            "DELETE FROM ceremonies WHERE account_id = ?1",
            "DELETE FROM sessions WHERE account_id = ?1",
            "DELETE FROM devices WHERE account_id = ?1",
            "DELETE FROM authenticators WHERE account_id = ?1",
            "DELETE FROM recovery_keys WHERE account_id = ?1",
        ] {
            self.execute(sql, args![id])?;
        }
        self.destroy_data_key(Uuid::from_bytes(*id))?;
        Ok(self.execute("DELETE FROM accounts WHERE id = ?1", args![id])? > 0)
    }

    pub fn account(&self, id: Uuid) -> Result<Option<Account>> {
        self.query_row(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"),
            args![id.as_bytes()],
            account_from_row,
        )
    }

    pub fn account_by_username(&self, username: &str) -> Result<Option<Account>> {
        self.query_row(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE username = ?1"),
            args![username],
            account_from_row,
        )
    }

    /// Accounts in username order, `limit` at a time after `after` (a username), for the
    /// operator's listing.
    pub fn accounts_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<Account>> {
        self.query_rows(
            &format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE username > ?1
                 ORDER BY username LIMIT ?2"
            ),
            // Every username sorts after the empty one (they are never empty).
            args![after.unwrap_or(""), i64::from(limit)],
            account_from_row,
        )
    }

    /// Disables the account with the operator's reason (`Some`), or enables it (`None`).
    /// Returns whether anything changed: disabling a disabled account keeps its first reason.
    pub fn set_account_disabled(
        &self,
        account_id: Uuid,
        disabled: Option<&Disabled>,
    ) -> Result<bool> {
        let changed = match disabled {
            Some(d) => self.execute(
                "UPDATE accounts SET disabled_at = ?2, disabled_reason = ?3
                 WHERE id = ?1 AND disabled_at IS NULL",
                args![account_id.as_bytes(), d.at, d.reason],
            )?,
            None => self.execute(
                "UPDATE accounts SET disabled_at = NULL, disabled_reason = NULL
                 WHERE id = ?1 AND disabled_at IS NOT NULL",
                args![account_id.as_bytes()],
            )?,
        };
        Ok(changed > 0)
    }

    pub fn username_exists(&self, username: &str) -> Result<bool> {
        Ok(self
            .query_row(
                "SELECT 1 FROM accounts WHERE username = ?1",
                args![username],
                |_| Ok(()),
            )?
            .is_some())
    }

    /// Puts the account into `recovery_pending` with `r`'s window and requester.
    pub fn start_recovery(&self, account_id: Uuid, r: &PendingRecovery) -> Result<()> {
        self.execute(
            "UPDATE accounts SET state = 'recovery_pending', recovery_started_at = ?2,
                 recovery_ends_at = ?3, recovery_device_name = ?4, recovery_address = ?5,
                 recovery_session_id = ?6
             WHERE id = ?1",
            args![
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

    /// Moving to `Active` also clears any pending recovery.
    pub fn set_account_state(&self, account_id: Uuid, state: AccountState) -> Result<()> {
        let clear = state == AccountState::Active;
        self.execute(
            "UPDATE accounts SET state = ?2,
                 recovery_started_at = CASE WHEN ?3 THEN NULL ELSE recovery_started_at END,
                 recovery_ends_at = CASE WHEN ?3 THEN NULL ELSE recovery_ends_at END,
                 recovery_device_name = CASE WHEN ?3 THEN NULL ELSE recovery_device_name END,
                 recovery_address = CASE WHEN ?3 THEN NULL ELSE recovery_address END,
                 recovery_session_id = CASE WHEN ?3 THEN NULL ELSE recovery_session_id END
             WHERE id = ?1",
            args![account_id.as_bytes(), account_state_str(state), clear],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures;
    use super::*;

    #[test]
    fn usernames_are_unique() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        let mut twin = fixtures::account("ada");
        twin.display_name = "Another Ada".into();
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                assert!(matches!(
                    tx.insert_account(&twin),
                    Err(CoreError::UsernameTaken)
                ));
                assert!(tx.username_exists("ada")?);
                assert!(!tx.username_exists("grace")?);
                let found = tx.account_by_username("ada")?.unwrap();
                assert_eq!(found.id, a.id);
                assert_eq!(found.display_name, "ada");
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn a_pending_recovery_is_kept_and_cleared_on_return_to_active() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        let pending = PendingRecovery {
            started_at: 100,
            ends_at: 200,
            device_name: "phone".into(),
            address: "203.0.113.9".into(),
            session_id: Uuid::new_v4(),
        };
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                tx.start_recovery(a.id, &pending)?;
                let got = tx.account(a.id)?.unwrap();
                assert_eq!(got.state, AccountState::RecoveryPending);
                let r = got.recovery.unwrap();
                assert_eq!((r.started_at, r.ends_at), (100, 200));
                assert_eq!(
                    (r.device_name.as_str(), r.address.as_str()),
                    ("phone", "203.0.113.9")
                );
                assert_eq!(r.session_id, pending.session_id);

                tx.set_account_state(a.id, AccountState::RecoveryEnrolment)?;
                let got = tx.account(a.id)?.unwrap();
                assert_eq!(got.state, AccountState::RecoveryEnrolment);
                assert!(got.recovery.is_some(), "only Active clears the recovery");

                tx.set_account_state(a.id, AccountState::Active)?;
                let got = tx.account(a.id)?.unwrap();
                assert_eq!(got.state, AccountState::Active);
                assert!(got.recovery.is_none());
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn disabling_keeps_its_first_reason_and_enabling_clears_it() {
        let store = fixtures::store();
        let a = fixtures::account("ada");
        let first = Disabled {
            at: 100,
            reason: "spam".into(),
        };
        let second = Disabled {
            at: 200,
            reason: "another".into(),
        };
        store
            .write(|tx| {
                tx.insert_account(&a)?;
                assert!(tx.account(a.id)?.unwrap().disabled.is_none());
                assert!(tx.set_account_disabled(a.id, Some(&first))?);
                assert!(!tx.set_account_disabled(a.id, Some(&second))?);
                assert_eq!(tx.account(a.id)?.unwrap().disabled, Some(first.clone()));
                assert!(tx.set_account_disabled(a.id, None)?);
                assert!(!tx.set_account_disabled(a.id, None)?);
                assert!(tx.account(a.id)?.unwrap().disabled.is_none());
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn accounts_page_in_username_order() {
        let store = fixtures::store();
        store
            .write(|tx| {
                for name in ["grace", "ada", "linus"] {
                    tx.insert_account(&fixtures::account(name))?;
                }
                let names = |page: Vec<Account>| -> Vec<String> {
                    page.into_iter().map(|a| a.username).collect()
                };
                assert_eq!(names(tx.accounts_page(None, 2)?), ["ada", "grace"]);
                assert_eq!(names(tx.accounts_page(Some("grace"), 2)?), ["linus"]);
                assert!(tx.accounts_page(Some("linus"), 2)?.is_empty());
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }
}
