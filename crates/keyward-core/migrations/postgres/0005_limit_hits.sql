-- Rate-limit hits (see SQLite's 0005_limit_hits.sql).
CREATE TABLE limit_hits (
    limit_key  TEXT NOT NULL,
    at         BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX limit_hits_by_key ON limit_hits (limit_key, at);
CREATE INDEX limit_hits_by_expiry ON limit_hits (expires_at);
