-- OpenID Back-Channel Logout 1.0: the outbox. A row per (app, sign-in) to tell, written in
-- the transaction that ends the Keyward session or the grant, so a crash loses none and a
-- rollback sends nothing. The logout token itself is signed when it is sent (its `iat` and
-- `exp` are the delivery's), so the row holds no secret.
CREATE TABLE oidc_logouts (
    id           BLOB PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES oidc_clients(client_id) ON DELETE CASCADE,
    account_id   BLOB NOT NULL REFERENCES accounts(id),   -- for the pairwise `sub`
    sid          TEXT NOT NULL,                           -- the ID token's (pairwise) sid
    reason       TEXT NOT NULL,                           -- why the sign-in ended
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,                        -- due from then
    leased_until INTEGER NOT NULL DEFAULT 0,              -- claimed by a sender until then
    delivered_at INTEGER,
    gave_up_at   INTEGER,
    last_outcome TEXT,                                    -- e.g. "status 503", "timeout"
    UNIQUE (client_id, sid)
);
CREATE INDEX oidc_logouts_due ON oidc_logouts(next_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
