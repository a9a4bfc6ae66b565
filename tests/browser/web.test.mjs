// Keyward in a browser: real keywardd, real headless Chromium, the browser's own WebAuthn with
// Chromium's virtual authenticator. The steps run in order and share one account.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchChromium, openDevice, startKeywardd, startOtherSite } from './harness.mjs';

let server;
let browser;
let laptop; // the browser that creates the account
let phone; // a second browser (its own cookies) holding the same passkey

before(async () => {
  server = await startKeywardd();
  browser = await launchChromium();
  laptop = await openDevice(browser);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const signedInAs = (page) => page.getByTestId('signed-in-as');
const errorBanner = (page) => page.getByTestId('error');

async function signIn(page, username = '') {
  await page.goto(server.origin);
  await page.getByTestId('tab-sign-in').click();
  await page.getByTestId('username').fill(username);
  await page.getByTestId('sign-in').click();
}

/** The one security key moves from one machine to the other, its signature counter with it
 * (two copies used apart would be a cloned key, which keywardd refuses). */
async function carryKey(from, to) {
  const [credential] = await from.credentials();
  await to.cdp.send('WebAuthn.clearCredentials', { authenticatorId: to.authenticatorId });
  await to.addCredential(credential);
}

async function sessionCount(page) {
  return page.evaluate(async () => (await (await fetch('/api/v1/sessions')).json()).length);
}

test('the page is served with a strict CSP and shows no desktop-only controls', async () => {
  const res = await laptop.page.goto(server.origin);
  const headers = res.headers();
  assert.match(headers['content-security-policy'], /default-src 'none'; script-src 'self'/);
  assert.doesNotMatch(headers['content-security-policy'], /unsafe/);
  assert.equal(headers['x-frame-options'], 'DENY');
  await laptop.page.getByTestId('browser-key-note').waitFor();
  assert.equal(await laptop.page.getByTestId('key-choice').count(), 0, 'no virtual key in a browser');
});

test('create an account with a security key; the session is an HttpOnly __Host- cookie', async () => {
  const { page, context } = laptop;
  await page.getByTestId('tab-create').click();
  await page.getByTestId('new-username').fill('ada');
  await page.getByTestId('display-name').fill('Ada Lovelace');
  await page.getByTestId('create-account').click();
  await signedInAs(page).waitFor();
  assert.equal(await signedInAs(page).textContent(), 'Ada Lovelace');

  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === '__Host-keyward-session');
  assert.ok(session, 'a session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(session.path, '/');
  assert.equal(await page.evaluate(() => document.cookie), '', "the page's script sees no cookie");
  assert.equal((await laptop.credentials()).length, 1, 'the key holds one passkey');
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-overview.png` });
});

test('sign out, then sign in again without a username (the passkey names the account)', async () => {
  const { page } = laptop;
  await page.getByTestId('sign-out').click();
  await page.getByTestId('tab-sign-in').waitFor();
  const cookies = await laptop.context.cookies();
  assert.ok(!cookies.some((c) => c.name === '__Host-keyward-session'), 'cookie dropped');
  await signIn(page);
  await signedInAs(page).waitFor();
  assert.equal(await signedInAs(page).textContent(), 'Ada Lovelace');
});

test('add a backup key in the browser, then remove it after seeing what that would do', async () => {
  const { page } = laptop;
  const [firstKey] = await laptop.credentials();
  await laptop.swapKey(); // the spare key goes in
  await page.getByTestId('nav-keys').click();
  await page.getByTestId('backup-nickname').fill('Spare key');
  await page.getByTestId('add-key').click();
  await page.getByTestId('key-name').filter({ hasText: 'Spare key' }).waitFor();
  assert.equal(await page.getByTestId('key').count(), 2);
  assert.equal((await laptop.credentials()).length, 1, 'the spare holds its own passkey');

  const spare = page.getByTestId('key').filter({ hasText: 'Spare key' });
  await spare.getByTestId('remove-key').click();
  const impact = page.getByTestId('impact');
  await impact.waitFor();
  assert.match(await impact.textContent(), /No session will end[\s\S]*At risk/);
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-remove-impact.png` });
  await page.getByTestId('confirm-remove').click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="key"]').length === 1);

  await laptop.swapKey(); // and the first key back
  await laptop.addCredential(firstKey);
});

test('a second device signs in; the first sees it live and ends its session', async () => {
  const { page } = laptop;
  await page.getByTestId('nav-alerts').click();
  await page.getByTestId('timeline').waitFor();
  const signIns = () => page.locator('[data-testid="event"][data-kind="sign_in"]').count();
  const before = await signIns();

  phone = await openDevice(browser, { transport: 'nfc' });
  await carryKey(laptop, phone);
  await signIn(phone.page, 'ada');
  await signedInAs(phone.page).waitFor();

  // The laptop's timeline shows the phone's sign-in without a reload (the live feed).
  await page.waitForFunction((n) =>
    document.querySelectorAll('[data-testid="event"][data-kind="sign_in"]').length > n, before);
  assert.equal(await signIns(), before + 1);
  await page.getByTestId('nav-sessions').click();
  await page.locator('[data-testid="session"]').nth(1).waitFor();
  assert.equal(await sessionCount(page), 2);
  const other = page.locator('[data-testid="session"]', { hasNot: page.getByTestId('this-device') });
  await other.getByTestId('end-session').click();
  await page.getByText('Ended the session on').waitFor();
  assert.equal(await sessionCount(page), 1);

  // The phone learns at once from its live feed, without touching anything: back to sign-in.
  await phone.page.getByTestId('tab-sign-in').waitFor({ timeout: 5_000 });
  assert.match(await phone.page.getByTestId('notice').textContent(), /ended from another device/);
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-sessions.png` });
});

test('a key that cannot verify the user is refused', async () => {
  await phone.setUserVerified(false);
  await signIn(phone.page);
  await errorBanner(phone.page).waitFor();
  assert.equal(await signedInAs(phone.page).count(), 0);
  await phone.setUserVerified(true);
});

test('a key nobody touches is refused when the ceremony times out', async () => {
  await phone.cdp.send('WebAuthn.setAutomaticPresenceSimulation',
    { authenticatorId: phone.authenticatorId, enabled: false });
  // Shorten the browser's wait (the server allows 5 minutes) so the test does not sit there.
  await phone.page.route('**/api/v1/sign-in/begin', async (route) => {
    const res = await route.fetch();
    const body = await res.json();
    body.options.publicKey.timeout = 2000;
    await route.fulfill({ response: res, json: body });
  });
  await signIn(phone.page);
  await errorBanner(phone.page).waitFor({ timeout: 15_000 });
  assert.match(await errorBanner(phone.page).textContent(), /did not answer/);
  assert.equal(await signedInAs(phone.page).count(), 0);
  await phone.page.unroute('**/api/v1/sign-in/begin');
  await phone.cdp.send('WebAuthn.setAutomaticPresenceSimulation',
    { authenticatorId: phone.authenticatorId, enabled: true });
});

test('an assertion with a broken signature is refused by keywardd', async () => {
  await phone.page.route('**/api/v1/sign-in/finish', async (route) => {
    const body = route.request().postDataJSON();
    const sig = body.credential.response.signature;
    body.credential.response.signature = sig.slice(0, 10) + (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11);
    await route.continue({ postData: JSON.stringify(body) });
  });
  await signIn(phone.page);
  await errorBanner(phone.page).waitFor();
  assert.match(await errorBanner(phone.page).textContent(), /could not be verified/);
  assert.equal(await signedInAs(phone.page).count(), 0);
  await phone.page.unroute('**/api/v1/sign-in/finish');
});

test('the same page at another origin cannot use the passkey or get a session', async () => {
  const stranger = await openDevice(browser);
  await stranger.addCredential((await laptop.credentials())[0]);
  await stranger.page.goto(server.otherOrigin);
  await stranger.page.getByTestId('tab-sign-in').click();
  await stranger.page.getByTestId('sign-in').click();
  await errorBanner(stranger.page).waitFor();
  assert.equal(await signedInAs(stranger.page).count(), 0);
  assert.equal((await stranger.context.cookies()).length, 0);
  await stranger.close();
});

test('another site cannot end sessions with the signed-in cookie (CSRF)', async () => {
  await signIn(phone.page, 'ada');
  await signedInAs(phone.page).waitFor();
  assert.equal(await sessionCount(laptop.page), 2);
  // A page on another site (127.0.0.1 is not localhost) posts at keywardd in the laptop's
  // browser, where the cookie lives: with and without CORS, as a plain form would.
  const site = await startOtherSite('<!doctype html><title>Win a prize</title>');
  const evil = await laptop.context.newPage();
  await evil.goto(site.url);
  const outcomes = await evil.evaluate(async (target) => {
    const tries = [
      fetch(`${target}/api/v1/sessions/end-others`, { method: 'POST', credentials: 'include', mode: 'no-cors' }),
      fetch(`${target}/api/v1/sessions/end-others`, {
        method: 'POST', credentials: 'include', headers: { 'X-Keyward-CSRF': '1' },
      }),
    ];
    return Promise.all(tries.map((p) => p.then((r) => r.type, (e) => `refused: ${e.message}`)));
  }, server.origin);
  assert.equal(outcomes[0], 'opaque');
  assert.match(outcomes[1], /refused/, 'the custom header needs a CORS preflight keywardd never grants');
  // And a plain form post, navigating the browser there.
  await evil.setContent(`<form method="post" action="${server.origin}/api/v1/sessions/end-others">
    <button>Claim</button></form>`);
  await Promise.all([evil.waitForNavigation(), evil.click('button')]);
  assert.match(await evil.content(), /unauthenticated|sign in first/i, 'the cookie was not sent');
  await evil.close();
  await site.stop();
  assert.equal(await sessionCount(laptop.page), 2, 'no session ended');
});

test('a recovery key made in the browser is proven back, redeemed elsewhere, and cancelled by a key', async () => {
  const { page } = laptop;
  await page.getByTestId('nav-recovery').click();
  await page.getByTestId('start-wizard').click();
  await page.getByTestId('generate').click();
  const shown = page.getByTestId('recovery-key');
  await page.waitForFunction(() =>
    /^[0-9A-Z]{4}(-[0-9A-Z]{4}){7}$/.test(document.querySelector('[data-testid="recovery-key"]')?.textContent?.trim() ?? ''));
  const recoveryKey = (await shown.textContent()).trim();
  await page.getByTestId('saved').click();
  await page.getByTestId('to-confirm').click();
  await page.getByTestId('confirm-input').fill(recoveryKey.toLowerCase().replaceAll('-', ' '));
  await page.getByTestId('confirm-key').click();
  await page.getByTestId('wizard-done').waitFor();

  // Someone with the recovery key (and no security key) redeems it in another browser.
  const stranger = await openDevice(browser);
  await stranger.page.goto(server.origin);
  await stranger.page.getByTestId('tab-recover').click();
  await stranger.page.getByTestId('recover-username').fill('ada');
  await stranger.page.getByTestId('recover-key').fill(recoveryKey);
  await stranger.page.getByTestId('redeem').click();
  await stranger.page.getByTestId('recovering-banner').waitFor();
  assert.ok((await stranger.context.cookies()).some((c) => c.name === '__Host-keyward-session'));

  // The laptop, holding the key again, sees the recovery and cancels it with one touch.
  await carryKey(phone, laptop);
  await page.reload();
  await page.getByTestId('cancel-recovery').click();
  await page.getByTestId('recovery-banner').waitFor({ state: 'detached' });
  await stranger.page.reload();
  await stranger.page.getByTestId('tab-sign-in').waitFor();
  await stranger.close();
});

/** The recovery-key wizard on `page`: make a key, say it is saved, type it back. */
async function makeRecoveryKey(page) {
  await page.getByTestId('nav-recovery').click();
  await page.getByTestId('start-wizard').click();
  await page.getByTestId('generate').click();
  await page.waitForFunction(() =>
    /^[0-9A-Z]{4}(-[0-9A-Z]{4}){7}$/.test(document.querySelector('[data-testid="recovery-key"]')?.textContent?.trim() ?? ''));
  const key = (await page.getByTestId('recovery-key').textContent()).trim();
  await page.getByTestId('saved').click();
  await page.getByTestId('to-confirm').click();
  await page.getByTestId('confirm-input').fill(key);
  await page.getByTestId('confirm-key').click();
  await page.getByTestId('wizard-done').waitFor();
  return key;
}

test('a recovery survives closing the browser and is finished after the window', async () => {
  const quick = await startKeywardd(['--recovery-window', '2']);
  const owner = await openDevice(browser);
  let stranger = await openDevice(browser);
  try {
    await owner.page.goto(quick.origin);
    await owner.page.getByTestId('tab-create').click();
    await owner.page.getByTestId('new-username').fill('rita');
    await owner.page.getByTestId('create-account').click();
    await owner.page.getByTestId('signed-in-as').waitFor();
    const recoveryKey = await makeRecoveryKey(owner.page);

    await stranger.page.goto(quick.origin);
    await stranger.page.getByTestId('tab-recover').click();
    await stranger.page.getByTestId('recover-username').fill('rita');
    await stranger.page.getByTestId('recover-key').fill(recoveryKey);
    await stranger.page.getByTestId('redeem').click();
    await stranger.page.getByTestId('recovering-banner').waitFor();
    // While it waits it sees nothing of the account: no screens, no log.
    assert.equal(await stranger.page.getByTestId('nav-overview').count(), 0);
    const cookie = (await stranger.context.cookies()).find((c) => c.name === '__Host-keyward-session');
    const days = (cookie.expires * 1000 - Date.now()) / 86_400_000;
    assert.ok(days > 29 && days <= 30.01, `the recovery cookie lasts until the enrolment deadline (${days} days)`);

    // The browser is closed: session cookies go, lasting ones stay. It comes back later.
    const kept = (await stranger.context.cookies()).filter((c) => c.expires > 0);
    await stranger.close();
    await new Promise((r) => setTimeout(r, 2500));
    stranger = await openDevice(browser);
    await stranger.context.addCookies(kept);
    await stranger.page.goto(quick.origin);
    await stranger.page.getByTestId('enrol-banner').waitFor();
    assert.equal(await stranger.page.getByTestId('nav-overview').count(), 0, 'only enrolment');

    await stranger.page.getByTestId('nav-keys').click();
    await stranger.page.getByTestId('add-key').click();
    await stranger.page.getByText('Added').waitFor();
    await makeRecoveryKey(stranger.page);
    // Both enrolled: a full session now, with a new cookie.
    await stranger.page.getByTestId('nav-overview').waitFor();
    await stranger.page.getByTestId('enrol-banner').waitFor({ state: 'detached' });
    const renewed = (await stranger.context.cookies()).find((c) => c.name === '__Host-keyward-session');
    assert.notEqual(renewed.value, cookie.value);
    assert.equal(renewed.expires, -1, 'a full session\'s cookie ends with the browser');
    assert.deepEqual(stranger.problems.filter((p) => !/status of (401|403|409)/.test(p)), []);
  } finally {
    await owner.close();
    await stranger.close();
    await quick.stop();
  }
});

test('an idle tab signs itself out once the server\'s idle timeout has passed', async () => {
  const strict = await startKeywardd(['--idle-timeout', '1']);
  const device = await openDevice(browser);
  try {
    await device.page.goto(strict.origin);
    await device.page.getByTestId('tab-create').click();
    await device.page.getByTestId('new-username').fill('idle');
    await device.page.getByTestId('create-account').click();
    await device.page.getByTestId('signed-in-as').waitFor();
    // Nobody touches the page; its periodic check (every 15 s) notices without keeping the
    // session alive, and the page returns to sign-in.
    await device.page.getByTestId('tab-sign-in').waitFor({ timeout: 30_000 });
  } finally {
    await device.close();
    await strict.stop();
  }
});

test('no console errors and no CSP violations in either browser', () => {
  assert.deepEqual(laptop.problems.filter((p) => !p.includes('401')), []);
  // The refusals above log the failed requests (400, 401, 403); nothing else may appear.
  assert.deepEqual(
    phone.problems.filter((p) => !/status of (400|401|403)/.test(p)),
    [],
  );
});
