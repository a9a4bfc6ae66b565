// The UI's host in a browser: keywardd's HTTP API on the page's own origin, with the browser's
// own WebAuthn (navigator.credentials) for every ceremony. The session lives in an HttpOnly
// cookie this script never sees; each state-changing call carries X-Keyward-CSRF (keywardd
// refuses cookie-authenticated changes without it, and checks Origin too).
import { IpcError } from './errors';
import type { Api } from './api';
import { fromBase64Url, toBase64Url } from './base64url';
import { forgetKey, holdsKeyFor, keepRenewing, keyIsFor, newKeyHeader, renew } from './browserKey';
import { generateRandom, parse, publicKey, RecoveryKeyFormatError, sign, toDisplay, type Purpose } from './recovery';
import type {
  AccountView, AppStatus, AuthenticatorView, AuthorizationDecision, AuthorizationRequestView, ClientInfo, DeviceDecision,
  DeviceRequestView,
  EndedSessions, EventPage, LogExport, NewRecoveryKey, Overview, Readiness, RecoveryKeyStatus, RecoveryStarted,
  RemovalImpact, SecurityEvent, ServerInfo, SessionView, SteppedUp,
} from './types';

/** The parts of keywardd's answers the page uses (the desktop app never passes these on). */
type RegistrationBegin = { ceremony_id: string; options: unknown };
type AssertionBegin = RegistrationBegin;
type RecoveryChallenge = { challenge_id: string; purpose: Purpose; challenge: string };
type SignedIn = { account: AccountView; session: SessionView };

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

async function http<T>(method: Method, path: string, body?: unknown, headers: Record<string, string> = {},
  retried = false): Promise<T> {
  lastRequestAt = Date.now();
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: {
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...(method === 'GET' ? {} : { 'X-Keyward-CSRF': '1' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new IpcError('network', 'Keyward cannot reach its server. Check your connection.');
  }
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: reported below.
  }
  if (!res.ok) {
    if (data && typeof data === 'object' && 'code' in data && 'message' in data) {
      const { code, message } = data as { code: string; message: string };
      // A bound session's cookie lapsed, or this request raced a renewal that replaced it: the
      // key renews it, and the request is asked once more.
      if (code === 'unauthenticated' && !retried && (await renew().catch(() => 'ended')) === 'renewed') {
        return http<T>(method, path, body, headers, true);
      }
      if (code === 'unauthenticated' || code === 'session_expired') statusIsStale = true;
      throw new IpcError(code, message);
    }
    throw new IpcError('internal', `The server answered ${res.status}.`);
  }
  return data as T;
}

// ---- WebAuthn: keywardd's JSON options ↔ the browser's ArrayBuffers -----------------------

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function withBuffers(descriptors: Json[] | undefined) {
  return descriptors?.map((d) => ({ ...d, id: fromBase64Url(d.id) }));
}

function b64(buffer: ArrayBuffer | null | undefined): string | undefined {
  return buffer ? toBase64Url(new Uint8Array(buffer)) : undefined;
}

/** The browser's own words for a refused ceremony, in ours. */
function ceremonyError(e: unknown): IpcError {
  const name = e instanceof DOMException ? e.name : '';
  switch (name) {
    case 'NotAllowedError':
      return new IpcError('key_cancelled',
        'The security key did not answer: it was cancelled, timed out, or could not verify you.');
    case 'InvalidStateError':
      return new IpcError('key_already_registered', 'That security key is already registered.');
    case 'SecurityError':
      return new IpcError('wrong_site', 'This page is not at an address Keyward trusts for security keys.');
    case 'NotSupportedError':
      return new IpcError('unsupported', 'This browser or key does not support what Keyward asks for.');
    default:
      return new IpcError('key_error', e instanceof Error ? e.message : String(e));
  }
}

/** Runs one browser ceremony; the credential comes back as keywardd's JSON, with `response`
 * built by `encode` from the attestation or assertion response. */
async function ceremony<R extends AuthenticatorResponse>(
  run: () => Promise<Credential | null>, encode: (r: R) => Json,
): Promise<Json> {
  if (!window.PublicKeyCredential) {
    throw new IpcError('unsupported', 'This browser cannot use security keys (no WebAuthn).');
  }
  let cred: PublicKeyCredential;
  try {
    cred = (await run()) as PublicKeyCredential;
  } catch (e) {
    throw ceremonyError(e);
  }
  return {
    id: cred.id,
    rawId: b64(cred.rawId),
    type: cred.type,
    response: encode(cred.response as R),
    extensions: cred.getClientExtensionResults(),
  };
}

function createCredential(options: unknown): Promise<Json> {
  const pk = (options as Json).publicKey as Json;
  const publicKey = {
    ...pk,
    challenge: fromBase64Url(pk.challenge),
    user: { ...pk.user, id: fromBase64Url(pk.user.id) },
    excludeCredentials: withBuffers(pk.excludeCredentials),
  } as unknown as PublicKeyCredentialCreationOptions;
  return ceremony(() => navigator.credentials.create({ publicKey }),
    (r: AuthenticatorAttestationResponse) => ({
      attestationObject: b64(r.attestationObject),
      clientDataJSON: b64(r.clientDataJSON),
      transports: typeof r.getTransports === 'function' ? r.getTransports() : undefined,
    }));
}

function getAssertion(options: unknown): Promise<Json> {
  const pk = (options as Json).publicKey as Json;
  const publicKey = {
    ...pk,
    challenge: fromBase64Url(pk.challenge),
    allowCredentials: withBuffers(pk.allowCredentials),
  } as unknown as PublicKeyCredentialRequestOptions;
  return ceremony(() => navigator.credentials.get({ publicKey }),
    (r: AuthenticatorAssertionResponse) => ({
      authenticatorData: b64(r.authenticatorData),
      clientDataJSON: b64(r.clientDataJSON),
      signature: b64(r.signature),
      userHandle: b64(r.userHandle),
    }));
}

// ---- this browser ------------------------------------------------------------------------

function thisBrowser(): ClientInfo {
  const ua = navigator.userAgent;
  // Chromium-based browsers name themselves in their brands (the user agent says "Chrome").
  const brands = (navigator as { userAgentData?: { brands: { brand: string }[] } }).userAgentData?.brands
    .map((b) => b.brand).filter((b) => !/Not.A.Brand/i.test(b)) ?? [];
  const brand = brands.find((b) => b !== 'Chromium') ?? brands[0];
  const name = brand ? brand.replace(/^Google /, '') : /Firefox\//.test(ua) ? 'Firefox'
    : /Safari\//.test(ua) && !/Chrome\//.test(ua) ? 'Safari' : 'Web browser';
  const platform = /Windows/.test(ua) ? 'Windows' : /Mac OS X/.test(ua) ? 'macOS'
    : /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Linux/.test(ua) ? 'Linux' : '';
  return { name: `${name} (web)`, platform };
}

/** The session this page is signed in to (sent as a cookie, so known only by asking). */
let status: AppStatus | null = null;
/** Asking the server counts as activity, so status is fetched only when something changed, not
 * on the UI's periodic check: an idle browser tab must not keep its session alive. */
let statusIsStale = true;
let serverInfo: ServerInfo | null = null;
/** When this page last asked the server anything (each authenticated request is activity). */
let lastRequestAt = Date.now();
/** Asked a little after the server's idle timeout, so the question cannot itself keep the
 * session alive: the answer is then "signed out", and the page shows sign-in. */
const IDLE_MARGIN_MS = 5_000;

function idledOut(): boolean {
  const idle = serverInfo?.session_idle_ms;
  return !!status?.account && !!idle && Date.now() - lastRequestAt > idle + IDLE_MARGIN_MS;
}

async function info(): Promise<ServerInfo> {
  serverInfo ??= await http<ServerInfo>('GET', '/api/v1/server');
  return serverInfo;
}

/** Keeps this page's key renewing the session cookie (`browserKey`); a refused renewal means
 * the session is over, and the next status check returns the page to sign-in. */
async function startRenewing(): Promise<void> {
  keepRenewing((await info()).browser_cookie_ms, () => {
    statusIsStale = true;
    window.dispatchEvent(new Event('keyward-session-ended'));
  });
}

async function freshStatus(): Promise<AppStatus> {
  const server = await info();
  let account: AccountView | null = null;
  let current: SessionView | undefined;
  try {
    account = await http<AccountView>('GET', '/api/v1/account');
    // Its own session only: a recovery session may not list the account's sessions.
    current = await http<SessionView>('GET', '/api/v1/session');
  } catch (e) {
    if (!(e instanceof IpcError) || !['unauthenticated', 'session_expired'].includes(e.code)) throw e;
    account = null;
  }
  if (current && (await holdsKeyFor(current.id))) void startRenewing();
  status = {
    server: location.origin,
    embedded: false,
    origin: location.origin,
    rp_id: server.rp_id,
    account: current ? account : null,
    session_id: current?.id ?? null,
    key_label: "This browser's passkeys and security keys",
    virtual_keys: 0,
    key_kind: 'security_key',
    locked: false,
    recovering: current?.scope === 'recovery',
    // The browser keeps no memory of the log's head between visits: the app watches it.
    log_alarm: null,
  };
  statusIsStale = false;
  return status;
}

function changed<T>(value: T): T {
  statusIsStale = true;
  return value;
}

/** Runs `op`; if the server wants a fresh touch of the key first, does that and runs it again.
 * The step-up replaces the session's token: the answer sets the new session cookie (the body's
 * token is blank) and the old one is refused from then on; the live feed's EventSource, which
 * the server ends, reconnects with the new cookie by itself. Nothing here holds a token. */
async function withStepUp<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (e) {
    if (!(e instanceof IpcError) || e.code !== 'step_up_required') throw e;
    await stepUp();
    return op();
  }
}

async function stepUp(): Promise<void> {
  const begin = await http<AssertionBegin>('POST', '/api/v1/step-up/begin');
  const credential = await getAssertion(begin.options);
  await http<SteppedUp>('POST', '/api/v1/step-up/finish', { ceremony_id: begin.ceremony_id, credential });
}

const oauthRequest = (id: string) => `/api/v1/oauth/requests/${encodeURIComponent(id)}`;

/** A recovering browser that has enrolled a new key and a new recovery key becomes a full
 * session, with a new session cookie (the recovery one is refused from then on). */
async function finishRecovery(): Promise<void> {
  if (!status?.recovering) return;
  try {
    await http<SignedIn>('POST', '/api/v1/recovery/complete');
    changed(null);
  } catch (e) {
    // Not both enrolled yet: the next enrolment step finishes it.
    if (!(e instanceof IpcError) || e.code !== 'recovery_in_progress') throw e;
  }
}

async function typedKey(typed: string): Promise<Uint8Array> {
  try {
    return await parse(typed);
  } catch (e) {
    if (e instanceof RecoveryKeyFormatError) throw new IpcError('invalid_input', e.message);
    throw e;
  }
}

async function proof(random: Uint8Array, c: RecoveryChallenge): Promise<string> {
  return sign(random, c.purpose, (await info()).rp_id, fromBase64Url(c.challenge));
}

const desktopOnly = (what: string) => () =>
  Promise.reject(new IpcError('desktop_only', `${what} is done in the Keyward desktop app.`));

const cookie = { 'X-Keyward-Session': 'cookie' };

/** The new session is the one this page's key is bound to; renewing starts. */
async function boundTo(signed: SignedIn): Promise<void> {
  await keyIsFor(signed.session.id);
  await startRenewing();
}

export const webApi: Api = {
  status: () => (status && !statusIsStale && !idledOut() ? Promise.resolve(status) : freshStatus()),
  connect: () => freshStatus(),
  createAccount: async (username, displayName) => {
    const begin = await http<RegistrationBegin>('POST', '/api/v1/registration/begin',
      { username, display_name: displayName });
    const credential = await createCredential(begin.options);
    const signed = await http<SignedIn>('POST', '/api/v1/registration/finish',
      { ceremony_id: begin.ceremony_id, credential, nickname: null, client: thisBrowser() },
      { ...cookie, ...(await newKeyHeader()) });
    await boundTo(signed);
    return changed(signed.account);
  },
  signIn: async (username) => {
    const begin = await http<AssertionBegin>('POST', '/api/v1/sign-in/begin', { username });
    const credential = await getAssertion(begin.options);
    const signed = await http<SignedIn>('POST', '/api/v1/sign-in/finish',
      { ceremony_id: begin.ceremony_id, credential, client: thisBrowser() },
      { ...cookie, ...(await newKeyHeader()) });
    await boundTo(signed);
    return changed(signed.account);
  },
  signOut: async () => {
    changed(await http<EndedSessions>('POST', '/api/v1/sign-out').catch(() => null));
    await forgetKey();
  },
  overview: async () => {
    const [account, readiness, sessions, authenticators] = await Promise.all([
      http<AccountView>('GET', '/api/v1/account'),
      http<Readiness>('GET', '/api/v1/readiness'),
      http<SessionView[]>('GET', '/api/v1/sessions'),
      http<AuthenticatorView[]>('GET', '/api/v1/authenticators'),
    ]);
    if (status) status = { ...status, account };
    return { account, readiness, sessions, authenticators } satisfies Overview;
  },
  sessions: () => http<SessionView[]>('GET', '/api/v1/sessions'),
  exportLog: () => http<LogExport>('GET', '/api/v1/events/export'),
  deleteAccount: async () => {
    // Always a touch of the key first, however fresh the session: this cannot be undone.
    await stepUp();
    changed(await http<null>('DELETE', '/api/v1/account'));
  },
  endSession: async (id) => {
    const ended = await withStepUp(() => http<EndedSessions>('DELETE', `/api/v1/sessions/${id}`));
    return id === status?.session_id ? changed(ended) : ended;
  },
  endOtherSessions: () => withStepUp(() => http<EndedSessions>('POST', '/api/v1/sessions/end-others')),
  authenticators: () => http<AuthenticatorView[]>('GET', '/api/v1/authenticators'),
  addKey: (nickname) => withStepUp(async () => {
    const begin = await http<RegistrationBegin>('POST', '/api/v1/authenticators/begin');
    const credential = await createCredential(begin.options);
    const added = await http<AuthenticatorView>('POST', '/api/v1/authenticators/finish',
      { ceremony_id: begin.ceremony_id, credential, nickname });
    await finishRecovery();
    return added;
  }),
  renameKey: (id, nickname) => http<AuthenticatorView>('PATCH', `/api/v1/authenticators/${id}`, { nickname }),
  removalImpact: (id) => http<RemovalImpact>('GET', `/api/v1/authenticators/${id}/removal-impact`),
  removeKey: (id) => withStepUp(() => http<EndedSessions>('DELETE', `/api/v1/authenticators/${id}`)),
  reportLost: (id) => withStepUp(() => http<EndedSessions>('POST', `/api/v1/authenticators/${id}/report-lost`)),
  events: (before) => http<EventPage>('GET', `/api/v1/events?limit=50${before === null ? '' : `&before=${before}`}`),
  watchEvents: (onEvent, _onOpen, after) => new Promise<void>((_, reject) => {
    // EventSource resumes by itself with Last-Event-ID after a dropped connection.
    const source = new EventSource(`/api/v1/events/stream?after=${after ?? 0}`);
    source.addEventListener('security_event', (m) => {
      const event = JSON.parse((m as MessageEvent<string>).data) as SecurityEvent;
      if ((event.kind === 'session_ended' && event.detail.ended_session_id === status?.session_id)
        || event.kind === 'account_deleted') {
        statusIsStale = true;
      }
      onEvent(event);
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) reject(new IpcError('network', 'The live feed closed.'));
    };
  }),
  createRecoveryKey: () => withStepUp(async () => {
    const random = generateRandom();
    const saved = await http<RecoveryKeyStatus>('PUT', '/api/v1/recovery-key', { public_key: await publicKey(random) });
    await finishRecovery();
    return { key: await toDisplay(random), status: saved } satisfies NewRecoveryKey;
  }),
  proveRecoveryKey: async (typed, purpose) => {
    const random = await typedKey(typed);
    const c = await http<RecoveryChallenge>('POST', '/api/v1/recovery-key/challenge', { purpose });
    return http<RecoveryKeyStatus>('POST', '/api/v1/recovery-key/verify',
      { challenge_id: c.challenge_id, signature: await proof(random, c) });
  },
  redeemRecoveryKey: async (username, typed) => {
    const random = await typedKey(typed);
    const c = await http<RecoveryChallenge>('POST', '/api/v1/recovery/redeem/begin', { username });
    const started = await http<RecoveryStarted>('POST', '/api/v1/recovery/redeem/finish',
      { challenge_id: c.challenge_id, signature: await proof(random, c), client: thisBrowser() }, cookie);
    return changed(started);
  },
  cancelRecovery: async () => {
    const begin = await http<AssertionBegin>('POST', '/api/v1/recovery/cancel/begin', {});
    const credential = await getAssertion(begin.options);
    return changed(await http<AccountView>('POST', '/api/v1/recovery/cancel/finish',
      { ceremony_id: begin.ceremony_id, credential, client: thisBrowser() }));
  },
  // The browser shows its own prompts for the key; there is no key to choose or manage here.
  chooseKey: () => webApi.status(),
  watchKeyPrompts: () => new Promise<void>(() => {}),
  answerPin: () => Promise.resolve(),
  cancelKey: () => Promise.resolve(),
  keyInfo: desktopOnly('Managing a security key'),
  keySetPin: desktopOnly('Setting a PIN'),
  keyChangePin: desktopOnly('Changing a PIN'),
  keyPasskeys: desktopOnly('Listing the passkeys on a key'),
  keyDeletePasskey: desktopOnly('Deleting a passkey from a key'),
  keyReset: desktopOnly('Resetting a key'),
  stepUp,
  authorizationRequest: (id) => http<AuthorizationRequestView>('GET', oauthRequest(id)),
  approveAuthorization: (id) => withStepUp(() => http<AuthorizationDecision>('POST', `${oauthRequest(id)}/approve`, {})),
  denyAuthorization: (id) => http<AuthorizationDecision>('POST', `${oauthRequest(id)}/deny`, {}),
  deviceRequest: (userCode) => http<DeviceRequestView>('POST', '/api/v1/oauth/device/lookup', { user_code: userCode }),
  // The step-up's assertion goes with the approval itself (keywardd verifies it there): the
  // session's token is not replaced, and no earlier touch counts.
  approveDevice: async (userCode) => {
    const begin = await http<AssertionBegin>('POST', '/api/v1/step-up/begin');
    const credential = await getAssertion(begin.options);
    return http<DeviceDecision>('POST', '/api/v1/oauth/device/approve',
      { user_code: userCode, assertion: { ceremony_id: begin.ceremony_id, credential } });
  },
  denyDevice: (userCode) => http<DeviceDecision>('POST', '/api/v1/oauth/device/deny', { user_code: userCode }),
};
