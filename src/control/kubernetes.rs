//! The Kubernetes control plane: a target is the pod carrying its label (sandbox id,
//! training job id plus node index, or model id plus deployment id) in the configured
//! namespaces, or the StatefulSet carrying it, which may be paused at 0 replicas and
//! is then resumed on connect (sandboxes and training jobs; model deployments are
//! scaled by their platform, never woken from here). Owner and members come from the
//! StatefulSet that controls a pod (the pod can override nothing), else from the pod's
//! annotations, else from the store's sandbox row. Every API call is bounded by the
//! configured timeout.
//!
//! Which pod of a model deployment: every pod carrying the model and deployment
//! labels is a candidate for the authorization check (they must all agree); then
//! `-<replica>` takes the one whose replica label has that value, and no replica
//! takes the Ready pod that rendezvous hashing of the user's id over the Ready pods'
//! names ranks first, so one user's connections (VS Code opens several, possibly
//! through different gateway replicas) reach the same pod while it stays Ready, and
//! a pod coming or going moves only the users it wins or loses.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::resume::{Progress, Resumes};
use super::{
    Activity, ControlError, ControlPlane, Location, Principal, Target, TargetInfo, rfc3339_ms,
};
use crate::config::KubernetesConfig;
use crate::route::TargetRef;
use crate::store::{Store, StoreError};

pub struct KubernetesControlPlane {
    client: kube::Client,
    config: KubernetesConfig,
    store: Store,
    resumes: Resumes,
}

/// What carries a target's labels, once access to it is settled.
struct Found {
    pods: Vec<Pod>,
    sets: Vec<StatefulSet>,
}

impl KubernetesControlPlane {
    /// Runs resumes on the gateway's task tracker, ending them when `stop` fires.
    pub fn owned_by(
        mut self,
        tasks: tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        self.resumes = Resumes::owned(tasks, stop);
        self
    }

    pub fn new(client: kube::Client, config: KubernetesConfig, store: Store) -> Self {
        Self {
            client,
            config,
            store,
            resumes: Resumes::default(),
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
            // Every replica: they are all checked, then one is chosen.
            TargetRef::Model {
                model, deployment, ..
            } => format!(
                "{}={model},{}={deployment}",
                self.config.model_label, self.config.deployment_label
            ),
        }
    }

    /// The StatefulSets that may run a target: a sandbox's carries its label; a
    /// training job's carries the job label and runs every node (pod index = node).
    fn set_selector(&self, target: &TargetRef) -> String {
        match target {
            TargetRef::Sandbox(_) | TargetRef::Model { .. } => self.selector(target),
            TargetRef::TrainingJob { job, .. } => format!("{}={job}", self.config.job_label),
        }
    }

    /// Every object of a kind matching `selector`, sorted by namespace and name so a
    /// user's repeat connections reach the same pod.
    async fn list<K>(&self, selector: &str) -> Result<Vec<K>, ControlError>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let params = ListParams::default().labels(selector);
        let apis: Vec<Api<K>> = if self.config.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.config
                .namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let kind = K::kind(&());
        let mut found = Vec::new();
        for api in apis {
            let listed = tokio::time::timeout(self.config.request_timeout(), api.list(&params))
                .await
                .map_err(|_| ControlError::Unavailable(format!("listing {kind} timed out")))?;
            match listed {
                Ok(list) => found.extend(list.items),
                // A label value the API server will not parse names nothing.
                Err(kube::Error::Api(status)) if status.code == 400 => {}
                Err(e) => return Err(api_failed(format!("listing {kind}"), e)),
            }
        }
        found.sort_by(|a, b| {
            let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
            key(a).cmp(&key(b))
        });
        Ok(found)
    }

    /// Who may use a workload, as its metadata says.
    fn identity_of(&self, meta: &ObjectMeta, workload: Option<String>) -> Identity {
        let annotations = meta.annotations.clone().unwrap_or_default();
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
            namespace: meta.namespace.clone().unwrap_or_default(),
            workload,
            owner: annotations
                .get(&self.config.owner_annotation)
                .map(|o| o.trim().to_owned()),
            members,
        }
    }

    fn set_identity(&self, set: &StatefulSet) -> Identity {
        let name = set.metadata.name.clone().unwrap_or_default();
        self.identity_of(&set.metadata, Some(format!("StatefulSet/{name}")))
    }

    /// Who may use `pod`: its controlling StatefulSet's word when it has one (read
    /// from the set itself, whose UID must match the pod's owner reference), else the
    /// pod's own annotations. `None` when the pod names a controller that cannot be
    /// confirmed, which makes the target unusable.
    async fn pod_identity(
        &self,
        pod: &Pod,
        sets: &[StatefulSet],
    ) -> Result<Option<Identity>, ControlError> {
        let Some(owner) = controller(pod).filter(|o| o.kind == "StatefulSet") else {
            return Ok(Some(self.identity_of(&pod.metadata, workload(pod))));
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let listed = sets.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace.as_str())
                && s.metadata.name.as_deref() == Some(owner.name.as_str())
        });
        let set = match listed {
            Some(set) => Some(set.clone()),
            None => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
                tokio::time::timeout(self.config.request_timeout(), api.get_opt(&owner.name))
                    .await
                    .map_err(|_| {
                        ControlError::Unavailable("reading a StatefulSet timed out".into())
                    })?
                    .map_err(|e| api_failed("reading a StatefulSet".into(), e))?
            }
        };
        Ok(set
            .filter(|s| s.metadata.uid.as_deref() == Some(owner.uid.as_str()))
            .map(|s| self.set_identity(&s)))
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

    /// The pods and StatefulSets for `target` once `who` is known to be allowed on
    /// them, or the one refusal that hides which case it was. Access is read from the
    /// objects themselves, and every object carrying the target's labels must agree on
    /// it: a decoy (a Pending pod with another owner, the same id in another namespace
    /// or under another controller, a pod claiming a StatefulSet it does not belong to)
    /// makes the target unusable rather than deciding who gets in.
    async fn authorized(&self, who: &Principal, target: &TargetRef) -> Result<Found, ControlError> {
        let pods: Vec<Pod> = self.list(&self.selector(target)).await?;
        let sets: Vec<StatefulSet> = self.list(&self.set_selector(target)).await?;
        let mut identities: Vec<(String, Identity)> = sets
            .iter()
            .map(|s| {
                (
                    format!("statefulset {}", meta_ref(&s.metadata)),
                    self.set_identity(s),
                )
            })
            .collect();
        for pod in &pods {
            match self.pod_identity(pod, &sets).await? {
                Some(identity) => {
                    identities.push((format!("pod {}", meta_ref(&pod.metadata)), identity))
                }
                None => {
                    warn!(%target, pod = %meta_ref(&pod.metadata), "pod names a StatefulSet controller that does not exist or has another UID; refusing everyone until resolved");
                    return Err(ControlError::NoAccess(target.name()));
                }
            }
        }
        let Some((first_ref, identity)) = identities.first() else {
            return Err(ControlError::NoAccess(target.name()));
        };
        if let Some((other_ref, other)) = identities[1..].iter().find(|(_, i)| i != identity) {
            warn!(
                %target,
                first = %first_ref,
                conflicting = %other_ref,
                first_identity = ?identity,
                conflicting_identity = ?other,
                "objects carrying this target's labels disagree on owner, members or workload; refusing everyone until resolved"
            );
            return Err(ControlError::NoAccess(target.name()));
        }
        if !self.allowed(who, target, identity).await? {
            return Err(ControlError::NoAccess(target.name()));
        }
        Ok(Found { pods, sets })
    }

    /// Where `target` runs, for a control plane that decided `who` may use it (the
    /// HTTP one): the pods carrying its labels must all be one workload (namespace and
    /// controller), or nobody is sent to any of them; a Ready one is used.
    pub async fn locate(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<Target, ControlError> {
        let pods: Vec<Pod> = self.list(&self.selector(target)).await?;
        let place = |p: &Pod| (p.metadata.namespace.clone(), workload(p));
        if let Some(first) = pods.first()
            && let Some(other) = pods.iter().find(|p| place(p) != place(first))
        {
            warn!(
                %target,
                first = %meta_ref(&first.metadata),
                conflicting = %meta_ref(&other.metadata),
                "pods carrying this target's labels belong to different workloads; refusing everyone until resolved"
            );
            return Err(ControlError::NoAccess(target.name()));
        }
        self.ready_target(who, target, &pods)
    }

    /// The pod `who` is sent to among `pods` (all of them `target`'s, access settled):
    /// the first Ready one, or for a model deployment the replica asked for, else the
    /// user's rendezvous choice among the Ready ones. `Err`: why there is none.
    fn choose<'p>(
        &self,
        who: &Principal,
        target: &TargetRef,
        pods: &'p [Pod],
    ) -> Result<&'p Pod, ControlError> {
        let not_ready = |pods: &[&Pod]| {
            let Some(p) = pods.first() else {
                return ControlError::NoAccess(target.name());
            };
            let state = if p.metadata.deletion_timestamp.is_some() {
                "Terminating"
            } else {
                phase(p)
            };
            ControlError::NotReady(format!(
                "{target} is not ready (its pod is {state}); try again in a moment"
            ))
        };
        let all: Vec<&Pod> = pods.iter().collect();
        match target {
            TargetRef::Model {
                replica: Some(r), ..
            } => {
                let label = |p: &Pod| {
                    p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(&self.config.replica_label))
                        .map(|v| v.trim().to_owned())
                };
                let wanted: Vec<&Pod> = all
                    .iter()
                    .copied()
                    .filter(|p| label(p).is_some_and(|v| v == r.to_string()))
                    .collect();
                if wanted.is_empty() && !all.is_empty() {
                    // Only said to users allowed on the deployment.
                    let mut known: Vec<String> = all.iter().filter_map(|p| label(p)).collect();
                    known.sort_by_key(|v| (v.parse::<u64>().unwrap_or(u64::MAX), v.clone()));
                    known.dedup();
                    let known = if known.is_empty() {
                        "none of its pods carries a replica label".to_owned()
                    } else {
                        format!("its replicas: {}", known.join(", "))
                    };
                    return Err(ControlError::NotReady(format!(
                        "{target} does not exist ({known})"
                    )));
                }
                wanted
                    .iter()
                    .copied()
                    .find(|p| ready(p))
                    .ok_or_else(|| not_ready(&wanted))
            }
            TargetRef::Model { replica: None, .. } => {
                let names: Vec<String> = all
                    .iter()
                    .filter(|p| ready(p))
                    .map(|p| meta_ref(&p.metadata))
                    .collect();
                let Some(chosen) = rendezvous(who.user_id(), &names) else {
                    return Err(not_ready(&all));
                };
                all.iter()
                    .copied()
                    .find(|p| ready(p) && meta_ref(&p.metadata) == names[chosen])
                    .ok_or_else(|| not_ready(&all))
            }
            TargetRef::Sandbox(_) | TargetRef::TrainingJob { .. } => all
                .iter()
                .copied()
                .find(|p| ready(p))
                .ok_or_else(|| not_ready(&all)),
        }
    }

    /// The pod `choose` picks among `pods`, as a target.
    fn ready_target(
        &self,
        who: &Principal,
        target: &TargetRef,
        pods: &[Pod],
    ) -> Result<Target, ControlError> {
        let pod = self.choose(who, target, pods)?;
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
    let owner = controller(pod)?;
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

fn controller(
    pod: &Pod,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

fn meta_ref(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The index in `names` that `user` goes to: the highest SHA-256 of user and name
/// (rendezvous hashing), ties by name. Deterministic across gateway replicas and
/// restarts; `None` when there are no names.
fn rendezvous(user: &str, names: &[String]) -> Option<usize> {
    use sha2::{Digest, Sha256};
    let score = |name: &str| {
        let digest = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0u8])
            .chain_update(name.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    };
    (0..names.len())
        .max_by(|&a, &b| (score(&names[a]), &names[b]).cmp(&(score(&names[b]), &names[a])))
}

/// On a training job's StatefulSet: how many nodes to resume it with.
pub const RESUME_REPLICAS_ANNOTATION: &str = "ssh-gateway.io/resume-replicas";

/// Activity, as annotations on a sandbox's StatefulSet.
pub const OPEN_SESSIONS_ANNOTATION: &str = "ssh-gateway.io/open-sessions";
pub const LAST_ACTIVITY_ANNOTATION: &str = "ssh-gateway.io/last-activity";

/// A model deployment with no pod at all (its StatefulSet scaled to 0): its platform
/// scales inference, so the gateway does not. Only said to users allowed on it.
fn model_not_woken(target: &TargetRef) -> ControlError {
    ControlError::NotReady(format!(
        "{target} has no replica running, and the gateway does not start model deployments; scale it up from your platform, then connect again"
    ))
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec.replicas.unwrap_or(1)
}

/// What a user is told a pod is doing while they wait for it.
fn pod_state(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let waiting = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        });
    match (phase(pod), waiting) {
        ("Running", _) => format!("pod {name} is running; waiting for it to be ready"),
        (phase, Some(reason)) => format!("pod {name} is {phase} ({reason})"),
        (phase, None) => format!("pod {name} is {phase}"),
    }
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
        let found = self.authorized(who, target).await?;
        if let TargetRef::Model { .. } = target {
            if found.pods.is_empty() {
                return Err(model_not_woken(target));
            }
        } else if !found.pods.iter().any(ready) && !found.sets.is_empty() {
            // Paused, or waking (by another connection, replica or anyone): either
            // way `resume` is what waits for it.
            return Err(ControlError::Paused(target.name()));
        }
        self.ready_target(who, target, &found.pods)
    }

    async fn resume(
        &self,
        who: &Principal,
        target: &TargetRef,
        notes: Option<&tokio::sync::mpsc::Sender<String>>,
    ) -> Result<Duration, ControlError> {
        // Authorization first: an unknown or forbidden id never wakes anything.
        let found = self.authorized(who, target).await?;
        if found.pods.iter().any(ready) {
            return Ok(Duration::ZERO);
        }
        if let TargetRef::Model { .. } = target {
            return Err(model_not_woken(target));
        }
        let Some(set) = found
            .sets
            .iter()
            .find(|s| replicas(s) == 0)
            .or(found.sets.first())
        else {
            return Err(ControlError::NotReady(format!(
                "{target} is not ready; try again in a moment"
            )));
        };
        let scale = replicas(set) == 0;
        if let Some(notes) = notes {
            let what = if scale {
                "is paused; resuming it"
            } else {
                "is starting; waiting for it"
            };
            let _ = notes.send(format!("{} {what}", target.name())).await;
        }
        // A job resumes whole: the set's resume-replicas annotation, else enough
        // nodes to reach the one asked for.
        let want = match target {
            TargetRef::Sandbox(_) | TargetRef::Model { .. } => 1,
            TargetRef::TrainingJob { node, .. } => set
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RESUME_REPLICAS_ANNOTATION))
                .and_then(|v| v.trim().parse::<i32>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| {
                    i32::try_from(*node)
                        .unwrap_or(i32::MAX - 1)
                        .saturating_add(1)
                }),
        };
        let wake = Wake {
            scale,
            replicas: want,
            client: self.client.clone(),
            namespace: set.metadata.namespace.clone().unwrap_or_default(),
            name: set.metadata.name.clone().unwrap_or_default(),
            uid: set.metadata.uid.clone().unwrap_or_default(),
            selector: self.selector(target),
            request_timeout: self.config.request_timeout(),
            limit: self.config.resume_timeout(),
        };
        let key = format!("{}/{}", wake.namespace, wake.name);
        info!(%target, statefulset = %key, account = %who.user_name(), "resuming");
        self.resumes
            .join(&key, move |progress| wake.run(progress), notes)
            .await
            .map_err(|reason| {
                ControlError::NotReady(format!("{target} could not be resumed: {reason}"))
            })
    }

    /// Writes the facts onto the target's StatefulSets as annotations
    /// (`ssh-gateway.io/open-sessions`, `ssh-gateway.io/last-activity` in RFC 3339),
    /// where an idle-pause controller can read them. Targets without a StatefulSet
    /// have nowhere to keep them.
    async fn report_activity(&self, target: &str, activity: &Activity) -> Result<(), ControlError> {
        let Ok(target_ref) = crate::route::route(target) else {
            return Ok(());
        };
        let sets: Vec<StatefulSet> = self.list(&self.set_selector(&target_ref)).await?;
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            OPEN_SESSIONS_ANNOTATION.into(),
            activity.open_sessions.to_string().into(),
        );
        if let Some(at) = activity.last_payload_ms.and_then(rfc3339_ms) {
            annotations.insert(LAST_ACTIVITY_ANNOTATION.into(), at.into());
        }
        let patch = Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}}));
        for set in sets {
            let namespace = set.metadata.namespace.clone().unwrap_or_default();
            let name = set.metadata.name.clone().unwrap_or_default();
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
            tokio::time::timeout(
                self.config.request_timeout(),
                api.patch(&name, &PatchParams::default(), &patch),
            )
            .await
            .map_err(|_| ControlError::Unavailable("annotating a StatefulSet timed out".into()))?
            .map_err(|e| api_failed(format!("annotating {namespace}/{name}"), e))?;
        }
        Ok(())
    }

    /// Scales a sandbox's one StatefulSet to 0, unless its annotations show use this
    /// replica has not seen: open sessions written by another gateway replica, or
    /// payload after `quiet_since_ms`. A training job is never paused from here (its
    /// nodes are separate targets sharing one StatefulSet).
    async fn pause_idle(&self, target: &str, quiet_since_ms: u64) -> Result<bool, ControlError> {
        let Ok(target_ref @ TargetRef::Sandbox(_)) = crate::route::route(target) else {
            return Ok(false);
        };
        let sets: Vec<StatefulSet> = self.list(&self.set_selector(&target_ref)).await?;
        let [set] = sets.as_slice() else {
            if sets.len() > 1 {
                warn!(%target, "several StatefulSets carry this sandbox's label; not pausing any");
            }
            return Ok(false);
        };
        let annotations = set.metadata.annotations.clone().unwrap_or_default();
        let open = annotations
            .get(OPEN_SESSIONS_ANNOTATION)
            .map_or(0, |v| v.trim().parse::<u64>().unwrap_or(u64::MAX));
        let last = annotations
            .get(LAST_ACTIVITY_ANNOTATION)
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.timestamp_millis());
        if open > 0 || last.is_some_and(|l| l > i64::try_from(quiet_since_ms).unwrap_or(i64::MAX)) {
            info!(%target, open, "not pausing: the StatefulSet shows use this replica has not seen");
            return Ok(false);
        }
        if replicas(set) == 0 {
            return Ok(false);
        }
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
        let scale = Patch::Merge(serde_json::json!({"spec": {"replicas": 0}}));
        tokio::time::timeout(
            self.config.request_timeout(),
            api.patch_scale(&name, &PatchParams::default(), &scale),
        )
        .await
        .map_err(|_| ControlError::Unavailable("scaling a StatefulSet down timed out".into()))?
        .map_err(|e| api_failed(format!("scaling {namespace}/{name} to 0"), e))?;
        info!(%target, statefulset = %format!("{namespace}/{name}"), "paused after idling");
        Ok(true)
    }

    async fn describe(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<TargetInfo, ControlError> {
        let found = self.authorized(who, target).await?;
        let pod = found.pods.iter().find(|p| ready(p)).or(found.pods.first());
        let set = found.sets.first();
        let meta = match (pod, set) {
            (Some(p), None) => &p.metadata,
            (_, Some(s)) => &s.metadata,
            (None, None) => return Err(ControlError::NoAccess(target.name())),
        };
        let owner = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.config.owner_annotation))
            .cloned()
            .unwrap_or_default();
        let status = match pod {
            Some(p) if ready(p) => "running",
            _ if set.is_some_and(|s| replicas(s) == 0) => "paused",
            _ => "starting",
        };
        let created_at = meta
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

/// Scales one paused StatefulSet to a replica and waits, on a watch, until a pod it
/// controls is Ready.
struct Wake {
    /// Whether to scale up (it was at 0) or only wait (it is on its way already).
    scale: bool,
    /// How many replicas to scale to.
    replicas: i32,
    client: kube::Client,
    namespace: String,
    name: String,
    uid: String,
    selector: String,
    request_timeout: Duration,
    limit: Duration,
}

impl Wake {
    async fn run(self, progress: Progress) -> Result<Duration, String> {
        let started = Instant::now();
        if self.scale {
            self.scale_up(&progress).await?;
        }
        progress
            .within(self.limit, self.until_ready(&progress), |secs, last| {
                format!(
                    "it did not become ready within {secs} s (last seen: {}); check its events with kubectl describe",
                    last.unwrap_or_else(|| "no pod yet".into())
                )
            })
            .await?;
        Ok(started.elapsed())
    }

    async fn scale_up(&self, progress: &Progress) -> Result<(), String> {
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let n = self.replicas;
        let replicas = if n == 1 {
            "1 replica".to_owned()
        } else {
            format!("{n} replicas")
        };
        info!(statefulset = %format!("{}/{}", self.namespace, self.name), "scaling up to {replicas}");
        progress.note(format!(
            "scaling StatefulSet {}/{} to {replicas}",
            self.namespace, self.name
        ));
        let scale = Patch::Merge(serde_json::json!({"spec": {"replicas": n}}));
        match tokio::time::timeout(
            self.request_timeout,
            sets.patch_scale(&self.name, &PatchParams::default(), &scale),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                warn!(statefulset = %self.name, error = %e, "scale-up refused");
                Err("the cluster refused to scale it up (see the gateway's log)".into())
            }
            Err(_) => Err("the Kubernetes API did not answer the scale-up in time".into()),
        }
    }

    fn owned_ready(&self, pod: &Pod) -> bool {
        controller(pod).is_some_and(|o| o.uid == self.uid) && ready(pod)
    }

    /// Lists, then watches from the list's version; a watch that ends or errs is
    /// picked up again from a fresh list.
    async fn until_ready(&self, progress: &Progress) -> Result<(), String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        loop {
            let list = tokio::time::timeout(
                self.request_timeout,
                pods.list(&ListParams::default().labels(&self.selector)),
            )
            .await
            .map_err(|_| "the Kubernetes API did not answer in time".to_owned())?
            .map_err(|e| format!("listing its pods failed: {e}"))?;
            for pod in &list.items {
                if self.owned_ready(pod) {
                    return Ok(());
                }
                progress.note(pod_state(pod));
            }
            let version = list.metadata.resource_version.unwrap_or_default();
            let params = WatchParams::default().labels(&self.selector).timeout(60);
            let Ok(stream) = pods.watch(&params, &version).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut stream = stream.boxed();
            while let Ok(Some(event)) = stream.try_next().await {
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        if self.owned_ready(&pod) {
                            return Ok(());
                        }
                        if controller(&pod).is_some_and(|o| o.uid == self.uid) {
                            progress.note(pod_state(&pod));
                        }
                    }
                    WatchEvent::Error(_) => break,
                    WatchEvent::Deleted(_) | WatchEvent::Bookmark(_) => {}
                }
            }
        }
    }
}

/// A failed API call (`what` it was), as it reaches the user: the cluster refusing
/// the gateway itself (403: its ServiceAccount lacks a permission) is the operator's
/// to fix and said so; anything else is an outage worth retrying.
fn api_failed(what: String, e: kube::Error) -> ControlError {
    match &e {
        kube::Error::Api(status) if status.code == 403 => {
            ControlError::Denied(format!("{what}: {e}"))
        }
        _ => ControlError::Unavailable(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::rendezvous;

    #[test]
    fn rendezvous_is_stable_and_moves_only_what_it_must() {
        let names: Vec<String> = (0..5).map(|i| format!("ns/pod-{i}")).collect();
        assert_eq!(rendezvous("u", &[]), None);
        let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let before: Vec<usize> = users
            .iter()
            .map(|u| rendezvous(u, &names).unwrap())
            .collect();
        // Same answer every time, and the users spread over every pod.
        for (u, &b) in users.iter().zip(&before) {
            assert_eq!(rendezvous(u, &names), Some(b));
        }
        for i in 0..names.len() {
            assert!(before.contains(&i), "no user on pod {i}");
        }
        // Order of listing does not matter.
        let mut reversed = names.clone();
        reversed.reverse();
        for (u, &b) in users.iter().zip(&before) {
            let r = rendezvous(u, &reversed).unwrap();
            assert_eq!(reversed[r], names[b]);
        }
        // Pod 2 goes: only its users move.
        let fewer: Vec<String> = names.iter().filter(|n| *n != "ns/pod-2").cloned().collect();
        for (u, &b) in users.iter().zip(&before) {
            let now = &fewer[rendezvous(u, &fewer).unwrap()];
            if b != 2 {
                assert_eq!(now, &names[b], "{u} moved");
            }
        }
    }
}
