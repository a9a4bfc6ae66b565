-- Keyward schema, version 1, for PostgreSQL: the same tables and columns as SQLite's
-- 0001_init.sql. UUIDs are 16-byte BYTEA (one decoder for both engines); times are Unix
-- milliseconds in BIGINT. There is no password column anywhere, by design.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE accounts (
    id            BYTEA PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,   -- normalised (trimmed, lower-case) before it gets here
    display_name  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'active'
                  CHECK (state IN ('active', 'recovery_pending', 'recovery_enrolment')),
    recovery_started_at  BIGINT,
    recovery_ends_at     BIGINT,
    recovery_device_name TEXT,
    recovery_address     TEXT,
    recovery_session_id  BYTEA
);

CREATE TABLE authenticators (
    id              BYTEA PRIMARY KEY,
    account_id      BYTEA NOT NULL REFERENCES accounts(id),
    credential_id   BYTEA NOT NULL UNIQUE,    -- one credential, one account
    credential      TEXT NOT NULL,            -- the relying party library's credential record
    nickname        TEXT NOT NULL,
    aaguid          BYTEA,
    transports      TEXT NOT NULL DEFAULT '[]',
    backup_eligible BOOLEAN NOT NULL,
    backup_state    BOOLEAN NOT NULL,
    sign_count      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'lost'))
);
CREATE INDEX authenticators_account ON authenticators(account_id);

CREATE TABLE devices (
    id            BYTEA PRIMARY KEY,
    account_id    BYTEA NOT NULL REFERENCES accounts(id),
    secret_hash   BYTEA NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    platform      TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    address       TEXT NOT NULL
);
CREATE INDEX devices_account ON devices(account_id);

CREATE TABLE sessions (
    id           BYTEA PRIMARY KEY,
    account_id   BYTEA NOT NULL REFERENCES accounts(id),
    device_id    BYTEA NOT NULL REFERENCES devices(id),
    token_hash   BYTEA NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('full', 'recovery')),
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    verified_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    opened_by    BYTEA,                        -- authenticator id; NULL for recovery sessions
    address      TEXT NOT NULL,
    active_from  BIGINT NOT NULL,              -- idle clock start; a recovery window's end
    ended_at     BIGINT,
    ended_reason TEXT
);
CREATE INDEX sessions_live ON sessions(account_id) WHERE ended_at IS NULL;

-- Server-side ceremony state: single use (deleted when taken), expiring, bounded in number.
CREATE TABLE ceremonies (
    id         BYTEA PRIMARY KEY,
    kind       TEXT NOT NULL,
    account_id BYTEA,
    session_id BYTEA,
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ceremonies_expiry ON ceremonies(expires_at);

CREATE TABLE recovery_keys (
    account_id       BYTEA PRIMARY KEY REFERENCES accounts(id),
    public_key       BYTEA NOT NULL,
    created_at       BIGINT NOT NULL,
    confirmed_at     BIGINT,
    last_verified_at BIGINT
);

-- The security log: append-only and hash-chained. `seq` is given by the store (the head's
-- plus one), as on SQLite.
CREATE TABLE events (
    seq         BIGINT PRIMARY KEY,
    account_id  BYTEA NOT NULL,
    kind        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    urgency     TEXT NOT NULL,
    session_id  BYTEA,
    device_id   BYTEA,
    device_name TEXT,
    address     TEXT,
    detail      TEXT NOT NULL,
    hash        BYTEA NOT NULL
);
CREATE INDEX events_account ON events(account_id, seq);

-- Refuses the change with the message given as the trigger's argument. Row triggers do not
-- see TRUNCATE, so each append-only table gets a statement trigger for it too.
CREATE FUNCTION keyward_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION keyward_refuse_change('the security log is append-only');
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION keyward_refuse_change('the security log is append-only');
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION keyward_refuse_change('the security log is append-only');
