//! Registration: creating an account *is* registering its first authenticator. Adding a key
//! to an existing account shares `start_registration` and `admit_credential`.

use keyward_core::store::{Account, Authenticator};
use keyward_proto::{
    AccountState, AuthenticatorStatus, EventDetail, EventKind, RegisterPublicKeyCredential,
    RegistrationBegin, RegistrationBeginRequest, RegistrationFinishRequest, SignedIn,
};
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Credential, CredentialID, Passkey, WebauthnError,
};

use super::ceremony::{Begun, CeremonyKind, RegisterState, RegistrationState, ceremony_state};
use super::client_data;
use super::input::{clean_client, clean_nickname, clean_text, normalize_username};
use super::sessions::SessionRequest;
use super::views::account_view;
use super::{RelyingParty, Verdict};
use crate::error::{Result, ServerError};

/// The AAGUID sits in authData (bytes 37..53) inside the CBOR attestation object.
fn aaguid_of(reg: &RegisterPublicKeyCredential) -> Option<Uuid> {
    let object: serde_cbor_2::Value =
        serde_cbor_2::from_slice(reg.response.attestation_object.as_ref()).ok()?;
    let serde_cbor_2::Value::Map(map) = object else {
        return None;
    };
    let auth_data = map.iter().find_map(|(k, v)| match (k, v) {
        (serde_cbor_2::Value::Text(k), serde_cbor_2::Value::Bytes(b)) if k == "authData" => Some(b),
        _ => None,
    })?;
    let bytes = auth_data.get(37..53)?;
    Some(Uuid::from_slice(bytes).ok()?).filter(|u| !u.is_nil())
}

/// Client-reported transports: a display hint only, which is why webauthn-rs does not keep
/// them in its credential record.
fn transports_of(reg: &RegisterPublicKeyCredential) -> Vec<String> {
    reg.response
        .transports
        .iter()
        .flatten()
        .filter_map(|t| serde_json::to_value(t).ok())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

impl RelyingParty {
    /// Registration options (plain or attested, as configured), asking for a discoverable
    /// credential; `exclude` lists the account's keys so the same key is not added twice.
    pub(super) fn start_registration(
        &self,
        user_id: Uuid,
        username: &str,
        display_name: &str,
        exclude: Option<Vec<CredentialID>>,
    ) -> Result<(CreationChallengeResponse, RegistrationState)> {
        let started = match &self.attestation {
            None => self
                .webauthn
                .start_passkey_registration(user_id, username, display_name, exclude)
                .map(|(o, s)| (o, RegistrationState::Plain(s))),
            Some(cas) => self
                .webauthn
                .start_attested_passkey_registration(
                    user_id,
                    username,
                    display_name,
                    exclude,
                    cas.clone(),
                    None,
                )
                .map(|(o, s)| (o, RegistrationState::Attested(Box::new(s)))),
        };
        let (mut options, state) =
            started.map_err(|e| ServerError::Internal(format!("start registration: {e}")))?;
        // Ask keys to keep the passkey (discoverable) so usernameless sign-in works with
        // security keys too, not only with synced passkeys. "Preferred", not "required": a key
        // whose storage is full still registers and signs in username-first.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Preferred);
            selection.require_resident_key = false;
        }
        Ok((options, state))
    }

    pub fn registration_begin(
        &self,
        req: RegistrationBeginRequest,
        address: &str,
    ) -> Result<RegistrationBegin> {
        let username = normalize_username(&req.username)?;
        let display_name = match req.display_name.as_deref().map(|d| clean_text(d, 100)) {
            Some(d) if !d.is_empty() => d,
            _ => username.clone(),
        };
        let begun = self.store.write_unsynced::<_, ServerError>(|tx| {
            self.count_begin(tx, address)?;
            if tx.username_exists(&username)? {
                // Committed with the start counted: asking after names is what the begin
                // limit slows down.
                return Ok(Verdict::Refused(ServerError::UsernameUnavailable));
            }
            let user_id = Uuid::new_v4();
            let (options, registration) =
                self.start_registration(user_id, &username, &display_name, None)?;
            let state = RegisterState {
                user_id,
                username: username.clone(),
                display_name: display_name.clone(),
                registration,
            };
            let c = self.new_ceremony(
                tx,
                CeremonyKind::Register,
                None,
                Begun::From(address),
                &state,
            )?;
            Ok(Verdict::Granted(RegistrationBegin {
                ceremony_id: c.id,
                options,
            }))
        })?;
        match begun {
            Verdict::Granted(begun) => Ok(begun),
            Verdict::Refused(e) => Err(e),
        }
    }

    /// Verifies a new credential against policy and turns it into a row for `account_id`.
    pub(super) fn admit_credential(
        &self,
        reg: &RegisterPublicKeyCredential,
        state: &RegistrationState,
        account_id: Uuid,
        nickname: Option<&str>,
    ) -> Result<Authenticator> {
        let client_data = reg.response.client_data_json.as_ref();
        if let Some(reason) = client_data::refusal(client_data, &self.info.origins) {
            tracing::info!(reason, "registration refused");
            return Err(ServerError::RegistrationFailed(
                "the authenticator's response did not verify",
            ));
        }
        let finished = match state {
            RegistrationState::Plain(s) => self.webauthn.finish_passkey_registration(reg, s),
            RegistrationState::Attested(s) => self
                .webauthn
                .finish_attested_passkey_registration(reg, s)
                .map(Passkey::from),
        };
        let passkey = finished.map_err(|e| {
            tracing::info!(error = ?e, "registration did not verify");
            let attestation_refused = matches!(state, RegistrationState::Attested(_))
                && (format!("{e:?}").starts_with("Attestation")
                    || matches!(e, WebauthnError::CredentialMayNotBeHardwareBound));
            if attestation_refused {
                ServerError::PolicyRefused("this model of authenticator is not on the allowed list")
            } else {
                ServerError::RegistrationFailed("the authenticator's response did not verify")
            }
        })?;
        let cred = Credential::from(passkey.clone());
        if !cred.user_verified {
            return Err(ServerError::RegistrationFailed(
                "the key did not verify its user (PIN or biometric)",
            ));
        }
        if self.policy.require_device_bound && cred.backup_eligible {
            return Err(ServerError::PolicyRefused(
                "synced passkeys are not accepted here; use a hardware security key",
            ));
        }
        let aaguid = aaguid_of(reg);
        let model = aaguid.as_ref().and_then(keyward_core::aaguid::model_name);
        let nickname = match nickname {
            Some(n) => clean_nickname(n)?,
            None => model.unwrap_or("Security key").to_string(),
        };
        Ok(Authenticator {
            id: Uuid::new_v4(),
            account_id,
            credential_id: cred.cred_id.to_vec(),
            credential: serde_json::to_string(&passkey)
                .map_err(|e| ServerError::Internal(format!("credential: {e}")))?,
            nickname,
            aaguid,
            transports: transports_of(reg),
            backup_eligible: cred.backup_eligible,
            backup_state: cred.backup_state,
            sign_count: cred.counter,
            created_at: self.now(),
            last_used_at: None,
            status: AuthenticatorStatus::Active,
        })
    }

    pub fn registration_finish(
        &self,
        req: RegistrationFinishRequest,
        address: &str,
        user_agent: &str,
    ) -> Result<SignedIn> {
        let client = clean_client(&req.client, user_agent);
        let now = self.now();
        let binding = self.binding_of(req.binding.as_ref())?;
        self.write_verdict(|tx| {
            let Some(c) = self.take_ceremony(tx, req.ceremony_id, CeremonyKind::Register, now)?
            else {
                return Ok(Verdict::Refused(ServerError::CeremonyExpired));
            };
            let state: RegisterState = ceremony_state(&c)?;
            let authenticator = match self.admit_credential(
                &req.credential,
                &state.registration,
                state.user_id,
                req.nickname.as_deref(),
            ) {
                Ok(a) => a,
                Err(e) => return Ok(Verdict::Refused(e)),
            };
            // Checked before anything is inserted: a refusal then commits the consumed
            // ceremony, where a failed insert would roll its deletion back with the account.
            if tx
                .authenticator_by_credential_id(&authenticator.credential_id)?
                .is_some()
            {
                return Ok(Verdict::Refused(ServerError::RegistrationFailed(
                    "that key is already registered",
                )));
            }
            let account = Account {
                id: state.user_id,
                username: state.username,
                display_name: state.display_name,
                created_at: now,
                state: AccountState::Active,
                recovery: None,
                disabled: None,
            };
            match tx.insert_account(&account) {
                Err(keyward_core::CoreError::UsernameTaken) => {
                    return Ok(Verdict::Refused(ServerError::UsernameUnavailable));
                }
                other => other?,
            }
            tx.insert_authenticator(&authenticator)?;
            if matches!(state.registration, RegistrationState::Attested(_)) {
                tx.mark_authenticator_attested(authenticator.id)?;
            }
            let opened = self.open_session(
                tx,
                SessionRequest::by_key(&account, authenticator.id, &client, None, address, now)
                    .bound(binding.clone()),
            )?;
            let detail = EventDetail {
                authenticator_id: Some(authenticator.id),
                authenticator_name: Some(authenticator.nickname.clone()),
                ..EventDetail::default()
            };
            self.record(
                tx,
                account.id,
                EventKind::AccountCreated,
                Some(&opened.actor()),
                detail,
            )?;
            let session = self.session_view(tx, &opened.session, Some(opened.session.id))?;
            Ok(Verdict::Granted(SignedIn {
                token: opened.token,
                device_secret: opened.device_secret,
                session,
                account: account_view(&account),
            }))
        })
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests of the CBOR attestation object a client sends: whatever the bytes, the
    //! AAGUID is read or not, never a panic.
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn credential(attestation_object: &[u8]) -> RegisterPublicKeyCredential {
        let b64 = keyward_core::secret::b64;
        serde_json::from_value(serde_json::json!({
            "id": "AAAA", "rawId": "AAAA", "type": "public-key", "extensions": {},
            "response": {
                "attestationObject": b64(attestation_object),
                "clientDataJSON": b64(b"{}"),
            },
        }))
        .unwrap()
    }

    fn cbor_map(auth_data: Vec<u8>) -> Vec<u8> {
        use serde_cbor_2::Value;
        let map = [
            (Value::Text("fmt".into()), Value::Text("none".into())),
            (Value::Text("authData".into()), Value::Bytes(auth_data)),
        ];
        serde_cbor_2::to_vec(&Value::Map(map.into_iter().collect())).unwrap()
    }

    #[test]
    fn the_aaguid_is_read_from_bytes_37_to_53_of_auth_data() {
        let mut auth_data = vec![0u8; 53];
        auth_data[37..53].copy_from_slice(&[0x11; 16]);
        assert_eq!(
            aaguid_of(&credential(&cbor_map(auth_data.clone()))),
            Some(Uuid::from_bytes([0x11; 16]))
        );
        assert_eq!(
            aaguid_of(&credential(&cbor_map(auth_data[..52].to_vec()))),
            None
        );
        assert_eq!(aaguid_of(&credential(&cbor_map(vec![0; 53]))), None, "nil");
    }

    proptest! {
        #[test]
        fn any_bytes_as_an_attestation_object_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = aaguid_of(&credential(&bytes));
        }

        #[test]
        fn any_auth_data_in_a_well_formed_object_never_panics(auth_data in proptest::collection::vec(any::<u8>(), 0..96)) {
            let found = aaguid_of(&credential(&cbor_map(auth_data.clone())));
            if auth_data.len() < 53 {
                prop_assert_eq!(found, None);
            }
        }
    }
}
