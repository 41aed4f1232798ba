//! Access edits in the cluster reach live sessions at once. On the Kubernetes plane,
//! who may use a workload is written on its pods and StatefulSets (owner and members
//! annotations, read from the controlling set, else the pod), so the database's
//! notifications never hear of a member removed there. This watch does: it lists and
//! then watches every pod and StatefulSet carrying a target label in the watched
//! namespaces and, when what decides access on one changes (its owner or members
//! annotations, its target labels, its controller; or the object appears or goes),
//! announces the workload through the store's change stream. `ssh::revoke` then
//! re-checks the connections to that workload exactly as a new channel would be
//! checked, and ends those now refused.
//!
//! A pod merely turning Ready, or a status update, changes none of that and announces
//! nothing. After a watch ends or fails, a fresh list is compared with what was known,
//! so a change made while the watch was down is still announced.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::KubernetesConfig;
use crate::route::TargetRef;
use crate::store::{Change, Store};

/// How long the API server holds one watch before it ends it and we list again.
const WATCH_SECS: u32 = 290;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What decides access on one object, as far as it is written on that object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Access {
    /// The workloads it belongs to (`TargetRef::family`).
    families: BTreeSet<String>,
    owner: Option<String>,
    members: Option<String>,
    /// The controller a pod names (a set's identity then decides).
    controller: Option<String>,
}

/// Watches one cluster's access objects for the gateway's lifetime.
pub struct AccessWatch {
    pub client: kube::Client,
    pub config: KubernetesConfig,
    /// The remote this cluster is (`None`: the default cluster).
    pub remote: Option<String>,
    pub store: Store,
}

impl AccessWatch {
    /// One list-and-watch loop per watched namespace (or all), kind and target label.
    pub fn spawn(self, tasks: &TaskTracker, stop: CancellationToken) {
        let labels = [
            self.config.sandbox_label.clone(),
            self.config.job_label.clone(),
            self.config.model_label.clone(),
        ];
        let namespaces: Vec<Option<String>> = if self.config.namespaces.is_empty() {
            vec![None]
        } else {
            self.config.namespaces.iter().cloned().map(Some).collect()
        };
        let watch = std::sync::Arc::new(self);
        for namespace in &namespaces {
            for label in &labels {
                let pods: Api<Pod> = watch.api(namespace.as_deref());
                let sets: Api<StatefulSet> = watch.api(namespace.as_deref());
                tasks.spawn(watch.clone().run(pods, label.clone(), stop.clone()));
                tasks.spawn(watch.clone().run(sets, label.clone(), stop.clone()));
            }
        }
    }

    fn api<K>(&self, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The workloads an object's labels put it in, named as `TargetRef::family`
    /// names them for the connections to them (node and replica do not matter).
    fn families(&self, meta: &ObjectMeta) -> BTreeSet<String> {
        let labels = meta.labels.clone().unwrap_or_default();
        let c = &self.config;
        let mut targets = Vec::new();
        if let Some(id) = labels.get(&c.sandbox_label) {
            targets.push(TargetRef::Sandbox(id.clone()));
        }
        if let Some(job) = labels.get(&c.job_label) {
            targets.push(TargetRef::TrainingJob {
                job: job.clone(),
                node: 0,
            });
        }
        if let (Some(model), Some(deployment)) =
            (labels.get(&c.model_label), labels.get(&c.deployment_label))
        {
            targets.push(TargetRef::Model {
                model: model.clone(),
                deployment: deployment.clone(),
                replica: None,
            });
        }
        targets.iter().map(TargetRef::family).collect()
    }

    fn access(&self, meta: &ObjectMeta) -> Access {
        let annotation = |name: &str| meta.annotations.as_ref().and_then(|a| a.get(name)).cloned();
        Access {
            families: self.families(meta),
            owner: annotation(&self.config.owner_annotation),
            members: annotation(&self.config.members_annotation),
            controller: meta
                .owner_references
                .as_ref()
                .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
                .map(|r| format!("{}/{}/{}", r.kind, r.name, r.uid)),
        }
    }

    fn announce(&self, families: impl IntoIterator<Item = String>) {
        for family in families {
            debug!(remote = ?self.remote, %family, "access on the cluster changed");
            self.store.announce(Change::Workload {
                remote: self.remote.clone(),
                family,
            });
        }
    }

    /// Announces the workloads of `before` and `after` when they differ. A pod that
    /// went away is not announced: its own sessions end with its streams (and are told
    /// the pod was deleted), and one object fewer cannot take access from anyone else
    /// (a StatefulSet going away can, through the pods it controlled: those are).
    fn compare(&self, kind: &str, before: Option<&Access>, after: Option<&Access>) {
        if before == after || (after.is_none() && kind == "Pod") {
            return;
        }
        let mut families = BTreeSet::new();
        for access in [before, after].into_iter().flatten() {
            families.extend(access.families.iter().cloned());
        }
        self.announce(families);
    }

    async fn run<K>(self: std::sync::Arc<Self>, api: Api<K>, label: String, stop: CancellationToken)
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
        K: Send + 'static,
    {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.watch(api, label) => {}
        }
    }

    async fn watch<K>(&self, api: Api<K>, label: String)
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let kind = K::kind(&());
        // uid -> access; `None` until the first list.
        let mut known: Option<HashMap<String, Access>> = None;
        let mut backoff = Duration::from_millis(250);
        loop {
            let listed = tokio::time::timeout(
                self.config.request_timeout(),
                api.list(&ListParams::default().labels(&label)),
            )
            .await;
            let list = match listed {
                Ok(Ok(list)) => list,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    warn!(%kind, %label, error = %why, "listing for access changes failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let now: HashMap<String, Access> = list
                .items
                .iter()
                .filter_map(|o| Some((o.meta().uid.clone()?, self.access(o.meta()))))
                .collect();
            // What changed while nobody watched (nothing on the very first list).
            if let Some(before) = &known {
                for uid in before.keys().chain(now.keys()) {
                    self.compare(&kind, before.get(uid), now.get(uid));
                }
            }
            let mut map = now;
            let version = list.metadata.resource_version.unwrap_or_default();
            let params = WatchParams::default().labels(&label).timeout(WATCH_SECS);
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(e) => {
                    warn!(%kind, %label, error = %e, "watching for access changes failed; retrying");
                    known = Some(map);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(250);
            let mut stream = stream.boxed();
            while let Ok(Some(event)) = stream.try_next().await {
                match event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                        let Some(uid) = o.meta().uid.clone() else {
                            continue;
                        };
                        let access = self.access(o.meta());
                        self.compare(&kind, map.get(&uid), Some(&access));
                        map.insert(uid, access);
                    }
                    WatchEvent::Deleted(o) => {
                        if let Some(uid) = &o.meta().uid {
                            let gone = map.remove(uid);
                            self.compare(&kind, gone.as_ref(), None);
                        }
                    }
                    // Expired or otherwise refused: list again.
                    WatchEvent::Error(_) => break,
                    WatchEvent::Bookmark(_) => {}
                }
            }
            known = Some(map);
        }
    }
}
