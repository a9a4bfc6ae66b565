-- Signed checkpoints of the security log's head: (seq, hash, at) signed with the server's
-- Ed25519 log key, one per commit that appends events, in the same transaction. Append-only.
CREATE TABLE log_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      BLOB NOT NULL,
    at        INTEGER NOT NULL,
    signature BLOB NOT NULL
);
CREATE TRIGGER log_checkpoints_no_update BEFORE UPDATE ON log_checkpoints
    BEGIN SELECT RAISE(ABORT, 'log checkpoints are append-only'); END;
CREATE TRIGGER log_checkpoints_no_delete BEFORE DELETE ON log_checkpoints
    BEGIN SELECT RAISE(ABORT, 'log checkpoints are append-only'); END;
