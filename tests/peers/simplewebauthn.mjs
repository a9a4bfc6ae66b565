// SimpleWebAuthn's server under Node verifying the benchmark's assertions (one core, as Node
// runs JavaScript). Prints one JSON line: {"library", "version", "verified", "per_second"}.
import { readFile } from 'node:fs/promises';
import { verifyAuthenticationResponse } from '@simplewebauthn/server';

const fixture = JSON.parse(await readFile(process.argv[2], 'utf8'));
const publicKey = Buffer.from(fixture.public_key_cose, 'base64url');
const version = JSON.parse(await readFile(new URL('./node_modules/@simplewebauthn/server/package.json', import.meta.url), 'utf8')).version;

async function verifyAll() {
  let ok = 0;
  for (const a of fixture.assertions) {
    const result = await verifyAuthenticationResponse({
      response: a.response,
      expectedChallenge: a.challenge,
      expectedOrigin: fixture.origin,
      expectedRPID: fixture.rp_id,
      credential: { id: fixture.credential_id, publicKey, counter: 0 },
      requireUserVerification: true,
    });
    if (result.verified) ok++;
  }
  return ok;
}

await verifyAll(); // warm-up (JIT)
const start = process.hrtime.bigint();
const verified = await verifyAll();
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(JSON.stringify({
  library: 'SimpleWebAuthn server (Node ' + process.versions.node + ')',
  version, verified, per_second: fixture.assertions.length / seconds,
}));
