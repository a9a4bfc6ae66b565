//! The account and its keys: readiness, adding, renaming, removing and reporting a key lost.
//! No change may leave the account without a usable key.

use keyward_core::readiness;
use keyward_core::store::{Authenticator, Session, Tx};
use keyward_proto::{
    AccountView, AddAuthenticatorFinishRequest, AuthenticatorStatus, AuthenticatorView,
    EndedSessions, EventDetail, EventKind, Readiness, RegistrationBegin, RemovalImpact,
    RenameAuthenticatorRequest,
};
use uuid::Uuid;

use super::ceremony::{Begun, CeremonyKind, RegistrationState, ceremony_state};
use super::input::clean_nickname;
use super::rate_limit::{LimitKey, too_many_attempts};
use super::sessions::Authed;
use super::views::{account_view, authenticator_view};
use super::{RelyingParty, Verdict};
use crate::error::{Result, ServerError};

/// Why removing `target` must be refused, if it must: it is the last active key.
pub(super) fn removal_refusal(
    keys: &[Authenticator],
    target: &Authenticator,
) -> Option<ServerError> {
    let others_active = keys
        .iter()
        .filter(|k| k.id != target.id && k.status == AuthenticatorStatus::Active)
        .count();
    (target.status == AuthenticatorStatus::Active && others_active == 0)
        .then_some(ServerError::LastAuthenticator)
}

impl RelyingParty {
    pub fn account(&self, authed: &Authed) -> AccountView {
        account_view(&authed.account)
    }

    /// During the window a recovery session may not see this (how many keys, and which are
    /// stale); once the window has ended, enrolment is guided by it.
    pub fn readiness(&self, authed: &Authed) -> Result<Readiness> {
        if !authed.is_enrolling() {
            authed.require_not_recovery()?;
        }
        self.store.read(|tx| {
            let keys = tx.authenticators(authed.account.id)?;
            let rk = tx.recovery_key(authed.account.id)?;
            let mut r = readiness::assess(&keys, rk.as_ref(), self.now(), &self.policy);
            let unbound = self
                .live_sessions(tx, authed.account.id)?
                .iter()
                .filter(|s| s.binding_jkt.is_none())
                .count();
            readiness::note_unbound_sessions(&mut r, unbound as u32);
            Ok(r)
        })
    }

    pub fn list_authenticators(&self, authed: &Authed) -> Result<Vec<AuthenticatorView>> {
        authed.require_not_recovery()?;
        self.store.read(|tx| {
            Ok(tx
                .authenticators(authed.account.id)?
                .iter()
                .map(authenticator_view)
                .collect())
        })
    }

    /// The account's own key `id`; another account's is "not found", like a missing one.
    fn owned_authenticator(&self, tx: &Tx<'_>, authed: &Authed, id: Uuid) -> Result<Authenticator> {
        tx.authenticator(id)?
            .filter(|a| a.account_id == authed.account.id)
            .ok_or(ServerError::NotFound("security key"))
    }

    pub fn add_authenticator_begin(&self, authed: &Authed) -> Result<RegistrationBegin> {
        if !authed.is_enrolling() {
            self.require_fresh(authed)?;
        }
        self.store.write(|tx| {
            let existing: Vec<_> = tx
                .authenticators(authed.account.id)?
                .into_iter()
                .map(|a| a.credential_id)
                .collect();
            let (options, registration) = self.start_registration(
                authed.account.id,
                &authed.account.username,
                &authed.account.display_name,
                Some(existing),
            )?;
            let c = self.new_ceremony(
                tx,
                CeremonyKind::AddAuthenticator,
                Some(authed.account.id),
                Begun::BySession(authed.session.id),
                &registration,
            )?;
            Ok(RegistrationBegin {
                ceremony_id: c.id,
                options,
            })
        })
    }

    pub fn add_authenticator_finish(
        &self,
        authed: &Authed,
        req: AddAuthenticatorFinishRequest,
    ) -> Result<AuthenticatorView> {
        if !authed.is_enrolling() {
            self.require_fresh(authed)?;
        }
        let now = self.now();
        self.write_verdict(|tx| {
            let Some(c) =
                self.take_ceremony(tx, req.ceremony_id, CeremonyKind::AddAuthenticator, now)?
            else {
                return Ok(Verdict::Refused(ServerError::CeremonyExpired));
            };
            if c.session_id != Some(authed.session.id) {
                return Ok(Verdict::Refused(ServerError::CeremonyExpired));
            }
            let registration: RegistrationState = ceremony_state(&c)?;
            let authenticator = match self.admit_credential(
                &req.credential,
                &registration,
                authed.account.id,
                req.nickname.as_deref(),
            ) {
                Ok(a) => a,
                Err(e) => return Ok(Verdict::Refused(e)),
            };
            match tx.insert_authenticator(&authenticator) {
                Err(keyward_core::CoreError::CredentialInUse) => {
                    return Ok(Verdict::Refused(ServerError::RegistrationFailed(
                        "that key is already registered",
                    )));
                }
                other => other?,
            }
            if matches!(registration, RegistrationState::Attested(_)) {
                tx.mark_authenticator_attested(authenticator.id)?;
            }
            let detail = EventDetail {
                authenticator_id: Some(authenticator.id),
                authenticator_name: Some(authenticator.nickname.clone()),
                ..EventDetail::default()
            };
            self.record_own(tx, authed, EventKind::AuthenticatorAdded, detail)?;
            Ok(Verdict::Granted(authenticator_view(&authenticator)))
        })
    }

    pub fn rename_authenticator(
        &self,
        authed: &Authed,
        id: Uuid,
        req: RenameAuthenticatorRequest,
    ) -> Result<AuthenticatorView> {
        authed.require_full()?;
        let nickname = clean_nickname(&req.nickname)?;
        // Each rename is a synced write and a permanent log row: counted per account. Only a
        // full session of the account can spend it, and it blocks nothing but renaming.
        let key = LimitKey::Rename {
            account: authed.account.id,
        };
        if let Some(ms) = self
            .store
            .read(|tx| self.limiter.blocked(tx, &key, self.now()))?
        {
            return Err(too_many_attempts(ms));
        }
        self.store.write(|tx| {
            let a = self.owned_authenticator(tx, authed, id)?;
            tx.rename_authenticator(id, &nickname)?;
            let detail = EventDetail {
                authenticator_id: Some(id),
                authenticator_name: Some(nickname.clone()),
                reason: Some(format!("renamed from \"{}\"", a.nickname)),
                ..EventDetail::default()
            };
            self.record_own(tx, authed, EventKind::AuthenticatorRenamed, detail)?;
            self.limiter.record(tx, &key, self.now())?;
            Ok(authenticator_view(&Authenticator {
                nickname: nickname.clone(),
                ..a
            }))
        })
    }

    /// What removing a key would do: the sessions that end and readiness afterwards.
    pub fn removal_impact(&self, authed: &Authed, id: Uuid) -> Result<RemovalImpact> {
        authed.require_full()?;
        self.store.read(|tx| {
            let target = self.owned_authenticator(tx, authed, id)?;
            let keys = tx.authenticators(authed.account.id)?;
            let remaining: Vec<Authenticator> =
                keys.iter().filter(|k| k.id != id).cloned().collect();
            let rk = tx.recovery_key(authed.account.id)?;
            let sessions_ending = self
                .live_sessions(tx, authed.account.id)?
                .iter()
                .filter(|s| s.opened_by == Some(id))
                .map(|s| self.session_view(tx, s, Some(authed.session.id)))
                .collect::<Result<_>>()?;
            Ok(RemovalImpact {
                authenticator: authenticator_view(&target),
                sessions_ending,
                readiness_after: readiness::assess(
                    &remaining,
                    rk.as_ref(),
                    self.now(),
                    &self.policy,
                ),
                refused: removal_refusal(&keys, &target).map(|e| e.to_wire()),
            })
        })
    }

    /// Removes a key (never the last usable one) and ends the sessions it opened.
    pub fn remove_authenticator(&self, authed: &Authed, id: Uuid) -> Result<EndedSessions> {
        self.require_fresh(authed)?;
        self.store.write(|tx| {
            let target = self.owned_authenticator(tx, authed, id)?;
            if let Some(e) = removal_refusal(&tx.authenticators(authed.account.id)?, &target) {
                return Err(e);
            }
            tx.delete_authenticator(id)?;
            self.retire_authenticator(
                tx,
                authed,
                &target,
                EventKind::AuthenticatorRemoved,
                "authenticator_removed",
            )
        })
    }

    /// Disables a key at once and ends its sessions, in one step (never the last usable one).
    pub fn report_lost(&self, authed: &Authed, id: Uuid) -> Result<EndedSessions> {
        self.require_fresh(authed)?;
        self.store.write(|tx| {
            let target = self.owned_authenticator(tx, authed, id)?;
            if target.status == AuthenticatorStatus::Lost {
                return Err(ServerError::Conflict("that key is already reported lost"));
            }
            // Like removal: never the last usable key (the account would be shut for good).
            if let Some(e) = removal_refusal(&tx.authenticators(authed.account.id)?, &target) {
                return Err(e);
            }
            tx.mark_authenticator_lost(id)?;
            self.retire_authenticator(
                tx,
                authed,
                &target,
                EventKind::AuthenticatorReportedLost,
                "lost_key",
            )
        })
    }

    /// The event for a key taken out of use, and the end of every session it opened.
    fn retire_authenticator(
        &self,
        tx: &mut Tx<'_>,
        authed: &Authed,
        target: &Authenticator,
        kind: EventKind,
        reason: &str,
    ) -> Result<EndedSessions> {
        let actor = self.actor(tx, &authed.session)?;
        let detail = EventDetail {
            authenticator_id: Some(target.id),
            authenticator_name: Some(target.nickname.clone()),
            ..EventDetail::default()
        };
        self.record(tx, authed.account.id, kind, Some(&actor), detail)?;
        let opened: Vec<Session> = self
            .live_sessions(tx, authed.account.id)?
            .into_iter()
            .filter(|s| s.opened_by == Some(target.id))
            .collect();
        let ended = self.end_sessions(tx, authed.account.id, &opened, reason, Some(&actor))?;
        Ok(EndedSessions { ended })
    }
}
