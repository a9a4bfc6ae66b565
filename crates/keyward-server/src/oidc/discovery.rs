//! OpenID Connect Discovery 1.0 and RFC 8414 metadata: what an app needs to know of Keyward.

use serde::Serialize;

use super::Provider;
use super::claims::{ACR_PHR, ACR_PHRH, SUPPORTED_SCOPES};

#[derive(Debug, Serialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: String,
    pub jwks_uri: String,
    pub introspection_endpoint: String,
    pub revocation_endpoint: String,
    pub end_session_endpoint: String,
    /// RFC 8628: where an agent or CLI asks for a device code.
    pub device_authorization_endpoint: String,
    pub scopes_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
    pub response_modes_supported: Vec<&'static str>,
    pub grant_types_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    pub code_challenge_methods_supported: Vec<&'static str>,
    pub claims_supported: Vec<&'static str>,
    pub acr_values_supported: Vec<&'static str>,
    pub prompt_values_supported: Vec<&'static str>,
    pub claims_parameter_supported: bool,
    pub request_parameter_supported: bool,
    pub request_uri_parameter_supported: bool,
    /// RFC 9207: every authorization response carries `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    pub frontchannel_logout_supported: bool,
    pub backchannel_logout_supported: bool,
    /// Every logout token carries the `sid` of the sign-in it ends.
    pub backchannel_logout_session_supported: bool,
}

impl Provider {
    pub fn metadata(&self) -> ProviderMetadata {
        let at = |path: &str| format!("{}{path}", self.issuer);
        let acr = if self.attested_mode {
            vec![ACR_PHRH, ACR_PHR]
        } else {
            vec![ACR_PHR]
        };
        ProviderMetadata {
            issuer: self.issuer.clone(),
            authorization_endpoint: at("/oauth2/authorize"),
            token_endpoint: at("/oauth2/token"),
            userinfo_endpoint: at("/oauth2/userinfo"),
            jwks_uri: at("/oauth2/jwks"),
            introspection_endpoint: at("/oauth2/introspect"),
            revocation_endpoint: at("/oauth2/revoke"),
            end_session_endpoint: at("/oauth2/logout"),
            device_authorization_endpoint: at("/oauth2/device_authorization"),
            scopes_supported: SUPPORTED_SCOPES.to_vec(),
            response_types_supported: vec!["code"],
            response_modes_supported: vec!["query"],
            grant_types_supported: vec![
                "authorization_code",
                "refresh_token",
                super::device::DEVICE_CODE_GRANT,
            ],
            subject_types_supported: vec!["pairwise"],
            id_token_signing_alg_values_supported: vec!["ES256"],
            token_endpoint_auth_methods_supported: vec![
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none",
            ],
            token_endpoint_auth_signing_alg_values_supported: vec!["ES256", "RS256"],
            introspection_endpoint_auth_methods_supported: vec![
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
            ],
            revocation_endpoint_auth_methods_supported: vec![
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none",
            ],
            code_challenge_methods_supported: vec!["S256"],
            claims_supported: vec![
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "sid",
                "acr",
                "amr",
                "azp",
                "preferred_username",
                "name",
            ],
            acr_values_supported: acr,
            prompt_values_supported: vec!["none", "login", "consent", "select_account"],
            claims_parameter_supported: false,
            request_parameter_supported: false,
            request_uri_parameter_supported: false,
            authorization_response_iss_parameter_supported: true,
            frontchannel_logout_supported: false,
            // Delivered from a persistent outbox (`logout_tokens`, `crate::backchannel`).
            backchannel_logout_supported: true,
            backchannel_logout_session_supported: true,
        }
    }
}
