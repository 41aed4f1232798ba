//! SSH public keys. The SHA-256 fingerprint is unique across all users, so a key names
//! exactly one user and auth can find that user in one indexed lookup.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, new_id, now_ms};
use crate::keys::ParsedKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub public_key: String,
    pub key_type: String,
    pub fingerprint_sha256: String,
    pub comment: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A key as a login sees it: which key, whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogin {
    pub key_id: String,
    pub user_id: String,
    pub user_name: String,
}

/// What a caller supplies to register a key.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub user_id: &'a str,
    pub name: &'a str,
    pub key: &'a ParsedKey,
}

/// The column list, as a macro so queries stay `&'static str` (sqlx refuses `format!`).
macro_rules! columns {
    () => {
        "id, user_id, name, public_key, key_type, fingerprint_sha256, comment, created_at, updated_at"
    };
}

impl SshKey {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            public_key: row.try_get("public_key")?,
            key_type: row.try_get("key_type")?,
            fingerprint_sha256: row.try_get("fingerprint_sha256")?,
            comment: row.try_get("comment")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl Store {
    /// Registers a key. Conflicts say whether the caller already has it or another
    /// account does, since a key can only ever identify one user.
    pub async fn add_key(&self, new: NewKey<'_>) -> Result<SshKey> {
        if let Some(existing) = self.key_by_fingerprint(&new.key.fingerprint).await? {
            return Err(StoreError::Conflict(if existing.user_id == new.user_id {
                format!(
                    "this key is already registered to your account as {:?} (id {})",
                    existing.name, existing.id
                )
            } else {
                "this key is already registered to another account; a key can identify only one user".to_owned()
            }));
        }
        let now = now_ms();
        let key = SshKey {
            id: new_id("key"),
            user_id: new.user_id.to_owned(),
            name: new.name.to_owned(),
            public_key: new.key.normalized.clone(),
            key_type: new.key.key_type.clone(),
            fingerprint_sha256: new.key.fingerprint.clone(),
            comment: new.key.comment.clone(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(concat!(
            "INSERT INTO ssh_keys (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.public_key)
        .bind(&key.key_type)
        .bind(&key.fingerprint_sha256)
        .bind(&key.comment)
        .bind(key.created_at)
        .bind(key.updated_at)
        .execute(&self.pool)
        .await
        // Two concurrent uploads of one key: the loser lands here.
        .map_err(|e| super::conflict_on_unique(e, "this key is already registered"))?;
        Ok(key)
    }

    pub async fn list_keys(&self, user_id: &str) -> Result<Vec<SshKey>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM ssh_keys WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(SshKey::from_row).collect()
    }

    /// Deletes one of the user's keys; another user's key id reads as not found.
    pub async fn delete_key(&self, user_id: &str, key_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2")
            .bind(key_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.changed(super::Change::Key(key_id.to_owned()));
        Ok(())
    }

    /// What a login needs from a key, in one indexed query: the key's id and its
    /// owner's id and name. Runs on every login and every new channel, so it is one
    /// round trip rather than a key lookup followed by a user lookup.
    pub async fn login_by_fingerprint(&self, fingerprint: &str) -> Result<Option<KeyLogin>> {
        if let Some(found) = self
            .inline
            .as_ref()
            .and_then(|inline| inline.login_by_fingerprint(fingerprint))
        {
            return Ok(found);
        }
        let row = sqlx::query(super::inline::LOGIN_BY_FINGERPRINT)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(KeyLogin {
            key_id: row.try_get("key_id")?,
            user_id: row.try_get("user_id")?,
            user_name: row.try_get("user_name")?,
        }))
    }

    pub async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<SshKey>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM ssh_keys WHERE fingerprint_sha256 = $1"
        ))
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(SshKey::from_row).transpose()
    }
}
