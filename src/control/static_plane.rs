//! The static control plane: sandboxes are rows in the gateway's store, always running,
//! each in its own working directory (the embedded default and the admin CLI use it).

use std::path::PathBuf;

use super::{ControlError, ControlPlane, Principal, Target, TargetInfo, local_target};
use crate::route::TargetRef;
use crate::store::{Sandbox, Store, StoreError};

pub struct StaticControlPlane {
    store: Store,
    sandbox_root: PathBuf,
}

impl StaticControlPlane {
    pub fn new(store: Store, sandbox_root: PathBuf) -> Self {
        Self {
            store,
            sandbox_root,
        }
    }

    async fn authorized(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<Sandbox, ControlError> {
        // Training jobs and model deployments live in a cluster; this plane only
        // knows its own sandboxes, and names nothing else (the one refusal).
        let TargetRef::Sandbox(id) = target else {
            return Err(ControlError::NoAccess(target.name()));
        };
        match self.store.sandbox(id).await {
            Ok(sandbox) if sandbox.allows(who.user_id()) => Ok(sandbox),
            Ok(_) | Err(StoreError::NotFound) => Err(ControlError::NoAccess(id.clone())),
            Err(e) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    fn workdir(&self, sandbox: &Sandbox) -> PathBuf {
        match &sandbox.workdir {
            Some(dir) => PathBuf::from(dir),
            None => self.sandbox_root.join(&sandbox.id),
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for StaticControlPlane {
    async fn resolve(&self, who: &Principal, target: &TargetRef) -> Result<Target, ControlError> {
        let sandbox = self.authorized(who, target).await?;
        let workdir = self.workdir(&sandbox);
        local_target(sandbox.id, workdir).await
    }

    async fn describe(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<TargetInfo, ControlError> {
        let sandbox = self.authorized(who, target).await?;
        let owner = match self.store.user_by_id(&sandbox.owner_id).await {
            Ok(user) => user.name,
            Err(e) => return Err(ControlError::Unavailable(e.to_string())),
        };
        Ok(TargetInfo {
            id: sandbox.id,
            owner,
            status: "running",
            created_at: sandbox.created_at,
        })
    }
}
