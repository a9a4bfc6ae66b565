//! Known-answer tests: the patched webauthn-rs-core's ES256 check (ring, see
//! `vendor/webauthn-rs-core/KEYWARD-PATCH.md`) against the original one (webauthn-rs-core
//! 0.6.2's code, RustCrypto's p256 through crypto-glue 0.2.2, reproduced below as `original`),
//! on the same vectors. Both must give the same answer, error or not, for every case: the
//! original is the reference.
//!
//! Each case is also given to ring alone (the raw DER and the raw point, without the p256
//! parsing that stays in front of it in the patch), to show what that parsing still decides:
//! `ring_alone` must reach the same accept/reject verdict everywhere too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crypto_glue::ecdsa_p256::{
    self, EcdsaP256PublicKey, EcdsaP256PublicSec1Point, EcdsaP256Signature, EcdsaP256SigningKey,
    EcdsaP256VerifyingKey,
};
use crypto_glue::s256::Sha256;
use crypto_glue::traits::{Digest, Signer, Verifier};
use ring::signature::{self as rsig, KeyPair};
use webauthn_rs_core::error::WebauthnError;
use webauthn_rs_core::proto::{COSEAlgorithm, COSEEC2Key, COSEKey, COSEKeyType, ECDSACurve};

type Outcome = Result<bool, WebauthnError>;

/// The group order n of P-256.
const N: [u8; 32] = hex32("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
/// The field prime p of P-256.
const P: [u8; 32] = hex32("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
/// y of the curve point whose x is 0 (y^2 = b; P-256 has one): (p, Y_AT_X0) is the same point
/// with x written unreduced, x >= p.
const Y_AT_X0: [u8; 32] = hex32("66485c780e2f83d72433bd5d84a06bb6541c2af31dae871728bf856a174f93f4");

const fn hex32(s: &str) -> [u8; 32] {
    let s = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(s[2 * i]) << 4) | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not hex"),
    }
}

// ---------------------------------------------------------------------------------------------
// The three verifiers

/// webauthn-rs-core 0.6.2's `COSEKey::verify_signature` for an EC2 P-256 key, as published
/// (`get_public_key`, then the ES256 arm), on unpatched crypto-glue.
fn original(x: &[u8], y: &[u8], sig: &[u8], msg: &[u8]) -> Outcome {
    let pub_key = ecdsa_p256::from_coords_raw(x, y).ok_or(WebauthnError::EcdsaPointInvalid)?;
    let signature =
        EcdsaP256Signature::from_der(sig).map_err(|_err| WebauthnError::SignatureInvalid)?;
    let verifier = EcdsaP256VerifyingKey::from(&pub_key);
    Ok(verifier.verify(msg, &signature).is_ok())
}

fn cose_key(x: &[u8], y: &[u8]) -> COSEKey {
    COSEKey {
        type_: COSEAlgorithm::ES256,
        key: COSEKeyType::EC_EC2(COSEEC2Key {
            curve: ECDSACurve::SECP256R1,
            x: x.to_vec(),
            y: y.to_vec(),
        }),
    }
}

/// The patched crate's own entry point: what `authenticate_credential` calls.
fn patched(x: &[u8], y: &[u8], sig: &[u8], msg: &[u8]) -> Outcome {
    cose_key(x, y).verify_signature(sig, msg)
}

/// ring with nothing in front of it: the raw DER and the point 0x04 || x || y.
fn ring_alone(x: &[u8], y: &[u8], sig: &[u8], msg: &[u8]) -> bool {
    let point: Vec<u8> = [0x04].iter().chain(x).chain(y).copied().collect();
    ring_point(&point, sig, msg)
}

fn ring_point(point: &[u8], sig: &[u8], msg: &[u8]) -> bool {
    rsig::UnparsedPublicKey::new(&rsig::ECDSA_P256_SHA256_ASN1, point)
        .verify(msg, sig)
        .is_ok()
}

/// Runs one case through all three; panics where the patched answer differs from the original
/// (as `Debug`, so the error variant counts too) or ring alone reaches another verdict.
fn check(label: &str, x: &[u8], y: &[u8], sig: &[u8], msg: &[u8]) -> Outcome {
    let want = original(x, y, sig, msg);
    let got = patched(x, y, sig, msg);
    assert_eq!(
        format!("{got:?}"),
        format!("{want:?}"),
        "{label}: patched verifier differs from the original (sig {})",
        hex(sig)
    );
    let alone = ring_alone(x, y, sig, msg);
    assert_eq!(
        alone,
        matches!(want, Ok(true)),
        "{label}: ring alone {} what the original {} (original: {want:?}, sig {})",
        if alone { "accepts" } else { "refuses" },
        if alone { "refuses" } else { "accepts" },
        hex(sig)
    );
    want
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Deterministic keys, messages and signatures

/// SHA-256 of `label || i || j`: the tests' only source of "randomness", so a failure can be
/// replayed.
fn det(label: &str, i: u64, j: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(i.to_be_bytes());
    h.update(j.to_be_bytes());
    h.finalize().into()
}

struct Key {
    signing: EcdsaP256SigningKey,
    x: Vec<u8>,
    y: Vec<u8>,
}

fn key(i: u64) -> Key {
    let mut j = 0;
    let signing = loop {
        if let Ok(k) = EcdsaP256SigningKey::from_slice(&det("key", i, j)) {
            break k;
        }
        j += 1;
    };
    let public = EcdsaP256PublicKey::from(signing.verifying_key());
    let point = EcdsaP256PublicSec1Point::from(public);
    let x = point.x().unwrap().to_vec();
    let y = point.y().unwrap().to_vec();
    Key { signing, x, y }
}

/// A message shaped like WebAuthn's signed data: 37 to 292 bytes (authenticator data, then
/// the client data hash).
fn message(i: u64) -> Vec<u8> {
    let len = 37 + det("len", i, 0)[0] as usize;
    (0..len.div_ceil(32) as u64)
        .flat_map(|j| det("msg", i, j))
        .take(len)
        .collect()
}

fn sign(k: &Key, msg: &[u8]) -> Vec<u8> {
    let sig: EcdsaP256Signature = k.signing.sign(msg);
    sig.to_der().as_bytes().to_vec()
}

/// (r, s) as 32-byte big-endian values, from a DER signature the original accepts.
fn split(der: &[u8]) -> ([u8; 32], [u8; 32]) {
    let (r, s) = EcdsaP256Signature::from_der(der).unwrap().split_bytes();
    (r.into(), s.into())
}

/// An INTEGER's DER, written here independently of both libraries: minimal, positive.
fn der_int(v: &[u8]) -> Vec<u8> {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
    let mut body = v[first..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0);
    }
    let mut out = vec![0x02, body.len() as u8];
    out.extend(body);
    out
}

fn der_seq(body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn der_sig(r: &[u8], s: &[u8]) -> Vec<u8> {
    der_seq(&[der_int(r), der_int(s)].concat())
}

/// a - b over 32-byte big-endian numbers (a >= b).
fn sub(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = a[i] as i16 - b[i] as i16 - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0);
    out
}

fn add_small(a: &[u8; 32], k: u8) -> [u8; 32] {
    let mut out = *a;
    let mut carry = k as u16;
    for b in out.iter_mut().rev() {
        let v = *b as u16 + carry;
        *b = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn is_high(s: &[u8; 32]) -> bool {
    // s > n / 2  <=>  s > n - s
    s.as_slice() > sub(&N, s).as_slice()
}

// ---------------------------------------------------------------------------------------------
// The cases

/// How many keys the sweeps use; a debug build verifies slowly, `KAT_KEYS` asks for more.
fn keys() -> u64 {
    std::env::var("KAT_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
fn valid_signatures_are_accepted_by_both() {
    for i in 0..keys() {
        let k = key(i);
        let msg = message(i);
        let sig = sign(&k, &msg);
        assert_eq!(
            check("valid (p256 signer)", &k.x, &k.y, &sig, &msg),
            Ok(true)
        );
    }
    // Signatures from another implementation (ring's signer, random nonces).
    let rng = ring::rand::SystemRandom::new();
    for i in 0..16 {
        let pkcs8 = rsig::EcdsaKeyPair::generate_pkcs8(&rsig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .unwrap();
        let pair = rsig::EcdsaKeyPair::from_pkcs8(
            &rsig::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        let msg = message(1000 + i);
        let sig = pair.sign(&rng, &msg).unwrap();
        assert_eq!(
            check("valid (ring signer)", x, y, sig.as_ref(), &msg),
            Ok(true)
        );
    }
}

#[test]
fn wrong_key_is_refused_by_both() {
    for i in 0..keys() {
        let (k, other) = (key(i), key(i + 1));
        let msg = message(i);
        let sig = sign(&k, &msg);
        assert_eq!(
            check("wrong key", &other.x, &other.y, &sig, &msg),
            Ok(false)
        );
    }
}

#[test]
fn flipped_message_bit_is_refused_by_both() {
    for i in 0..keys() {
        let k = key(i);
        let msg = message(i);
        let sig = sign(&k, &msg);
        let bit = u16::from_be_bytes([det("bit", i, 0)[0], det("bit", i, 0)[1]]) as usize
            % (msg.len() * 8);
        let mut bad = msg.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            check("flipped message bit", &k.x, &k.y, &sig, &bad),
            Ok(false)
        );
    }
    // Every bit of one message.
    let k = key(0);
    let msg = message(0);
    let sig = sign(&k, &msg);
    for bit in 0..msg.len() * 8 {
        let mut bad = msg.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            check("flipped message bit", &k.x, &k.y, &sig, &bad),
            Ok(false)
        );
    }
}

#[test]
fn flipped_signature_bit_agrees() {
    // Every bit of a few signatures: most flips in r or s make a valid encoding of a wrong
    // signature (refused); flips in the tags and lengths make malformed DER (an error).
    let (mut errors, mut refused) = (0, 0);
    for i in 0..4 {
        let k = key(i);
        let msg = message(i);
        let sig = sign(&k, &msg);
        for bit in 0..sig.len() * 8 {
            let mut bad = sig.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match check("flipped signature bit", &k.x, &k.y, &bad, &msg) {
                Ok(true) => panic!("a flipped signature bit was accepted: {}", hex(&bad)),
                Ok(false) => refused += 1,
                Err(_) => errors += 1,
            }
        }
    }
    assert!(
        errors > 0 && refused > 0,
        "{errors} errors, {refused} refused"
    );
    eprintln!("flipped signature bits: {errors} malformed (error), {refused} refused, all agree");
}

/// s' = n - s makes the other valid signature of the same message (the "high-S" twin when s
/// was low, and the low one when it was high). The original (p256, whose `NORMALIZE_S` is
/// false) accepts both; so must the patched one.
#[test]
fn high_s_twin_is_accepted_by_both_as_the_original_does() {
    let (mut high, mut low) = (0, 0);
    for i in 0..keys() {
        let k = key(i);
        let msg = message(i);
        let sig = sign(&k, &msg);
        let (r, s) = split(&sig);
        let twin = der_sig(&r, &sub(&N, &s));
        if is_high(&sub(&N, &s)) {
            high += 1;
        } else {
            low += 1;
        }
        assert_eq!(check("s' = n - s", &k.x, &k.y, &twin, &msg), Ok(true));
        // And the twin of a wrong message is still refused.
        let mut bad = msg.clone();
        bad[0] ^= 1;
        assert_eq!(
            check("s' = n - s, wrong message", &k.x, &k.y, &twin, &bad),
            Ok(false)
        );
    }
    assert!(
        high > 0 && low > 0,
        "{high} high-S twins, {low} low-S twins"
    );
    eprintln!("s' = n - s: {high} high-S and {low} low-S twins, all accepted by both");
}

#[test]
fn malformed_der_agrees() {
    // A signature whose r and s both have their top bit set, so both carry a sign zero.
    let (k, msg, sig) = (0..)
        .map(|i| {
            let k = key(i);
            let msg = message(i);
            let sig = sign(&k, &msg);
            (k, msg, sig)
        })
        .find(|(_, _, sig)| {
            let (r, s) = split(sig);
            r[0] & 0x80 != 0 && s[0] & 0x80 != 0
        })
        .unwrap();
    let (r, s) = split(&sig);
    let (ri, si) = (der_int(&r), der_int(&s));
    assert_eq!(
        der_sig(&r, &s),
        sig,
        "the test's own DER writer matches p256's"
    );

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for len in 0..sig.len() {
        cases.push((format!("truncated to {len}"), sig[..len].to_vec()));
    }
    for tail in [
        &[0x00][..],
        &[0x00, 0x00],
        &[0x30, 0x00],
        &[0x02, 0x01, 0x01],
    ] {
        cases.push((format!("trailing {}", hex(tail)), [&sig[..], tail].concat()));
    }
    // The outer length covering trailing bytes too.
    cases.push((
        "sequence with a trailing byte inside".into(),
        der_seq(&[&ri[..], &si, &[0x00]].concat()),
    ));
    let mut long = sig.clone();
    long[1] += 1;
    cases.push(("outer length one too long".into(), long));
    let mut short = sig.clone();
    short[1] -= 1;
    cases.push(("outer length one too short".into(), short));
    for tag in [0x31u8, 0x10, 0x20, 0xa0, 0x00, 0x04] {
        let mut bad = sig.clone();
        bad[0] = tag;
        cases.push((format!("outer tag {tag:02x}"), bad));
    }
    for tag in [0x03u8, 0x04, 0x0a, 0x82, 0x00] {
        let mut bad = sig.clone();
        bad[2] = tag;
        cases.push((format!("r tag {tag:02x}"), bad));
        let mut bad = sig.clone();
        bad[2 + ri.len()] = tag;
        cases.push((format!("s tag {tag:02x}"), bad));
    }
    // Non-minimal lengths (BER): long form for a short length, indefinite length.
    let body = [&ri[..], &si].concat();
    cases.push((
        "outer length in long form".into(),
        [&[0x30, 0x81, body.len() as u8][..], &body].concat(),
    ));
    cases.push((
        "indefinite outer length".into(),
        [&[0x30, 0x80][..], &body, &[0x00, 0x00]].concat(),
    ));
    let r_long = [&[0x02, 0x81, ri[1]][..], &ri[2..]].concat();
    cases.push((
        "r length in long form".into(),
        der_seq(&[&r_long[..], &si].concat()),
    ));
    // Integers: a redundant leading zero, negative (the zero dropped), over-long, empty, zero.
    let lead = |v: &[u8]| {
        let mut body = vec![0x00];
        body.extend(&v[2..]);
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    };
    cases.push((
        "r with a redundant leading zero".into(),
        der_seq(&[lead(&ri), si.clone()].concat()),
    ));
    cases.push((
        "s with a redundant leading zero".into(),
        der_seq(&[ri.clone(), lead(&si)].concat()),
    ));
    let unsigned = |v: &[u8]| {
        let body: Vec<u8> = v[2..].iter().copied().skip_while(|&b| b == 0).collect();
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    };
    cases.push((
        "r without its sign zero".into(),
        der_seq(&[unsigned(&ri), si.clone()].concat()),
    ));
    cases.push((
        "s without its sign zero".into(),
        der_seq(&[ri.clone(), unsigned(&si)].concat()),
    ));
    let over = [&[0x01][..], &r].concat(); // 33 significant bytes
    cases.push(("r of 33 significant bytes".into(), der_sig(&over, &s)));
    let over = [&[0x01, 0x00][..], &s].concat(); // 34
    cases.push(("s of 34 significant bytes".into(), der_sig(&r, &over)));
    cases.push((
        "r empty".into(),
        der_seq(&[&[0x02, 0x00][..], &si].concat()),
    ));
    cases.push(("r = 0".into(), der_sig(&[0], &s)));
    cases.push(("s = 0".into(), der_sig(&r, &[0])));
    cases.push(("r = n".into(), der_sig(&N, &s)));
    cases.push(("s = n".into(), der_sig(&r, &N)));
    cases.push(("r = n + 1".into(), der_sig(&add_small(&N, 1), &s)));
    cases.push(("s = n + 1".into(), der_sig(&r, &add_small(&N, 1))));
    cases.push(("r = 2^256 - 1".into(), der_sig(&[0xff; 32], &s)));
    cases.push((
        "r = n - 1".into(),
        der_sig(&sub(&N, &add_small(&[0; 32], 1)), &s),
    ));
    cases.push(("s = 1".into(), der_sig(&r, &[1])));
    cases.push(("r and s swapped".into(), der_sig(&s, &r)));
    cases.push(("only r".into(), der_seq(&ri)));
    cases.push((
        "r, s and a third integer".into(),
        der_seq(&[&ri[..], &si, &[0x02, 0x01, 0x01]].concat()),
    ));
    cases.push(("empty sequence".into(), vec![0x30, 0x00]));
    cases.push(("raw r || s (P1363, not DER)".into(), [r, s].concat()));
    cases.push(("empty".into(), vec![]));

    let mut errors = 0;
    for (label, bad) in &cases {
        let got = check(label, &k.x, &k.y, bad, &msg);
        eprintln!("malformed DER, {label}: {got:?} from both");
        match got {
            Ok(true) => panic!("{label}: accepted"),
            Ok(false) => {}
            Err(_) => errors += 1,
        }
    }
    assert!(
        errors > cases.len() / 2,
        "{errors} of {} are errors",
        cases.len()
    );
}

#[test]
fn bad_public_keys_agree() {
    let k = key(3);
    let msg = message(3);
    let sig = sign(&k, &msg);
    let mut y_off = k.y.clone();
    y_off[31] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("point not on the curve (y + 1 bit)", k.x.clone(), y_off),
        ("x and y swapped", k.y.clone(), k.x.clone()),
        (
            "(0, 0): the identity has no affine coordinates",
            vec![0; 32],
            vec![0; 32],
        ),
        (
            "x = p (unreduced x of the point with x = 0)",
            P.to_vec(),
            Y_AT_X0.to_vec(),
        ),
        ("y = p", k.x.clone(), P.to_vec()),
        ("x = p", P.to_vec(), k.y.clone()),
        ("y = 2^256 - 1", k.x.clone(), vec![0xff; 32]),
        ("x = 2^256 - 1", vec![0xff; 32], k.y.clone()),
        ("x of 31 bytes", k.x[1..].to_vec(), k.y.clone()),
        ("y of 33 bytes", k.x.clone(), [&[0][..], &k.y].concat()),
        ("empty x and y", vec![], vec![]),
        // A valid point, but not the signer's: parses, refuses.
        ("the point with x = 0", vec![0; 32], Y_AT_X0.to_vec()),
    ];
    for (label, x, y) in &cases {
        let got = check(label, x, y, &sig, &msg);
        eprintln!("public key, {label}: {got:?} from both");
        assert_ne!(got, Ok(true), "{label}");
    }
    // The point at infinity in SEC1 (a single zero byte) and a compressed point, to ring
    // alone (the COSE key cannot carry either): refused.
    assert!(!ring_point(&[0x00], &sig, &msg));
    let compressed: Vec<u8> = [2 + (k.y[31] & 1)].iter().chain(&k.x).copied().collect();
    assert!(!ring_point(&compressed, &sig, &msg));
    // The valid point with x = 0 parses for the original (an error would mean it refused
    // the key itself).
    assert_eq!(original(&[0; 32], &Y_AT_X0, &sig, &msg), Ok(false));
}

/// Project Wycheproof's ECDSA P-256 / SHA-256 / DER vectors (edge-case keys and signatures,
/// BER, range checks, arithmetic special cases): the patched verifier agrees with the original
/// on every one, and both with Wycheproof where it says valid or invalid.
#[test]
fn wycheproof_p256_sha256_agrees() {
    use wycheproof::{TestResult, ecdsa::TestName, ecdsa::TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).unwrap();
    let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
    for group in &set.test_groups {
        let point: &[u8] = &group.key.key;
        assert_eq!(point.len(), 65);
        let (x, y) = (&point[1..33], &point[33..65]);
        for t in &group.tests {
            let label = format!("wycheproof tcId {} ({})", t.tc_id, t.comment);
            let got = check(&label, x, y, &t.sig, &t.msg);
            match t.result {
                TestResult::Valid => {
                    assert_eq!(got, Ok(true), "{label}");
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert_ne!(got, Ok(true), "{label}");
                    invalid += 1;
                }
                TestResult::Acceptable => acceptable += 1,
            }
        }
    }
    assert!(
        valid > 50 && invalid > 200,
        "{valid} valid, {invalid} invalid"
    );
    eprintln!("wycheproof: {valid} valid, {invalid} invalid, {acceptable} acceptable: all agree");
}
