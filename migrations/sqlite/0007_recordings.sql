-- A recorded PTY channel names its asciicast file (under [recording] dir), which
-- GET /users/me/sessions/{id}/recording serves to the connection's owner.
ALTER TABLE audit_channels ADD COLUMN recording TEXT;
