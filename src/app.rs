//! Assembly: builds every stage from a `Config`, binds the listeners, and runs the SSH
//! server and the API until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::backend::Backend;
use crate::backend::kubernetes::KubernetesBackend;
use crate::backend::local::LocalBackend;
use crate::certs::{self, Authority, Trust};
use crate::config::{BackendConfig, Config, ControlConfig};
use crate::conn::Registry;
use crate::conn::activity::ActivityTracker;
use crate::conn::admission::Admission;
use crate::conn::events::{Events, LogSubscriber};
use crate::conn::tls::CertFiles;
use crate::control::{
    ControlPlane, HttpControlPlane, KubernetesControlPlane, StaticControlPlane, Workloads,
};
use crate::helper::Placer;
use crate::kubernetes;
use crate::metrics::MetricsSubscriber;
use crate::remotes::{Cluster, Remotes};
use crate::route::Routing;
use crate::ssh::{self, Front, Gateway, hostkeys};
use crate::store::Store;

/// How long a shutdown waits for connections to end after telling them to.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A gateway whose listeners are bound but not yet serving.
pub struct Bound {
    pub ssh_addr: SocketAddr,
    pub api_addr: SocketAddr,
    ssh_listener: TcpListener,
    api_listener: TcpListener,
    /// The HTTP CONNECT front, when configured.
    connect_listener: Option<TcpListener>,
    /// The TLS front and its certificate, when configured.
    tls_front: Option<(TcpListener, Arc<CertFiles>)>,
    config: Config,
    store: Store,
    host_keys: hostkeys::HostKeys,
    /// The gateway's user CA, when it issues certificates.
    authority: Option<Arc<Authority>>,
    /// The CAs whose user certificates log in.
    trust: Trust,
}

/// Opens the store (migrating it), loads host keys and binds both listeners, so
/// start-up errors surface before anything is announced.
pub async fn bind(config: Config) -> anyhow::Result<Bound> {
    let db = &config.database;
    let store = if db.migrate_on_start {
        Store::open(&db.url, db.max_connections).await
    } else {
        Store::open_migrated(&db.url, db.max_connections).await
    }
    .context("opening the database")?;
    let host_keys = hostkeys::load_all(&config.ssh.host_key_dir)?;
    // Made (or tightened) once, here, so a directory the gateway cannot use stops it
    // at start rather than leaving every session unrecorded.
    if config.recording.any() {
        crate::store::ensure_private_dir(&config.recording.dir)
            .context("preparing [recording] dir")?;
    }
    let (authority, trust) = match &config.certificates {
        Some(c) => certs::load(c)?,
        None => (None, Trust::default()),
    };
    let ssh_listener = TcpListener::bind(config.ssh.listen)
        .await
        .with_context(|| format!("binding SSH listener {}", config.ssh.listen))?;
    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding API listener {}", config.api.listen))?;
    let connect_listener = match &config.fronts.connect {
        Some(front) => Some(
            TcpListener::bind(front.listen)
                .await
                .with_context(|| format!("binding the CONNECT front {}", front.listen))?,
        ),
        None => None,
    };
    let tls_front = match &config.fronts.tls {
        Some(front) => Some((
            TcpListener::bind(front.listen)
                .await
                .with_context(|| format!("binding the TLS front {}", front.listen))?,
            CertFiles::load(&front.cert_file, &front.key_file)?,
        )),
        None => None,
    };
    Ok(Bound {
        ssh_addr: ssh_listener.local_addr()?,
        api_addr: api_listener.local_addr()?,
        ssh_listener,
        api_listener,
        connect_listener,
        tls_front,
        config,
        store,
        host_keys,
        authority,
        trust,
    })
}

impl Bound {
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Bound {
            ssh_listener,
            api_listener,
            connect_listener,
            tls_front,
            mut config,
            store,
            ssh_addr,
            api_addr,
            host_keys,
            authority,
            trust,
        } = self;
        let kube = match &config.kubernetes {
            Some(k) => Some((
                kubernetes::client(k)
                    .await
                    .context("connecting to Kubernetes")?,
                k.clone(),
            )),
            None => None,
        };
        // Every task of the gateway's, made before the parts that spawn them: the
        // registry drains it, `stop` ends the long-running ones.
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let control: Arc<dyn ControlPlane> = match (&config.control, &kube) {
            (ControlConfig::Static { sandbox_root }, _) => {
                Arc::new(StaticControlPlane::new(store.clone(), sandbox_root.clone()))
            }
            (ControlConfig::Kubernetes, Some((client, k))) => {
                watch_access(client, k, None, &store, &tasks, &stop);
                Arc::new(
                    KubernetesControlPlane::new(client.clone(), k.clone(), store.clone())
                        .owned_by(tasks.clone(), stop.clone()),
                )
            }
            (ControlConfig::Kubernetes, None) => {
                anyhow::bail!("the kubernetes control plane needs a [kubernetes] section")
            }
            (ControlConfig::Http(http), kube) => {
                let workloads = match (&config.backend, kube) {
                    (BackendConfig::Local { .. }, _) => Workloads::Local {
                        root: http.sandbox_root.clone(),
                    },
                    (BackendConfig::Kubernetes, Some((client, k))) => Workloads::Pods(Arc::new(
                        KubernetesControlPlane::new(client.clone(), k.clone(), store.clone()),
                    )),
                    (BackendConfig::Kubernetes, None) => {
                        anyhow::bail!("the kubernetes backend needs a [kubernetes] section")
                    }
                };
                Arc::new(
                    HttpControlPlane::new(http, workloads)
                        .context("setting up the HTTP control plane")?
                        .owned_by(tasks.clone(), stop.clone()),
                )
            }
        };
        let backend: Arc<dyn Backend> = match (&config.backend, &kube) {
            (BackendConfig::Local { shell }, _) => Arc::new(LocalBackend::new(shell.clone())),
            (BackendConfig::Kubernetes, Some((client, k))) => {
                Arc::new(KubernetesBackend::new(client.clone(), k.request_timeout()))
            }
            (BackendConfig::Kubernetes, None) => {
                anyhow::bail!("the kubernetes backend needs a [kubernetes] section")
            }
        };
        let mut remotes = Remotes::new(Cluster {
            control: control.clone(),
            backend,
        });
        // Each remote: its own cluster client, control plane and backend, built like
        // the main ones (config validation made sure both are Kubernetes).
        for name in &config.routing.remotes {
            let Some(k) = config.remotes.get(name) else {
                anyhow::bail!("remote {name:?} has no [remotes.{name}] section");
            };
            let client = kubernetes::client(k)
                .await
                .with_context(|| format!("connecting to the cluster of remote {name:?}"))?;
            watch_access(&client, k, Some(name.clone()), &store, &tasks, &stop);
            remotes.insert(
                name,
                Cluster {
                    control: Arc::new(
                        KubernetesControlPlane::new(client.clone(), k.clone(), store.clone())
                            .owned_by(tasks.clone(), stop.clone()),
                    ),
                    backend: Arc::new(KubernetesBackend::new(client, k.request_timeout())),
                },
            );
        }
        let remotes = Arc::new(remotes);
        if config.ssh.public_port == 0 {
            config.ssh.public_port = ssh_addr.port();
        }
        let russh_config = Arc::new(ssh::russh_config(&config.ssh, &host_keys));
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fd_limit = raise_fd_limit();
        let limits = config.admission.limits(config.ssh.max_connections)?;
        // Each SSH connection holds one descriptor, plus one or three per channel
        // (a Kubernetes stream, or a local process's pipes); leave room for those and
        // for the API, the database pool and the cluster client.
        if let Some(limit) = fd_limit
            && (config.ssh.max_connections as u64) * 2 + 256 > limit
        {
            tracing::warn!(
                max_connections = config.ssh.max_connections,
                fd_limit = limit,
                "ssh.max_connections is high for this process's file descriptor limit; connections past it will be refused at accept"
            );
        }
        let activity = ActivityTracker::new(
            remotes.clone(),
            Duration::from_secs(config.activity.heartbeat_secs),
            (config.activity.pause_after_idle_secs > 0)
                .then(|| Duration::from_secs(config.activity.pause_after_idle_secs)),
        );
        let mut subscribers: Vec<Arc<dyn crate::conn::events::Subscriber>> = vec![
            Arc::new(LogSubscriber::default()),
            Arc::new(MetricsSubscriber),
            activity.clone(),
        ];
        // The audit writer outlives the drain (its last records are the drain's), so
        // it has its own stop, given after the registry has drained.
        let audit_done = CancellationToken::new();
        let instance = crate::audit::instance_id();
        let mut audit_reader = None;
        let audit_writer = if config.audit.enabled {
            let (subscriber, writer) = crate::audit::audit(store.clone(), instance.clone());
            audit_reader = Some(subscriber.clone());
            subscribers.push(subscriber);
            Some(tokio::spawn(writer.write(audit_done.clone())))
        } else {
            None
        };
        let registry = Registry::with_tracker(Events::new(subscribers), tasks);
        if config.audit.enabled && config.audit.retention_days > 0 {
            registry.spawn(crate::audit::prune(
                store.clone(),
                Duration::from_secs(config.audit.retention_days * 86_400),
                stop.clone(),
            ));
        }
        if config.recording.any() && config.recording.retention_days > 0 {
            registry.spawn(crate::recording::prune(
                config.recording.dir.clone(),
                Duration::from_secs(config.recording.retention_days * 86_400),
                stop.clone(),
            ));
        }
        if config.audit.enabled && config.audit.orphan_after_secs > 0 {
            registry.spawn(crate::audit::liveness(
                store.clone(),
                instance,
                Duration::from_secs(config.audit.orphan_after_secs),
                stop.clone(),
            ));
        }
        activity.attach(&registry);
        registry.spawn(activity.clone().run(stop.clone()));
        if config.activity.idle_timeout_secs > 0 {
            registry.spawn(activity.clone().close_idle(
                Duration::from_secs(config.activity.idle_timeout_secs),
                stop.clone(),
            ));
        }
        registry.spawn(release_memory_after_closes(registry.clone(), stop.clone()));
        let gateway = Arc::new(Gateway {
            settings: config.ssh.clone(),
            keys: Arc::new(store.clone()),
            remotes,
            registry: registry.clone(),
            admission: Admission::new(limits),
            sftp_server: config.sftp.server,
            placer: Arc::new(Placer::new(config.sftp.helper_dir.as_deref())),
            routing: Routing::new(config.routing.domain.as_deref())
                .with_remotes(&config.routing.remotes),
            trust,
            proxy_sources: config.ssh.proxy_sources()?,
            recording: config.recording.clone(),
            tls: match &tls_front {
                Some((_, certs)) => Some(certs.acceptor()?),
                None => None,
            },
        });
        if let Some((_, certs)) = &tls_front {
            registry.spawn(certs.clone().watch(stop.clone()));
        }
        // Subscribed before the listener starts, so nothing it relays is missed.
        registry.spawn(ssh::revoke::run(
            gateway.clone(),
            store.changes(),
            Duration::from_secs(config.revocation.recheck_secs),
            stop.clone(),
        ));
        registry.spawn(store.clone().listen(stop.clone()));
        ssh::log_listening(ssh_addr, &host_keys);
        tracing::info!(addr = %api_addr, "API listening");
        let api_state = Arc::new(ApiState {
            draining: draining.clone(),
            audit: audit_reader,
            store: store.clone(),
            control: control.clone(),
            public_host: config.ssh.public_host.clone(),
            public_port: config.ssh.public_port,
            authority,
            domain: config.routing.domain.clone(),
            host_keys: host_keys.public_keys(),
            fronts: api::AdvertisedFronts {
                tls: config
                    .fronts
                    .tls
                    .as_ref()
                    .and_then(|f| f.public_address.clone()),
                connect: config
                    .fronts
                    .connect
                    .as_ref()
                    .and_then(|f| f.public_address.clone()),
            },
            recordings: config.recording.any().then(|| config.recording.dir.clone()),
            terminal_login: config.api.header_timeout(),
            terminal: config.api.terminal.then(|| {
                Arc::new(ssh::loopback::Loopback::new(
                    russh_config.clone(),
                    gateway.clone(),
                ))
            }),
        });
        let app = api::router(api_state, &config.api);
        let api = api::serve(
            api_listener,
            app,
            &config.api,
            stop.clone().cancelled_owned(),
        );
        // The listeners stop at the first signal; the API serves on through the
        // drain, so probes see `/readyz` turn 503.
        let accepting = CancellationToken::new();
        let connect = async {
            match connect_listener {
                Some(listener) => {
                    tracing::info!(addr = %listener.local_addr()?, "HTTP CONNECT front listening");
                    ssh::serve(
                        listener,
                        Front::Connect,
                        russh_config.clone(),
                        gateway.clone(),
                        accepting.clone(),
                    )
                    .await
                }
                None => std::future::pending().await,
            }
        };
        let ssh = ssh::serve(
            ssh_listener,
            if config.ssh.proxy_protocol {
                Front::Proxied
            } else {
                Front::Plain
            },
            russh_config.clone(),
            gateway.clone(),
            accepting.clone(),
        );
        let tls = async {
            match tls_front {
                Some((listener, _)) => {
                    tracing::info!(addr = %listener.local_addr()?, "TLS front listening");
                    ssh::serve(
                        listener,
                        Front::Tls,
                        russh_config.clone(),
                        gateway.clone(),
                        accepting.clone(),
                    )
                    .await
                }
                None => std::future::pending().await,
            }
        };
        let mut signals = Signals::new()?;
        // Boxed so they can be dropped at the first signal: that closes the
        // listening sockets, and new connections are refused rather than queued.
        let mut listeners = Box::pin(async {
            tokio::select! {
                r = ssh => r.context("SSH listener failed"),
                r = tls => r.context("TLS front failed"),
                r = connect => r.context("CONNECT front failed"),
            }
        });
        tokio::pin!(api);
        tokio::select! {
            r = &mut listeners => r?,
            r = &mut api => r.context("API server failed")?,
            _ = signals.next() => {}
        }
        // Drain: not ready, stop accepting, tell every session why, let them finish
        // for up to drain_timeout_secs (a second signal cuts that short), then end
        // the rest, telling each client, and wait (bounded) for every task.
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        accepting.cancel();
        drop(listeners);
        let drain_for = Duration::from_secs(config.ssh.drain_timeout_secs);
        tracing::info!(
            connections = registry.len(),
            drain_timeout_secs = drain_for.as_secs(),
            "shutting down: draining connections"
        );
        let mut api_ended = false;
        if !drain_for.is_zero() && !registry.is_empty() {
            registry.notify_sessions(&format!(
                "this gateway is restarting; this session may run for {} s more, then reconnect",
                drain_for.as_secs()
            ));
            let deadline = tokio::time::Instant::now() + drain_for;
            let mut at_once = false;
            while !registry.is_empty() && !at_once {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = signals.next() => at_once = true,
                    // Polled so it keeps answering probes; its end is no reason to
                    // stop draining.
                    _ = &mut api, if !api_ended => api_ended = true,
                }
            }
            if at_once {
                tracing::warn!(connections = registry.len(), "second signal: exiting now");
                std::process::exit(0);
            }
        }
        stop.cancel();
        if !registry.drain(DRAIN_GRACE).await {
            tracing::warn!(tasks = registry.tasks(), "drain timed out; exiting anyway");
        }
        if !api_ended {
            let _ = tokio::time::timeout(DRAIN_GRACE, api).await;
        }
        audit_done.cancel();
        if let Some(writer) = audit_writer {
            let _ = tokio::time::timeout(DRAIN_GRACE * 2, writer).await;
        }
        store.close().await;
        Ok(())
    }
}

/// How often `release_memory_after_closes` looks at the connection count.
const TRIM_CHECK: Duration = Duration::from_secs(5);
/// Connections that must have gone since the last high mark before memory is handed
/// back; below this there is too little to gain for a walk over every arena.
const TRIM_AFTER_CLOSED: usize = 256;

/// glibc malloc keeps what a burst of connections freed in its arenas for good (a
/// gateway that held 10,000 idle connections stayed at its peak RSS after they all
/// closed). Once many connections have gone, `malloc_trim` hands the free pages back.
/// Not done on every close: each call walks all arenas under their locks.
async fn release_memory_after_closes(registry: Arc<Registry>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut high = 0;
    // Work a burst of closes leaves behind frees its memory after the first trim (the
    // audit writer storing their records, idle SQLite connections closing, each with
    // its page cache): trim again at each of the next checks, for half a minute.
    let mut again = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        high = high.max(registry.take_peak());
        let now = registry.len();
        if high.saturating_sub(now) >= TRIM_AFTER_CLOSED {
            high = now;
            again = 6;
            let _ = tokio::task::spawn_blocking(trim_heap).await;
        } else if again > 0 {
            again -= 1;
            let _ = tokio::task::spawn_blocking(trim_heap).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// Above this size glibc serves an allocation with its own `mmap`.
const MMAP_THRESHOLD: i32 = 1 << 20;
/// Free memory at the top of an arena that glibc keeps instead of handing it back.
const TRIM_THRESHOLD: i32 = 4 << 20;

/// Fixes glibc's trim and mmap thresholds instead of its defaults (128 KiB each at
/// start, then raised as mmap'd blocks are freed). Streaming moves 64 KiB blocks
/// (SSH packets, WebSocket frames) through short-lived allocations; with the defaults
/// each free that left more than 128 KiB at an arena's top was handed back with
/// `madvise`, and the next allocation took fresh pages: page faults and kernel
/// zeroing were a quarter of the gateway's CPU on a Kubernetes upload (perf,
/// 2026-12-01). With these, an arena keeps at most 4 MiB of free top.
///
/// `malloc_trim` hands back free pages inside an arena but never the free top of an
/// arena other than the main one (glibc trims those only on a later `free` there), so
/// every arena can keep up to `TRIM_THRESHOLD` after a burst. glibc makes up to eight
/// arenas per core, one per thread that allocates: the SQLite pool's ten worker
/// threads each got their own, and 30 s after 10,000 connections closed thirteen
/// arenas held 17 MiB of free tops between them (smaps; heaptrack counted 1.5 MiB
/// live). Two arenas per core keep each runtime worker on an arena of its own while
/// the store's threads, which allocate little, share. `MALLOC_ARENA_MAX` in the
/// environment still decides if set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let arenas = i32::try_from(2 * cores).unwrap_or(i32::MAX).max(2);
    // SAFETY: mallopt only sets allocator parameters; any value is accepted.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// SIGTERM and SIGINT, each time one arrives.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as a server that holds one socket
/// per connection should, and reports what it got.
fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    tracing::info!(fd_limit = limit, was = soft, "file descriptor limit");
    Some(limit)
}

/// A Kubernetes control plane's access lives on cluster objects: watch them, so an
/// owner or members edit ends the sessions it refuses at once (not only at the next
/// periodic re-check).
fn watch_access(
    client: &kube::Client,
    config: &crate::config::KubernetesConfig,
    remote: Option<String>,
    store: &Store,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    if !config.watch_access {
        return;
    }
    crate::control::kube_access::AccessWatch {
        client: client.clone(),
        config: config.clone(),
        remote,
        store: store.clone(),
    }
    .spawn(tasks, stop.clone());
}
