import { fireEvent, render, screen, waitFor, within } from '@testing-library/svelte';
import { describe, expect, it, vi } from 'vitest';
import Sessions from './Sessions.svelte';
import type { SessionView } from '../lib/types';

vi.mock('@tauri-apps/api/core', () => ({ invoke: vi.fn(), Channel: class {} }));

function session(id: string, name: string, current: boolean, binding: SessionView['binding'] = 'unbound'): SessionView {
  const now = Date.now();
  return {
    id, scope: 'full', binding, created_at: now, last_seen_at: now, idle_expires_at: now + 900_000,
    expires_at: now + 43_200_000, verified_at: now, opened_by: null, address: '127.0.0.1', current, kind: 'person',
    device: { id: `d-${id}`, name, platform: 'Linux', first_seen_at: now, last_seen_at: now, address: '127.0.0.1', place: null },
  };
}

describe('Sessions', () => {
  it('marks this device and ends another session through the API', async () => {
    let list = [session('me', 'This laptop', true, 'browser'), session('x', 'Unknown PC', false)];
    const client = {
      sessions: vi.fn(async () => list),
      endSession: vi.fn(async (id: string) => { list = list.filter((s) => s.id !== id); return { ended: [id] }; }),
      endOtherSessions: vi.fn(async () => ({ ended: [] })),
    };
    render(Sessions, { props: { client } });
    await waitFor(() => expect(screen.getAllByTestId('session')).toHaveLength(2));
    expect(screen.getAllByTestId('this-device')).toHaveLength(1);
    // Each session says how its token is bound.
    expect(screen.getAllByTestId('session-binding').map((b) => b.textContent)).toEqual(
      ["Bound by the browser (this page's key)", 'Not bound: a copy of its token would work anywhere']);
    const other = screen.getAllByTestId('session').find((el) => el.textContent?.includes('Unknown PC'))!;
    await fireEvent.click(other.querySelector('[data-testid="end-session"]')!);
    await waitFor(() => expect(client.endSession).toHaveBeenCalledWith('x'));
    await waitFor(() => expect(screen.getAllByTestId('session')).toHaveLength(1));
  });

  it('says how each session is bound to its device', async () => {
    const list = [session('me', 'This laptop', true, 'software'), session('b', 'Firefox', false, 'browser'), session('x', 'Old PC', false)];
    const client = { sessions: vi.fn(async () => list), endSession: vi.fn(), endOtherSessions: vi.fn() };
    const view = within(render(Sessions, { props: { client } }).container);
    await waitFor(() => expect(view.getAllByTestId('session-binding')).toHaveLength(3));
    const texts = view.getAllByTestId('session-binding').map((el) => el.textContent?.trim());
    expect(texts).toEqual([
      "Bound to this device's key (software)",
      "Bound by the browser (this page's key)",
      'Not bound: a copy of its token would work anywhere',
    ]);
  });
});
