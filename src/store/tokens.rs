//! API bearer tokens. Only a SHA-256 of each token is stored; the token itself is shown
//! once, when it is created.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError, User, new_id, now_ms};

/// A freshly minted token. `Debug` never prints the secret.
pub struct Token {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<secret>")
            .finish()
    }
}

pub fn hash_token(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    pub async fn create_token(&self, user_id: &str, name: &str) -> Result<Token> {
        let raw: [u8; 32] = rand::random();
        let secret = format!(
            "sgw_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let id = new_id("tok");
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(name)
        .bind(hash_token(&secret))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(Token { id, secret })
    }

    /// The user a bearer token belongs to.
    pub async fn user_for_token(&self, secret: &str) -> Result<User> {
        Ok(self.token_login(secret).await?.0)
    }

    /// The user a bearer token belongs to, and the token's id.
    pub async fn token_login(&self, secret: &str) -> Result<(User, String)> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT user_id, id FROM api_tokens WHERE token_hash = $1")
                .bind(hash_token(secret))
                .fetch_optional(&self.pool)
                .await?;
        let (user_id, token_id) = row.ok_or(StoreError::NotFound)?;
        Ok((self.user_by_id(&user_id).await?, token_id))
    }

    /// Whether the token `token_id` still exists and is `user_id`'s.
    pub async fn token_is_current(&self, token_id: &str, user_id: &str) -> Result<bool> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT 1 FROM api_tokens WHERE id = $1 AND user_id = $2")
                .bind(token_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Drops a user's tokens of one name (the `dev` command mints a fresh one per
    /// start; `admin token delete`), and with them the certificates issued with them.
    pub async fn delete_tokens_named(&self, user_id: &str, name: &str) -> Result<u64> {
        let gone: Vec<(String,)> =
            sqlx::query_as("DELETE FROM api_tokens WHERE user_id = $1 AND name = $2 RETURNING id")
                .bind(user_id)
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
        for (id,) in &gone {
            self.changed(super::Change::Token(id.clone()));
        }
        Ok(gone.len() as u64)
    }
}
