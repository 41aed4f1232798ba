//! The Kubernetes path under test: a kube-emulator on its own runtime, and a gateway
//! (`serve`) whose backend and control plane point at it through a kubeconfig.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube_emulator::{Emulator, Kind, Options};
use serde_json::{Value, json};

use super::{KeyPair, Serve, free_port};

/// The emulator on a runtime thread of its own, so tests can block on clients.
pub struct EmulatorThread {
    emulator: Option<Emulator>,
    runtime: tokio::runtime::Runtime,
}

impl EmulatorThread {
    pub fn start(root: &Path, kubeconfig: &Path) -> Self {
        Self::start_delayed(root, kubeconfig, Duration::ZERO)
    }

    /// Pods a StatefulSet creates turn Running and Ready after `start_delay`.
    pub fn start_delayed(root: &Path, kubeconfig: &Path, start_delay: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime
            .block_on(Emulator::start(Options {
                listen: "127.0.0.1:0".parse().unwrap(),
                root: root.to_owned(),
                token: None,
                rbac: None,
                start_delay,
            }))
            .unwrap();
        emulator.write_kubeconfig(kubeconfig).unwrap();
        EmulatorThread {
            emulator: Some(emulator),
            runtime,
        }
    }

    pub fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().expect("running")
    }

    /// Authorizes ServiceAccount tokens by `rbac` from the next request on (None:
    /// they are unknown again); the test's own calls stay unrestricted.
    pub fn set_rbac(&self, rbac: Option<kube_emulator::Rbac>) {
        self.emulator().set_rbac(rbac);
    }

    /// A Running pod with one container `main`.
    pub fn pod(&self, ns: &str, name: &str, labels: Value, annotations: Value) {
        let _guard = self.runtime.enter();
        let pod = json!({
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
        });
        self.emulator().store.create(Kind::Pod, ns, pod).unwrap();
    }

    /// A pod from a full manifest (`metadata`, `spec`); the phase comes from the
    /// `kube-emulator/phase` annotation (default Running).
    pub fn create_pod(&self, ns: &str, manifest: Value) {
        let _guard = self.runtime.enter();
        self.emulator()
            .store
            .create(Kind::Pod, ns, manifest)
            .unwrap();
    }

    /// Creates any object the emulator stores (a StatefulSet, say).
    pub fn create(&self, kind: Kind, ns: &str, manifest: Value) {
        let _guard = self.runtime.enter();
        self.emulator().store.create(kind, ns, manifest).unwrap();
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Value {
        let _guard = self.runtime.enter();
        self.emulator().store.get(kind, ns, name).unwrap()
    }

    /// Changes a stored pod, as `kubectl edit` would.
    pub fn update_pod(&self, ns: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let _guard = self.runtime.enter();
        self.emulator()
            .store
            .update(Kind::Pod, ns, name, change)
            .unwrap();
    }

    /// Changes any stored object (a StatefulSet's replicas, say), as `kubectl edit`
    /// would.
    pub fn update(&self, kind: Kind, ns: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let _guard = self.runtime.enter();
        self.emulator()
            .store
            .update(kind, ns, name, change)
            .unwrap();
    }

    pub fn delete_pod(&self, ns: &str, name: &str) {
        let _guard = self.runtime.enter();
        self.emulator().store.delete(Kind::Pod, ns, name).unwrap();
    }

    /// The next exec or port-forward for this pod lands in a new pod of the same name
    /// with `annotations` (`None`: the old pod's; see `Store::replace_pod_at_next_stream`).
    pub fn replace_pod_at_next_stream(&self, ns: &str, name: &str, annotations: Option<Value>) {
        self.emulator()
            .store
            .replace_pod_at_next_stream(ns, name, annotations);
    }

    pub fn pod_dir(&self, ns: &str, name: &str) -> PathBuf {
        self.emulator().pod_dir(ns, name)
    }
}

impl Drop for EmulatorThread {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        drop(self.emulator.take());
    }
}

/// A gateway on the Kubernetes backend, with users alice and bob.
pub struct KubeGateway {
    pub emu: EmulatorThread,
    /// With `start_remotes`: one more emulator per remote, in the order named.
    pub remotes: Vec<(String, EmulatorThread)>,
    /// With `start_remotes`: the HTTP CONNECT front, whose host names route.
    pub connect_port: u16,
    pub ssh_port: u16,
    pub api_port: u16,
    pub alice: KeyPair,
    pub bob: KeyPair,
    pub dir: tempfile::TempDir,
    _server: Serve,
}

impl KubeGateway {
    /// `kubeconfig` overrides the emulator's (to point the gateway somewhere else).
    pub fn start(namespaces: &[&str], kubeconfig: Option<&Path>) -> Self {
        Self::start_with(namespaces, kubeconfig, "")
    }

    /// With more configuration (whole TOML sections, such as `[sftp]`).
    pub fn start_with(namespaces: &[&str], kubeconfig: Option<&Path>, extra: &str) -> Self {
        Self::start_full(namespaces, kubeconfig, extra, Duration::ZERO)
    }

    /// Everything: more configuration, and the emulator's pod start delay.
    pub fn start_full(
        namespaces: &[&str],
        kubeconfig: Option<&Path>,
        extra: &str,
        start_delay: Duration,
    ) -> Self {
        Self::start_clusters(namespaces, kubeconfig, extra, start_delay, &[])
    }

    /// The main cluster plus one emulator per name in `remotes`, each a remote
    /// (`[routing] remotes`, `[remotes.<name>]` with that emulator's kubeconfig and
    /// `namespaces`), under the domain `domain`, with an HTTP CONNECT front and more
    /// configuration (`extra`, whole TOML sections).
    pub fn start_remotes(namespaces: &[&str], domain: &str, remotes: &[&str], extra: &str) -> Self {
        Self::start_clusters(
            namespaces,
            None,
            &format!("[routing]\ndomain = \"{domain}\"\nremotes = {remotes:?}\n{extra}"),
            Duration::ZERO,
            remotes,
        )
    }

    fn start_clusters(
        namespaces: &[&str],
        kubeconfig: Option<&Path>,
        extra: &str,
        start_delay: Duration,
        remote_names: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let emu = EmulatorThread::start_delayed(
            &dir.path().join("cluster"),
            &dir.path().join("kubeconfig"),
            start_delay,
        );
        let (ssh_port, api_port) = (free_port(), free_port());
        let config = dir.path().join("gateway.toml");
        let kubeconfig = kubeconfig
            .map(Path::to_owned)
            .unwrap_or_else(|| dir.path().join("kubeconfig"));
        let mut remotes = Vec::new();
        let mut remote_sections = String::new();
        let mut connect_port = 0;
        if !remote_names.is_empty() {
            connect_port = free_port();
            remote_sections +=
                &format!("[fronts.connect]\nlisten = \"127.0.0.1:{connect_port}\"\n");
        }
        for name in remote_names {
            let kc = dir.path().join(format!("kubeconfig-{name}"));
            let emulator = EmulatorThread::start_delayed(
                &dir.path().join(format!("cluster-{name}")),
                &kc,
                start_delay,
            );
            remote_sections += &format!(
                "[remotes.{name}]\nkubeconfig = \"{}\"\nnamespaces = {namespaces:?}\nrequest_timeout_secs = 3\n",
                kc.display()
            );
            remotes.push((name.to_string(), emulator));
        }
        std::fs::write(
            &config,
            format!(
                "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
                 [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/gw.db\"\n\
                 [backend]\nkind = \"kubernetes\"\n[control]\nkind = \"kubernetes\"\n\
                 [kubernetes]\nkubeconfig = \"{kc}\"\nnamespaces = {ns:?}\nrequest_timeout_secs = 3\n{extra}\n{remote_sections}",
                d = dir.path().display(),
                kc = kubeconfig.display(),
                ns = namespaces,
            ),
        )
        .unwrap();
        let db = format!("sqlite://{}/gw.db", dir.path().display());
        let mut keys = super::users_with_keys(&config, &db, dir.path(), &["alice", "bob"]);
        let server = Serve::start(&config, &dir.path().join("gateway.log"), api_port);
        let bob = keys.pop().unwrap();
        let alice = keys.pop().unwrap();
        KubeGateway {
            emu,
            remotes,
            connect_port,
            ssh_port,
            api_port,
            alice,
            bob,
            dir,
            _server: server,
        }
    }

    /// The emulator of remote `name`.
    pub fn remote(&self, name: &str) -> &EmulatorThread {
        &self
            .remotes
            .iter()
            .find(|(n, _)| n == name)
            .expect("a remote started with the gateway")
            .1
    }

    /// `ssh` as `key`'s owner through the CONNECT front (`ssh-gateway proxy
    /// --connect`), so the host name given as destination routes.
    pub fn ssh_by_host(&self, key: &KeyPair) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(super::Gateway::client_opts_for(&key.private))
            .args([
                "-o",
                &format!(
                    "ProxyCommand={} proxy --connect 127.0.0.1:{} %h %p",
                    super::BIN,
                    self.connect_port
                ),
            ]);
        cmd
    }

    pub fn ssh(&self, key: &KeyPair) -> Command {
        super::client("ssh", key, self.ssh_port)
    }

    pub fn scp(&self, key: &KeyPair) -> Command {
        super::client("scp", key, self.ssh_port)
    }

    pub fn sftp(&self, key: &KeyPair) -> Command {
        super::client("sftp", key, self.ssh_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

/// Labels and the owner annotation of a sandbox pod.
pub fn sandbox(id: &str, owner: &str) -> (Value, Value) {
    (
        json!({"ssh-gateway.io/sandbox": id}),
        json!({"ssh-gateway.io/owner": owner}),
    )
}

/// Labels and the owner annotation of replica `replica` of a model deployment.
pub fn model_replica(model: &str, deployment: &str, replica: u32, owner: &str) -> (Value, Value) {
    (
        json!({
            "ssh-gateway.io/model": model,
            "ssh-gateway.io/deployment": deployment,
            "ssh-gateway.io/replica": replica.to_string(),
        }),
        json!({"ssh-gateway.io/owner": owner}),
    )
}
