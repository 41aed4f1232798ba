-- Administrators see every user's audit trail through the API (GET /admin/sessions).
-- A flag on the user, not on a token: revoking a person's admin right takes effect on
-- their next request whatever token they hold. 0 or 1, an integer on both stores.
ALTER TABLE users ADD COLUMN is_admin BIGINT NOT NULL DEFAULT 0;

-- An admin looks a user's trail up by name, also after the user is deleted.
CREATE INDEX audit_connections_user_name ON audit_connections(user_name, started_at, id);
