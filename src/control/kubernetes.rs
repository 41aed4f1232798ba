//! The Kubernetes control plane: a target is the pod carrying its label (sandbox id,
//! or training job id plus node index) in the configured namespaces. Owner and members
//! come from the pod's annotations, else from the store's sandbox row. Every API call
//! is bounded by the configured timeout.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use tracing::warn;

use super::{ControlError, ControlPlane, Location, Principal, Target, TargetInfo};
use crate::config::KubernetesConfig;
use crate::route::TargetRef;
use crate::store::{Store, StoreError};

pub struct KubernetesControlPlane {
    client: kube::Client,
    config: KubernetesConfig,
    store: Store,
}

impl KubernetesControlPlane {
    pub fn new(client: kube::Client, config: KubernetesConfig, store: Store) -> Self {
        Self {
            client,
            config,
            store,
        }
    }

    fn selector(&self, target: &TargetRef) -> String {
        match target {
            TargetRef::Sandbox(id) => format!("{}={id}", self.config.sandbox_label),
            TargetRef::TrainingJob { job, node } => {
                format!(
                    "{}={job},{}={node}",
                    self.config.job_label, self.config.node_label
                )
            }
        }
    }

    /// Every pod carrying the target's labels, sorted by namespace and name so a
    /// user's repeat connections reach the same pod.
    async fn pods(&self, target: &TargetRef) -> Result<Vec<Pod>, ControlError> {
        let params = ListParams::default().labels(&self.selector(target));
        let apis: Vec<Api<Pod>> = if self.config.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.config
                .namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let mut found = Vec::new();
        for api in apis {
            let listed = tokio::time::timeout(self.config.request_timeout(), api.list(&params))
                .await
                .map_err(|_| ControlError::Unavailable("listing pods timed out".into()))?;
            match listed {
                Ok(list) => found.extend(list.items),
                // A label value the API server will not parse names nothing.
                Err(kube::Error::Api(status)) if status.code == 400 => {}
                Err(e) => return Err(ControlError::Unavailable(format!("listing pods: {e}"))),
            }
        }
        found.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        Ok(found)
    }

    /// Who may use `pod` and which workload it belongs to, as read from the pod.
    fn identity(&self, pod: &Pod) -> Identity {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let mut members: Vec<String> = annotations
            .get(&self.config.members_annotation)
            .map(|m| {
                m.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        members.sort();
        members.dedup();
        Identity {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            workload: workload(pod),
            owner: annotations
                .get(&self.config.owner_annotation)
                .map(|o| o.trim().to_owned()),
            members,
        }
    }

    async fn allowed(
        &self,
        who: &Principal,
        target: &TargetRef,
        identity: &Identity,
    ) -> Result<bool, ControlError> {
        if let Some(owner) = &identity.owner {
            return Ok(
                owner == who.user_name() || identity.members.iter().any(|m| m == who.user_name())
            );
        }
        let TargetRef::Sandbox(id) = target else {
            return Ok(false);
        };
        match self.store.sandbox(id).await {
            Ok(sandbox) => Ok(sandbox.allows(who.user_id())),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    /// The pods for `target` once `who` is known to be allowed on them, or the one
    /// refusal that hides which case it was. Access is read from the pods themselves,
    /// and every pod carrying the target's labels must agree on it: a decoy (a Pending
    /// pod with another owner, the same id in another namespace or under another
    /// controller) makes the target unusable rather than deciding who gets in.
    async fn authorized_pods(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<Vec<Pod>, ControlError> {
        let pods = self.pods(target).await?;
        let Some(first) = pods.first() else {
            return Err(ControlError::NoAccess(target.name()));
        };
        let identity = self.identity(first);
        if let Some(other) = pods[1..].iter().find(|p| self.identity(p) != identity) {
            warn!(
                %target,
                first = %pod_ref(first),
                conflicting = %pod_ref(other),
                first_identity = ?identity,
                conflicting_identity = ?self.identity(other),
                "pods carrying this target's labels disagree on owner, members or workload; refusing everyone until resolved"
            );
            return Err(ControlError::NoAccess(target.name()));
        }
        if !self.allowed(who, target, &identity).await? {
            return Err(ControlError::NoAccess(target.name()));
        }
        Ok(pods)
    }

    fn container(&self, pod: &Pod) -> Option<String> {
        let spec = pod.spec.as_ref()?;
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        let annotations = pod.metadata.annotations.as_ref();
        let wanted = annotations
            .and_then(|a| a.get(&self.config.container_annotation))
            .or(self.config.default_container.as_ref());
        match wanted {
            Some(w) if names.contains(&w.as_str()) => Some(w.clone()),
            Some(_) => None,
            None => names.first().map(|n| (*n).to_owned()),
        }
    }
}

/// Access-relevant facts of one pod. Two pods that may serve the same target must
/// have equal identities.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    namespace: String,
    workload: Option<String>,
    owner: Option<String>,
    members: Vec<String>,
}

/// The controlling workload: `Kind/name` of the controller owner reference. A
/// ReplicaSet stands for its Deployment (its name minus the pod-template hash), so a
/// rolling update is one workload, not two.
fn workload(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    if owner.kind == "ReplicaSet"
        && let Some(hash) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
        && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return Some(format!("Deployment/{deployment}"));
    }
    Some(format!("{}/{}", owner.kind, owner.name))
}

fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown")
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && phase(pod) == "Running"
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[async_trait::async_trait]
impl ControlPlane for KubernetesControlPlane {
    async fn resolve(&self, who: &Principal, target: &TargetRef) -> Result<Target, ControlError> {
        let pods = self.authorized_pods(who, target).await?;
        let Some(pod) = pods.iter().find(|p| ready(p)) else {
            let p = &pods[0];
            let state = if p.metadata.deletion_timestamp.is_some() {
                "Terminating"
            } else {
                phase(p)
            };
            return Err(ControlError::NotReady(format!(
                "{target} is not ready (its pod is {state}); try again in a moment"
            )));
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let container = self.container(pod).ok_or_else(|| {
            ControlError::NotReady(format!(
                "{target} has no container named by its configuration"
            ))
        })?;
        let container_id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container))
            .and_then(|c| c.container_id.clone())
            .unwrap_or_default();
        Ok(Target::new(
            target.name(),
            Location::Pod {
                namespace,
                pod: name,
                uid,
                container,
                container_id,
            },
        ))
    }

    async fn describe(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<TargetInfo, ControlError> {
        let pods = self.authorized_pods(who, target).await?;
        let pod = pods.iter().find(|p| ready(p)).unwrap_or(&pods[0]);
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let owner = annotations
            .get(&self.config.owner_annotation)
            .cloned()
            .unwrap_or_default();
        let status = if ready(pod) { "running" } else { "starting" };
        let created_at = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or_default();
        Ok(TargetInfo {
            id: target.name(),
            owner,
            status,
            created_at,
        })
    }
}
