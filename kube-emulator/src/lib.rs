//! A Kubernetes API emulator for tests and local trials. It speaks the real wire
//! protocols (discovery, pods and statefulsets with watch and scale, pods/exec and
//! pods/portforward over WebSocket) and runs real local processes: a pod is a
//! directory, its container ports are the host's loopback ports. The real `kubectl`
//! and client libraries can use it unchanged. Never part of the shipped gateway.

mod discovery;
mod exec;
mod http;
mod objects;
mod portforward;
pub mod rbac;
mod rootfs;
mod selector;
mod table;
mod watch;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use objects::{Kind, Store, StoreError};
pub use rbac::{Rbac, ServiceAccount};

pub struct Options {
    pub listen: SocketAddr,
    /// Pods' directories live under here (`<root>/<namespace>/<pod>`).
    pub root: PathBuf,
    /// Bearer token clients must present; None accepts anyone. Either way it is
    /// unrestricted (an admin's).
    pub token: Option<String>,
    /// Tokens that authenticate as ServiceAccounts, and the RBAC policy their
    /// requests are authorized by (see `rbac`). None: no such tokens.
    pub rbac: Option<Rbac>,
    /// How long StatefulSet pods stay Pending before they run.
    pub start_delay: Duration,
}

/// A running emulator. Stops when dropped.
pub struct Emulator {
    pub addr: SocketAddr,
    pub store: Store,
    pub token: Option<String>,
    state: http::Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Emulator {
    pub async fn start(options: Options) -> std::io::Result<Emulator> {
        std::fs::create_dir_all(&options.root)?;
        let listener = tokio::net::TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let store = Store::new(options.root.canonicalize()?, options.start_delay);
        let state = Arc::new(http::AppState {
            store: store.clone(),
            token: options.token.clone(),
            rbac: RwLock::new(options.rbac.map(Arc::new)),
        });
        let app = http::router(state.clone());
        // Go's net package (the real API server) sets TCP_NODELAY on every connection.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "emulator server failed");
            }
        });
        Ok(Emulator {
            addr,
            store,
            token: options.token,
            state,
            task,
        })
    }

    /// Replaces the RBAC policy (and its ServiceAccount tokens) from the next request
    /// on; requests already admitted (an open watch or stream) carry on, as on a real
    /// API server. None: ServiceAccount tokens are no longer known.
    pub fn set_rbac(&self, rbac: Option<Rbac>) {
        *self.state.rbac.write().unwrap_or_else(|e| e.into_inner()) = rbac.map(Arc::new);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this emulator (namespace `default`), with the admin
    /// token when there is one.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_with_token(self.token.as_deref())
    }

    /// A kubeconfig pointing at this emulator whose user presents `token` (a
    /// ServiceAccount's, say).
    pub fn kubeconfig_with_token(&self, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => "    {}\n".to_owned(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\n\
             contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\n\
             current-context: emulator\nusers:\n- name: emulator\n  user:\n{user}",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.kubeconfig())
    }

    /// The directory a pod's processes run in.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.store.root.join(namespace).join(pod)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
