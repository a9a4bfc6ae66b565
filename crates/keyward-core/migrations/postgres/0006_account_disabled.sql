-- An account disabled by the operator (see SQLite's 0006_account_disabled.sql).
ALTER TABLE accounts ADD COLUMN disabled_at BIGINT;
ALTER TABLE accounts ADD COLUMN disabled_reason TEXT;
