// A browser session bound to this page's non-extractable WebCrypto key: the cookie lives
// seconds here (keywardd --browser-cookie-life 4; minutes by default), the page renews it with
// its key, a copy of the cookie in another browser works only until it expires, a renewal
// without the key is refused, and ending the session returns the tab to sign-in. Debian's
// Chromium has no DBSC of its own (no key provider on Linux), so this is the fallback every
// browser gets; the DBSC endpoints are tested from the spec in the Rust suite.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchChromium, openDevice, startKeywardd } from './harness.mjs';

const LIFE_SECS = 4;
let server;
let browser;
let owner;

before(async () => {
  server = await startKeywardd(['--browser-cookie-life', String(LIFE_SECS)]);
  browser = await launchChromium();
  owner = await openDevice(browser);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** `fetch` from `page` to keywardd: the status, and the Secure-Session-Challenge if any. */
async function call(page, path, { method = 'GET', headers = {} } = {}) {
  return page.evaluate(async ({ path, method, headers }) => {
    const res = await fetch(path, { method, headers, credentials: 'same-origin' });
    return { status: res.status, challenge: res.headers.get('Secure-Session-Challenge') };
  }, { path, method, headers });
}

/** Waits (a few seconds at most) until `check` holds, polling. */
async function eventually(check, what) {
  for (let i = 0; i < 50; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`never: ${what}`);
}

test('the session is bound to the page\'s key; a copied cookie dies off the device, the owner\'s lives on', async () => {
  const { page, context } = owner;
  await page.goto(server.origin);
  await page.getByTestId('tab-create').click();
  await page.getByTestId('new-username').fill('grace');
  await page.getByTestId('create-account').click();
  await page.getByTestId('signed-in-as').waitFor();

  // The sessions list says how this session is bound.
  await page.getByTestId('nav-sessions').click();
  const badge = page.getByTestId('session-binding');
  await badge.first().waitFor();
  assert.equal(await badge.first().textContent(), "Bound by the browser (this page's key)");
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-sessions-bound.png` });

  // The key never leaves: non-extractable, in IndexedDB.
  const extractable = await page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('keyward', 1);
    open.onsuccess = () => {
      const get = open.result.transaction('session-key').objectStore('session-key').get('current');
      get.onsuccess = () => resolve(get.result.key.privateKey.extractable);
      get.onerror = () => reject(get.error);
    };
  }));
  assert.equal(extractable, false);

  // A thief copies the cookie (HttpOnly: by malware reading the profile, here through CDP) into
  // another browser. It works at first...
  const thief = await openDevice(browser);
  const stolen = async () => (await context.cookies()).find((c) => c.name === '__Host-keyward-session');
  let session;
  try {
    await thief.page.goto(server.origin);
    // (The owner's page renews every two seconds here, which replaces the cookie and kills a copy at
    // once, so the thief copies until one is used before the owner's next renewal.)
    await eventually(async () => {
      session = await stolen();
      if (!session) return false;
      await thief.context.addCookies([session]);
      return (await call(thief.page, '/api/v1/account')).status === 200;
    }, 'a freshly copied cookie works');
    assert.ok(session.expires > 0 && session.expires - Date.now() / 1000 <= LIFE_SECS + 1, 'short-lived');
    // ...until its short life ends, even if the thief keeps the cookie past the browser's expiry.
    await eventually(async () => {
      await thief.context.addCookies([{ ...session, expires: Date.now() / 1000 + 3600 }]);
      return (await call(thief.page, '/api/v1/account')).status === 401;
    }, 'the copied cookie is refused');

    // Renewing needs the key: the thief gets a challenge, and nothing for a proof of another key.
    const sessionId = await page.evaluate(async () => (await (await fetch('/api/v1/session')).json()).id);
    const ask = { method: 'POST', headers: { 'X-Keyward-CSRF': '1', 'X-Keyward-Browser-Session': sessionId } };
    const first = await call(thief.page, '/api/v1/browser-session/refresh', ask);
    assert.equal(first.status, 403);
    assert.match(first.challenge, /^"[^"]+";id="/);
    const forged = await thief.page.evaluate(async (challenge) => {
      const key = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
      const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
        .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      const enc = (v) => b64(new TextEncoder().encode(JSON.stringify(v)));
      const signed = `${enc({ alg: 'ES256', typ: 'dbsc+jwt' })}.${enc({ jti: challenge })}`;
      const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey,
        new TextEncoder().encode(signed));
      return `${signed}.${b64(sig)}`;
    }, first.challenge.split(';')[0].replace(/"/g, ''));
    const res = await call(thief.page, '/api/v1/browser-session/refresh',
      { ...ask, headers: { ...ask.headers, 'Secure-Session-Response': `"${forged}"` } });
    assert.equal(res.status, 403, 'a proof by another key is refused');
    assert.equal((await call(thief.page, '/api/v1/account')).status, 401);

    // The owner's tab renewed its cookie with its key all along, and still works. (A request of
    // its own that races a renewal may carry the cookie just replaced: the page's API calls then
    // renew and retry once, `web.ts`; this bare fetch just asks again.)
    await eventually(async () => (await context.cookies())
      .some((c) => c.name === '__Host-keyward-session' && c.value !== session.value), 'the owner\'s cookie renewed');
    await eventually(async () => (await call(page, '/api/v1/account')).status === 200, 'the owner\'s session works');
  } finally {
    await thief.close();
  }
});

test('ending the session makes the next renewal fail and the tab return to sign-in', async () => {
  const { page } = owner;
  const other = await openDevice(browser);
  try {
    // The owner signs in elsewhere too, and ends the first browser's session from there.
    await other.page.goto(server.origin);
    await other.page.getByTestId('tab-sign-in').click();
    await other.page.getByTestId('username').fill('grace');
    await other.cdp.send('WebAuthn.clearCredentials', { authenticatorId: other.authenticatorId });
    await other.addCredential((await owner.credentials())[0]);
    await other.page.getByTestId('sign-in').click();
    await other.page.getByTestId('signed-in-as').waitFor();
    const ownerSession = await page.evaluate(async () => (await (await fetch('/api/v1/session')).json()).id);
    const ended = await other.page.evaluate(async (id) => {
      // A session just signed in is fresh: ending another needs no new touch.
      const res = await fetch(`/api/v1/sessions/${id}`, { method: 'DELETE', headers: { 'X-Keyward-CSRF': '1' } });
      return res.status;
    }, ownerSession);
    assert.equal(ended, 200);
    // Within one renewal (half the cookie's life), the tab is back at sign-in, and the renewal
    // was refused: the page forgot its key (it does so only on a 401 or a sign-out).
    await page.getByTestId('tab-sign-in').waitFor({ timeout: 10_000 });
    await eventually(() => page.evaluate(() => new Promise((resolve) => {
      const open = indexedDB.open('keyward', 1);
      open.onsuccess = () => {
        const get = open.result.transaction('session-key').objectStore('session-key').get('current');
        get.onsuccess = () => resolve(get.result === undefined);
      };
    })), 'the refused renewal made the page forget its key');
    await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-bound-session-ended.png` });
  } finally {
    await other.close();
  }
});

test('no console errors and no CSP violations in the owner\'s browser', () => {
  assert.deepEqual(owner.problems.filter((p) => !/status of (401|403)/.test(p)), []);
});
