-- Pending ceremonies are capped per session, per account and per client network as well as
-- in total (see SQLite's 0002_ceremony_caps.sql).
ALTER TABLE ceremonies ADD COLUMN network TEXT;
ALTER TABLE ceremonies ADD COLUMN wide_network TEXT;
CREATE INDEX ceremonies_wide_network ON ceremonies(wide_network, kind) WHERE session_id IS NULL;
CREATE INDEX ceremonies_session ON ceremonies(session_id) WHERE session_id IS NOT NULL;
CREATE INDEX ceremonies_account ON ceremonies(account_id) WHERE session_id IS NOT NULL;
CREATE INDEX ceremonies_network ON ceremonies(network, kind) WHERE session_id IS NULL;
CREATE INDEX ceremonies_kind ON ceremonies(kind) WHERE session_id IS NULL;
-- Pruning finds the devices no session refers to any more.
CREATE INDEX sessions_device ON sessions(device_id);
