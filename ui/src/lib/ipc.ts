// The one door between the UI and its host. Components call `api.*` and never know how the
// call travels: in the desktop app it is a Tauri command (./tauri.ts); in a browser it is
// keywardd's HTTP API with the browser's own WebAuthn (./web.ts). This file only chooses.
import type { Api } from './api';
import { IpcError } from './errors';
import { tauriApi } from './tauri';
import { webApi } from './web';

export { IpcError };

/** Where the UI runs: the desktop app (Tauri) or a browser served by keywardd. */
export const host: 'desktop' | 'browser' =
  typeof window !== 'undefined' && '__TAURI_INTERNALS__' in window ? 'desktop' : 'browser';

export const api: Api = host === 'desktop' ? tauriApi : webApi;
