//! The device authorization grant (RFC 8628) for AI agents and CLIs, and the person's
//! approval of it.
//!
//! An agent asks `/oauth2/device_authorization` for a device code (256 bits, kept by the
//! agent) and a user code (8 letters, shown to the person); both are stored only hashed. The
//! person enters the user code in the web UI or the desktop app, sees which agent asks, from
//! where and for what, and approves with a fresh key ceremony in that same request, or denies.
//! An approval opens a Keyward session of the agent's own (`open_agent_session`): its own idle
//! and absolute limits from the deployment's policy, opened by the key that approved it, so it
//! does not end when the browser that approved it signs out, but is listed and ended like any
//! session, and ends with report lost, recovery completion and "end all others". Its grant
//! hangs off that session, so every token check already follows it.
//!
//! User codes can be guessed (about 34.6 bits), so every one entered that names no waiting
//! request counts against the network (`LimitKey::UserCodeFailure`), and a blocked network is
//! refused before any lookup.

use keyward_core::secret::{hash_secret, new_secret, random_bytes};
use keyward_core::store::{DeviceCode, DeviceCodeStatus, Grant, OidcClient, Tx};
use keyward_proto::{
    DeviceApproval, DeviceAuthorizationResponse, DeviceDecision, DeviceRequestView, EventDetail,
    EventKind, TokenResponse,
};
use uuid::Uuid;

use super::authorize::rfc3339;
use super::claims::{SUPPORTED_SCOPES, describe_scope};
use super::clients::ClientAuth;
use super::tokens::{param, refused, required};
use super::{DEVICE_CODE_TTL_MS, DEVICE_INTERVAL_MS, OAuthCode, oauth};
use crate::error::{Result, ServerError};
use crate::relying_party::rate_limit::{LimitKey, Network, too_many_attempts};
use crate::relying_party::{AgentLimits, Authed, RelyingParty, Verdict, granted};

/// The grant type an agent polls the token endpoint with.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Consonants only, none that look alike (RFC 8628 6.1): no vowels, so no words.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LEN: usize = 8;
/// RFC 8628 3.5: each `slow_down` adds this to the interval.
const SLOW_DOWN_STEP_MS: i64 = 5_000;

/// A new user code, uniformly from the alphabet (bytes of 240 and above are dropped, so that
/// `% 20` has no bias), as stored: 8 letters, no dash.
fn new_user_code() -> String {
    let mut code = String::with_capacity(USER_CODE_LEN);
    while code.len() < USER_CODE_LEN {
        for b in random_bytes::<16>() {
            if b < 240 && code.len() < USER_CODE_LEN {
                code.push(USER_CODE_ALPHABET[usize::from(b % 20)] as char);
            }
        }
    }
    code
}

/// A user code as typed: case, spaces and dashes ignored. None if it cannot be one.
fn normalise_user_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

/// `XXXX-XXXX`, as shown.
fn display_user_code(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

impl RelyingParty {
    /// `POST /oauth2/device_authorization`: a registered client allowed the device grant,
    /// public or confidential, asks for a device code.
    pub fn device_authorization(
        &self,
        params: Vec<(String, String)>,
        auth: ClientAuth,
        address: &str,
    ) -> Result<DeviceAuthorizationResponse> {
        let client = self.client_of(&auth)?;
        if !client.device_grant {
            return Err(oauth(
                OAuthCode::UnauthorizedClient,
                "this client is not allowed the device authorization grant",
            ));
        }
        let mut scopes: Vec<&str> = param(&params, "scope")?
            .unwrap_or("openid")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        if !scopes.contains(&"openid") {
            return Err(oauth(
                OAuthCode::InvalidScope,
                "the scope must include openid",
            ));
        }
        if scopes
            .iter()
            .any(|s| !SUPPORTED_SCOPES.contains(s) || !client.scopes.iter().any(|c| c == s))
        {
            return Err(oauth(
                OAuthCode::InvalidScope,
                "a scope asked for is not one this client may have",
            ));
        }
        let now = self.now();
        let device_code = new_secret();
        let user_code = new_user_code();
        let row = DeviceCode {
            device_code_hash: hash_secret(&device_code).to_vec(),
            user_code_hash: hash_secret(&user_code).to_vec(),
            client_id: client.client_id.clone(),
            scopes: scopes.join(" "),
            address: address.to_string(),
            created_at: now,
            expires_at: now + DEVICE_CODE_TTL_MS,
            interval_ms: DEVICE_INTERVAL_MS,
            last_polled_at: None,
            status: DeviceCodeStatus::Pending,
            account_id: None,
            grant_id: None,
            decided_at: None,
        };
        // Anyone holding a client ID can ask: it counts against the network like a ceremony.
        self.store.write(|tx| {
            self.count_begin(tx, address)?;
            tx.insert_device_code(&row)?;
            Ok::<_, ServerError>(())
        })?;
        let shown = display_user_code(&user_code);
        let verification_uri = format!("{}/#/device", self.oidc.issuer);
        Ok(DeviceAuthorizationResponse {
            verification_uri_complete: format!("{verification_uri}/{shown}"),
            verification_uri,
            device_code,
            user_code: shown,
            expires_in: DEVICE_CODE_TTL_MS / 1000,
            interval: DEVICE_INTERVAL_MS / 1000,
        })
    }

    /// The token endpoint's device-code grant: pending, too fast, denied, expired, or (once)
    /// the tokens of the agent's session.
    pub(super) fn exchange_device_code(
        &self,
        client: &OidcClient,
        params: &[(String, String)],
    ) -> Result<TokenResponse> {
        const BAD: &str = "the device code is unknown, already used or not this client's";
        let hash = hash_secret(required(params, "device_code")?);
        let now = self.now();
        self.write_verdict(|tx| {
            let Some(row) = tx.device_code(&hash)? else {
                return refused(OAuthCode::InvalidGrant, BAD);
            };
            if row.client_id != client.client_id {
                return refused(OAuthCode::InvalidGrant, BAD);
            }
            match row.status {
                DeviceCodeStatus::Used => {
                    // Presented again after its tokens were taken: a copy. What it issued ends.
                    if let Some(grant) = row.grant_id {
                        tx.end_grant(grant, "device_code_reused", now)?;
                    }
                    return refused(OAuthCode::InvalidGrant, BAD);
                }
                _ if now >= row.expires_at => {
                    return refused(
                        OAuthCode::ExpiredToken,
                        "the device code expired: ask for a new one",
                    );
                }
                DeviceCodeStatus::Denied => {
                    return refused(OAuthCode::AccessDenied, "the person declined");
                }
                DeviceCodeStatus::Pending => {
                    let too_fast = row
                        .last_polled_at
                        .is_some_and(|last| now - last < row.interval_ms);
                    let interval = row.interval_ms + if too_fast { SLOW_DOWN_STEP_MS } else { 0 };
                    tx.poll_device_code(&hash, now, interval)?;
                    return if too_fast {
                        refused(
                            OAuthCode::SlowDown,
                            &format!("poll at most every {} seconds", interval / 1000),
                        )
                    } else {
                        refused(
                            OAuthCode::AuthorizationPending,
                            "the person has not approved the code yet",
                        )
                    };
                }
                DeviceCodeStatus::Approved => {}
            }
            let grant = match row.grant_id {
                Some(id) if tx.use_device_code(&hash)? => tx.grant(id)?,
                _ => None,
            };
            let Some(grant) = grant else {
                return refused(OAuthCode::InvalidGrant, BAD);
            };
            let Some((session, account)) = self.live_session_of(tx, &grant)? else {
                tx.end_grant(grant.id, "session_ended", now)?;
                return refused(OAuthCode::InvalidGrant, super::tokens::SESSION_OVER);
            };
            let scopes = grant.scopes.clone();
            let issued = self.issue_tokens(tx, &grant, &session, &account, &scopes, None)?;
            Ok(Verdict::Granted(issued))
        })
    }

    /// The waiting request a typed user code names, or a counted failure: refused before any
    /// lookup once the network has guessed too often.
    fn waiting_device_code(
        &self,
        tx: &Tx<'_>,
        typed: &str,
        address: &str,
    ) -> Result<Verdict<(DeviceCode, OidcClient)>> {
        let now = self.now();
        let key = LimitKey::UserCodeFailure {
            network: Network::of(address),
        };
        if let Some(ms) = self.limiter.blocked(tx, &key, now)? {
            return Ok(Verdict::Refused(too_many_attempts(ms)));
        }
        let found = match normalise_user_code(typed) {
            Some(code) => tx.pending_device_code(&hash_secret(&code), now)?,
            None => None,
        };
        let found = match found {
            Some(row) => tx.oidc_client(&row.client_id)?.map(|c| (row, c)),
            None => None,
        };
        match found {
            Some(pair) => Ok(Verdict::Granted(pair)),
            None => {
                self.limiter.record(tx, &key, now)?;
                Ok(Verdict::Refused(ServerError::NotFound("device code")))
            }
        }
    }

    /// `POST /api/v1/oauth/device/lookup`: what the person is asked to approve.
    pub fn device_request(
        &self,
        authed: &Authed,
        typed: &str,
        address: &str,
    ) -> Result<DeviceRequestView> {
        authed.require_full()?;
        self.write_verdict(|tx| {
            let (row, client) = granted!(self.waiting_device_code(tx, typed, address)?);
            let code = normalise_user_code(typed).unwrap_or_default();
            Ok(Verdict::Granted(DeviceRequestView {
                user_code: display_user_code(&code),
                client_id: client.client_id,
                client_name: client.name,
                place: self.places.lookup(&row.address),
                address: row.address,
                scopes: row.scopes.split_whitespace().map(describe_scope).collect(),
                expires_at: rfc3339(row.expires_at),
                idle_limit_ms: self.policy.agent_idle_ms,
                lifetime_ms: self.policy.agent_absolute_ms,
            }))
        })
    }

    /// `POST /api/v1/oauth/device/approve`: with a step-up assertion in the request. The
    /// agent's own session is opened, its grant made, and the person told at once.
    pub fn approve_device(
        &self,
        authed: &Authed,
        approval: &DeviceApproval,
        address: &str,
    ) -> Result<DeviceDecision> {
        authed.require_full()?;
        let now = self.now();
        let mut presented = self.present(
            approval.assertion.ceremony_id,
            &approval.assertion.credential,
        );
        self.write_verdict(|tx| {
            let (row, client) =
                granted!(self.waiting_device_code(tx, &approval.user_code, address)?);
            let key =
                granted!(self.verify_fresh_ceremony(tx, authed, presented.attempt(), address)?);
            let session = self.open_agent_session(
                tx,
                &authed.account,
                key.id,
                &client.name,
                &row.address,
                AgentLimits {
                    client_id: client.client_id.clone(),
                    idle_ms: self.policy.agent_idle_ms,
                    absolute_ms: self.policy.agent_absolute_ms,
                },
            )?;
            let context = self.oidc.auth_context(tx, &session)?;
            let grant = Grant {
                id: Uuid::new_v4(),
                account_id: authed.account.id,
                client_id: client.client_id.clone(),
                sid: self.oidc.session_id_for(&client.client_id, session.id),
                session_id: session.id,
                scopes: row.scopes.clone(),
                nonce: None,
                auth_time: session.verified_at,
                acr: context.acr.to_string(),
                amr: context.amr.join(" "),
                // No authorization code: the device code (on its own row) stands for it. A
                // code nobody holds, already used, keeps the column's uniqueness.
                code_hash: hash_secret(&new_secret()).to_vec(),
                code_challenge: String::new(),
                redirect_uri: String::new(),
                code_expires_at: now,
                code_used_at: Some(now),
                created_at: now,
                ended_at: None,
                ended_reason: None,
            };
            tx.insert_grant(&grant)?;
            if !tx.decide_device_code(
                &row.user_code_hash,
                DeviceCodeStatus::Approved,
                authed.account.id,
                Some(grant.id),
                now,
            )? {
                return Err(ServerError::Conflict("that code was decided already"));
            }
            let actor = self.actor(tx, &authed.session)?;
            let detail = EventDetail {
                client_id: Some(client.client_id.clone()),
                client_name: Some(client.name.clone()),
                authenticator_id: Some(key.id),
                authenticator_name: Some(key.nickname.clone()),
                place: self.places.lookup(&row.address),
                ..EventDetail::default()
            };
            self.record(
                tx,
                authed.account.id,
                EventKind::AgentAuthorized,
                Some(&actor),
                detail,
            )?;
            Ok(Verdict::Granted(DeviceDecision {
                approved: true,
                client_name: client.name,
                session_id: Some(session.id),
            }))
        })
    }

    /// `POST /api/v1/oauth/device/deny`: the agent is told `access_denied` at its next poll.
    pub fn deny_device(
        &self,
        authed: &Authed,
        typed: &str,
        address: &str,
    ) -> Result<DeviceDecision> {
        authed.require_full()?;
        let now = self.now();
        self.write_verdict(|tx| {
            let (row, client) = granted!(self.waiting_device_code(tx, typed, address)?);
            tx.decide_device_code(
                &row.user_code_hash,
                DeviceCodeStatus::Denied,
                authed.account.id,
                None,
                now,
            )?;
            Ok(Verdict::Granted(DeviceDecision {
                approved: false,
                client_name: client.name,
                session_id: None,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_unambiguous_letters_and_typed_forms_normalise() {
        for _ in 0..200 {
            let code = new_user_code();
            assert_eq!(code.len(), 8);
            assert!(
                code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)),
                "{code}"
            );
            assert_eq!(
                normalise_user_code(&display_user_code(&code)),
                Some(code.clone())
            );
            assert_eq!(
                normalise_user_code(&format!(" {} ", code.to_lowercase())),
                Some(code)
            );
        }
        assert_eq!(normalise_user_code("BCDF-GHJ"), None, "too short");
        assert_eq!(normalise_user_code("BCDF-GHJA"), None, "a vowel");
        assert_eq!(normalise_user_code("BCDF-GHJ0"), None, "a digit");
    }
}
