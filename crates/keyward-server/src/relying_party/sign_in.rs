//! Signing in (a new session) and stepping up (a fresh user verification on this session).

use keyward_core::secret::{hash_secret, new_secret};
use keyward_proto::{
    AccountState, AssertionBegin, AssertionFinishRequest, EventDetail, EventKind,
    SignInBeginRequest, SignInFinishRequest, SignedIn, SteppedUp,
};

use super::assertion::{Presented, Proven};
use super::ceremony::{Begun, CeremonyKind};
use super::input::{clean_client, normalize_username};
use super::sessions::{Authed, SessionRequest};
use super::views::account_view;
use super::{RelyingParty, Verdict};
use crate::error::{Result, ServerError};

impl RelyingParty {
    pub fn sign_in_begin(&self, req: SignInBeginRequest, address: &str) -> Result<AssertionBegin> {
        self.prune_if_due();
        let username = req
            .username
            .as_deref()
            .map(normalize_username)
            .transpose()?;
        self.store.write_unsynced(|tx| {
            self.count_begin(tx, address)?;
            self.assertion_begin(
                tx,
                CeremonyKind::SignIn,
                username.as_deref(),
                Begun::From(address),
            )
        })
    }

    pub fn sign_in_finish(
        &self,
        req: SignInFinishRequest,
        address: &str,
        user_agent: &str,
    ) -> Result<SignedIn> {
        let client = clean_client(&req.client, user_agent);
        let now = self.now();
        let binding = self.binding_of(req.binding.as_ref())?;
        self.store
            .read(|tx| self.check_failure_rate(tx, address, None))?;
        let mut presented = self.present(req.ceremony_id, &req.credential);
        let signed_in = self.write_verdict(|tx| {
            let Proven {
                authenticator,
                mut account,
            } = granted!(self.verified_owner(
                tx,
                CeremonyKind::SignIn,
                presented.attempt(),
                address
            )?);
            if let Some(d) = &account.disabled {
                // Told only now, to whoever proved they hold one of its keys: a username
                // alone says nothing about the account.
                return Ok(Verdict::Refused(ServerError::AccountDisabled(
                    d.reason.clone(),
                )));
            }
            let opened = self.open_session(
                tx,
                SessionRequest::by_key(
                    &account,
                    authenticator.id,
                    &client,
                    req.device_secret.as_deref(),
                    address,
                    now,
                )
                .bound(binding.clone()),
            )?;
            let actor = opened.actor();
            let detail = EventDetail {
                authenticator_id: Some(authenticator.id),
                authenticator_name: Some(authenticator.nickname.clone()),
                known_device: Some(opened.known_device),
                place: self.places.lookup(address),
                ..EventDetail::default()
            };
            self.record(tx, account.id, EventKind::SignIn, Some(&actor), detail)?;
            if account.state != AccountState::Active {
                // Whoever still holds an enrolled key is the owner, during the window as after
                // it: the recovery is moot.
                account =
                    self.cancel_recovery(tx, account, &actor, "owner signed in with a key")?;
            }
            self.forgive_failures(
                tx,
                &account.username,
                req.credential.get_credential_id(),
                address,
            )?;
            let session = self.session_view(tx, &opened.session, Some(opened.session.id))?;
            Ok(Verdict::Granted(SignedIn {
                token: opened.token,
                device_secret: opened.device_secret,
                session,
                account: account_view(&account),
            }))
        })?;
        crate::metrics::signed_in();
        Ok(signed_in)
    }

    pub fn step_up_begin(&self, authed: &Authed) -> Result<AssertionBegin> {
        authed.require_full()?;
        self.store.write_unsynced(|tx| {
            self.assertion_begin(
                tx,
                CeremonyKind::StepUp,
                Some(&authed.account.username),
                Begun::BySession(authed.session.id),
            )
        })
    }

    /// A step-up assertion presented with the very request it approves (a device code): the
    /// ceremony begun by this session with `step_up_begin`, used up either way, failures
    /// counted as a step-up's. The key it proved; the session itself is left as it was (its
    /// token is not replaced: nothing about it changed).
    pub(crate) fn verify_fresh_ceremony(
        &self,
        tx: &mut keyward_core::store::Tx<'_>,
        authed: &Authed,
        presented: Presented<'_>,
        address: &str,
    ) -> Result<Verdict<keyward_core::store::Authenticator>> {
        authed.require_full()?;
        self.take_and_verify(
            tx,
            CeremonyKind::StepUp,
            presented,
            address,
            Some(authed.session.id),
        )
    }

    /// A fresh user verification on this session, which also replaces its token (ASVS 5.0:
    /// a new token whenever privileges change): the same session, a new random token whose
    /// hash replaces the old one in the step-up's own transaction. The old token is refused
    /// from then on, so one that leaked before the step-up never carries its privileges.
    pub fn step_up_finish(
        &self,
        authed: &Authed,
        req: AssertionFinishRequest,
        address: &str,
    ) -> Result<SteppedUp> {
        let now = self.now();
        let mut presented = self.present(req.ceremony_id, &req.credential);
        self.write_verdict(|tx| {
            granted!(self.take_and_verify(
                tx,
                CeremonyKind::StepUp,
                presented.attempt(),
                address,
                Some(authed.session.id),
            )?);
            let token = new_secret();
            if !tx.rotate_session_token(
                authed.session.id,
                &authed.token_hash,
                &hash_secret(&token),
            )? {
                // A step-up raced with the same token replaced it first: this one was made
                // with a token already refused. The ceremony is used up either way.
                return Ok(Verdict::Refused(ServerError::Unauthenticated));
            }
            tx.mark_session_verified(authed.session.id, now)?;
            let session = tx
                .session(authed.session.id)?
                .ok_or(ServerError::Unauthenticated)?;
            Ok(Verdict::Granted(SteppedUp {
                token,
                session: self.session_view(tx, &session, Some(session.id))?,
            }))
        })
    }
}
