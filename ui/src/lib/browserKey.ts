// The web UI's session key: where the browser has no DBSC of its own, this page binds its
// session to a non-extractable ECDSA P-256 key (WebCrypto) kept in IndexedDB. The sign-in sends
// its public JWK; keywardd then gives the session a cookie that lives minutes, and renews it only
// for a proof this key signs over a fresh challenge, in DBSC's own exchange (403 with
// Secure-Session-Challenge, then a dbsc+jwt in Secure-Session-Response). Script on the page can
// use the key but never read it out, so a copied cookie dies within minutes off this browser.
import { toBase64Url } from './base64url';

const DB = 'keyward';
const STORE = 'session-key';
const ENTRY = 'current';
const REFRESH = '/api/v1/browser-session/refresh';

type Stored = { key: CryptoKeyPair; sessionId: string | null };

function db(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

async function withStore<T>(mode: IDBTransactionMode, run: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const d = await db();
  try {
    return await new Promise<T>((resolve, reject) => {
      const req = run(d.transaction(STORE, mode).objectStore(STORE));
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  } finally {
    d.close();
  }
}

const load = () => withStore<Stored | undefined>('readonly', (s) => s.get(ENTRY));
const save = (v: Stored) => withStore('readwrite', (s) => s.put(v, ENTRY));

/** Forgets the key (signed out, or the session is over). */
export async function forgetKey(): Promise<void> {
  stopRefreshing();
  await withStore('readwrite', (s) => s.delete(ENTRY)).catch(() => undefined);
}

/** A new key for the next sign-in, and the header that sends its public half; null where the
 * browser has no WebCrypto or IndexedDB (the session is then unbound, and says so). */
export async function newKeyHeader(): Promise<Record<string, string>> {
  try {
    const key = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', key.publicKey);
    await save({ key, sessionId: null });
    const jwk = new TextEncoder().encode(JSON.stringify({ kty, crv, x, y }));
    return { 'X-Keyward-Browser-Key': toBase64Url(jwk) };
  } catch {
    return {};
  }
}

const text = (s: string) => toBase64Url(new TextEncoder().encode(s));

/** A dbsc+jwt over `challenge`, signed by the key (WebCrypto's ECDSA is JWS's r || s). */
async function proof(key: CryptoKey, challenge: string): Promise<string> {
  const signed = `${text(JSON.stringify({ alg: 'ES256', typ: 'dbsc+jwt' }))}.${text(JSON.stringify({ jti: challenge }))}`;
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, new TextEncoder().encode(signed));
  return `${signed}.${toBase64Url(new Uint8Array(sig))}`;
}

/** The string of a Structured Field header (`"value";id="…"`). */
const sfString = (h: string | null) => h?.split(';')[0].trim().replace(/^"|"$/g, '') ?? null;

export type Renewal = 'renewed' | 'ended' | 'not_ours';

/** Renews the session cookie with the key: 'ended' if keywardd refuses (the session is over),
 * 'not_ours' if this page holds no key for it (or the browser's own DBSC does the work). Not
 * activity: the server's idle timeout still ends a session nobody uses. */
export async function renew(): Promise<Renewal> {
  const stored = await load().catch(() => undefined);
  if (!stored?.sessionId) return 'not_ours';
  const ask = (response?: string) => fetch(REFRESH, {
    method: 'POST',
    credentials: 'same-origin',
    headers: {
      'X-Keyward-CSRF': '1',
      'X-Keyward-Browser-Session': stored.sessionId!,
      ...(response ? { 'Secure-Session-Response': `"${response}"` } : {}),
    },
  });
  let res = await ask();
  for (let attempt = 0; attempt < 2 && res.status === 403; attempt++) {
    const challenge = sfString(res.headers.get('Secure-Session-Challenge'));
    if (!challenge) break;
    res = await ask(await proof(stored.key.privateKey, challenge));
  }
  if (res.ok) return 'renewed';
  if (res.status === 409) return 'not_ours';
  if (res.status === 401) {
    await forgetKey();
    return 'ended';
  }
  throw new Error(`renewing the session answered ${res.status}`);
}

let timer: ReturnType<typeof setInterval> | null = null;

function stopRefreshing() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

/** Keeps renewing the cookie at half its life while the page is open; `onEnded` runs once the
 * server refuses (the session ended), so the page can return to sign-in. */
export function keepRenewing(cookieLifeMs: number, onEnded: () => void): void {
  stopRefreshing();
  if (!cookieLifeMs) return;
  timer = setInterval(() => {
    renew().then((r) => {
      if (r === 'ended') onEnded();
      if (r !== 'renewed') stopRefreshing();
    }).catch(() => { /* the network is away: the next tick tries again */ });
  }, Math.max(500, cookieLifeMs / 2));
}

/** After the sign-in: the key belongs to session `sessionId`. */
export async function keyIsFor(sessionId: string): Promise<void> {
  const stored = await load().catch(() => undefined);
  if (stored) await save({ ...stored, sessionId });
}

/** Whether this page holds the key of session `sessionId`. */
export async function holdsKeyFor(sessionId: string | null): Promise<boolean> {
  const stored = await load().catch(() => undefined);
  return !!sessionId && stored?.sessionId === sessionId;
}
