// App-wide state with Svelte 5 runes: what the shell and screens share.
import { api, IpcError } from './ipc';
import { announcement } from './format';
import type { AppStatus, KeyPrompt, SecurityEvent } from './types';

export type Screen = 'overview' | 'sessions' | 'alerts' | 'keys' | 'recovery';

export const app = $state({
  status: null as AppStatus | null,
  screen: 'overview' as Screen,
  /** What the key is being asked for, while a ceremony runs. */
  busy: null as string | null,
  /** What the security key needs from the person right now (USB/NFC ceremonies). */
  keyPrompt: null as KeyPrompt | null,
  error: null as string | null,
  notice: null as string | null,
  /** Newest first; the live feed prepends. */
  events: [] as SecurityEvent[],
  /** Bumped on every live event so screens refresh what they show. */
  revision: 0,
  /** A session to highlight (from an alert). */
  focusSession: null as string | null,
  /** An open yes/no question (in-app, so it looks like the app and tests can answer it). */
  question: null as { text: string; yes: string; no: string; answer: (yes: boolean) => void } | null,
  /** What screen readers announce about live events (App's two live regions). */
  live: { polite: '', assertive: '' },
});

/** Asks the user a yes/no question in an in-app dialog. */
export function ask(text: string, yes = 'Yes', no = 'No'): Promise<boolean> {
  return new Promise((resolve) => {
    app.question = { text, yes, no, answer: (v) => { app.question = null; resolve(v); } };
  });
}

/** Runs `work` with a "touch your key" overlay and turns failures into a readable banner. */
export async function withKey<T>(prompt: string, work: () => Promise<T>): Promise<T | undefined> {
  app.busy = prompt;
  app.error = null;
  try {
    return await work();
  } catch (e) {
    const err = e instanceof IpcError ? e : new IpcError('internal', String(e));
    app.error = err.message;
    if (err.code === 'unauthenticated' || err.code === 'session_expired') await refreshStatus();
    return undefined;
  } finally {
    app.busy = null;
  }
}

export async function refreshStatus() {
  app.status = await api.status();
}

/** Live events reach the screen in batches, at most one redraw per 50 ms: a burst of
 * thousands (a script renaming keys, a flood of failed sign-ins) must not redraw the
 * timeline thousands of times. */
const REDRAW_MS = 50;
/** The newest events kept in memory; older ones stay on the server ("Show older" pages them
 * in). The app runs for weeks in the tray: what it holds must not grow with the log. */
export const EVENTS_KEPT = 1000;

export function startFeed() {
  const latest = app.events[0]?.id ?? null;
  const seen = new Set(app.events.map((e) => e.id));
  let pending: SecurityEvent[] = [];
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = () => {
    timer = null;
    const batch = pending.reverse();
    pending = [];
    app.events = [...batch, ...app.events].slice(0, EVENTS_KEPT);
    app.revision++;
    const said = announcement(batch);
    if (said.polite) app.live.polite = said.polite;
    if (said.assertive) app.live.assertive = said.assertive;
    if (seen.size > 4 * EVENTS_KEPT) {
      seen.clear();
      for (const e of app.events) seen.add(e.id);
    }
  };
  void api.watchEvents((e) => {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    // Frozen: Svelte does not wrap it in reactive proxies (events never change), which
    // keeps thousands of them cheap.
    pending.push(Object.freeze(e));
    timer ??= setTimeout(flush, REDRAW_MS);
    if (e.kind === 'session_ended' && e.detail.ended_session_id === app.status?.session_id) {
      app.notice = 'This session was ended from another device.';
      void refreshStatus();
    }
    if (e.kind === 'account_deleted') {
      app.notice = 'This account was deleted: every session was ended and its keys removed.';
      void refreshStatus();
    }
  }, (sessionId) => {
    // The user acted on a desktop notification: show that session.
    app.screen = 'sessions';
    app.focusSession = sessionId;
  }, latest).catch(() => {});
}

/** Key prompts from the backend: shown in the busy overlay until the ceremony finishes. */
export function startKeyPrompts() {
  void api.watchKeyPrompts((p) => {
    app.keyPrompt = p.kind === 'finished' ? null : p;
  }).catch(() => {});
}
