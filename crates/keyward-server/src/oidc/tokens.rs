//! The token endpoint (codes and refresh tokens), introspection (RFC 7662), userinfo,
//! revocation (RFC 7009) and RP-initiated logout. Access and refresh tokens are opaque
//! 256-bit values stored only hashed, and every check of one also checks the grant and the
//! Keyward session behind it: when that session ends, for whatever reason, every token from it
//! stops working at the next check, on every instance, with nothing to propagate.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyward_core::secret::{hash_secret, new_secret};
use keyward_core::store::{
    Account, ClientAuthMethod, Grant, OidcClient, Session, TokenKind, TokenRecord, Tx,
};
use keyward_proto::{EventDetail, EventKind, IntrospectionResponse, SessionScope, TokenResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::authorize::{Authorization, with_query};
use super::claims::{IdTokenClaims, ProfileClaims, seconds};
use super::clients::{ClientAuth, authenticate};
use super::{ACCESS_TOKEN_TTL_MS, ID_TOKEN_TTL_MS, OAuthCode, oauth};
use crate::error::{Result, ServerError};
use crate::relying_party::{RelyingParty, Verdict};

/// What userinfo answers: the pairwise `sub` and the consented scopes' claims.
#[derive(Debug, serde::Serialize)]
pub struct Userinfo {
    pub sub: String,
    #[serde(flatten)]
    pub profile: ProfileClaims,
}

/// RP-initiated logout's parameters.
#[derive(Debug, Default, Deserialize)]
pub struct EndSession {
    pub id_token_hint: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    pub client_id: Option<String>,
}

/// The parts of an ID token used as `id_token_hint`.
#[derive(Deserialize)]
struct Hint {
    aud: String,
    sid: String,
}

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>> {
    let mut found = params.iter().filter(|(k, _)| k == name);
    match (found.next(), found.next()) {
        (Some((_, v)), None) => Ok(Some(v.as_str())),
        (None, _) => Ok(None),
        _ => Err(oauth(
            OAuthCode::InvalidRequest,
            format!("{name} was sent twice"),
        )),
    }
}

pub(super) fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str> {
    param(params, name)?
        .ok_or_else(|| oauth(OAuthCode::InvalidRequest, format!("{name} is missing")))
}

/// RFC 7636 4.1: 43-128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

pub(super) fn refused<T>(code: OAuthCode, description: &str) -> Result<Verdict<T>> {
    Ok(Verdict::Refused(oauth(code, description)))
}

const BAD_CODE: &str = "the code is unknown, expired, already used or not this client's";
const BAD_REFRESH: &str =
    "the refresh token is unknown, expired, already used or not this client's";
pub(super) const SESSION_OVER: &str = "the Keyward session that signed the person in has ended";

impl RelyingParty {
    /// The Keyward session behind a grant, if it is still live (not ended, not idle or past
    /// its lifetime, not a recovery session).
    pub(super) fn live_session_of(
        &self,
        tx: &Tx<'_>,
        grant: &Grant,
    ) -> Result<Option<(Session, Account)>> {
        let now = self.now();
        let Some(session) = tx.session(grant.session_id)? else {
            return Ok(None);
        };
        if !session.is_live(now, self.policy.session_idle_ms) || session.scope != SessionScope::Full
        {
            return Ok(None);
        }
        Ok(tx.account(grant.account_id)?.map(|a| (session, a)))
    }

    /// `POST /oauth2/token`.
    /// The client `auth` proves. An assertion's `jti` is recorded (a commit of its own), so
    /// that it is accepted once.
    pub(super) fn client_of(&self, auth: &ClientAuth) -> Result<OidcClient> {
        let now = self.now();
        let issuer = &self.oidc.issuer;
        match auth {
            ClientAuth::Assertion { .. } => {
                self.store.write(|tx| authenticate(tx, auth, issuer, now))
            }
            _ => self.store.read(|tx| authenticate(tx, auth, issuer, now)),
        }
    }

    pub fn token(&self, params: Vec<(String, String)>, auth: ClientAuth) -> Result<TokenResponse> {
        let client = self.client_of(&auth)?;
        match required(&params, "grant_type")? {
            "authorization_code" => self.exchange_code(&client, &params),
            "refresh_token" => self.refresh(&client, &params),
            super::device::DEVICE_CODE_GRANT if client.device_grant => {
                self.exchange_device_code(&client, &params)
            }
            super::device::DEVICE_CODE_GRANT => Err(oauth(
                OAuthCode::UnauthorizedClient,
                "this client is not allowed the device authorization grant",
            )),
            _ => Err(oauth(
                OAuthCode::UnsupportedGrantType,
                "grant_type may be authorization_code, refresh_token or the device code",
            )),
        }
    }

    fn exchange_code(
        &self,
        client: &OidcClient,
        params: &[(String, String)],
    ) -> Result<TokenResponse> {
        let code = required(params, "code")?;
        let redirect_uri = required(params, "redirect_uri")?;
        let verifier = required(params, "code_verifier")?;
        if !valid_verifier(verifier) {
            return Err(oauth(
                OAuthCode::InvalidRequest,
                "code_verifier is malformed",
            ));
        }
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let now = self.now();
        let hash = hash_secret(code);
        // Refusals commit: a code presented is used up, right or wrong.
        self.write_verdict(|tx| {
            let Some(grant) = tx.grant_by_code_hash(&hash)? else {
                return refused(OAuthCode::InvalidGrant, BAD_CODE);
            };
            if grant.client_id != client.client_id {
                return refused(OAuthCode::InvalidGrant, BAD_CODE);
            }
            if !tx.use_grant_code(grant.id, now)? {
                // A second presentation: someone else has the code. Whatever it issued ends,
                // and the app is told (back-channel logout) if it holds a sign-in from it.
                tx.enqueue_grant_logout(grant.id, "code_reused", now)?;
                tx.end_grant(grant.id, "code_reused", now)?;
                return refused(OAuthCode::InvalidGrant, BAD_CODE);
            }
            if grant.ended_at.is_some() || now >= grant.code_expires_at {
                return refused(OAuthCode::InvalidGrant, BAD_CODE);
            }
            if grant.redirect_uri != redirect_uri {
                return refused(
                    OAuthCode::InvalidGrant,
                    "redirect_uri is not the one the code was issued to",
                );
            }
            if grant.code_challenge != challenge {
                return refused(
                    OAuthCode::InvalidGrant,
                    "code_verifier does not match the code_challenge",
                );
            }
            let Some((session, account)) = self.live_session_of(tx, &grant)? else {
                tx.end_grant(grant.id, "session_ended", now)?;
                return refused(OAuthCode::InvalidGrant, SESSION_OVER);
            };
            let scopes = grant.scopes.clone();
            let issued = self.issue_tokens(
                tx,
                &grant,
                &session,
                &account,
                &scopes,
                grant.nonce.as_deref(),
            )?;
            Ok(Verdict::Granted(issued))
        })
    }

    fn refresh(&self, client: &OidcClient, params: &[(String, String)]) -> Result<TokenResponse> {
        let token = required(params, "refresh_token")?;
        let asked = param(params, "scope")?.map(str::to_string);
        let now = self.now();
        let hash = hash_secret(token);
        self.write_verdict(|tx| {
            let Some(record) = tx.token(&hash)?.filter(|t| t.kind == TokenKind::Refresh) else {
                return refused(OAuthCode::InvalidGrant, BAD_REFRESH);
            };
            let Some(grant) = tx.grant(record.grant_id)? else {
                return refused(OAuthCode::InvalidGrant, BAD_REFRESH);
            };
            if grant.client_id != client.client_id {
                return refused(OAuthCode::InvalidGrant, BAD_REFRESH);
            }
            if !tx.use_refresh_token(&hash, now)? {
                // Rotation means a refresh token is used once: a second use is a copy in
                // someone else's hands. The grant ends, and the person is told at once (and
                // the app, by back-channel logout).
                tx.enqueue_grant_logout(grant.id, "refresh_token_reused", now)?;
                if tx.end_grant(grant.id, "refresh_token_reused", now)? {
                    let detail = EventDetail {
                        client_id: Some(client.client_id.clone()),
                        client_name: Some(client.name.clone()),
                        reason: Some("refresh_token_reused".into()),
                        ..EventDetail::default()
                    };
                    self.record(
                        tx,
                        grant.account_id,
                        EventKind::AppTokenReused,
                        None,
                        detail,
                    )?;
                }
                return refused(OAuthCode::InvalidGrant, BAD_REFRESH);
            }
            if grant.ended_at.is_some() || now >= record.expires_at {
                return refused(OAuthCode::InvalidGrant, BAD_REFRESH);
            }
            let scopes = match &asked {
                None => record.scopes.clone(),
                Some(asked) => {
                    let had: Vec<&str> = record.scopes.split_whitespace().collect();
                    let mut wanted: Vec<&str> = asked.split_whitespace().collect();
                    wanted.sort_unstable();
                    wanted.dedup();
                    if wanted.is_empty() || wanted.iter().any(|s| !had.contains(s)) {
                        return refused(OAuthCode::InvalidScope, "a refresh cannot add scopes");
                    }
                    wanted.join(" ")
                }
            };
            let Some((session, account)) = self.live_session_of(tx, &grant)? else {
                tx.end_grant(grant.id, "session_ended", now)?;
                return refused(OAuthCode::InvalidGrant, SESSION_OVER);
            };
            // The app is in use: that is activity of the Keyward session behind it.
            tx.touch_session(session.id, now)?;
            let issued = self.issue_tokens(tx, &grant, &session, &account, &scopes, None)?;
            Ok(Verdict::Granted(issued))
        })
    }

    /// A new access token, refresh token and ID token for `grant`, none outliving `session`.
    /// Every grant type issues through here (a sender constraint, `cnf`, is added here).
    pub(super) fn issue_tokens(
        &self,
        tx: &mut Tx<'_>,
        grant: &Grant,
        session: &Session,
        account: &Account,
        scopes: &str,
        nonce: Option<&str>,
    ) -> Result<TokenResponse> {
        let now = self.now();
        let access = new_secret();
        let refresh = new_secret();
        let access_expires = (now + ACCESS_TOKEN_TTL_MS).min(session.expires_at);
        for (secret, kind, expires_at) in [
            (&access, TokenKind::Access, access_expires),
            (&refresh, TokenKind::Refresh, session.expires_at),
        ] {
            tx.insert_token(&TokenRecord {
                hash: hash_secret(secret).to_vec(),
                grant_id: grant.id,
                kind,
                scopes: scopes.to_string(),
                created_at: now,
                expires_at,
                used_at: None,
            })?;
        }
        let provider = &self.oidc;
        let claims = IdTokenClaims {
            iss: &provider.issuer,
            sub: provider.subject(&grant.client_id, account.id),
            aud: &grant.client_id,
            azp: &grant.client_id,
            exp: seconds(now + ID_TOKEN_TTL_MS),
            iat: seconds(now),
            auth_time: seconds(grant.auth_time),
            nonce,
            sid: &grant.sid,
            acr: &grant.acr,
            amr: grant.amr.split_whitespace().collect(),
            profile: ProfileClaims::for_scopes(scopes, account),
        };
        let id_token = provider.sign(tx, &claims, Some("JWT"))?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: seconds(access_expires - now + 999),
            refresh_token: Some(refresh),
            id_token: Some(id_token),
            scope: scopes.to_string(),
        })
    }

    /// A token of `client` usable now: its record, grant and live session.
    fn usable_token(
        &self,
        tx: &Tx<'_>,
        token: &str,
    ) -> Result<Option<(TokenRecord, Grant, Session, Account)>> {
        let now = self.now();
        let Some(record) = tx.token(&hash_secret(token))? else {
            return Ok(None);
        };
        if now >= record.expires_at || record.used_at.is_some() {
            return Ok(None);
        }
        let Some(grant) = tx.grant(record.grant_id)? else {
            return Ok(None);
        };
        if grant.ended_at.is_some() {
            return Ok(None);
        }
        Ok(self
            .live_session_of(tx, &grant)?
            .map(|(s, a)| (record, grant, s, a)))
    }

    /// `POST /oauth2/introspect`: confidential clients only, and only their own tokens are
    /// reported active (a resource server cannot probe another app's tokens).
    pub fn introspect(
        &self,
        auth: ClientAuth,
        params: &[(String, String)],
    ) -> Result<IntrospectionResponse> {
        let token = required(params, "token")?.to_string();
        let client = self.client_of(&auth)?;
        self.store.read(|tx| {
            if client.auth_method == ClientAuthMethod::None {
                return Err(oauth(
                    OAuthCode::InvalidClient,
                    "a public client cannot introspect tokens",
                ));
            }
            let Some((record, grant, _, account)) = self.usable_token(tx, &token)? else {
                return Ok(IntrospectionResponse::default());
            };
            if grant.client_id != client.client_id {
                return Ok(IntrospectionResponse::default());
            }
            Ok(IntrospectionResponse {
                active: true,
                scope: Some(record.scopes),
                client_id: Some(grant.client_id.clone()),
                token_type: Some(
                    match record.kind {
                        TokenKind::Access => "Bearer",
                        TokenKind::Refresh => "refresh_token",
                    }
                    .into(),
                ),
                exp: Some(seconds(record.expires_at)),
                iat: Some(seconds(record.created_at)),
                sub: Some(self.oidc.subject(&grant.client_id, account.id)),
                aud: Some(grant.client_id),
                iss: Some(self.oidc.issuer.clone()),
                sid: Some(grant.sid),
            })
        })
    }

    /// `GET|POST /oauth2/userinfo` with an access token.
    pub fn userinfo(&self, access_token: &str) -> Result<Userinfo> {
        self.store
            .read(|tx| match self.usable_token(tx, access_token)? {
                Some((record, grant, _, account)) if record.kind == TokenKind::Access => {
                    Ok(Userinfo {
                        sub: self.oidc.subject(&grant.client_id, account.id),
                        profile: ProfileClaims::for_scopes(&record.scopes, &account),
                    })
                }
                _ => Err(oauth(
                    OAuthCode::InvalidToken,
                    "the access token is not valid",
                )),
            })
    }

    /// `POST /oauth2/revoke` (RFC 7009): a refresh token ends its whole grant; an access token
    /// only itself. Unknown tokens and other clients' are answered the same, with success.
    pub fn revoke_token(&self, auth: ClientAuth, params: &[(String, String)]) -> Result<()> {
        let token = required(params, "token")?.to_string();
        let now = self.now();
        let client = self.client_of(&auth)?;
        self.store.write(|tx| {
            let hash = hash_secret(&token);
            let Some(record) = tx.token(&hash)? else {
                return Ok(());
            };
            let Some(grant) = tx.grant(record.grant_id)? else {
                return Ok(());
            };
            if grant.client_id != client.client_id {
                return Ok(());
            }
            match record.kind {
                TokenKind::Refresh => {
                    tx.end_grant(grant.id, "revoked", now)?;
                }
                TokenKind::Access => {
                    tx.delete_token(&hash)?;
                }
            }
            Ok(())
        })
    }

    /// `GET|POST /oauth2/logout`: the app signs the person out. Every token of the app's
    /// sign-in (named by the `id_token_hint`'s `sid`) ends; the Keyward session itself stays,
    /// as do other apps' sign-ins. The browser goes back only to a registered address.
    pub fn end_app_session(&self, req: EndSession) -> Result<Authorization> {
        let page = |m: &str| Ok(Authorization::ErrorPage(m.to_string()));
        let Some(hint) = req.id_token_hint.as_deref().filter(|h| h.len() <= 8 * 1024) else {
            return page("The app did not say which sign-in to end (no id_token_hint).");
        };
        let now = self.now();
        let found = self.store.read(|tx| {
            let Some(claims) = self.oidc.verify_own::<Hint>(tx, hint, now)? else {
                return Ok::<_, ServerError>(None);
            };
            Ok(tx.oidc_client(&claims.aud)?.map(|c| (claims, c)))
        })?;
        let Some((claims, client)) = found else {
            return page("That is not a sign-in Keyward issued.");
        };
        if req
            .client_id
            .as_ref()
            .is_some_and(|id| *id != client.client_id)
        {
            return page("The app's sign-out request is inconsistent (client_id).");
        }
        self.store.write(|tx| {
            for grant in tx.open_grants_by_sid(&claims.sid)? {
                if grant.client_id == client.client_id {
                    tx.end_grant(grant.id, "app_sign_out", now)?;
                }
            }
            Ok::<_, ServerError>(())
        })?;
        if let Some(uri) = &req.post_logout_redirect_uri
            && !client.post_logout_redirect_uris.iter().any(|r| r == uri)
        {
            return page(
                "The app asked to send you to an address it did not register, so Keyward will \
                 not send you anywhere. You are signed out of the app.",
            );
        }
        match &req.post_logout_redirect_uri {
            Some(uri) => {
                let mut pairs = Vec::new();
                if let Some(s) = req
                    .state
                    .as_deref()
                    .filter(|s| s.len() <= super::MAX_PARAM_CHARS)
                {
                    pairs.push(("state", s));
                }
                with_query(uri, &pairs).map(Authorization::Redirect)
            }
            None => Ok(Authorization::Message(format!(
                "You are signed out of {}. Your Keyward session is still open.",
                client.name
            ))),
        }
    }
}
