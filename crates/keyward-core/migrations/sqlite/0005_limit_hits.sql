-- Rate-limit hits, in the database so that a limit holds across instances and restarts: one
-- row per counted attempt, keyed by what is counted ("begin 192.0.2.1", ...), deleted once its
-- window has passed (`expires_at`). Holds no secret: networks and SHA-256 digests of names.
CREATE TABLE limit_hits (
    limit_key  TEXT NOT NULL,
    at         INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX limit_hits_by_key ON limit_hits (limit_key, at);
CREATE INDEX limit_hits_by_expiry ON limit_hits (expires_at);
