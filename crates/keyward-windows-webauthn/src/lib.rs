//! Windows' WebAuthn API (webauthn.dll, Windows 10 1903 and later), called with the caller's own
//! clientDataJSON.
//!
//! On Windows only administrators may talk to a security key directly; every other program goes
//! through this API, which shows its own dialogs (insert, PIN, touch) and talks to the key. It
//! takes the client data itself rather than its hash (`WEBAUTHN_CLIENT_DATA`: the JSON and the
//! name of the hash algorithm), hashes it, and hands back the key's answer. A caller that passes
//! the exact bytes it would have hashed for a CTAP key therefore sends the same client data, and
//! gets a signature over the same hash, as on any other platform.
//!
//! Requests and answers are plain data, so they are built and read (and tested) on any platform.
//! Only [`make_credential`] and [`get_assertion`] exist on Windows, in `ffi`, the only unsafe
//! code in Keyward.

pub mod abi;
#[cfg(windows)]
mod ffi;

#[cfg(windows)]
pub use ffi::{get_assertion, make_credential};

/// A credential the key may hold (`WEBAUTHN_CREDENTIAL_EX`, of type "public-key", the only type
/// WebAuthn defines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: Vec<u8>,
    /// [`abi`]`::TRANSPORT_*` bits; 0 for any.
    pub transports: u32,
}

/// The arguments of `WebAuthNAuthenticatorMakeCredential`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeCredential {
    pub rp_id: String,
    pub rp_name: String,
    pub user_id: Vec<u8>,
    pub user_name: String,
    pub user_display_name: String,
    /// COSE algorithms of "public-key" credentials, most preferred first.
    pub algorithms: Vec<i32>,
    /// The exact clientDataJSON, which Windows hashes with SHA-256.
    pub client_data_json: Vec<u8>,
    pub timeout_ms: u32,
    /// [`abi`]`::ATTACHMENT_*`.
    pub attachment: u32,
    pub require_resident_key: bool,
    /// [`abi`]`::UV_*`.
    pub user_verification: u32,
    /// [`abi`]`::ATTESTATION_*`.
    pub attestation: u32,
    /// Credentials that must not be registered again.
    pub exclude: Vec<Credential>,
}

/// The arguments of `WebAuthNAuthenticatorGetAssertion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAssertion {
    pub rp_id: String,
    /// The exact clientDataJSON, which Windows hashes with SHA-256.
    pub client_data_json: Vec<u8>,
    pub timeout_ms: u32,
    /// [`abi`]`::UV_*`.
    pub user_verification: u32,
    /// The credentials that may answer; empty for any discoverable one of the RP ID.
    pub allow: Vec<Credential>,
}

/// What `WebAuthNAuthenticatorMakeCredential` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub credential_id: Vec<u8>,
    /// The CBOR attestation object (`fmt`, `attStmt`, `authData`).
    pub attestation_object: Vec<u8>,
    /// The transport Windows reached the key over ([`abi`]`::TRANSPORT_*`), where the answer
    /// says (`WEBAUTHN_CREDENTIAL_ATTESTATION` version 3 on, i.e. every released API version).
    pub used_transport: Option<u32>,
}

/// What `WebAuthNAuthenticatorGetAssertion` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub credential_id: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    /// The user handle, when the key returned one (a discoverable credential does).
    pub user_id: Option<Vec<u8>>,
}

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The API's HRESULT, and its name for it (`WebAuthNGetErrorName`: "NotAllowedError", …).
    Windows { hresult: i32, name: String },
    /// No window to attach Windows' dialog to.
    NoWindow,
    /// Something Windows cannot be given: a string with a NUL inside (it would arrive cut
    /// short), or more than 4 GiB.
    Unrepresentable(&'static str),
    /// An answer without what every answer has.
    Malformed(&'static str),
}

#[cfg(test)]
mod tests {
    /// This crate may not inherit the workspace's lints (they forbid unsafe code outright), so
    /// it repeats them: the same rules, unsafe code denied instead of forbidden, and more only.
    #[test]
    fn the_lints_are_the_workspaces() {
        let read = |path: &str| -> toml::Table {
            let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        let ours = read("Cargo.toml");
        let workspace = read("../../Cargo.toml");
        let ours = ours["lints"].as_table().unwrap();
        let theirs = workspace["workspace"]["lints"].as_table().unwrap();
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>()
        );
        for (tool, lints) in theirs {
            let ours = ours[tool].as_table().unwrap();
            for (lint, level) in lints.as_table().unwrap() {
                let expected = match (tool.as_str(), lint.as_str()) {
                    ("rust", "unsafe_code") => {
                        assert_eq!(level.as_str(), Some("forbid"));
                        "deny"
                    }
                    _ => level.as_str().unwrap(),
                };
                assert_eq!(ours[lint].as_str(), Some(expected), "{tool}::{lint}");
            }
        }
        assert_eq!(
            ours["clippy"]["undocumented_unsafe_blocks"].as_str(),
            Some("deny")
        );
    }
}
