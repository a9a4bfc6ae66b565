//! Ceremonies in flight: their kinds and their server-side state. The state is written by this
//! server into the store and never sent to a client.

use keyward_core::store::{Ceremony, Tx};
use keyward_proto::{Millis, RecoveryPurpose};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestedPasskeyRegistration, DiscoverableAuthentication, PasskeyAuthentication,
    PasskeyRegistration,
};

use super::RelyingParty;
use crate::error::{Result, ServerError};

/// What a ceremony is for. A ceremony can only be finished as the kind it was begun as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CeremonyKind {
    Register,
    AddAuthenticator,
    SignIn,
    StepUp,
    RecoveryCancel,
    RecoveryProof,
    RecoveryRedeem,
}

impl CeremonyKind {
    /// The name stored in the `ceremonies` table.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::AddAuthenticator => "add_authenticator",
            CeremonyKind::SignIn => "sign_in",
            CeremonyKind::StepUp => "step_up",
            CeremonyKind::RecoveryCancel => "recovery_cancel",
            CeremonyKind::RecoveryProof => "recovery_proof",
            CeremonyKind::RecoveryRedeem => "recovery_redeem",
        }
    }
}

/// A registration in flight: plain (any user-verifying authenticator) or attested (only the
/// configured models, proven by their vendor's attestation).
#[derive(Serialize, Deserialize)]
pub(super) enum RegistrationState {
    Plain(PasskeyRegistration),
    Attested(Box<AttestedPasskeyRegistration>),
}

/// Creating an account: the account-to-be and its first key's registration.
#[derive(Serialize, Deserialize)]
pub(super) struct RegisterState {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub registration: RegistrationState,
}

#[derive(Serialize, Deserialize)]
pub(super) enum AssertionState {
    /// Usernameless: the credential names its account through its user handle.
    Discoverable(DiscoverableAuthentication),
    /// Username-first (or step-up): only the account's credentials are allowed.
    ForAccount(PasskeyAuthentication),
    /// A username that does not exist: options look real, nothing can verify.
    Decoy,
}

/// A challenge for the recovery key to sign, and what the signature will be for.
#[derive(Serialize, Deserialize)]
pub(super) struct RecoveryProofState {
    pub purpose: RecoveryPurpose,
    pub challenge: Vec<u8>,
}

/// A taken ceremony's server-side state. It was written by this server, so a failure to read
/// it back is internal.
pub(super) fn ceremony_state<T: serde::de::DeserializeOwned>(c: &Ceremony) -> Result<T> {
    serde_json::from_str(&c.state)
        .map_err(|e| ServerError::Internal(format!("ceremony state: {e}")))
}

impl RelyingParty {
    /// Stores a new ceremony; `session_id` ties it to the session that began it.
    pub(super) fn new_ceremony(
        &self,
        tx: &Tx<'_>,
        kind: CeremonyKind,
        account_id: Option<Uuid>,
        session_id: Option<Uuid>,
        state: &impl Serialize,
    ) -> Result<Ceremony> {
        let now = self.now();
        let c = Ceremony {
            id: Uuid::new_v4(),
            kind: kind.as_str().to_string(),
            account_id,
            session_id,
            state: serde_json::to_string(state)
                .map_err(|e| ServerError::Internal(format!("ceremony state: {e}")))?,
            created_at: now,
            expires_at: now + self.policy.ceremony_ttl_ms,
        };
        tx.insert_ceremony(&c, self.policy.max_pending_ceremonies)?;
        Ok(c)
    }

    /// Takes a ceremony of `kind` (single use: gone whatever happens next), if it is still
    /// pending and unexpired at `now` (the time the request is handled at).
    pub(super) fn take_ceremony(
        &self,
        tx: &Tx<'_>,
        id: Uuid,
        kind: CeremonyKind,
        now: Millis,
    ) -> Result<Option<Ceremony>> {
        Ok(tx.take_ceremony(id, kind.as_str(), now)?)
    }
}
