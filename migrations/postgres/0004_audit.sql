-- The audit trail: one row per authenticated connection and one per channel. Rows
-- keep the user's id and name as they were, with no foreign keys: deleting a user
-- must not erase what they did. Failed logins are not recorded here (logs and
-- metrics count them), so a flood of them cannot fill the table. Times are Unix ms;
-- `ended_at` stays NULL while a connection is open (or if its gateway died).
CREATE TABLE audit_connections (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    user_name           TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    key_fingerprint     TEXT NOT NULL,
    certificate_serial  BIGINT,
    source_address      TEXT NOT NULL,
    target              TEXT NOT NULL,
    started_at          BIGINT NOT NULL,
    ended_at            BIGINT,
    bytes_in            BIGINT NOT NULL DEFAULT 0,
    bytes_out           BIGINT NOT NULL DEFAULT 0,
    close_reason        TEXT
);
CREATE INDEX audit_connections_user ON audit_connections(user_id, started_at, id);
CREATE INDEX audit_connections_started ON audit_connections(started_at, id);

CREATE TABLE audit_channels (
    connection_id  TEXT NOT NULL REFERENCES audit_connections(id) ON DELETE CASCADE,
    channel        BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    program        TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    ended_at       BIGINT NOT NULL,
    bytes_in       BIGINT NOT NULL,
    bytes_out      BIGINT NOT NULL,
    exit_status    BIGINT,
    outcome        TEXT NOT NULL,
    PRIMARY KEY (connection_id, channel)
);
