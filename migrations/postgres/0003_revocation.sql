-- Revocation reaches every replica: each delete that can take access away (and a
-- sandbox changing owner) notifies `ssh_gateway_changes` with `<kind>:<id>`, whoever
-- made it. Notifications are sent at commit; replicas then re-check the sessions the
-- change concerns against the tables themselves, so a payload is only a hint.
--
-- Certificates also name the API token used to issue them: deleting that token (a
-- leaked one, say) ends them, as deleting their key does.
ALTER TABLE ssh_certificates
    ADD COLUMN token_id TEXT REFERENCES api_tokens(id) ON DELETE CASCADE;
CREATE INDEX ssh_certificates_token ON ssh_certificates(token_id);

CREATE FUNCTION ssh_gateway_notify_change() RETURNS trigger AS $$
BEGIN
    -- TG_ARGV[0] is the kind; the id is the named column of the old row.
    PERFORM pg_notify('ssh_gateway_changes',
        TG_ARGV[0] || ':' || (to_jsonb(OLD) ->> TG_ARGV[1]));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ssh_keys_revoked AFTER DELETE ON ssh_keys
    FOR EACH ROW EXECUTE FUNCTION ssh_gateway_notify_change('key', 'id');
CREATE TRIGGER users_revoked AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION ssh_gateway_notify_change('user', 'id');
CREATE TRIGGER api_tokens_revoked AFTER DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION ssh_gateway_notify_change('token', 'id');
CREATE TRIGGER sandbox_members_revoked AFTER DELETE ON sandbox_members
    FOR EACH ROW EXECUTE FUNCTION ssh_gateway_notify_change('sandbox', 'sandbox_id');
CREATE TRIGGER sandboxes_revoked AFTER DELETE ON sandboxes
    FOR EACH ROW EXECUTE FUNCTION ssh_gateway_notify_change('sandbox', 'id');
CREATE TRIGGER sandboxes_owner_changed AFTER UPDATE OF owner_id ON sandboxes
    FOR EACH ROW WHEN (OLD.owner_id IS DISTINCT FROM NEW.owner_id)
    EXECUTE FUNCTION ssh_gateway_notify_change('sandbox', 'id');
