-- Short-lived user certificates the gateway's CA issued. A certificate is accepted only
-- while its row exists, so deleting the key it was issued for (or the user) ends it at
-- the next connection, however long it had left. Serials stay below 2^53 so they
-- survive JSON number parsing in every client.
CREATE TABLE ssh_certificates (
    serial        BIGINT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id        TEXT NOT NULL REFERENCES ssh_keys(id) ON DELETE CASCADE,
    principal     TEXT NOT NULL,
    valid_after   BIGINT NOT NULL,
    valid_before  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX ssh_certificates_key ON ssh_certificates(key_id);
CREATE INDEX ssh_certificates_expiry ON ssh_certificates(valid_before);
