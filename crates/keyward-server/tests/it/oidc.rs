//! keywardd as an OpenID Connect provider, end to end: a real server on loopback, the
//! `openidconnect` crate as the app (a client library no one here wrote) verifying ID tokens
//! against the JWKS, and the attacks an OAuth provider must refuse. On both engines.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyward_proto::*;
use keyward_server::oidc::{NewClient, clients};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse as _,
};
use reqwest::header::{COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::browser::Browser;
use crate::harness::*;

mod backchannel;

const REDIRECT: &str = "https://chat.example/callback";

/// A registered app, as its operator was told: ID and (confidential) secret.
pub(crate) struct App {
    pub(crate) id: String,
    pub(crate) secret: Option<String>,
    /// client_secret_post rather than client_secret_basic.
    pub(crate) post: bool,
}

fn register(h: &Harness, name: &str, auth_method: &str) -> App {
    register_full(h, name, auth_method, None, false)
}

/// `register`, with a back-channel logout URI.
fn register_app(
    h: &Harness,
    name: &str,
    auth_method: &str,
    backchannel_logout_uri: Option<String>,
) -> App {
    register_full(h, name, auth_method, backchannel_logout_uri, false)
}

/// An app registered by the operator's command; `device_grant` allows it the device grant.
pub(crate) fn register_with(h: &Harness, name: &str, auth_method: &str, device_grant: bool) -> App {
    register_full(h, name, auth_method, None, device_grant)
}

fn register_full(
    h: &Harness,
    name: &str,
    auth_method: &str,
    backchannel_logout_uri: Option<String>,
    device_grant: bool,
) -> App {
    let r = clients::add(
        &h.store(),
        &NewClient {
            client_id: None,
            name: name.into(),
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec!["https://chat.example/bye".into()],
            scopes: vec![],
            auth_method: Some(auth_method.into()),
            secret_hash: None,
            backchannel_logout_uri,
            jwks: None,
            device_grant,
        },
        T0,
    )
    .unwrap();
    App {
        id: r.client.client_id,
        secret: r.secret,
        post: auth_method == "client_secret_post",
    }
}

pub(crate) fn issuer(h: &Harness) -> String {
    h.origin.origin().ascii_serialization()
}

/// The app's HTTP client: never follows redirects (oauth2's advice against SSRF), and the
/// browser here is our own requests, so every 303 is looked at.
pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(keyward_core::secret::random_bytes::<32>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn query_of(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn get_param(url: &str, name: &str) -> Option<String> {
    query_of(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

impl Harness {
    /// `GET /oauth2/authorize?params` as the browser sends it; the response, not followed.
    async fn authorize(
        &self,
        browser: Option<&Browser>,
        params: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut url = url::Url::parse(&format!("{}/oauth2/authorize", self.base)).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        let mut req = no_redirects().get(url);
        if let Some(b) = browser {
            req = req.header(COOKIE, b.cookies());
        }
        req.send().await.unwrap()
    }

    /// POST to the consent API as Keyward's own page with `browser`'s cookies.
    async fn decide(
        &self,
        browser: &Browser,
        request_id: &str,
        decision: &str,
    ) -> reqwest::Response {
        self.as_own_page(self.browser_request(
            browser,
            Method::POST,
            &format!("/api/v1/oauth/requests/{request_id}/{decision}"),
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
    }

    /// The whole browser part of a sign-in to `app`: to the consent screen, approved; the
    /// redirect back to the app (with code, state and iss).
    async fn consent_flow(
        &self,
        browser: &Browser,
        app: &App,
        challenge: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", app.id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile"),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        let res = self.authorize(Some(browser), &params).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let location = res.headers()[LOCATION].to_str().unwrap().to_string();
        if location.starts_with(REDIRECT) {
            return location; // consented before: the code at once
        }
        let id = location
            .strip_prefix(&format!("{}/#/authorize/", issuer(self)))
            .unwrap_or_else(|| panic!("not the consent screen: {location}"))
            .to_string();
        let res = self.decide(browser, &id, "approve").await;
        assert_eq!(res.status(), StatusCode::OK);
        let decision: AuthorizationDecision = res.json().await.unwrap();
        decision.redirect_to
    }

    /// `POST /oauth2/token` (form, client_secret_basic if the app has a secret).
    pub(crate) async fn token(
        &self,
        app: &App,
        form: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let mut req = no_redirects().post(format!("{}/oauth2/token", self.base));
        let mut form = form.to_vec();
        match &app.secret {
            Some(secret) if app.post => {
                form.push(("client_id", app.id.as_str()));
                form.push(("client_secret", secret.as_str()));
            }
            Some(secret) => req = req.basic_auth(&app.id, Some(secret)),
            None => form.push(("client_id", app.id.as_str())),
        }
        let res = req.form(&form).send().await.unwrap();
        assert_eq!(res.headers()["cache-control"], "no-store");
        (res.status(), res.json().await.unwrap())
    }

    async fn exchange(
        &self,
        app: &App,
        code: &str,
        verifier: &str,
    ) -> (StatusCode, serde_json::Value) {
        self.token(
            app,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    pub(crate) async fn refresh(
        &self,
        app: &App,
        refresh_token: &str,
    ) -> (StatusCode, serde_json::Value) {
        self.token(
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// The app's access token no longer introspects and its refresh token is refused.
    async fn assert_app_sign_in_ended(&self, app: &App, tokens: &serde_json::Value) {
        assert!(!self.introspect(app, &s(tokens, "access_token")).await);
        assert_eq!(
            self.refresh(app, &s(tokens, "refresh_token")).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    pub(crate) async fn introspect(&self, app: &App, token: &str) -> bool {
        let res = no_redirects()
            .post(format!("{}/oauth2/introspect", self.base))
            .basic_auth(&app.id, app.secret.as_ref())
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: IntrospectionResponse = res.json().await.unwrap();
        body.active
    }

    pub(crate) async fn userinfo(&self, access_token: &str) -> StatusCode {
        no_redirects()
            .get(format!("{}/oauth2/userinfo", self.base))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A signed-in browser, an app, and a fresh set of tokens for it.
    async fn signed_in_app(
        &self,
        key: &mut keyward_softkey::SoftKey,
        app: &App,
    ) -> (Browser, serde_json::Value) {
        let browser = self.signed_in_browser(key).await;
        let tokens = self.app_tokens(&browser, app).await;
        (browser, tokens)
    }

    /// `spare` added (by the session `fresh`), `app` signed in with `key`, then `key` reported
    /// lost: the app's tokens from that sign-in.
    pub(crate) async fn app_signed_in_then_its_key_lost(
        &self,
        fresh: &str,
        key: &mut keyward_softkey::SoftKey,
        spare: &mut keyward_softkey::SoftKey,
        app: &App,
    ) -> serde_json::Value {
        let h = self;
        h.add_key(fresh, spare, "spare").await.unwrap();
        let (_, tokens) = h.signed_in_app(key, app).await;
        let keys: Vec<AuthenticatorView> = h.get("/api/v1/authenticators", fresh).await.unwrap();
        let first = keys.iter().find(|k| k.nickname != "spare").unwrap().id;
        let res = h
            .http
            .post(format!(
                "{}/api/v1/authenticators/{first}/report-lost",
                h.base
            ))
            .bearer_auth(fresh)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        tokens
    }

    async fn app_tokens(&self, browser: &Browser, app: &App) -> serde_json::Value {
        let (verifier, challenge) = pkce();
        let back = self.consent_flow(browser, app, &challenge, &[]).await;
        let code = get_param(&back, "code").unwrap();
        let (status, tokens) = self.exchange(app, &code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        tokens
    }
}

pub(crate) fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_string()
}

/// The code flow as an app runs it with the openidconnect crate: discovery, PKCE, nonce, the
/// ID token verified against the JWKS; acr, amr, auth_time, sid, and the consented claims.
async fn run_with_library(
    h: &Harness,
    browser: &Browser,
    app: &App,
) -> (openidconnect::core::CoreIdTokenClaims, serde_json::Value) {
    let http = no_redirects();
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer(h)).unwrap(), &http)
        .await
        .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(app.id.clone()),
        app.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
    .set_auth_type(if app.post {
        openidconnect::AuthType::RequestBody
    } else {
        openidconnect::AuthType::BasicAuth
    });
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let res = no_redirects()
        .get(url.as_str().replace(&issuer(h), &h.base))
        .header(COOKIE, browser.cookies())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()[LOCATION].to_str().unwrap().to_string();
    let back = match location.strip_prefix(&format!("{}/#/authorize/", issuer(h))) {
        Some(id) => {
            let decision: AuthorizationDecision =
                h.decide(browser, id, "approve").await.json().await.unwrap();
            decision.redirect_to
        }
        None => location,
    };
    assert_eq!(get_param(&back, "state").unwrap(), *state.secret());
    assert_eq!(get_param(&back, "iss").unwrap(), issuer(h), "RFC 9207");
    let code = get_param(&back, "code").unwrap();
    let clock = h.clock.clone();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    assert!(tokens.refresh_token().is_some());
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256])
        .set_time_fn(move || {
            chrono::DateTime::from_timestamp_millis(keyward_core::Clock::now(&*clock)).unwrap()
        });
    let id_token = tokens.id_token().unwrap();
    let claims = id_token.claims(&verifier, &nonce).unwrap().clone();
    (claims, payload(&id_token.to_string()))
}

/// A JWT's payload as JSON (after the library verified it), for claims it does not model.
fn payload(jwt: &str) -> serde_json::Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn an_app_signs_a_person_in_and_the_client_library_verifies_the_id_token() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let wiki = register(&h, "Wiki", "client_secret_post");
    let browser = h.signed_in_browser(&mut key).await;

    let (claims, raw) = run_with_library(&h, &browser, &chat).await;
    assert_eq!(
        claims.auth_context_ref().unwrap().as_str(),
        "phr",
        "a virtual key is not attested hardware"
    );
    let amr: Vec<&str> = claims
        .auth_method_refs()
        .unwrap()
        .iter()
        .map(|a| a.as_str())
        .collect();
    assert_eq!(amr, ["pop", "user", "mfa", "swk"]);
    assert!(claims.auth_time().is_some());
    assert_eq!(claims.preferred_username().unwrap().as_str(), "ada");
    let sid = raw["sid"].as_str().unwrap().to_string();
    assert_eq!(raw["azp"], chat.id.as_str());
    assert!(
        raw.get("email").is_none(),
        "nothing beyond the consented scopes"
    );

    // The second app sees another subject and another sid for the same person and session.
    let (other, other_raw) = run_with_library(&h, &browser, &wiki).await;
    assert_ne!(
        claims.subject(),
        other.subject(),
        "pairwise: no two apps can correlate"
    );
    assert_ne!(other_raw["sid"].as_str().unwrap(), sid);
    // The same app again: the same subject, and no consent screen (remembered).
    let (again, _) = run_with_library(&h, &browser, &chat).await;
    assert_eq!(claims.subject(), again.subject());

    // Each app sign-in is on the person's log as urgent, so the live alert fires.
    let token = h
        .sign_in(&mut key, Some("ada"), "laptop")
        .await
        .unwrap()
        .token;
    let apps: Vec<SecurityEvent> = h
        .events(&token)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::AppSignIn)
        .collect();
    assert_eq!(apps.len(), 3);
    assert!(apps.iter().all(|e| e.urgency == Urgency::Urgent));
    assert!(
        apps.iter()
            .any(|e| e.detail.client_name.as_deref() == Some("Wiki"))
    );
}

#[tokio::test]
async fn discovery_says_what_an_app_needs_and_the_issuer_is_the_origin() {
    let h = Harness::start().await;
    let m: serde_json::Value = reqwest::get(format!("{}/.well-known/openid-configuration", h.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], issuer(&h));
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(m["backchannel_logout_supported"], true);
    assert_eq!(m["backchannel_logout_session_supported"], true);
    assert_eq!(
        m["subject_types_supported"],
        serde_json::json!(["pairwise"])
    );
    assert_eq!(
        m["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    assert_eq!(m["acr_values_supported"], serde_json::json!(["phr"]));
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
        "userinfo_endpoint",
    ] {
        assert!(
            m[endpoint].as_str().unwrap().starts_with(&issuer(&h)),
            "{endpoint}"
        );
    }
    let rfc8414: serde_json::Value =
        reqwest::get(format!("{}/.well-known/oauth-authorization-server", h.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(rfc8414, m);
}

#[tokio::test]
async fn a_token_signed_before_a_rotation_verifies_against_the_jwks_after_it() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let browser = h.signed_in_browser(&mut key).await;
    let before = h.app_tokens(&browser, &chat).await;
    let old_kid = jsonwebtoken::decode_header(s(&before, "id_token"))
        .unwrap()
        .kid
        .unwrap();

    let log_key = keyward_server::log_seal::load_key(&std::path::PathBuf::from(format!(
        "{}.log-key",
        h.db.display()
    )))
    .unwrap()
    .unwrap();
    let rotated = keyward_server::oidc::keys::rotate(
        &h.store(),
        &log_key,
        keyward_core::Clock::now(&*h.clock),
    )
    .unwrap();
    assert_ne!(rotated.new_kid, old_kid);
    let after = h.app_tokens(&browser, &chat).await;
    let new_kid = jsonwebtoken::decode_header(s(&after, "id_token"))
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(
        old_kid, new_kid,
        "the new key signs at once, without a restart"
    );

    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{}/oauth2/jwks", h.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (token, kid) in [(&before, &old_kid), (&after, &new_kid)] {
        let jwk = jwks
            .find(kid)
            .unwrap_or_else(|| panic!("{kid} not published"));
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&[&chat.id]);
        v.set_issuer(&[issuer(&h)]);
        v.validate_exp = false; // the manual clock is in 2026; the check here is the signature
        jsonwebtoken::decode::<serde_json::Value>(
            s(token, "id_token"),
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &v,
        )
        .unwrap();
    }
    // Once every token the old key signed has expired, it is no longer published.
    h.clock.advance_secs(7 * 60);
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{}/oauth2/jwks", h.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(jwks.find(&old_kid).is_none());
    assert!(jwks.find(&new_kid).is_some());
    assert!(
        !serde_json::to_string(&jwks).unwrap().contains("\"d\""),
        "no private part"
    );

    // The operator's command does the same (on the system clock, as in production).
    let (code, out) = keywardd_tool([
        "rotate-signing-key",
        "--db",
        &h.db_url,
        "--log-key",
        &format!("{}.log-key", h.db.display()),
    ]);
    assert_eq!(code, 0, "{out}");
    let latest = h.app_tokens(&browser, &chat).await;
    let latest_kid = jsonwebtoken::decode_header(s(&latest, "id_token"))
        .unwrap()
        .kid
        .unwrap();
    assert!(out.contains(&latest_kid), "{out}");
    // A wrong log key changes nothing.
    let wrong = h.dir.path().join("wrong.log-key");
    std::fs::write(&wrong, keyward_core::secret::b64(&[9; 32])).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (code, _) = keywardd_tool([
        "rotate-signing-key",
        "--db",
        &h.db_url,
        "--log-key",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
}

#[tokio::test]
async fn tokens_work_until_the_keyward_session_ends_and_a_refresh_is_activity() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (browser, tokens) = h.signed_in_app(&mut key, &chat).await;
    let access = s(&tokens, "access_token");
    assert!(h.introspect(&chat, &access).await);
    assert_eq!(h.userinfo(&access).await, StatusCode::OK);

    // Refreshing every 10 minutes keeps the Keyward session (15 minutes idle) alive.
    let mut refresh = s(&tokens, "refresh_token");
    for _ in 0..3 {
        h.clock.advance_secs(10 * 60);
        let (status, next) = h.refresh(&chat, &refresh).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        refresh = s(&next, "refresh_token");
    }
    // Signing out of Keyward ends everything the app holds, at once.
    let (_, fresh) = h.refresh(&chat, &refresh).await;
    let res = h
        .as_own_page(h.browser_request(&browser, Method::POST, "/api/v1/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!h.introspect(&chat, &s(&fresh, "access_token")).await);
    assert_eq!(
        h.userinfo(&s(&fresh, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = h.refresh(&chat, &s(&fresh, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn deleting_the_account_ends_the_apps_tokens() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (browser, tokens) = h.signed_in_app(&mut key, &chat).await;
    let access = s(&tokens, "access_token");
    assert!(h.introspect(&chat, &access).await);
    // The browser's session has just signed in: fresh enough to delete.
    let res = h
        .as_own_page(h.browser_request(&browser, Method::DELETE, "/api/v1/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(!h.introspect(&chat, &access).await);
    assert_eq!(h.userinfo(&access).await, StatusCode::UNAUTHORIZED);
    let (status, body) = h.refresh(&chat, &s(&tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn ending_the_session_from_another_device_or_its_idle_expiry_ends_the_apps_tokens() {
    let h = Harness::start().await;
    let mut key = new_key();
    let first = h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");

    // Ended from another session (the desktop app, say).
    let (_, tokens) = h.signed_in_app(&mut key, &chat).await;
    let sessions: Vec<SessionView> = h.get("/api/v1/sessions", &first.token).await.unwrap();
    let browser_session = sessions.iter().find(|s| !s.current).unwrap().id;
    let fresh = h.step_up(&first.token, &mut key).await;
    let _: EndedSessions = h
        .delete(&format!("/api/v1/sessions/{browser_session}"), &fresh)
        .await
        .unwrap();
    h.assert_app_sign_in_ended(&chat, &tokens).await;

    // Idle expiry: nothing ends the session explicitly, the clock does.
    let (_, tokens) = h.signed_in_app(&mut key, &chat).await;
    h.clock.advance_secs(9 * 60);
    assert!(
        h.introspect(&chat, &s(&tokens, "access_token")).await,
        "introspection is not activity"
    );
    h.clock.advance_secs(7 * 60);
    h.assert_app_sign_in_ended(&chat, &tokens).await;
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_grant_and_raises_an_urgent_alert() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (_, tokens) = h.signed_in_app(&mut key, &chat).await;
    let first = s(&tokens, "refresh_token");
    let (status, rotated) = h.refresh(&chat, &first).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(s(&rotated, "refresh_token"), first, "rotated");

    let (status, body) = h.refresh(&chat, &first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The thief's reuse ended the legitimate app's newer tokens too.
    assert!(!h.introspect(&chat, &s(&rotated, "access_token")).await);
    assert_eq!(
        h.refresh(&chat, &s(&rotated, "refresh_token")).await.0,
        StatusCode::BAD_REQUEST
    );

    let token = h
        .sign_in(&mut key, Some("ada"), "laptop")
        .await
        .unwrap()
        .token;
    let reused: Vec<SecurityEvent> = h
        .events(&token)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::AppTokenReused)
        .collect();
    assert_eq!(reused.len(), 1);
    assert_eq!(reused[0].urgency, Urgency::Urgent);
    assert_eq!(reused[0].detail.client_name.as_deref(), Some("Chat"));
}

#[tokio::test]
async fn codes_are_single_use_short_lived_bound_to_their_client_verifier_and_redirect() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let other = register(&h, "Other", "client_secret_basic");
    let browser = h.signed_in_browser(&mut key).await;
    let invalid_grant = |(status, body): (StatusCode, serde_json::Value)| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
        assert!(body["error_description"].is_string());
    };

    // Reused: the second exchange is refused and what the first issued is revoked.
    let (verifier, challenge) = pkce();
    let code = get_param(
        &h.consent_flow(&browser, &chat, &challenge, &[]).await,
        "code",
    )
    .unwrap();
    let (status, tokens) = h.exchange(&chat, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    invalid_grant(h.exchange(&chat, &code, &verifier).await);
    assert!(
        !h.introspect(&chat, &s(&tokens, "access_token")).await,
        "a reused code revokes what it issued"
    );

    // Wrong verifier: refused, and the code is used up.
    let (verifier, challenge) = pkce();
    let code = get_param(
        &h.consent_flow(&browser, &chat, &challenge, &[]).await,
        "code",
    )
    .unwrap();
    invalid_grant(h.exchange(&chat, &code, &pkce().0).await);
    invalid_grant(h.exchange(&chat, &code, &verifier).await);

    // Another client's code.
    let (verifier, challenge) = pkce();
    let code = get_param(
        &h.consent_flow(&browser, &chat, &challenge, &[]).await,
        "code",
    )
    .unwrap();
    invalid_grant(h.exchange(&other, &code, &verifier).await);

    // Expired.
    let (verifier, challenge) = pkce();
    let code = get_param(
        &h.consent_flow(&browser, &chat, &challenge, &[]).await,
        "code",
    )
    .unwrap();
    h.clock.advance_secs(61);
    invalid_grant(h.exchange(&chat, &code, &verifier).await);

    // Another redirect URI than the code's.
    let (verifier, challenge) = pkce();
    let code = get_param(
        &h.consent_flow(&browser, &chat, &challenge, &[]).await,
        "code",
    )
    .unwrap();
    invalid_grant(
        h.token(
            &chat,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://chat.example/other"),
                ("code_verifier", &verifier),
            ],
        )
        .await,
    );

    // A wrong client secret is invalid_client, 401.
    let impostor = App {
        id: chat.id.clone(),
        secret: Some("not-the-secret".into()),
        post: false,
    };
    let (status, body) = h.exchange(&impostor, "whatever", &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    // An unregistered client too.
    let nobody = App {
        id: "nobody".into(),
        secret: Some("x".into()),
        post: false,
    };
    assert_eq!(
        h.exchange(&nobody, "whatever", &verifier).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refresh_tokens_are_bound_to_their_client_and_scopes_never_grow() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let other = register(&h, "Other", "client_secret_basic");
    let browser = h.signed_in_browser(&mut key).await;
    let (verifier, challenge) = pkce();
    let url = h.consent_flow(&browser, &chat, &challenge, &[]).await;
    let code = get_param(&url, "code").unwrap();
    let (_, tokens) = h.exchange(&chat, &code, &verifier).await;
    let refresh = s(&tokens, "refresh_token");

    let (status, body) = h.refresh(&other, &refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // Narrowing is allowed, widening is not.
    let (status, narrowed) = h
        .token(
            &chat,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "openid"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{narrowed}");
    assert_eq!(narrowed["scope"], "openid");
    let (status, body) = h
        .token(
            &chat,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &s(&narrowed, "refresh_token")),
                ("scope", "openid profile"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // Other client's introspection sees nothing of this app's tokens.
    assert!(!h.introspect(&other, &s(&narrowed, "access_token")).await);
}

#[tokio::test]
async fn a_bad_client_or_redirect_uri_gets_a_page_of_ours_and_never_a_redirect() {
    let h = Harness::start().await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (_, challenge) = pkce();
    let base = |client: &str, redirect: &str| -> Vec<(String, String)> {
        vec![
            ("response_type".into(), "code".into()),
            ("client_id".into(), client.into()),
            ("redirect_uri".into(), redirect.into()),
            ("scope".into(), "openid".into()),
            ("state".into(), "s".into()),
            ("code_challenge".into(), challenge.clone()),
            ("code_challenge_method".into(), "S256".into()),
        ]
    };
    for (client, redirect) in [
        ("unregistered", REDIRECT),
        (chat.id.as_str(), "https://chat.example/callback/extra"),
        (chat.id.as_str(), "https://chat.example/callback?x=1"),
        (chat.id.as_str(), "https://CHAT.example/callback"),
        (chat.id.as_str(), "https://chat.example/Callback"),
        (chat.id.as_str(), "https://evil.example/callback"),
    ] {
        let params = base(client, redirect);
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let res = h.authorize(None, &pairs).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{client} {redirect}");
        assert!(res.headers().get(LOCATION).is_none(), "no open redirect");
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert!(res.text().await.unwrap().contains("Keyward"));
    }
}

#[tokio::test]
async fn bad_requests_go_back_to_the_app_with_error_state_and_iss() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (_, challenge) = pkce();
    let long = "x".repeat(5000);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "profile")], "invalid_scope"),
        (vec![("scope", "openid email")], "invalid_scope"),
        (
            vec![("acr_values", "phrh")],
            "unmet_authentication_requirements",
        ),
        (vec![("nonce", long.as_str())], "invalid_request"),
        (vec![("request", "eyJ")], "request_not_supported"),
        (vec![("prompt", "none")], "login_required"),
    ];
    for (overrides, error) in cases {
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &chat.id),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "st"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in &overrides {
            params.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                params.push((k, v));
            }
        }
        let res = h.authorize(None, &params).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{overrides:?}");
        let to = res.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(
            get_param(&to, "error").as_deref(),
            Some(error),
            "{overrides:?}: {to}"
        );
        assert_eq!(get_param(&to, "state").as_deref(), Some("st"));
        assert_eq!(get_param(&to, "iss"), Some(issuer(&h)));
        assert!(get_param(&to, "code").is_none());
    }
    // A parameter given twice.
    let res = h
        .authorize(
            None,
            &[
                ("response_type", "code"),
                ("client_id", &chat.id),
                ("redirect_uri", REDIRECT),
                ("scope", "openid"),
                ("scope", "openid profile"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    assert_eq!(
        get_param(res.headers()[LOCATION].to_str().unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    // Nothing was stored for any of them.
    let pending: i64 = h
        .store()
        .read(|tx| tx.raw_value("SELECT COUNT(*) FROM oidc_requests", &[]))
        .unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn consent_needs_the_own_page_check_and_prompt_login_needs_a_fresh_ceremony() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "none");
    let browser = h.signed_in_browser(&mut key).await;
    let (verifier, challenge) = pkce();
    let res = h
        .authorize(
            Some(&browser),
            &[
                ("response_type", "code"),
                ("client_id", &chat.id),
                ("redirect_uri", REDIRECT),
                ("scope", "openid profile"),
                ("state", "s"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    let location = res.headers()[LOCATION].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap().to_string();

    let view: AuthorizationRequestView = h
        .browser_request(
            &browser,
            Method::GET,
            &format!("/api/v1/oauth/requests/{id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view.client_name, "Chat");
    assert_eq!(view.redirect_origin, "https://chat.example");
    assert!(view.signed_in && !view.already_consented && !view.needs_fresh_sign_in);
    assert_eq!(view.scopes.len(), 2);
    // Not signed in, the view still shows, as not signed in.
    let anonymous: AuthorizationRequestView = h
        .request(Method::GET, &format!("/api/v1/oauth/requests/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!anonymous.signed_in);

    // Approve without the CSRF header (a form on another site posting with the cookie).
    let res = h
        .browser_request(
            &browser,
            Method::POST,
            &format!("/api/v1/oauth/requests/{id}/approve"),
        )
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Not signed in: 401.
    let res = h
        .as_own_page(h.request(
            Method::POST,
            &format!("/api/v1/oauth/requests/{id}/approve"),
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = h.decide(&browser, &id, "approve").await;
    let back: AuthorizationDecision = res.json().await.unwrap();
    // A public client: PKCE is its proof.
    let code = get_param(&back.redirect_to, "code").unwrap();
    assert_eq!(h.exchange(&chat, &code, &verifier).await.0, StatusCode::OK);
    // Used: the request is gone.
    assert_eq!(
        h.decide(&browser, &id, "approve").await.status(),
        StatusCode::NOT_FOUND
    );

    // prompt=login: even with consent, a fresh ceremony is needed, and a step-up after the
    // request satisfies it.
    h.clock.advance_secs(5);
    let res = h
        .authorize(
            Some(&browser),
            &[
                ("response_type", "code"),
                ("client_id", &chat.id),
                ("redirect_uri", REDIRECT),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("prompt", "login"),
            ],
        )
        .await;
    let id = res.headers()[LOCATION]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let view: AuthorizationRequestView = h
        .browser_request(
            &browser,
            Method::GET,
            &format!("/api/v1/oauth/requests/{id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(view.needs_fresh_sign_in && view.already_consented);
    let res = h.decide(&browser, &id, "approve").await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let error: ApiError = res.json().await.unwrap();
    assert_eq!(error.code, ErrorCode::StepUpRequired);

    // Deny: the app hears access_denied.
    let decision: AuthorizationDecision =
        h.decide(&browser, &id, "deny").await.json().await.unwrap();
    assert_eq!(
        get_param(&decision.redirect_to, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(get_param(&decision.redirect_to, "iss"), Some(issuer(&h)));
}

#[tokio::test]
async fn a_remembered_consent_is_listed_and_revoking_it_ends_the_apps_tokens() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (browser, tokens) = h.signed_in_app(&mut key, &chat).await;
    let consents: Vec<AppConsentView> = h
        .browser_request(&browser, Method::GET, "/api/v1/oauth/consents")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].client_name, "Chat");

    // prompt=none now works: signed in and consented.
    let (_, challenge) = pkce();
    let res = h
        .authorize(
            Some(&browser),
            &[
                ("response_type", "code"),
                ("client_id", &chat.id),
                ("redirect_uri", REDIRECT),
                ("scope", "openid profile"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("prompt", "none"),
            ],
        )
        .await;
    assert!(get_param(res.headers()[LOCATION].to_str().unwrap(), "code").is_some());

    let res = h
        .as_own_page(h.browser_request(
            &browser,
            Method::DELETE,
            &format!("/api/v1/oauth/consents/{}", chat.id),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let revoked: RevokedConsent = res.json().await.unwrap();
    assert!(revoked.grants_ended >= 1);
    assert!(!h.introspect(&chat, &s(&tokens, "access_token")).await);
    let res = h
        .authorize(
            Some(&browser),
            &[
                ("response_type", "code"),
                ("client_id", &chat.id),
                ("redirect_uri", REDIRECT),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("prompt", "none"),
            ],
        )
        .await;
    assert_eq!(
        get_param(res.headers()[LOCATION].to_str().unwrap(), "error").as_deref(),
        Some("consent_required")
    );
}

#[tokio::test]
async fn revocation_and_rp_initiated_logout_end_the_apps_sign_in() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let browser = h.signed_in_browser(&mut key).await;

    // RFC 7009: revoking the refresh token ends the grant, access token included.
    let tokens = h.app_tokens(&browser, &chat).await;
    let res = no_redirects()
        .post(format!("{}/oauth2/revoke", h.base))
        .basic_auth(&chat.id, chat.secret.as_ref())
        .form(&[("token", s(&tokens, "refresh_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!h.introspect(&chat, &s(&tokens, "access_token")).await);

    // Logout with the ID token as hint: back to the registered address with state.
    let tokens = h.app_tokens(&browser, &chat).await;
    let mut url = url::Url::parse(&format!("{}/oauth2/logout", h.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", &s(&tokens, "id_token"))
        .append_pair("post_logout_redirect_uri", "https://evil.example/")
        .append_pair("state", "bye");
    let res = no_redirects().get(url.clone()).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "an unregistered address is not redirected to"
    );
    assert!(res.headers().get(LOCATION).is_none());
    let tokens = h.app_tokens(&browser, &chat).await;
    let mut url = url::Url::parse(&format!("{}/oauth2/logout", h.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", &s(&tokens, "id_token"))
        .append_pair("post_logout_redirect_uri", "https://chat.example/bye")
        .append_pair("state", "bye");
    let res = no_redirects().get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[LOCATION],
        "https://chat.example/bye?state=bye"
    );
    assert!(!h.introspect(&chat, &s(&tokens, "access_token")).await);
    // The Keyward session itself is still open.
    let me = h
        .browser_request(&browser, Method::GET, "/api/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    // Without a post-logout address: a page of ours says so. A hint that is not ours: refused.
    let tokens = h.app_tokens(&browser, &chat).await;
    let mut url = url::Url::parse(&format!("{}/oauth2/logout", h.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", &s(&tokens, "id_token"));
    let res = no_redirects().get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("signed out of Chat"));
    assert!(!h.introspect(&chat, &s(&tokens, "access_token")).await);
    let forged = format!("{}x", s(&tokens, "id_token"));
    let res = no_redirects()
        .get(format!("{}/oauth2/logout?id_token_hint={forged}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_client_command_registers_an_app_and_prints_its_secret_once() {
    let h = Harness::start().await;
    let (code, out) = keywardd_tool([
        "client",
        "add",
        "--db",
        &h.db_url,
        "--name",
        "Chat",
        "--redirect-uri",
        REDIRECT,
        "--client-id",
        "chat",
    ]);
    assert_eq!(code, 0, "{out}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap()
        .to_string();
    let (code, out) = keywardd_tool(["client", "list", "--db", &h.db_url]);
    assert_eq!(code, 0);
    assert!(out.contains("chat\tChat\tclient_secret_basic") && !out.contains(&secret));
    let (code, _) = keywardd_tool([
        "client",
        "add",
        "--db",
        &h.db_url,
        "--name",
        "Evil",
        "--redirect-uri",
        "http://evil.example/cb",
    ]);
    assert_eq!(code, 2, "plain http to another host is refused");

    // The app works with the secret it was given.
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let app = App {
        id: "chat".into(),
        secret: Some(secret.clone()),
        post: false,
    };
    let browser = h.signed_in_browser(&mut key).await;
    h.app_tokens(&browser, &app).await;

    let (code, out) = keywardd_tool(["client", "remove", "--db", &h.db_url, "--client-id", "chat"]);
    assert_eq!(code, 0, "{out}");
    let (_, challenge) = pkce();
    let res = h
        .authorize(
            Some(&browser),
            &[
                ("response_type", "code"),
                ("client_id", "chat"),
                ("redirect_uri", REDIRECT),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "{:?} {out}",
        res.headers().get(LOCATION)
    );
    // Last: reading the SQLite file in this process drops the server's POSIX locks on it.
    assert!(
        !h.everything_stored()
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "only its hash is stored"
    );
}

#[tokio::test]
async fn apps_in_the_config_file_are_registered_at_start_and_follow_the_file() {
    let (secret, hash) = clients::new_secret_and_hash();
    let wiki = NewClient {
        client_id: Some("wiki".into()),
        name: "Wiki".into(),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![],
        scopes: vec![],
        auth_method: None,
        secret_hash: Some(hash),
        backchannel_logout_uri: None,
        jwks: None,
        device_grant: false,
    };
    let listed = wiki.clone();
    let h = Harness::start_with(move |c| c.oidc_clients = vec![listed]).await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let browser = h.signed_in_browser(&mut key).await;
    let app = App {
        id: "wiki".into(),
        secret: Some(secret),
        post: false,
    };
    h.app_tokens(&browser, &app).await;

    // Taken out of the file: gone at the next start, with its sign-ins.
    let h = h.restart_with(|c| c.oidc_clients = vec![]).await;
    let (_, challenge) = pkce();
    let res = h
        .authorize(
            Some(&browser),
            &[
                ("response_type", "code"),
                ("client_id", "wiki"),
                ("redirect_uri", REDIRECT),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // The TOML section, as check-config reads it: a bad entry is named.
    let file = h.dir.path().join("keywardd.toml");
    std::fs::write(
        &file,
        format!(
            "db = \"{}\"\n[[oidc_clients]]\nclient_id = \"wiki\"\nname = \"Wiki\"\nredirect_uris = [\"http://wiki.example/cb\"]\nauth_method = \"none\"\n",
            h.dir.path().join("other.db").display()
        ),
    )
    .unwrap();
    let (code, out) = keywardd_tool(["--config", file.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("OpenID client wiki (Wiki)") && out.contains("must be https"),
        "{out}"
    );
}

#[tokio::test]
async fn end_all_others_and_a_lost_key_end_the_apps_tokens_too() {
    let h = Harness::start().await;
    let mut key = new_key();
    let desk = h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (_, tokens) = h.signed_in_app(&mut key, &chat).await;
    let fresh = h.step_up(&desk.token, &mut key).await;
    let _: EndedSessions = h
        .post_empty("/api/v1/sessions/end-others", &fresh)
        .await
        .unwrap();
    assert!(!h.introspect(&chat, &s(&tokens, "access_token")).await);

    // Reporting the key that opened the app's session lost ends that session, and the app's.
    let mut spare = new_key();
    let tokens = h
        .app_signed_in_then_its_key_lost(&fresh, &mut key, &mut spare, &chat)
        .await;
    h.assert_app_sign_in_ended(&chat, &tokens).await;
}

#[tokio::test]
async fn max_age_asks_for_a_recent_ceremony_and_the_token_endpoint_takes_only_forms() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;
    let chat = register(&h, "Chat", "client_secret_basic");
    let (browser, _) = h.signed_in_app(&mut key, &chat).await;
    h.clock.advance_secs(120);
    let (_, challenge) = pkce();
    let params = [
        ("response_type", "code"),
        ("client_id", chat.id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("max_age", "60"),
    ];
    let res = h.authorize(Some(&browser), &params).await;
    let to = res.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(
        to.contains("/#/authorize/"),
        "consented, but the last ceremony is too old: {to}"
    );
    let id = to.rsplit('/').next().unwrap();
    let view: AuthorizationRequestView = h
        .browser_request(
            &browser,
            Method::GET,
            &format!("/api/v1/oauth/requests/{id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(view.needs_fresh_sign_in);
    let mut none = params.to_vec();
    none.push(("prompt", "none"));
    let res = h.authorize(Some(&browser), &none).await;
    assert_eq!(
        get_param(res.headers()[LOCATION].to_str().unwrap(), "error").as_deref(),
        Some("login_required")
    );

    let res = no_redirects()
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth(&chat.id, chat.secret.as_ref())
        .json(&serde_json::json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: OAuthErrorBody = res.json().await.unwrap();
    assert_eq!(body.error, "invalid_request");
    let (status, body) = h.token(&chat, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn a_private_key_jwt_client_signs_in_with_a_signed_assertion_each_used_once() {
    use p256::pkcs8::EncodePrivateKey;
    let h = Harness::start().await;
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "app-key-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    }]});
    let registered = clients::add(
        &h.store(),
        &NewClient {
            client_id: Some("agent".into()),
            name: "Agent".into(),
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec![],
            scopes: vec![],
            auth_method: Some("private_key_jwt".into()),
            secret_hash: None,
            backchannel_logout_uri: None,
            jwks: Some(jwks.to_string()),
            device_grant: false,
        },
        T0,
    )
    .unwrap();
    assert!(registered.secret.is_none());
    let signing = jsonwebtoken::EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes());
    let assertion = |jti: &str, exp_secs: i64| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("app-key-1".into());
        let now = keyward_core::Clock::now(&*h.clock) / 1000;
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({"iss": "agent", "sub": "agent", "aud": format!("{}/oauth2/token", issuer(&h)), "jti": jti, "iat": now, "exp": now + exp_secs}),
            &signing,
        )
        .unwrap()
    };
    let mut k = new_key();
    h.create_account(&mut k, "ada").await;
    let browser = h.signed_in_browser(&mut k).await;
    let app = App {
        id: "agent".into(),
        secret: None,
        post: false,
    };
    let exchange = |code: String, verifier: String, jwt: String| {
        let base = h.base.clone();
        async move {
            let res = no_redirects()
                .post(format!("{base}/oauth2/token"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &jwt),
                ])
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (verifier, challenge) = pkce();
    let code = get_param(
        &h.consent_flow(&browser, &app, &challenge, &[]).await,
        "code",
    )
    .unwrap();
    let jwt = assertion("one", 60);
    let (status, tokens) = exchange(code, verifier, jwt.clone()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // The same assertion again is refused, as are a long-lived one and another key's.
    let (verifier, challenge) = pkce();
    let code = get_param(
        &h.consent_flow(&browser, &app, &challenge, &[]).await,
        "code",
    )
    .unwrap();
    let (status, body) = exchange(code.clone(), verifier.clone(), jwt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, _) = exchange(code.clone(), verifier.clone(), assertion("two", 3600)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("app-key-1".into());
    let now = keyward_core::Clock::now(&*h.clock) / 1000;
    let forged = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": "agent", "sub": "agent", "aud": issuer(&h), "jti": "three", "exp": now + 60}),
        &jsonwebtoken::EncodingKey::from_ec_der(other.to_pkcs8_der().unwrap().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        exchange(code.clone(), verifier.clone(), forged).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The code was not spent by the refused attempts: client authentication comes first.
    let (status, body) = exchange(code, verifier, assertion("four", 60)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
