-- Keyward schema, version 3: each account numbers its own events (1, 2, 3...).
-- Clients see these numbers, never `seq`, the position in the one global hash chain: the gap
-- between two of an account's own events would otherwise count everyone else's activity
-- (whether a name exists, how busy the service is). `seq` and the chain are unchanged.

ALTER TABLE events ADD COLUMN account_seq INTEGER;

-- Number the events already logged. The append-only trigger is lifted for this one statement,
-- which fills only the new column (not part of any hash), and restored at once.
DROP TRIGGER events_no_update;
UPDATE events SET account_seq = (
    SELECT COUNT(*) FROM events AS earlier
    WHERE earlier.account_id = events.account_id AND earlier.seq <= events.seq
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the security log is append-only'); END;

CREATE UNIQUE INDEX events_account_number ON events(account_id, account_seq);
