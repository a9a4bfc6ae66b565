// Where keyboard focus goes: into a dialog while it is open (and back out when it closes), to
// the screen's heading when the screen changes, and never lost to <body> when the focused
// control disappears (a session ended, a key removed).

const FOCUSABLE = [
  'a[href]', 'button:not([disabled])', 'input:not([disabled]):not([type="hidden"])',
  'select:not([disabled])', 'textarea:not([disabled])', '[tabindex]:not([tabindex="-1"])',
].join(',');

/** The controls in `root` that Tab reaches, in document order. */
export function focusables(root: ParentNode): HTMLElement[] {
  return [...root.querySelectorAll<HTMLElement>(FOCUSABLE)].filter((el) => !el.closest('[hidden], [inert]'));
}

/** Focuses the heading of what is on screen (the signed-in screen's or the welcome's). */
export function focusScreenHeading(doc: Document = document) {
  const h = doc.querySelector<HTMLElement>('main h1');
  if (!h) return;
  if (!h.hasAttribute('tabindex')) h.setAttribute('tabindex', '-1');
  h.focus();
}

/** Open dialogs, the topmost last: only the topmost keeps focus and hears Escape. */
const open: HTMLElement[] = [];

export type DialogOptions = { onEscape?: () => void };

/**
 * A Svelte action for a modal dialog: focus moves in (to `[data-initial-focus]`, else the first
 * control, else the dialog itself), Tab and Shift+Tab cycle inside, Escape calls `onEscape`,
 * and on close focus returns to where it was, or to the screen heading if that is gone.
 */
export function dialog(node: HTMLElement, options: DialogOptions = {}) {
  let opts = options;
  const opener = node.ownerDocument.activeElement as HTMLElement | null;
  const doc = node.ownerDocument;
  open.push(node);
  node.setAttribute('data-dialog', '');
  const top = () => open[open.length - 1] === node;

  const enter = () => {
    const first = node.querySelector<HTMLElement>('[data-initial-focus]') ?? focusables(node)[0];
    if (first) first.focus();
    else {
      if (!node.hasAttribute('tabindex')) node.setAttribute('tabindex', '-1');
      node.focus();
    }
  };
  enter();

  const onKey = (e: KeyboardEvent) => {
    if (!top()) return;
    if (e.key === 'Escape' && opts.onEscape) {
      e.preventDefault();
      e.stopPropagation();
      opts.onEscape();
      return;
    }
    if (e.key !== 'Tab') return;
    const items = focusables(node);
    if (items.length === 0) {
      e.preventDefault();
      return;
    }
    const first = items[0];
    const last = items[items.length - 1];
    const at = doc.activeElement;
    if (e.shiftKey && (at === first || at === node || !node.contains(at))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (at === last || !node.contains(at))) {
      e.preventDefault();
      first.focus();
    }
  };
  // Focus that escapes anyway (a click on the backdrop, the browser's own UI) is brought back.
  const onFocusIn = (e: FocusEvent) => {
    if (top() && e.target instanceof Node && !node.contains(e.target)) enter();
  };
  doc.addEventListener('keydown', onKey, true);
  doc.addEventListener('focusin', onFocusIn);

  return {
    update(next: DialogOptions) {
      opts = next;
    },
    destroy() {
      doc.removeEventListener('keydown', onKey, true);
      doc.removeEventListener('focusin', onFocusIn);
      const wasTop = top();
      open.splice(open.indexOf(node), 1);
      if (!wasTop) return;
      // A dialog below this one takes focus back; else where the person was.
      const below = open[open.length - 1];
      if (below) {
        if (opener && below.contains(opener) && opener.isConnected) opener.focus();
        else focusables(below)[0]?.focus();
      } else if (!opener || opener === doc.body) {
        // Opened with focus nowhere (the app starting): leave it there, so Tab starts at the top.
      } else if (opener.isConnected) opener.focus();
      else focusScreenHeading(doc);
    },
  };
}

/**
 * Watches `root` so that when the focused control is removed (its row went away), focus moves
 * to the screen heading instead of falling to <body>, where Tab would start over.
 * Returns a function that stops watching.
 */
export function keepFocus(root: HTMLElement): () => void {
  const doc = root.ownerDocument;
  let last: Element | null = null;
  const onFocusIn = (e: FocusEvent) => {
    last = e.target as Element;
  };
  const observer = new MutationObserver(() => {
    const at = doc.activeElement;
    // A closing dialog puts focus back itself (see `dialog`).
    if (last && !last.isConnected && !last.closest('[data-dialog]') && (at === null || at === doc.body)) {
      last = null;
      focusScreenHeading(doc);
    }
  });
  doc.addEventListener('focusin', onFocusIn);
  observer.observe(root, { childList: true, subtree: true });
  return () => {
    doc.removeEventListener('focusin', onFocusIn);
    observer.disconnect();
  };
}

/** Which tab an arrow key moves to in a tab list (wrapping), or null for other keys. */
export function tabStep(key: string, index: number, count: number): number | null {
  switch (key) {
    case 'ArrowRight': case 'ArrowDown': return (index + 1) % count;
    case 'ArrowLeft': case 'ArrowUp': return (index - 1 + count) % count;
    case 'Home': return 0;
    case 'End': return count - 1;
    default: return null;
  }
}
