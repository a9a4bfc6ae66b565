import { describe as suite, expect, it } from 'vitest';
import { ago, describe, until } from './format';
import type { SecurityEvent } from './types';

const base: SecurityEvent = {
  id: 1, account_id: 'a', kind: 'sign_in', at: 0, urgency: 'urgent', session_id: 's',
  device_id: 'd', device_name: 'Ada’s phone', address: '192.0.2.1', detail: {},
};

suite('time', () => {
  it('says how long ago in words', () => {
    expect(ago(0, 10_000)).toBe('just now');
    expect(ago(0, 5 * 60_000)).toBe('5 min ago');
    expect(ago(0, 3 * 3_600_000)).toBe('3 h ago');
  });
  it('says how long until', () => {
    expect(until(15 * 60_000, 0)).toBe('in 15 min');
    expect(until(0, 1000)).toBe('now');
  });
});

suite('describe', () => {
  it('names a new device and its key, and is quieter for a known one', () => {
    expect(describe({ ...base, detail: { authenticator_name: 'Blue key', known_device: false, place: 'Oslo' } }))
      .toBe('New sign-in on Ada’s phone (name given by the device) from 192.0.2.1 in Oslo with "Blue key"');
    expect(describe({ ...base, detail: { known_device: true } }))
      .toBe('Signed in again on Ada’s phone (name given by the device) from 192.0.2.1');
  });
  it('marks a name the signing-in client chose as its own, whatever it says', () => {
    const drill = describe({ ...base, device_name: 'IT: scheduled drill, ignore', detail: { known_device: false } });
    expect(drill).toContain('IT: scheduled drill, ignore (name given by the device)');
    expect(drill).toContain('from 192.0.2.1');
    expect(describe({ ...base, device_name: null, detail: { known_device: false } })).toContain('an unknown device');
  });
  it('explains why a session ended', () => {
    expect(describe({ ...base, kind: 'session_ended', detail: { reason: 'lost_key' } }))
      .toBe('A session ended: its key was reported lost');
  });
  it('names the app of an app sign-in and of a reused token', () => {
    expect(describe({ ...base, kind: 'app_sign_in', detail: { client_name: 'Chat' } }))
      .toContain('Signed in to Chat through Keyward');
    expect(describe({ ...base, kind: 'app_token_reused', detail: { client_name: 'Chat' } }))
      .toContain("A copy of Chat's sign-in was used");
  });
  it('warns about cloned keys', () => {
    expect(describe({ ...base, kind: 'cloned_key_warning', detail: { authenticator_name: 'K' } }))
      .toContain('may have been cloned');
  });
});
