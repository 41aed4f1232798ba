//! Users: the identity SSH keys and API tokens belong to.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, conflict_on_unique, new_id, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

impl User {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// User names are also shown in logs and CLI output: keep them plain.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'@')
}

impl Store {
    pub async fn create_user(&self, name: &str) -> Result<User> {
        if !valid_user_name(name) {
            return Err(StoreError::Conflict(format!(
                "user name {name:?} is not valid (1-64 of a-z, A-Z, 0-9, - _ . @)"
            )));
        }
        let user = User {
            id: new_id("usr"),
            name: name.to_owned(),
            created_at: now_ms(),
        };
        sqlx::query("INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&user.id)
            .bind(&user.name)
            .bind(user.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_on_unique(e, &format!("user {name:?} already exists")))?;
        Ok(user)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<User> {
        let row = sqlx::query("SELECT id, name, created_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        User::from_row(&row)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<User> {
        let row = sqlx::query("SELECT id, name, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        User::from_row(&row)
    }

    /// Grants or takes back the admin right (the admin API); NotFound for no such user.
    pub async fn set_admin(&self, id: &str, admin: bool) -> Result<()> {
        let done = sqlx::query("UPDATE users SET is_admin = $1 WHERE id = $2")
            .bind(i64::from(admin))
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Whether the user may call the admin API; false for no such user.
    pub async fn is_admin(&self, id: &str) -> Result<bool> {
        let flag: Option<i64> = sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(flag == Some(1))
    }

    /// Deletes the user and, through the foreign keys, their keys, tokens,
    /// certificates, memberships and the sandboxes they own.
    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.changed(super::Change::User(id.to_owned()));
        Ok(())
    }

    /// Returns the existing user or creates it (used by `dev` seeding).
    pub async fn ensure_user(&self, name: &str) -> Result<User> {
        match self.user_by_name(name).await {
            Ok(user) => Ok(user),
            Err(StoreError::NotFound) => self.create_user(name).await,
            Err(e) => Err(e),
        }
    }
}
