-- Certificates also name the API token used to issue them: deleting that token (a
-- leaked one, say) ends them, as deleting their key does. (On SQLite one process
-- serves, and it announces its own revocations; PostgreSQL adds triggers here.)
ALTER TABLE ssh_certificates
    ADD COLUMN token_id TEXT REFERENCES api_tokens(id) ON DELETE CASCADE;
CREATE INDEX ssh_certificates_token ON ssh_certificates(token_id);
