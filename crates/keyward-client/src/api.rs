use keyward_proto::*;
use std::sync::{Arc, Mutex};

use keyward_core::proof_key::ProofKey;
use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// keywardd answered with an error; `message` is safe to show.
    #[error("{}", .error.message)]
    Api { status: u16, error: ApiError },
    #[error("cannot reach keywardd at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("keywardd sent something unexpected: {0}")]
    Protocol(String),
    #[error(transparent)]
    Authenticator(#[from] crate::authenticator::AuthenticatorError),
    /// The server asked to sign for a site the address the person chose does not belong to
    /// (or the address itself cannot be signed for); refused before any key is asked.
    #[error(transparent)]
    Site(#[from] crate::site::SiteError),
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The keywardd API. Cheap to clone; the session token, if any, travels with the value, and
/// so does the key the session is bound to: then every request carries a DPoP proof by it
/// (RFC 9449) with the server's latest nonce, and the token is sent as `DPoP`, never `Bearer`.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    proof: Option<Arc<ProofState>>,
}

/// A session key, the server's latest DPoP nonce, and the clock proofs are dated by.
struct ProofState {
    key: ProofKey,
    nonce: Mutex<Option<String>>,
    clock: Arc<dyn keyward_core::Clock>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never goes into logs.
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .field("signed_in", &self.token.is_some())
            .field("bound", &self.proof.is_some())
            .finish()
    }
}

impl Api {
    pub fn new(base: Url) -> Api {
        Api {
            http: reqwest::Client::new(),
            base,
            token: None,
            proof: None,
        }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The same server, acting with this session token.
    pub fn with_token(&self, token: impl Into<String>) -> Api {
        Api {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// The same server, acting with this session token bound to `key`: every request signs
    /// a DPoP proof. A step-up's new token (`with_token`) keeps the key.
    pub fn with_bound_token(&self, token: impl Into<String>, key: ProofKey) -> Api {
        self.with_bound_token_at(token, key, Arc::new(keyward_core::SystemClock))
    }

    /// As `with_bound_token`, dating proofs by `clock` (tests hold it to the server's).
    pub fn with_bound_token_at(
        &self,
        token: impl Into<String>,
        key: ProofKey,
        clock: Arc<dyn keyward_core::Clock>,
    ) -> Api {
        Api {
            token: Some(token.into()),
            proof: Some(Arc::new(ProofState {
                key,
                nonce: Mutex::new(None),
                clock,
            })),
            ..self.clone()
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The key this session is bound to, if it is.
    pub fn proof_key(&self) -> Option<&ProofKey> {
        self.proof.as_ref().map(|p| &p.key)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.url(path);
        let req = self.http.request(method.clone(), &url);
        match (&self.token, &self.proof) {
            (Some(t), Some(p)) => {
                let nonce = p.nonce.lock().ok().and_then(|n| n.clone());
                let iat = p.clock.now().div_euclid(1000);
                let proof = p
                    .key
                    .dpop_proof(method.as_str(), &url, iat, Some(t), nonce.as_deref());
                req.header(header::AUTHORIZATION, format!("DPoP {t}"))
                    .header("DPoP", proof)
            }
            (Some(t), None) => req.bearer_auth(t),
            _ => req,
        }
    }

    /// Keeps the server's latest DPoP nonce for the next proof.
    pub(crate) fn note_nonce(&self, headers: &reqwest::header::HeaderMap) {
        if let Some(p) = &self.proof
            && let Some(n) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok())
            && let Ok(mut slot) = p.nonce.lock()
        {
            *slot = Some(n.to_string());
        }
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<R> {
        match self.call_once(method.clone(), path, body).await {
            // The server wants its newer nonce in the proof (which `call_once` noted): once more.
            Err(e) if e.code() == Some(ErrorCode::ProofNonceRequired) => {
                self.call_once(method, path, body).await
            }
            other => other,
        }
    }

    async fn call_once<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<R> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.url(path),
            message: e.to_string(),
        })?;
        self.note_nonce(res.headers());
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.url(path),
            message: e.to_string(),
        })?;
        if status.is_success() {
            serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("{path}: {e}")))
        } else {
            let error = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiError {
                code: if status == StatusCode::UNAUTHORIZED {
                    ErrorCode::Unauthenticated
                } else {
                    ErrorCode::Internal
                },
                message: format!("keywardd answered {status}"),
            });
            Err(ClientError::Api {
                status: status.as_u16(),
                error,
            })
        }
    }

    async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        self.call(Method::GET, path, None::<&()>).await
    }
    async fn post<R: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<R> {
        self.call(Method::POST, path, Some(body)).await
    }
    async fn post_empty<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        self.call(Method::POST, path, None::<&()>).await
    }

    // ---- service ------------------------------------------------------------------------
    pub async fn health(&self) -> Result<Health> {
        self.get("/healthz").await
    }
    pub async fn server_info(&self) -> Result<ServerInfo> {
        self.get("/api/v1/server").await
    }
    /// The signed-in account's signed log head; with `seen` (one of the account's event IDs),
    /// also the log's digest at that event.
    pub async fn log_head(&self, seen: Option<i64>) -> Result<LogHead> {
        match seen {
            Some(id) => self.get(&format!("/api/v1/log/checkpoint?seen={id}")).await,
            None => self.get("/api/v1/log/checkpoint").await,
        }
    }

    // ---- ceremonies -----------------------------------------------------------------------
    pub async fn registration_begin(
        &self,
        req: &RegistrationBeginRequest,
    ) -> Result<RegistrationBegin> {
        self.post("/api/v1/registration/begin", req).await
    }
    pub async fn registration_finish(&self, req: &RegistrationFinishRequest) -> Result<SignedIn> {
        self.post("/api/v1/registration/finish", req).await
    }
    pub async fn sign_in_begin(&self, req: &SignInBeginRequest) -> Result<AssertionBegin> {
        self.post("/api/v1/sign-in/begin", req).await
    }
    pub async fn sign_in_finish(&self, req: &SignInFinishRequest) -> Result<SignedIn> {
        self.post("/api/v1/sign-in/finish", req).await
    }
    pub async fn step_up_begin(&self) -> Result<AssertionBegin> {
        self.post_empty("/api/v1/step-up/begin").await
    }
    /// The answer carries the session's new token: this one is refused from then on
    /// ([`crate::Ceremonies::step_up`] adopts it).
    pub async fn step_up_finish(&self, req: &AssertionFinishRequest) -> Result<SteppedUp> {
        self.post("/api/v1/step-up/finish", req).await
    }

    // ---- account ---------------------------------------------------------------------------
    pub async fn account(&self) -> Result<AccountView> {
        self.get("/api/v1/account").await
    }
    pub async fn readiness(&self) -> Result<Readiness> {
        self.get("/api/v1/readiness").await
    }

    // ---- authenticators --------------------------------------------------------------------
    pub async fn authenticators(&self) -> Result<Vec<AuthenticatorView>> {
        self.get("/api/v1/authenticators").await
    }
    pub async fn add_authenticator_begin(&self) -> Result<RegistrationBegin> {
        self.post_empty("/api/v1/authenticators/begin").await
    }
    pub async fn add_authenticator_finish(
        &self,
        req: &AddAuthenticatorFinishRequest,
    ) -> Result<AuthenticatorView> {
        self.post("/api/v1/authenticators/finish", req).await
    }
    pub async fn rename_authenticator(
        &self,
        id: Uuid,
        nickname: &str,
    ) -> Result<AuthenticatorView> {
        let body = RenameAuthenticatorRequest {
            nickname: nickname.into(),
        };
        self.call(
            Method::PATCH,
            &format!("/api/v1/authenticators/{id}"),
            Some(&body),
        )
        .await
    }
    pub async fn removal_impact(&self, id: Uuid) -> Result<RemovalImpact> {
        self.get(&format!("/api/v1/authenticators/{id}/removal-impact"))
            .await
    }
    pub async fn remove_authenticator(&self, id: Uuid) -> Result<EndedSessions> {
        self.call(
            Method::DELETE,
            &format!("/api/v1/authenticators/{id}"),
            None::<&()>,
        )
        .await
    }
    pub async fn report_lost(&self, id: Uuid) -> Result<EndedSessions> {
        self.post_empty(&format!("/api/v1/authenticators/{id}/report-lost"))
            .await
    }

    // ---- sessions --------------------------------------------------------------------------
    pub async fn sessions(&self) -> Result<Vec<SessionView>> {
        self.get("/api/v1/sessions").await
    }
    /// This token's own session (a recovery session may see its own, not the others).
    pub async fn current_session(&self) -> Result<SessionView> {
        self.get("/api/v1/session").await
    }
    pub async fn end_session(&self, id: Uuid) -> Result<EndedSessions> {
        self.call(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            None::<&()>,
        )
        .await
    }
    pub async fn end_other_sessions(&self) -> Result<EndedSessions> {
        self.post_empty("/api/v1/sessions/end-others").await
    }
    pub async fn sign_out(&self) -> Result<EndedSessions> {
        self.post_empty("/api/v1/sign-out").await
    }

    // ---- agents (the device grant) ---------------------------------------------------------
    /// What a device code an agent shows asks for (which agent, from where, which scopes).
    pub async fn device_request(&self, user_code: &str) -> Result<DeviceRequestView> {
        self.post(
            "/api/v1/oauth/device/lookup",
            &DeviceCodeEntry {
                user_code: user_code.to_string(),
            },
        )
        .await
    }
    /// Approves a device code with a step-up assertion made for this approval.
    pub async fn approve_device(&self, approval: &DeviceApproval) -> Result<DeviceDecision> {
        self.post("/api/v1/oauth/device/approve", approval).await
    }
    pub async fn deny_device(&self, user_code: &str) -> Result<DeviceDecision> {
        self.post(
            "/api/v1/oauth/device/deny",
            &DeviceCodeEntry {
                user_code: user_code.to_string(),
            },
        )
        .await
    }

    // ---- recovery --------------------------------------------------------------------------
    pub async fn recovery_key_status(&self) -> Result<RecoveryKeyStatus> {
        self.get("/api/v1/recovery-key").await
    }
    pub async fn set_recovery_key(&self, req: &SetRecoveryKeyRequest) -> Result<RecoveryKeyStatus> {
        self.call(Method::PUT, "/api/v1/recovery-key", Some(req))
            .await
    }
    pub async fn recovery_challenge(&self, purpose: RecoveryPurpose) -> Result<RecoveryChallenge> {
        self.post(
            "/api/v1/recovery-key/challenge",
            &RecoveryChallengeRequest { purpose },
        )
        .await
    }
    pub async fn recovery_verify(&self, req: &RecoveryProof) -> Result<RecoveryKeyStatus> {
        self.post("/api/v1/recovery-key/verify", req).await
    }
    pub async fn redeem_begin(&self, username: &str) -> Result<RecoveryChallenge> {
        self.post(
            "/api/v1/recovery/redeem/begin",
            &RedeemBeginRequest {
                username: username.into(),
            },
        )
        .await
    }
    pub async fn redeem_finish(&self, req: &RedeemFinishRequest) -> Result<RecoveryStarted> {
        self.post("/api/v1/recovery/redeem/finish", req).await
    }
    /// A recovery session that has enrolled a new key and a new recovery key becomes a full
    /// one: the answer carries its new token (this one is refused from then on).
    pub async fn complete_recovery(&self) -> Result<SignedIn> {
        self.call(Method::POST, "/api/v1/recovery/complete", None::<&()>)
            .await
    }
    pub async fn recovery_cancel_begin(&self, username: Option<&str>) -> Result<AssertionBegin> {
        self.post(
            "/api/v1/recovery/cancel/begin",
            &RecoveryCancelBeginRequest {
                username: username.map(str::to_string),
            },
        )
        .await
    }
    pub async fn recovery_cancel_finish(&self, req: &SignInFinishRequest) -> Result<AccountView> {
        self.post("/api/v1/recovery/cancel/finish", req).await
    }

    // ---- events ----------------------------------------------------------------------------
    /// Deletes the account (needs a fresh step-up: `Ceremonies::with_step_up`). keywardd
    /// answers 204 with no body.
    pub async fn delete_account(&self) -> Result<()> {
        let path = "/api/v1/account";
        let res = self
            .request(Method::DELETE, path)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.url(path),
                message: e.to_string(),
            })?;
        if res.status().is_success() {
            return Ok(());
        }
        let status = res.status().as_u16();
        let error = res.json::<ApiError>().await.unwrap_or_else(|_| ApiError {
            code: ErrorCode::Internal,
            message: format!("keywardd answered {status}"),
        });
        Err(ClientError::Api { status, error })
    }

    /// The account's whole log with what verifies it (`keyward verify-export`).
    pub async fn export_log(&self) -> Result<LogExport> {
        self.get("/api/v1/events/export").await
    }

    pub async fn events(&self, before: Option<i64>, limit: u32) -> Result<EventPage> {
        let mut path = format!("/api/v1/events?limit={limit}");
        if let Some(b) = before {
            path.push_str(&format!("&before={b}"));
        }
        self.get(&path).await
    }
}
