import { fireEvent, render, screen } from '@testing-library/svelte';
import { describe, expect, it, vi } from 'vitest';
import Welcome from './Welcome.svelte';

vi.mock('@tauri-apps/api/core', () => ({ invoke: vi.fn(), Channel: class {} }));

describe('Welcome tabs', () => {
  it('are one tab stop; the arrows move and select, and the panel follows', async () => {
    render(Welcome);
    const [signIn, create, recover] = screen.getAllByRole('tab');
    expect(signIn.getAttribute('aria-selected')).toBe('true');
    expect([signIn.tabIndex, create.tabIndex, recover.tabIndex]).toEqual([0, -1, -1]);

    signIn.focus();
    await fireEvent.keyDown(signIn, { key: 'ArrowRight' });
    expect(document.activeElement).toBe(create);
    expect(create.getAttribute('aria-selected')).toBe('true');
    expect(create.tabIndex).toBe(0);
    const panel = screen.getByRole('tabpanel');
    expect(panel.getAttribute('aria-labelledby')).toBe('tab-create');
    expect(screen.getByLabelText('Username')).toBe(screen.getByTestId('new-username'));

    await fireEvent.keyDown(create, { key: 'End' });
    expect(document.activeElement).toBe(recover);
    await fireEvent.keyDown(recover, { key: 'ArrowRight' });
    expect(document.activeElement).toBe(signIn);
  });
});
