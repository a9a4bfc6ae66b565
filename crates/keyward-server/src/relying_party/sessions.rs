//! Sessions and devices: checking a token, opening a session after a ceremony, listing and
//! ending sessions.

use keyward_core::secret::{hash_secret, new_secret};
use keyward_core::store::{Account, Device, Session, Tx};
use keyward_proto::{
    AccountState, ClientInfo, DeviceKeyKind, EndedSessions, EventDetail, EventKind, Millis,
    SessionBinding, SessionKeyBinding, SessionScope, SessionView,
};
use uuid::Uuid;

use super::{RelyingParty, Verdict};
use crate::error::{Result, ServerError};

/// How finely a session's last activity is recorded. A check within this long of the last
/// recorded one changes nothing, so it needs no write. The idle timeout can therefore end a
/// session up to this much *earlier* than exact, never later.
const ACTIVITY_GRANULARITY_MS: i64 = 30_000;

/// The session a request was made with, and its account.
#[derive(Debug, Clone)]
pub struct Authed {
    pub session: Session,
    pub account: Account,
    /// The hash of the token the request was made with: a step-up replaces it only if it is
    /// still the session's, and a stream ends once it no longer is.
    pub token_hash: [u8; 32],
}

impl Authed {
    pub(crate) fn require_full(&self) -> Result<()> {
        if self.session.scope != SessionScope::Full {
            return Err(ServerError::RecoveryInProgress(
                "a recovery session can only enrol a new key and recovery key once its window ends",
            ));
        }
        Ok(())
    }

    /// A recovery session sees only its own window and account state, never the account's
    /// sessions, devices, keys or log: a stolen recovery key must not learn what the owner
    /// does, nor watch whether they noticed. It becomes a full session once enrolment is done.
    pub(crate) fn require_not_recovery(&self) -> Result<()> {
        if self.session.scope == SessionScope::Recovery {
            return Err(ServerError::RecoveryInProgress(
                "a recovery session cannot see the account's sessions, keys or log",
            ));
        }
        Ok(())
    }

    /// May this session enrol (a new authenticator or recovery key) without step-up? Only a
    /// recovery session whose window has ended.
    pub(super) fn is_enrolling(&self) -> bool {
        self.session.scope == SessionScope::Recovery
            && self.account.state == AccountState::RecoveryEnrolment
    }
}

/// A request's DPoP proof (RFC 9449), and what it must match: the request's method and the
/// URLs it may have been sent to (see `dpop::ProofCheck::urls`).
#[derive(Debug, Clone)]
pub struct RequestProof {
    pub proof: String,
    pub method: String,
    pub urls: Vec<String>,
}

/// What a new session is bound to: its kind and the key's RFC 7638 thumbprint.
#[derive(Debug, Clone, Default)]
pub(super) struct Binding {
    pub kind: SessionBinding,
    pub jkt: Option<String>,
}

/// Who acted, as the log names them: a session and its device's name at the time.
pub(crate) struct Actor<'a> {
    pub session: &'a Session,
    pub device_name: String,
}

/// A session to open once a ceremony has proven who is there.
pub(super) struct SessionRequest<'a> {
    pub account: &'a Account,
    /// The key whose ceremony opened it (none for a recovery session).
    pub opened_by: Option<Uuid>,
    pub client: &'a ClientInfo,
    /// The secret the device was given last time, if it sent one back.
    pub device_secret: Option<&'a str>,
    pub address: &'a str,
    pub scope: SessionScope,
    /// Usable from then on; its absolute lifetime counts from then too.
    pub active_from: Millis,
    /// An agent's session (a device code approved): its client and own limits.
    pub agent: Option<AgentLimits>,
    pub binding: Binding,
}

/// An agent's session: the client it is for, and its own idle and absolute limits (already
/// bounded by the deployment's policy).
pub(crate) struct AgentLimits {
    pub client_id: String,
    pub idle_ms: i64,
    pub absolute_ms: i64,
}

impl<'a> SessionRequest<'a> {
    /// A full session, usable at once, opened by `key`'s ceremony.
    pub(super) fn by_key(
        account: &'a Account,
        key: Uuid,
        client: &'a ClientInfo,
        device_secret: Option<&'a str>,
        address: &'a str,
        now: Millis,
    ) -> Self {
        SessionRequest {
            account,
            opened_by: Some(key),
            client,
            device_secret,
            address,
            scope: SessionScope::Full,
            active_from: now,
            agent: None,
            binding: Binding::default(),
        }
    }

    /// The same, bound to the key the client sent (see `RelyingParty::binding_of`).
    pub(super) fn bound(self, binding: Binding) -> Self {
        SessionRequest { binding, ..self }
    }
}

/// A session just opened, with the secrets only its client will ever hold.
pub(super) struct OpenedSession {
    pub token: String,
    /// The device's next secret: it proves the device is known at its next sign-in.
    pub device_secret: String,
    pub session: Session,
    pub device: Device,
    /// Seen before, by its secret, in the same place.
    pub known_device: bool,
}

impl OpenedSession {
    pub(super) fn actor(&self) -> Actor<'_> {
        Actor {
            session: &self.session,
            device_name: self.device.name.clone(),
        }
    }
}

/// A bound session takes only a proof by its own key; an unbound one, no proof (a DPoP proof
/// with an unbound token is a client confused about which session it holds).
fn check_binding(session: &Session, proven: Option<&crate::dpop::VerifiedProof>) -> Result<()> {
    match (&session.binding_jkt, proven) {
        // DBSC and the browser's own key prove themselves on refresh, not per request.
        (Some(_), _)
            if matches!(
                session.binding,
                SessionBinding::Browser | SessionBinding::Dbsc
            ) =>
        {
            Ok(())
        }
        (Some(_), None) => Err(ServerError::ProofRequired),
        (Some(jkt), Some(p)) if *jkt == p.jkt => Ok(()),
        (Some(_), Some(_)) => Err(ServerError::ProofInvalid(
            "the proof is signed by another key than the session's".into(),
        )),
        (None, None) => Ok(()),
        (None, Some(_)) => Err(ServerError::ProofInvalid(
            "this session is not bound to a key; send its token as a bearer token".into(),
        )),
    }
}

/// Accepts a proof's `jti` once, on every instance: a second use is a replay.
fn remember(
    tx: &Tx<'_>,
    p: &crate::dpop::VerifiedProof,
    window: &crate::dpop::ProofWindow,
    now: Millis,
) -> Result<()> {
    if tx.remember_proof(&p.jkt, &p.jti, window.remember_until(now))? {
        Ok(())
    } else {
        Err(ServerError::ProofInvalid(
            "this proof was already used (a replay)".into(),
        ))
    }
}

impl RelyingParty {
    /// Checks a session token, with its DPoP proof when the session is bound: unknown, ended
    /// or expired tokens are refused, as is a bound session's token without a valid proof by
    /// its key (once: a replayed proof is refused); a valid one counts as activity. Also lets
    /// a due recovery window take effect first.
    pub fn authenticate(&self, token: &str, proof: Option<&RequestProof>) -> Result<Authed> {
        let hash = hash_secret(token);
        let now = self.now();
        let idle = self.policy.session_idle_ms;
        // The proof's own checks need no database: a bad one is refused before any lookup.
        let proven = proof
            .map(|p| self.verify_request_proof(p, token))
            .transpose()?;
        let proven = proven.as_ref();
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
            if let Err(e) = check_binding(&session, proven) {
                return Ok(Some(Err(e)));
            }
            if !session.is_live(now, idle)
                || session.scope != SessionScope::Full
                || now - session.last_seen_at >= ACTIVITY_GRANULARITY_MS
            {
                return Ok(None);
            }
            match tx.account(session.account_id)? {
                Some(account)
                    if account.state == AccountState::Active && account.disabled.is_none() =>
                {
                    Ok(Some(Ok(Authed {
                        session,
                        account,
                        token_hash: hash,
                    })))
                }
                _ => Ok(None),
            }
        })?;
        if let Some(answer) = quick {
            let authed = answer?;
            if let Some(p) = proven {
                self.store
                    .write(|tx| remember(tx, p, &self.proof_window, now))?;
            }
            return Ok(authed);
        }
        self.write_verdict(|tx| {
            let Some(session) = tx.session_by_token_hash(&hash)? else {
                return Ok(Verdict::Refused(ServerError::Unauthenticated));
            };
            let account = tx
                .account(session.account_id)?
                .ok_or_else(|| ServerError::Internal("session without account".into()))?;
            let account = self.settle_recovery(tx, account)?;
            // Settling may have ended this very session.
            let Some(session) = tx.session(session.id)? else {
                return Ok(Verdict::Refused(ServerError::Unauthenticated));
            };
            if session.ended_at.is_some() {
                return Ok(Verdict::Refused(ServerError::Unauthenticated));
            }
            if let Err(e) = check_binding(&session, proven) {
                return Ok(Verdict::Refused(e));
            }
            if let Some(p) = proven
                && let Err(e) = remember(tx, p, &self.proof_window, now)
            {
                return match e {
                    ServerError::ProofInvalid(_) => Ok(Verdict::Refused(e)),
                    other => Err(other),
                };
            }
            if account.disabled.is_some() {
                // Disabling ends every session in its own transaction; this only closes the
                // door on one opened by a commit that raced it.
                tx.end_session(session.id, "account_disabled", now)?;
                return Ok(Verdict::Refused(ServerError::Unauthenticated));
            }
            if !session.is_live(now, idle) {
                let reason = if now >= session.expires_at {
                    "lifetime"
                } else {
                    "idle_timeout"
                };
                tx.end_session(session.id, reason, now)?;
                return Ok(Verdict::Refused(ServerError::SessionExpired));
            }
            if session.scope == SessionScope::Recovery && now < session.active_from {
                // Usable to watch the window, not yet to act; don't count as activity.
                return Ok(Verdict::Granted(Authed {
                    session,
                    account,
                    token_hash: hash,
                }));
            }
            tx.touch_session(session.id, now)?;
            let session = Session {
                last_seen_at: now,
                ..session
            };
            Ok(Verdict::Granted(Authed {
                session,
                account,
                token_hash: hash,
            }))
        })
    }

    /// A DPoP proof's checks but replay and its key (those need the session and the store).
    fn verify_request_proof(
        &self,
        p: &RequestProof,
        token: &str,
    ) -> Result<crate::dpop::VerifiedProof> {
        let now = self.now();
        let check = crate::dpop::ProofCheck {
            method: &p.method,
            urls: &p.urls,
            access_token: Some(token),
            nonces: Some(&self.nonces),
            now_ms: now,
            window: self.proof_window,
        };
        crate::dpop::verify_proof(&p.proof, &check).map_err(|e| match e {
            crate::dpop::ProofError::Invalid(m) => ServerError::ProofInvalid(m),
            crate::dpop::ProofError::UseNonce(message) => ServerError::ProofNonceRequired {
                message,
                nonce: self.nonces.current(now),
            },
        })
    }

    /// What a finish request's `binding` binds the new session to; refused when the key is
    /// not a public P-256 JWK, or when none is sent and `require_bound_sessions` is on.
    pub(super) fn binding_of(&self, requested: Option<&SessionKeyBinding>) -> Result<Binding> {
        let Some(b) = requested else {
            if self.policy.require_bound_sessions {
                return Err(ServerError::BindingRequired);
            }
            return Ok(Binding::default());
        };
        let jwk = crate::dpop::PublicJwk::from_value(&b.jwk)
            .map_err(|e| ServerError::InvalidInput(format!("binding: {e}")))?;
        Ok(Binding {
            kind: match b.kind {
                DeviceKeyKind::Software => SessionBinding::Software,
                DeviceKeyKind::Hardware => SessionBinding::Hardware,
            },
            jkt: Some(jwk.thumbprint()),
        })
    }

    /// A full session whose last user verification is recent enough for a sensitive change.
    pub(crate) fn require_fresh(&self, authed: &Authed) -> Result<()> {
        authed.require_full()?;
        if self.now() - authed.session.verified_at > self.policy.step_up_ms {
            return Err(ServerError::StepUpRequired);
        }
        Ok(())
    }

    /// Creates the device (or recognises it by its secret) and the session.
    pub(super) fn open_session(
        &self,
        tx: &mut Tx<'_>,
        req: SessionRequest<'_>,
    ) -> Result<OpenedSession> {
        let now = self.now();
        let new_device_secret = new_secret();
        let known = match req.device_secret {
            Some(s) => tx.device_by_secret(req.account.id, &hash_secret(s))?,
            None => None,
        };
        // A known device turning up in a new place is treated as new: that is worth an alert.
        let known_device = known
            .as_ref()
            .is_some_and(|d| self.places.lookup(&d.address) == self.places.lookup(req.address));
        let device = match known {
            Some(d) => {
                let d = Device {
                    name: req.client.name.clone(),
                    platform: req.client.platform.clone(),
                    last_seen_at: now,
                    address: req.address.to_string(),
                    ..d
                };
                tx.refresh_device(&d, &hash_secret(&new_device_secret))?;
                d
            }
            None => {
                let d = Device {
                    id: Uuid::new_v4(),
                    account_id: req.account.id,
                    name: req.client.name.clone(),
                    platform: req.client.platform.clone(),
                    first_seen_at: now,
                    last_seen_at: now,
                    address: req.address.to_string(),
                };
                tx.insert_device(&d, &hash_secret(&new_device_secret))?;
                d
            }
        };
        let token = new_secret();
        let session = Session {
            id: Uuid::new_v4(),
            account_id: req.account.id,
            device_id: device.id,
            scope: req.scope,
            created_at: now,
            last_seen_at: now,
            verified_at: now,
            // A recovery session lives until the enrolment deadline after its window, with no
            // idle timeout (`Session::idle_expires_at`); every other, the absolute lifetime.
            expires_at: req.active_from
                + match (&req.agent, req.scope) {
                    (_, SessionScope::Recovery) => self.policy.recovery_enrolment_ms,
                    (Some(agent), SessionScope::Full) => agent.absolute_ms,
                    (None, SessionScope::Full) => self.policy.session_absolute_ms,
                },
            opened_by: req.opened_by,
            address: req.address.to_string(),
            ended_at: None,
            ended_reason: None,
            active_from: req.active_from,
            idle_ms: req.agent.as_ref().map(|a| a.idle_ms),
            agent_client_id: req.agent.as_ref().map(|a| a.client_id.clone()),
            binding: req.binding.kind,
            binding_jkt: req.binding.jkt,
        };
        tx.insert_session(&session, &hash_secret(&token))?;
        Ok(OpenedSession {
            token,
            device_secret: new_device_secret,
            session,
            device,
            known_device,
        })
    }

    /// An agent's session (a device code approved by `key`'s ceremony): on a device of its
    /// own named for the agent, at the address the agent asked from, with its own limits. No
    /// one holds its bearer token or device secret (both thrown away): it is used only through
    /// the OAuth tokens of its grant.
    pub(crate) fn open_agent_session(
        &self,
        tx: &mut Tx<'_>,
        account: &Account,
        key: Uuid,
        agent_name: &str,
        address: &str,
        limits: AgentLimits,
    ) -> Result<Session> {
        let client = ClientInfo {
            name: agent_name.to_string(),
            platform: "agent".into(),
        };
        let opened = self.open_session(
            tx,
            SessionRequest {
                agent: Some(limits),
                ..SessionRequest::by_key(account, key, &client, None, address, self.now())
            },
        )?;
        Ok(opened.session)
    }

    /// Ends each of `sessions` still open, with a `session_ended` event each.
    pub(super) fn end_sessions(
        &self,
        tx: &mut Tx<'_>,
        account_id: Uuid,
        sessions: &[Session],
        reason: &str,
        actor: Option<&Actor<'_>>,
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
                self.record(tx, account_id, EventKind::SessionEnded, actor, detail)?;
            }
        }
        Ok(ended)
    }

    pub(super) fn live_sessions(&self, tx: &Tx<'_>, account_id: Uuid) -> Result<Vec<Session>> {
        Ok(tx.live_sessions(account_id, self.now(), self.policy.session_idle_ms)?)
    }

    /// The session itself, which any session may see (a recovery session, its own state).
    pub fn current_session(&self, authed: &Authed) -> Result<SessionView> {
        self.store
            .read(|tx| self.session_view(tx, &authed.session, Some(authed.session.id)))
    }

    pub fn list_sessions(&self, authed: &Authed) -> Result<Vec<SessionView>> {
        authed.require_not_recovery()?;
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
            let actor = self.actor(tx, &authed.session)?;
            let reason = if id == authed.session.id {
                "sign_out"
            } else {
                "user"
            };
            let ended =
                self.end_sessions(tx, authed.account.id, &[target], reason, Some(&actor))?;
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
            let actor = self.actor(tx, &authed.session)?;
            let ended = self.end_sessions(tx, authed.account.id, &others, "user", Some(&actor))?;
            Ok(EndedSessions { ended })
        })
    }

    /// How long from now this request's session stays usable unless used again (its idle or
    /// absolute expiry, whichever comes first); `None` if it is no longer usable: ended,
    /// expired, or its token replaced by a step-up. For long-lived streams, which must end at
    /// that moment and not at their next periodic check, and must not outlive their token.
    pub fn session_time_left(&self, authed: &Authed) -> Result<Option<i64>> {
        let now = self.now();
        let idle = self.policy.session_idle_ms;
        self.store.read(|tx| {
            Ok(tx
                .session_by_token_hash(&authed.token_hash)?
                .filter(|s| s.id == authed.session.id && s.is_live(now, idle))
                .map(|s| s.idle_expires_at(idle) - now))
        })
    }
}
