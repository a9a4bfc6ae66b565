// Deleting an account in the browser (issue 15): the Overview's "Your account" card exports the
// security log, and "Delete account…" opens a dialog that asks for the username typed back
// (Escape keeps the account), then the key; a second browser signed in to the same account
// gets the urgent alert live and is signed out. keywardd then refuses the key and verify-log
// passes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { keywarddTool, launchChromium, openDevice, startKeywardd } from './harness.mjs';

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

test('export the log, then delete the account: typed confirmation, the key, an alert elsewhere', async () => {
  const laptop = await openDevice(browser);
  const { page } = laptop;
  await page.goto(server.origin);
  await page.getByTestId('tab-create').click();
  await page.getByTestId('new-username').fill('ada');
  await page.getByTestId('create-account').click();
  await page.getByTestId('signed-in-as').waitFor();

  // A second browser with the same passkey, watching the account's live alerts.
  const phone = await openDevice(browser, { transport: 'nfc' });
  const [credential] = await laptop.credentials();
  await phone.addCredential(credential);
  await phone.page.goto(server.origin);
  await phone.page.getByTestId('tab-sign-in').click();
  await phone.page.getByTestId('username').fill('ada');
  await phone.page.getByTestId('sign-in').click();
  await phone.page.getByTestId('signed-in-as').waitFor();
  await laptop.cdp.send('WebAuthn.clearCredentials', { authenticatorId: laptop.authenticatorId });
  await laptop.addCredential((await phone.credentials())[0]);

  // The export downloads a file that says what it holds.
  await page.getByTestId('nav-overview').click();
  const download = page.waitForEvent('download');
  await page.getByTestId('export-log').click();
  const file = await (await download).path();
  const exported = JSON.parse(readFileSync(file, 'utf8'));
  assert.equal(exported.format, 'keyward-log-export-v1');
  assert.equal(exported.username, 'ada');
  assert.ok(exported.events.length >= 2);
  assert.ok(exported.events.every((e) => e.sealed && e.hash.length === 64));
  await page.getByTestId('exported').waitFor();

  // Escape keeps the account, and focus goes back to the button that opened the dialog.
  await page.getByTestId('delete-account').click();
  await page.getByTestId('delete-dialog').waitFor();
  await page.keyboard.press('Escape');
  await page.getByTestId('delete-dialog').waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'delete-account');

  await page.getByTestId('delete-account').click();
  const confirm = page.getByTestId('confirm-delete');
  assert.equal(await confirm.isDisabled(), true, 'nothing to delete until the name is typed');
  await page.getByTestId('delete-confirm').fill('ad');
  assert.equal(await confirm.isDisabled(), true);
  await page.getByTestId('delete-confirm').fill('ada');
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-delete-account.png` });
  await confirm.click();

  // Both browsers are back at the welcome screen; the phone was told why.
  await page.getByTestId('tab-sign-in').waitFor();
  await phone.page.getByTestId('tab-sign-in').waitFor();
  await page.screenshot({ path: `${process.env.SCREENSHOTS}/web-account-deleted.png` });

  // The passkey no longer signs in.
  await page.getByTestId('tab-sign-in').click();
  await page.getByTestId('username').fill('');
  await page.getByTestId('sign-in').click();
  await page.getByTestId('error').waitFor();

  const verified = keywarddTool(['verify-log', '--db', server.db]);
  assert.match(verified, /ok|verified|intact/i);
  assert.deepEqual(laptop.problems.filter((p) => !/40[013]/.test(p)), []);
});
