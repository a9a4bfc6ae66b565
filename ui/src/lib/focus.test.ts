import { afterEach, describe, expect, it, vi } from 'vitest';
import { dialog, focusScreenHeading, keepFocus, tabStep } from './focus';

function press(key: string, shiftKey = false) {
  document.activeElement!.dispatchEvent(new KeyboardEvent('keydown', { key, shiftKey, bubbles: true, cancelable: true }));
}

function page() {
  document.body.innerHTML = `
    <main><h1>Security keys</h1><button id="opener">Remove…</button></main>
    <div id="dlg"><button id="keep">Keep it</button><input id="name" /><button id="remove">Remove</button></div>`;
  return (id: string) => document.getElementById(id)!;
}

afterEach(() => { document.body.innerHTML = ''; });

describe('dialog', () => {
  it('moves focus in, keeps Tab inside, closes on Escape, and returns focus to its opener', () => {
    const $ = page();
    $('opener').focus();
    const onEscape = vi.fn();
    const d = dialog($('dlg'), { onEscape });
    expect(document.activeElement).toBe($('keep'));

    $('remove').focus();
    press('Tab');
    expect(document.activeElement, 'Tab from the last control wraps to the first').toBe($('keep'));
    press('Tab', true);
    expect(document.activeElement, 'Shift+Tab from the first wraps to the last').toBe($('remove'));

    $('opener').focus(); // focus that escapes (a click behind) is brought back
    expect(document.activeElement).toBe($('keep'));

    press('Escape');
    expect(onEscape).toHaveBeenCalledOnce();
    d.destroy();
    expect(document.activeElement).toBe($('opener'));
  });

  it('sends focus to the screen heading when its opener is gone', () => {
    const $ = page();
    $('opener').focus();
    const d = dialog($('dlg'));
    $('opener').remove();
    d.destroy();
    expect(document.activeElement?.textContent).toBe('Security keys');
    expect(document.activeElement?.getAttribute('tabindex')).toBe('-1');
  });

  it('a dialog with no control takes focus itself; only the topmost hears Escape', () => {
    const $ = page();
    const below = vi.fn();
    const lower = dialog($('dlg'), { onEscape: below });
    const busy = document.createElement('div');
    busy.textContent = 'Touch your security key';
    document.body.append(busy);
    const upper = dialog(busy, {});
    expect(document.activeElement).toBe(busy);
    press('Escape');
    expect(below).not.toHaveBeenCalled();
    press('Tab');
    expect(document.activeElement, 'nothing to tab to: focus stays').toBe(busy);
    upper.destroy();
    busy.remove();
    expect($('dlg').contains(document.activeElement), 'back in the dialog below').toBe(true);
    press('Escape');
    expect(below).toHaveBeenCalledOnce();
    lower.destroy();
  });
});

describe('keepFocus', () => {
  it('moves focus to the heading when the focused control is removed', async () => {
    const $ = page();
    const stop = keepFocus(document.body);
    $('remove').focus();
    $('remove').remove();
    await new Promise((r) => setTimeout(r, 0)); // mutation observers run after the change
    expect(document.activeElement?.textContent).toBe('Security keys');
    stop();
  });

  it('leaves focus alone when something else changes', async () => {
    const $ = page();
    const stop = keepFocus(document.body);
    $('keep').focus();
    $('name').remove();
    await new Promise((r) => setTimeout(r, 0));
    expect(document.activeElement).toBe($('keep'));
    stop();
  });
});

describe('focusScreenHeading and tabStep', () => {
  it('does nothing without a heading', () => {
    document.body.innerHTML = '<main><p>Starting…</p></main>';
    focusScreenHeading();
    expect(document.activeElement).toBe(document.body);
  });

  it('moves between tabs with the arrows, wrapping, and Home/End', () => {
    expect(tabStep('ArrowRight', 0, 3)).toBe(1);
    expect(tabStep('ArrowRight', 2, 3)).toBe(0);
    expect(tabStep('ArrowLeft', 0, 3)).toBe(2);
    expect(tabStep('Home', 2, 3)).toBe(0);
    expect(tabStep('End', 0, 3)).toBe(2);
    expect(tabStep('Enter', 0, 3)).toBeNull();
  });
});

describe('dialog opened with focus nowhere', () => {
  it('leaves focus on the page when it closes (Tab then starts at the top)', () => {
    const $ = page();
    (document.activeElement as HTMLElement | null)?.blur();
    const d = dialog($('dlg'));
    $('dlg').remove();
    d.destroy();
    expect(document.activeElement).toBe(document.body);
  });
});

describe('keepFocus and a closing dialog', () => {
  it('lets the dialog decide where focus goes', async () => {
    const $ = page();
    const stop = keepFocus(document.body);
    (document.activeElement as HTMLElement | null)?.blur();
    const d = dialog($('dlg'));
    expect(document.activeElement).toBe($('keep'));
    $('dlg').remove();
    d.destroy();
    await new Promise((r) => setTimeout(r, 0));
    expect(document.activeElement).toBe(document.body);
    stop();
  });
});
