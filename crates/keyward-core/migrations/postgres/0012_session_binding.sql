-- Sessions bound to a device key, and proofs already accepted (see SQLite's
-- 0012_session_binding.sql).
ALTER TABLE sessions ADD COLUMN binding_kind TEXT NOT NULL DEFAULT 'unbound';
ALTER TABLE sessions ADD COLUMN binding_jkt TEXT;

CREATE TABLE proof_replays (
    jkt        TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (jkt, jti)
);
CREATE INDEX proof_replays_by_expiry ON proof_replays (expires_at);
