-- A browser session bound to a key in the browser (issue #13, "Browsers"): the web UI's
-- non-extractable WebCrypto key (kind 'browser') or the browser's own DBSC key (kind 'dbsc').
-- 'pending' is a cookie session the browser has not bound yet: it holds only the DBSC
-- registration challenge. A bound session's token is short-lived: refused from
-- token_expires_at on, and replaced only by a refresh that the key signs over the current
-- challenge (stored hashed, single use, expiring).
CREATE TABLE browser_bindings (
    session_id           BLOB PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    kind                 TEXT NOT NULL CHECK (kind IN ('pending', 'browser', 'dbsc')),
    jwk                  TEXT,
    jkt                  TEXT,
    token_expires_at     INTEGER,
    challenge_hash       BLOB,
    challenge_expires_at INTEGER,
    created_at           INTEGER NOT NULL
);
