//! Control-plane stage: a `TargetRef` and the authenticated `Principal` become an
//! authorized `Target` (where the workload runs), or one message that does not reveal
//! whether the target exists.

mod http;
pub mod kube_access;
mod kubernetes;
pub mod resume;
mod static_plane;

use std::path::PathBuf;

pub use http::{HttpControlPlane, Workloads};
pub use kubernetes::KubernetesControlPlane;
pub use static_plane::StaticControlPlane;

use crate::certs::{Issuer, Permits};
use crate::route::TargetRef;

/// Who is connecting. Only authentication constructs one (a verified SSH key or
/// certificate, or an API token), so nothing built from client input can stand in for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    user_id: String,
    user_name: String,
    credential: Credential,
    permits: Permits,
}

/// What proved the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An SSH public key: its id in the store and its SHA-256 fingerprint, so each
    /// new channel can check the key is still registered.
    Key { id: String, fingerprint: String },
    /// An OpenSSH user certificate. `key_id` is the store's key it was issued for
    /// (the gateway's own CA), `None` for a configured CA's.
    Certificate {
        serial: u64,
        issuer: Issuer,
        key_id: Option<String>,
        fingerprint: String,
    },
    /// A REST API bearer token (the browser terminal logs in with one): its id in
    /// the store, so each new channel can check the token still exists.
    ApiToken { id: String },
}

impl Principal {
    /// A principal that may do everything a connection can (keys, tokens).
    pub(crate) fn new(user_id: String, user_name: String, credential: Credential) -> Self {
        Self::with_permits(user_id, user_name, credential, Permits::ALL)
    }

    pub(crate) fn with_permits(
        user_id: String,
        user_name: String,
        credential: Credential,
        permits: Permits,
    ) -> Self {
        Self {
            user_id,
            user_name,
            credential,
            permits,
        }
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn user_name(&self) -> &str {
        &self.user_name
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// What this connection may do (a certificate's extensions).
    pub fn permits(&self) -> Permits {
        self.permits
    }

    /// The SSH key that authenticated this principal, if one did (directly or
    /// through a certificate the gateway issued for it).
    pub fn key_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Key { id, .. } => Some(id),
            Credential::Certificate { key_id, .. } => key_id.as_deref(),
            Credential::ApiToken { .. } => None,
        }
    }

    /// The API token that signed in (the browser terminal), if one did.
    pub fn token_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::ApiToken { id } => Some(id),
            _ => None,
        }
    }

    /// SHA-256 fingerprint of the key that logged in (a certificate's certified key).
    pub fn fingerprint(&self) -> Option<&str> {
        match &self.credential {
            Credential::Key { fingerprint, .. } | Credential::Certificate { fingerprint, .. } => {
                Some(fingerprint)
            }
            Credential::ApiToken { .. } => None,
        }
    }

    /// The serial of the certificate that authenticated this principal, if one did.
    pub fn certificate_serial(&self) -> Option<u64> {
        match &self.credential {
            Credential::Certificate { serial, .. } => Some(*serial),
            _ => None,
        }
    }
}

/// An authorized place to run channels. Only a control plane's authorization check
/// constructs one, for exactly the object it checked, so a backend can never be
/// pointed at something the user may not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    id: String,
    location: Location,
}

impl Target {
    pub(in crate::control) fn new(id: String, location: Location) -> Self {
        Self { id, location }
    }

    /// The target's name as the user typed it.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn location(&self) -> &Location {
        &self.location
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// Local processes in this directory (the embedded default).
    Local { workdir: PathBuf },
    /// A container of a running pod. `uid` pins the exact pod object authorization
    /// was decided on: a pod deleted and re-created under the same name is another.
    Pod {
        namespace: String,
        pod: String,
        uid: String,
        container: String,
        /// The running instance of that container (its runtime id; empty if the
        /// status does not say): a restart gives a fresh filesystem, and with it a
        /// new instance for whatever the gateway remembers about the old one.
        container_id: String,
    },
}

/// A target of local processes in `workdir`, made on first use (a sandbox added by the
/// CLI, or named by a platform, has no directory yet).
pub(in crate::control) async fn local_target(
    id: String,
    workdir: PathBuf,
) -> Result<Target, ControlError> {
    tokio::fs::create_dir_all(&workdir)
        .await
        .map_err(|e| ControlError::Unavailable(format!("creating {}: {e}", workdir.display())))?;
    Ok(Target::new(id, Location::Local { workdir }))
}

/// How a target is being used, as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// What prompted the report.
    pub event: ActivityEvent,
    /// Connections to the target that are open now.
    pub open_sessions: usize,
    /// When payload last moved on any of its channels (Unix ms): bytes in or out, not
    /// keepalives or window adjustments.
    pub last_payload_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityEvent {
    /// More connections than last reported.
    Connect,
    /// Fewer, and why the latest of them closed (`CloseReason::as_str`).
    Disconnect { reason: String },
    /// As many as last reported; sent every `[activity] heartbeat_secs` while any
    /// stay open.
    Heartbeat,
}

impl ActivityEvent {
    pub fn as_str(&self) -> &'static str {
        match self {
            ActivityEvent::Connect => "connect",
            ActivityEvent::Disconnect { .. } => "disconnect",
            ActivityEvent::Heartbeat => "heartbeat",
        }
    }
}

/// Unix ms as RFC 3339 in UTC with milliseconds, as activity reports carry them.
pub(crate) fn rfc3339_ms(ms: u64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(i64::try_from(ms).ok()?)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
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
    /// The target's workload is paused (scaled to zero); `resume` wakes it. Only
    /// said to users who may use the target.
    #[error("{0} is paused")]
    Paused(String),
    /// The control plane itself failed; details go to the log, not the user.
    #[error("the gateway cannot reach its control plane right now; try again in a moment")]
    Unavailable(String),
    /// The cluster refused the gateway itself (its ServiceAccount lacks a permission):
    /// retrying will not help, and it is the operator's to fix, not the user's. The
    /// detail (the API server's words) goes to the log only.
    #[error("{DENIED}")]
    Denied(String),
}

/// What a user reads when the cluster refuses the gateway itself (missing RBAC).
pub const DENIED: &str = "the gateway is not permitted to do this in its cluster; its operator must grant it (the gateway's log says what is missing)";

impl ControlError {
    /// What the log should say: an `Unavailable`'s detail (the user reads only that
    /// the control plane is unavailable), else the message.
    pub fn detail(&self) -> String {
        match self {
            ControlError::Unavailable(detail) | ControlError::Denied(detail) => detail.clone(),
            other => other.to_string(),
        }
    }
}

#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Checks `who` may use `target` and says where it runs.
    async fn resolve(&self, who: &Principal, target: &TargetRef) -> Result<Target, ControlError>;
    /// Wakes a target `resolve` called paused, once `who` is known to be allowed, and
    /// returns when it is ready (then `resolve` names where it runs). Progress notes
    /// for the user go to `notes`. Concurrent callers share one resume.
    async fn resume(
        &self,
        who: &Principal,
        target: &TargetRef,
        notes: Option<&tokio::sync::mpsc::Sender<String>>,
    ) -> Result<std::time::Duration, ControlError> {
        let _ = (who, notes);
        Err(ControlError::NotReady(format!(
            "{target} is paused, and this gateway's control plane cannot resume it"
        )))
    }
    /// Tells the platform how a target is used (see `conn::activity`), so idle
    /// workloads can be paused and busy ones never are. Nothing by default.
    async fn report_activity(&self, target: &str, activity: &Activity) -> Result<(), ControlError> {
        let _ = (target, activity);
        Ok(())
    }
    /// Pauses a target nobody here has used since `quiet_since_ms` (Unix ms), per
    /// `[activity] pause_after_idle_secs`. Returns whether it was paused; `false` when
    /// this plane cannot, or sees that someone else is still using it.
    async fn pause_idle(&self, target: &str, quiet_since_ms: u64) -> Result<bool, ControlError> {
        let _ = (target, quiet_since_ms);
        Ok(false)
    }
    /// Describes a target for the API, with the same access rule as `resolve`.
    async fn describe(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<TargetInfo, ControlError>;
}
