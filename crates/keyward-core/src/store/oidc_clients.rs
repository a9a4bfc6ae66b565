//! Apps that sign people in through Keyward (`oidc_clients`), registered by the operator.

use keyward_proto::Millis;

use super::sql::{Row, args};
use super::{Tx, bad_value};
use crate::error::{CoreError, Result};

/// How a client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// A public client (a browser app, a native app): PKCE is its only proof.
    None,
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with a key of the client's registered JWKS (RFC 7523).
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::None => "none",
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ClientAuthMethod::None,
            ClientAuthMethod::ClientSecretBasic,
            ClientAuthMethod::ClientSecretPost,
            ClientAuthMethod::PrivateKeyJwt,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// Where a client's registration comes from: `keywardd client add`, or the config file
/// (whose clients are replaced at every start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    Command,
    Config,
}

impl ClientSource {
    fn as_str(self) -> &'static str {
        match self {
            ClientSource::Command => "command",
            ClientSource::Config => "config",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    pub client_id: String,
    pub name: String,
    /// Matched exactly, as strings.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// The most it may ask for.
    pub scopes: Vec<String>,
    pub auth_method: ClientAuthMethod,
    /// A confidential client's secret, hashed (`secret::hash_secret`).
    pub secret_hash: Option<Vec<u8>>,
    pub backchannel_logout_uri: Option<String>,
    /// `private_key_jwt`: the client's public keys, a JWKS document.
    pub jwks: Option<String>,
    /// Allowed the device authorization grant (RFC 8628): an agent or CLI with no browser.
    pub device_grant: bool,
    pub source: ClientSource,
    pub created_at: Millis,
}

const CLIENT_COLS: &str = "client_id, name, redirect_uris, post_logout_redirect_uris, scopes,
    auth_method, secret_hash, backchannel_logout_uri, source, created_at, jwks, device_grant";

fn client_from_row(r: &Row<'_>) -> Result<OidcClient> {
    let list = |text: String| -> Result<Vec<String>> { Ok(serde_json::from_str(&text)?) };
    let method: String = r.get(5)?;
    let source: String = r.get(8)?;
    let scopes: String = r.get(4)?;
    Ok(OidcClient {
        client_id: r.get(0)?,
        name: r.get(1)?,
        redirect_uris: list(r.get(2)?)?,
        post_logout_redirect_uris: list(r.get(3)?)?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        auth_method: ClientAuthMethod::parse(&method)
            .ok_or_else(|| bad_value("client auth method", method))?,
        secret_hash: r.get(6)?,
        backchannel_logout_uri: r.get(7)?,
        source: match source.as_str() {
            "command" => ClientSource::Command,
            "config" => ClientSource::Config,
            _ => return Err(bad_value("client source", source)),
        },
        created_at: r.get(9)?,
        jwks: r.get(10)?,
        device_grant: r.get(11)?,
    })
}

impl Tx<'_> {
    /// Registers a client; `ClientExists` if its ID is taken.
    pub fn insert_oidc_client(&self, c: &OidcClient) -> Result<()> {
        let n = self.execute(
            "INSERT INTO oidc_clients (client_id, name, redirect_uris, post_logout_redirect_uris,
                 scopes, auth_method, secret_hash, backchannel_logout_uri, source, created_at, jwks,
                 device_grant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (client_id) DO NOTHING",
            args![
                c.client_id,
                c.name,
                serde_json::to_string(&c.redirect_uris)?,
                serde_json::to_string(&c.post_logout_redirect_uris)?,
                c.scopes.join(" "),
                c.auth_method.as_str(),
                c.secret_hash,
                c.backchannel_logout_uri,
                c.source.as_str(),
                c.created_at,
                c.jwks,
                c.device_grant
            ],
        )?;
        if n == 0 {
            return Err(CoreError::ClientExists);
        }
        Ok(())
    }

    /// A config-file client as the file now says (its grants kept if it was there before);
    /// `ClientExists` if a client registered by command has its ID.
    pub fn put_config_client(&self, c: &OidcClient) -> Result<()> {
        let n = self.execute(
            "INSERT INTO oidc_clients (client_id, name, redirect_uris, post_logout_redirect_uris,
                 scopes, auth_method, secret_hash, backchannel_logout_uri, source, created_at, jwks,
                 device_grant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'config', ?9, ?10, ?11)
             ON CONFLICT (client_id) DO UPDATE SET name = excluded.name,
                 redirect_uris = excluded.redirect_uris,
                 post_logout_redirect_uris = excluded.post_logout_redirect_uris,
                 scopes = excluded.scopes, auth_method = excluded.auth_method,
                 secret_hash = excluded.secret_hash,
                 backchannel_logout_uri = excluded.backchannel_logout_uri, jwks = excluded.jwks,
                 device_grant = excluded.device_grant
             WHERE oidc_clients.source = 'config'",
            args![
                c.client_id,
                c.name,
                serde_json::to_string(&c.redirect_uris)?,
                serde_json::to_string(&c.post_logout_redirect_uris)?,
                c.scopes.join(" "),
                c.auth_method.as_str(),
                c.secret_hash,
                c.backchannel_logout_uri,
                c.created_at,
                c.jwks,
                c.device_grant
            ],
        )?;
        if n == 0 {
            return Err(CoreError::ClientExists);
        }
        Ok(())
    }

    pub fn oidc_client(&self, client_id: &str) -> Result<Option<OidcClient>> {
        self.query_row(
            &format!("SELECT {CLIENT_COLS} FROM oidc_clients WHERE client_id = ?1"),
            args![client_id],
            client_from_row,
        )
    }

    pub fn oidc_clients(&self) -> Result<Vec<OidcClient>> {
        self.query_rows(
            &format!("SELECT {CLIENT_COLS} FROM oidc_clients ORDER BY client_id"),
            args![],
            client_from_row,
        )
    }

    /// Records a client assertion's `jti` until it expires; false if it was seen before
    /// (a replayed assertion). Expired ones are deleted first.
    pub fn use_assertion_jti(
        &self,
        jti_hash: &[u8],
        expires_at: Millis,
        now: Millis,
    ) -> Result<bool> {
        self.execute(
            "DELETE FROM oidc_assertions WHERE expires_at <= ?1",
            args![now],
        )?;
        Ok(self.execute(
            "INSERT INTO oidc_assertions (jti_hash, expires_at) VALUES (?1, ?2)
             ON CONFLICT (jti_hash) DO NOTHING",
            args![jti_hash, expires_at],
        )? == 1)
    }

    /// Removes a client and, with it, its pending requests, consents, grants and tokens.
    pub fn delete_oidc_client(&self, client_id: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM oidc_clients WHERE client_id = ?1",
            args![client_id],
        )? == 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::fixtures;

    fn client(id: &str, source: ClientSource) -> OidcClient {
        OidcClient {
            client_id: id.into(),
            name: "Chat".into(),
            redirect_uris: vec!["https://chat.example/cb".into()],
            post_logout_redirect_uris: vec![],
            scopes: vec!["openid".into(), "profile".into()],
            auth_method: ClientAuthMethod::ClientSecretBasic,
            secret_hash: Some(vec![7; 32]),
            backchannel_logout_uri: None,
            jwks: None,
            device_grant: false,
            source,
            created_at: 5,
        }
    }

    #[test]
    fn a_client_round_trips_and_its_id_is_taken_once() {
        let store = fixtures::store();
        store
            .write(|tx| {
                let c = client("chat", ClientSource::Command);
                tx.insert_oidc_client(&c)?;
                assert_eq!(tx.oidc_client("chat")?.unwrap(), c);
                assert!(matches!(
                    tx.insert_oidc_client(&c),
                    Err(CoreError::ClientExists)
                ));
                // The config file cannot take over a client registered by command.
                assert!(matches!(
                    tx.put_config_client(&client("chat", ClientSource::Config)),
                    Err(CoreError::ClientExists)
                ));
                let mut from_file = client("wiki", ClientSource::Config);
                tx.put_config_client(&from_file)?;
                from_file.name = "Wiki".into();
                tx.put_config_client(&from_file)?;
                assert_eq!(tx.oidc_client("wiki")?.unwrap().name, "Wiki");
                assert_eq!(tx.oidc_clients()?.len(), 2);
                assert!(tx.delete_oidc_client("chat")?);
                assert!(!tx.delete_oidc_client("chat")?);
                Ok::<_, CoreError>(())
            })
            .unwrap();
    }
}
