//! The relying party: every ceremony and account operation, as synchronous functions over one
//! store transaction each. Handlers in `api.rs` only parse, call one of these, and serialise.
//!
//! Failures that must still be recorded (a consumed challenge, a failed-sign-in event, a
//! cloned-key warning) are returned as `Ok(Err(..))` from the transaction closure, so the
//! transaction commits them while the caller still gets the error.

use keyward_core::readiness;
use keyward_core::recovery_key;
use keyward_core::secret::{b64, hash_secret, new_secret, random_bytes, unb64};
use keyward_core::store::{
    Account, Authenticator, Ceremony, Device, NewEvent, PendingRecovery, Session, Tx,
};
use keyward_proto::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestedPasskeyRegistration, CreationChallengeResponse, Credential, DiscoverableAuthentication,
    Passkey, PasskeyAuthentication, PasskeyRegistration, WebauthnError,
};
use webauthn_rs_proto::AllowCredentials;

use crate::error::{Result, ServerError};
use crate::state::Inner;

/// How finely a session's last activity is recorded. A check within this long of the last
/// recorded one changes nothing, so it needs no write. The idle timeout can therefore end a
/// session up to this much *earlier* than exact, never later.
/// An assertion presented to finish a ceremony, and its signature check done before the lock.
struct Presented<'a> {
    ceremony_id: Uuid,
    credential: &'a PublicKeyCredential,
    pre: Option<PreVerified>,
}

/// A signature check done before the writer lock, with the inputs it was done on.
struct PreVerified {
    ceremony_state: String,
    stored_credential: String,
    outcome: std::result::Result<webauthn_rs::prelude::AuthenticationResult, WebauthnError>,
}

const ACTIVITY_GRANULARITY_MS: i64 = 30_000;

// ---------------------------------------------------------------------------------------------
// Ceremony state (server-side only; never sent to a client)

mod kind {
    pub const REGISTER: &str = "register";
    pub const ADD_AUTHENTICATOR: &str = "add_authenticator";
    pub const SIGN_IN: &str = "sign_in";
    pub const STEP_UP: &str = "step_up";
    pub const RECOVERY_CANCEL: &str = "recovery_cancel";
    pub const RECOVERY_PROOF: &str = "recovery_proof";
    pub const RECOVERY_REDEEM: &str = "recovery_redeem";
}

/// A registration in flight: plain (any user-verifying authenticator) or attested (only the
/// configured models, proven by their vendor's attestation).
#[derive(Serialize, Deserialize)]
enum RegistrationState {
    Plain(PasskeyRegistration),
    Attested(Box<AttestedPasskeyRegistration>),
}

#[derive(Serialize, Deserialize)]
struct RegisterState {
    user_id: Uuid,
    username: String,
    display_name: String,
    registration: RegistrationState,
}

#[derive(Serialize, Deserialize)]
enum AssertionState {
    /// Usernameless: the credential names its account through its user handle.
    Discoverable(DiscoverableAuthentication),
    /// Username-first (or step-up): only the account's credentials are allowed.
    ForAccount(PasskeyAuthentication),
    /// A username that does not exist: options look real, nothing can verify.
    Decoy,
}

#[derive(Serialize, Deserialize)]
struct RecoveryProofState {
    purpose: RecoveryPurpose,
    challenge: Vec<u8>,
}

/// The session a request was made with, and its account.
#[derive(Debug, Clone)]

pub struct Authed {
    pub session: Session,
    pub account: Account,
}

impl Authed {
    fn require_full(&self) -> Result<()> {
        if self.session.scope != SessionScope::Full {
            return Err(ServerError::RecoveryInProgress(
                "a recovery session can only enrol a new key and recovery key once its window ends",
            ));
        }
        Ok(())
    }

    /// May this session enrol (a new authenticator or recovery key) without step-up? Only a
    /// recovery session whose window has ended.
    fn is_enrolling(&self) -> bool {
        self.session.scope == SessionScope::Recovery
            && self.account.state == AccountState::RecoveryEnrolment
    }
}

/// Where a failed assertion came from, for the log and the rate limiter.
struct AssertionFailure {
    account_id: Option<Uuid>,
    authenticator: Option<Authenticator>,
    reason: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Input hygiene

fn clean_text(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

pub fn normalize_username(raw: &str) -> Result<String> {
    let name = raw.trim().to_lowercase();
    let ok_chars = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    if name.is_empty() || name.chars().count() > 64 || !ok_chars {
        return Err(ServerError::InvalidInput(
            "a username is 1 to 64 letters, digits or . _ - @ +".into(),
        ));
    }
    Ok(name)
}

fn clean_nickname(raw: &str) -> Result<String> {
    let n = clean_text(raw, 64);
    if n.is_empty() {
        return Err(ServerError::InvalidInput(
            "a key's nickname cannot be empty".into(),
        ));
    }
    Ok(n)
}

fn clean_client(c: &ClientInfo, user_agent: &str) -> ClientInfo {
    let name = clean_text(&c.name, 100);
    let name = if name.is_empty() {
        let ua = clean_text(user_agent, 100);
        if ua.is_empty() {
            "Unknown client".to_string()
        } else {
            ua
        }
    } else {
        name
    };
    ClientInfo {
        name,
        platform: clean_text(&c.platform, 50),
    }
}

/// A taken ceremony's server-side state. It was written by this server, so a failure to read
/// it back is internal.
fn ceremony_state<T: serde::de::DeserializeOwned>(c: &Ceremony) -> Result<T> {
    serde_json::from_str(&c.state)
        .map_err(|e| ServerError::Internal(format!("ceremony state: {e}")))
}

fn credential_of(passkey: &Passkey) -> Credential {
    Credential::from(passkey.clone())
}

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

// ---------------------------------------------------------------------------------------------
// Views

pub fn authenticator_view(a: &Authenticator) -> AuthenticatorView {
    AuthenticatorView {
        id: a.id,
        credential_id: keyward_core::secret::b64(&a.credential_id),
        nickname: a.nickname.clone(),
        aaguid: a.aaguid,
        model: a
            .aaguid
            .as_ref()
            .and_then(keyward_core::aaguid::model_name)
            .map(str::to_string),
        transports: a.transports.clone(),
        backup_eligible: a.backup_eligible,
        backup_state: a.backup_state,
        created_at: a.created_at,
        last_used_at: a.last_used_at,
        sign_count: a.sign_count,
        status: a.status,
    }
}

fn device_view(d: &Device, place: Option<String>) -> DeviceView {
    DeviceView {
        id: d.id,
        name: d.name.clone(),
        platform: d.platform.clone(),
        first_seen_at: d.first_seen_at,
        last_seen_at: d.last_seen_at,
        address: d.address.clone(),
        place,
    }
}

fn account_view(a: &Account) -> AccountView {
    AccountView {
        id: a.id,
        username: a.username.clone(),
        display_name: a.display_name.clone(),
        created_at: a.created_at,
        state: a.state,
        recovery: a.recovery.as_ref().map(window_view),
    }
}

fn window_view(r: &PendingRecovery) -> RecoveryWindow {
    RecoveryWindow {
        started_at: r.started_at,
        ends_at: r.ends_at,
        device_name: r.device_name.clone(),
        address: r.address.clone(),
    }
}

impl Inner {
    fn now(&self) -> Millis {
        self.clock.now()
    }

    /// A transaction whose closure returns `Ok(Err(e))` for failures that must still commit
    /// (the consumed challenge, the failure's event); the caller gets `Err(e)` afterwards.
    fn write_recorded<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<Result<T>>) -> Result<T> {
        self.store.write::<Result<T>, ServerError>(f)?
    }

    fn session_view(&self, tx: &Tx<'_>, s: &Session, current: Option<Uuid>) -> Result<SessionView> {
        let device = tx
            .device(s.device_id)?
            .ok_or_else(|| ServerError::Internal("session without device".into()))?;
        Ok(SessionView {
            id: s.id,
            device: device_view(&device, self.places.lookup(&device.address)),
            scope: s.scope,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            idle_expires_at: s.idle_expires_at(self.policy.session_idle_ms),
            expires_at: s.expires_at,
            verified_at: s.verified_at,
            opened_by: s.opened_by,
            address: s.address.clone(),
            current: Some(s.id) == current,
        })
    }

    fn check_begin_rate(&self, address: &str) -> Result<()> {
        let now = self.now();
        if let Some(ms) = self.limiter.hit(
            &format!("begin:{address}"),
            self.limits.begins_per_address,
            now,
        ) {
            return Err(ServerError::RateLimited {
                retry_after_secs: (ms / 1000 + 1) as u64,
            });
        }
        Ok(())
    }

    fn new_ceremony(
        &self,
        tx: &Tx<'_>,
        kind: &str,
        account_id: Option<Uuid>,
        session_id: Option<Uuid>,
        state: &impl Serialize,
    ) -> Result<Ceremony> {
        let now = self.now();
        let c = Ceremony {
            id: Uuid::new_v4(),
            kind: kind.to_string(),
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

    fn event(
        &self,
        tx: &mut Tx<'_>,
        account_id: Uuid,
        kind: EventKind,
        actor: Option<(&Session, &str)>,
        detail: EventDetail,
    ) -> Result<SecurityEvent> {
        let mut e = NewEvent::new(account_id, kind);
        if let Some((session, device_name)) = actor {
            e.session_id = Some(session.id);
            e.device_id = Some(session.device_id);
            e.device_name = Some(device_name.to_string());
            e.address = Some(session.address.clone());
        }
        e.detail = detail;
        Ok(tx.append_event(e, self.now())?)
    }

    fn device_name(&self, tx: &Tx<'_>, s: &Session) -> Result<String> {
        Ok(tx.device(s.device_id)?.map(|d| d.name).unwrap_or_default())
    }

    // -----------------------------------------------------------------------------------------
    // Sessions

    /// Checks a bearer token: unknown, ended or expired tokens are refused; a valid one counts
    /// as activity. Also lets a due recovery window take effect first.
    pub fn authenticate(&self, token: &str) -> Result<Authed> {
        let hash = hash_secret(token);
        let now = self.now();
        let idle = self.policy.session_idle_ms;
        // Most checks change nothing: a live session seen moments ago, on an account with no
        // recovery to settle. Those are answered from a read transaction, with no commit and
        // no fsync. Anything else (an unknown, ended or expiring session, a due recovery
        // window, activity to record) takes the write path below.
        let quick = self.store.read::<_, ServerError>(|tx| {
            let Some(session) = tx.session_by_token_hash(&hash)? else {
                return Ok(Some(Err(ServerError::Unauthenticated)));
            };
            if session.ended_at.is_some() {
                return Ok(Some(Err(ServerError::Unauthenticated)));
            }
            if !session.is_live(now, idle)
                || session.scope != SessionScope::Full
                || now - session.last_seen_at >= ACTIVITY_GRANULARITY_MS
            {
                return Ok(None);
            }
            match tx.account(session.account_id)? {
                Some(account) if account.state == AccountState::Active => {
                    Ok(Some(Ok(Authed { session, account })))
                }
                _ => Ok(None),
            }
        })?;
        if let Some(answer) = quick {
            return answer;
        }
        self.write_recorded(|tx| {
            let Some(session) = tx.session_by_token_hash(&hash)? else {
                return Ok(Err(ServerError::Unauthenticated));
            };
            let account = tx
                .account(session.account_id)?
                .ok_or_else(|| ServerError::Internal("session without account".into()))?;
            let account = self.settle_recovery(tx, account)?;
            // Settling may have ended this very session.
            let Some(session) = tx.session(session.id)? else {
                return Ok(Err(ServerError::Unauthenticated));
            };
            if session.ended_at.is_some() {
                return Ok(Err(ServerError::Unauthenticated));
            }
            if !session.is_live(now, idle) {
                let reason = if now >= session.expires_at {
                    "lifetime"
                } else {
                    "idle_timeout"
                };
                tx.end_session(session.id, reason, now)?;
                return Ok(Err(ServerError::SessionExpired));
            }
            if session.scope == SessionScope::Recovery && now < session.active_from {
                // Usable to watch the window, not yet to act; don't count as activity.
                return Ok(Ok(Authed { session, account }));
            }
            tx.touch_session(session.id, now)?;
            let session = Session {
                last_seen_at: now,
                ..session
            };
            Ok(Ok(Authed { session, account }))
        })
    }

    fn require_fresh(&self, authed: &Authed) -> Result<()> {
        authed.require_full()?;
        if self.now() - authed.session.verified_at > self.policy.step_up_ms {
            return Err(ServerError::StepUpRequired);
        }
        Ok(())
    }

    /// Creates device (or recognises it by its secret) and session; returns the new secrets.
    #[allow(clippy::too_many_arguments)]
    fn open_session(
        &self,
        tx: &mut Tx<'_>,
        account: &Account,
        opened_by: Option<Uuid>,
        client: &ClientInfo,
        device_secret: Option<&str>,
        address: &str,
        scope: SessionScope,
        active_from: Millis,
    ) -> Result<(String, String, Session, Device, bool)> {
        let now = self.now();
        let new_device_secret = new_secret();
        let known = match device_secret {
            Some(s) => tx.device_by_secret(account.id, &hash_secret(s))?,
            None => None,
        };
        // A known device turning up in a new place is treated as new: that is worth an alert.
        let is_known = known
            .as_ref()
            .is_some_and(|d| self.places.lookup(&d.address) == self.places.lookup(address));
        let device = match known {
            Some(d) => {
                let d = Device {
                    name: client.name.clone(),
                    platform: client.platform.clone(),
                    last_seen_at: now,
                    address: address.to_string(),
                    ..d
                };
                tx.refresh_device(&d, &hash_secret(&new_device_secret))?;
                d
            }
            None => {
                let d = Device {
                    id: Uuid::new_v4(),
                    account_id: account.id,
                    name: client.name.clone(),
                    platform: client.platform.clone(),
                    first_seen_at: now,
                    last_seen_at: now,
                    address: address.to_string(),
                };
                tx.insert_device(&d, &hash_secret(&new_device_secret))?;
                d
            }
        };
        let token = new_secret();
        let session = Session {
            id: Uuid::new_v4(),
            account_id: account.id,
            device_id: device.id,
            scope,
            created_at: now,
            last_seen_at: now,
            verified_at: now,
            expires_at: active_from + self.policy.session_absolute_ms,
            opened_by,
            address: address.to_string(),
            ended_at: None,
            ended_reason: None,
            active_from,
        };
        tx.insert_session(&session, &hash_secret(&token))?;
        Ok((token, new_device_secret, session, device, is_known))
    }

    fn end_sessions(
        &self,
        tx: &mut Tx<'_>,
        account_id: Uuid,
        sessions: &[Session],
        reason: &str,
        actor: Option<(&Session, &str)>,
    ) -> Result<Vec<Uuid>> {
        let now = self.now();
        let mut ended = Vec::new();
        for s in sessions {
            if tx.end_session(s.id, reason, now)? {
                ended.push(s.id);
                let detail = EventDetail {
                    ended_session_id: Some(s.id),
                    reason: Some(reason.to_string()),
                    ..EventDetail::default()
                };
                self.event(tx, account_id, EventKind::SessionEnded, actor, detail)?;
            }
        }
        Ok(ended)
    }

    fn live_sessions(&self, tx: &Tx<'_>, account_id: Uuid) -> Result<Vec<Session>> {
        Ok(tx.live_sessions(account_id, self.now(), self.policy.session_idle_ms)?)
    }

    pub fn list_sessions(&self, authed: &Authed) -> Result<Vec<SessionView>> {
        self.store.read(|tx| {
            self.live_sessions(tx, authed.account.id)?
                .iter()
                .map(|s| self.session_view(tx, s, Some(authed.session.id)))
                .collect()
        })
    }

    /// Ends one session. Ending your own is signing out; ending another needs a fresh touch.
    pub fn end_session(&self, authed: &Authed, id: Uuid) -> Result<EndedSessions> {
        if id != authed.session.id {
            self.require_fresh(authed)?;
        }
        self.store.write(|tx| {
            let target = self
                .live_sessions(tx, authed.account.id)?
                .into_iter()
                .find(|s| s.id == id)
                .ok_or(ServerError::NotFound("session"))?;
            let name = self.device_name(tx, &authed.session)?;
            let reason = if id == authed.session.id {
                "sign_out"
            } else {
                "user"
            };
            let ended = self.end_sessions(
                tx,
                authed.account.id,
                &[target],
                reason,
                Some((&authed.session, &name)),
            )?;
            Ok(EndedSessions { ended })
        })
    }

    pub fn end_other_sessions(&self, authed: &Authed) -> Result<EndedSessions> {
        self.require_fresh(authed)?;
        self.store.write(|tx| {
            let others: Vec<Session> = self
                .live_sessions(tx, authed.account.id)?
                .into_iter()
                .filter(|s| s.id != authed.session.id)
                .collect();
            let name = self.device_name(tx, &authed.session)?;
            let ended = self.end_sessions(
                tx,
                authed.account.id,
                &others,
                "user",
                Some((&authed.session, &name)),
            )?;
            Ok(EndedSessions { ended })
        })
    }

    // -----------------------------------------------------------------------------------------
    // Registration: creating an account *is* registering its first authenticator.

    fn start_registration(
        &self,
        user_id: Uuid,
        username: &str,
        display_name: &str,
        exclude: Option<Vec<webauthn_rs::prelude::CredentialID>>,
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
        self.check_begin_rate(address)?;
        let username = normalize_username(&req.username)?;
        let display_name = match req.display_name.as_deref().map(|d| clean_text(d, 100)) {
            Some(d) if !d.is_empty() => d,
            _ => username.clone(),
        };
        self.store.write_unsynced(|tx| {
            if tx.username_exists(&username)? {
                return Err(ServerError::UsernameUnavailable);
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
            let c = self.new_ceremony(tx, kind::REGISTER, None, None, &state)?;
            Ok(RegistrationBegin {
                ceremony_id: c.id,
                options,
            })
        })
    }

    /// Verifies a new credential against policy and turns it into a row for `account_id`.
    fn admit_credential(
        &self,
        reg: &RegisterPublicKeyCredential,
        state: &RegistrationState,
        account_id: Uuid,
        nickname: Option<&str>,
    ) -> Result<Authenticator> {
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
        let cred = credential_of(&passkey);
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
        self.write_recorded(|tx| {
            let Some(c) = tx.take_ceremony(req.ceremony_id, kind::REGISTER, now)? else {
                return Ok(Err(ServerError::CeremonyExpired));
            };
            let state: RegisterState = ceremony_state(&c)?;
            let authenticator = match self.admit_credential(
                &req.credential,
                &state.registration,
                state.user_id,
                req.nickname.as_deref(),
            ) {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let account = Account {
                id: state.user_id,
                username: state.username,
                display_name: state.display_name,
                created_at: now,
                state: AccountState::Active,
                recovery: None,
            };
            match tx.insert_account(&account) {
                Err(keyward_core::CoreError::UsernameTaken) => {
                    return Ok(Err(ServerError::UsernameUnavailable));
                }
                other => other?,
            }
            if let Err(e) = tx.insert_authenticator(&authenticator) {
                return Err(e.into()); // rolls back the account too
            }
            let (token, device_secret, session, device, _) = self.open_session(
                tx,
                &account,
                Some(authenticator.id),
                &client,
                None,
                address,
                SessionScope::Full,
                now,
            )?;
            let detail = EventDetail {
                authenticator_id: Some(authenticator.id),
                authenticator_name: Some(authenticator.nickname.clone()),
                ..EventDetail::default()
            };
            self.event(
                tx,
                account.id,
                EventKind::AccountCreated,
                Some((&session, &device.name)),
                detail,
            )?;
            let session = self.session_view(tx, &session, Some(session.id))?;
            Ok(Ok(SignedIn {
                token,
                device_secret,
                session,
                account: account_view(&account),
            }))
        })
    }

    // -----------------------------------------------------------------------------------------
    // Assertions: sign-in, step-up, cancelling a recovery

    /// Options for an assertion. Unknown usernames get decoy options of the same shape.
    fn assertion_begin(
        &self,
        tx: &Tx<'_>,
        kind: &str,
        username: Option<&str>,
        session_id: Option<Uuid>,
    ) -> Result<AssertionBegin> {
        let (mut options, state, account_id) = match username {
            None => {
                let (mut options, state) = self
                    .webauthn
                    .start_discoverable_authentication()
                    .map_err(|e| ServerError::Internal(format!("start authentication: {e}")))?;
                // A modal sign-in, not browser autofill: clients show their own prompt.
                options.mediation = None;
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
        options.mediation = None;
        let c = self.new_ceremony(tx, kind, account_id, session_id, &state)?;
        Ok(AssertionBegin {
            ceremony_id: c.id,
            options,
        })
    }

    /// Looks like a real account's options: same fields, stable credential IDs per username.
    fn decoy_options(&self, username: &str) -> Result<RequestChallengeResponse> {
        let ids = self.decoys.for_username(username);
        let (mut options, _) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| ServerError::Internal(format!("start authentication: {e}")))?;
        options.mediation = None;
        options.public_key.extensions = None;
        options.public_key.allow_credentials = ids
            .into_iter()
            .map(|id| AllowCredentials {
                type_: "public-key".into(),
                id: id.to_vec(),
                transports: None,
            })
            .collect();
        Ok(options)
    }

    /// Verifies an assertion for a taken ceremony; on success the authenticator's counter,
    /// flags and last use are updated in the same transaction.
    /// The signature and client-data check (webauthn-rs). A decoy ceremony never verifies.
    fn check_signature(
        &self,
        state: AssertionState,
        credential: &PublicKeyCredential,
        passkey: &Passkey,
    ) -> std::result::Result<webauthn_rs::prelude::AuthenticationResult, WebauthnError> {
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
    fn present<'a>(&self, ceremony_id: Uuid, credential: &'a PublicKeyCredential) -> Presented<'a> {
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
        let state: AssertionState = ceremony_state(&ceremony).ok()?;
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
            outcome,
        })
    }

    fn verify_assertion(
        &self,
        tx: &mut Tx<'_>,
        ceremony: &Ceremony,
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
        let state: AssertionState = ceremony_state(ceremony)?;
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
        let mut passkey: Passkey = serde_json::from_str(&authenticator.credential)
            .map_err(|e| ServerError::Internal(format!("stored credential: {e}")))?;
        if matches!(state, AssertionState::Discoverable(_))
            && credential.get_user_unique_id().is_none()
        {
            return fail(Some(owner), Some(authenticator), "no user handle");
        }
        // The check is a pure function of the ceremony state, the assertion and the stored
        // credential; a result computed before the lock on exactly these inputs is the result.
        let verified = match pre.filter(|p| {
            p.ceremony_state == ceremony.state && p.stored_credential == authenticator.credential
        }) {
            Some(p) => p.outcome,
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
            self.event(tx, owner, EventKind::ClonedKeyWarning, None, detail)
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

    /// Logs a failed assertion against its account and counts it for the rate limiter.
    fn record_failure(&self, tx: &mut Tx<'_>, f: &AssertionFailure, address: &str) -> Result<()> {
        let now = self.now();
        self.limiter.record(
            &format!("fail:{address}"),
            self.limits.failures_per_address,
            now,
        );
        if let Some(account_id) = f.account_id {
            self.limiter.record(
                &format!("fail:{account_id}:{address}"),
                self.limits.failures_per_account_address,
                now,
            );
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
        Ok(())
    }

    fn check_failure_rate(&self, address: &str, account_id: Option<Uuid>) -> Result<()> {
        let now = self.now();
        let blocked = self
            .limiter
            .blocked(
                &format!("fail:{address}"),
                self.limits.failures_per_address,
                now,
            )
            .or_else(|| {
                account_id.and_then(|a| {
                    self.limiter.blocked(
                        &format!("fail:{a}:{address}"),
                        self.limits.failures_per_account_address,
                        now,
                    )
                })
            });
        match blocked {
            Some(ms) => Err(ServerError::RateLimited {
                retry_after_secs: (ms / 1000 + 1) as u64,
            }),
            None => Ok(()),
        }
    }

    /// Takes the ceremony (gone whatever happens next) and verifies the assertion against it.
    /// Refusals are recorded (event, rate limiter) and come back as the inner error, for the
    /// caller's transaction to commit. `session`: the ceremony must belong to this session.
    fn take_and_verify(
        &self,
        tx: &mut Tx<'_>,
        kind: &str,
        presented: Presented<'_>,
        address: &str,
        session: Option<Uuid>,
    ) -> Result<Result<Authenticator>> {
        let Presented {
            ceremony_id,
            credential,
            pre,
        } = presented;
        let Some(c) = tx.take_ceremony(ceremony_id, kind, self.now())? else {
            return Ok(Err(ServerError::CeremonyExpired));
        };
        if session.is_some() && c.session_id != session {
            return Ok(Err(ServerError::CeremonyExpired));
        }
        // The pair (account, address) may be blocked even where the address is not.
        let claimed = match c.account_id {
            Some(a) => Some(a),
            None => tx
                .authenticator_by_credential_id(credential.get_credential_id())?
                .map(|a| a.account_id),
        };
        if let Err(e) = self.check_failure_rate(address, claimed) {
            return Ok(Err(e));
        }
        match self.verify_assertion(tx, &c, credential, pre)? {
            Ok(a) => Ok(Ok(a)),
            Err(f) => {
                self.record_failure(tx, &f, address)?;
                Ok(Err(ServerError::AuthenticationFailed))
            }
        }
    }

    /// `take_and_verify` for a sign-in-like ceremony, then the credential's owner, with any
    /// recovery window that has run out settled first.
    fn verified_owner(
        &self,
        tx: &mut Tx<'_>,
        kind: &str,
        presented: Presented<'_>,
        address: &str,
    ) -> Result<Result<(Authenticator, Account)>> {
        let authenticator = match self.take_and_verify(tx, kind, presented, address, None)? {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let account = tx
            .account(authenticator.account_id)?
            .ok_or_else(|| ServerError::Internal("authenticator without account".into()))?;
        let account = self.settle_recovery(tx, account)?;
        Ok(Ok((authenticator, account)))
    }

    pub fn sign_in_begin(&self, req: SignInBeginRequest, address: &str) -> Result<AssertionBegin> {
        self.check_begin_rate(address)?;
        let username = req
            .username
            .as_deref()
            .map(normalize_username)
            .transpose()?;
        self.store
            .write_unsynced(|tx| self.assertion_begin(tx, kind::SIGN_IN, username.as_deref(), None))
    }

    pub fn sign_in_finish(
        &self,
        req: SignInFinishRequest,
        address: &str,
        user_agent: &str,
    ) -> Result<SignedIn> {
        let client = clean_client(&req.client, user_agent);
        let now = self.now();
        self.check_failure_rate(address, None)?;
        let presented = self.present(req.ceremony_id, &req.credential);
        self.write_recorded(|tx| {
            let (authenticator, mut account) =
                match self.verified_owner(tx, kind::SIGN_IN, presented, address)? {
                    Ok(found) => found,
                    Err(e) => return Ok(Err(e)),
                };
            let (token, device_secret, session, device, known) = self.open_session(
                tx,
                &account,
                Some(authenticator.id),
                &client,
                req.device_secret.as_deref(),
                address,
                SessionScope::Full,
                now,
            )?;
            let detail = EventDetail {
                authenticator_id: Some(authenticator.id),
                authenticator_name: Some(authenticator.nickname.clone()),
                known_device: Some(known),
                place: self.places.lookup(address),
                ..EventDetail::default()
            };
            self.event(
                tx,
                account.id,
                EventKind::SignIn,
                Some((&session, &device.name)),
                detail,
            )?;
            if account.state == AccountState::RecoveryEnrolment {
                // The window ended but the owner still holds a key: recovery is moot.
                account = self.cancel_recovery(
                    tx,
                    account,
                    &session,
                    &device.name,
                    "owner signed in with a key",
                )?;
            }
            self.limiter
                .clear(&format!("fail:{}:{address}", account.id));
            let session = self.session_view(tx, &session, Some(session.id))?;
            Ok(Ok(SignedIn {
                token,
                device_secret,
                session,
                account: account_view(&account),
            }))
        })
    }

    pub fn step_up_begin(&self, authed: &Authed) -> Result<AssertionBegin> {
        authed.require_full()?;
        self.store.write_unsynced(|tx| {
            self.assertion_begin(
                tx,
                kind::STEP_UP,
                Some(&authed.account.username),
                Some(authed.session.id),
            )
        })
    }

    pub fn step_up_finish(
        &self,
        authed: &Authed,
        req: AssertionFinishRequest,
        address: &str,
    ) -> Result<SessionView> {
        let now = self.now();
        let presented = self.present(req.ceremony_id, &req.credential);
        self.write_recorded(|tx| {
            if let Err(e) = self.take_and_verify(
                tx,
                kind::STEP_UP,
                presented,
                address,
                Some(authed.session.id),
            )? {
                return Ok(Err(e));
            }
            tx.mark_session_verified(authed.session.id, now)?;
            let session = tx
                .session(authed.session.id)?
                .ok_or(ServerError::Unauthenticated)?;
            Ok(Ok(self.session_view(tx, &session, Some(session.id))?))
        })
    }

    // -----------------------------------------------------------------------------------------
    // Account, authenticators, readiness

    pub fn account(&self, authed: &Authed) -> AccountView {
        account_view(&authed.account)
    }

    pub fn readiness(&self, authed: &Authed) -> Result<Readiness> {
        self.store.read(|tx| {
            let keys = tx.authenticators(authed.account.id)?;
            let rk = tx.recovery_key(authed.account.id)?;
            Ok(readiness::assess(
                &keys,
                rk.as_ref(),
                self.now(),
                &self.policy,
            ))
        })
    }

    pub fn list_authenticators(&self, authed: &Authed) -> Result<Vec<AuthenticatorView>> {
        self.store.read(|tx| {
            Ok(tx
                .authenticators(authed.account.id)?
                .iter()
                .map(authenticator_view)
                .collect())
        })
    }

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
                kind::ADD_AUTHENTICATOR,
                Some(authed.account.id),
                Some(authed.session.id),
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
        self.write_recorded(|tx| {
            let Some(c) = tx.take_ceremony(req.ceremony_id, kind::ADD_AUTHENTICATOR, now)? else {
                return Ok(Err(ServerError::CeremonyExpired));
            };
            if c.session_id != Some(authed.session.id) {
                return Ok(Err(ServerError::CeremonyExpired));
            }
            let registration: RegistrationState = ceremony_state(&c)?;
            let authenticator = match self.admit_credential(
                &req.credential,
                &registration,
                authed.account.id,
                req.nickname.as_deref(),
            ) {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            match tx.insert_authenticator(&authenticator) {
                Err(keyward_core::CoreError::CredentialInUse) => {
                    return Ok(Err(ServerError::RegistrationFailed(
                        "that key is already registered",
                    )));
                }
                other => other?,
            }
            let name = self.device_name(tx, &authed.session)?;
            let detail = EventDetail {
                authenticator_id: Some(authenticator.id),
                authenticator_name: Some(authenticator.nickname.clone()),
                ..EventDetail::default()
            };
            self.event(
                tx,
                authed.account.id,
                EventKind::AuthenticatorAdded,
                Some((&authed.session, &name)),
                detail,
            )?;
            self.finish_enrolment_if_complete(tx, authed)?;
            Ok(Ok(authenticator_view(&authenticator)))
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
        self.store.write(|tx| {
            let a = self.owned_authenticator(tx, authed, id)?;
            tx.rename_authenticator(id, &nickname)?;
            let name = self.device_name(tx, &authed.session)?;
            let detail = EventDetail {
                authenticator_id: Some(id),
                authenticator_name: Some(nickname.clone()),
                reason: Some(format!("renamed from \"{}\"", a.nickname)),
                ..EventDetail::default()
            };
            self.event(
                tx,
                authed.account.id,
                EventKind::AuthenticatorRenamed,
                Some((&authed.session, &name)),
                detail,
            )?;
            Ok(authenticator_view(&Authenticator { nickname, ..a }))
        })
    }

    fn removal_refusal(
        &self,
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
                refused: self.removal_refusal(&keys, &target).map(|e| e.to_wire()),
            })
        })
    }

    /// Removes a key (never the last usable one) and ends the sessions it opened.
    pub fn remove_authenticator(&self, authed: &Authed, id: Uuid) -> Result<EndedSessions> {
        self.require_fresh(authed)?;
        self.store.write(|tx| {
            let target = self.owned_authenticator(tx, authed, id)?;
            if let Some(e) = self.removal_refusal(&tx.authenticators(authed.account.id)?, &target) {
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

    /// Disables a key at once and ends its sessions, in one step.
    pub fn report_lost(&self, authed: &Authed, id: Uuid) -> Result<EndedSessions> {
        self.require_fresh(authed)?;
        self.store.write(|tx| {
            let target = self.owned_authenticator(tx, authed, id)?;
            if target.status == AuthenticatorStatus::Lost {
                return Err(ServerError::Conflict("that key is already reported lost"));
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

    fn retire_authenticator(
        &self,
        tx: &mut Tx<'_>,
        authed: &Authed,
        target: &Authenticator,
        kind: EventKind,
        reason: &str,
    ) -> Result<EndedSessions> {
        let name = self.device_name(tx, &authed.session)?;
        let detail = EventDetail {
            authenticator_id: Some(target.id),
            authenticator_name: Some(target.nickname.clone()),
            ..EventDetail::default()
        };
        self.event(
            tx,
            authed.account.id,
            kind,
            Some((&authed.session, &name)),
            detail,
        )?;
        let opened: Vec<Session> = self
            .live_sessions(tx, authed.account.id)?
            .into_iter()
            .filter(|s| s.opened_by == Some(target.id))
            .collect();
        let ended = self.end_sessions(
            tx,
            authed.account.id,
            &opened,
            reason,
            Some((&authed.session, &name)),
        )?;
        Ok(EndedSessions { ended })
    }

    // -----------------------------------------------------------------------------------------
    // Recovery key: set, confirm, drill

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
            let name = self.device_name(tx, &authed.session)?;
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
            self.event(
                tx,
                authed.account.id,
                EventKind::RecoveryKeyGenerated,
                Some((&authed.session, &name)),
                detail,
            )?;
            self.finish_enrolment_if_complete(tx, authed)?;
            let rk = tx.recovery_key(authed.account.id)?;
            Ok(readiness::recovery_key_status(
                rk.as_ref(),
                self.now(),
                &self.policy,
            ))
        })
    }

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
                kind::RECOVERY_PROOF,
                Some(authed.account.id),
                Some(authed.session.id),
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
        self.write_recorded(|tx| {
            let Some(c) = tx.take_ceremony(req.challenge_id, kind::RECOVERY_PROOF, now)? else {
                return Ok(Err(ServerError::CeremonyExpired));
            };
            if c.session_id != Some(authed.session.id) {
                return Ok(Err(ServerError::CeremonyExpired));
            }
            let state: RecoveryProofState = ceremony_state(&c)?;
            let Some(rk) = tx.recovery_key(authed.account.id)? else {
                return Ok(Err(ServerError::NotFound("recovery key")));
            };
            let signature = unb64(&req.signature).unwrap_or_default();
            if !recovery_key::verify_proof(
                &rk.public_key,
                state.purpose,
                &self.rp_id,
                &state.challenge,
                &signature,
            ) {
                return Ok(Err(ServerError::RecoveryFailed));
            }
            let confirm = state.purpose == RecoveryPurpose::Confirm;
            tx.mark_recovery_key_verified(authed.account.id, confirm, now)?;
            let kind = if confirm {
                EventKind::RecoveryKeyConfirmed
            } else {
                EventKind::RecoveryKeyVerified
            };
            let name = self.device_name(tx, &authed.session)?;
            self.event(
                tx,
                authed.account.id,
                kind,
                Some((&authed.session, &name)),
                EventDetail::default(),
            )?;
            let rk = tx.recovery_key(authed.account.id)?;
            Ok(Ok(readiness::recovery_key_status(
                rk.as_ref(),
                now,
                &self.policy,
            )))
        })
    }

    // -----------------------------------------------------------------------------------------
    // Recovery: redeem, window, cancel, enrolment

    pub fn redeem_begin(
        &self,
        req: RedeemBeginRequest,
        address: &str,
    ) -> Result<RecoveryChallenge> {
        self.check_begin_rate(address)?;
        let username = normalize_username(&req.username)?;
        self.store.write(|tx| {
            // Unknown users and users without a key get the same answer: nothing to enumerate.
            let account_id = match tx.account_by_username(&username)? {
                Some(a) if tx.recovery_key(a.id)?.is_some() => Some(a.id),
                _ => None,
            };
            let state = RecoveryProofState {
                purpose: RecoveryPurpose::Redeem,
                challenge: random_bytes::<32>().to_vec(),
            };
            let c = self.new_ceremony(tx, kind::RECOVERY_REDEEM, account_id, None, &state)?;
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
        let addr_key = format!("recovery:{address}");
        if let Some(ms) =
            self.limiter
                .blocked(&addr_key, self.limits.recovery_failures_per_address, now)
        {
            return Err(ServerError::RateLimited {
                retry_after_secs: (ms / 1000 + 1) as u64,
            });
        }
        self.write_recorded(|tx| {
            let Some(c) = tx.take_ceremony(req.challenge_id, kind::RECOVERY_REDEEM, now)? else {
                return Ok(Err(ServerError::CeremonyExpired));
            };
            let fail = |tx: &mut Tx<'_>, account_id: Option<Uuid>| -> Result<()> {
                self.limiter
                    .record(&addr_key, self.limits.recovery_failures_per_address, now);
                if let Some(id) = account_id {
                    self.limiter.record(
                        &format!("recovery:{id}"),
                        self.limits.recovery_failures_per_account,
                        now,
                    );
                    let mut e = NewEvent::new(id, EventKind::SignInFailed);
                    e.address = Some(address.to_string());
                    e.device_name = Some(client.name.clone());
                    e.detail.reason = Some("wrong recovery key".into());
                    tx.append_event(e, now)?;
                }
                Ok(())
            };
            let Some(account_id) = c.account_id else {
                fail(tx, None)?;
                return Ok(Err(ServerError::RecoveryFailed));
            };
            if let Some(ms) = self.limiter.blocked(
                &format!("recovery:{account_id}"),
                self.limits.recovery_failures_per_account,
                now,
            ) {
                return Ok(Err(ServerError::RateLimited {
                    retry_after_secs: (ms / 1000 + 1) as u64,
                }));
            }
            let state: RecoveryProofState = ceremony_state(&c)?;
            let Some(rk) = tx.recovery_key(account_id)? else {
                fail(tx, Some(account_id))?;
                return Ok(Err(ServerError::RecoveryFailed));
            };
            let signature = unb64(&req.signature).unwrap_or_default();
            if !recovery_key::verify_proof(
                &rk.public_key,
                RecoveryPurpose::Redeem,
                &self.rp_id,
                &state.challenge,
                &signature,
            ) {
                fail(tx, Some(account_id))?;
                return Ok(Err(ServerError::RecoveryFailed));
            }
            let account = tx.account(account_id)?.ok_or(ServerError::RecoveryFailed)?;
            let account = self.settle_recovery(tx, account)?;
            if account.state != AccountState::Active {
                return Ok(Err(ServerError::RecoveryInProgress(
                    "a recovery is already under way for this account",
                )));
            }
            // Single use: the key is spent the moment it is redeemed.
            tx.delete_recovery_key(account_id)?;
            let ends_at = now + self.policy.recovery_window_ms;
            let (token, device_secret, session, device, _) = self.open_session(
                tx,
                &account,
                None,
                &client,
                None,
                address,
                SessionScope::Recovery,
                ends_at,
            )?;
            let pending = PendingRecovery {
                started_at: now,
                ends_at,
                device_name: device.name.clone(),
                address: address.to_string(),
                session_id: session.id,
            };
            tx.start_recovery(account_id, &pending)?;
            let detail = EventDetail {
                ends_at: Some(ends_at),
                ..EventDetail::default()
            };
            self.event(
                tx,
                account_id,
                EventKind::RecoveryStarted,
                Some((&session, &device.name)),
                detail,
            )?;
            let account = tx.account(account_id)?.ok_or(ServerError::RecoveryFailed)?;
            let account = self.settle_recovery(tx, account)?;
            Ok(Ok(RecoveryStarted {
                token,
                device_secret,
                window: window_view(&pending),
                account: account_view(&account),
            }))
        })
    }

    /// When a recovery window has run out: end every other session and leave the account able
    /// only to enrol. Runs lazily whenever the account is touched.
    fn settle_recovery(&self, tx: &mut Tx<'_>, account: Account) -> Result<Account> {
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

    fn cancel_recovery(
        &self,
        tx: &mut Tx<'_>,
        account: Account,
        actor: &Session,
        actor_name: &str,
        why: &str,
    ) -> Result<Account> {
        if let Some(pending) = &account.recovery
            && let Some(s) = tx.session(pending.session_id)?
        {
            self.end_sessions(
                tx,
                account.id,
                &[s],
                "recovery_cancelled",
                Some((actor, actor_name)),
            )?;
        }
        tx.set_account_state(account.id, AccountState::Active)?;
        let detail = EventDetail {
            reason: Some(why.to_string()),
            ..EventDetail::default()
        };
        self.event(
            tx,
            account.id,
            EventKind::RecoveryCancelled,
            Some((actor, actor_name)),
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
        self.check_begin_rate(address)?;
        let username = req
            .username
            .as_deref()
            .map(normalize_username)
            .transpose()?;
        self.store.write_unsynced(|tx| {
            self.assertion_begin(tx, kind::RECOVERY_CANCEL, username.as_deref(), None)
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
        self.check_failure_rate(address, None)?;
        let presented = self.present(req.ceremony_id, &req.credential);
        self.write_recorded(|tx| {
            let (authenticator, account) =
                match self.verified_owner(tx, kind::RECOVERY_CANCEL, presented, address)? {
                    Ok(found) => found,
                    Err(e) => return Ok(Err(e)),
                };
            if account.state == AccountState::Active {
                return Ok(Err(ServerError::Conflict("there is no recovery to cancel")));
            }
            // The cancelling key proves itself with a short session of its own, for the record.
            let (_, _, session, device, _) = self.open_session(
                tx,
                &account,
                Some(authenticator.id),
                &client,
                req.device_secret.as_deref(),
                address,
                SessionScope::Full,
                now,
            )?;
            let why = format!("cancelled with \"{}\"", authenticator.nickname);
            let account = self.cancel_recovery(tx, account, &session, &device.name, &why)?;
            tx.end_session(session.id, "sign_out", now)?;
            Ok(Ok(account_view(&account)))
        })
    }

    /// After a completed recovery: once a new key and a new recovery key are enrolled, the
    /// account is active again and the recovery session becomes a full one.
    fn finish_enrolment_if_complete(&self, tx: &mut Tx<'_>, authed: &Authed) -> Result<()> {
        let Some(account) = tx.account(authed.account.id)? else {
            return Ok(());
        };
        let (AccountState::RecoveryEnrolment, Some(pending)) = (account.state, &account.recovery)
        else {
            return Ok(());
        };
        let new_key = tx
            .authenticators(account.id)?
            .into_iter()
            .filter(|a| {
                a.status == AuthenticatorStatus::Active && a.created_at >= pending.started_at
            })
            .max_by_key(|a| a.created_at);
        let has_recovery_key = tx.recovery_key(account.id)?.is_some();
        if let (Some(key), true) = (new_key, has_recovery_key) {
            tx.set_account_state(account.id, AccountState::Active)?;
            tx.upgrade_session_scope(authed.session.id, SessionScope::Full, key.id)?;
            tx.mark_session_verified(authed.session.id, self.now())?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Events

    pub fn events_page(
        &self,
        authed: &Authed,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<EventPage> {
        let limit = limit.unwrap_or(50).clamp(1, 200);
        self.store.read(|tx| {
            let events = tx.events_page(authed.account.id, before, limit)?;
            let next_before = (events.len() as u32 == limit)
                .then(|| events.last().map(|e| e.id))
                .flatten();
            Ok(EventPage {
                events,
                next_before,
            })
        })
    }

    pub fn events_after(
        &self,
        account_id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SecurityEvent>> {
        self.store
            .read(|tx| Ok(tx.events_after(account_id, after, limit)?))
    }

    pub fn latest_event_id(&self, account_id: Uuid) -> Result<i64> {
        self.store.read(|tx| Ok(tx.latest_event_id(account_id)?))
    }

    /// Is this session still usable (for long-lived streams)?
    pub fn session_alive(&self, session_id: Uuid) -> Result<bool> {
        let now = self.now();
        self.store.read(|tx| {
            Ok(tx
                .session(session_id)?
                .is_some_and(|s| s.is_live(now, self.policy.session_idle_ms)))
        })
    }
}
