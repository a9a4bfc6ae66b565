//! What an app learns about the person: scopes and the claims each names, the pairwise
//! identifiers, and how the person proved themselves (`acr`, `amr`).

use hmac::{Hmac, Mac};
use keyward_core::secret::b64;
use keyward_core::store::{Account, Session, Tx};
use keyward_proto::ScopeView;
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use super::Provider;
use crate::error::ServerError;

/// The scopes Keyward offers. `openid` gives only the pairwise `sub`; `profile` adds the
/// account's username and display name. Nothing else about a person is ever released.
pub const SUPPORTED_SCOPES: &[&str] = &["openid", "profile"];

pub fn describe_scope(name: &str) -> ScopeView {
    let description = match name {
        "openid" => "Sign you in: an identifier for you that only this app sees",
        "profile" => "Your Keyward username and display name",
        _ => "Unknown",
    };
    ScopeView {
        name: name.to_string(),
        description: description.to_string(),
    }
}

/// The phishing-resistant ACR values of OpenID's EAP ACR Values: every Keyward sign-in is a
/// WebAuthn ceremony bound to the origin (`phr`); `phrh` needs a key proven to be hardware.
pub const ACR_PHR: &str = "phr";
pub const ACR_PHRH: &str = "phrh";

/// How the session's person proved themselves, as the ID token says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AuthContext {
    pub acr: &'static str,
    /// RFC 8176 values, each true of every Keyward sign-in or of this key (ARCHITECTURE.md).
    pub amr: Vec<&'static str>,
}

#[derive(Serialize)]
pub(super) struct IdTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: String,
    pub aud: &'a str,
    pub azp: &'a str,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a str>,
    pub sid: &'a str,
    pub acr: &'a str,
    pub amr: Vec<&'a str>,
    #[serde(flatten)]
    pub profile: ProfileClaims,
}

/// The `profile` scope's claims; empty without it.
#[derive(Serialize, Default, Debug, Clone)]
pub struct ProfileClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ProfileClaims {
    pub(super) fn for_scopes(scopes: &str, account: &Account) -> ProfileClaims {
        if scopes.split_whitespace().any(|s| s == "profile") {
            ProfileClaims {
                preferred_username: Some(account.username.clone()),
                name: Some(account.display_name.clone()),
            }
        } else {
            ProfileClaims::default()
        }
    }
}

pub(super) fn seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

impl Provider {
    fn pairwise(&self, what: &str, client_id: &str, id: Uuid) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.pairwise) else {
            return String::new(); // HMAC takes keys of any length; unreachable.
        };
        mac.update(what.as_bytes());
        mac.update(&[0]);
        mac.update(client_id.as_bytes());
        mac.update(&[0]);
        mac.update(id.as_bytes());
        b64(&mac.finalize().into_bytes())
    }

    /// The account's subject identifier for this client: the same every time for the pair,
    /// different for every other client, and not the account ID (OpenID Connect Core 8.1).
    pub(super) fn subject(&self, client_id: &str, account_id: Uuid) -> String {
        self.pairwise("sub", client_id, account_id)
    }

    /// The session's `sid` for this client: pairwise too, so two apps cannot tell that they
    /// were signed in by the same Keyward session.
    pub(super) fn session_id_for(&self, client_id: &str, session_id: Uuid) -> String {
        self.pairwise("sid", client_id, session_id)
    }

    /// `acr` and `amr` for a session: from the key whose ceremony opened it.
    pub(super) fn auth_context(
        &self,
        tx: &Tx<'_>,
        session: &Session,
    ) -> Result<AuthContext, ServerError> {
        let key = match session.opened_by {
            Some(id) => tx.authenticator(id)?,
            None => None,
        };
        let hardware = match &key {
            Some(k) => {
                self.attested_mode && !k.backup_eligible && tx.authenticator_attested(k.id)?
            }
            None => false,
        };
        // Every sign-in is a WebAuthn assertion with user presence and user verification:
        // proof of possession of a key (pop), a user-presence test (user), and the key's own
        // PIN or biometric on top of possession (mfa).
        let mut amr = vec!["pop", "user", "mfa"];
        if hardware {
            amr.push("hwk");
        } else if key.as_ref().is_some_and(|k| {
            k.backup_eligible || k.aaguid == Some(keyward_core::aaguid::KEYWARD_VIRTUAL_KEY)
        }) {
            // A synced passkey is held in software by its provider; the virtual key is ours.
            amr.push("swk");
        }
        Ok(AuthContext {
            acr: if hardware { ACR_PHRH } else { ACR_PHR },
            amr,
        })
    }

    /// Whether any of the asked `acr_values` is one this deployment could ever meet.
    pub(super) fn could_meet(&self, acr_values: &str) -> bool {
        acr_values
            .split_whitespace()
            .any(|v| v == ACR_PHR || (v == ACR_PHRH && self.attested_mode))
    }
}

/// Whether `context` meets one of the asked values (`phrh` also meets `phr`).
pub(super) fn meets(context: &AuthContext, acr_values: Option<&str>) -> bool {
    match acr_values {
        None => true,
        Some(values) => values
            .split_whitespace()
            .any(|v| v == context.acr || (v == ACR_PHR && context.acr == ACR_PHRH)),
    }
}
