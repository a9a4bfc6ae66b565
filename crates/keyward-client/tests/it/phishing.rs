//! A server that claims another site: the client must refuse before any key is asked. The
//! stub is raw HTTP on loopback, so it can say whatever a look-alike (or an http server
//! tampered with in transit) would say.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keyward_client::*;
use keyward_proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// Serves `/api/v1/server` declaring `rp_id`, and every ceremony begin with options for
/// `options_rp_id` (what a phishing server relays from the real site). Records each request.
/// Requests as (request line, body).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn stub(rp_id: &str, options_rp_id: &str) -> (Url, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let info = serde_json::json!({
        "rp_id": rp_id, "rp_name": "Keyward", "origins": [format!("https://{rp_id}")],
        "version": "0", "session_idle_ms": 900_000, "session_absolute_ms": 43_200_000,
        "recovery_window_ms": 86_400_000,
    });
    let challenge = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let ceremony_id = "00000000-0000-4000-8000-000000000001";
    let assertion = serde_json::json!({ "ceremony_id": ceremony_id, "options": { "publicKey": {
        "challenge": challenge, "rpId": options_rp_id, "allowCredentials": [],
        "userVerification": "required",
    }}});
    let registration = serde_json::json!({ "ceremony_id": ceremony_id, "options": { "publicKey": {
        "rp": { "id": options_rp_id, "name": "Bank" },
        "user": { "id": "AQID", "name": "ada", "displayName": "Ada" },
        "challenge": challenge,
        "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }],
        "authenticatorSelection": {
            "residentKey": "required", "requireResidentKey": true, "userVerification": "required",
        },
    }}});
    let recovery = serde_json::json!({
        "challenge_id": ceremony_id, "purpose": "redeem", "challenge": challenge,
        "expires_at": 1_795_478_700_000_i64,
    });
    // The shapes are the real wire types, so the client gets as far as the key.
    serde_json::from_value::<AssertionBegin>(assertion.clone()).unwrap();
    serde_json::from_value::<RegistrationBegin>(registration.clone()).unwrap();
    serde_json::from_value::<RecoveryChallenge>(recovery.clone()).unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&request[..head_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while request.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let line = head.lines().next().unwrap_or_default().to_string();
            let body = String::from_utf8_lossy(&request[head_end..]).to_string();
            record.lock().unwrap().push((line.clone(), body));
            let path = line.split(' ').nth(1).unwrap_or_default();
            let body = match path {
                "/api/v1/server" => info.to_string(),
                "/api/v1/sign-in/begin"
                | "/api/v1/step-up/begin"
                | "/api/v1/recovery/cancel/begin" => assertion.to_string(),
                "/api/v1/registration/begin" | "/api/v1/authenticators/begin" => {
                    registration.to_string()
                }
                "/api/v1/recovery/redeem/begin" => recovery.to_string(),
                _ => r#"{"code":"internal","message":"stub"}"#.to_string(),
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (
        Url::parse(&format!("http://localhost:{port}")).unwrap(),
        seen,
    )
}

/// An authenticator that only counts how often it was asked.
#[derive(Default)]
struct Recorder(Arc<AtomicUsize>);

impl Authenticator for Recorder {
    fn label(&self) -> String {
        "recorder".into()
    }
    fn register(
        &mut self,
        _origin: &Url,
        _options: &CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, AuthenticatorError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(AuthenticatorError::Cancelled)
    }
    fn authenticate(
        &mut self,
        _origin: &Url,
        _options: &RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, AuthenticatorError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(AuthenticatorError::Cancelled)
    }
}

fn client() -> ClientInfo {
    ClientInfo {
        name: "test".into(),
        platform: "Linux".into(),
    }
}

#[tokio::test]
async fn a_server_claiming_another_sites_rp_id_is_refused_at_connect() {
    let (base, seen) = stub("example.com", "example.com").await;
    let Err(e) = Ceremonies::connect(base, client()).await else {
        panic!("connected to a server on localhost that claims example.com");
    };
    assert!(e.to_string().contains("does not belong to"), "{e}");
    // Nothing but the server's description was asked for: no ceremony, no recovery
    // challenge, so nothing was signed for example.com.
    let lines: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(lines, vec!["GET /api/v1/server HTTP/1.1".to_string()]);
}

#[tokio::test]
async fn options_relayed_for_another_site_are_refused_before_the_key_is_asked() {
    // The server names its own host at connect, then relays example.com's options.
    let (base, _seen) = stub("localhost", "example.com").await;
    let c = Ceremonies::connect(base, client()).await.unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let mut key = Recorder(asked.clone());

    let refused = |e: ClientError| {
        assert!(e.to_string().contains("but this connection is to"), "{e}");
    };
    refused(c.sign_in(&mut key, None, None).await.unwrap_err());
    refused(c.sign_in(&mut key, Some("ada"), None).await.unwrap_err());
    refused(
        c.create_account(&mut key, "ada", None, None)
            .await
            .unwrap_err(),
    );
    refused(c.cancel_recovery(&mut key).await.unwrap_err());
    refused(c.step_up(&mut c.api.clone(), &mut key).await.unwrap_err());
    assert_eq!(asked.load(Ordering::SeqCst), 0, "the key was asked");
}

#[tokio::test]
async fn plain_http_to_another_computer_and_ip_addresses_are_refused_before_any_request() {
    // Nothing listens there: a refusal that names the address proves no request was tried.
    for url in [
        "http://keyward.example.com:9",
        "http://127.0.0.1:9",
        "https://192.0.2.1:9",
    ] {
        let Err(e) = Ceremonies::connect(Url::parse(url).unwrap(), client()).await else {
            panic!("{url} was accepted");
        };
        assert!(
            !e.to_string().contains("cannot reach"),
            "{url} was tried: {e}"
        );
    }
}

/// The signature of the redemption the stub was sent, if any.
fn redemption(seen: &Seen) -> Option<Vec<u8>> {
    let body = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(l, _)| l.starts_with("POST /api/v1/recovery/redeem/finish"))
        .map(|(_, b)| b.clone())?;
    let proof: RedeemFinishRequest = serde_json::from_str(&body).unwrap();
    keyward_core::secret::unb64(&proof.signature)
}

#[tokio::test]
async fn a_recovery_key_proof_is_framed_only_with_the_rp_id_the_client_validated() {
    let key = keyward_core::recovery_key::RecoveryKey::generate();
    let challenge =
        keyward_core::secret::unb64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
    let signed_for = |signature: &[u8], rp_id: &str| {
        keyward_core::recovery_key::verify_proof(
            &key.public_key(),
            RecoveryPurpose::Redeem,
            rp_id,
            &challenge,
            signature,
        )
    };

    // A server on localhost claiming example.com never gets as far as a recovery challenge.
    let (base, seen) = stub("example.com", "example.com").await;
    if let Ok(c) = Ceremonies::connect(base, client()).await {
        let _ = c.redeem_recovery_key("ada", &key.to_display()).await;
        let signature = redemption(&seen).unwrap();
        panic!(
            "a recovery proof was sent; framed for example.com: {}",
            signed_for(&signature, "example.com")
        );
    }
    assert_eq!(redemption(&seen), None);

    // An honest one gets a proof framed with the RP ID the client checked against its address.
    let (base, seen) = stub("localhost", "localhost").await;
    let c = Ceremonies::connect(base, client()).await.unwrap();
    // The stub refuses the finish; what matters is what was signed.
    let _ = c.redeem_recovery_key("ada", &key.to_display()).await;
    let signature = redemption(&seen).unwrap();
    assert!(signed_for(&signature, "localhost"));
    assert!(!signed_for(&signature, "example.com"));
}
