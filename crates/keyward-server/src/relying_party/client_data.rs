//! Client-data checks webauthn-rs leaves out, at registration and every assertion:
//! - no ceremony may run in a frame under another site: webauthn-rs checks `crossOrigin` only
//!   at registration, so an assertion made in such a frame (WebAuthn L3 §7.2 step 13) passed;
//! - the origin must be exactly one of the configured origins as serialised
//!   (`scheme://host[:port]`, §7.1 step 9, §7.2 step 12). webauthn-rs parses the string and
//!   compares scheme, host and port, so `http://localhost:8080/`, `…/phish?x=1#y`,
//!   `http://attacker@localhost:8080` and upper-case variants passed. Browsers always write
//!   the serialised origin, and so do Keyward's native clients (keyward-client's `site.rs`
//!   writes the client data for security keys; webauthn-authenticator-rs's own has a
//!   trailing slash and is refused here).

use serde::Deserialize;

#[derive(Deserialize)]
struct ClientData {
    origin: String,
    #[serde(rename = "crossOrigin")]
    cross_origin: Option<bool>,
    #[serde(rename = "topOrigin")]
    top_origin: Option<String>,
}

/// Why this clientDataJSON must be refused, if it must. `origins` are the configured origins,
/// serialised.
pub(super) fn refusal(client_data_json: &[u8], origins: &[String]) -> Option<&'static str> {
    let Ok(data) = serde_json::from_slice::<ClientData>(client_data_json) else {
        return Some("client data is not the JSON WebAuthn defines");
    };
    if !origins.contains(&data.origin) {
        return Some("origin is not exactly a configured origin");
    }
    if data.cross_origin == Some(true) || data.top_origin.is_some() {
        return Some("ceremony ran in a frame under another site");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_data(rest: &str) -> Vec<u8> {
        with_origin("http://localhost:8080", rest)
    }

    fn with_origin(origin: &str, rest: &str) -> Vec<u8> {
        format!(r#"{{"type":"webauthn.get","challenge":"AA","origin":"{origin}"{rest}}}"#)
            .into_bytes()
    }

    fn origins() -> Vec<String> {
        vec![
            "http://localhost:8080".into(),
            "https://keyward.example".into(),
        ]
    }

    #[test]
    fn only_a_configured_origin_exactly_as_serialised_is_accepted() {
        assert_eq!(
            refusal(&with_origin("http://localhost:8080", ""), &origins()),
            None
        );
        assert_eq!(
            refusal(&with_origin("https://keyward.example", ""), &origins()),
            None
        );
        for near in [
            "http://localhost:8080/",
            "http://localhost:8080/phish?x=1#y",
            "http://attacker@localhost:8080",
            "HTTP://LOCALHOST:8080",
            "http://Localhost:8080",
            "https://keyward.example:443",
            "http://localhost:8081",
            "",
        ] {
            assert!(
                refusal(&with_origin(near, ""), &origins()).is_some(),
                "{near}"
            );
        }
        assert!(refusal(br#"{"type":"webauthn.get","challenge":"AA"}"#, &origins()).is_some());
    }

    #[test]
    fn a_ceremony_in_a_frame_under_another_site_is_refused() {
        let refusal = |json: &[u8]| refusal(json, &origins());
        assert_eq!(refusal(&client_data("")), None);
        assert_eq!(refusal(&client_data(r#","crossOrigin":false"#)), None);
        for framed in [
            r#","crossOrigin":true"#,
            r#","topOrigin":"https://evil.example""#,
            r#","crossOrigin":"yes""#,
        ] {
            assert!(refusal(&client_data(framed)).is_some(), "{framed}");
        }
        assert!(refusal(b"not json").is_some());
    }
}
