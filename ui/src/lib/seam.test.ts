// Reads the sources with node:fs, typed by @types/node.
/// <reference types="node" />
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// The host seam: ipc.ts chooses between tauri.ts and web.ts, which both implement api.ts.
const src = path.resolve(__dirname, '..');
const lib = (name: string) => path.join(src, 'lib', name);

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(file);
    return /\.(ts|svelte)$/.test(entry.name) && !entry.name.endsWith('.test.ts') ? [file] : [];
  });
}

/** What `file` imports: `from '…'`, `import '…'` and `import('…')`. */
function specifiers(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:\bfrom|\bimport\s*\(?)\s*['"]([^'"]+)['"]/g)].map((m) => m[1]);
}

const isFile = (file: string) => statSync(file, { throwIfNoEntry: false })?.isFile() ?? false;

/** The files of ui/src that `file` imports (`./x` may mean x.ts); packages are left out. */
function localImports(file: string): string[] {
  return specifiers(file)
    .filter((s) => s.startsWith('.'))
    .map((s) => path.resolve(path.dirname(file), s))
    .flatMap((base) => [base, `${base}.ts`].find(isFile) ?? []);
}

/** The chain of imports that leads from `from` to `to`, if there is one. */
function importChain(from: string, to: string, seen = new Set<string>()): string[] | undefined {
  if (from === to) return [to];
  if (seen.has(from)) return undefined;
  seen.add(from);
  for (const next of localImports(from)) {
    const chain = importChain(next, to, seen);
    if (chain) return [from, ...chain];
  }
  return undefined;
}

describe('the IPC seam', () => {
  it('keeps @tauri-apps/api inside tauri.ts', () => {
    const importers = sources(src)
      .filter((file) => specifiers(file).some((s) => s.startsWith('@tauri-apps/api')))
      .map((file) => path.relative(src, file));
    expect(importers, 'only lib/tauri.ts may import @tauri-apps/api').toEqual(['lib/tauri.ts']);
  });

  it.each(['api.ts', 'tauri.ts', 'web.ts'])('%s does not import the chooser (no circle through ipc.ts)', (name) => {
    const chain = importChain(lib(name), lib('ipc.ts'))?.map((file) => path.relative(src, file));
    expect(chain, `import circle: ${chain?.join(' → ')}`).toBeUndefined();
  });
});
