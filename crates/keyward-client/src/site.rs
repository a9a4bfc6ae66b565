//! Which site a native client signs for. A native client *is* the WebAuthn client, so it does
//! what a browser does: the origin comes from the URL the person chose, never from the server,
//! and the server may name as RP ID only that host or a registrable suffix of it (WebAuthn L3
//! §5.1.3 step 8, HTML's "is a registrable domain suffix of or is equal to", against the
//! Public Suffix List). Without this a look-alike server could declare another site's RP ID,
//! relay that site's options, and have the person's key sign for it.

use sha2::{Digest, Sha256};
use url::{Host, Url};

/// A validated (origin, RP ID) pair: what every ceremony and recovery proof is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    origin: Url,
    rp_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("{0} is not an https:// address")]
    NotWeb(String),
    #[error(
        "{0} uses plain http, which is allowed only for this computer (http://localhost); use https://"
    )]
    PlainHttp(String),
    #[error(
        "{0} is an IP address; security keys sign for a domain name (use localhost for this computer)"
    )]
    NotADomain(String),
    #[error("the server claims the site \"{rp_id}\", which {host} does not belong to")]
    ForeignRpId { rp_id: String, host: String },
    #[error(
        "the server asked for a ceremony for \"{asked}\", but this connection is to \"{bound}\""
    )]
    OtherRpId { asked: String, bound: String },
}

impl Site {
    /// The site for `url` (the address the person chose), with the RP ID the server declares,
    /// refused unless that RP ID is the host or a registrable domain suffix of it.
    pub fn of(url: &Url, rp_id: &str) -> Result<Site, SiteError> {
        let host = Site::host_of(url)?;
        let foreign = || SiteError::ForeignRpId {
            rp_id: rp_id.to_string(),
            host: host.clone(),
        };
        // The RP ID as a host, exactly as given: "Example.com" or "example.com." is not the
        // name a key would hash.
        match Host::parse(rp_id) {
            Ok(Host::Domain(d)) if d == rp_id => {}
            _ => return Err(foreign()),
        }
        if !is_registrable_suffix_or_equal(rp_id, &host) {
            return Err(foreign());
        }
        let origin = Url::parse(&url.origin().ascii_serialization()).map_err(|_| foreign())?;
        Ok(Site {
            origin,
            rp_id: rp_id.to_string(),
        })
    }

    /// The host of an address a ceremony may run for: https, or plain http to `localhost`
    /// only, and a domain name (browsers run no ceremony on an IP address).
    pub fn host_of(url: &Url) -> Result<String, SiteError> {
        let host = match url.host() {
            Some(Host::Domain(d)) => d.to_string(),
            Some(Host::Ipv4(_) | Host::Ipv6(_)) => {
                return Err(SiteError::NotADomain(url.to_string()));
            }
            None => return Err(SiteError::NotWeb(url.to_string())),
        };
        match url.scheme() {
            "https" => Ok(host),
            "http" if is_localhost(&host) => Ok(host),
            "http" => Err(SiteError::PlainHttp(url.to_string())),
            _ => Err(SiteError::NotWeb(url.to_string())),
        }
    }

    /// The origin as a URL (scheme, host and port only).
    pub fn origin_url(&self) -> &Url {
        &self.origin
    }

    /// The origin serialised as a browser writes it in clientDataJSON: `scheme://host[:port]`,
    /// no trailing slash.
    pub fn origin(&self) -> String {
        self.origin.origin().ascii_serialization()
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// Refuses a ceremony whose options name another RP ID than the one validated at connect:
    /// the key would sign for whatever the options say.
    pub fn admit(&self, asked: &str) -> Result<(), SiteError> {
        if asked == self.rp_id {
            Ok(())
        } else {
            Err(SiteError::OtherRpId {
                asked: asked.to_string(),
                bound: self.rp_id.clone(),
            })
        }
    }
}

/// `localhost` and names under it, which resolve to this computer only (a potentially
/// trustworthy origin over plain http, as browsers treat it).
fn is_localhost(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// HTML's "is a registrable domain suffix of or is equal to", with the Public Suffix List.
fn is_registrable_suffix_or_equal(suffix: &str, host: &str) -> bool {
    if suffix == host {
        return true;
    }
    if suffix.is_empty() || !host.ends_with(&format!(".{suffix}")) {
        return false;
    }
    // A public suffix itself ("com", "co.uk", "github.io") is nobody's to claim.
    if psl::suffix_str(suffix) == Some(suffix) {
        return false;
    }
    // Nor a name inside the host's own public suffix.
    let host_suffix = psl::suffix_str(host).unwrap_or(host);
    !(host_suffix == suffix || host_suffix.ends_with(&format!(".{suffix}")))
}

/// The clientDataJSON a browser on `origin` writes (WebAuthn L3 §5.8.1.1, the limited
/// verification algorithm's order: `type`, `challenge`, `origin`, `crossOrigin`), and its
/// SHA-256, which is all the authenticator signs.
pub fn client_data(kind: &str, challenge: &[u8], origin: &Url) -> (Vec<u8>, Vec<u8>) {
    let json = format!(
        r#"{{"type":{},"challenge":{},"origin":{},"crossOrigin":false}}"#,
        serde_json::Value::String(kind.into()),
        serde_json::Value::String(keyward_core::secret::b64(challenge)),
        serde_json::Value::String(origin.origin().ascii_serialization()),
    )
    .into_bytes();
    let hash = Sha256::digest(&json).to_vec();
    (json, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(url: &str, rp_id: &str) -> Result<Site, SiteError> {
        Site::of(&Url::parse(url).unwrap(), rp_id)
    }

    #[test]
    fn the_origin_comes_from_the_chosen_address_and_the_rp_id_must_be_its_host_or_a_registrable_suffix()
     {
        let s = site("https://login.example.com/some/path?x=1", "example.com").unwrap();
        assert_eq!(s.origin(), "https://login.example.com");
        assert_eq!(s.rp_id(), "example.com");
        assert_eq!(
            site("https://keyward.example.com:8443/", "keyward.example.com")
                .unwrap()
                .origin(),
            "https://keyward.example.com:8443"
        );
        assert_eq!(
            site("http://localhost:8080", "localhost").unwrap().origin(),
            "http://localhost:8080"
        );
        assert!(site("https://login.example.co.uk", "example.co.uk").is_ok());

        for (url, rp_id) in [
            // Another site altogether: the phishing case.
            ("http://localhost:8080", "example.com"),
            ("https://examp1e.com", "example.com"),
            ("https://example.com", "login.example.com"),
            ("https://notexample.com", "example.com"),
            // Public suffixes, which belong to nobody.
            ("https://login.example.com", "com"),
            ("https://login.example.co.uk", "co.uk"),
            ("https://someone.github.io", "github.io"),
            // Not the name as a key would hash it.
            ("https://login.example.com", "Example.com"),
            ("https://login.example.com", "example.com."),
            ("https://login.example.com", ""),
        ] {
            assert!(
                matches!(site(url, rp_id), Err(SiteError::ForeignRpId { .. })),
                "{url} {rp_id}"
            );
        }
    }

    #[test]
    fn plain_http_is_for_this_computer_only_and_ip_addresses_are_no_site() {
        assert!(matches!(
            site("http://keyward.example.com", "keyward.example.com"),
            Err(SiteError::PlainHttp(_))
        ));
        assert!(matches!(
            site("http://127.0.0.1:8080", "127.0.0.1"),
            Err(SiteError::NotADomain(_))
        ));
        assert!(matches!(
            site("https://[::1]:8443", "localhost"),
            Err(SiteError::NotADomain(_))
        ));
        assert!(matches!(
            site("ftp://example.com", "example.com"),
            Err(SiteError::NotWeb(_))
        ));
    }

    #[test]
    fn options_for_another_rp_id_are_refused() {
        let s = site("https://login.example.com", "example.com").unwrap();
        assert!(s.admit("example.com").is_ok());
        assert!(s.admit("bank.example").is_err());
    }

    #[test]
    fn client_data_is_what_a_browser_writes() {
        let (json, hash) = client_data(
            "webauthn.get",
            b"\x01\x02",
            &Url::parse("http://localhost:8080/x").unwrap(),
        );
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            r#"{"type":"webauthn.get","challenge":"AQI","origin":"http://localhost:8080","crossOrigin":false}"#
        );
        assert_eq!(hash, Sha256::digest(&json).to_vec());
    }
}
