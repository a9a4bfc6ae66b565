// An AI agent signs in with the device authorization grant (RFC 8628), approved in keywardd's
// web UI at #/device in headless Chromium: the agent is plain HTTP as an agent would send it;
// the person opens the agent's verification_uri_complete, sees which agent asks, and approves
// with a touch of Chromium's virtual authenticator. The steps run in order.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { keywarddTool, launchChromium, openDevice, startKeywardd } from './harness.mjs';

let server;
let browser;
let device;
let asked;

const form = (fields) => ({
  method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});
const poll = async () => (await fetch(`${server.origin}/oauth2/token`, form({
  grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: asked.device_code, client_id: 'agent',
}))).json();

before(async () => {
  server = await startKeywardd();
  keywarddTool(['client', 'add', '--db', server.db, '--name', 'Coding agent', '--client-id', 'agent',
    '--device', '--auth-method', 'none', '--scope', 'openid', '--scope', 'profile']);
  browser = await launchChromium();
  device = await openDevice(browser);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a person with a Keyward account, signed in', async () => {
  const { page } = device;
  await page.goto(server.origin);
  await page.getByTestId('tab-create').click();
  await page.getByTestId('new-username').fill('ada');
  await page.getByTestId('display-name').fill('Ada Lovelace');
  await page.getByTestId('create-account').click();
  await page.getByTestId('signed-in-as').waitFor();
});

test('the agent asks for a code and polls: pending', async () => {
  const res = await fetch(`${server.origin}/oauth2/device_authorization`, form({ client_id: 'agent', scope: 'openid profile' }));
  assert.equal(res.status, 200);
  asked = await res.json();
  assert.match(asked.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
  assert.equal(asked.verification_uri, `${server.origin}/#/device`);
  assert.equal((await poll()).error, 'authorization_pending');
});

test('the person opens the code, sees the agent and approves with the key; the agent gets tokens', async () => {
  const { page, problems } = device;
  await page.goto(asked.verification_uri_complete);
  await page.locator('[data-phase="review"]').waitFor();
  assert.equal(await page.getByTestId('device-title').textContent(), 'Allow Coding agent to act for you?');
  assert.equal(await page.getByTestId('shown-code').textContent(), asked.user_code);
  assert.deepEqual(await page.getByTestId('scope').evaluateAll((els) => els.map((e) => e.dataset.scope)),
    ['openid', 'profile']);
  await page.getByTestId('busy').waitFor({ state: 'detached' }).catch(() => {});
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'device-title', 'focus on the heading');
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-device-review.png` });
  await page.getByTestId('approve').click();
  await page.locator('[data-phase="approved"]').waitFor();
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-device-approved.png` });
  const tokens = await poll();
  assert.ok(tokens.access_token, JSON.stringify(tokens));
  const info = await fetch(`${server.origin}/oauth2/userinfo`, { headers: { Authorization: `Bearer ${tokens.access_token}` } });
  assert.equal((await info.json()).preferred_username, 'ada');
  // The start-up check's 401 (no session yet on the first visit) is the only resource error.
  assert.deepEqual(problems.filter((p) => !p.includes('status of 401')), []);
});

test('typing a wrong code says so in words, at #/device', async () => {
  const { page } = device;
  await page.goto(`${server.origin}/#/device`);
  await page.getByTestId('user-code').fill('ZZZZ-ZZZZ');
  await page.getByTestId('lookup').click();
  await page.getByTestId('error').waitFor();
  assert.match(await page.getByTestId('error').textContent(), /No agent is waiting with that code/);
});
