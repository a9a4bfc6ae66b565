//! The authorization endpoint (`/oauth2/authorize`), the pending requests the web UI shows
//! (`/#/authorize/<id>`), approval and denial, and remembered consent. The contract with the
//! web UI is `oidc-contract.md`'s; in short: an unknown client or a redirect URI it did not
//! register gets a page of ours and never a redirect; every other refusal goes back to the
//! app with `error`, `state` and `iss`.

use keyward_core::secret::{hash_secret, new_secret};
use keyward_core::store::{Account, Consent, Grant, OidcClient, PendingAuthorization, Session, Tx};
use keyward_proto::{
    AccountState, AppConsentView, AuthorizationDecision, AuthorizationRequestView, EventDetail,
    EventKind, Millis, RevokedConsent, SessionScope,
};
use url::Url;
use uuid::Uuid;

use super::claims::{SUPPORTED_SCOPES, describe_scope, meets};
use super::{CODE_TTL_MS, OAuthCode, REQUEST_TTL_MS};
use crate::error::{Result, ServerError};
use crate::relying_party::{Authed, RelyingParty, Verdict};

/// The longest value any authorization parameter may have; longer is refused.
pub const MAX_PARAM_CHARS: usize = 2048;
/// More parameters than this is not a real app's request.
const MAX_PARAMS: usize = 32;

/// What the authorization endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// A page of keywardd's own saying this (400): the client or redirect URI is not one to
    /// send anyone to.
    ErrorPage(String),
    /// 303 to this address: the app (a code or an error), or the web UI's consent screen.
    Redirect(String),
    /// A page of ours saying this (200): done, nowhere to send the person back to.
    Message(String),
}

/// The request's parameters, refusing any given twice (RFC 6749 3.1).
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> std::result::Result<Option<&str>, ()> {
        let mut found = self.0.iter().filter(|(k, _)| k == name);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Ok(Some(v.as_str())),
            (None, _) => Ok(None),
            _ => Err(()),
        }
    }
}

/// Where the app is sent back to with an error (RFC 6749 4.1.2.1, RFC 9207's `iss`).
pub(super) fn error_redirect(
    redirect_uri: &str,
    code: OAuthCode,
    description: &str,
    state: Option<&str>,
    issuer: &str,
) -> Result<String> {
    let mut pairs = vec![("error", code.as_str()), ("error_description", description)];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", issuer));
    with_query(redirect_uri, &pairs)
}

pub(super) fn with_query(uri: &str, pairs: &[(&str, &str)]) -> Result<String> {
    if pairs.is_empty() {
        return Ok(uri.to_string()); // no bare `?` added
    }
    let mut url = Url::parse(uri)
        .map_err(|e| ServerError::Internal(format!("a registered redirect URI: {e}")))?;
    url.query_pairs_mut().extend_pairs(pairs);
    Ok(url.into())
}

/// A PKCE S256 challenge: BASE64URL(SHA-256(verifier)), 43 characters.
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A scope string as a set, in a stable order, or None if empty.
fn normalise_scopes(scope: &str) -> Vec<String> {
    let mut v: Vec<String> = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn covers(consent: Option<&Consent>, scopes: &str) -> bool {
    consent.is_some_and(|c| {
        let given: Vec<&str> = c.scopes.split_whitespace().collect();
        scopes.split_whitespace().all(|s| given.contains(&s))
    })
}

/// Whether the session's last ceremony is too old for the request: `prompt=login` wants one
/// after the request was made, `max_age` one within that many milliseconds.
fn needs_fresh(
    session: &Session,
    login_after: Option<Millis>,
    max_age_ms: Option<i64>,
    now: Millis,
) -> bool {
    login_after.is_some_and(|t| session.verified_at <= t)
        || max_age_ms.is_some_and(|m| now - session.verified_at > m)
}

/// An RFC 3339 UTC time from Unix milliseconds (days-to-civil, Howard Hinnant's algorithm).
pub(super) fn rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What the authorization endpoint checked, to store or to issue a code for at once.
struct Checked {
    client: OidcClient,
    redirect_uri: String,
    scopes: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    acr_values: Option<String>,
    login_after: Option<Millis>,
    max_age_ms: Option<i64>,
    prompt_none: bool,
    prompt_consent: bool,
}

/// What issuing a code needs from a request, stored or just checked.
pub(super) struct CodeRequest<'a> {
    client: &'a OidcClient,
    redirect_uri: &'a str,
    scopes: &'a str,
    state: Option<&'a str>,
    nonce: Option<&'a str>,
    code_challenge: &'a str,
    acr_values: Option<&'a str>,
}

impl RelyingParty {
    fn provider(&self) -> &super::Provider {
        &self.oidc
    }

    /// `GET|POST /oauth2/authorize`: `params` as sent (query or form), the browser's Keyward
    /// session token if it sent its cookie.
    pub fn authorize(
        &self,
        params: Vec<(String, String)>,
        session_token: Option<String>,
        address: &str,
    ) -> Result<Authorization> {
        let issuer = self.provider().issuer.clone();
        let p = Params(params);
        let page = |m: &str| Ok(Authorization::ErrorPage(m.to_string()));
        let client_id = match p.get("client_id") {
            Ok(Some(id)) if id.len() <= MAX_PARAM_CHARS => id.to_string(),
            Ok(None) => return page("The app did not say who it is (no client_id)."),
            _ => return page("The app's request is malformed (client_id)."),
        };
        let Some(client) = self.store.read(|tx| tx.oidc_client(&client_id))? else {
            return page("This app is not registered with this Keyward server.");
        };
        let redirect_uri = match p.get("redirect_uri") {
            Ok(Some(uri)) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_string(),
            _ => {
                return page(
                    "The app asked to send you to an address it did not register, so Keyward \
                     will not send you anywhere.",
                );
            }
        };
        // From here on, a refusal goes back to the app.
        let state = match p.get("state") {
            Ok(s) => s.filter(|s| s.len() <= MAX_PARAM_CHARS).map(str::to_string),
            Err(()) => None,
        };
        let fail = |code: OAuthCode, description: &str| -> Result<Authorization> {
            error_redirect(&redirect_uri, code, description, state.as_deref(), &issuer)
                .map(Authorization::Redirect)
        };
        let checked = match self.check_authorization(&p, client, &redirect_uri, state.clone()) {
            Ok(c) => c,
            Err((code, description)) => return fail(code, description),
        };
        let now = self.now();
        let authed = session_token
            .and_then(|t| self.authenticate(&t, None).ok())
            .filter(|a| {
                a.session.scope == SessionScope::Full && a.account.state == AccountState::Active
            });
        let consent = match &authed {
            Some(a) => self
                .store
                .read(|tx| tx.consent(a.account.id, &checked.client.client_id))?,
            None => None,
        };
        let fresh_enough = authed.as_ref().is_some_and(|a| {
            !needs_fresh(&a.session, checked.login_after, checked.max_age_ms, now)
        });
        let consented = covers(consent.as_ref(), &checked.scopes);
        if checked.prompt_none {
            return match (&authed, fresh_enough, consented) {
                (None, _, _) | (Some(_), false, _) => fail(
                    OAuthCode::LoginRequired,
                    "the person must sign in to Keyward first",
                ),
                (Some(_), true, false) => fail(
                    OAuthCode::ConsentRequired,
                    "the person has not allowed this app these scopes",
                ),
                (Some(a), true, true) => self.issue_now(a, &checked).map(Authorization::Redirect),
            };
        }
        if let Some(a) = &authed
            && fresh_enough
            && consented
            && !checked.prompt_consent
        {
            return self.issue_now(a, &checked).map(Authorization::Redirect);
        }
        let request_id = new_secret();
        let pending = PendingAuthorization {
            id_hash: hash_secret(&request_id).to_vec(),
            client_id: checked.client.client_id.clone(),
            redirect_uri: checked.redirect_uri.clone(),
            scopes: checked.scopes.clone(),
            state: checked.state.clone(),
            nonce: checked.nonce.clone(),
            code_challenge: checked.code_challenge.clone(),
            login_after: checked.login_after,
            acr_values: checked.acr_values.clone(),
            max_age_ms: checked.max_age_ms,
            created_at: now,
            expires_at: now + REQUEST_TTL_MS,
        };
        // Anyone can make these: they count against the network like a ceremony start.
        self.store.write(|tx| {
            self.count_begin(tx, address)?;
            tx.insert_pending_authorization(&pending)?;
            Ok::<_, ServerError>(())
        })?;
        Ok(Authorization::Redirect(format!(
            "{issuer}/#/authorize/{request_id}"
        )))
    }

    /// Everything but the client and the redirect URI, which were checked first.
    fn check_authorization(
        &self,
        p: &Params,
        client: OidcClient,
        redirect_uri: &str,
        state: Option<String>,
    ) -> std::result::Result<Checked, (OAuthCode, &'static str)> {
        use OAuthCode::*;
        if p.0.len() > MAX_PARAMS
            || p.0
                .iter()
                .any(|(k, v)| k.len() > 64 || v.len() > MAX_PARAM_CHARS)
        {
            return Err((InvalidRequest, "too many parameters, or one too long"));
        }
        let one = |name: &str| {
            p.get(name)
                .map_err(|()| (InvalidRequest, "a parameter was sent twice"))
        };
        if one("request")?.is_some() {
            return Err((RequestNotSupported, "request objects are not supported"));
        }
        if one("request_uri")?.is_some() {
            return Err((RequestUriNotSupported, "request_uri is not supported"));
        }
        match one("response_type")? {
            Some("code") => {}
            None => return Err((InvalidRequest, "response_type is missing")),
            Some(_) => {
                return Err((
                    UnsupportedResponseType,
                    "only response_type=code is supported",
                ));
            }
        }
        if one("response_mode")?.is_some_and(|m| m != "query") {
            return Err((InvalidRequest, "only response_mode=query is supported"));
        }
        let scopes = normalise_scopes(one("scope")?.unwrap_or(""));
        if !scopes.iter().any(|s| s == "openid") {
            return Err((InvalidScope, "the scope must include openid"));
        }
        if scopes
            .iter()
            .any(|s| !SUPPORTED_SCOPES.contains(&s.as_str()) || !client.scopes.contains(s))
        {
            return Err((
                InvalidScope,
                "a scope asked for is not one this app may have",
            ));
        }
        match one("code_challenge_method")? {
            Some("S256") => {}
            _ => {
                return Err((
                    InvalidRequest,
                    "PKCE with code_challenge_method=S256 is required",
                ));
            }
        }
        let code_challenge = match one("code_challenge")? {
            Some(c) if is_s256_challenge(c) => c.to_string(),
            _ => return Err((InvalidRequest, "code_challenge must be an S256 challenge")),
        };
        let prompts: Vec<&str> = one("prompt")?
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        if prompts
            .iter()
            .any(|v| !matches!(*v, "none" | "login" | "consent" | "select_account"))
        {
            return Err((
                InvalidRequest,
                "prompt may be none, login, consent or select_account",
            ));
        }
        let prompt_none = prompts.contains(&"none");
        if prompt_none && prompts.len() > 1 {
            return Err((
                InvalidRequest,
                "prompt=none goes with no other prompt value",
            ));
        }
        let max_age_ms = match one("max_age")? {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(secs) => Some(i64::from(secs) * 1000),
                Err(_) => return Err((InvalidRequest, "max_age must be a number of seconds")),
            },
        };
        let acr_values = one("acr_values")?.map(str::to_string);
        if let Some(v) = &acr_values
            && !self.provider().could_meet(v)
        {
            return Err((
                UnmetAuthenticationRequirements,
                "Keyward cannot meet any of the acr_values asked for",
            ));
        }
        Ok(Checked {
            client,
            redirect_uri: redirect_uri.to_string(),
            scopes: scopes.join(" "),
            state,
            nonce: one("nonce")?.map(str::to_string),
            code_challenge,
            acr_values,
            login_after: prompts.contains(&"login").then(|| self.now()),
            max_age_ms,
            prompt_none,
            prompt_consent: prompts.contains(&"consent"),
        })
    }

    fn issue_now(&self, authed: &Authed, c: &Checked) -> Result<String> {
        self.store.write(|tx| {
            self.issue_code(
                tx,
                &authed.session,
                &authed.account,
                &CodeRequest {
                    client: &c.client,
                    redirect_uri: &c.redirect_uri,
                    scopes: &c.scopes,
                    state: c.state.as_deref(),
                    nonce: c.nonce.as_deref(),
                    code_challenge: &c.code_challenge,
                    acr_values: c.acr_values.as_deref(),
                },
            )
        })
    }

    /// Issues the code (a new grant tied to `session`) and records the app sign-in; the
    /// redirect to the app. An `acr_values` the session's key cannot meet is refused there.
    pub(super) fn issue_code(
        &self,
        tx: &mut Tx<'_>,
        session: &Session,
        account: &Account,
        r: &CodeRequest<'_>,
    ) -> Result<String> {
        let issuer = &self.provider().issuer;
        let context = self.provider().auth_context(tx, session)?;
        if !meets(&context, r.acr_values) {
            return error_redirect(
                r.redirect_uri,
                OAuthCode::UnmetAuthenticationRequirements,
                "the key this session was signed in with does not meet the acr_values asked for",
                r.state,
                issuer,
            );
        }
        let now = self.now();
        let code = new_secret();
        let grant = Grant {
            id: Uuid::new_v4(),
            account_id: account.id,
            client_id: r.client.client_id.clone(),
            sid: self
                .provider()
                .session_id_for(&r.client.client_id, session.id),
            session_id: session.id,
            scopes: r.scopes.to_string(),
            nonce: r.nonce.map(str::to_string),
            auth_time: session.verified_at,
            acr: context.acr.to_string(),
            amr: context.amr.join(" "),
            code_hash: hash_secret(&code).to_vec(),
            code_challenge: r.code_challenge.to_string(),
            redirect_uri: r.redirect_uri.to_string(),
            code_expires_at: now + CODE_TTL_MS,
            code_used_at: None,
            created_at: now,
            ended_at: None,
            ended_reason: None,
        };
        tx.insert_grant(&grant)?;
        let actor = self.actor(tx, session)?;
        let detail = EventDetail {
            client_id: Some(r.client.client_id.clone()),
            client_name: Some(r.client.name.clone()),
            ..EventDetail::default()
        };
        self.record(tx, account.id, EventKind::AppSignIn, Some(&actor), detail)?;
        let mut pairs = vec![("code", code.as_str())];
        if let Some(s) = r.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", issuer));
        with_query(r.redirect_uri, &pairs)
    }

    /// `GET /api/v1/oauth/requests/{id}`, signed in or not.
    pub fn authorization_request(
        &self,
        request_id: &str,
        authed: Option<&Authed>,
    ) -> Result<AuthorizationRequestView> {
        let now = self.now();
        let hash = hash_secret(request_id);
        self.store.read(|tx| {
            let pending = tx
                .pending_authorization(&hash, now)?
                .ok_or(ServerError::NotFound("authorization request"))?;
            let client = tx
                .oidc_client(&pending.client_id)?
                .ok_or(ServerError::NotFound("authorization request"))?;
            let authed = authed.filter(|a| a.session.scope == SessionScope::Full);
            let consent = match authed {
                Some(a) => tx.consent(a.account.id, &client.client_id)?,
                None => None,
            };
            let redirect_origin = Url::parse(&pending.redirect_uri)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default();
            Ok(AuthorizationRequestView {
                request_id: request_id.to_string(),
                client_id: client.client_id.clone(),
                client_name: client.name.clone(),
                redirect_origin,
                scopes: pending
                    .scopes
                    .split_whitespace()
                    .map(describe_scope)
                    .collect(),
                signed_in: authed.is_some(),
                needs_fresh_sign_in: authed.is_some_and(|a| {
                    needs_fresh(&a.session, pending.login_after, pending.max_age_ms, now)
                }),
                already_consented: covers(consent.as_ref(), &pending.scopes),
                expires_at: rfc3339(pending.expires_at),
            })
        })
    }

    /// `POST /api/v1/oauth/requests/{id}/approve`: consent remembered, the code issued.
    pub fn approve_authorization(
        &self,
        authed: &Authed,
        request_id: &str,
    ) -> Result<AuthorizationDecision> {
        authed.require_full()?;
        let now = self.now();
        let hash = hash_secret(request_id);
        self.write_verdict(|tx| {
            let Some(pending) = tx.pending_authorization(&hash, now)? else {
                return Ok(Verdict::Refused(ServerError::NotFound(
                    "authorization request",
                )));
            };
            // Still the live session row: a step-up since the request changed verified_at.
            let session = tx
                .session(authed.session.id)?
                .ok_or(ServerError::Unauthenticated)?;
            if needs_fresh(&session, pending.login_after, pending.max_age_ms, now) {
                return Ok(Verdict::Refused(ServerError::FreshSignInRequired));
            }
            tx.take_pending_authorization(&hash, now)?;
            let Some(client) = tx.oidc_client(&pending.client_id)? else {
                return Ok(Verdict::Refused(ServerError::NotFound(
                    "authorization request",
                )));
            };
            let mut scopes: Vec<String> = match tx.consent(authed.account.id, &client.client_id)? {
                Some(c) => c.scopes.split_whitespace().map(str::to_string).collect(),
                None => Vec::new(),
            };
            scopes.extend(pending.scopes.split_whitespace().map(str::to_string));
            scopes.sort();
            scopes.dedup();
            tx.put_consent(&Consent {
                account_id: authed.account.id,
                client_id: client.client_id.clone(),
                scopes: scopes.join(" "),
                granted_at: now,
            })?;
            let redirect_to = self.issue_code(
                tx,
                &session,
                &authed.account,
                &CodeRequest {
                    client: &client,
                    redirect_uri: &pending.redirect_uri,
                    scopes: &pending.scopes,
                    state: pending.state.as_deref(),
                    nonce: pending.nonce.as_deref(),
                    code_challenge: &pending.code_challenge,
                    acr_values: pending.acr_values.as_deref(),
                },
            )?;
            Ok(Verdict::Granted(AuthorizationDecision { redirect_to }))
        })
    }

    /// `POST /api/v1/oauth/requests/{id}/deny`: the request is used up, the app told
    /// `access_denied`.
    pub fn deny_authorization(&self, request_id: &str) -> Result<AuthorizationDecision> {
        let now = self.now();
        let hash = hash_secret(request_id);
        let issuer = self.provider().issuer.clone();
        self.store.write(|tx| {
            let pending = tx
                .take_pending_authorization(&hash, now)?
                .ok_or(ServerError::NotFound("authorization request"))?;
            let redirect_to = error_redirect(
                &pending.redirect_uri,
                OAuthCode::AccessDenied,
                "the person declined",
                pending.state.as_deref(),
                &issuer,
            )?;
            Ok(AuthorizationDecision { redirect_to })
        })
    }

    /// The apps this account allowed.
    pub fn list_app_consents(&self, authed: &Authed) -> Result<Vec<AppConsentView>> {
        authed.require_not_recovery()?;
        self.store.read(|tx| {
            let mut out = Vec::new();
            for c in tx.consents(authed.account.id)? {
                let Some(client) = tx.oidc_client(&c.client_id)? else {
                    continue;
                };
                out.push(AppConsentView {
                    client_id: c.client_id.clone(),
                    client_name: client.name,
                    scopes: c.scopes.split_whitespace().map(describe_scope).collect(),
                    granted_at: c.granted_at,
                });
            }
            Ok(out)
        })
    }

    /// Revokes an app: its remembered consent, and every sign-in (grant) it has, at once.
    pub fn revoke_app_consent(&self, authed: &Authed, client_id: &str) -> Result<RevokedConsent> {
        authed.require_full()?;
        let now = self.now();
        self.store.write(|tx| {
            let had = tx.delete_consent(authed.account.id, client_id)?;
            tx.enqueue_client_logouts(authed.account.id, client_id, "consent_revoked", now)?;
            let ended =
                tx.end_client_grants(authed.account.id, client_id, "consent_revoked", now)?;
            if !had && ended == 0 {
                return Err(ServerError::NotFound("app"));
            }
            Ok(RevokedConsent {
                client_id: client_id.to_string(),
                grants_ended: u32::try_from(ended).unwrap_or(u32::MAX),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_478_400_000), "2026-11-24T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000 + 3_723_000), "2000-02-29T01:02:03Z");
    }

    #[test]
    fn only_an_s256_challenge_passes() {
        assert!(is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!is_s256_challenge("short"));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"
        ));
    }
}
