-- The person's details in the security log, sealed under a key of the account's own (see
-- SQLite's 0010_sealed_details.sql).
CREATE TABLE account_keys (
    account_id BYTEA PRIMARY KEY,
    sealed_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

ALTER TABLE events ADD COLUMN sealed BYTEA;
