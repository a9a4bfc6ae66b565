-- Sessions bound to a key on the client's device (issue #13): a bound session's token is
-- accepted only with a proof signed by that key (RFC 9449 DPoP for the app and the CLI; the
-- browser's mechanisms for the web UI). `binding_jkt` is the RFC 7638 SHA-256 thumbprint of
-- the public key (base64url), NULL for an unbound session.
ALTER TABLE sessions ADD COLUMN binding_kind TEXT NOT NULL DEFAULT 'unbound';
ALTER TABLE sessions ADD COLUMN binding_jkt TEXT;

-- Proofs already accepted, so each is accepted once across every instance on this database:
-- the signing key's thumbprint and the proof's `jti`, kept until its `iat` is too old to be
-- accepted anyway (`expires_at`), then pruned. Holds no secret.
CREATE TABLE proof_replays (
    jkt        TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (jkt, jti)
);
CREATE INDEX proof_replays_by_expiry ON proof_replays (expires_at);
