// A small W3C WebDriver client over fetch: enough to drive the app through tauri-driver,
// with waits that poll for a condition instead of sleeping for a fixed time.
import { writeFile } from 'node:fs/promises';

const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

export class WebDriver {
  constructor(base) {
    this.base = base;
    this.sid = null;
    this.evidenceDir = null;
  }

  async cmd(method, path, body) {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json.value ?? json)}`);
    return json.value;
  }

  s(path) {
    return `/session/${this.sid}${path}`;
  }

  async start(capabilities) {
    const v = await this.cmd('POST', '/session', { capabilities: { alwaysMatch: capabilities } });
    this.sid = v.sessionId;
  }

  async quit() {
    if (this.sid) await this.cmd('DELETE', `/session/${this.sid}`).catch(() => {});
    this.sid = null;
  }

  async findAll(testid) {
    const v = await this.cmd('POST', this.s('/elements'), { using: 'css selector', value: `[data-testid="${testid}"]` });
    return v.map((e) => e[ELEMENT]);
  }

  /** Waits until an element with this test id exists (and `until` holds for its text). */
  async wait(testid, { timeout = 20000, until = () => true } = {}) {
    const end = Date.now() + timeout;
    let last = '';
    while (Date.now() < end) {
      const all = await this.findAll(testid).catch(() => []);
      for (const el of all) {
        last = await this.text(el).catch(() => '');
        if (until(last)) return el;
      }
      await new Promise((r) => setTimeout(r, 150));
    }
    // Leave evidence: what was on screen, and any error the app showed.
    const shown = [];
    for (const el of await this.findAll('error').catch(() => [])) shown.push(await this.text(el).catch(() => ''));
    if (this.evidenceDir) await this.screenshot(`${this.evidenceDir}/timeout-${testid}.png`).catch(() => {});
    throw new Error(`timed out waiting for [data-testid="${testid}"] (last text: ${JSON.stringify(last)}; errors shown: ${JSON.stringify(shown)})`);
  }

  /** Waits until no element with this test id is shown (a ceremony overlay, say). */
  async gone(testid, timeout = 20000) {
    const end = Date.now() + timeout;
    while (Date.now() < end) {
      if ((await this.findAll(testid).catch(() => [])).length === 0) return;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`[data-testid="${testid}"] still there`);
  }

  async click(testid, opts) {
    await this.clickEl(await this.wait(testid, opts));
  }

  async clickEl(el) {
    // Centre it first: WebKitWebDriver's own scrolling can leave a control below the fold
    // under the pointer's miss.
    await this.cmd('POST', this.s('/execute/sync'), { script: 'arguments[0].scrollIntoView({ block: "center" })', args: [{ [ELEMENT]: el }] });
    await this.cmd('POST', this.s(`/element/${el}/click`), {});
  }

  async type(testid, text) {
    const el = await this.wait(testid);
    await this.cmd('POST', this.s(`/element/${el}/clear`), {}).catch(() => {});
    await this.cmd('POST', this.s(`/element/${el}/value`), { text });
  }

  async text(el) {
    return this.cmd('GET', this.s(`/element/${el}/text`));
  }

  /** A DOM property (e.g. `checked`) of the element with this test id. */
  async prop(testid, name) {
    const el = await this.wait(testid);
    return this.cmd('GET', this.s(`/element/${el}/property/${name}`));
  }

  async attr(el, name) {
    return this.cmd('GET', this.s(`/element/${el}/attribute/${name}`));
  }

  async within(el, testid) {
    const v = await this.cmd('POST', this.s(`/element/${el}/elements`), { using: 'css selector', value: `[data-testid="${testid}"]` });
    return v.map((e) => e[ELEMENT]);
  }

  async alertText() {
    return this.cmd('GET', this.s('/alert/text'));
  }

  async dismissAlert() {
    return this.cmd('POST', this.s('/alert/dismiss'), {});
  }

  /** Runs a script in the page (synchronously) and returns its value. */
  async exec(script) {
    return this.cmd('POST', this.s('/execute/sync'), { script, args: [] });
  }

  async screenshot(path) {
    const png = await this.cmd('GET', this.s('/screenshot'));
    await writeFile(path, Buffer.from(png, 'base64'));
  }
}
