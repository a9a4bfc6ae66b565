-- Pending ceremonies are capped per session, per account and per client network as well as
-- in total, so no one party can fill the table (issue 10). `network` is the IPv4 address or
-- IPv6 /64 an unauthenticated ceremony was begun from, `wide_network` its IPv4 /24 or IPv6 /48
-- (one customer's usual allocation: 65,536 /64s).
ALTER TABLE ceremonies ADD COLUMN network TEXT;
ALTER TABLE ceremonies ADD COLUMN wide_network TEXT;
CREATE INDEX ceremonies_wide_network ON ceremonies(wide_network, kind) WHERE session_id IS NULL;
CREATE INDEX ceremonies_session ON ceremonies(session_id) WHERE session_id IS NOT NULL;
CREATE INDEX ceremonies_account ON ceremonies(account_id) WHERE session_id IS NOT NULL;
CREATE INDEX ceremonies_network ON ceremonies(network, kind) WHERE session_id IS NULL;
CREATE INDEX ceremonies_kind ON ceremonies(kind) WHERE session_id IS NULL;
-- Pruning finds the devices no session refers to any more.
CREATE INDEX sessions_device ON sessions(device_id);
