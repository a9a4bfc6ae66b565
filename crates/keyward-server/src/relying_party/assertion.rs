//! Assertions: what sign-in, step-up and cancelling a recovery share. Options (with decoys
//! for unknown usernames), the signature check (done before the writer lock when it can be),
//! and the checks webauthn-rs leaves to us: the credential's owner, the user handle, a key
//! reported lost, and the counter against the *stored* value.

use keyward_core::store::{Account, Authenticator, Ceremony, NewEvent, Tx};
use keyward_proto::{
    AssertionBegin, AuthenticatorStatus, EventDetail, EventKind, PublicKeyCredential,
    RequestChallengeResponse,
};
use uuid::Uuid;
use webauthn_rs::prelude::{AuthenticationResult, Passkey, WebauthnError};
use webauthn_rs_proto::AllowCredentials;

use super::ceremony::{AssertionCeremony, AssertionState, Begun, CeremonyKind, ceremony_state};
use super::client_data;
use super::rate_limit::{LimitKey, Network, Target, too_many_attempts};
use super::{RelyingParty, Verdict};
use crate::error::{Result, ServerError};

/// An assertion presented to finish a ceremony, and its signature check done before the lock.
pub(crate) struct Presented<'a> {
    ceremony_id: Uuid,
    credential: &'a PublicKeyCredential,
    pre: Option<PreVerified>,
}

impl<'a> Presented<'a> {
    /// What one attempt of a transaction consumes. A PostgreSQL transaction that loses a
    /// serialisation conflict runs again; the retry checks the signature inside the
    /// transaction, since the pre-check has been used up.
    pub(crate) fn attempt(&mut self) -> Presented<'a> {
        Presented {
            ceremony_id: self.ceremony_id,
            credential: self.credential,
            pre: self.pre.take(),
        }
    }
}

/// A signature check done before the writer lock, with the inputs it was done on.
struct PreVerified {
    ceremony_state: String,
    stored_credential: String,
    /// `stored_credential` parsed: reused under the lock when the row is unchanged, so the
    /// credential JSON is parsed once per sign-in, not twice.
    passkey: Passkey,
    outcome: std::result::Result<AuthenticationResult, WebauthnError>,
}

/// The failure reason of an assertion by a synced key under `require_device_bound`; the
/// client is told `policy_refused` rather than `authentication_failed`.
const SYNCED_KEY_REFUSED: &str = "synced key refused: this server accepts device-bound keys only";

/// Where a failed assertion came from, for the log.
struct AssertionFailure {
    account_id: Option<Uuid>,
    authenticator: Option<Authenticator>,
    reason: &'static str,
}

/// A verified assertion's key (counter and flags already updated) and its account.
pub(super) struct Proven {
    pub authenticator: Authenticator,
    pub account: Account,
}

impl RelyingParty {
    /// Options for an assertion. Unknown usernames get decoy options of the same shape.
    pub(super) fn assertion_begin(
        &self,
        tx: &Tx<'_>,
        kind: CeremonyKind,
        username: Option<&str>,
        begun: Begun<'_>,
    ) -> Result<AssertionBegin> {
        let (mut options, state, account_id) = match username {
            None => {
                let (options, state) = self
                    .webauthn
                    .start_discoverable_authentication()
                    .map_err(|e| ServerError::Internal(format!("start authentication: {e}")))?;
                (options, AssertionState::Discoverable(state), None)
            }
            Some(username) => {
                let account = tx.account_by_username(username)?;
                let passkeys: Vec<Passkey> = match &account {
                    Some(a) => tx
                        .authenticators(a.id)?
                        .iter()
                        .filter(|k| k.status == AuthenticatorStatus::Active)
                        .filter_map(|k| serde_json::from_str(&k.credential).ok())
                        .collect(),
                    None => Vec::new(),
                };
                match account {
                    Some(account) if !passkeys.is_empty() => {
                        let (options, state) = self
                            .webauthn
                            .start_passkey_authentication(&passkeys)
                            .map_err(|e| {
                                ServerError::Internal(format!("start authentication: {e}"))
                            })?;
                        (options, AssertionState::ForAccount(state), Some(account.id))
                    }
                    _ => (self.decoy_options(username)?, AssertionState::Decoy, None),
                }
            }
        };
        // A modal sign-in, not browser autofill: clients show their own prompt.
        options.mediation = None;
        let ceremony = AssertionCeremony {
            named: username.map(str::to_string),
            state,
        };
        let c = self.new_ceremony(tx, kind, account_id, begun, &ceremony)?;
        Ok(AssertionBegin {
            ceremony_id: c.id,
            options,
        })
    }

    /// Looks like a real account's options: same fields, stable credential IDs per username.
    fn decoy_options(&self, username: &str) -> Result<RequestChallengeResponse> {
        let decoys = self.decoys.for_username(username);
        let (mut options, _) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| ServerError::Internal(format!("start authentication: {e}")))?;
        options.mediation = None;
        options.public_key.extensions = None;
        // webauthn-rs keeps a key's reported transports only when attestation vouches for
        // them, so a real account's options carry transports exactly in attested mode.
        let attested = self.attestation.is_some();
        options.public_key.allow_credentials = decoys
            .into_iter()
            .map(|d| AllowCredentials {
                type_: "public-key".into(),
                id: d.id,
                transports: attested.then_some(d.transports),
            })
            .collect();
        Ok(options)
    }

    /// The signature and client-data check (webauthn-rs). A decoy ceremony never verifies.
    fn check_signature(
        &self,
        state: AssertionState,
        credential: &PublicKeyCredential,
        passkey: &Passkey,
    ) -> std::result::Result<AuthenticationResult, WebauthnError> {
        match state {
            AssertionState::Discoverable(s) => self
                .webauthn
                .finish_discoverable_authentication_v2(credential, s, passkey),
            AssertionState::ForAccount(s) => {
                self.webauthn.finish_passkey_authentication(credential, &s)
            }
            AssertionState::Decoy => Err(WebauthnError::CredentialNotFound),
        }
    }

    /// The assertion as presented, with its signature checked before the writer lock.
    pub(crate) fn present<'a>(
        &self,
        ceremony_id: Uuid,
        credential: &'a PublicKeyCredential,
    ) -> Presented<'a> {
        Presented {
            ceremony_id,
            credential,
            pre: self.pre_verify(ceremony_id, credential),
        }
    }

    /// Runs the costly signature check before the writer lock, which serialises every
    /// commit: the lock is then held for the bookkeeping only. Decides nothing: the outcome
    /// is used under the lock only if the ceremony and stored credential are unchanged
    /// (`verify_assertion`), and the ceremony is still taken there, once.
    fn pre_verify(
        &self,
        ceremony_id: Uuid,
        credential: &PublicKeyCredential,
    ) -> Option<PreVerified> {
        let (ceremony, authenticator) = self
            .store
            .read::<_, ServerError>(|tx| {
                Ok((
                    tx.peek_ceremony(ceremony_id)?,
                    tx.authenticator_by_credential_id(credential.get_credential_id())?,
                ))
            })
            .ok()?;
        let (ceremony, authenticator) = (ceremony?, authenticator?);
        let AssertionCeremony { state, .. } = ceremony_state(&ceremony).ok()?;
        if matches!(state, AssertionState::Decoy)
            || (matches!(state, AssertionState::Discoverable(_))
                && credential.get_user_unique_id().is_none())
        {
            return None;
        }
        let passkey: Passkey = serde_json::from_str(&authenticator.credential).ok()?;
        let outcome = self.check_signature(state, credential, &passkey);
        Some(PreVerified {
            ceremony_state: ceremony.state,
            stored_credential: authenticator.credential,
            passkey,
            outcome,
        })
    }

    /// Verifies an assertion for a taken ceremony; on success the authenticator's counter,
    /// flags and last use are updated in the same transaction.
    fn verify_assertion(
        &self,
        tx: &mut Tx<'_>,
        ceremony: &Ceremony,
        state: AssertionState,
        credential: &PublicKeyCredential,
        pre: Option<PreVerified>,
    ) -> Result<std::result::Result<Authenticator, AssertionFailure>> {
        let fail = |account_id, authenticator, reason| {
            Ok(Err(AssertionFailure {
                account_id,
                authenticator,
                reason,
            }))
        };
        if matches!(state, AssertionState::Decoy) {
            return fail(None, None, "unknown account");
        }
        let Some(authenticator) =
            tx.authenticator_by_credential_id(credential.get_credential_id())?
        else {
            return fail(ceremony.account_id, None, "unknown credential");
        };
        let owner = authenticator.account_id;
        if ceremony.account_id.is_some_and(|a| a != owner) {
            return fail(ceremony.account_id, None, "another account's credential");
        }
        // The user handle, when given, must name the credential's own account.
        if let Some(handle) = credential.get_user_unique_id()
            && Uuid::from_slice(handle).ok() != Some(owner)
        {
            return fail(
                Some(owner),
                Some(authenticator),
                "user handle does not match",
            );
        }
        if authenticator.status == AuthenticatorStatus::Lost {
            return fail(Some(owner), Some(authenticator), "key reported lost");
        }
        let client_data = credential.response.client_data_json.as_ref();
        if let Some(reason) = client_data::refusal(client_data, &self.info.origins) {
            return fail(Some(owner), Some(authenticator), reason);
        }
        // The check is a pure function of the ceremony state, the assertion and the stored
        // credential; a result computed before the lock on exactly these inputs is the result
        // (and the credential parsed from the same text is the same credential).
        let pre = pre.filter(|p| {
            p.ceremony_state == ceremony.state && p.stored_credential == authenticator.credential
        });
        let (mut passkey, pre_outcome): (Passkey, _) = match pre {
            Some(p) => (p.passkey, Some(p.outcome)),
            None => (
                serde_json::from_str(&authenticator.credential)
                    .map_err(|e| ServerError::Internal(format!("stored credential: {e}")))?,
                None,
            ),
        };
        if matches!(state, AssertionState::Discoverable(_))
            && credential.get_user_unique_id().is_none()
        {
            return fail(Some(owner), Some(authenticator), "no user handle");
        }
        let verified = match pre_outcome {
            Some(outcome) => outcome,
            None => self.check_signature(state, credential, &passkey),
        };
        let cloned_key_warning = |tx: &mut Tx<'_>, authenticator: &Authenticator| {
            let detail = EventDetail {
                authenticator_id: Some(authenticator.id),
                authenticator_name: Some(authenticator.nickname.clone()),
                reason: Some(
                    "signature counter went backwards: the key may have been cloned".into(),
                ),
                ..EventDetail::default()
            };
            self.record(tx, owner, EventKind::ClonedKeyWarning, None, detail)
        };
        let result = match verified {
            // WebAuthn §7.2 step 22: the counter must exceed the stored one. For ceremonies
            // begun for a known account (step-up), webauthn-rs compares with the counter
            // captured when the ceremony began; a sign-in finished since then may have moved
            // it on, so compare with the stored value too, in this transaction.
            Ok(r)
                if (r.counter() != 0 || authenticator.sign_count != 0)
                    && r.counter() <= authenticator.sign_count =>
            {
                cloned_key_warning(tx, &authenticator)?;
                return fail(Some(owner), Some(authenticator), "counter regression");
            }
            Ok(r) => r,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                cloned_key_warning(tx, &authenticator)?;
                return fail(Some(owner), Some(authenticator), "counter regression");
            }
            Err(e) => {
                tracing::info!(error = %e, "assertion did not verify");
                return fail(
                    Some(owner),
                    Some(authenticator),
                    "signature or client data did not verify",
                );
            }
        };
        if !result.user_verified() {
            return fail(Some(owner), Some(authenticator), "user not verified");
        }
        // The device-bound policy holds at every assertion, not only at registration: a key
        // registered before it was turned on, or one now claiming to be synced, is refused.
        if self.policy.require_device_bound
            && (result.backup_eligible() || authenticator.backup_eligible)
        {
            return fail(Some(owner), Some(authenticator), SYNCED_KEY_REFUSED);
        }
        passkey.update_credential(&result);
        let updated = Authenticator {
            credential: serde_json::to_string(&passkey)
                .map_err(|e| ServerError::Internal(format!("credential: {e}")))?,
            sign_count: result.counter(),
            backup_eligible: result.backup_eligible(),
            backup_state: result.backup_state(),
            last_used_at: Some(self.now()),
            ..authenticator
        };
        tx.record_authenticator_use(&updated, self.now())?;
        Ok(Ok(updated))
    }

    /// Counts a failed assertion against its network and what it tried (`target`), and logs
    /// it on its account's log if it has one (seen by that account's sessions only).
    fn record_failure(
        &self,
        tx: &mut Tx<'_>,
        f: &AssertionFailure,
        target: Target,
        address: &str,
    ) -> Result<()> {
        let now = self.now();
        let network = Network::of(address);
        self.limiter.record(
            tx,
            &LimitKey::Failure {
                network: network.clone(),
            },
            now,
        )?;
        self.limiter
            .record(tx, &LimitKey::TargetFailure { target, network }, now)?;
        if let Some(account_id) = f.account_id {
            let mut e = NewEvent::new(account_id, EventKind::SignInFailed);
            e.address = Some(address.to_string());
            e.detail = EventDetail {
                authenticator_id: f.authenticator.as_ref().map(|a| a.id),
                authenticator_name: f.authenticator.as_ref().map(|a| a.nickname.clone()),
                reason: Some(f.reason.to_string()),
                ..EventDetail::default()
            };
            tx.append_event(e, now)?;
        }
        tracing::info!(reason = f.reason, %address, "assertion refused");
        // Counted per attempt: on PostgreSQL a transaction that lost a conflict runs again.
        crate::metrics::sign_in_failed(f.reason);
        Ok(())
    }

    /// Refuses an address (or the pair of what was tried and address) that failed too often.
    pub(super) fn check_failure_rate(
        &self,
        tx: &Tx<'_>,
        address: &str,
        target: Option<&Target>,
    ) -> Result<()> {
        let now = self.now();
        let network = Network::of(address);
        let mut blocked = self.limiter.blocked(
            tx,
            &LimitKey::Failure {
                network: network.clone(),
            },
            now,
        )?;
        if let (None, Some(target)) = (blocked, target) {
            let key = LimitKey::TargetFailure {
                target: target.clone(),
                network,
            };
            blocked = self.limiter.blocked(tx, &key, now)?;
        }
        match blocked {
            Some(ms) => Err(too_many_attempts(ms)),
            None => Ok(()),
        }
    }

    /// The owner signed in from `address`: what failed there against their name or this key
    /// is forgiven.
    pub(super) fn forgive_failures(
        &self,
        tx: &Tx<'_>,
        username: &str,
        credential_id: &[u8],
        address: &str,
    ) -> Result<()> {
        for target in [
            Target::username(username),
            Target::credential(credential_id),
        ] {
            self.limiter.clear(
                tx,
                &LimitKey::TargetFailure {
                    target,
                    network: Network::of(address),
                },
            )?;
        }
        Ok(())
    }

    /// Takes the ceremony (gone whatever happens next) and verifies the assertion against it.
    /// Refusals are recorded (event, rate limiter) for the caller's transaction to commit.
    /// `session`: the ceremony must belong to this session.
    pub(super) fn take_and_verify(
        &self,
        tx: &mut Tx<'_>,
        kind: CeremonyKind,
        presented: Presented<'_>,
        address: &str,
        session: Option<Uuid>,
    ) -> Result<Verdict<Authenticator>> {
        let Presented {
            ceremony_id,
            credential,
            pre,
        } = presented;
        let Some(c) = self.take_ceremony(tx, ceremony_id, kind, self.now())? else {
            return Ok(Verdict::Refused(ServerError::CeremonyExpired));
        };
        if session.is_some() && c.session_id != session {
            return Ok(Verdict::Refused(ServerError::CeremonyExpired));
        }
        let AssertionCeremony { named, state } = ceremony_state(&c)?;
        // The pair (what was tried, address) may be blocked even where the address is not.
        // What was tried is what the client named, never the account looked up for it, so
        // the pair blocks alike whether that account exists.
        let target = match &named {
            Some(username) => Target::username(username),
            None => Target::credential(credential.get_credential_id()),
        };
        if let Err(e) = self.check_failure_rate(tx, address, Some(&target)) {
            return Ok(Verdict::Refused(e));
        }
        match self.verify_assertion(tx, &c, state, credential, pre)? {
            Ok(a) => Ok(Verdict::Granted(a)),
            Err(f) => {
                self.record_failure(tx, &f, target, address)?;
                if f.reason == SYNCED_KEY_REFUSED {
                    return Ok(Verdict::Refused(ServerError::PolicyRefused(
                        "synced passkeys are not accepted here; use a hardware security key",
                    )));
                }
                Ok(Verdict::Refused(ServerError::AuthenticationFailed))
            }
        }
    }

    /// `take_and_verify` for a sign-in-like ceremony, then the credential's owner, with any
    /// recovery window that has run out settled first.
    pub(super) fn verified_owner(
        &self,
        tx: &mut Tx<'_>,
        kind: CeremonyKind,
        presented: Presented<'_>,
        address: &str,
    ) -> Result<Verdict<Proven>> {
        let authenticator = granted!(self.take_and_verify(tx, kind, presented, address, None)?);
        let account = tx
            .account(authenticator.account_id)?
            .ok_or_else(|| ServerError::Internal("authenticator without account".into()))?;
        let account = self.settle_recovery(tx, account)?;
        Ok(Verdict::Granted(Proven {
            authenticator,
            account,
        }))
    }
}
