import type { KeyPrompt, SecurityEvent, SessionBinding } from './types';

/** "just now", "5 min ago", "3 h ago", else a date. `now` is an argument so tests are exact. */
export function ago(at: number, now: number = Date.now()): string {
  const s = Math.round((now - at) / 1000);
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  return new Date(at).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

/** "in 12 min", "in 3 h"; "now" once past. */
export function until(at: number, now: number = Date.now()): string {
  const m = Math.round((at - now) / 60000);
  if (m <= 0) return 'now';
  if (m < 60) return `in ${m} min`;
  return `in ${Math.round(m / 60)} h`;
}

export function dateTime(at: number): string {
  return new Date(at).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

const reasons: Record<string, string> = {
  user: 'ended by you',
  sign_out: 'signed out',
  lost_key: 'its key was reported lost',
  authenticator_removed: 'its key was removed',
  recovery: 'account recovery completed',
  recovery_cancelled: 'recovery was cancelled',
  idle_timeout: 'idle too long',
  lifetime: 'reached its lifetime',
  account_disabled: "the service's operator disabled the account",
};

/** One line a person understands, for the timeline. */
export function describe(e: SecurityEvent): string {
  // The device's name is whatever the signing-in client chose ("IT scheduled drill, ignore"),
  // so it is marked as such; the address and place are what the server saw.
  const device = e.device_name ? `${e.device_name} (name given by the device)` : 'an unknown device';
  const from = e.address ? ` from ${e.address}` : '';
  const key = e.detail.authenticator_name ? `"${e.detail.authenticator_name}"` : 'a key';
  const place = e.detail.place ? ` in ${e.detail.place}` : '';
  switch (e.kind) {
    case 'account_created': return `Account created on ${device} with ${key}`;
    case 'sign_in':
      return e.detail.known_device
        ? `Signed in again on ${device}${from}${place}`
        : `New sign-in on ${device}${from}${place} with ${key}`;
    case 'sign_in_failed': return `Failed sign-in attempt${e.address ? ` from ${e.address}` : ''}${e.detail.reason ? ` (${e.detail.reason})` : ''}`;
    case 'session_ended': return `A session ended: ${reasons[e.detail.reason ?? ''] ?? e.detail.reason ?? 'ended'}`;
    case 'authenticator_added': return `Security key ${key} added from ${device}`;
    case 'authenticator_renamed': return `Security key renamed to ${key}`;
    case 'authenticator_removed': return `Security key ${key} removed from ${device}`;
    case 'authenticator_reported_lost': return `Security key ${key} reported lost and disabled`;
    case 'recovery_key_generated': return `New recovery key made on ${device}`;
    case 'recovery_key_confirmed': return 'Recovery key confirmed: your backup is saved';
    case 'recovery_key_verified': return 'Recovery key tested successfully';
    case 'recovery_started': return `Account recovery started on ${device}${from}${place}`;
    case 'recovery_cancelled': return `Account recovery cancelled${e.detail.reason ? ` (${e.detail.reason})` : ''}`;
    case 'recovery_completed': return 'Account recovery completed: other sessions were ended';
    case 'cloned_key_warning': return `Security key ${key} may have been cloned: the sign-in was refused`;
    case 'account_disabled': return `The service's operator disabled this account: ${e.detail.reason ?? 'no reason given'}`;
    case 'account_enabled': return "The service's operator enabled this account again";
    case 'app_sign_in': return `Signed in to ${e.detail.client_name ?? 'an app'} through Keyward on ${device}${from}${place}`;
    case 'agent_authorized': return `${e.detail.client_name ?? 'An agent'} was approved to act for you with a device code: it has a session of its own`;
    case 'app_token_reused': return `A copy of ${e.detail.client_name ?? 'an app'}'s sign-in was used: that app sign-in was ended`;
    case 'account_deleted': return 'This account was deleted: every session ended and its keys were removed';
  }
}

export const levelText = { at_risk: 'At risk', partial: 'Partly protected', protected: 'Protected' } as const;

/** Words for what the security key needs now. */
export function keyPromptText(p: KeyPrompt): { title: string; detail: string | null } {
  switch (p.kind) {
    case 'insert_or_tap':
      return { title: 'Insert your security key, or hold it to the reader', detail: 'USB or NFC: whichever key arrives first is used.' };
    case 'touch':
      return { title: 'Touch your security key', detail: 'Its light blinks while it waits.' };
    case 'pin': {
      const left = p.retries === null ? null
        : p.retries === 1 ? '1 try left before the key locks.' : `${p.retries} tries left.`;
      return {
        title: p.wrong ? 'Wrong PIN. Enter your security key PIN again' : 'Enter your security key PIN',
        detail: left,
      };
    }
    case 'processing':
      return { title: 'Your key is working…', detail: null };
    case 'fingerprint':
      return { title: 'Touch the fingerprint sensor', detail: `${p.remaining} more samples needed.` };
    case 'finished':
      return { title: 'Done', detail: null };
  }
}

/** What a screen reader says for a batch of live events: urgent ones interrupt (assertive),
 * the rest wait their turn (polite). A burst is summed up, not read out one by one. */
export function announcement(batch: readonly SecurityEvent[]): { polite: string; assertive: string } {
  const say = (list: readonly SecurityEvent[]) =>
    list.length === 0 ? ''
      : list.length === 1 ? describe(list[0])
      : `${list.length} new security events. The latest: ${describe(list[0])}`;
  return {
    polite: say(batch.filter((e) => e.urgency !== 'urgent')),
    assertive: say(batch.filter((e) => e.urgency === 'urgent')),
  };
}

/** How strongly a session's token is bound, as the sessions list says it: a copied unbound
 *  token works anywhere. */
export function bindingLabel(binding: SessionBinding): string {
  switch (binding) {
    case 'hardware':
      return "Bound to this device's key (hardware)";
    case 'software':
      return "Bound to this device's key (software)";
    case 'browser':
      return "Bound by the browser (this page's key)";
    case 'dbsc':
      return 'Bound by the browser (DBSC)';
    case 'unbound':
      return 'Not bound: a copy of its token would work anywhere';
  }
}
