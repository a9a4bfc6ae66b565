//! Ceremonies in flight: their kinds and their server-side state. The state is written by this
//! server into the store and never sent to a client.

use keyward_core::store::{Ceremony, CeremonyCaps, Tx};
use keyward_proto::{Millis, RecoveryPurpose};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestedPasskeyRegistration, DiscoverableAuthentication, PasskeyAuthentication,
    PasskeyRegistration,
};

use super::RelyingParty;
use super::rate_limit::Network;
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

/// Who began a ceremony: a signed-in session, or a client at an address.
#[derive(Debug, Clone, Copy)]
pub(super) enum Begun<'a> {
    BySession(Uuid),
    From(&'a str),
}

/// The kind with a pool of pending ceremonies of its own: the recovery veto stays open while
/// sign-ins are flooded.
const RESERVED_POOL: &str = "recovery_cancel";

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

/// An assertion in flight: its WebAuthn state and the username the client named to begin it
/// (None: usernameless). Its failures are counted against that name whether an account has it
/// or not, so the rate limits cannot tell which names exist.
#[derive(Serialize, Deserialize)]
pub(super) struct AssertionCeremony {
    pub named: Option<String>,
    pub state: AssertionState,
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
    /// Stores a new ceremony: `Begun::BySession` ties it to the session that began it (and
    /// counts it against that session and its account), `Begun::From` counts it against the
    /// client's network and the shared pool (the veto, `RecoveryCancel`, has its own).
    pub(super) fn new_ceremony(
        &self,
        tx: &Tx<'_>,
        kind: CeremonyKind,
        account_id: Option<Uuid>,
        begun: Begun<'_>,
        state: &impl Serialize,
    ) -> Result<Ceremony> {
        let (session_id, network, wide_network) = match begun {
            Begun::BySession(id) => (Some(id), None, None),
            Begun::From(address) => (
                None,
                Some(Network::of(address).as_str().to_string()),
                Some(Network::wide(address).as_str().to_string()),
            ),
        };
        let now = self.now();
        let c = Ceremony {
            id: Uuid::new_v4(),
            kind: kind.as_str().to_string(),
            account_id,
            session_id,
            network,
            wide_network,
            state: serde_json::to_string(state)
                .map_err(|e| ServerError::Internal(format!("ceremony state: {e}")))?,
            created_at: now,
            expires_at: now + self.policy.ceremony_ttl_ms,
        };
        let p = &self.policy;
        let caps = CeremonyCaps {
            total: p.max_pending_ceremonies,
            per_session: p.max_pending_per_session,
            per_account: p.max_pending_per_account,
            per_network: p.max_pending_per_network,
            per_wide_network: p.max_pending_per_wide_network,
            reserved_kinds: &[RESERVED_POOL],
        };
        tx.insert_ceremony(&c, &caps)?;
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
