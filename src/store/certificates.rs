//! Certificates the gateway's own CA issued: the serial ↔ key link that lets deleting a
//! key (or its user) end the certificates issued for it, through the foreign keys.

use sqlx::Row;

use super::{Result, Store, StoreError, now_ms};

/// What the store keeps about one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub serial: u64,
    pub user_id: String,
    pub key_id: String,
    pub principal: String,
    /// Unix seconds, as in the certificate.
    pub valid_after: u64,
    pub valid_before: u64,
    /// The API token the request for it came with: deleting the token ends it.
    pub token_id: Option<String>,
}

/// A certificate as a login sees it: the key it was issued for and its owner, as they
/// are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateLogin {
    pub key_id: String,
    pub user_id: String,
    pub user_name: String,
}

/// Rows of certificates that expired this long ago are pruned when new ones are issued.
const KEEP_EXPIRED_SECS: u64 = 24 * 3600;

fn to_db(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Conflict(format!("{n} is out of range")))
}

impl Store {
    /// Records an issued certificate (before it is handed out, so it is valid as soon
    /// as the caller has it) and prunes long-expired ones.
    pub async fn record_certificate(&self, cert: &IssuedCertificate) -> Result<()> {
        sqlx::query(
            "INSERT INTO ssh_certificates \
             (serial, user_id, key_id, principal, valid_after, valid_before, created_at, token_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(to_db(cert.serial)?)
        .bind(&cert.user_id)
        .bind(&cert.key_id)
        .bind(&cert.principal)
        .bind(to_db(cert.valid_after)?)
        .bind(to_db(cert.valid_before)?)
        .bind(now_ms())
        .bind(&cert.token_id)
        .execute(&self.pool)
        .await
        .map_err(|e| super::conflict_on_unique(e, "certificate serial already used"))?;
        let horizon = (now_ms() / 1000).saturating_sub(KEEP_EXPIRED_SECS as i64);
        sqlx::query("DELETE FROM ssh_certificates WHERE valid_before < $1")
            .bind(horizon)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The key and user a certificate of ours names, if its row still exists, the key
    /// it was issued for still has `fingerprint` and its user is still `principal`.
    /// One indexed query: it runs on every certificate login and new channel.
    pub async fn certificate_login(
        &self,
        serial: u64,
        fingerprint: &str,
        principal: &str,
    ) -> Result<Option<CertificateLogin>> {
        let Ok(serial) = i64::try_from(serial) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT k.id AS key_id, u.id AS user_id, u.name AS user_name \
             FROM ssh_certificates c \
             JOIN ssh_keys k ON k.id = c.key_id \
             JOIN users u ON u.id = c.user_id \
             WHERE c.serial = $1 AND k.fingerprint_sha256 = $2 \
               AND k.user_id = c.user_id AND u.name = $3 AND c.principal = $3",
        )
        .bind(serial)
        .bind(fingerprint)
        .bind(principal)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CertificateLogin {
            key_id: row.try_get("key_id")?,
            user_id: row.try_get("user_id")?,
            user_name: row.try_get("user_name")?,
        }))
    }
}
