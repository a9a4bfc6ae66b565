// The UI's host in the desktop app: each call is a Tauri command, and the Rust backend runs the
// ceremony with the security key. The only file that imports @tauri-apps/api (seam.test.ts).
import { Channel, invoke } from '@tauri-apps/api/core';
import type { Api } from './api';
import { IpcError } from './errors';
import type {
  AccountView, AppError, AppStatus, AuthenticatorView, AuthorizationDecision, AuthorizationRequestView,
  DeviceDecision, DeviceRequestView,
  EndedSessions, EventPage, FeedMessage, KeyInfo, LogExport, KeyKind, KeyPasskeysView, KeyPrompt, NewRecoveryKey, Overview,
  RecoveryKeyStatus, RecoveryStarted, RemovalImpact, SecurityEvent, SessionView,
} from './types';

function toError(e: unknown): IpcError {
  if (e && typeof e === 'object' && 'code' in e && 'message' in e) {
    const { code, message } = e as AppError;
    return new IpcError(String(code), String(message));
  }
  return new IpcError('internal', typeof e === 'string' ? e : 'Something went wrong.');
}

/** What only the web UI does: an app's sign-in runs in the browser, with its session cookie. */
const webOnly = <T>(what: string) => (): Promise<T> =>
  Promise.reject(new IpcError('web_only',
    `${what} happens in your web browser, on Keyward's web page: it is not available in the app.`));

async function call<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (e) {
    throw toError(e);
  }
}

export const tauriApi: Api = {
  status: () => call<AppStatus>('status'),
  connect: (server: string | null) => call<AppStatus>('connect', { server }),
  createAccount: (username: string, displayName: string | null) =>
    call<AccountView>('create_account', { username, displayName }),
  signIn: (username: string | null) => call<AccountView>('sign_in', { username }),
  signOut: () => call<void>('sign_out'),
  overview: () => call<Overview>('overview'),
  sessions: () => call<SessionView[]>('sessions'),
  endSession: (id: string) => call<EndedSessions>('end_session', { id }),
  endOtherSessions: () => call<EndedSessions>('end_other_sessions'),
  authenticators: () => call<AuthenticatorView[]>('authenticators'),
  addKey: (nickname: string | null) => call<AuthenticatorView>('add_key', { nickname }),
  renameKey: (id: string, nickname: string) => call<AuthenticatorView>('rename_key', { id, nickname }),
  removalImpact: (id: string) => call<RemovalImpact>('removal_impact', { id }),
  removeKey: (id: string) => call<EndedSessions>('remove_key', { id }),
  reportLost: (id: string) => call<EndedSessions>('report_lost', { id }),
  events: (before: number | null) => call<EventPage>('events', { before }),
  exportLog: () => call<LogExport>('export_log'),
  deleteAccount: () => call<void>('delete_account'),
  watchEvents: (onEvent: (e: SecurityEvent) => void, onOpen: (sessionId: string | null) => void, after: number | null) => {
    const channel = new Channel<FeedMessage>();
    channel.onmessage = (m) => {
      if (m.type === 'events') m.events.forEach(onEvent);
      else onOpen(m.session_id);
    };
    return call<void>('watch_events', { channel, after });
  },
  createRecoveryKey: () => call<NewRecoveryKey>('create_recovery_key'),
  proveRecoveryKey: (typed: string, purpose: 'confirm' | 'drill') =>
    call<RecoveryKeyStatus>('prove_recovery_key', { typed, purpose }),
  redeemRecoveryKey: (username: string, typed: string) =>
    call<RecoveryStarted>('redeem_recovery_key', { username, typed }),
  cancelRecovery: () => call<AccountView>('cancel_recovery'),
  chooseKey: (kind: KeyKind) => call<AppStatus>('choose_key', { kind }),
  watchKeyPrompts: (onPrompt: (p: KeyPrompt) => void) => {
    const channel = new Channel<KeyPrompt>();
    channel.onmessage = onPrompt;
    return call<void>('watch_key_prompts', { channel });
  },
  answerPin: (pin: string | null) => call<void>('answer_pin', { pin }),
  cancelKey: () => call<void>('cancel_key'),
  keyInfo: () => call<KeyInfo>('key_info'),
  keySetPin: (newPin: string) => call<KeyInfo>('key_set_pin', { newPin }),
  keyChangePin: (oldPin: string, newPin: string) => call<KeyInfo>('key_change_pin', { oldPin, newPin }),
  keyPasskeys: () => call<KeyPasskeysView>('key_passkeys'),
  keyDeletePasskey: (credentialId: string) => call<KeyPasskeysView>('key_delete_passkey', { credentialId }),
  keyReset: () => call<KeyInfo>('key_reset'),
  // The app steps up by itself inside each command that needs it (the Rust side's
  // step-up-and-retry); only the web UI's authorization screen asks for one on its own.
  stepUp: webOnly<void>('Confirming an app\'s sign-in with your key'),
  authorizationRequest: webOnly<AuthorizationRequestView>('Signing in to another app with Keyward'),
  approveAuthorization: webOnly<AuthorizationDecision>('Signing in to another app with Keyward'),
  denyAuthorization: webOnly<AuthorizationDecision>('Signing in to another app with Keyward'),
  // The desktop app has the same API in keyward-client (Ceremonies::approve_device); its
  // screen for it is not built yet, so the web UI approves device codes.
  deviceRequest: webOnly<DeviceRequestView>('Approving an agent\'s device code'),
  approveDevice: webOnly<DeviceDecision>('Approving an agent\'s device code'),
  denyDevice: webOnly<DeviceDecision>('Approving an agent\'s device code'),
};
