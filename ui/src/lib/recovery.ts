// The recovery key in a browser, with WebCrypto only: the same format, derivation and proof as
// keyward-core's recovery_key.rs (a known-answer test holds both to one vector). The key is
// made here and never leaves the page; the server gets only the Ed25519 public key.

import { toBase64Url } from './base64url';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const RANDOM_LEN = 16;
const ENCODED_LEN = 32;
const encoder = new TextEncoder();

export class RecoveryKeyFormatError extends Error {}

async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', concat(...parts)));
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function checksum(random: Uint8Array): Promise<Uint8Array> {
  return (await sha256(encoder.encode('keyward-recovery-key-checksum-v1'), random)).slice(0, 4);
}

/** 128 random bits, to be shown once. */
export function generateRandom(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(RANDOM_LEN));
}

/** `XXXX-XXXX-…`: the random bytes and a 4-byte checksum in Crockford base32. */
export async function toDisplay(random: Uint8Array): Promise<string> {
  const bytes = concat(random, await checksum(random));
  let out = '';
  let acc = 0;
  let bits = 0;
  let written = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      if (written > 0 && written % 4 === 0) out += '-';
      out += ALPHABET[(acc >> bits) & 31];
      written++;
    }
  }
  return out;
}

/** What a person typed back: case, spaces and dashes do not matter; O→0, I/L→1. */
export async function parse(input: string): Promise<Uint8Array> {
  const values: number[] = [];
  for (const c of input) {
    if (c === '-' || /\s/.test(c)) continue;
    const u = c.toUpperCase();
    const v = u === 'O' ? 0 : u === 'I' || u === 'L' ? 1 : ALPHABET.indexOf(u);
    if (v < 0) throw new RecoveryKeyFormatError(`'${c}' cannot appear in a recovery key`);
    values.push(v);
  }
  if (values.length !== ENCODED_LEN) {
    throw new RecoveryKeyFormatError(
      `a recovery key has 32 characters (8 groups of 4); this has ${values.length}`);
  }
  const bytes: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const v of values) {
    acc = ((acc << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((acc >> bits) & 0xff);
    }
  }
  const random = new Uint8Array(bytes.slice(0, RANDOM_LEN));
  const expected = await checksum(random);
  if (expected.some((b, i) => b !== bytes[RANDOM_LEN + i])) {
    throw new RecoveryKeyFormatError(
      'this recovery key has a typo: check each group against your saved copy');
  }
  return random;
}

// PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410): WebCrypto imports private keys no other way.
const PKCS8_ED25519_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

async function signingKey(random: Uint8Array): Promise<CryptoKey> {
  const ikm = await crypto.subtle.importKey('raw', concat(random), 'HKDF', false, ['deriveBits']);
  const seed = new Uint8Array(await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: encoder.encode('keyward-recovery-key-v1'),
      info: encoder.encode('ed25519 signing key') },
    ikm, 256));
  return crypto.subtle.importKey('pkcs8', concat(PKCS8_ED25519_PREFIX, seed), { name: 'Ed25519' },
    true, ['sign']);
}

/** The public key the server stores, base64url without padding. */
export async function publicKey(random: Uint8Array): Promise<string> {
  const jwk = await crypto.subtle.exportKey('jwk', await signingKey(random));
  if (!jwk.x) throw new Error('this browser cannot export an Ed25519 public key');
  return jwk.x;
}

export type Purpose = 'confirm' | 'drill' | 'redeem';

/** Signs one server challenge, framed with its purpose and the RP ID (see proof_message). */
export async function sign(random: Uint8Array, purpose: Purpose, rpId: string,
  challenge: Uint8Array): Promise<string> {
  const message = concat(encoder.encode(`keyward-recovery-proof-v1\n${purpose}\n${rpId}\n`), challenge);
  const signature = await crypto.subtle.sign({ name: 'Ed25519' }, await signingKey(random), message);
  return toBase64Url(new Uint8Array(signature));
}
