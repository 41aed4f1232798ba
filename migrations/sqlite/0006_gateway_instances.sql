-- Which gateway process recorded a connection, and when each was last alive: a
-- connection whose gateway died (killed, its node lost) is closed in the trail by the
-- replicas that outlive it, instead of staying open until retention prunes it.
CREATE TABLE gateway_instances (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL
);
ALTER TABLE audit_connections ADD COLUMN instance_id TEXT;
CREATE INDEX audit_connections_open ON audit_connections(instance_id) WHERE ended_at IS NULL;
