-- The device authorization grant (see SQLite's 0011_device_grant.sql for what each column
-- holds); the same tables and columns, in PostgreSQL's types.

ALTER TABLE oidc_clients ADD COLUMN device_grant BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE sessions ADD COLUMN idle_ms BIGINT;
ALTER TABLE sessions ADD COLUMN agent_client_id TEXT;

CREATE TABLE oidc_device_codes (
    device_code_hash BYTEA PRIMARY KEY,
    user_code_hash   BYTEA NOT NULL UNIQUE,
    client_id        TEXT NOT NULL REFERENCES oidc_clients(client_id) ON DELETE CASCADE,
    scopes           TEXT NOT NULL,
    address          TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    interval_ms      BIGINT NOT NULL,
    last_polled_at   BIGINT,
    status           TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    account_id       BYTEA REFERENCES accounts(id),
    grant_id         BYTEA,
    decided_at       BIGINT
);
CREATE INDEX oidc_device_codes_expiry ON oidc_device_codes(expires_at);
