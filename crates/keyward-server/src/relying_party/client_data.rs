//! A client-data check webauthn-rs leaves out: it checks `crossOrigin` only at registration,
//! so an assertion made in a frame under another site (WebAuthn L3 §7.2 step 13) passed. Here
//! no ceremony may run in a frame under another site.
//!
//! The exact-origin comparison (§7.1 step 9, §7.2 step 12; webauthn-rs compares the parsed
//! scheme, host and port) must wait for the native clients: webauthn-authenticator-rs, which
//! the desktop app and the CLI drive keys through, writes the origin as a URL with a trailing
//! slash (`http://localhost:8080/`), so an exact check would refuse every hardware key.

use serde::Deserialize;

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "crossOrigin")]
    cross_origin: Option<bool>,
    #[serde(rename = "topOrigin")]
    top_origin: Option<String>,
}

/// Why this clientDataJSON must be refused, if it must.
pub(super) fn refusal(client_data_json: &[u8]) -> Option<&'static str> {
    let Ok(data) = serde_json::from_slice::<ClientData>(client_data_json) else {
        return Some("client data is not the JSON WebAuthn defines");
    };
    if data.cross_origin == Some(true) || data.top_origin.is_some() {
        return Some("ceremony ran in a frame under another site");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_data(rest: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"webauthn.get","challenge":"AA","origin":"http://localhost:8080"{rest}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_ceremony_in_a_frame_under_another_site_is_refused() {
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
