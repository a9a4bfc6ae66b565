-- Each account numbers its own events (see SQLite's 0003_event_numbers.sql). The update
-- trigger is lifted for the one statement that numbers events already logged.
ALTER TABLE events ADD COLUMN account_seq BIGINT;

ALTER TABLE events DISABLE TRIGGER events_no_update;
UPDATE events SET account_seq = (
    SELECT COUNT(*) FROM events AS earlier
    WHERE earlier.account_id = events.account_id AND earlier.seq <= events.seq
);
ALTER TABLE events ENABLE TRIGGER events_no_update;

CREATE UNIQUE INDEX events_account_number ON events(account_id, account_seq);
