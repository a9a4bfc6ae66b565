// End to end in a real WebKit window: the desktop app built with its real assets, driven by
// tauri-driver, with the virtual key standing in for the finger on the key. Screenshots of
// each main screen go to target/screenshots/.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { createECDH, createPrivateKey } from 'node:crypto';
import { WebDriver } from './webdriver.mjs';
import { launchChromium, openDevice, startKeywardd } from '../browser/harness.mjs';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const app = process.env.KEYWARD_APP ?? `${root}target/debug/keyward-desktop`;
const cli = process.env.KEYWARD_CLI ?? `${root}target/debug/keyward`;
const dataDir = process.env.KEYWARD_DATA_DIR;
const notifyLog = process.env.NOTIFY_LOG;
const shots = `${root}target/screenshots`;

async function eventually(what, check, timeout = 15000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A credential of the desktop's virtual key, as Chromium's virtual authenticator takes it. */
function asCdpCredential(stored) {
  const d = Buffer.from(stored.secret);
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey();
  const key = createPrivateKey({ format: 'jwk', key: { kty: 'EC', crv: 'P-256', d: d.toString('base64url'),
    x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') } });
  return {
    credentialId: Buffer.from(stored.id).toString('base64'),
    isResidentCredential: true,
    rpId: stored.rp_id,
    privateKey: key.export({ format: 'der', type: 'pkcs8' }).toString('base64'),
    userHandle: Buffer.from(stored.user_handle).toString('base64'),
    signCount: stored.sign_count,
  };
}

async function notifications() {
  const text = await readFile(notifyLog, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

test('a person creates an account, protects it, sees a stranger sign in and throws them out', async (t) => {
  assert.ok(dataDir && notifyLog, 'run through tests/e2e/run.sh');
  await mkdir(shots, { recursive: true });
  const wd = new WebDriver(process.env.WEBDRIVER_URL ?? 'http://127.0.0.1:4444');
  await wd.start({ 'tauri:options': { application: app } });
  wd.evidenceDir = shots;
  t.after(() => wd.quit());

  await t.test('create the account with the key', async () => {
    await wd.wait('tab-create');
    await wd.screenshot(`${shots}/01-welcome.png`);

    // A security key is the default. With none plugged in, the app asks for one over USB or
    // NFC, and Cancel ends the wait.
    assert.equal(await wd.prop('key-kind-security', 'checked'), true);
    await wd.click('sign-in');
    // (With a key already on the NFC reader the prompt moves straight on to its PIN.)
    await wd.wait('key-prompt', { until: (s) => s.includes('Insert your security key, or hold it to the reader') || s.startsWith('Enter your security key PIN') });
    await wd.screenshot(`${shots}/01b-insert-or-tap.png`);
    await wd.click('key-cancel');
    await wd.wait('error', { until: (s) => s === 'Cancelled.' });

    // No hardware here: try Keyward with the virtual key.
    await wd.click('key-kind-virtual');
    await wd.wait('virtual-warning');
    await wd.click('tab-create');
    await wd.type('new-username', 'ada');
    await wd.type('display-name', 'Ada Lovelace');
    await wd.click('create-account');
    await wd.wait('signed-in-as', { until: (s) => s.includes('Ada Lovelace') });
    await wd.wait('readiness-level', { until: (s) => s === 'At risk' });
    await wd.wait('spof', { until: (s) => s.includes('would lock you out') });
    await wd.screenshot(`${shots}/02-overview-at-risk.png`);
  });

  await t.test('add a backup key', async () => {
    await wd.click('nav-keys');
    await wd.type('backup-nickname', 'Key in the safe');
    await wd.click('add-key');
    await wd.wait('key-name', { until: (s) => s === 'Key in the safe' });
    assert.equal((await wd.findAll('key')).length, 2);
    await wd.screenshot(`${shots}/03-keys.png`);
  });

  let recoveryKey;
  await t.test('complete the recovery-key wizard', async () => {
    await wd.click('nav-recovery');
    await wd.click('start-wizard');
    await wd.click('generate');
    const shown = await wd.wait('recovery-key', { until: (s) => /^[0-9A-Z]{4}(-[0-9A-Z]{4}){7}$/.test(s.trim()) });
    recoveryKey = (await wd.text(shown)).trim();
    await wd.screenshot(`${shots}/04-recovery-key-shown.png`);
    await wd.click('saved');
    await wd.click('to-confirm');
    await wd.type('confirm-input', recoveryKey.toLowerCase().replaceAll('-', ' '));
    await wd.click('confirm-key');
    await wd.wait('wizard-done');
    await wd.screenshot(`${shots}/05-recovery-done.png`);
    await wd.click('nav-overview');
    await wd.wait('readiness-level', { until: (s) => s === 'Protected' });
    await wd.screenshot(`${shots}/06-overview-protected.png`);
  });

  let second;
  let server;
  await t.test('a sign-in from a second client raises a live alert and a desktop notification', async () => {
    server = await wd.attr(await wd.wait('server'), 'title');
    assert.match(server, /^http:\/\/localhost:\d+\/$/);
    // The second client holds only the backup key, as a borrowed laptop with the spare would.
    const ring = JSON.parse(await readFile(`${dataDir}/virtual-keys.json`, 'utf8'));
    assert.equal(ring.length, 2);
    const secondKey = `${dataDir}/../second-client-key.json`;
    await writeFile(secondKey, JSON.stringify([ring[1]]));
    // The built-in keywardd opens only sessions bound to a key on the device: the CLI keeps
    // this one's in a file of its own, apart from the token.
    const sessionKey = `${dataDir}/../second-client-session.key`;
    const { stdout } = await run(cli, ['--server', server, 'sign-in', '--key-file', secondKey, '--name', 'Borrowed laptop',
      '--session-key', sessionKey]);
    second = { ...JSON.parse(stdout), sessionKey };
    assert.ok(second.token);
    assert.equal(second.session.binding, 'software');

    await wd.click('nav-alerts');
    await wd.wait('event', { until: (s) => s.includes('New sign-in on Borrowed laptop') });
    await wd.screenshot(`${shots}/07-alerts.png`);
    const note = await eventually('a desktop notification', async () =>
      (await notifications()).find((n) => n.body.includes('Borrowed laptop')));
    assert.equal(note.app, 'Keyward');
    assert.equal(note.summary, 'New sign-in to your account');
    assert.ok(note.actions.includes('default'), 'the notification can be acted on');
    // Acting on it (the stand-in service clicks it) opens that session in the app.
    const focused = await eventually('the notified session opened', async () => {
      for (const el of await wd.findAll('session')) {
        if ((await wd.attr(el, 'data-focused')) === 'true') return el;
      }
    });
    assert.match(await wd.text(focused), /Borrowed laptop/);
    await wd.screenshot(`${shots}/08-opened-from-notification.png`);
    await wd.click('nav-alerts');
    // The app's own actions never notify.
    assert.ok(!(await notifications()).some((n) => n.body.includes('Keyward desktop')), JSON.stringify(await notifications()));
  });

  await t.test('end that session from the alert; its token is refused', async () => {
    const row = await wd.wait('event', { until: (s) => s.includes('New sign-in on Borrowed laptop') && s.includes('Not you?') });
    const [notMe] = await wd.within(row, 'not-me');
    await wd.clickEl(notMe);
    await wd.wait('ask-text', { until: (s) => s.includes('report') });
    await wd.click('ask-no');
    await wd.click('nav-sessions');
    await eventually('one session left', async () => (await wd.findAll('session')).length === 1);
    await wd.wait('this-device');
    await wd.screenshot(`${shots}/09-sessions.png`);
    await assert.rejects(
      run(cli, ['--server', server, 'account', '--token', second.token, '--session-key', second.sessionKey]),
      (e) => JSON.parse(e.stderr).code === 'unauthenticated',
    );
  });

  await t.test('after a restart the session resumes from the OS secret store, and is in no file', {
    skip: process.env.KEYWARD_E2E_SECRET_SERVICE ? false : 'no Secret Service on this machine',
  }, async () => {
    await wd.quit();
    // Wait for the old app, and its built-in server, to be gone.
    await eventually('the old app to exit', async () => !(await fetch(`${server}healthz`).then(() => true, () => false)));
    await wd.start({ 'tauri:options': { application: app } });
    await wd.wait('signed-in-as', { until: (s) => s.includes('Ada Lovelace') });
    await wd.screenshot(`${shots}/10-resumed-after-restart.png`);
    // The resting token is in the secret store: no file of the app's holds a serialised token.
    const { stdout } = await run('grep', ['-rlF', '--', '"token":', dataDir]).catch((e) => ({ stdout: e.stdout ?? '' }));
    assert.equal(stdout.trim(), '', `a token in ${stdout}`);
  });

  await t.test('a security key on the NFC reader: add it with its PIN, read it, list its passkeys', { skip: !process.env.KEYWARD_E2E_NFC_PIN && 'no NFC reader (pcscd with vpcd) here' }, async () => {
    const pin = process.env.KEYWARD_E2E_NFC_PIN;
    await wd.click('nav-keys');
    await wd.click('key-kind-security');
    await wd.wait('key-manager');
    await wd.click('key-read');
    await wd.wait('key-pin-state', { until: (s) => s === 'set, 8 tries left' });
    await wd.screenshot(`${shots}/11-key-info.png`);

    await wd.type('backup-nickname', 'NFC key');
    await wd.click('add-key');
    await wd.wait('key-prompt', { until: (s) => s.startsWith('Enter your security key PIN') });
    assert.match(await wd.text(await wd.wait('key-prompt-detail')), /8 tries left/);
    await wd.screenshot(`${shots}/12-pin-prompt.png`);
    await wd.type('key-pin', pin);
    await wd.click('key-pin-ok');
    await wd.wait('key-name', { until: (s) => s === 'NFC key' });
    await wd.gone('busy');

    await wd.click('key-show-passkeys');
    await eventually('the PIN prompt or an error', async () =>
      (await wd.findAll('key-pin')).length > 0 || (await wd.findAll('error')).length > 0, 20000)
      .catch(async (e) => { await wd.screenshot(`${shots}/timeout-key-list.png`); throw e; });
    if ((await wd.findAll('error')).length > 0) {
      await wd.screenshot(`${shots}/key-list-error.png`);
      assert.fail(await wd.text((await wd.findAll('error'))[0]));
    }
    await wd.type('key-pin', pin);
    await wd.click('key-pin-ok');
    await wd.wait('key-passkey', { until: (s) => s.includes('This account\'s key "NFC key"') });
    assert.equal((await wd.findAll('key-missing')).length, 0);
    await wd.screenshot(`${shots}/13-passkeys-on-key.png`);

    // Delete it from the key: the account's entry for it is then flagged.
    const [del] = await wd.within(await wd.wait('key-passkey'), 'key-passkey-delete');
    await wd.clickEl(del);
    await wd.click('ask-yes');
    await wd.wait('key-pin');
    await wd.type('key-pin', pin);
    await wd.click('key-pin-ok');
    await wd.wait('key-missing', { until: (s) => s.includes('"NFC key" is this model') });
    await wd.screenshot(`${shots}/14-reset-key-flagged.png`);
  });
  await t.test('a browser signs in to the same keywardd: the desktop shows it live, notifies, and ends it', async () => {
    // A household keywardd serving the web UI; the desktop app connects to it.
    const web = await startKeywardd();
    const browser = await launchChromium();
    try {
      await wd.click('sign-out');
      await wd.click('server-toggle');
      await wd.type('server-url', web.origin);
      await wd.click('connect');
      await wd.wait('server-toggle', { until: (s) => s.includes(web.origin) });
      await wd.click('key-kind-virtual');
      await wd.click('tab-create');
      await wd.type('new-username', 'grace');
      await wd.type('display-name', 'Grace Hopper');
      await wd.click('create-account');
      await wd.wait('signed-in-as', { until: (s) => s.includes('Grace Hopper') });
      await wd.click('nav-alerts');

      // The same key, in Chromium's virtual authenticator: the person signs in from a browser.
      const ring = JSON.parse(await readFile(`${dataDir}/virtual-keys.json`, 'utf8'));
      const stored = ring.flatMap((k) => k.credentials).find((c) => c.user_name === 'grace');
      const device = await openDevice(browser);
      await device.addCredential(asCdpCredential(stored));
      await device.page.goto(web.origin);
      await device.page.getByTestId('username').fill('grace');
      await device.page.getByTestId('sign-in').click();
      await device.page.getByTestId('signed-in-as').waitFor();
      await device.page.screenshot({ path: `${shots}/15-browser-signed-in.png` });

      await wd.wait('event', { until: (s) => /New sign-in on .*\(web\)/.test(s) });
      await wd.screenshot(`${shots}/16-desktop-sees-browser-sign-in.png`);
      const note = await eventually('a desktop notification for the browser sign-in', async () =>
        (await notifications()).find((n) => n.body.includes('(web)')));
      assert.equal(note.summary, 'New sign-in to your account');

      // The stand-in notification service clicks the notification, which opens that session
      // (as in step 4); once it has, back to the alerts. Clicking before the app had moved was
      // a race that left a stale element.
      await eventually('the notified browser session opened', async () => {
        for (const el of await wd.findAll('session')) {
          if ((await wd.attr(el, 'data-focused')) === 'true' && /\(web\)/.test(await wd.text(el))) return el;
        }
      });
      await wd.click('nav-alerts');
      // "Not you?" on that alert ends the browser's session; the page learns it live.
      const alert = await wd.wait('event', { until: (s) => /New sign-in on .*\(web\)/.test(s) });
      const [notMe] = await wd.within(alert, 'not-me');
      await wd.clickEl(notMe);
      await wd.wait('ask-text', { until: (s) => s.includes('report') });
      await wd.click('ask-no');
      await device.page.getByTestId('tab-sign-in').waitFor({ timeout: 10_000 });
      await device.page.screenshot({ path: `${shots}/17-browser-session-ended.png` });
      assert.deepEqual(device.problems.filter((p) => !/status of 401/.test(p)), []);
    } finally {
      await browser.close();
      await web.stop();
    }
  });
});
