//! Credentials as WebAuthn L3's `PublicKeyCredential.toJSON()` writes them
//! (`RegistrationResponseJSON`, `AuthenticationResponseJSON`), for relying parties other than
//! keywardd. webauthn-rs-proto's own serialisation names the extensions `extensions` and has no
//! `authenticatorData` or `publicKeyAlgorithm` in a registration, which strict relying parties
//! (java-webauthn-server) refuse.

use keyward_core::secret::b64;
use keyward_proto::{PublicKeyCredential, RegisterPublicKeyCredential};
use serde::Deserialize;
use serde_cbor_2::Value;
use serde_json::{Value as Json, json};

#[derive(Debug, thiserror::Error)]
#[error("the authenticator's attestation object is malformed: {0}")]
pub struct MalformedAttestation(&'static str);

/// `RegistrationResponseJSON`: `authenticatorData` is the one inside `attestationObject`, and
/// `publicKeyAlgorithm` the COSE `alg` of the credential public key it carries.
pub fn registration(
    credential: &RegisterPublicKeyCredential,
) -> Result<Json, MalformedAttestation> {
    let auth_data = authenticator_data(&credential.response.attestation_object)?;
    let algorithm = public_key_algorithm(&auth_data)?;
    let transports =
        serde_json::to_value(credential.response.transports.clone().unwrap_or_default())
            .unwrap_or_else(|_| json!([]));
    Ok(json!({
        "id": credential.id,
        "rawId": b64(&credential.raw_id),
        "type": credential.type_,
        "clientExtensionResults": extensions(serde_json::to_value(&credential.extensions)),
        "response": {
            "clientDataJSON": b64(&credential.response.client_data_json),
            "attestationObject": b64(&credential.response.attestation_object),
            "authenticatorData": b64(&auth_data),
            "transports": transports,
            "publicKeyAlgorithm": algorithm,
        },
    }))
}

/// `AuthenticationResponseJSON`.
pub fn assertion(credential: &PublicKeyCredential) -> Json {
    let mut response = json!({
        "clientDataJSON": b64(&credential.response.client_data_json),
        "authenticatorData": b64(&credential.response.authenticator_data),
        "signature": b64(&credential.response.signature),
    });
    if let Some(handle) = &credential.response.user_handle {
        response["userHandle"] = json!(b64(handle));
    }
    json!({
        "id": credential.id,
        "rawId": b64(&credential.raw_id),
        "type": credential.type_,
        "clientExtensionResults": extensions(serde_json::to_value(&credential.extensions)),
        "response": response,
    })
}

/// The extension outputs as an object, `{}` when there are none.
fn extensions(outputs: serde_json::Result<Json>) -> Json {
    match outputs {
        Ok(Json::Object(map)) => {
            Json::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        _ => json!({}),
    }
}

/// `authData` from an attestation object (a CBOR map with `fmt`, `attStmt`, `authData`).
fn authenticator_data(attestation_object: &[u8]) -> Result<Vec<u8>, MalformedAttestation> {
    let Ok(Value::Map(map)) = serde_cbor_2::from_slice::<Value>(attestation_object) else {
        return Err(MalformedAttestation("not a CBOR map"));
    };
    match map.get(&Value::Text("authData".into())) {
        Some(Value::Bytes(bytes)) => Ok(bytes.clone()),
        _ => Err(MalformedAttestation("no authData")),
    }
}

/// The ID of the credential an attestation object attests (the library's CTAP2 code returns
/// none of its own).
pub(crate) fn attested_credential_id(
    attestation_object: &[u8],
) -> Result<Vec<u8>, MalformedAttestation> {
    let auth_data = authenticator_data(attestation_object)?;
    let (id, _) = attested_credential(&auth_data)?;
    Ok(id.to_vec())
}

/// The attested credential's ID and what follows it (the public key, then any extension data):
/// after the RP ID hash (32), flags (1), counter (4), AAGUID (16) and the ID's length (2).
fn attested_credential(auth_data: &[u8]) -> Result<(&[u8], &[u8]), MalformedAttestation> {
    const ATTESTED: u8 = 0x40;
    let flags = *auth_data
        .get(32)
        .ok_or(MalformedAttestation("short authData"))?;
    if flags & ATTESTED == 0 {
        return Err(MalformedAttestation("no attested credential data"));
    }
    let len = auth_data
        .get(53..55)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(MalformedAttestation("short authData"))?;
    let id = auth_data
        .get(55..55 + len)
        .ok_or(MalformedAttestation("short authData"))?;
    let rest = auth_data
        .get(55 + len..)
        .ok_or(MalformedAttestation("short authData"))?;
    Ok((id, rest))
}

/// The COSE `alg` (label 3) of the attested credential's public key.
fn public_key_algorithm(auth_data: &[u8]) -> Result<i64, MalformedAttestation> {
    let (_, key) = attested_credential(auth_data)?;
    // The key is followed by extension data, if any: read one CBOR value only.
    let mut de = serde_cbor_2::Deserializer::from_slice(key);
    let Ok(Value::Map(cose)) = Value::deserialize(&mut de) else {
        return Err(MalformedAttestation(
            "credential public key is not a COSE key",
        ));
    };
    match cose.get(&Value::Integer(3)) {
        Some(Value::Integer(alg)) => {
            i64::try_from(*alg).map_err(|_| MalformedAttestation("COSE alg out of range"))
        }
        _ => Err(MalformedAttestation("COSE key without alg")),
    }
}
