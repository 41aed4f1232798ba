//! Control-plane stage: a `TargetRef` and the authenticated `Principal` become an
//! authorized `Target` (where the workload runs), or one message that does not reveal
//! whether the target exists.

mod kubernetes;
mod static_plane;

use std::path::PathBuf;

pub use kubernetes::KubernetesControlPlane;
pub use static_plane::StaticControlPlane;

use crate::route::TargetRef;

/// Who is connecting: proven by auth, never built from client input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub user_name: String,
    /// The key that authenticated this connection (for audit and revocation).
    pub key_id: String,
}

/// An authorized place to run channels. Only a control plane hands these out, so a
/// backend can never be pointed at something the user may not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Local processes in this directory (the embedded default).
    Local { workdir: PathBuf },
    /// A container of a running pod.
    Pod {
        namespace: String,
        pod: String,
        container: String,
    },
}

/// What the sandbox API shows about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    pub id: String,
    pub owner: String,
    pub status: &'static str,
    pub created_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Unknown and forbidden read the same on purpose.
    #[error("sandbox {0:?} does not exist or you have no access to it")]
    NoAccess(String),
    /// Only said to users who may use the target.
    #[error("{0}")]
    NotReady(String),
    /// The control plane itself failed; details go to the log, not the user.
    #[error("the gateway cannot reach its control plane right now; try again in a moment")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Checks `who` may use `target` and says where it runs.
    async fn resolve(&self, who: &Principal, target: &TargetRef) -> Result<Target, ControlError>;
    /// Describes a target for the API, with the same access rule as `resolve`.
    async fn describe(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<TargetInfo, ControlError>;
}
