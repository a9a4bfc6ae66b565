// Reads the sources with node:fs, typed by @types/node.
/// <reference types="node" />
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// A desktop command exists only when it is written, listed for build.rs (which makes its
// `allow-…` permission), registered with the handler, granted to the window and called by the
// UI: one missing place fails only at run time, in the app. Read as text: no Rust build needed.
const root = path.resolve(__dirname, '../../..');
const read = (file: string) => readFileSync(path.join(root, file), 'utf8');
/** Without line comments, so a commented-out name does not count. */
const readRust = (file: string) => read(file).replace(/\/\/.*$/gm, '');

function inside(text: string, start: RegExp, file: string): string {
  const body = start.exec(text)?.[1];
  if (body === undefined) throw new Error(`${file}: no match for ${start}`);
  return body;
}

const COMMANDS = 'src-tauri/commands.rs';
/** The source of truth: the `#[tauri::command]` fns. */
const written = [...readRust(COMMANDS).matchAll(/#\[tauri::command\b[^\]]*\][\s\S]*?\bfn\s+(\w+)/g)].map((m) => m[1]);

const places: Record<string, () => string[]> = {
  'src-tauri/command_names.rs (ALL, for build.rs)': () => {
    const all = inside(readRust('src-tauri/command_names.rs'), /\bALL\b[^=]*=\s*&\[([\s\S]*?)\];/, 'command_names.rs');
    return [...all.matchAll(/"(\w+)"/g)].map((m) => m[1]);
  },
  'src-tauri/lib.rs (generate_handler!)': () => {
    const handlers = inside(readRust('src-tauri/lib.rs'), /generate_handler!\[([\s\S]*?)\]/, 'lib.rs');
    return handlers.split(',').map((h) => h.trim()).filter(Boolean).map((h) => h.split('::').pop()!);
  },
  'capabilities/main.json (allow-… of the main window)': () => {
    type Capability = { permissions: (string | { identifier: string })[] };
    const { permissions } = JSON.parse(read('capabilities/main.json')) as Capability;
    // Core and plugin permissions (`core:app:allow-version`) are namespaced; the app's are not.
    return permissions
      .map((p) => (typeof p === 'string' ? p : p.identifier))
      .filter((id) => !id.includes(':'))
      .map((id) => (id.startsWith('allow-') ? id.slice('allow-'.length).replace(/-/g, '_') : `(not an allow: ${id})`));
  },
  // Every command, Channel-based ones too, goes through `call(name, …)` or `invoke(name, …)`.
  'ui/src/lib/tauri.ts (invoke)': () => {
    const calls = read('ui/src/lib/tauri.ts').matchAll(/\b(?:call|invoke)\s*(?:<[^()]*?>)?\s*\(\s*['"]([^'"]+)['"]/g);
    return [...calls].map((m) => m[1]);
  },
};

describe('the desktop command names', () => {
  it(`are found in ${COMMANDS}`, () => {
    expect(written.length, `no #[tauri::command] fn found in ${COMMANDS}`).toBeGreaterThan(0);
  });

  it.each(Object.keys(places))(`agree with ${COMMANDS} in %s`, (place) => {
    const names = new Set(places[place]());
    const problems = [
      ...written.filter((name) => !names.has(name)).map((name) => `${name} is missing`),
      ...[...names].filter((name) => !written.includes(name)).map((name) => `${name} is not a command`),
    ];
    // Named in the message: Vitest shortens the arrays it prints.
    expect(problems, `${place}: ${problems.join('; ')}`).toEqual([]);
  });
});
