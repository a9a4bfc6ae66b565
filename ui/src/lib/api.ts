// What every screen can ask of its host, one method per action. ./tauri.ts (the desktop app) and
// ./web.ts (a browser served by keywardd) each implement it; ./ipc.ts picks one. Errors are
// thrown as IpcError (./errors.ts).
import type {
  AccountView, AppStatus, AuthenticatorView, AuthorizationDecision, AuthorizationRequestView, DeviceDecision,
  DeviceRequestView, EndedSessions,
  EventPage, LogExport, KeyInfo, KeyKind, KeyPasskeysView, KeyPrompt, NewRecoveryKey, Overview, RecoveryKeyStatus,
  RecoveryStarted, RemovalImpact, SecurityEvent, SessionView,
} from './types';

export interface Api {
  status(): Promise<AppStatus>;
  connect(server: string | null): Promise<AppStatus>;
  createAccount(username: string, displayName: string | null): Promise<AccountView>;
  signIn(username: string | null): Promise<AccountView>;
  signOut(): Promise<void>;
  overview(): Promise<Overview>;
  sessions(): Promise<SessionView[]>;
  endSession(id: string): Promise<EndedSessions>;
  endOtherSessions(): Promise<EndedSessions>;
  authenticators(): Promise<AuthenticatorView[]>;
  addKey(nickname: string | null): Promise<AuthenticatorView>;
  renameKey(id: string, nickname: string): Promise<AuthenticatorView>;
  removalImpact(id: string): Promise<RemovalImpact>;
  removeKey(id: string): Promise<EndedSessions>;
  reportLost(id: string): Promise<EndedSessions>;
  events(before: number | null): Promise<EventPage>;
  /** The whole security log with what verifies it (`keyward verify-export`). */
  exportLog(): Promise<LogExport>;
  /** Deletes the account after a fresh touch of the key; signed out afterwards. */
  deleteAccount(): Promise<void>;
  /** Streams new events to `onEvent`; `onOpen` gets the session a clicked desktop alert is about. */
  watchEvents(
    onEvent: (e: SecurityEvent) => void, onOpen: (sessionId: string | null) => void, after: number | null,
  ): Promise<void>;
  createRecoveryKey(): Promise<NewRecoveryKey>;
  proveRecoveryKey(typed: string, purpose: 'confirm' | 'drill'): Promise<RecoveryKeyStatus>;
  redeemRecoveryKey(username: string, typed: string): Promise<RecoveryStarted>;
  cancelRecovery(): Promise<AccountView>;
  chooseKey(kind: KeyKind): Promise<AppStatus>;
  watchKeyPrompts(onPrompt: (p: KeyPrompt) => void): Promise<void>;
  answerPin(pin: string | null): Promise<void>;
  cancelKey(): Promise<void>;
  keyInfo(): Promise<KeyInfo>;
  keySetPin(newPin: string): Promise<KeyInfo>;
  keyChangePin(oldPin: string, newPin: string): Promise<KeyInfo>;
  keyPasskeys(): Promise<KeyPasskeysView>;
  keyDeletePasskey(credentialId: string): Promise<KeyPasskeysView>;
  keyReset(): Promise<KeyInfo>;
  /** A fresh user-verified touch of the key for the current session (step-up). */
  stepUp(): Promise<void>;
  // An app's OpenID Connect authorization request (web UI only: the desktop app has no
  // browser session to authorise with, and says so).
  authorizationRequest(id: string): Promise<AuthorizationRequestView>;
  /** Consents (remembered for this app and these scopes); steps up first if the server asks. */
  approveAuthorization(id: string): Promise<AuthorizationDecision>;
  denyAuthorization(id: string): Promise<AuthorizationDecision>;
  // An AI agent's or CLI's device code (RFC 8628): what it asks for, then approve with a fresh
  // touch of the key (made for this approval alone) or deny.
  deviceRequest(userCode: string): Promise<DeviceRequestView>;
  approveDevice(userCode: string): Promise<DeviceDecision>;
  denyDevice(userCode: string): Promise<DeviceDecision>;
}
