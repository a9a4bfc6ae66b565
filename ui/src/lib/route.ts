// The web UI's one hash route besides the dashboard: `#/authorize/<request_id>`, where
// keywardd's authorization endpoint sends a browser whose app sign-in needs the person.

/** The request ID in `#/authorize/<id>`, or null for any other hash. */
export function authorizeRequestId(hash: string): string | null {
  const m = /^#\/authorize\/([^/?#]*)$/.exec(hash);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return ''; // Not even percent-encoding: a request that cannot exist.
  }
}

/** What a request ID can look like (keywardd's are random URL-safe strings): anything else is
 * not asked about. */
export const REQUEST_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** `#/device` (the person types the code) or `#/device/<user code>` (the agent's
 * verification_uri_complete): the code, '' when none is given; null for any other hash. */
export function deviceUserCode(hash: string): string | null {
  const m = /^#\/device(?:\/([^/?#]*))?$/.exec(hash);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1] ?? '');
  } catch {
    return '';
  }
}
