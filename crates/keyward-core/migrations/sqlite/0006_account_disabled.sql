-- An account the service's operator disabled for abuse: when, and the words its owner is
-- shown once they prove a key at sign-in. Both NULL while the account is enabled.
ALTER TABLE accounts ADD COLUMN disabled_at INTEGER;
ALTER TABLE accounts ADD COLUMN disabled_reason TEXT;
