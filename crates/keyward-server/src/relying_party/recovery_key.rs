//! The recovery key while the owner still has access: set it (only its public half reaches
//! the server), confirm it was saved, and drill with it. None of these uses the key up.

use keyward_core::readiness;
use keyward_core::recovery_key;
use keyward_core::secret::{b64, random_bytes, unb64};
use keyward_proto::{
    EventDetail, EventKind, RecoveryChallenge, RecoveryChallengeRequest, RecoveryKeyStatus,
    RecoveryProof, RecoveryPurpose, SetRecoveryKeyRequest,
};

use super::ceremony::{Begun, CeremonyKind, RecoveryProofState, ceremony_state};
use super::sessions::Authed;
use super::{RelyingParty, Verdict};
use crate::error::{Result, ServerError};

impl RelyingParty {
    pub fn recovery_key_status(&self, authed: &Authed) -> Result<RecoveryKeyStatus> {
        self.store.read(|tx| {
            let rk = tx.recovery_key(authed.account.id)?;
            Ok(readiness::recovery_key_status(
                rk.as_ref(),
                self.now(),
                &self.policy,
            ))
        })
    }

    /// Stores the public half of a new recovery key (made on the client). Replaces any old one.
    pub fn set_recovery_key(
        &self,
        authed: &Authed,
        req: SetRecoveryKeyRequest,
    ) -> Result<RecoveryKeyStatus> {
        if !authed.is_enrolling() {
            self.require_fresh(authed)?;
        }
        let public_key = unb64(&req.public_key)
            .filter(|k| recovery_key::is_valid_public_key(k))
            .ok_or_else(|| {
                ServerError::InvalidInput(
                    "public_key must be a 32-byte Ed25519 key in base64url".into(),
                )
            })?;
        self.store.write(|tx| {
            let replaced = tx.recovery_key(authed.account.id)?.is_some();
            tx.set_recovery_key(authed.account.id, &public_key, self.now())?;
            let detail = EventDetail {
                reason: Some(
                    if replaced {
                        "replaced the previous recovery key"
                    } else {
                        "first recovery key"
                    }
                    .into(),
                ),
                ..EventDetail::default()
            };
            self.record_own(tx, authed, EventKind::RecoveryKeyGenerated, detail)?;
            let rk = tx.recovery_key(authed.account.id)?;
            Ok(readiness::recovery_key_status(
                rk.as_ref(),
                self.now(),
                &self.policy,
            ))
        })
    }

    /// A challenge for the recovery key to sign, to confirm it or drill (not to redeem).
    pub fn recovery_challenge(
        &self,
        authed: &Authed,
        req: RecoveryChallengeRequest,
    ) -> Result<RecoveryChallenge> {
        if req.purpose == RecoveryPurpose::Redeem {
            return Err(ServerError::InvalidInput(
                "redeeming starts at /api/v1/recovery/redeem/begin".into(),
            ));
        }
        self.store.write(|tx| {
            if tx.recovery_key(authed.account.id)?.is_none() {
                return Err(ServerError::NotFound("recovery key"));
            }
            let state = RecoveryProofState {
                purpose: req.purpose,
                challenge: random_bytes::<32>().to_vec(),
            };
            let c = self.new_ceremony(
                tx,
                CeremonyKind::RecoveryProof,
                Some(authed.account.id),
                Begun::BySession(authed.session.id),
                &state,
            )?;
            Ok(RecoveryChallenge {
                challenge_id: c.id,
                purpose: req.purpose,
                challenge: b64(&state.challenge),
                expires_at: c.expires_at,
            })
        })
    }

    /// Confirm (the user typed the key back) or drill: proves possession, uses nothing up.
    pub fn recovery_verify(
        &self,
        authed: &Authed,
        req: RecoveryProof,
    ) -> Result<RecoveryKeyStatus> {
        let now = self.now();
        self.write_verdict(|tx| {
            let Some(c) =
                self.take_ceremony(tx, req.challenge_id, CeremonyKind::RecoveryProof, now)?
            else {
                return Ok(Verdict::Refused(ServerError::CeremonyExpired));
            };
            if c.session_id != Some(authed.session.id) {
                return Ok(Verdict::Refused(ServerError::CeremonyExpired));
            }
            let state: RecoveryProofState = ceremony_state(&c)?;
            let Some(rk) = tx.recovery_key(authed.account.id)? else {
                return Ok(Verdict::Refused(ServerError::NotFound("recovery key")));
            };
            let signature = unb64(&req.signature).unwrap_or_default();
            if !recovery_key::verify_proof(
                &rk.public_key,
                state.purpose,
                &self.info.rp_id,
                &state.challenge,
                &signature,
            ) {
                return Ok(Verdict::Refused(ServerError::RecoveryFailed));
            }
            let confirm = state.purpose == RecoveryPurpose::Confirm;
            tx.mark_recovery_key_verified(authed.account.id, confirm, now)?;
            let kind = if confirm {
                EventKind::RecoveryKeyConfirmed
            } else {
                EventKind::RecoveryKeyVerified
            };
            self.record_own(tx, authed, kind, EventDetail::default())?;
            let rk = tx.recovery_key(authed.account.id)?;
            Ok(Verdict::Granted(readiness::recovery_key_status(
                rk.as_ref(),
                now,
                &self.policy,
            )))
        })
    }
}
