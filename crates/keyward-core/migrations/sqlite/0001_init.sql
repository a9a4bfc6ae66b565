-- Keyward schema, version 1. UUIDs are 16-byte BLOBs; times are Unix milliseconds.
-- There is no password column anywhere, by design.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE accounts (
    id            BLOB PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,   -- normalised (trimmed, lower-case) before it gets here
    display_name  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    state         TEXT NOT NULL DEFAULT 'active'
                  CHECK (state IN ('active', 'recovery_pending', 'recovery_enrolment')),
    recovery_started_at  INTEGER,
    recovery_ends_at     INTEGER,
    recovery_device_name TEXT,
    recovery_address     TEXT,
    recovery_session_id  BLOB
);

CREATE TABLE authenticators (
    id              BLOB PRIMARY KEY,
    account_id      BLOB NOT NULL REFERENCES accounts(id),
    credential_id   BLOB NOT NULL UNIQUE,     -- one credential, one account
    credential      TEXT NOT NULL,            -- the relying party library's credential record
    nickname        TEXT NOT NULL,
    aaguid          BLOB,
    transports      TEXT NOT NULL DEFAULT '[]',
    backup_eligible INTEGER NOT NULL,
    backup_state    INTEGER NOT NULL,
    sign_count      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'lost'))
);
CREATE INDEX authenticators_account ON authenticators(account_id);

CREATE TABLE devices (
    id            BLOB PRIMARY KEY,
    account_id    BLOB NOT NULL REFERENCES accounts(id),
    secret_hash   BLOB NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    platform      TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    address       TEXT NOT NULL
);
CREATE INDEX devices_account ON devices(account_id);

CREATE TABLE sessions (
    id           BLOB PRIMARY KEY,
    account_id   BLOB NOT NULL REFERENCES accounts(id),
    device_id    BLOB NOT NULL REFERENCES devices(id),
    token_hash   BLOB NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('full', 'recovery')),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    verified_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    opened_by    BLOB,                         -- authenticator id; NULL for recovery sessions
    address      TEXT NOT NULL,
    active_from  INTEGER NOT NULL,             -- idle clock start; a recovery window's end
    ended_at     INTEGER,
    ended_reason TEXT
);
CREATE INDEX sessions_live ON sessions(account_id) WHERE ended_at IS NULL;

-- Server-side ceremony state: single use (deleted when taken), expiring, bounded in number.
CREATE TABLE ceremonies (
    id         BLOB PRIMARY KEY,
    kind       TEXT NOT NULL,
    account_id BLOB,
    session_id BLOB,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX ceremonies_expiry ON ceremonies(expires_at);

CREATE TABLE recovery_keys (
    account_id       BLOB PRIMARY KEY REFERENCES accounts(id),
    public_key       BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    confirmed_at     INTEGER,
    last_verified_at INTEGER
);

-- The security log: append-only and hash-chained.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  BLOB NOT NULL,
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    urgency     TEXT NOT NULL,
    session_id  BLOB,
    device_id   BLOB,
    device_name TEXT,
    address     TEXT,
    detail      TEXT NOT NULL,
    hash        BLOB NOT NULL
);
CREATE INDEX events_account ON events(account_id, seq);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the security log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the security log is append-only'); END;
