// An app signs people in through keywardd (OpenID Connect), in headless Chromium: the app is a
// tiny relying party on loopback built on openid-client (a client library nobody here wrote),
// doing the code flow with PKCE; keywardd is the real one, serving its web UI, where the
// passkey sign-in and the consent happen with Chromium's virtual authenticator. The steps run
// in order and share one account.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { keywarddTool, launchChromium, openDevice, root, startKeywardd } from './harness.mjs';

/** The app's page after keywardd sent the browser back: signed in, or the app's error. */
async function backAtTheApp(page) {
  await page.locator('[data-testid="app-signed-in"], [data-testid="app-error"]').waitFor();
  const outcome = app.outcomes.at(-1);
  assert.equal(outcome?.error, undefined, `the app refused keywardd's answer: ${outcome?.error?.stack ?? outcome?.error} ${JSON.stringify(outcome?.error?.cause ?? '')}`);
  return outcome;
}

const oidc = await import(createRequire(path.join(root, 'ui/package.json')).resolve('openid-client'));

let server;
let browser;
let device;
let app;

/**
 * The relying party: `/login` sends the browser to keywardd with a fresh state, nonce and PKCE
 * verifier; `/cb` hands the answer to openid-client, which exchanges the code and verifies the
 * ID token (signature against the JWKS, iss, aud, nonce, expiry; `iss` of the response too).
 */
async function startApp() {
  const pending = new Map(); // state → { verifier, nonce }
  const outcomes = [];
  let config = null;
  let issuer;
  let clientId;
  let clientSecret;
  const site = createServer(async (req, res) => {
    const url = new URL(req.url, base());
    const page = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><title>Notes</title>${body}`);
    };
    try {
      // client_secret_basic, as the client is registered (openid-client would post it).
      config ??= await oidc.discovery(new URL(issuer), clientId, undefined, oidc.ClientSecretBasic(clientSecret),
        { execute: [oidc.allowInsecureRequests] });
      if (url.pathname === '/login') {
        const verifier = oidc.randomPKCECodeVerifier();
        const state = oidc.randomState();
        const nonce = oidc.randomNonce();
        pending.set(state, { verifier, nonce });
        const to = oidc.buildAuthorizationUrl(config, {
          redirect_uri: `${base()}/cb`, scope: 'openid profile', state, nonce,
          code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
          ...(url.searchParams.has('prompt') ? { prompt: url.searchParams.get('prompt') } : {}),
        });
        res.writeHead(303, { Location: to.href });
        res.end();
      } else if (url.pathname === '/cb') {
        const state = url.searchParams.get('state');
        const asked = pending.get(state);
        pending.delete(state);
        if (!asked) return page(400, '<p data-testid="app-error">unknown state</p>');
        try {
          const tokens = await oidc.authorizationCodeGrant(config, url, {
            pkceCodeVerifier: asked.verifier, expectedNonce: asked.nonce, expectedState: state, idTokenExpected: true,
          });
          const claims = tokens.claims();
          outcomes.push({ tokens, claims, nonce: asked.nonce });
          page(200, `<h1 data-testid="app-signed-in">Signed in to Notes</h1><p>${claims.sub}</p>
            <p><a href="/login" data-testid="app-login">Sign in again</a></p>`);
        } catch (e) {
          outcomes.push({ error: e });
          // The person said no: a page like any other. Anything else is the app's failure.
          page(e.error === 'access_denied' ? 200 : 400, `<p data-testid="app-error">${e.error ?? e.code ?? 'error'}</p>`);
        }
      } else {
        page(404, '<p>not found</p>');
      }
    } catch (e) {
      outcomes.push({ error: e });
      page(500, `<p data-testid="app-error">${e.code ?? 'error'}</p>`);
    }
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  const base = () => `http://127.0.0.1:${site.address().port}`;
  return {
    base: base(), redirectUri: `${base()}/cb`, outcomes,
    /** Points the app at keywardd once its client is registered there. */
    use(iss, id, secret) {
      [issuer, clientId, clientSecret] = [iss, id, secret];
    },
    get config() {
      return config;
    },
    stop: () => new Promise((r) => site.close(r)),
  };
}

before(async () => {
  app = await startApp();
  server = await startKeywardd();
  const out = keywarddTool(['client', 'add', '--db', server.db, '--name', 'Notes', '--client-id', 'notes',
    '--redirect-uri', app.redirectUri, '--scope', 'openid', '--scope', 'profile']);
  const secret = /client_secret: (\S+)/.exec(out)?.[1];
  assert.ok(secret, `a client secret in: ${out}`);
  app.use(server.origin, 'notes', secret);
  browser = await launchChromium();
  device = await openDevice(browser);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await app?.stop();
});

test('a person with a Keyward account, signed out', async () => {
  const { page } = device;
  await page.goto(server.origin);
  await page.getByTestId('tab-create').click();
  await page.getByTestId('new-username').fill('ada');
  await page.getByTestId('display-name').fill('Ada Lovelace');
  await page.getByTestId('create-account').click();
  await page.getByTestId('signed-in-as').waitFor();
  await page.getByTestId('sign-out').click();
  await page.getByTestId('tab-sign-in').waitFor();
});

test('the app sends the browser to keywardd, which asks for the passkey, then consent; Deny goes back with access_denied', async () => {
  const { page } = device;
  await page.goto(`${app.base}/login`);
  await page.waitForURL(new RegExp(`^${server.origin}/#/authorize/[A-Za-z0-9_-]+$`));
  await page.locator('[data-phase="sign-in"]').waitFor();
  assert.equal(await page.getByTestId('authorize-title').textContent(), 'Sign in to continue to Notes');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'authorize-title', 'focus on the heading');
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-oidc-sign-in.png` });
  await page.getByTestId('sign-in').click();
  await page.locator('[data-phase="consent"]').waitFor();
  assert.equal(await page.getByTestId('redirect-origin').textContent(), app.base);
  assert.deepEqual(await page.getByTestId('scope').evaluateAll((els) => els.map((e) => e.dataset.scope)),
    ['openid', 'profile']);
  assert.match(await page.getByTestId('remembered').textContent(), /remembers[\s\S]*revoke/);
  await page.getByTestId('deny').click();
  await page.waitForURL(`${app.redirectUri}?**`);
  const denied = new URL(page.url());
  assert.equal(denied.searchParams.get('error'), 'access_denied');
  assert.equal(denied.searchParams.get('iss'), server.origin, 'RFC 9207: the issuer names itself');
  assert.equal(app.outcomes.length, 1);
  assert.equal(app.outcomes[0].error?.error, 'access_denied', 'openid-client reads the denial');
});

test('asked again, Allow: the app exchanges the code and openid-client verifies the ID token', async () => {
  const { page } = device;
  // The page's start-up check (its status, behind the key overlay) answers after the request
  // does: the consent must still end with focus on its heading once the overlay closes (CI saw
  // focus left nowhere when the two raced).
  const slowAccount = async (route) => { await new Promise((r) => setTimeout(r, 1500)); await route.continue(); };
  await page.route('**/api/v1/account', slowAccount);
  await page.goto(`${app.base}/login`);
  await page.locator('[data-phase="consent"]').waitFor(); // still signed in; a denial is not remembered
  await page.getByTestId('busy').waitFor({ state: 'detached' });
  await page.unroute('**/api/v1/account', slowAccount);
  // Keyboard alone: from the focused heading, Tab reaches the buttons; Enter on Allow.
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'authorize-title');
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-oidc-consent.png` });
  for (let i = 0; i < 5 && await page.evaluate(() => document.activeElement?.dataset.testid) !== 'allow'; i++) {
    await page.keyboard.press('Tab');
  }
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'allow', 'Allow is reached by Tab');
  await page.keyboard.press('Enter');
  const { tokens, claims, nonce } = await backAtTheApp(page);
  assert.equal(claims.iss, server.origin);
  assert.equal(claims.aud, 'notes');
  assert.equal(claims.nonce, nonce);
  assert.ok(claims.sub && !claims.sub.includes('ada'), 'a subject that is not the username');
  assert.ok(tokens.access_token);
  const info = await oidc.tokenIntrospection(app.config, tokens.access_token);
  assert.equal(info.active, true);
});

test('a second sign-in to the same app goes straight through: consent is remembered', async () => {
  const { page } = device;
  const seen = [];
  const onFrame = (f) => { if (f === page.mainFrame()) seen.push(f.url()); };
  page.on('framenavigated', onFrame);
  // A link in the app's page: the navigation to keywardd starts on another site, so keywardd's
  // SameSite=Strict cookie stays behind until the web UI asks on its own page.
  await page.getByTestId('app-login').click();
  const { claims } = await backAtTheApp(page);
  page.off('framenavigated', onFrame);
  assert.ok(seen.some((u) => u.startsWith(`${server.origin}/#/authorize/`)),
    `the web UI's authorize screen approved it, asking nothing: ${seen.join(' → ')}`);
  assert.equal(claims.sub, app.outcomes.at(-2).claims.sub, 'the same person to this app');
  assert.ok(seen.every((u) => !u.startsWith(server.origin) || /#\/authorize\//.test(u) || u.includes('/oauth2/')),
    `no other keywardd page on the way: ${seen.join(' → ')}`);
});

test('an app that asks for a fresh sign-in (prompt=login) gets a new touch of the key, not a new consent', async () => {
  const { page } = device;
  const before = app.outcomes.at(-1).claims;
  await new Promise((r) => setTimeout(r, 1100)); // auth_time counts seconds
  await page.goto(`${app.base}/login?prompt=login`);
  await page.locator('[data-phase="confirm"]').waitFor();
  assert.equal(await page.getByTestId('allow').count(), 0, 'consent is not asked again');
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-oidc-confirm.png` });
  await page.getByTestId('confirm').click();
  const { claims } = await backAtTheApp(page);
  assert.equal(claims.sub, before.sub);
  assert.ok(claims.auth_time > before.auth_time, `a newer ceremony: ${claims.auth_time} > ${before.auth_time}`);
});

test("signing out of Keyward's web UI ends the app's tokens", async () => {
  const { page } = device;
  const { tokens, claims } = app.outcomes.at(-1);
  assert.equal((await oidc.fetchUserInfo(app.config, tokens.access_token, claims.sub)).sub, claims.sub);
  await page.goto(server.origin);
  await page.getByTestId('sign-out').click();
  await page.getByTestId('tab-sign-in').waitFor();
  assert.equal((await oidc.tokenIntrospection(app.config, tokens.access_token)).active, false);
  await assert.rejects(oidc.fetchUserInfo(app.config, tokens.access_token, claims.sub),
    (e) => e.status === 401 || e.cause?.status === 401 || /401|invalid_token/.test(String(e.message)));
});

test('an expired or unknown request says so and leads back to the dashboard', async () => {
  const { page } = device;
  await page.goto(`${server.origin}/#/authorize/no-such-request`);
  await page.locator('[data-phase="missing"]').waitFor();
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-oidc-missing.png` });
  await page.getByTestId('to-dashboard').click();
  await page.getByTestId('tab-sign-in').waitFor();
});

test('no console errors and no CSP violations', () => {
  // Signed out, the page's status check is refused (401): nothing else may appear.
  assert.deepEqual(device.problems.filter((p) => !/status of (401|404)/.test(p)), []);
});
