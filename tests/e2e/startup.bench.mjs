// Benchmark 5 (run by `./dev bench`, through run.sh): the desktop app's cold start to first
// meaningful paint under Xvfb, and its proportional memory (PSS, the app and its WebKit
// processes) after start and after 10,000 events in the timeline. Prints one JSON line.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { WebDriver } from './webdriver.mjs';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const app = process.env.KEYWARD_APP ?? `${root}target/release/keyward-desktop`;
const helper = process.env.KEYWARD_BENCH ?? `${root}target/release/keyward-bench`;
const events = Number(process.env.KEYWARD_BENCH_EVENTS ?? 10000);

const HZ = 100; // USER_HZ on Linux
function uptime() {
  return Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
}
function stat(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(rest[1]), startSecs: Number(rest[19]) / HZ, comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')) };
}
function pids() {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
}
function appPid() {
  const found = pids().filter((p) => { try { return stat(p).comm.startsWith('keyward-deskto'); } catch { return false; } });
  if (found.length !== 1) throw new Error(`expected one keyward-desktop, found ${found.length}`);
  return found[0];
}
/** PSS in KiB of `pid` and every process below it (WebKit's web and network processes). */
function pssTree(pid) {
  const all = pids().map((p) => { try { return [p, stat(p).ppid]; } catch { return null; } }).filter(Boolean);
  const tree = new Set([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [p, pp] of all) if (tree.has(pp) && !tree.has(p)) { tree.add(p); grew = true; }
  }
  let kib = 0;
  const parts = [];
  for (const p of tree) {
    try {
      const m = readFileSync(`/proc/${p}/smaps_rollup`, 'utf8').match(/^Pss:\s+(\d+) kB/m);
      if (m) { kib += Number(m[1]); parts.push(`${stat(p).comm} ${Math.round(Number(m[1]) / 1024)} MiB`); }
    } catch { /* gone */ }
  }
  return { mib: kib / 1024, parts };
}

const wd = new WebDriver(process.env.WEBDRIVER_URL ?? 'http://127.0.0.1:4444');
const asked = Date.now();
await wd.start({ 'tauri:options': { application: app } });
// Poll tightly: the welcome screen (drawn once the embedded keywardd answers) is the first
// meaningful paint.
while ((await wd.findAll('tab-create').catch(() => [])).length === 0) {
  await new Promise((r) => setTimeout(r, 5));
  if (Date.now() - asked > 30000) throw new Error('no welcome screen');
}
const paintedUptime = uptime();
const sessionToPaintMs = Date.now() - asked;
const pid = appPid();
// From the kernel's start time of the app process (10 ms resolution) to the welcome screen.
const processToPaintMs = Math.round((paintedUptime - stat(pid).startSecs) * 1000);
await new Promise((r) => setTimeout(r, 2000)); // let start-up settle
const afterStart = pssTree(pid);

// An account, then 10,000 security events arriving live in the timeline.
await wd.click('key-kind-virtual');
await wd.click('tab-create');
await wd.type('new-username', 'ada');
await wd.click('create-account');
await wd.wait('signed-in-as');
await wd.click('nav-alerts');
const t = Date.now();
await run(helper, ['--rename-events', process.env.KEYWARD_DATA_DIR, 'ada', String(events)], { maxBuffer: 1 << 24 });
const made = Date.now() - t;
// The helper's first sign-in is a new device: its notification (which the test's stand-in
// service clicks) opens the sessions screen, so come back to the timeline when needed.
// Done when the newest event shown is the last rename.
const newest = async () => {
  const [el] = await wd.findAll('event');
  if (!el || (await wd.findAll('timeline')).length === 0) {
    await wd.click('nav-alerts').catch(() => {});
    return '';
  }
  return wd.text(el);
};
const loaded = async () => {
  const [el] = await wd.findAll('timeline-count');
  return el ? Number(await wd.attr(el, 'data-count')) : 0;
};
for (const end = Date.now() + 180000; !(await newest()).includes(`Key ${events - 1}`);) {
  if (Date.now() > end) {
    await wd.screenshot(`${root}target/screenshots/bench-timeline.png`);
    throw new Error(`the timeline did not reach all events (${await loaded()})`);
  }
  await new Promise((r) => setTimeout(r, 500));
}
await new Promise((r) => setTimeout(r, 2000));
const afterEvents = pssTree(pid);
// And once the web process's garbage collector has had time to run.
await new Promise((r) => setTimeout(r, 20000));
const settled = pssTree(pid);
const shown = await loaded();
await wd.quit();
console.log(JSON.stringify({
  process_to_paint_ms: processToPaintMs,
  webdriver_session_to_paint_ms: sessionToPaintMs,
  pss_after_start_mib: Math.round(afterStart.mib),
  pss_after_events_mib: Math.round(afterEvents.mib),
  pss_20s_later_mib: Math.round(settled.mib),
  parts_after_start: afterStart.parts,
  events_kept_in_memory: shown,
  events_made_ms: made,
  parts_after_events: afterEvents.parts,
}));
