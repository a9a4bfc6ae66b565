//! The calls into webauthn.dll. Everything handed to Windows is borrowed from the request or
//! built here, and outlives the call; everything Windows hands back is copied out before it is
//! freed with the matching `WebAuthNFree…` function.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::ptr;

use windows::Win32::Foundation::{
    BOOL, ERROR_CANCELLED, ERROR_TIMEOUT, HWND, NTE_DEVICE_NOT_FOUND, NTE_EXISTS,
    NTE_INVALID_PARAMETER, NTE_NOT_FOUND, NTE_NOT_SUPPORTED, NTE_TOKEN_KEYSET_STORAGE_FULL,
    NTE_USER_CANCELLED,
};
use windows::Win32::Networking::WindowsWebServices::{
    WEBAUTHN_ASSERTION, WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_ANY,
    WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_DIRECT,
    WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_INDIRECT,
    WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_NONE, WEBAUTHN_AUTHENTICATOR_ATTACHMENT_ANY,
    WEBAUTHN_AUTHENTICATOR_ATTACHMENT_CROSS_PLATFORM, WEBAUTHN_AUTHENTICATOR_ATTACHMENT_PLATFORM,
    WEBAUTHN_AUTHENTICATOR_GET_ASSERTION_OPTIONS,
    WEBAUTHN_AUTHENTICATOR_GET_ASSERTION_OPTIONS_VERSION_4,
    WEBAUTHN_AUTHENTICATOR_MAKE_CREDENTIAL_OPTIONS,
    WEBAUTHN_AUTHENTICATOR_MAKE_CREDENTIAL_OPTIONS_VERSION_3, WEBAUTHN_CLIENT_DATA,
    WEBAUTHN_CLIENT_DATA_CURRENT_VERSION, WEBAUTHN_COSE_CREDENTIAL_PARAMETER,
    WEBAUTHN_COSE_CREDENTIAL_PARAMETER_CURRENT_VERSION, WEBAUTHN_COSE_CREDENTIAL_PARAMETERS,
    WEBAUTHN_CREDENTIAL_ATTESTATION, WEBAUTHN_CREDENTIAL_ATTESTATION_VERSION_3,
    WEBAUTHN_CREDENTIAL_EX, WEBAUTHN_CREDENTIAL_EX_CURRENT_VERSION, WEBAUTHN_CREDENTIAL_LIST,
    WEBAUTHN_CREDENTIAL_TYPE_PUBLIC_KEY, WEBAUTHN_CREDENTIALS, WEBAUTHN_CTAP_TRANSPORT_BLE,
    WEBAUTHN_CTAP_TRANSPORT_INTERNAL, WEBAUTHN_CTAP_TRANSPORT_NFC, WEBAUTHN_CTAP_TRANSPORT_TEST,
    WEBAUTHN_CTAP_TRANSPORT_USB, WEBAUTHN_EXTENSIONS, WEBAUTHN_HASH_ALGORITHM_SHA_256,
    WEBAUTHN_RP_ENTITY_INFORMATION, WEBAUTHN_RP_ENTITY_INFORMATION_CURRENT_VERSION,
    WEBAUTHN_USER_ENTITY_INFORMATION, WEBAUTHN_USER_ENTITY_INFORMATION_CURRENT_VERSION,
    WEBAUTHN_USER_VERIFICATION_REQUIREMENT_ANY, WEBAUTHN_USER_VERIFICATION_REQUIREMENT_DISCOURAGED,
    WEBAUTHN_USER_VERIFICATION_REQUIREMENT_PREFERRED,
    WEBAUTHN_USER_VERIFICATION_REQUIREMENT_REQUIRED, WebAuthNAuthenticatorGetAssertion,
    WebAuthNAuthenticatorMakeCredential, WebAuthNFreeAssertion, WebAuthNFreeCredentialAttestation,
    WebAuthNGetErrorName,
};
use windows::Win32::UI::WindowsAndMessaging::{GetForegroundWindow, GetTopWindow};
use windows::core::PCWSTR;

use crate::{Assertion, Attestation, Credential, Failure, GetAssertion, MakeCredential, abi};

// The numbers in `abi` are webauthn.h's, as the bindings have them.
const _: () = {
    assert!(abi::ATTACHMENT_ANY == WEBAUTHN_AUTHENTICATOR_ATTACHMENT_ANY);
    assert!(abi::ATTACHMENT_PLATFORM == WEBAUTHN_AUTHENTICATOR_ATTACHMENT_PLATFORM);
    assert!(abi::ATTACHMENT_CROSS_PLATFORM == WEBAUTHN_AUTHENTICATOR_ATTACHMENT_CROSS_PLATFORM);
    assert!(abi::UV_ANY == WEBAUTHN_USER_VERIFICATION_REQUIREMENT_ANY);
    assert!(abi::UV_REQUIRED == WEBAUTHN_USER_VERIFICATION_REQUIREMENT_REQUIRED);
    assert!(abi::UV_PREFERRED == WEBAUTHN_USER_VERIFICATION_REQUIREMENT_PREFERRED);
    assert!(abi::UV_DISCOURAGED == WEBAUTHN_USER_VERIFICATION_REQUIREMENT_DISCOURAGED);
    assert!(abi::ATTESTATION_ANY == WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_ANY);
    assert!(abi::ATTESTATION_NONE == WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_NONE);
    assert!(abi::ATTESTATION_INDIRECT == WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_INDIRECT);
    assert!(abi::ATTESTATION_DIRECT == WEBAUTHN_ATTESTATION_CONVEYANCE_PREFERENCE_DIRECT);
    assert!(abi::TRANSPORT_USB == WEBAUTHN_CTAP_TRANSPORT_USB);
    assert!(abi::TRANSPORT_NFC == WEBAUTHN_CTAP_TRANSPORT_NFC);
    assert!(abi::TRANSPORT_BLE == WEBAUTHN_CTAP_TRANSPORT_BLE);
    assert!(abi::TRANSPORT_TEST == WEBAUTHN_CTAP_TRANSPORT_TEST);
    assert!(abi::TRANSPORT_INTERNAL == WEBAUTHN_CTAP_TRANSPORT_INTERNAL);
    assert!(
        abi::MAKE_CREDENTIAL_OPTIONS_VERSION
            == WEBAUTHN_AUTHENTICATOR_MAKE_CREDENTIAL_OPTIONS_VERSION_3
    );
    assert!(
        abi::GET_ASSERTION_OPTIONS_VERSION
            == WEBAUTHN_AUTHENTICATOR_GET_ASSERTION_OPTIONS_VERSION_4
    );
    assert!(abi::NTE_EXISTS == NTE_EXISTS.0);
    assert!(abi::NTE_NOT_FOUND == NTE_NOT_FOUND.0);
    assert!(abi::NTE_TOKEN_KEYSET_STORAGE_FULL == NTE_TOKEN_KEYSET_STORAGE_FULL.0);
    assert!(abi::NTE_INVALID_PARAMETER == NTE_INVALID_PARAMETER.0);
    assert!(abi::NTE_NOT_SUPPORTED == NTE_NOT_SUPPORTED.0);
    assert!(abi::NTE_DEVICE_NOT_FOUND == NTE_DEVICE_NOT_FOUND.0);
    assert!(abi::NTE_USER_CANCELLED == NTE_USER_CANCELLED.0);
    assert!(abi::HRESULT_CANCELLED == (0x8007_0000 | ERROR_CANCELLED.0) as i32);
    assert!(abi::HRESULT_TIMEOUT == (0x8007_0000 | ERROR_TIMEOUT.0) as i32);
};

/// Registers a credential: Windows asks the person for a key (and its PIN, and a touch) in a
/// dialog of its own, hashes `request.client_data_json` with SHA-256 and has the key sign that.
/// Blocks until the person is done.
pub fn make_credential(request: &MakeCredential) -> Result<Attestation, Failure> {
    let window = parent_window()?;
    let public_key = wide(WEBAUTHN_CREDENTIAL_TYPE_PUBLIC_KEY, "the credential type")?;
    let sha256 = wide(WEBAUTHN_HASH_ALGORITHM_SHA_256, "the hash algorithm")?;
    let rp_id = wide(&request.rp_id, "the RP ID")?;
    let rp_name = wide(&request.rp_name, "the site's name")?;
    let user_name = wide(&request.user_name, "the user name")?;
    let display_name = wide(&request.user_display_name, "the display name")?;

    let rp = WEBAUTHN_RP_ENTITY_INFORMATION {
        dwVersion: WEBAUTHN_RP_ENTITY_INFORMATION_CURRENT_VERSION,
        pwszId: PCWSTR(rp_id.as_ptr()),
        pwszName: PCWSTR(rp_name.as_ptr()),
        pwszIcon: PCWSTR::null(),
    };
    let user = WEBAUTHN_USER_ENTITY_INFORMATION {
        dwVersion: WEBAUTHN_USER_ENTITY_INFORMATION_CURRENT_VERSION,
        cbId: len32(request.user_id.len(), "the user ID")?,
        // webauthn.h declares every input const; the bindings' `*mut` is theirs, and Windows
        // writes through none of these pointers.
        pbId: request.user_id.as_ptr().cast_mut(),
        pwszName: PCWSTR(user_name.as_ptr()),
        pwszIcon: PCWSTR::null(),
        pwszDisplayName: PCWSTR(display_name.as_ptr()),
    };
    let mut algorithms: Vec<WEBAUTHN_COSE_CREDENTIAL_PARAMETER> = request
        .algorithms
        .iter()
        .map(|&alg| WEBAUTHN_COSE_CREDENTIAL_PARAMETER {
            dwVersion: WEBAUTHN_COSE_CREDENTIAL_PARAMETER_CURRENT_VERSION,
            pwszCredentialType: PCWSTR(public_key.as_ptr()),
            lAlg: alg,
        })
        .collect();
    let parameters = WEBAUTHN_COSE_CREDENTIAL_PARAMETERS {
        cCredentialParameters: len32(algorithms.len(), "the algorithms")?,
        pCredentialParameters: algorithms.as_mut_ptr(),
    };
    let client_data = client_data(&request.client_data_json, &sha256)?;
    let mut exclude = CredentialList::new(&request.exclude, &public_key)?;
    let mut exclude_list = exclude.native()?;
    let options = WEBAUTHN_AUTHENTICATOR_MAKE_CREDENTIAL_OPTIONS {
        dwVersion: abi::MAKE_CREDENTIAL_OPTIONS_VERSION,
        dwTimeoutMilliseconds: request.timeout_ms,
        // Version 1's list, which `pExcludeCredentialList` replaces.
        CredentialList: WEBAUTHN_CREDENTIALS {
            cCredentials: 0,
            pCredentials: ptr::null_mut(),
        },
        Extensions: WEBAUTHN_EXTENSIONS::default(),
        dwAuthenticatorAttachment: request.attachment,
        bRequireResidentKey: BOOL::from(request.require_resident_key),
        dwUserVerificationRequirement: request.user_verification,
        dwAttestationConveyancePreference: request.attestation,
        dwFlags: 0,
        pCancellationId: ptr::null_mut(),
        pExcludeCredentialList: if request.exclude.is_empty() {
            ptr::null_mut()
        } else {
            &mut exclude_list
        },
        // Fields of later versions than the one named above: not read.
        dwEnterpriseAttestation: 0,
        dwLargeBlobSupport: 0,
        bPreferResidentKey: BOOL(0),
    };

    // SAFETY: every pointer in the arguments points into `request` or into a local above, all
    // alive until the call returns, and each count is its buffer's length; `window` is a
    // window handle (Windows checks it). The answer is freed below, once.
    let answer = unsafe {
        WebAuthNAuthenticatorMakeCredential(
            window,
            &rp,
            &user,
            &parameters,
            &client_data,
            Some(&options),
        )
    }
    .map_err(failure)?;
    if answer.is_null() {
        return Err(Failure::Malformed("Windows answered with nothing"));
    }
    // SAFETY: a non-null answer points to a WEBAUTHN_CREDENTIAL_ATTESTATION of the version it
    // names, which Windows keeps until it is freed, just below.
    let attestation = unsafe { read_attestation(answer) };
    // SAFETY: `answer` came from WebAuthNAuthenticatorMakeCredential and is freed once; what
    // was read from it is copied.
    unsafe { WebAuthNFreeCredentialAttestation(Some(answer.cast_const())) };
    attestation
}

/// Signs in: Windows asks the person for a key in its own dialog, hashes
/// `request.client_data_json` with SHA-256 and has the key sign that with one of the allowed
/// credentials (or any discoverable one for the RP ID). Blocks until the person is done.
pub fn get_assertion(request: &GetAssertion) -> Result<Assertion, Failure> {
    let window = parent_window()?;
    let public_key = wide(WEBAUTHN_CREDENTIAL_TYPE_PUBLIC_KEY, "the credential type")?;
    let sha256 = wide(WEBAUTHN_HASH_ALGORITHM_SHA_256, "the hash algorithm")?;
    let rp_id = wide(&request.rp_id, "the RP ID")?;
    let client_data = client_data(&request.client_data_json, &sha256)?;
    let mut allow = CredentialList::new(&request.allow, &public_key)?;
    let mut allow_list = allow.native()?;
    let options = WEBAUTHN_AUTHENTICATOR_GET_ASSERTION_OPTIONS {
        dwVersion: abi::GET_ASSERTION_OPTIONS_VERSION,
        dwTimeoutMilliseconds: request.timeout_ms,
        // Version 1's list, which `pAllowCredentialList` replaces.
        CredentialList: WEBAUTHN_CREDENTIALS {
            cCredentials: 0,
            pCredentials: ptr::null_mut(),
        },
        Extensions: WEBAUTHN_EXTENSIONS::default(),
        dwAuthenticatorAttachment: abi::ATTACHMENT_ANY,
        dwUserVerificationRequirement: request.user_verification,
        dwFlags: 0,
        // No U2F AppID extension, so nothing for Windows to report about it.
        pwszU2fAppId: PCWSTR::null(),
        pbU2fAppId: ptr::null_mut(),
        pCancellationId: ptr::null_mut(),
        pAllowCredentialList: if request.allow.is_empty() {
            ptr::null_mut()
        } else {
            &mut allow_list
        },
        // Fields of later versions than the one named above: not read.
        dwCredLargeBlobOperation: 0,
        cbCredLargeBlob: 0,
        pbCredLargeBlob: ptr::null_mut(),
    };

    // SAFETY: as for WebAuthNAuthenticatorMakeCredential: every pointer points into `request`
    // or into a local above, alive until the call returns, with its buffer's length beside it.
    let answer = unsafe {
        WebAuthNAuthenticatorGetAssertion(
            window,
            PCWSTR(rp_id.as_ptr()),
            &client_data,
            Some(&options),
        )
    }
    .map_err(failure)?;
    if answer.is_null() {
        return Err(Failure::Malformed("Windows answered with nothing"));
    }
    // SAFETY: a non-null answer points to a WEBAUTHN_ASSERTION of the version it names, which
    // Windows keeps until it is freed, just below.
    let assertion = unsafe { read_assertion(answer) };
    // SAFETY: `answer` came from WebAuthNAuthenticatorGetAssertion and is freed once; what was
    // read from it is copied.
    unsafe { WebAuthNFreeAssertion(answer.cast_const()) };
    assertion
}

/// Windows' dialog belongs to a window: the one in front, which is the app's (or the
/// terminal's) when the person has just asked for the ceremony; else the top one, as libfido2
/// does.
fn parent_window() -> Result<HWND, Failure> {
    // SAFETY: takes nothing; returns a handle or null.
    let front = unsafe { GetForegroundWindow() };
    if front.0 != 0 {
        return Ok(front);
    }
    // SAFETY: a null window asks for the top of the desktop's Z order; returns a handle or null.
    let top = unsafe { GetTopWindow(HWND(0)) };
    if top.0 != 0 {
        Ok(top)
    } else {
        Err(Failure::NoWindow)
    }
}

/// The client data exactly as given, and the algorithm Windows hashes it with.
fn client_data(json: &[u8], sha256: &[u16]) -> Result<WEBAUTHN_CLIENT_DATA, Failure> {
    Ok(WEBAUTHN_CLIENT_DATA {
        dwVersion: WEBAUTHN_CLIENT_DATA_CURRENT_VERSION,
        cbClientDataJSON: len32(json.len(), "the client data")?,
        pbClientDataJSON: json.as_ptr().cast_mut(),
        pwszHashAlgId: PCWSTR(sha256.as_ptr()),
    })
}

/// The parts of a WEBAUTHN_CREDENTIAL_LIST: entries pointing into the caller's credential IDs,
/// and the array of pointers to the entries the list wants. Both are heap buffers, so this may
/// move; the list itself is made by `native` where it is used.
struct CredentialList<'a> {
    entries: Vec<WEBAUTHN_CREDENTIAL_EX>,
    pointers: Vec<*mut WEBAUTHN_CREDENTIAL_EX>,
    borrows: PhantomData<&'a [u8]>,
}

impl<'a> CredentialList<'a> {
    fn new(credentials: &'a [Credential], public_key: &'a [u16]) -> Result<Self, Failure> {
        let mut entries = credentials
            .iter()
            .map(|c| {
                Ok(WEBAUTHN_CREDENTIAL_EX {
                    dwVersion: WEBAUTHN_CREDENTIAL_EX_CURRENT_VERSION,
                    cbId: len32(c.id.len(), "a credential ID")?,
                    pbId: c.id.as_ptr().cast_mut(),
                    pwszCredentialType: PCWSTR(public_key.as_ptr()),
                    dwTransports: c.transports,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        let pointers = entries.iter_mut().map(ptr::from_mut).collect();
        Ok(CredentialList {
            entries,
            pointers,
            borrows: PhantomData,
        })
    }

    fn native(&mut self) -> Result<WEBAUTHN_CREDENTIAL_LIST, Failure> {
        Ok(WEBAUTHN_CREDENTIAL_LIST {
            cCredentials: len32(self.entries.len(), "the credential list")?,
            ppCredentials: self.pointers.as_mut_ptr(),
        })
    }
}

/// The parts of a new credential, copied.
///
/// # Safety
/// `answer` points to a valid WEBAUTHN_CREDENTIAL_ATTESTATION of the version it names. The
/// bindings' struct is of a later version, whose fields may lie past the end of an older answer,
/// so it is read field by field, each one of the version the answer has, never as a whole.
unsafe fn read_attestation(
    answer: *const WEBAUTHN_CREDENTIAL_ATTESTATION,
) -> Result<Attestation, Failure> {
    // SAFETY: version 1 fields, each buffer with its length, valid as long as the answer.
    let (version, credential_id, attestation_object) = unsafe {
        (
            (*answer).dwVersion,
            copied((*answer).pbCredentialId, (*answer).cbCredentialId),
            copied((*answer).pbAttestationObject, (*answer).cbAttestationObject),
        )
    };
    if credential_id.is_empty() {
        return Err(Failure::Malformed("the new credential has no ID"));
    }
    if attestation_object.is_empty() {
        return Err(Failure::Malformed("the new credential has no attestation"));
    }
    let used_transport = if version >= WEBAUTHN_CREDENTIAL_ATTESTATION_VERSION_3 {
        // SAFETY: a version 3 field, and the answer is of version 3 or later.
        Some(unsafe { (*answer).dwUsedTransport })
    } else {
        None
    };
    Ok(Attestation {
        credential_id,
        attestation_object,
        used_transport,
    })
}

/// The parts of an assertion, copied.
///
/// # Safety
/// `answer` points to a valid WEBAUTHN_ASSERTION of the version it names; as for
/// [`read_attestation`], only fields of version 1 (all of them there) are read, one by one.
unsafe fn read_assertion(answer: *const WEBAUTHN_ASSERTION) -> Result<Assertion, Failure> {
    // SAFETY: version 1 fields, each buffer with its length, valid as long as the answer.
    let (credential_id, authenticator_data, signature, user_id) = unsafe {
        (
            copied((*answer).Credential.pbId, (*answer).Credential.cbId),
            copied((*answer).pbAuthenticatorData, (*answer).cbAuthenticatorData),
            copied((*answer).pbSignature, (*answer).cbSignature),
            copied((*answer).pbUserId, (*answer).cbUserId),
        )
    };
    if credential_id.is_empty() || authenticator_data.is_empty() || signature.is_empty() {
        return Err(Failure::Malformed(
            "the assertion lacks its credential, data or signature",
        ));
    }
    Ok(Assertion {
        credential_id,
        authenticator_data,
        signature,
        user_id: (!user_id.is_empty()).then_some(user_id),
    })
}

/// An HRESULT and webauthn.dll's name for it.
fn failure(e: windows::core::Error) -> Failure {
    let code = e.code();
    // SAFETY: takes any HRESULT; returns null or a NUL-terminated name that webauthn.dll owns
    // and never frees.
    let name = unsafe { WebAuthNGetErrorName(code) };
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: non-null, so a NUL-terminated string (above).
        unsafe { name.to_string() }.unwrap_or_default()
    };
    Failure::Windows {
        hresult: code.0,
        name,
    }
}

/// A string as Windows takes it: UTF-16, NUL-terminated. One with a NUL inside would reach
/// Windows cut short, so it is refused.
fn wide(s: &str, what: &'static str) -> Result<Vec<u16>, Failure> {
    if s.contains('\0') {
        return Err(Failure::Unrepresentable(what));
    }
    Ok(s.encode_utf16().chain([0]).collect())
}

fn len32(len: usize, what: &'static str) -> Result<u32, Failure> {
    u32::try_from(len).map_err(|_| Failure::Unrepresentable(what))
}

/// A copy of the `len` bytes at `ptr`; none when `ptr` is null.
///
/// # Safety
/// `ptr` is null or points to `len` readable bytes.
unsafe fn copied(ptr: *const u8, len: u32) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec()
}
