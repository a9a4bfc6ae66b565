//! Browsers: sessions in `__Host-` cookies the page's script never sees, CSRF refused on every
//! state-changing call and on sign-in itself, and the web UI served with its own strict CSP.

use keyward_proto::*;
use keyward_server::{CSRF_HEADER, DELIVERY_HEADER, DEVICE_COOKIE, SESSION_COOKIE};
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};

use crate::harness::*;

/// What a browser holds after a cookie sign-in.
pub(crate) struct Browser {
    pub(crate) session: String,
    pub(crate) device: String,
}

impl Browser {
    pub(crate) fn cookies(&self) -> String {
        format!(
            "{SESSION_COOKIE}={}; {DEVICE_COOKIE}={}",
            self.session, self.device
        )
    }
}

pub(crate) fn set_cookie<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

pub(crate) fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap()
}

impl Harness {
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A request as `browser` sends it: with its cookies.
    pub(crate) fn browser_request(
        &self,
        browser: &Browser,
        method: Method,
        path: &str,
    ) -> RequestBuilder {
        self.request(method, path).header(COOKIE, browser.cookies())
    }

    /// A read as `browser` makes it, answered with JSON.
    pub(crate) async fn browser_get<R: serde::de::DeserializeOwned>(
        &self,
        browser: &Browser,
        path: &str,
    ) -> R {
        self.browser_request(browser, Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The headers Keyward's own page sends with a state-changing request.
    pub(crate) fn as_own_page(&self, req: RequestBuilder) -> RequestBuilder {
        req.header(ORIGIN, self.origin.origin().ascii_serialization())
            .header(CSRF_HEADER, "1")
    }

    pub(crate) async fn browser_sign_in(
        &self,
        key: &mut keyward_softkey::SoftKey,
        device_cookie: Option<&str>,
        decorate: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> reqwest::Response {
        let begin = self.sign_in_begin(None).await;
        let credential = key.authenticate(&self.origin, &begin.options).unwrap();
        let mut req = self
            .request(Method::POST, "/api/v1/sign-in/finish")
            .header(DELIVERY_HEADER, "cookie")
            .json(&SignInFinishRequest {
                ceremony_id: begin.ceremony_id,
                credential,
                client: client("Chromium"),
                device_secret: None,
                binding: None,
            });
        if let Some(d) = device_cookie {
            req = req.header(COOKIE, format!("{DEVICE_COOKIE}={d}"));
        }
        decorate(req).send().await.unwrap()
    }

    pub(crate) async fn signed_in_browser(&self, key: &mut keyward_softkey::SoftKey) -> Browser {
        let res = self
            .browser_sign_in(key, None, |r| self.as_own_page(r))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        Browser {
            session: cookie_value(set_cookie(&res, SESSION_COOKIE).unwrap()),
            device: cookie_value(set_cookie(&res, DEVICE_COOKIE).unwrap()),
        }
    }

    async fn session_count(&self, token: &str) -> usize {
        self.get::<Vec<SessionView>>("/api/v1/sessions", token)
            .await
            .unwrap()
            .len()
    }
}

pub(crate) async fn error_of(res: reqwest::Response) -> (StatusCode, ApiError) {
    let status = res.status();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn a_browser_session_lives_in_httponly_host_cookies_and_never_in_the_body() {
    let h = Harness::start().await;
    let mut key = new_key();
    h.create_account(&mut key, "ada").await;

    let res = h
        .browser_sign_in(&mut key, None, |r| h.as_own_page(r))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let session = set_cookie(&res, SESSION_COOKIE).unwrap().to_string();
    let device = set_cookie(&res, DEVICE_COOKIE).unwrap().to_string();
    for cookie in [&session, &device] {
        for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(
                cookie.split("; ").any(|a| a == attribute),
                "{attribute} missing: {cookie}"
            );
        }
        assert!(!cookie.contains("Domain"), "a __Host- cookie has no Domain");
    }
    assert!(!session.contains("Max-Age"), "ends with the browser");
    let body: SignedIn = res.json().await.unwrap();
    assert_eq!(body.token, "", "the page's script never sees the token");
    assert_eq!(body.device_secret, "");

    let browser = Browser {
        session: cookie_value(&session),
        device: cookie_value(&device),
    };
    assert_eq!(browser.session.len(), 43, "a 256-bit token");
    let me: AccountView = h.browser_get(&browser, "/api/v1/account").await;
    assert_eq!(me.username, "ada");

    // The next sign-in from this browser sends its device cookie and is a known device.
    let again = h
        .browser_sign_in(&mut key, Some(&browser.device), |r| h.as_own_page(r))
        .await;
    let sessions: Vec<SessionView> = h.browser_get(&browser, "/api/v1/sessions").await;
    let first_device = sessions
        .iter()
        .find(|s| s.device.name == "Chromium")
        .unwrap()
        .device
        .id;
    let second: SignedIn = again.json().await.unwrap();
    assert_eq!(second.session.device.id, first_device);
}

#[tokio::test]
async fn a_cookie_session_refuses_state_changes_that_do_not_come_from_its_own_page() {
    let h = Harness::start().await;
    let mut key = new_key();
    let bearer = h.create_account(&mut key, "ada").await.token;
    let browser = h.signed_in_browser(&mut key).await;
    assert_eq!(h.session_count(&bearer).await, 2);

    let evil = "https://evil.example";
    type Decorate<'a> = Box<dyn Fn(RequestBuilder) -> RequestBuilder + 'a>;
    let attempts: Vec<(&str, Decorate)> = vec![
        ("no Origin, no CSRF header", Box::new(|r| r)),
        (
            "CSRF header but no Origin",
            Box::new(|r| r.header(CSRF_HEADER, "1")),
        ),
        (
            "another site's Origin",
            Box::new(move |r| r.header(ORIGIN, evil).header(CSRF_HEADER, "1")),
        ),
        (
            "own Origin but no CSRF header (a plain form post)",
            Box::new(|r| r.header(ORIGIN, h.origin.origin().ascii_serialization())),
        ),
    ];
    for (what, decorate) in &attempts {
        for (method, path) in [
            (Method::POST, "/api/v1/sessions/end-others"),
            (Method::POST, "/api/v1/sign-out"),
            (Method::POST, "/api/v1/step-up/begin"),
        ] {
            let req = h.browser_request(&browser, method.clone(), path);
            let (status, error) = error_of(decorate(req).send().await.unwrap()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {path}");
            assert_eq!(error.code, ErrorCode::Forbidden, "{what}: {path}");
        }
    }
    assert_eq!(h.session_count(&bearer).await, 2, "nothing changed");

    // Reading needs no CSRF header (SameSite=Strict and CORS keep other sites out).
    let res = h
        .browser_request(&browser, Method::GET, "/api/v1/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // From its own page, signing out works and tells the browser to drop the cookie.
    let res = h
        .as_own_page(h.browser_request(&browser, Method::POST, "/api/v1/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cleared = set_cookie(&res, SESSION_COOKIE).unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let res = h
        .browser_request(&browser, Method::GET, "/api/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the old cookie is dead"
    );
    assert_eq!(h.session_count(&bearer).await, 1);
}

#[tokio::test]
async fn a_sign_in_forced_on_a_browser_by_another_site_is_refused() {
    let h = Harness::start().await;
    let mut key = new_key();
    let bearer = h.create_account(&mut key, "ada").await.token;
    for (what, origin) in [
        ("another site", Some("https://evil.example")),
        ("no Origin", None),
    ] {
        let res = h
            .browser_sign_in(&mut key, None, |r| {
                let r = r.header(CSRF_HEADER, "1");
                match origin {
                    Some(o) => r.header(ORIGIN, o),
                    None => r,
                }
            })
            .await;
        assert!(set_cookie(&res, SESSION_COOKIE).is_none(), "{what}");
        let (status, error) = error_of(res).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
        assert_eq!(error.code, ErrorCode::Forbidden, "{what}");
    }
    let res = h
        .browser_sign_in(&mut key, None, |r| {
            h.as_own_page(r).header(DELIVERY_HEADER, "token-please")
        })
        .await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "only `cookie` is understood"
    );
    assert_eq!(h.session_count(&bearer).await, 1, "no session was made");
}

#[tokio::test]
async fn the_web_ui_is_served_with_its_own_strict_policy_beside_the_api() {
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(
        ui.path().join("index.html"),
        "<!doctype html><title>Keyward</title>",
    )
    .unwrap();
    std::fs::create_dir(ui.path().join("assets")).unwrap();
    std::fs::write(ui.path().join("assets/app.js"), "console.log(1)").unwrap();
    let dir = ui.path().to_path_buf();
    let h = Harness::start_with(|c| c.web_ui = Some(dir)).await;

    for path in ["/", "/sessions"] {
        let res = h.request(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(res.headers()["x-frame-options"], "DENY");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert!(res.text().await.unwrap().contains("<title>Keyward</title>"));
    }
    let res = h
        .request(Method::GET, "/assets/app.js")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );

    // The API keeps its own answers: JSON errors, not the page.
    let (status, error) = error_of(
        h.request(Method::GET, "/api/v1/nothing-here")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error.code),
        (StatusCode::NOT_FOUND, ErrorCode::NotFound)
    );
    let res = h
        .request(Method::GET, "/api/v1/server")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn without_a_web_ui_the_root_is_a_json_not_found() {
    let h = Harness::start().await;
    let (status, error) = error_of(h.request(Method::GET, "/").send().await.unwrap()).await;
    assert_eq!(
        (status, error.code),
        (StatusCode::NOT_FOUND, ErrorCode::NotFound)
    );
}

#[test]
fn a_web_ui_folder_without_index_html_is_refused_at_start() {
    let empty = tempfile::tempdir().unwrap();
    let mut config = keyward_server::Config::local(
        empty.path().join("k.db"),
        url::Url::parse("http://localhost:1").unwrap(),
    );
    config.web_ui = Some(empty.path().to_path_buf());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("no index.html"), "{err}");
}

#[tokio::test]
async fn over_tls_the_web_ui_and_the_api_send_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let ui = dir.path().join("ui");
    std::fs::create_dir(&ui).unwrap();
    std::fs::write(
        ui.join("index.html"),
        "<!doctype html><title>Keyward</title>",
    )
    .unwrap();
    let h = Harness::start_with(|c| {
        let port = c.origins[0].port().unwrap();
        c.origins = vec![url::Url::parse(&format!("https://localhost:{port}")).unwrap()];
        c.tls = Some(keyward_server::config::Tls {
            cert: cert.clone(),
            key,
        });
        c.web_ui = Some(ui);
    })
    .await;
    let port = h.origin.port().unwrap();
    // curl, a TLS client we did not configure, trusting only this certificate.
    for path in ["/", "/api/v1/server"] {
        // Off the test's runtime thread: the server answers on that thread.
        let (cert, url) = (cert.clone(), format!("https://localhost:{port}{path}"));
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "20",
                    "-D",
                    "-",
                    "-o",
                    "/dev/null",
                    "--cacert",
                ])
                .arg(&cert)
                .arg(url)
                .output()
                .expect("curl is installed")
        })
        .await
        .unwrap();
        let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            headers.starts_with("http/2 200") || headers.starts_with("http/1.1 200"),
            "{path}: {headers}"
        );
        assert!(
            headers.contains("strict-transport-security: max-age=63072000; includesubdomains"),
            "{path}: {headers}"
        );
    }
}

/// A browser holding a recovery session keeps it across a restart: its cookie lasts until the
/// enrolment deadline (a full session's cookie still ends with the browser). Completing the
/// recovery replaces it with a new session cookie, and the recovery cookie is refused.
#[tokio::test]
async fn a_recovery_session_cookie_outlives_the_browser_until_its_deadline() {
    let h = Harness::start_with(|c| c.policy.recovery_window_ms = 60_000).await;
    let mut key = new_key();
    let me = h.create_account(&mut key, "ada").await;
    let rk = keyward_core::recovery_key::RecoveryKey::generate();
    let token = h.step_up(&me.token, &mut key).await;
    let _: RecoveryKeyStatus = h
        .send(
            Method::PUT,
            "/api/v1/recovery-key",
            Some(&token),
            Some(&SetRecoveryKeyRequest {
                public_key: keyward_core::secret::b64(&rk.public_key()),
            }),
        )
        .await
        .unwrap();
    let c: RecoveryChallenge = h
        .post(
            "/api/v1/recovery/redeem/begin",
            None,
            &RedeemBeginRequest {
                username: "ada".into(),
            },
        )
        .await
        .unwrap();
    let sig = rk.sign(
        RecoveryPurpose::Redeem,
        "localhost",
        &keyward_core::secret::unb64(&c.challenge).unwrap(),
    );
    let res = h
        .as_own_page(h.request(Method::POST, "/api/v1/recovery/redeem/finish"))
        .header(DELIVERY_HEADER, "cookie")
        .json(&RedeemFinishRequest {
            challenge_id: c.challenge_id,
            signature: keyward_core::secret::b64(&sig),
            client: client("Chromium"),
            binding: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let session = set_cookie(&res, SESSION_COOKIE).unwrap().to_string();
    let deadline_secs = (60_000 + 30 * 24 * 3600 * 1000_i64) / 1000;
    assert!(
        session.contains(&format!("; Max-Age={deadline_secs}")),
        "{session}"
    );
    let browser = Browser {
        session: cookie_value(&session),
        device: cookie_value(set_cookie(&res, DEVICE_COOKIE).unwrap()),
    };
    // Days after the window, the browser (restarted, cookie kept) enrols and completes.
    h.clock.advance_secs(61 + 3 * 24 * 3600);
    let account: AccountView = h.browser_get(&browser, "/api/v1/account").await;
    assert_eq!(account.state, AccountState::RecoveryEnrolment);
    let mut replacement = new_key();
    let begin: RegistrationBegin = h
        .as_own_page(h.browser_request(&browser, Method::POST, "/api/v1/authenticators/begin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let credential = replacement.register(&h.origin, &begin.options).unwrap();
    let added = h
        .as_own_page(h.browser_request(&browser, Method::POST, "/api/v1/authenticators/finish"))
        .json(&AddAuthenticatorFinishRequest {
            ceremony_id: begin.ceremony_id,
            credential,
            nickname: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let new_rk = keyward_core::recovery_key::RecoveryKey::generate();
    let set = h
        .as_own_page(h.browser_request(&browser, Method::PUT, "/api/v1/recovery-key"))
        .json(&SetRecoveryKeyRequest {
            public_key: keyward_core::secret::b64(&new_rk.public_key()),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let done = h
        .as_own_page(h.browser_request(&browser, Method::POST, "/api/v1/recovery/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let new_session = set_cookie(&done, SESSION_COOKIE).unwrap().to_string();
    assert!(
        !new_session.contains("Max-Age"),
        "a full session's cookie ends with the browser"
    );
    let body: SignedIn = done.json().await.unwrap();
    assert!(
        body.token.is_empty() && body.device_secret.is_empty(),
        "never in the body"
    );
    assert_eq!(body.account.state, AccountState::Active);
    let old = h
        .browser_request(&browser, Method::GET, "/api/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let renewed = Browser {
        session: cookie_value(&new_session),
        device: browser.device.clone(),
    };
    let sessions: Vec<SessionView> = h.browser_get(&renewed, "/api/v1/sessions").await;
    assert_eq!(sessions.len(), 1);
}
