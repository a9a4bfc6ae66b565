//! Whole ceremonies: ask keywardd for options, let the authenticator answer for the origin of
//! the address the person chose (never one the server names), send the answer back.

use keyward_core::recovery_key::RecoveryKey;
use keyward_core::secret::{b64, unb64};
use keyward_proto::*;
use url::Url;

use crate::api::{Api, ClientError, Result};
use crate::authenticator::Authenticator;
use crate::site::Site;

/// Runs ceremonies against one keywardd, as a browser on the origin of `base` would: the
/// origin is `base`'s, and the server's RP ID must belong to it ([`Site`]).
pub struct Ceremonies {
    pub api: Api,
    site: Site,
    pub client: ClientInfo,
    /// The key a new session (account creation, sign-in, recovery redemption) is bound to,
    /// if any: see [`Ceremonies::binding_sessions_to`].
    session_key: Option<keyward_core::proof_key::ProofKey>,
}

impl Ceremonies {
    /// Connects to the server at `base`, the address the person chose. The origin every
    /// ceremony claims is that address's; the RP ID the server declares is accepted only if it
    /// is that host or a registrable suffix of it, else nothing is signed for this server.
    pub async fn connect(base: Url, client: ClientInfo) -> Result<Ceremonies> {
        // Refused before any request: plain http to another computer, or an IP address.
        Site::host_of(&base)?;
        let api = Api::new(base);
        let info = api.server_info().await?;
        let site = Site::of(api.base(), &info.rp_id)?;
        Ok(Ceremonies::new(api, site, client))
    }

    /// Ceremonies over `api` for a site the caller has already validated.
    pub fn new(api: Api, site: Site, client: ClientInfo) -> Ceremonies {
        Ceremonies {
            api,
            site,
            client,
            session_key: None,
        }
    }

    /// From now on, sessions opened here are bound to `key` (kept in software by the caller,
    /// apart from the token): the server accepts their token only with a DPoP proof by it.
    /// Use the token with [`Api::with_bound_token`] and this key.
    pub fn binding_sessions_to(&self, key: keyward_core::proof_key::ProofKey) -> Ceremonies {
        Ceremonies {
            api: self.api.clone(),
            site: self.site.clone(),
            client: self.client.clone(),
            session_key: Some(key),
        }
    }

    fn binding(&self) -> Option<SessionKeyBinding> {
        self.session_key.as_ref().map(|k| SessionKeyBinding {
            jwk: k.public_jwk(),
            kind: DeviceKeyKind::Software,
        })
    }

    /// The site every ceremony and recovery proof here is bound to.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The origin serialised as clientDataJSON carries it (`scheme://host[:port]`).
    pub fn origin(&self) -> String {
        self.site.origin()
    }

    pub fn rp_id(&self) -> &str {
        self.site.rp_id()
    }

    fn register(
        &self,
        key: &mut dyn Authenticator,
        options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential> {
        self.site.admit(&options.public_key.rp.id)?;
        Ok(key.register(self.site.origin_url(), options)?)
    }

    fn authenticate(
        &self,
        key: &mut dyn Authenticator,
        options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential> {
        self.site.admit(&options.public_key.rp_id)?;
        Ok(key.authenticate(self.site.origin_url(), options)?)
    }

    /// Runs `op` with `session`; if the server wants a fresh touch first, does the step-up
    /// with `key` and runs it once more, with the session's new token. Servers refuse such
    /// operations before anything happens, so nothing happens twice. Afterwards `session`
    /// holds whichever token is the session's (see [`Ceremonies::step_up`]).
    pub async fn with_step_up<T, F, Fut>(
        &self,
        session: &mut Api,
        key: &mut dyn Authenticator,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Api) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match op(session.clone()).await {
            Err(e) if e.code() == Some(ErrorCode::StepUpRequired) => {
                self.step_up(session, key).await?;
                op(session.clone()).await
            }
            other => other,
        }
    }

    pub async fn create_account(
        &self,
        key: &mut dyn Authenticator,
        username: &str,
        display_name: Option<&str>,
        nickname: Option<&str>,
    ) -> Result<SignedIn> {
        let begin = self
            .api
            .registration_begin(&RegistrationBeginRequest {
                username: username.into(),
                display_name: display_name.map(str::to_string),
            })
            .await?;
        let credential = self.register(key, &begin.options)?;
        self.api
            .registration_finish(&RegistrationFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                nickname: nickname.map(str::to_string),
                client: self.client.clone(),
                device_secret: None,
                binding: self.binding(),
            })
            .await
    }

    /// Usernameless when `username` is None.
    pub async fn sign_in(
        &self,
        key: &mut dyn Authenticator,
        username: Option<&str>,
        device_secret: Option<String>,
    ) -> Result<SignedIn> {
        let begin = self
            .api
            .sign_in_begin(&SignInBeginRequest {
                username: username.map(str::to_string),
            })
            .await?;
        let credential = self.authenticate(key, &begin.options)?;
        self.api
            .sign_in_finish(&SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                client: self.client.clone(),
                device_secret,
                binding: self.binding(),
            })
            .await
    }

    /// A fresh touch for sensitive operations in the next few minutes. The server replaces the
    /// session's token when it grants one, so `session` is given the new token: the old one is
    /// refused from then on. Whoever keeps the token elsewhere (a secret store, a live feed)
    /// takes it from `session` afterwards.
    pub async fn step_up(
        &self,
        session: &mut Api,
        key: &mut dyn Authenticator,
    ) -> Result<SessionView> {
        let begin = session.step_up_begin().await?;
        let credential = self.authenticate(key, &begin.options)?;
        let stepped = session
            .step_up_finish(&AssertionFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
            })
            .await?;
        if stepped.token.is_empty() {
            return Err(ClientError::Protocol(
                "the step-up's answer carries no token".into(),
            ));
        }
        *session = session.with_token(stepped.token);
        Ok(stepped.session)
    }

    /// Approves an agent's device code with a fresh touch of `key`, made for this approval
    /// alone (the session's token stays as it is).
    pub async fn approve_device(
        &self,
        session: &Api,
        key: &mut dyn Authenticator,
        user_code: &str,
    ) -> Result<DeviceDecision> {
        let begin = session.step_up_begin().await?;
        let credential = self.authenticate(key, &begin.options)?;
        session
            .approve_device(&DeviceApproval {
                user_code: user_code.to_string(),
                assertion: AssertionFinishRequest {
                    ceremony_id: begin.ceremony_id,
                    credential,
                },
            })
            .await
    }

    /// Registers another key; `key` also gives the fresh touch if the server asks for one
    /// (then `session` holds the session's new token).
    pub async fn add_key(
        &self,
        session: &mut Api,
        key: &mut dyn Authenticator,
        nickname: Option<&str>,
    ) -> Result<AuthenticatorView> {
        let begin = self
            .with_step_up(session, key, |api| async move {
                api.add_authenticator_begin().await
            })
            .await?;
        let credential = self.register(key, &begin.options)?;
        session
            .add_authenticator_finish(&AddAuthenticatorFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                nickname: nickname.map(str::to_string),
            })
            .await
    }

    /// Makes a new recovery key on this machine and registers its public half (`key` gives the
    /// fresh touch if the server asks). The caller shows the returned key to the user once and
    /// then forgets it. A key refused for want of a touch was never stored nor shown. After a
    /// step-up, `session` holds the session's new token.
    pub async fn new_recovery_key(
        &self,
        session: &mut Api,
        key: &mut dyn Authenticator,
    ) -> Result<(RecoveryKey, RecoveryKeyStatus)> {
        self.with_step_up(session, key, |api| async move {
            let recovery = RecoveryKey::generate();
            let request = SetRecoveryKeyRequest {
                public_key: b64(&recovery.public_key()),
            };
            Ok((recovery, api.set_recovery_key(&request).await?))
        })
        .await
    }

    /// Proves the user still has the key (confirm at setup, or a drill later), using nothing up.
    pub async fn prove_recovery_key(
        &self,
        session: &Api,
        typed: &str,
        purpose: RecoveryPurpose,
    ) -> Result<RecoveryKeyStatus> {
        let key = parse_typed(typed)?;
        let c = session.recovery_challenge(purpose).await?;
        let signature = self.sign_challenge(&key, &c)?;
        session
            .recovery_verify(&RecoveryProof {
                challenge_id: c.challenge_id,
                signature,
            })
            .await
    }

    /// Redeems a recovery key on a new machine: opens the recovery window.
    pub async fn redeem_recovery_key(
        &self,
        username: &str,
        typed: &str,
    ) -> Result<RecoveryStarted> {
        let key = parse_typed(typed)?;
        let c = self.api.redeem_begin(username).await?;
        let signature = self.sign_challenge(&key, &c)?;
        self.api
            .redeem_finish(&RedeemFinishRequest {
                challenge_id: c.challenge_id,
                signature,
                client: self.client.clone(),
                binding: self.binding(),
            })
            .await
    }

    /// Cancels a pending recovery with any enrolled key: one ceremony.
    pub async fn cancel_recovery(&self, key: &mut dyn Authenticator) -> Result<AccountView> {
        let begin = self.api.recovery_cancel_begin(None).await?;
        let credential = self.authenticate(key, &begin.options)?;
        self.api
            .recovery_cancel_finish(&SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                client: self.client.clone(),
                device_secret: None,
                binding: None,
            })
            .await
    }

    /// The proof for one server challenge, for the purpose the challenge was issued for,
    /// framed with the RP ID validated at connect (never one the server names later).
    fn sign_challenge(&self, key: &RecoveryKey, c: &RecoveryChallenge) -> Result<String> {
        let challenge = unb64(&c.challenge)
            .ok_or_else(|| ClientError::Protocol("challenge is not base64url".into()))?;
        Ok(b64(&key.sign(c.purpose, self.site.rp_id(), &challenge)))
    }
}

/// A recovery key as typed; a typo is caught here, before it counts as an attempt.
fn parse_typed(typed: &str) -> Result<RecoveryKey> {
    RecoveryKey::parse(typed).map_err(|e| ClientError::Api {
        status: 400,
        error: ApiError {
            code: ErrorCode::InvalidInput,
            message: e.to_string(),
        },
    })
}
