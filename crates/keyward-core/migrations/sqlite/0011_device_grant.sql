-- AI agents and CLIs: the device authorization grant (RFC 8628), and agent grants as sessions
-- of their own.

-- A client the operator allowed the device grant (`keywardd client add --device`).
ALTER TABLE oidc_clients ADD COLUMN device_grant INTEGER NOT NULL DEFAULT 0;

-- An agent's session: opened by a person's approval of a device code (with a fresh key
-- ceremony), not by a browser. It has no bearer token anyone holds (its token_hash is that of
-- a random value thrown away), lives by its own idle limit (`idle_ms`, NULL for every other
-- session: the deployment's) and names the client it is for.
ALTER TABLE sessions ADD COLUMN idle_ms INTEGER;
ALTER TABLE sessions ADD COLUMN agent_client_id TEXT;

-- Device authorization requests: both codes stored only hashed (SHA-256); single use.
CREATE TABLE oidc_device_codes (
    device_code_hash BLOB PRIMARY KEY,
    user_code_hash   BLOB NOT NULL UNIQUE,
    client_id        TEXT NOT NULL REFERENCES oidc_clients(client_id) ON DELETE CASCADE,
    scopes           TEXT NOT NULL,
    address          TEXT NOT NULL,   -- where the agent asked from
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    interval_ms      INTEGER NOT NULL, -- grows by 5 s at every slow_down
    last_polled_at   INTEGER,
    status           TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    account_id       BLOB REFERENCES accounts(id),
    grant_id         BLOB,            -- the grant made at approval
    decided_at       INTEGER
);
CREATE INDEX oidc_device_codes_expiry ON oidc_device_codes(expires_at);
