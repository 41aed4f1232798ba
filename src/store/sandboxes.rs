//! Sandboxes of the static control plane: an id, an owner, members, and optionally the
//! working directory the local backend runs them in.

use super::{Result, Store, StoreError, conflict_on_unique, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub owner_id: String,
    pub workdir: Option<String>,
    pub member_ids: Vec<String>,
    pub created_at: i64,
}

impl Sandbox {
    pub fn allows(&self, user_id: &str) -> bool {
        self.owner_id == user_id || self.member_ids.iter().any(|m| m == user_id)
    }
}

impl Store {
    pub async fn create_sandbox(
        &self,
        id: &str,
        owner_id: &str,
        workdir: Option<&str>,
    ) -> Result<Sandbox> {
        let created_at = now_ms();
        sqlx::query(
            "INSERT INTO sandboxes (id, owner_id, workdir, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(owner_id)
        .bind(workdir)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, &format!("sandbox {id:?} already exists")))?;
        Ok(Sandbox {
            id: id.to_owned(),
            owner_id: owner_id.to_owned(),
            workdir: workdir.map(str::to_owned),
            member_ids: Vec::new(),
            created_at,
        })
    }

    pub async fn add_member(&self, sandbox_id: &str, user_id: &str) -> Result<()> {
        sqlx::query("INSERT INTO sandbox_members (sandbox_id, user_id) VALUES ($1, $2)")
            .bind(sandbox_id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_on_unique(e, "already a member"))?;
        Ok(())
    }

    /// Takes `user_id` off the sandbox's members; NotFound if they were not one.
    pub async fn remove_member(&self, sandbox_id: &str, user_id: &str) -> Result<()> {
        let done =
            sqlx::query("DELETE FROM sandbox_members WHERE sandbox_id = $1 AND user_id = $2")
                .bind(sandbox_id)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.changed(super::Change::Sandbox(sandbox_id.to_owned()));
        Ok(())
    }

    /// Gives the sandbox to another owner; NotFound if there is no such sandbox.
    pub async fn set_owner(&self, sandbox_id: &str, owner_id: &str) -> Result<()> {
        let done = sqlx::query("UPDATE sandboxes SET owner_id = $1 WHERE id = $2")
            .bind(owner_id)
            .bind(sandbox_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.changed(super::Change::Sandbox(sandbox_id.to_owned()));
        Ok(())
    }

    pub async fn sandbox(&self, id: &str) -> Result<Sandbox> {
        if let Some(found) = self.inline.as_ref().and_then(|inline| inline.sandbox(id)) {
            return found.ok_or(StoreError::NotFound);
        }
        let row: Option<(String, String, Option<String>, i64)> =
            sqlx::query_as(super::inline::SANDBOX)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let (id, owner_id, workdir, created_at) = row.ok_or(StoreError::NotFound)?;
        let members: Vec<(String,)> = sqlx::query_as(super::inline::SANDBOX_MEMBERS)
            .bind(&id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Sandbox {
            id,
            owner_id,
            workdir,
            member_ids: members.into_iter().map(|(m,)| m).collect(),
            created_at,
        })
    }
}
