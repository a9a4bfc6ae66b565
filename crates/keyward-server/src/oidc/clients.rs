//! Apps registered by the operator: `keywardd client add|list|remove` and the config file's
//! `[[oidc_clients]]`; and how a client proves itself at the token endpoint.

use keyward_core::Store;
use keyward_core::secret::{b64, hash_secret, new_secret, unb64};
use keyward_core::store::{ClientAuthMethod, ClientSource, OidcClient, Tx};
use keyward_proto::Millis;
use url::Url;

use super::claims::SUPPORTED_SCOPES;
use super::{OAuthCode, oauth};
use crate::error::ServerError;

/// A client as the operator describes it (the command's flags or the config file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// The config file names it (stable across restarts); `client add` makes a random one.
    #[serde(default)]
    pub client_id: Option<String>,
    pub name: String,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Default: `openid profile`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `none` (public), `client_secret_basic` (the default) or `client_secret_post`.
    #[serde(default)]
    pub auth_method: Option<String>,
    /// Config file only, for a confidential client: the secret's hash as `keywardd client
    /// add --print-hash` printed it (base64url); the secret itself is never in the file.
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    /// `private_key_jwt`: the app's public keys as a JWKS document (JSON text).
    #[serde(default)]
    pub jwks: Option<String>,
    /// Allowed the device authorization grant (RFC 8628): an agent or CLI signs in by a code
    /// the person approves with a key. Such a client may have no redirect URI.
    #[serde(default)]
    pub device_grant: bool,
}

/// A client just registered; `secret` is shown once and stored only hashed.
#[derive(Debug)]
pub struct RegisteredClient {
    pub client: OidcClient,
    pub secret: Option<String>,
}

/// A redirect or logout URI an app may register: absolute, no fragment, https (http only to a
/// loopback host, for apps on the person's own machine).
fn check_uri(uri: &str, what: &str) -> Result<(), ServerError> {
    let invalid = |why: &str| Err(ServerError::InvalidInput(format!("{what} {uri}: {why}")));
    if uri.len() > super::MAX_PARAM_CHARS {
        return invalid("too long");
    }
    let Ok(url) = Url::parse(uri) else {
        return invalid("not an absolute URL");
    };
    if url.fragment().is_some() {
        return invalid("a redirect URI has no fragment");
    }
    // Registered as it is written: the match at authorization is exact, so what is stored
    // must be what an app will send (Url would add a trailing slash, lower-case, ...).
    if url.as_str() != uri {
        return invalid(&format!("write it as {url}"));
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => invalid("must be https (http only for localhost)"),
    }
}

/// A client's JWKS: public EC P-256 or RSA keys only, each with a `kid` (never a private key).
fn check_jwks(text: &str) -> Result<String, ServerError> {
    let invalid = |why: &str| {
        Err(ServerError::InvalidInput(format!(
            "the client's JWKS: {why}"
        )))
    };
    let Ok(raw) = serde_json::from_str::<serde_json::Value>(text) else {
        return invalid("not JSON");
    };
    let Some(keys) = raw["keys"].as_array().filter(|k| !k.is_empty()) else {
        return invalid("no keys");
    };
    for key in keys {
        if key.get("d").is_some() || key.get("p").is_some() {
            return invalid("it holds a private key: give only the public keys");
        }
        if key["kid"].as_str().is_none_or(str::is_empty) {
            return invalid("every key needs a kid");
        }
    }
    let Ok(set) = serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(raw.clone()) else {
        return invalid("not a JWK set");
    };
    for key in &set.keys {
        if jsonwebtoken::DecodingKey::from_jwk(key).is_err() {
            return invalid("a key that cannot verify signatures");
        }
    }
    Ok(raw.to_string())
}

/// Checks what the operator gave and builds the row (a new secret for a confidential
/// client, unless the config file gives its hash).
fn build(
    new: &NewClient,
    source: ClientSource,
    now: Millis,
) -> Result<RegisteredClient, ServerError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ServerError::InvalidInput(
            "a client's name is 1-100 characters, none of them control characters".into(),
        ));
    }
    if new.redirect_uris.is_empty() && !new.device_grant {
        return Err(ServerError::InvalidInput(
            "a client needs at least one redirect URI (or the device grant)".into(),
        ));
    }
    for uri in &new.redirect_uris {
        check_uri(uri, "redirect URI")?;
    }
    for uri in &new.post_logout_redirect_uris {
        check_uri(uri, "post-logout redirect URI")?;
    }
    if let Some(uri) = &new.backchannel_logout_uri {
        check_uri(uri, "back-channel logout URI")?;
    }
    let mut scopes = if new.scopes.is_empty() {
        vec!["openid".to_string(), "profile".to_string()]
    } else {
        new.scopes.clone()
    };
    scopes.dedup();
    if let Some(s) = scopes
        .iter()
        .find(|s| !SUPPORTED_SCOPES.contains(&s.as_str()))
    {
        return Err(ServerError::InvalidInput(format!(
            "scope {s} is not one Keyward offers ({})",
            SUPPORTED_SCOPES.join(", ")
        )));
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ServerError::InvalidInput(
            "a client's scopes must include openid".into(),
        ));
    }
    let method = match new.auth_method.as_deref() {
        None if new.jwks.is_some() => ClientAuthMethod::PrivateKeyJwt,
        None => ClientAuthMethod::ClientSecretBasic,
        Some(m) => ClientAuthMethod::parse(m).ok_or_else(|| {
            ServerError::InvalidInput(format!(
                "auth method {m}: none, client_secret_basic, client_secret_post or private_key_jwt"
            ))
        })?,
    };
    let client_id = match &new.client_id {
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c));
            if !ok {
                return Err(ServerError::InvalidInput(
                    "a client ID is 1-64 of A-Z a-z 0-9 - . _ ~".into(),
                ));
            }
            id.clone()
        }
        None => b64(&keyward_core::secret::random_bytes::<16>()),
    };
    let jwks = match (method, &new.jwks) {
        (ClientAuthMethod::PrivateKeyJwt, Some(text)) => Some(check_jwks(text)?),
        (ClientAuthMethod::PrivateKeyJwt, None) => {
            return Err(ServerError::InvalidInput(
                "a private_key_jwt client needs its public keys (a JWKS)".into(),
            ));
        }
        (_, Some(_)) => {
            return Err(ServerError::InvalidInput(
                "only a private_key_jwt client has a JWKS".into(),
            ));
        }
        (_, None) => None,
    };
    let (secret, secret_hash) = match (method, source, &new.secret_hash) {
        (ClientAuthMethod::PrivateKeyJwt, _, None) => (None, None),
        (ClientAuthMethod::PrivateKeyJwt, _, Some(_)) => {
            return Err(ServerError::InvalidInput(
                "a private_key_jwt client has no secret".into(),
            ));
        }
        (ClientAuthMethod::None, _, None) => (None, None),
        (ClientAuthMethod::None, _, Some(_)) => {
            return Err(ServerError::InvalidInput(
                "a public client (auth method none) has no secret".into(),
            ));
        }
        (_, ClientSource::Config, Some(hash)) => {
            let hash = unb64(hash).filter(|h| h.len() == 32).ok_or_else(|| {
                ServerError::InvalidInput(format!(
                    "client {client_id}: secret_hash is not a hash `keywardd client add` printed"
                ))
            })?;
            (None, Some(hash))
        }
        (_, ClientSource::Config, None) => {
            return Err(ServerError::InvalidInput(format!(
                "client {client_id} is confidential: give its secret_hash (from `keywardd \
                 client add --print-hash`) or make it public with auth_method = \"none\""
            )));
        }
        (_, ClientSource::Command, _) => {
            let secret = new_secret();
            let hash = hash_secret(&secret).to_vec();
            (Some(secret), Some(hash))
        }
    };
    Ok(RegisteredClient {
        client: OidcClient {
            client_id,
            name: name.to_string(),
            redirect_uris: new.redirect_uris.clone(),
            post_logout_redirect_uris: new.post_logout_redirect_uris.clone(),
            scopes,
            auth_method: method,
            secret_hash,
            backchannel_logout_uri: new.backchannel_logout_uri.clone(),
            jwks,
            device_grant: new.device_grant,
            source,
            created_at: now,
        },
        secret,
    })
}

/// `keywardd client add`: registers a client; a confidential one's secret is returned once.
pub fn add(store: &Store, new: &NewClient, now: Millis) -> Result<RegisteredClient, ServerError> {
    let registered = build(new, ClientSource::Command, now)?;
    store.write(|tx| {
        tx.insert_oidc_client(&registered.client)
            .map_err(|e| match e {
                keyward_core::CoreError::ClientExists => {
                    ServerError::InvalidInput("a client with that ID is already registered".into())
                }
                other => other.into(),
            })
    })?;
    Ok(registered)
}

/// A new secret and its hash, for a confidential client of the config file.
pub fn new_secret_and_hash() -> (String, String) {
    let secret = new_secret();
    let hash = b64(&hash_secret(&secret));
    (secret, hash)
}

pub fn list(store: &Store) -> Result<Vec<OidcClient>, ServerError> {
    Ok(store.read(|tx| tx.oidc_clients())?)
}

/// `keywardd client remove`: the client, and every consent, grant and token of it.
pub fn remove(store: &Store, client_id: &str) -> Result<bool, ServerError> {
    Ok(store.write(|tx| tx.delete_oidc_client(client_id))?)
}

/// Whether a config file's client would be accepted at start (`keywardd check-config`).
pub fn check_config_client(client: &NewClient) -> Result<(), ServerError> {
    if client.client_id.is_none() {
        return Err(ServerError::InvalidInput("it needs a client_id".into()));
    }
    build(client, ClientSource::Config, 0).map(|_| ())
}

/// Registers the config file's clients as it says now; a client the file no longer names is
/// removed (with its grants), one registered by command is never touched.
pub(super) fn sync_config_clients(
    store: &Store,
    clients: &[NewClient],
    now: Millis,
) -> Result<(), ServerError> {
    let rows = clients
        .iter()
        .map(|c| {
            check_config_client(c)
                .map_err(|e| ServerError::InvalidInput(format!("oidc_clients: {}: {e}", c.name)))?;
            build(c, ClientSource::Config, now).map(|r| r.client)
        })
        .collect::<Result<Vec<_>, _>>()?;
    store.write(|tx| {
        for old in tx.oidc_clients()? {
            if old.source == ClientSource::Config
                && !rows.iter().any(|r| r.client_id == old.client_id)
            {
                tx.delete_oidc_client(&old.client_id)?;
            }
        }
        for row in &rows {
            tx.put_config_client(row).map_err(|e| match e {
                keyward_core::CoreError::ClientExists => ServerError::InvalidInput(format!(
                    "oidc_clients: {} is already registered by `keywardd client add`",
                    row.client_id
                )),
                other => other.into(),
            })?;
        }
        Ok(())
    })
}

/// How a client presented itself at the token, introspection or revocation endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `Authorization: Basic`.
    Basic { client_id: String, secret: String },
    /// `client_id` and `client_secret` in the form.
    Post { client_id: String, secret: String },
    /// Only `client_id` in the form: a public client.
    Public { client_id: String },
    /// `client_assertion` (RFC 7523): `private_key_jwt`.
    Assertion {
        client_id: Option<String>,
        assertion: String,
    },
    /// Nothing, or more than one way at once.
    Missing,
}

impl ClientAuth {
    /// How the request presents its client: `basic` is the `Authorization` header's value if
    /// sent, `params` the form. Two ways at once, or a Basic header naming another client than
    /// the form, is `Missing` (RFC 6749 2.3: one method per request).
    pub fn from_request(basic: Option<&str>, params: &[(String, String)]) -> ClientAuth {
        let form = |name: &str| -> Option<String> {
            let mut found = params.iter().filter(|(k, _)| k == name);
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Some(v.clone()),
                _ => None,
            }
        };
        let (form_id, form_secret) = (form("client_id"), form("client_secret"));
        let assertion_type = form("client_assertion_type");
        if let Some(assertion) = form("client_assertion") {
            let jwt_bearer = assertion_type.as_deref()
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
            if basic.is_some() || form_secret.is_some() || !jwt_bearer {
                return ClientAuth::Missing;
            }
            return ClientAuth::Assertion {
                client_id: form_id,
                assertion,
            };
        }
        if assertion_type.is_some() {
            return ClientAuth::Missing;
        }
        match basic {
            Some(header) => {
                let Some(encoded) = header.strip_prefix("Basic ") else {
                    return ClientAuth::Missing;
                };
                let Some(decoded) = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    encoded.trim(),
                )
                .ok()
                .and_then(|b| String::from_utf8(b).ok()) else {
                    return ClientAuth::Missing;
                };
                let Some((id, secret)) = decoded.split_once(':') else {
                    return ClientAuth::Missing;
                };
                // RFC 6749 2.3.1: both are form-urlencoded before they are joined.
                let decode = |s: &str| -> String {
                    url::form_urlencoded::parse(format!("v={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                let (id, secret) = (decode(id), decode(secret));
                if form_secret.is_some() || form_id.as_ref().is_some_and(|f| *f != id) {
                    return ClientAuth::Missing;
                }
                ClientAuth::Basic {
                    client_id: id,
                    secret,
                }
            }
            None => match (form_id, form_secret) {
                (Some(client_id), Some(secret)) => ClientAuth::Post { client_id, secret },
                (Some(client_id), None) => ClientAuth::Public { client_id },
                _ => ClientAuth::Missing,
            },
        }
    }
}

fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client `auth` proves, by the method it registered; `invalid_client` otherwise, the
/// same for an unknown ID and a wrong secret.
pub(super) fn authenticate(
    tx: &Tx<'_>,
    auth: &ClientAuth,
    issuer: &str,
    now: Millis,
) -> Result<OidcClient, ServerError> {
    let refused = || oauth(OAuthCode::InvalidClient, "client authentication failed");
    let (client_id, secret, method) = match auth {
        ClientAuth::Assertion {
            client_id,
            assertion,
        } => return authenticate_assertion(tx, client_id.as_deref(), assertion, issuer, now),
        ClientAuth::Basic { client_id, secret } => {
            (client_id, Some(secret), ClientAuthMethod::ClientSecretBasic)
        }
        ClientAuth::Post { client_id, secret } => {
            (client_id, Some(secret), ClientAuthMethod::ClientSecretPost)
        }
        ClientAuth::Public { client_id } => (client_id, None, ClientAuthMethod::None),
        ClientAuth::Missing => return Err(refused()),
    };
    let client = tx.oidc_client(client_id)?.ok_or_else(refused)?;
    if client.auth_method != method {
        return Err(refused());
    }
    if let Some(secret) = secret {
        let stored = client.secret_hash.as_deref().unwrap_or_default();
        if !same_hash(&hash_secret(secret), stored) {
            return Err(refused());
        }
    }
    Ok(client)
}

/// What a client assertion must say of itself.
#[derive(serde::Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    jti: String,
}

/// The longest a client assertion may live: it is made for one request.
const MAX_ASSERTION_LIFE_MS: i64 = 5 * 60_000;

/// `private_key_jwt` (RFC 7523 2.2, 3): a JWT by the client about itself (`iss` = `sub` =
/// its ID), for this token endpoint or issuer (`aud`), signed with a key of its registered
/// JWKS, short-lived, and each `jti` accepted once.
fn authenticate_assertion(
    tx: &Tx<'_>,
    named: Option<&str>,
    assertion: &str,
    issuer: &str,
    now: Millis,
) -> Result<OidcClient, ServerError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let refused = || oauth(OAuthCode::InvalidClient, "client authentication failed");
    if assertion.len() > 8 * 1024 {
        return Err(refused());
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| refused())?;
    if !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
        return Err(refused());
    }
    // The issuer names the client; the signature, checked next with that client's keys,
    // proves it.
    let unverified: serde_json::Value = assertion
        .split('.')
        .nth(1)
        .and_then(unb64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(refused)?;
    let client_id = unverified["iss"].as_str().ok_or_else(refused)?;
    if named.is_some_and(|n| n != client_id) {
        return Err(refused());
    }
    let client = tx.oidc_client(client_id)?.ok_or_else(refused)?;
    if client.auth_method != ClientAuthMethod::PrivateKeyJwt {
        return Err(refused());
    }
    let set: jsonwebtoken::jwk::JwkSet = client
        .jwks
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(refused)?;
    let jwk = match &header.kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
    .ok_or_else(refused)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| refused())?;
    let mut validation = Validation::new(header.alg);
    // Expiry is held to keywardd's clock below, not the library's.
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss", "sub", "aud", "exp"]);
    validation.set_issuer(&[&client.client_id]);
    validation.set_audience(&[format!("{issuer}/oauth2/token"), issuer.to_string()]);
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map_err(|_| refused())?
        .claims;
    let expires_at = claims.exp.saturating_mul(1000);
    if claims.sub != client.client_id
        || claims.iss != client.client_id
        || expires_at <= now
        || expires_at > now + MAX_ASSERTION_LIFE_MS
        || claims.jti.is_empty()
    {
        return Err(refused());
    }
    let jti = hash_secret(&format!("{}\0{}", client.client_id, claims.jti));
    if !tx.use_assertion_jti(&jti, expires_at, now)? {
        return Err(oauth(
            OAuthCode::InvalidClient,
            "this client assertion was already used",
        ));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn new(uri: &str) -> NewClient {
        NewClient {
            client_id: None,
            name: "Chat".into(),
            redirect_uris: vec![uri.into()],
            post_logout_redirect_uris: vec![],
            scopes: vec![],
            auth_method: None,
            secret_hash: None,
            backchannel_logout_uri: None,
            jwks: None,
            device_grant: false,
        }
    }

    #[test]
    fn redirect_uris_are_https_or_loopback_and_written_as_matched() {
        for ok in [
            "https://chat.example/cb",
            "http://localhost:8080/cb",
            "https://a.example/cb?x=1",
        ] {
            assert!(build(&new(ok), ClientSource::Command, 0).is_ok(), "{ok}");
        }
        for bad in [
            "http://chat.example/cb",
            "https://chat.example/cb#frag",
            "https://CHAT.example/cb",
            "https://chat.example",
            "/cb",
            "javascript:alert(1)",
        ] {
            assert!(build(&new(bad), ClientSource::Command, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_confidential_client_gets_a_secret_stored_only_hashed() {
        let r = build(&new("https://chat.example/cb"), ClientSource::Command, 0).unwrap();
        let secret = r.secret.unwrap();
        assert_eq!(r.client.secret_hash.unwrap(), hash_secret(&secret).to_vec());
        let mut public = new("https://chat.example/cb");
        public.auth_method = Some("none".into());
        let r = build(&public, ClientSource::Command, 0).unwrap();
        assert!(r.secret.is_none() && r.client.secret_hash.is_none());
    }
}
