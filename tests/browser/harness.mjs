// The browser half's test harness: a real keywardd serving the built web UI on loopback, and
// Debian's Chromium driven by playwright-core, with Chromium's own virtual authenticator (CDP
// WebAuthn domain) standing in for the finger on the key.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { chromium } = createRequire(path.join(root, 'ui/package.json'))('playwright-core');

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

// The binary `cargo build` made: in CARGO_TARGET_DIR when that is set, as cargo does.
const keywarddBin = path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, 'target'), 'debug/keywardd');

/** Runs one of keywardd's own commands (`client add …`) to its end; its standard output. */
export function keywarddTool(args) {
  return execFileSync(keywarddBin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** keywardd on loopback with a fresh SQLite file, serving ui/dist at http://localhost:PORT. */
export async function startKeywardd(extraArgs = []) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'keyward-web-'));
  const origin = `http://localhost:${port}`;
  const db = path.join(dir, 'keyward.db');
  const child = spawn(keywarddBin, [
    '--db', db, '--listen', `127.0.0.1:${port}`,
    '--origin', origin, '--web-ui', path.join(root, 'ui/dist'), ...extraArgs,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${origin}/healthz`)).ok) break;
    } catch { /* not up yet */ }
    if (child.exitCode !== null) throw new Error(`keywardd exited: ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port, origin, dir, db,
    /** The same server at another origin (127.0.0.1 is another site than localhost). */
    otherOrigin: `http://127.0.0.1:${port}`,
    async stop() {
      child.kill();
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Another site on loopback (127.0.0.1 is another site than localhost), serving one page. */
export async function startOtherSite(html) {
  const site = createHttpServer((_, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(html);
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${site.address().port}/`,
    stop: () => new Promise((r) => site.close(r)),
  };
}

/** Debian's Chromium, headless, with a fresh profile and no calls to Google's services. */
export async function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A page in its own browser context (its own cookies: another "device") with a CTAP2 virtual
 * authenticator that verifies the user and simulates the touch. Console errors, page errors and
 * CSP violations are collected so tests can assert there were none.
 */
export async function openDevice(browser, { transport = 'usb' } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const plugIn = async () => (await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', ctap2Version: 'ctap2_1', transport, hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  })).authenticatorId;
  let authenticatorId = await plugIn();
  return {
    context, page, cdp, problems,
    get authenticatorId() {
      return authenticatorId;
    },
    /** Unplugs the key and plugs in another, empty one. */
    async swapKey() {
      await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
      authenticatorId = await plugIn();
    },
    /** The passkeys the virtual authenticator holds (with their private keys, PKCS#8). */
    async credentials() {
      return (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
    },
    async addCredential(credential) {
      await cdp.send('WebAuthn.addCredential', { authenticatorId, credential });
    },
    async setUserVerified(isUserVerified) {
      await cdp.send('WebAuthn.setUserVerified', { authenticatorId, isUserVerified });
    },
    async close() {
      await context.close();
    },
  };
}
