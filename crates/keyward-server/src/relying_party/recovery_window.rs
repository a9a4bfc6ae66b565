//! Recovery with the recovery key: redeeming opens a window the owner can veto with any
//! enrolled key; when it runs out, every other session ends and the recovering session may
//! only enrol a new key and a new recovery key, after which the account is active again.

use keyward_core::recovery_key;
use keyward_core::secret::{b64, hash_secret, new_secret, random_bytes, unb64};
use keyward_core::store::{Account, NewEvent, PendingRecovery, Session, Tx};
use keyward_proto::{
    AccountState, AccountView, AssertionBegin, AuthenticatorStatus, EventDetail, EventKind,
    RecoveryCancelBeginRequest, RecoveryChallenge, RecoveryPurpose, RecoveryStarted,
    RedeemBeginRequest, RedeemFinishRequest, SessionScope, SignInFinishRequest, SignedIn,
};
use uuid::Uuid;

use super::assertion::Proven;
use super::ceremony::{Begun, CeremonyKind, RecoveryProofState, ceremony_state};
use super::input::{clean_client, normalize_username};
use super::rate_limit::{LimitKey, Network, too_many_attempts};
use super::sessions::{Actor, Authed, SessionRequest};
use super::views::{account_view, window_view};
use super::{RelyingParty, Verdict};
use crate::error::{Result, ServerError};

impl RelyingParty {
    pub fn redeem_begin(
        &self,
        req: RedeemBeginRequest,
        address: &str,
    ) -> Result<RecoveryChallenge> {
        let username = normalize_username(&req.username)?;
        self.store.write(|tx| {
            self.count_begin(tx, address)?;
            // Unknown users and users without a key get the same answer: nothing to enumerate.
            let account_id = match tx.account_by_username(&username)? {
                Some(a) if tx.recovery_key(a.id)?.is_some() => Some(a.id),
                _ => None,
            };
            let state = RecoveryProofState {
                purpose: RecoveryPurpose::Redeem,
                challenge: random_bytes::<32>().to_vec(),
            };
            let c = self.new_ceremony(
                tx,
                CeremonyKind::RecoveryRedeem,
                account_id,
                Begun::From(address),
                &state,
            )?;
            Ok(RecoveryChallenge {
                challenge_id: c.id,
                purpose: RecoveryPurpose::Redeem,
                challenge: b64(&state.challenge),
                expires_at: c.expires_at,
            })
        })
    }

    pub fn redeem_finish(
        &self,
        req: RedeemFinishRequest,
        address: &str,
        user_agent: &str,
    ) -> Result<RecoveryStarted> {
        let client = clean_client(&req.client, user_agent);
        let now = self.now();
        let binding = self.binding_of(req.binding.as_ref())?;
        // Counted per network only: never per account (anyone who knows a username could
        // then spend the owner's attempts), and the same for unknown names (no oracle).
        let address_key = LimitKey::RecoveryFailure {
            network: Network::of(address),
        };
        if let Some(ms) = self
            .store
            .read(|tx| self.limiter.blocked(tx, &address_key, now))?
        {
            return Err(too_many_attempts(ms));
        }
        self.write_verdict(|tx| {
            let Some(c) =
                self.take_ceremony(tx, req.challenge_id, CeremonyKind::RecoveryRedeem, now)?
            else {
                return Ok(Verdict::Refused(ServerError::CeremonyExpired));
            };
            let fail = |tx: &mut Tx<'_>, account_id: Option<Uuid>| -> Result<Verdict<_>> {
                self.limiter.record(tx, &address_key, now)?;
                if let Some(id) = account_id {
                    let mut e = NewEvent::new(id, EventKind::SignInFailed);
                    e.address = Some(address.to_string());
                    e.device_name = Some(client.name.clone());
                    e.detail.reason = Some("wrong recovery key".into());
                    tx.append_event(e, now)?;
                }
                Ok(Verdict::Refused(ServerError::RecoveryFailed))
            };
            let Some(account_id) = c.account_id else {
                return fail(tx, None);
            };
            let state: RecoveryProofState = ceremony_state(&c)?;
            let Some(rk) = tx.recovery_key(account_id)? else {
                return fail(tx, Some(account_id));
            };
            let signature = unb64(&req.signature).unwrap_or_default();
            if !recovery_key::verify_proof(
                &rk.public_key,
                RecoveryPurpose::Redeem,
                &self.info.rp_id,
                &state.challenge,
                &signature,
            ) {
                return fail(tx, Some(account_id));
            }
            let account = tx.account(account_id)?.ok_or(ServerError::RecoveryFailed)?;
            let account = self.settle_recovery(tx, account)?;
            if let Some(d) = &account.disabled {
                // A recovery key must not open what the operator closed; the key stays
                // unspent for when the account is enabled again.
                return Ok(Verdict::Refused(ServerError::AccountDisabled(
                    d.reason.clone(),
                )));
            }
            if account.state != AccountState::Active {
                return Ok(Verdict::Refused(ServerError::RecoveryInProgress(
                    "a recovery is already under way for this account",
                )));
            }
            // Single use: the key is spent the moment it is redeemed.
            tx.delete_recovery_key(account_id)?;
            let ends_at = now + self.policy.recovery_window_ms;
            let opened = self.open_session(
                tx,
                SessionRequest {
                    account: &account,
                    opened_by: None,
                    client: &client,
                    device_secret: None,
                    address,
                    scope: SessionScope::Recovery,
                    active_from: ends_at,
                    agent: None,
                    binding: binding.clone(),
                },
            )?;
            let pending = PendingRecovery {
                started_at: now,
                ends_at,
                device_name: opened.device.name.clone(),
                address: address.to_string(),
                session_id: opened.session.id,
            };
            tx.start_recovery(account_id, &pending)?;
            let detail = EventDetail {
                ends_at: Some(ends_at),
                ..EventDetail::default()
            };
            self.record(
                tx,
                account_id,
                EventKind::RecoveryStarted,
                Some(&opened.actor()),
                detail,
            )?;
            let account = tx.account(account_id)?.ok_or(ServerError::RecoveryFailed)?;
            let account = self.settle_recovery(tx, account)?;
            Ok(Verdict::Granted(RecoveryStarted {
                token: opened.token,
                device_secret: opened.device_secret,
                window: window_view(&pending),
                account: account_view(&account),
            }))
        })
    }

    /// How long from now a recovery session opened for `window` lives: until the enrolment
    /// deadline after the window, with no idle timeout before then.
    pub fn recovery_session_left_ms(&self, window: &keyward_proto::RecoveryWindow) -> i64 {
        window.ends_at + self.policy.recovery_enrolment_ms - self.now()
    }

    /// When a recovery window has run out: end every other session and leave the account able
    /// only to enrol. Runs lazily whenever the account is touched.
    pub(super) fn settle_recovery(&self, tx: &mut Tx<'_>, account: Account) -> Result<Account> {
        let now = self.now();
        let Some(pending) = account.recovery.clone() else {
            return Ok(account);
        };
        if account.state != AccountState::RecoveryPending || now < pending.ends_at {
            return Ok(account);
        }
        let others: Vec<Session> = self
            .live_sessions(tx, account.id)?
            .into_iter()
            .filter(|s| s.id != pending.session_id)
            .collect();
        self.end_sessions(tx, account.id, &others, "recovery", None)?;
        tx.set_account_state(account.id, AccountState::RecoveryEnrolment)?;
        // Done by the recovering session, which is not acting now: named from the window.
        let mut e = NewEvent::new(account.id, EventKind::RecoveryCompleted);
        e.session_id = Some(pending.session_id);
        e.device_name = Some(pending.device_name.clone());
        e.address = Some(pending.address.clone());
        tx.append_event(e, now)?;
        Ok(Account {
            state: AccountState::RecoveryEnrolment,
            ..account
        })
    }

    /// Ends a pending (or settled, not yet enrolled) recovery and its session.
    pub(super) fn cancel_recovery(
        &self,
        tx: &mut Tx<'_>,
        account: Account,
        actor: &Actor<'_>,
        why: &str,
    ) -> Result<Account> {
        if let Some(pending) = &account.recovery
            && let Some(s) = tx.session(pending.session_id)?
        {
            self.end_sessions(tx, account.id, &[s], "recovery_cancelled", Some(actor))?;
        }
        tx.set_account_state(account.id, AccountState::Active)?;
        let detail = EventDetail {
            reason: Some(why.to_string()),
            ..EventDetail::default()
        };
        self.record(
            tx,
            account.id,
            EventKind::RecoveryCancelled,
            Some(actor),
            detail,
        )?;
        Ok(Account {
            state: AccountState::Active,
            recovery: None,
            ..account
        })
    }

    pub fn recovery_cancel_begin(
        &self,
        req: RecoveryCancelBeginRequest,
        address: &str,
    ) -> Result<AssertionBegin> {
        let username = req
            .username
            .as_deref()
            .map(normalize_username)
            .transpose()?;
        self.store.write_unsynced(|tx| {
            self.count_begin(tx, address)?;
            self.assertion_begin(
                tx,
                CeremonyKind::RecoveryCancel,
                username.as_deref(),
                Begun::From(address),
            )
        })
    }

    /// Any enrolled key cancels a pending recovery with one ceremony, signed in or not.
    pub fn recovery_cancel_finish(
        &self,
        req: SignInFinishRequest,
        address: &str,
        user_agent: &str,
    ) -> Result<AccountView> {
        let client = clean_client(&req.client, user_agent);
        let now = self.now();
        self.store
            .read(|tx| self.check_failure_rate(tx, address, None))?;
        let mut presented = self.present(req.ceremony_id, &req.credential);
        self.write_verdict(|tx| {
            let Proven {
                authenticator,
                account,
            } = granted!(self.verified_owner(
                tx,
                CeremonyKind::RecoveryCancel,
                presented.attempt(),
                address
            )?);
            if account.state == AccountState::Active {
                return Ok(Verdict::Refused(ServerError::Conflict(
                    "there is no recovery to cancel",
                )));
            }
            // The cancelling key proves itself with a short session of its own, for the record.
            let opened = self.open_session(
                tx,
                SessionRequest::by_key(
                    &account,
                    authenticator.id,
                    &client,
                    req.device_secret.as_deref(),
                    address,
                    now,
                ),
            )?;
            let why = format!("cancelled with \"{}\"", authenticator.nickname);
            let account = self.cancel_recovery(tx, account, &opened.actor(), &why)?;
            tx.end_session(opened.session.id, "sign_out", now)?;
            Ok(Verdict::Granted(account_view(&account)))
        })
    }

    /// After a completed recovery: once a new key and a new recovery key are enrolled, the
    /// recovery session asks to become a full one. The account is active again and the
    /// session gets a new token and device secret (the recovery token is refused from then
    /// on), an ordinary idle timeout and a lifetime counted from now.
    pub fn complete_recovery(&self, authed: &Authed) -> Result<SignedIn> {
        if authed.session.scope != SessionScope::Recovery {
            return Err(ServerError::Conflict(
                "this session is not recovering the account",
            ));
        }
        self.store.write(|tx| {
            let account = tx
                .account(authed.account.id)?
                .ok_or(ServerError::Unauthenticated)?;
            let (AccountState::RecoveryEnrolment, Some(pending)) =
                (account.state, &account.recovery)
            else {
                return Err(ServerError::RecoveryInProgress(
                    "the recovery window has not ended yet",
                ));
            };
            let new_key = tx
                .authenticators(account.id)?
                .into_iter()
                .filter(|a| {
                    a.status == AuthenticatorStatus::Active && a.created_at >= pending.started_at
                })
                .max_by_key(|a| a.created_at);
            let has_recovery_key = tx.recovery_key(account.id)?.is_some();
            let (Some(key), true) = (new_key, has_recovery_key) else {
                return Err(ServerError::RecoveryInProgress(
                    "enrol a new security key and a new recovery key first",
                ));
            };
            let now = self.now();
            tx.set_account_state(account.id, AccountState::Active)?;
            // From now on an ordinary session: idle timeout and a lifetime from enrolment.
            tx.upgrade_session_scope(
                authed.session.id,
                SessionScope::Full,
                key.id,
                now,
                now + self.policy.session_absolute_ms,
            )?;
            tx.mark_session_verified(authed.session.id, now)?;
            let token = new_secret();
            if !tx.rotate_session_token(
                authed.session.id,
                &authed.token_hash,
                &hash_secret(&token),
            )? {
                // Another request with the same token got there first (rolled back).
                return Err(ServerError::Unauthenticated);
            }
            let device_secret = new_secret();
            let device = tx
                .device(authed.session.device_id)?
                .ok_or_else(|| ServerError::Internal("session without device".into()))?;
            tx.refresh_device(&device, &hash_secret(&device_secret))?;
            let session = tx
                .session(authed.session.id)?
                .ok_or(ServerError::Unauthenticated)?;
            let account = tx
                .account(account.id)?
                .ok_or(ServerError::Unauthenticated)?;
            Ok(SignedIn {
                token,
                device_secret,
                session: self.session_view(tx, &session, Some(session.id))?,
                account: account_view(&account),
            })
        })
    }
}
