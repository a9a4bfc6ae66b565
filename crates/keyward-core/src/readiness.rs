//! How protected an account is, in one answer, and the one next step that matters.
//!
//! The bar (NIST SP 800-63B-4 §4.2): a recovery key alone is weaker than AAL3, so "protected"
//! means at least two independent authenticators *and* a confirmed recovery key. Synced passkeys
//! from one provider are lost together (one sync account), so they count as one.

use std::collections::HashSet;

use keyward_proto::{
    AuthenticatorStatus, Millis, NextStep, Readiness, ReadinessLevel, RecoveryKeyStatus,
};
use uuid::Uuid;

use crate::policy::Policy;
use crate::store::{Authenticator, RecoveryKeyRecord};

pub fn recovery_key_status(
    record: Option<&RecoveryKeyRecord>,
    now: Millis,
    policy: &Policy,
) -> RecoveryKeyStatus {
    match record {
        None => RecoveryKeyStatus::default(),
        Some(r) => RecoveryKeyStatus {
            present: true,
            created_at: Some(r.created_at),
            confirmed_at: r.confirmed_at,
            last_verified_at: r.last_verified_at,
            drill_due: r.confirmed_at.is_some()
                && now - r.last_verified_at.unwrap_or(r.created_at) > policy.drill_interval_ms,
        },
    }
}

pub fn assess(
    authenticators: &[Authenticator],
    recovery: Option<&RecoveryKeyRecord>,
    now: Millis,
    policy: &Policy,
) -> Readiness {
    let active: Vec<&Authenticator> = authenticators
        .iter()
        .filter(|a| a.status == AuthenticatorStatus::Active)
        .collect();
    let synced: Vec<&&Authenticator> = active.iter().filter(|a| a.backup_eligible).collect();
    let device_bound = active.len() - synced.len();
    // Synced passkeys group by provider (AAGUID); an unknown provider is one group.
    let providers: HashSet<Option<Uuid>> = synced
        .iter()
        .map(|a| a.aaguid.filter(|u| !u.is_nil()))
        .collect();
    let independent = device_bound + providers.len();

    let recovery_key = recovery_key_status(recovery, now, policy);
    let recovery_confirmed = recovery_key.confirmed_at.is_some();
    let stale_authenticators: Vec<Uuid> = active
        .iter()
        .filter(|a| now - a.last_used_at.unwrap_or(a.created_at) > policy.stale_after_ms)
        .map(|a| a.id)
        .collect();

    let single_point_of_failure = match (independent, recovery_confirmed) {
        (0, false) => {
            Some("You have no working security key and no confirmed recovery key.".into())
        }
        (1, false) => {
            let only = active
                .first()
                .map(|a| a.nickname.as_str())
                .unwrap_or("your key");
            Some(if synced.len() == active.len() {
                format!("Losing access to the account that syncs \"{only}\" would lock you out.")
            } else {
                format!("Losing \"{only}\" would lock you out.")
            })
        }
        _ => None,
    };

    let level = if independent >= 2 && recovery_confirmed {
        ReadinessLevel::Protected
    } else if single_point_of_failure.is_some() {
        ReadinessLevel::AtRisk
    } else {
        ReadinessLevel::Partial
    };

    let step = |code: &str, message: &str| {
        Some(NextStep {
            code: code.into(),
            message: message.into(),
        })
    };
    let next_step = if independent < 2 {
        step(
            "add_backup_key",
            "Add a backup security key, kept somewhere safe, so losing one key does not lock you out.",
        )
    } else if !recovery_key.present {
        step(
            "set_up_recovery_key",
            "Create a recovery key and store it offline: it is your way back if every key is lost.",
        )
    } else if !recovery_confirmed {
        step(
            "confirm_recovery_key",
            "Type your recovery key back to confirm you saved it.",
        )
    } else if recovery_key.drill_due {
        step(
            "drill_recovery_key",
            "Test your recovery key: prove you can still find it, without using it up.",
        )
    } else if !stale_authenticators.is_empty() {
        step(
            "check_stale_keys",
            "Some keys have not been used in months: check you still have them, or remove them.",
        )
    } else {
        None
    };

    Readiness {
        level,
        active_authenticators: active.len() as u32,
        independent_authenticators: independent as u32,
        device_bound: device_bound as u32,
        synced: synced.len() as u32,
        has_backup: independent >= 2,
        recovery_key,
        stale_authenticators,
        single_point_of_failure,
        next_step,
        unbound_sessions: 0,
        session_risk: None,
    }
}

/// Names the account's live sessions that are not bound to a key on their device as a risk:
/// a stolen copy of their token is a way in until they end.
pub fn note_unbound_sessions(readiness: &mut Readiness, unbound: u32) {
    readiness.unbound_sessions = unbound;
    readiness.session_risk = match unbound {
        0 => None,
        1 => Some(
            "1 session is not bound to its device: a copy of its token would work anywhere.".into(),
        ),
        n => Some(format!(
            "{n} sessions are not bound to their device: a copy of their token would work anywhere."
        )),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DAY_MS;

    fn key(name: &str, synced: bool, aaguid: Option<Uuid>) -> Authenticator {
        Authenticator {
            id: Uuid::new_v4(),
            account_id: Uuid::nil(),
            credential_id: vec![1],
            credential: String::new(),
            nickname: name.into(),
            aaguid,
            transports: vec![],
            backup_eligible: synced,
            backup_state: synced,
            sign_count: 0,
            created_at: 0,
            last_used_at: Some(0),
            status: AuthenticatorStatus::Active,
        }
    }

    fn confirmed() -> RecoveryKeyRecord {
        RecoveryKeyRecord {
            account_id: Uuid::nil(),
            public_key: vec![],
            created_at: 0,
            confirmed_at: Some(0),
            last_verified_at: Some(0),
        }
    }

    #[test]
    fn one_key_and_no_recovery_key_is_at_risk_and_names_the_key() {
        let r = assess(
            &[key("Blue YubiKey", false, None)],
            None,
            0,
            &Policy::default(),
        );
        assert_eq!(r.level, ReadinessLevel::AtRisk);
        assert!(r.single_point_of_failure.unwrap().contains("Blue YubiKey"));
        assert_eq!(r.next_step.unwrap().code, "add_backup_key");
    }

    #[test]
    fn two_synced_passkeys_from_one_provider_are_one_independent_authenticator() {
        let gpm = Some(Uuid::from_u128(7));
        let r = assess(
            &[key("phone", true, gpm), key("laptop", true, gpm)],
            None,
            0,
            &Policy::default(),
        );
        assert_eq!(r.independent_authenticators, 1);
        assert_eq!(r.level, ReadinessLevel::AtRisk);
        assert!(r.single_point_of_failure.unwrap().contains("syncs"));
    }

    #[test]
    fn two_keys_and_a_confirmed_recovery_key_is_protected_until_a_drill_is_due() {
        let keys = [key("a", false, None), key("b", false, None)];
        let p = Policy::default();
        let r = assess(&keys, Some(&confirmed()), DAY_MS, &p);
        assert_eq!(r.level, ReadinessLevel::Protected);
        assert!(r.next_step.is_none());
        let later = assess(&keys, Some(&confirmed()), p.drill_interval_ms + DAY_MS, &p);
        assert_eq!(later.next_step.unwrap().code, "drill_recovery_key");
    }

    #[test]
    fn one_key_with_a_confirmed_recovery_key_has_no_single_point_of_failure() {
        let r = assess(
            &[key("a", false, None)],
            Some(&confirmed()),
            0,
            &Policy::default(),
        );
        assert_eq!(r.level, ReadinessLevel::Partial);
        assert!(r.single_point_of_failure.is_none());
    }
}
