// Accessibility of the web UI, in the real page: axe-core's WCAG 2.2 A/AA rules on every screen
// and dialog in the light and the dark scheme, and one journey done with the keyboard alone
// (page.keyboard only), asserting where focus lands at each step. Real keywardd, real Chromium,
// Chromium's virtual authenticator as the key.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launchChromium, openDevice, root, startKeywardd } from './harness.mjs';

const axeSource = readFileSync(
  createRequire(path.join(root, 'ui/package.json')).resolve('axe-core/axe.min.js'), 'utf8');
const SCREENSHOTS = process.env.SCREENSHOTS ?? path.join(root, 'target/screenshots');
mkdirSync(SCREENSHOTS, { recursive: true });
const WCAG = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

let server;
let browser;

before(async () => {
  server = await startKeywardd();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** axe on the page as it is now, in light and in dark; fails listing every violation. */
async function audit(page, what) {
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    // Evaluated through the DevTools protocol, which the page's CSP does not govern.
    if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(axeSource);
    const violations = await page.evaluate(async (tags) => {
      const result = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
      if (result.passes.length < 10) return [`axe checked almost nothing (${result.passes.length} rules passed)`];
      return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n${v.nodes
        .map((n) => `    ${n.target.join(' ')}: ${n.failureSummary.replaceAll('\n', ' ')}`).join('\n')}`);
    }, WCAG);
    assert.deepEqual(violations, [], `axe, ${what}, ${colorScheme} scheme:\n${violations.join('\n')}`);
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

async function shoot(page, name) {
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    await page.screenshot({ path: path.join(SCREENSHOTS, `a11y-${name}-${colorScheme}.png`) });
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

/** What has focus: its tag, test id and text. */
const focused = (page) => page.evaluate(() => {
  const el = document.activeElement;
  return { tag: el?.tagName.toLowerCase(), testid: el?.getAttribute('data-testid') ?? null, text: el?.textContent?.trim() ?? '' };
});

/** Waits until focus is on the screen heading reading `text`. */
async function headingFocused(page, text) {
  await page.waitForFunction((t) => {
    const el = document.activeElement;
    return el?.tagName === 'H1' || el?.tagName === 'H2' ? el.textContent.trim() === t : false;
  }, text, { timeout: 5_000 }).catch(async () => {
    assert.fail(`focus should be on the heading "${text}", is on ${JSON.stringify(await focused(page))}`);
  });
}

/** Presses Tab (or Shift+Tab) until focus is on an element matching `selector`. */
async function tabTo(page, selector, { back = false, max = 60 } = {}) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
  }
  assert.fail(`${back ? 'Shift+Tab' : 'Tab'} never reached ${selector}; focus is on ${JSON.stringify(await focused(page))}`);
}

/** The focused element draws a focus ring at least 2 px wide. */
async function ringShown(page) {
  const ring = await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return { style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
  });
  assert.ok(ring.style !== 'none' && ring.width >= 2, `focus ring on ${JSON.stringify(await focused(page))}: ${JSON.stringify(ring)}`);
}

/** The one key moves to another browser (with its counter), as a person carries it. */
async function carryKey(from, to) {
  const [credential] = await from.credentials();
  await to.cdp.send('WebAuthn.clearCredentials', { authenticatorId: to.authenticatorId });
  await to.addCredential(credential);
}

async function signInElsewhere(owner, username) {
  const other = await openDevice(browser, { transport: 'nfc' });
  await carryKey(owner, other);
  await other.page.goto(server.origin);
  await other.page.getByTestId('username').fill(username);
  await other.page.getByTestId('sign-in').click();
  await other.page.getByTestId('signed-in-as').waitFor();
  await carryKey(other, owner);
  return other;
}

test('every screen and dialog passes axe (WCAG 2.2 A and AA) in light and dark', async () => {
  const laptop = await openDevice(browser);
  const { page } = laptop;
  try {
    await page.goto(server.origin);
    await page.getByTestId('tab-sign-in').waitFor();
    await audit(page, 'welcome, sign in');
    await page.getByTestId('tab-recover').click();
    await audit(page, 'welcome, lost your keys');
    await page.getByTestId('tab-create').click();
    await audit(page, 'welcome, create account');
    await page.getByTestId('new-username').fill('ada');
    await page.getByTestId('display-name').fill('Ada Lovelace');
    await page.getByTestId('create-account').click();
    await page.getByTestId('signed-in-as').waitFor();
    await page.getByTestId('readiness').waitFor();
    await audit(page, 'overview');
    await shoot(page, 'overview');
    await page.getByTestId('delete-account').click();
    await page.getByTestId('delete-dialog').waitFor();
    await audit(page, 'the delete-account dialog');
    await page.keyboard.press('Escape');
    await page.getByTestId('delete-dialog').waitFor({ state: 'detached' });

    // Another device signs in: an urgent alert arrives live and is announced at once.
    const phone = await signInElsewhere(laptop, 'ada');
    await page.waitForFunction(() =>
      /New sign-in/.test(document.querySelector('[data-testid="live-urgent"]')?.textContent ?? ''));
    await page.getByTestId('nav-alerts').click();
    await page.locator('[data-testid="event"][data-kind="sign_in"]').first().waitFor();
    await audit(page, 'sign-in alerts with an urgent alert');
    await page.getByTestId('nav-sessions').click();
    await page.locator('[data-testid="session"]').nth(1).waitFor();
    await audit(page, 'devices and sessions');
    await phone.close();

    await page.getByTestId('nav-keys').click();
    await page.getByTestId('key').first().waitFor();
    await audit(page, 'security keys');

    // The "touch your key" overlay, held open while keywardd's answer is kept back.
    let release;
    const held = new Promise((r) => { release = r; });
    await page.route('**/removal-impact', async (route) => { await held; await route.continue(); });
    await page.getByTestId('remove-key').click();
    await page.getByTestId('busy').waitFor();
    assert.match(await page.getByTestId('live-key').textContent(), /Checking…/);
    assert.ok(await page.evaluate(() => document.querySelector('[data-testid="busy"]').contains(document.activeElement)),
      'focus is in the key overlay');
    await audit(page, 'the key overlay');
    release();
    await page.getByTestId('impact').waitFor();
    await page.unroute('**/removal-impact');
    await audit(page, 'the removal dialog');
    await shoot(page, 'keys-dialog');
    await page.getByTestId('keep-key').click();
    await page.getByTestId('report-lost').click();
    await page.getByTestId('ask').waitFor();
    await audit(page, 'the report-lost confirmation');
    await page.getByTestId('ask-no').click();

    await page.getByTestId('nav-recovery').click();
    await page.getByTestId('recovery-status').waitFor();
    await audit(page, 'recovery key');
    await page.getByTestId('start-wizard').click();
    await audit(page, 'recovery wizard: why');
    await page.getByTestId('generate').click();
    await page.waitForFunction(() =>
      /^[0-9A-Z]{4}(-[0-9A-Z]{4}){7}$/.test(document.querySelector('[data-testid="recovery-key"]')?.textContent?.trim() ?? ''));
    await audit(page, 'recovery wizard: save');
    const key = (await page.getByTestId('recovery-key').textContent()).trim();
    await page.getByTestId('saved').click();
    await page.getByTestId('to-confirm').click();
    await audit(page, 'recovery wizard: type it back');
    await page.getByTestId('confirm-input').fill(key);
    await page.getByTestId('confirm-key').click();
    await page.getByTestId('wizard-done').waitFor();
    await audit(page, 'recovery wizard: done');

    // 200% zoom on a 1280 px window is a 640 px one: one column, nothing cut off.
    await page.getByTestId('nav-overview').click();
    await page.setViewportSize({ width: 640, height: 720 });
    await page.getByTestId('readiness').waitFor();
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth),
      'no sideways scrolling at 640 px');
    await audit(page, 'overview at 640 px');
    await shoot(page, 'overview-640px');
    assert.deepEqual(laptop.problems.filter((p) => !/status of 401/.test(p)), []);
  } finally {
    await laptop.close();
  }
});

test('keyboard alone: create an account, visit every screen, end a session, close confirmations with Escape', async () => {
  const laptop = await openDevice(browser);
  const { page } = laptop;
  const kb = page.keyboard;
  try {
    await page.goto(server.origin);
    await page.getByTestId('tab-sign-in').waitFor();

    // Welcome: the tab list is one stop; the arrow selects "Create account"; Enter submits.
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'tab-sign-in');
    await ringShown(page);
    await kb.press('ArrowRight');
    assert.equal((await focused(page)).testid, 'tab-create');
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'new-username');
    await kb.type('kim');
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'display-name');
    await kb.type('Kim Park');
    await kb.press('Enter');
    await page.getByTestId('signed-in-as').waitFor();
    await headingFocused(page, 'Overview');

    // From the top: the skip link first, then the screens in order, then the account.
    await page.reload();
    await page.getByTestId('readiness').waitFor();
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'skip-link', JSON.stringify(await focused(page)));
    assert.ok((await page.getByTestId('skip-link').boundingBox()).y >= 0, 'the skip link shows when focused');
    await ringShown(page);
    const order = [];
    for (let i = 0; i < 6; i++) {
      await kb.press('Tab');
      await ringShown(page);
      order.push((await focused(page)).testid);
    }
    assert.deepEqual(order, ['nav-overview', 'nav-sessions', 'nav-alerts', 'nav-keys', 'nav-recovery', 'sign-out']);
    for (let i = 0; i < 6; i++) await kb.press('Shift+Tab');
    assert.equal((await focused(page)).testid, 'skip-link');
    await kb.press('Enter');
    await headingFocused(page, 'Overview');
    await kb.press('Tab');
    assert.equal((await focused(page)).text, 'Do this now', 'the first control of the main content');
    await ringShown(page);

    // Every screen from the nav: focus lands on its heading, the nav marks it current.
    for (const [id, heading] of [['sessions', 'Devices & sessions'], ['alerts', 'Sign-in alerts'],
      ['keys', 'Security keys'], ['recovery', 'Recovery key'], ['overview', 'Overview']]) {
      await tabTo(page, `[data-testid="nav-${id}"]`, { back: true });
      await kb.press('Enter');
      await headingFocused(page, heading);
      assert.equal(await page.getByTestId(`nav-${id}`).getAttribute('aria-current'), 'page');
    }

    // End another device's session: Tab to its button, Enter; the key confirms (the virtual
    // authenticator); the row goes and focus lands on the heading, not lost to the page.
    const phone = await signInElsewhere(laptop, 'kim');
    await page.waitForFunction(() =>
      /New sign-in/.test(document.querySelector('[data-testid="live-urgent"]')?.textContent ?? ''));
    await tabTo(page, '[data-testid="nav-sessions"]', { back: true });
    await kb.press('Enter');
    await headingFocused(page, 'Devices & sessions');
    await page.locator('[data-testid="session"]').nth(1).waitFor();
    await tabTo(page, '[data-testid="session"]:not(:has([data-testid="this-device"])) [data-testid="end-session"]');
    await ringShown(page);
    await kb.press('Enter');
    await page.getByText('Ended the session on').waitFor();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="session"]').length === 1);
    await headingFocused(page, 'Devices & sessions');
    await phone.page.getByTestId('tab-sign-in').waitFor({ timeout: 5_000 });
    await phone.close();

    // A confirmation: focus goes to its safe answer, Tab stays inside, Escape closes it and
    // focus returns to the button that opened it. Nothing was reported lost.
    await tabTo(page, '[data-testid="nav-keys"]', { back: true });
    await kb.press('Enter');
    await headingFocused(page, 'Security keys');
    await page.getByTestId('report-lost').waitFor();
    await tabTo(page, '[data-testid="report-lost"]');
    await kb.press('Enter');
    await page.getByTestId('ask').waitFor();
    assert.equal((await focused(page)).testid, 'ask-no');
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'ask-yes');
    await ringShown(page);
    await shoot(page, 'keyboard-confirm');
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'ask-no', 'Tab wraps inside the dialog');
    await kb.press('Escape');
    await page.getByTestId('ask').waitFor({ state: 'detached' });
    assert.equal((await focused(page)).testid, 'report-lost');
    assert.equal(await page.getByText('Reported lost').count(), 0);

    // The removal preview: the same, from "Remove…".
    await tabTo(page, '[data-testid="remove-key"]', { back: true });
    await kb.press('Enter');
    await page.getByTestId('impact').waitFor();
    assert.equal((await focused(page)).testid, 'keep-key');
    await kb.press('Shift+Tab');
    assert.ok(await page.evaluate(() => document.querySelector('[data-testid="impact"]').contains(document.activeElement)),
      'Shift+Tab stays inside the dialog');
    await kb.press('Escape');
    await page.getByTestId('impact').waitFor({ state: 'detached' });
    assert.equal((await focused(page)).testid, 'remove-key');
    assert.equal(await page.getByTestId('key').count(), 1);

    // The recovery wizard: each step's heading takes focus; Escape leaves it before a key is made.
    await tabTo(page, '[data-testid="nav-recovery"]', { back: true });
    await kb.press('Enter');
    await headingFocused(page, 'Recovery key');
    await tabTo(page, '[data-testid="start-wizard"]');
    await kb.press('Enter');
    await headingFocused(page, 'Why a recovery key');
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'generate');
    await kb.press('Escape');
    await headingFocused(page, 'Recovery key');
    await tabTo(page, '[data-testid="start-wizard"]');
    await kb.press('Enter');
    await tabTo(page, '[data-testid="generate"]');
    await kb.press('Enter');
    await headingFocused(page, 'Save your recovery key');
    const key = (await page.getByTestId('recovery-key').textContent()).trim();
    await tabTo(page, '[data-testid="saved"]');
    await kb.press('Space');
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'to-confirm');
    await kb.press('Enter');
    await headingFocused(page, 'Type it back');
    await kb.press('Tab');
    assert.equal((await focused(page)).testid, 'confirm-input');
    await kb.type(key);
    await kb.press('Enter');
    await headingFocused(page, 'Done');
    await page.getByTestId('wizard-done').waitFor();

    // Sign out: back on the welcome screen, focus on its heading.
    await tabTo(page, '[data-testid="sign-out"]', { back: true });
    await kb.press('Enter');
    await page.getByTestId('tab-sign-in').waitFor();
    await headingFocused(page, 'Keyward');
    assert.deepEqual(laptop.problems.filter((p) => !/status of 401/.test(p)), []);
  } finally {
    await laptop.close();
  }
});
