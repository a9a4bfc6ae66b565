//! The numbers webauthn.h defines, here on every platform so that requests can be built and
//! answers read anywhere. On Windows, `ffi` holds each one to the bindings' value when it
//! compiles.

/// `dwAuthenticatorAttachment`.
pub const ATTACHMENT_ANY: u32 = 0;
pub const ATTACHMENT_PLATFORM: u32 = 1;
pub const ATTACHMENT_CROSS_PLATFORM: u32 = 2;

/// `dwUserVerificationRequirement`.
pub const UV_ANY: u32 = 0;
pub const UV_REQUIRED: u32 = 1;
pub const UV_PREFERRED: u32 = 2;
pub const UV_DISCOURAGED: u32 = 3;

/// `dwAttestationConveyancePreference`.
pub const ATTESTATION_ANY: u32 = 0;
pub const ATTESTATION_NONE: u32 = 1;
pub const ATTESTATION_INDIRECT: u32 = 2;
pub const ATTESTATION_DIRECT: u32 = 3;

/// `dwTransports` and `dwUsedTransport` bits.
pub const TRANSPORT_USB: u32 = 0x01;
pub const TRANSPORT_NFC: u32 = 0x02;
pub const TRANSPORT_BLE: u32 = 0x04;
pub const TRANSPORT_TEST: u32 = 0x08;
pub const TRANSPORT_INTERNAL: u32 = 0x10;
/// API version 6 on (Windows 11 22H2); newer than the bindings, so not held to them.
pub const TRANSPORT_HYBRID: u32 = 0x20;

/// The versions of the option structures we fill in: those of API version 1 (Windows 10 1903),
/// which every later version reads too. Every field we set exists in them; naming a newer
/// version than the DLL knows would fail on older Windows for nothing.
pub const MAKE_CREDENTIAL_OPTIONS_VERSION: u32 = 3;
pub const GET_ASSERTION_OPTIONS_VERSION: u32 = 4;

/// HRESULTs the API fails with (as Chromium and libfido2 read them).
/// A credential in the exclude list is on the key (the DOM's InvalidStateError).
pub const NTE_EXISTS: i32 = 0x8009_000F_u32 as i32;
/// No credential on the key matches.
pub const NTE_NOT_FOUND: i32 = 0x8009_0011_u32 as i32;
/// The key has no room for another discoverable credential.
pub const NTE_TOKEN_KEYSET_STORAGE_FULL: i32 = 0x8009_0023_u32 as i32;
pub const NTE_INVALID_PARAMETER: i32 = 0x8009_0027_u32 as i32;
pub const NTE_NOT_SUPPORTED: i32 = 0x8009_0029_u32 as i32;
pub const NTE_DEVICE_NOT_FOUND: i32 = 0x8009_0035_u32 as i32;
/// The person closed Windows' dialog, or it timed out (the DOM's NotAllowedError).
pub const NTE_USER_CANCELLED: i32 = 0x8009_0036_u32 as i32;
/// HRESULT_FROM_WIN32(ERROR_CANCELLED).
pub const HRESULT_CANCELLED: i32 = 0x8007_04C7_u32 as i32;
/// HRESULT_FROM_WIN32(ERROR_TIMEOUT).
pub const HRESULT_TIMEOUT: i32 = 0x8007_05B4_u32 as i32;
