-- Signed checkpoints of the security log's head (see SQLite's 0004_log_checkpoints.sql).
CREATE TABLE log_checkpoints (
    seq       BIGINT PRIMARY KEY,
    hash      BYTEA NOT NULL,
    at        BIGINT NOT NULL,
    signature BYTEA NOT NULL
);
CREATE TRIGGER log_checkpoints_no_update BEFORE UPDATE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION keyward_refuse_change('log checkpoints are append-only');
CREATE TRIGGER log_checkpoints_no_delete BEFORE DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION keyward_refuse_change('log checkpoints are append-only');
CREATE TRIGGER log_checkpoints_no_truncate BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION keyward_refuse_change('log checkpoints are append-only');
