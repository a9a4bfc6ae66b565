-- keywardd as an OpenID Connect provider. Secrets are stored only hashed (client secrets,
-- codes, tokens, request IDs: SHA-256 of 256-bit random values) or sealed (signing keys'
-- private halves: AES-256-GCM under a key derived from the log key). Every grant names the
-- Keyward session that made it and lives no longer than it.

-- Whether an authenticator's attestation was verified against a configured vendor root when
-- it registered (attested mode); keys registered before are not (never claimed as hardware).
ALTER TABLE authenticators ADD COLUMN attested INTEGER NOT NULL DEFAULT 0;

-- ID-token signing keys (ES256). The newest unretired key signs; a retired key is published
-- in the JWKS until `publish_until`, when every token it signed has expired.
CREATE TABLE oidc_keys (
    kid            TEXT PRIMARY KEY,
    public_jwk     TEXT NOT NULL,
    sealed_private BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    retired_at     INTEGER,
    publish_until  INTEGER
);

-- Apps registered by the operator (`keywardd client add`, or the config file's [[oidc_clients]]).
CREATE TABLE oidc_clients (
    client_id                 TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    redirect_uris             TEXT NOT NULL,   -- JSON array, matched exactly
    post_logout_redirect_uris TEXT NOT NULL,   -- JSON array, matched exactly
    scopes                    TEXT NOT NULL,   -- space-separated, the most it may ask for
    auth_method               TEXT NOT NULL
        CHECK (auth_method IN ('none', 'client_secret_basic', 'client_secret_post',
                               'private_key_jwt')),
    secret_hash               BLOB,            -- confidential clients only
    backchannel_logout_uri    TEXT,
    jwks                      TEXT,            -- private_key_jwt: the app's public keys
    source                    TEXT NOT NULL CHECK (source IN ('command', 'config')),
    created_at                INTEGER NOT NULL
);

-- Authorization requests waiting for the person (sign-in, step-up, consent): single use.
CREATE TABLE oidc_requests (
    id_hash        BLOB PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES oidc_clients(client_id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    state          TEXT,
    nonce          TEXT,
    code_challenge TEXT NOT NULL,
    login_after    INTEGER,   -- prompt=login: a ceremony at or after this time is needed
    acr_values     TEXT,      -- as asked: at least one must be met
    max_age_ms     INTEGER,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX oidc_requests_expiry ON oidc_requests(expires_at);

-- What each person allowed each app (remembered consent, revocable).
CREATE TABLE oidc_consents (
    account_id BLOB NOT NULL REFERENCES accounts(id),
    client_id  TEXT NOT NULL REFERENCES oidc_clients(client_id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, client_id)
);

-- One per authorization code: the code, then every token issued from it, hang off it. No
-- foreign key to sessions: ended sessions are pruned, and a grant whose session is gone is
-- as dead as one whose session ended.
CREATE TABLE oidc_grants (
    id              BLOB PRIMARY KEY,
    account_id      BLOB NOT NULL REFERENCES accounts(id),
    client_id       TEXT NOT NULL REFERENCES oidc_clients(client_id) ON DELETE CASCADE,
    sid             TEXT NOT NULL,   -- the ID token's sid: pairwise, like sub
    session_id      BLOB NOT NULL,
    scopes          TEXT NOT NULL,
    nonce           TEXT,
    auth_time       INTEGER NOT NULL,
    acr             TEXT NOT NULL,
    amr             TEXT NOT NULL,   -- space-separated RFC 8176 values
    code_hash       BLOB NOT NULL UNIQUE,
    code_challenge  TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    code_expires_at INTEGER NOT NULL,
    code_used_at    INTEGER,
    created_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    ended_reason    TEXT
);
CREATE INDEX oidc_grants_session ON oidc_grants(session_id);
CREATE INDEX oidc_grants_sid ON oidc_grants(sid);
CREATE INDEX oidc_grants_account ON oidc_grants(account_id, client_id);

-- Opaque access and refresh tokens: only their hashes. A refresh token is used once
-- (`used_at`); presenting it again is reuse, which ends its grant.
CREATE TABLE oidc_tokens (
    hash       BLOB PRIMARY KEY,
    grant_id   BLOB NOT NULL REFERENCES oidc_grants(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX oidc_tokens_grant ON oidc_tokens(grant_id);

-- private_key_jwt: the `jti` of each client assertion accepted, until it expires, so none is
-- accepted twice (RFC 7523 3).
CREATE TABLE oidc_assertions (
    jti_hash   BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX oidc_assertions_expiry ON oidc_assertions(expires_at);
