//! The emulator's object store: pods and statefulsets as JSON, one resourceVersion
//! counter, and a broadcast of watch events. A tiny StatefulSet controller keeps each
//! set's pods in line with its replica count.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    StatefulSet,
}

impl Kind {
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod => "v1",
            Kind::StatefulSet => "apps/v1",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::StatefulSet => "StatefulSet",
        }
    }
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::StatefulSet => "statefulsets",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// ADDED, MODIFIED or DELETED.
    pub action: &'static str,
    pub object: Value,
}

type Key = (Kind, String, String);

#[derive(Default)]
struct Inner {
    resource_version: u64,
    objects: BTreeMap<Key, Value>,
    /// Pods (namespace, name) to delete and re-create under the same name when the
    /// next exec or port-forward for them arrives, with the annotations the new pod
    /// gets (`None`: the old pod's) (`replace_pod_at_next_stream`).
    replace_at_next_stream: BTreeMap<(String, String), Option<Value>>,
}

/// Errors shaped like the API server's.
#[derive(Debug)]
pub enum StoreError {
    NotFound { kind: Kind, name: String },
    AlreadyExists { kind: Kind, name: String },
    Invalid(String),
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Event>,
    /// Where each pod's containers "live": `<root>/<namespace>/<pod>`.
    pub root: PathBuf,
    /// How long a pod created by a StatefulSet stays Pending before it runs.
    pub start_delay: Duration,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6],
        b[7],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

impl Store {
    pub fn new(root: PathBuf, start_delay: Duration) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            events,
            root,
            start_delay,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.inner.lock().expect("store lock").resource_version
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        inner
            .objects
            .get(&(kind, ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or(StoreError::NotFound {
                kind,
                name: name.to_owned(),
            })
    }

    /// All objects of a kind, in one namespace or all.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.inner.lock().expect("store lock");
        let items = inner
            .objects
            .iter()
            .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.resource_version)
    }

    fn publish(&self, kind: Kind, ns: &str, name: &str, action: &'static str, object: &Value) {
        let _ = self.events.send(Event {
            kind,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            action,
            object: object.clone(),
        });
    }

    /// Creates an object, filling in what the API server would.
    pub fn create(&self, kind: Kind, ns: &str, mut object: Value) -> Result<Value, StoreError> {
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StoreError::Invalid("metadata.name: Required value".into()))?
            .to_owned();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.name());
        let meta = &mut object["metadata"];
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(uid());
        meta["creationTimestamp"] = json!(now());
        if meta.get("labels").is_none_or(Value::is_null) {
            meta["labels"] = json!({});
        }
        if meta.get("annotations").is_none_or(Value::is_null) {
            meta["annotations"] = json!({});
        }
        match kind {
            Kind::Pod => {
                let phase = object["metadata"]["annotations"]["kube-emulator/phase"]
                    .as_str()
                    .unwrap_or("Running")
                    .to_owned();
                set_pod_phase(&mut object, &phase);
                let dir = self.root.join(ns).join(&name);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::Invalid(format!("creating {}: {e}", dir.display())))?;
            }
            Kind::StatefulSet => {
                if object["spec"]["replicas"].is_null() {
                    object["spec"]["replicas"] = json!(1);
                }
                object["status"] = json!({"replicas": 0, "readyReplicas": 0, "availableReplicas": 0, "currentReplicas": 0});
            }
        }
        let stored = {
            let mut inner = self.inner.lock().expect("store lock");
            let key = (kind, ns.to_owned(), name.clone());
            if inner.objects.contains_key(&key) {
                return Err(StoreError::AlreadyExists { kind, name });
            }
            inner.resource_version += 1;
            object["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
            object["metadata"]["generation"] = json!(1);
            inner.objects.insert(key, object.clone());
            object
        };
        self.publish(kind, ns, &name, "ADDED", &stored);
        if kind == Kind::StatefulSet {
            self.reconcile(ns, &name);
        }
        Ok(stored)
    }

    /// Replaces an object through `change`, bumping its resourceVersion.
    pub fn update(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, StoreError> {
        let updated = {
            let mut inner = self.inner.lock().expect("store lock");
            inner.resource_version += 1;
            let rv = inner.resource_version;
            let object = inner
                .objects
                .get_mut(&(kind, ns.to_owned(), name.to_owned()))
                .ok_or(StoreError::NotFound {
                    kind,
                    name: name.to_owned(),
                })?;
            change(object);
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            object.clone()
        };
        self.publish(kind, ns, name, "MODIFIED", &updated);
        if kind == Kind::StatefulSet {
            self.reconcile(ns, name);
        }
        Ok(updated)
    }

    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, StoreError> {
        let removed = {
            let mut inner = self.inner.lock().expect("store lock");
            inner.resource_version += 1;
            let rv = inner.resource_version;
            let mut object = inner
                .objects
                .remove(&(kind, ns.to_owned(), name.to_owned()))
                .ok_or(StoreError::NotFound {
                    kind,
                    name: name.to_owned(),
                })?;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            object
        };
        self.publish(kind, ns, name, "DELETED", &removed);
        if kind == Kind::StatefulSet {
            // Like a foreground cascade: the set's pods go with it.
            let owned: Vec<String> = self
                .list(Kind::Pod, Some(ns))
                .0
                .iter()
                .filter(|p| {
                    p["metadata"]["labels"]["kube-emulator/statefulset"].as_str() == Some(name)
                })
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            for pod in owned {
                let _ = self.delete(Kind::Pod, ns, &pod);
            }
        }
        Ok(removed)
    }

    /// Fault injection for tests: when the next exec or port-forward request for this
    /// pod arrives, the pod is deleted and re-created under its name (a new uid, as a
    /// controller or anyone allowed to create pods could do) before the request is
    /// served, so it lands in the new pod: the race between a client's access check
    /// and its stream, made certain. The new pod carries `annotations`, or the old
    /// pod's if `None` (a controller re-creating its pod).
    pub fn replace_pod_at_next_stream(&self, ns: &str, name: &str, annotations: Option<Value>) {
        self.inner
            .lock()
            .expect("store lock")
            .replace_at_next_stream
            .insert((ns.to_owned(), name.to_owned()), annotations);
    }

    /// Carries out an armed `replace_pod_at_next_stream` for this pod, if any.
    pub fn replace_if_armed(&self, ns: &str, name: &str) {
        let armed = self
            .inner
            .lock()
            .expect("store lock")
            .replace_at_next_stream
            .remove(&(ns.to_owned(), name.to_owned()));
        let Some(annotations) = armed else {
            return;
        };
        let Ok(old) = self.delete(Kind::Pod, ns, name) else {
            return;
        };
        let mut new = json!({"metadata": {"name": name}, "spec": old["spec"].clone()});
        for field in ["labels", "annotations", "ownerReferences"] {
            if !old["metadata"][field].is_null() {
                new["metadata"][field] = old["metadata"][field].clone();
            }
        }
        if let Some(annotations) = annotations {
            new["metadata"]["annotations"] = annotations;
        }
        let _ = self.create(Kind::Pod, ns, new);
    }

    /// Creates or removes `<set>-<ordinal>` pods to match `spec.replicas`, and
    /// updates the set's status. New pods start Pending and run after `start_delay`.
    fn reconcile(&self, ns: &str, set: &str) {
        let Ok(sts) = self.get(Kind::StatefulSet, ns, set) else {
            return;
        };
        let want = sts["spec"]["replicas"].as_u64().unwrap_or(1);
        let (pods, _) = self.list(Kind::Pod, Some(ns));
        let owned: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["kube-emulator/statefulset"].as_str() == Some(set))
            .collect();
        for ordinal in 0..want {
            let name = format!("{set}-{ordinal}");
            if owned
                .iter()
                .any(|p| p["metadata"]["name"].as_str() == Some(name.as_str()))
            {
                continue;
            }
            let mut pod = json!({
                "metadata": sts["spec"]["template"]["metadata"].clone(),
                "spec": sts["spec"]["template"]["spec"].clone(),
            });
            pod["metadata"]["name"] = json!(name);
            // As the StatefulSet controller does: the set controls its pods.
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": set,
                "uid": sts["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
            }]);
            if pod["metadata"]["labels"].is_null() {
                pod["metadata"]["labels"] = json!({});
            }
            let labels = &mut pod["metadata"]["labels"];
            labels["kube-emulator/statefulset"] = json!(set);
            labels["statefulset.kubernetes.io/pod-name"] = json!(name);
            labels["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
            if pod["metadata"]["annotations"].is_null() {
                pod["metadata"]["annotations"] = json!({});
            }
            let delay = self.start_delay;
            if !delay.is_zero() {
                pod["metadata"]["annotations"]["kube-emulator/phase"] = json!("Pending");
            }
            if self.create(Kind::Pod, ns, pod).is_ok() && !delay.is_zero() {
                let store = self.clone();
                let (ns, name) = (ns.to_owned(), name.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = store.update(Kind::Pod, &ns, &name, |p| set_pod_phase(p, "Running"));
                    store.refresh_status(&ns, &name);
                });
            }
        }
        for pod in owned {
            let ordinal = pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"]
                .as_str()
                .and_then(|o| o.parse::<u64>().ok())
                .unwrap_or(0);
            if ordinal >= want
                && let Some(name) = pod["metadata"]["name"].as_str()
            {
                let _ = self.delete(Kind::Pod, ns, name);
            }
        }
        self.set_status(ns, set);
    }

    /// Re-derives a set's status after one of its pods changed.
    fn refresh_status(&self, ns: &str, pod: &str) {
        if let Some((set, _)) = pod.rsplit_once('-') {
            self.set_status(ns, set);
        }
    }

    fn set_status(&self, ns: &str, set: &str) {
        let (pods, _) = self.list(Kind::Pod, Some(ns));
        let owned: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["kube-emulator/statefulset"].as_str() == Some(set))
            .collect();
        let ready = owned
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        let total = owned.len();
        let _ = self.update_status_only(ns, set, total, ready);
    }

    fn update_status_only(
        &self,
        ns: &str,
        set: &str,
        total: usize,
        ready: usize,
    ) -> Result<(), StoreError> {
        let updated = {
            let mut inner = self.inner.lock().expect("store lock");
            inner.resource_version += 1;
            let rv = inner.resource_version;
            let Some(object) =
                inner
                    .objects
                    .get_mut(&(Kind::StatefulSet, ns.to_owned(), set.to_owned()))
            else {
                return Ok(());
            };
            object["status"] = json!({
                "replicas": total, "readyReplicas": ready, "availableReplicas": ready,
                "currentReplicas": total, "observedGeneration": object["metadata"]["generation"].clone(),
            });
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            object.clone()
        };
        self.publish(Kind::StatefulSet, ns, set, "MODIFIED", &updated);
        Ok(())
    }
}

/// Sets `status` as the kubelet would report it for `phase`.
pub fn set_pod_phase(pod: &mut Value, phase: &str) {
    let running = phase == "Running";
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let state = if running {
                json!({"running": {"startedAt": now()}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            // imageID and containerID: always present from a real kubelet, and clients
            // (python-kubernetes) refuse statuses without imageID.
            let image = c["image"].as_str().unwrap_or("emulated");
            json!({"name": c["name"], "image": image, "imageID": format!("emulated://{image}"),
                   "containerID": format!("emulated://{}", uid()), "ready": running, "started": running,
                   "restartCount": 0, "state": state})
        })
        .collect();
    let ready = if running { "True" } else { "False" };
    pod["status"] = json!({
        "phase": phase,
        "podIP": "127.0.0.1",
        "hostIP": "127.0.0.1",
        "startTime": now(),
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": ready},
            {"type": "ContainersReady", "status": ready},
            {"type": "PodScheduled", "status": "True"},
        ],
        "containerStatuses": containers,
    });
}
