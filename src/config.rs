//! Start-up stage: one typed configuration, read from a TOML file, overridden from the
//! environment, validated before anything listens. Every later stage gets plain values.
//! The fuzz target fuzz/fuzz_targets/config.rs compiles this file alone, with
//! conn/limits.rs: it may use serde, toml, thiserror and those two, nothing else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Environment variables with this prefix override file values:
/// `SSH_GATEWAY__SSH__LISTEN=0.0.0.0:2222` sets `[ssh] listen`.
pub const ENV_PREFIX: &str = "SSH_GATEWAY__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ssh: SshConfig,
    #[serde(default)]
    pub api: ApiConfig,
    /// Pre-authentication caps and penalties for the SSH listener.
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// Which SFTP server sessions get, and where the in-workload helper may go.
    #[serde(default)]
    pub sftp: SftpConfig,
    /// How the gateway reports use of targets to the control plane.
    #[serde(default)]
    pub activity: ActivityConfig,
    /// How live connections learn that their access was taken away.
    #[serde(default)]
    pub revocation: RevocationConfig,
    /// The audit trail of connections and channels in the store.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Recording PTY sessions (asciicast v2), off by default.
    #[serde(default)]
    pub recording: RecordingConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub backend: BackendConfig,
    #[serde(default)]
    pub control: ControlConfig,
    /// How to reach the cluster, when the backend or control plane is `kubernetes`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    /// `[remotes.<name>]`: further clusters, one per name in `[routing] remotes`,
    /// with the fields of `[kubernetes]`; `<target>.<name>.<domain>` reaches them.
    #[serde(default)]
    pub remotes: std::collections::BTreeMap<String, KubernetesConfig>,
    /// What host names route (a front passes them on).
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Extra listeners that learn a host name before SSH starts.
    #[serde(default)]
    pub fronts: FrontsConfig,
    /// Short-lived user certificates: the gateway's own CA, and other trusted CAs.
    #[serde(default)]
    pub certificates: Option<CertificatesConfig>,
}

/// `[certificates]`. With `ca_key_file`, the gateway issues certificates
/// (`POST /users/me/ssh-certificates`) and accepts them; with `trusted_ca_files`, it
/// accepts certificates other CAs signed for its users (principal = user name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatesConfig {
    /// The user CA's OpenSSH private key (mode 0600). Generated there on first start
    /// if absent; replicas of one region must share it (a mounted Secret).
    pub ca_key_file: Option<PathBuf>,
    /// Longest lifetime a certificate may be issued for (default 16 h).
    #[serde(default = "default_cert_max_ttl")]
    pub max_ttl_secs: u64,
    /// How far before the time of issue a certificate becomes valid, so that a
    /// replica or client whose clock lags still accepts it (default 60 s).
    #[serde(default = "default_cert_skew")]
    pub clock_skew_secs: u64,
    /// Files of CA public keys (one OpenSSH public key line each, `#` comments
    /// allowed) whose user certificates are also accepted.
    #[serde(default)]
    pub trusted_ca_files: Vec<PathBuf>,
}

fn default_cert_max_ttl() -> u64 {
    16 * 3600
}
fn default_cert_skew() -> u64 {
    60
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// `ssh.example.com`: `<target>.ssh.example.com` reaches `<target>`.
    pub domain: Option<String>,
    /// Further clusters this gateway reaches, each with a `[remotes.<name>]` section:
    /// `<target>.<name>.<domain>` reaches `<target>` there. Lower-case DNS labels.
    pub remotes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontsConfig {
    pub connect: Option<ConnectFrontConfig>,
    pub tls: Option<TlsFrontConfig>,
}

/// TLS, then SSH inside; the SNI host name routes. For laptops that may only leave on
/// 443: `ProxyCommand openssl s_client -quiet -connect gw:443 -servername %h`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFrontConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain for the front's host names (`*.ssh.example.com`).
    pub cert_file: PathBuf,
    /// PEM private key. Both are reloaded when they change on disk, or on SIGHUP.
    pub key_file: PathBuf,
    /// The `host:port` clients dial for this front (`gw.example.com:443`), which
    /// `ssh-gateway setup` learns from the API; unset: not advertised.
    #[serde(default)]
    pub public_address: Option<String>,
}

/// HTTP CONNECT (`CONNECT <host>:<port> HTTP/1.1`, then SSH): for `proxytunnel`,
/// `ssh-gateway proxy`, and clients that can only leave through an HTTP proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectFrontConfig {
    pub listen: SocketAddr,
    /// The `host:port` clients dial for this front, advertised to `ssh-gateway setup`.
    #[serde(default)]
    pub public_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// Address the SSH listener binds.
    #[serde(default = "default_ssh_listen")]
    pub listen: SocketAddr,
    /// Directory holding the host keys; generated on first start if empty.
    pub host_key_dir: PathBuf,
    /// The address users type: returned by the sandbox API as `ssh.host`/`ssh.port`.
    pub public_host: String,
    #[serde(default = "default_public_port")]
    pub public_port: u16,
    /// Seconds a client has to authenticate before it is disconnected.
    #[serde(default = "default_login_grace")]
    pub login_grace_secs: u64,
    /// Public-key attempts per connection before it is disconnected.
    #[serde(default = "default_max_auth_attempts")]
    pub max_auth_attempts: usize,
    /// Concurrent SSH connections accepted by this replica.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds without any traffic before a connection is closed.
    #[serde(default = "default_inactivity")]
    pub inactivity_timeout_secs: u64,
    /// Environment variables a client may set with SendEnv/SetEnv. A trailing `*`
    /// matches a prefix (`LC_*`).
    #[serde(default = "default_accept_env")]
    pub accept_env: Vec<String>,
    /// Every connection on this listener starts with a PROXY protocol (v1 or v2)
    /// header naming the client, as a load balancer sends it; that address is what
    /// logs, limits and penalties see. Off by default.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers allowed to send one (CIDR ranges); empty: any peer. Others are
    /// refused.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    /// On SIGTERM: seconds open sessions may still run (told the gateway is
    /// restarting) before they are closed. `/readyz` answers 503 and the listeners
    /// close at once. Keep it below the pod's terminationGracePeriodSeconds.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_secs: u64,
    /// Whether `ssh -A` may forward the client's agent into workloads (as
    /// `SSH_AUTH_SOCK`, through the in-workload helper). On by default; a certificate
    /// needs `permit-agent-forwarding` besides.
    #[serde(default = "default_true")]
    pub agent_forwarding: bool,
}

fn default_drain_timeout() -> u64 {
    25
}

/// In the spirit of OpenSSH's MaxStartups and PerSourcePenalties. A source is one
/// IPv4 address or one IPv6 /64. Behind a load balancer that hides client addresses
/// (no PROXY protocol), every client is one source: raise the per-source cap and put
/// the balancer in `penalty_exempt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Connections that have not authenticated yet, in total.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections from one source.
    pub max_unauthenticated_per_source: usize,
    /// Penalty a source accrues for a connection that offered keys and never got in.
    pub penalty_auth_failure_secs: u64,
    /// Penalty for a connection that never tried to authenticate.
    pub penalty_no_auth_secs: u64,
    /// New connections from a source are refused while its penalty exceeds this;
    /// penalties drain at one second per second.
    pub penalty_threshold_secs: u64,
    /// Penalties never accrue past this.
    pub penalty_max_secs: u64,
    /// Addresses or CIDR ranges never penalized (`"10.0.0.0/8"`, `"2001:db8::/32"`).
    pub penalty_exempt: Vec<String>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_unauthenticated: 1024,
            max_unauthenticated_per_source: 128,
            penalty_auth_failure_secs: 5,
            penalty_no_auth_secs: 1,
            penalty_threshold_secs: 15,
            penalty_max_secs: 600,
            penalty_exempt: Vec::new(),
        }
    }
}

impl SshConfig {
    /// `proxy_protocol_from`, parsed.
    pub fn proxy_sources(&self) -> Result<Vec<crate::conn::admission::IpNet>, ConfigError> {
        self.proxy_protocol_from
            .iter()
            .map(|n| crate::conn::admission::IpNet::parse(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::Invalid {
                field: "ssh.proxy_protocol_from",
                message,
            })
    }
}

impl AdmissionConfig {
    /// The limits admission enforces; `max_connections` comes from `[ssh]`.
    pub fn limits(
        &self,
        max_connections: usize,
    ) -> Result<crate::conn::admission::AdmissionLimits, ConfigError> {
        use crate::conn::admission::{AdmissionLimits, IpNet};
        let penalty_exempt = self
            .penalty_exempt
            .iter()
            .map(|n| IpNet::parse(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::Invalid {
                field: "admission.penalty_exempt",
                message,
            })?;
        Ok(AdmissionLimits {
            max_connections,
            max_unauthenticated: self.max_unauthenticated,
            max_unauthenticated_per_source: self.max_unauthenticated_per_source,
            penalty_auth_failure: Duration::from_secs(self.penalty_auth_failure_secs),
            penalty_no_auth: Duration::from_secs(self.penalty_no_auth_secs),
            penalty_threshold: Duration::from_secs(self.penalty_threshold_secs),
            penalty_max: Duration::from_secs(self.penalty_max_secs),
            penalty_exempt,
        })
    }
}

/// Activity reports (open connections, last payload) per target, for platforms that
/// pause idle workloads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivityConfig {
    /// Seconds between reports while connections to a target stay open (connects and
    /// disconnects are reported at once).
    pub heartbeat_secs: u64,
    /// Connections with no payload (channel bytes either way; keepalives do not count)
    /// for this many seconds are closed, telling the user why. 0 = never.
    pub idle_timeout_secs: u64,
    /// The gateway pauses a target itself (HTTP: `POST …/pause`; Kubernetes: scales
    /// a sandbox's StatefulSet to 0) once its last connection here has closed and no
    /// payload has moved for this many seconds. 0 = never (the platform decides).
    pub pause_after_idle_secs: u64,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 60,
            idle_timeout_secs: 0,
            pause_after_idle_secs: 0,
        }
    }
}

/// `[revocation]`. Deleting a key, token or user, or taking a user off a sandbox, ends
/// the live connections it concerns at once (on PostgreSQL on every replica, through
/// LISTEN/NOTIFY). Every connection is also re-checked periodically, which catches
/// what no notification announced (the admin CLI writing to a SQLite file, a
/// Kubernetes annotation edited, a notification lost while the database was away).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// Seconds between full re-checks. 0 = only on notifications.
    pub recheck_secs: u64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self { recheck_secs: 60 }
    }
}

/// `[audit]`: one record per authenticated connection and per channel, in the store
/// (`GET /users/me/sessions`, `ssh-gateway admin sessions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Days records are kept after their connection ended. 0 = for ever.
    pub retention_days: u64,
    /// A gateway process not heard from for this long (killed, its node lost) has its
    /// open connections closed in the trail by the replicas still running. Each
    /// process says it is alive every quarter of this. 0 = never.
    pub orphan_after_secs: u64,
}

/// Session recording: PTY sessions as asciicast v2 files (`asciinema play`), their
/// owners told at the start and able to fetch them (`GET
/// /users/me/sessions/{id}/recording`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Record every PTY session.
    pub enabled: bool,
    /// Record these users' PTY sessions even when `enabled` is off (user names).
    pub users: Vec<String>,
    /// Record PTY sessions to these targets even when `enabled` is off: a target as
    /// the audit trail names it (`box`, `<remote>/box`), or a prefix ending in `*`
    /// (`training-job-*`).
    pub targets: Vec<String>,
    /// Where the files go (created 0700; files 0600). Local to each replica.
    pub dir: PathBuf,
    /// Also record what the user types (passwords typed at prompts included).
    pub input: bool,
    /// A recording stops (with a marker) past this many bytes; the session goes on.
    pub max_bytes: u64,
    /// Recordings older than this many days are deleted (checked hourly); 0 keeps
    /// them.
    pub retention_days: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            users: Vec::new(),
            targets: Vec::new(),
            dir: PathBuf::from("/var/lib/ssh-gateway/recordings"),
            input: false,
            max_bytes: 64 * 1024 * 1024,
            retention_days: 90,
        }
    }
}

impl RecordingConfig {
    /// Whether any session may be recorded (the directory is then needed).
    pub fn any(&self) -> bool {
        self.enabled || !self.users.is_empty() || !self.targets.is_empty()
    }

    /// Whether a PTY session of `user` to `target` (a route key) is recorded.
    pub fn applies(&self, user: &str, target: &str) -> bool {
        self.enabled
            || self.users.iter().any(|u| u == user)
            || self.targets.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => target.starts_with(prefix),
                None => t == target,
            })
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 90,
            orphan_after_secs: 300,
        }
    }
}

/// The SFTP subsystem, and the remote side of legacy scp, in workloads that may lack
/// OpenSSH: the gateway carries its own helper (crates/helper) and places it there.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftpConfig {
    /// `auto`: the image's own sftp-server when it has one (behaviour is exactly
    /// OpenSSH's), the helper otherwise. `workload`: only the image's own. `helper`:
    /// always the helper.
    pub server: SftpServer,
    /// An absolute directory to place the helper in when `$HOME/.cache` will not do,
    /// tried before `/tmp` and `/dev/shm`.
    pub helper_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SftpServer {
    #[default]
    Auto,
    Workload,
    Helper,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Concurrent API connections; more are answered 503 and closed at once, so the
    /// API can never take the file descriptors SSH connections need.
    #[serde(default = "default_api_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and an idle keep-alive
    /// connection to start its next request) before it is disconnected.
    #[serde(default = "default_api_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds from a request's headers to its response, body upload included; slower
    /// requests get 408 and the connection is closed.
    #[serde(default = "default_api_request_timeout")]
    pub request_timeout_secs: u64,
    /// Largest request line plus headers; larger ones get 431.
    #[serde(default = "default_api_max_header_bytes")]
    pub max_header_bytes: usize,
    /// The browser terminal: `GET /terminal/{sandbox}` on this listener opens a shell
    /// there after the user signs in with an API token.
    #[serde(default = "default_true")]
    pub terminal: bool,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (embedded) or `postgres://…` (region deployment).
    pub url: String,
    #[serde(default = "default_pool_size")]
    pub max_connections: u32,
    /// `serve` applies pending migrations at start. Off (a deployment whose migrate
    /// step runs first, once): it only checks the schema is current and refuses to
    /// start otherwise, so replicas never race to migrate.
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
}

/// The URL may carry a password: Debug shows only its scheme.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split(':').next().unwrap_or_default();
        f.debug_struct("DatabaseConfig")
            .field("url", &format_args!("{scheme}:<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum BackendConfig {
    /// Runs sandboxes as local processes of the gateway's own user (development).
    Local {
        /// Shell used for sessions and `sh -c`-style commands.
        #[serde(default = "default_shell")]
        shell: PathBuf,
    },
    /// Runs channels in pods through the exec and port-forward APIs (`[kubernetes]`).
    Kubernetes,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum ControlConfig {
    /// Sandboxes are rows in the gateway's own store (`admin sandbox add`).
    Static {
        /// Directory under which each sandbox without an explicit directory gets
        /// `<root>/<sandbox id>` as its working directory.
        sandbox_root: PathBuf,
    },
    /// Targets are pods found by label (`[kubernetes]`).
    Kubernetes,
    /// A platform's own service says who may use a target and in what state it is,
    /// resumes it and hears how it is used (docs/control-plane.openapi.yaml). Where
    /// the workload runs is still the backend's: `sandbox_root/<id>` for local
    /// processes, pods found by label for Kubernetes.
    Http(HttpControlConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpControlConfig {
    /// Base URL; the gateway calls `{url}/v1/sandboxes/{id}`, `…/resume`, `…/activity`.
    pub url: String,
    /// A file holding the bearer token sent on every call (trailing whitespace is
    /// ignored). Read at start.
    pub token_file: Option<PathBuf>,
    /// How long a connection to a paused target waits for the platform to say it is
    /// running before the user is told it did not come up.
    #[serde(default = "default_resume_timeout")]
    pub resume_timeout_secs: u64,
    /// Bound on each HTTP call; 5xx answers and timeouts are retried (with backoff and
    /// jitter) within `retry_budget_secs`, 4xx answers never.
    #[serde(default = "default_http_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_http_retry_budget")]
    pub retry_budget_secs: u64,
    /// For the local backend: each target runs in `<sandbox_root>/<id>`.
    #[serde(default = "default_sandbox_root")]
    pub sandbox_root: PathBuf,
}

fn default_http_request_timeout() -> u64 {
    5
}
fn default_http_retry_budget() -> u64 {
    10
}
fn default_sandbox_root() -> PathBuf {
    PathBuf::from("sandboxes")
}

impl HttpControlConfig {
    pub fn resume_timeout(&self) -> Duration {
        Duration::from_secs(self.resume_timeout_secs)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    pub fn retry_budget(&self) -> Duration {
        Duration::from_secs(self.retry_budget_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file; unset means in-cluster service account, then $KUBECONFIG,
    /// then ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    pub context: Option<String>,
    /// Namespaces searched for targets; empty searches all (needs cluster-wide RBAC).
    #[serde(default = "default_namespaces")]
    pub namespaces: Vec<String>,
    /// Bound on each API call the gateway waits for (lookups, stream set-up).
    #[serde(default = "default_kube_timeout")]
    pub request_timeout_secs: u64,
    /// Label whose value is a sandbox id: `ssh <id>@gw` reaches the pod carrying it.
    #[serde(default = "default_sandbox_label")]
    pub sandbox_label: String,
    /// Label whose value is a training job id (`training-job-<id>-<node>`).
    #[serde(default = "default_job_label")]
    pub job_label: String,
    /// Label holding a pod's node index within its job (node 0 is the leader).
    #[serde(default = "default_node_label")]
    pub node_label: String,
    /// Label whose value is an inference model id
    /// (`model-<model-id>-<deployment-id>[-<replica>]`).
    #[serde(default = "default_model_label")]
    pub model_label: String,
    /// Label whose value is that model's deployment id.
    #[serde(default = "default_deployment_label")]
    pub deployment_label: String,
    /// Label holding a pod's replica index within its deployment, which `-<replica>`
    /// picks (a StatefulSet's pods carry `apps.kubernetes.io/pod-index`).
    #[serde(default = "default_replica_label")]
    pub replica_label: String,
    /// Annotation naming the container to use; otherwise `default_container`, then
    /// the pod's first container.
    #[serde(default = "default_container_annotation")]
    pub container_annotation: String,
    pub default_container: Option<String>,
    /// Annotation holding the owner's user name; otherwise the store's sandbox row.
    #[serde(default = "default_owner_annotation")]
    pub owner_annotation: String,
    /// Annotation holding further user names, comma-separated.
    #[serde(default = "default_members_annotation")]
    pub members_annotation: String,
    /// How long a connection to a paused workload (a StatefulSet at 0 replicas) waits
    /// for it to be scaled up and Ready before the user is told it did not come up.
    #[serde(default = "default_resume_timeout")]
    pub resume_timeout_secs: u64,
    /// Watch the pods and StatefulSets carrying target labels, so an owner or
    /// members edit ends the live sessions it refuses at once. Off: such edits are
    /// seen by the next channel and by the periodic `[revocation] recheck_secs`.
    #[serde(default = "default_true")]
    pub watch_access: bool,
}

fn default_true() -> bool {
    true
}

fn default_resume_timeout() -> u64 {
    120
}

fn default_namespaces() -> Vec<String> {
    vec!["default".into()]
}
fn default_kube_timeout() -> u64 {
    10
}
fn default_sandbox_label() -> String {
    "ssh-gateway.io/sandbox".into()
}
fn default_job_label() -> String {
    "ssh-gateway.io/training-job".into()
}
fn default_node_label() -> String {
    "ssh-gateway.io/node-index".into()
}
fn default_model_label() -> String {
    "ssh-gateway.io/model".into()
}
fn default_deployment_label() -> String {
    "ssh-gateway.io/deployment".into()
}
fn default_replica_label() -> String {
    "ssh-gateway.io/replica".into()
}
fn default_container_annotation() -> String {
    "ssh-gateway.io/container".into()
}
fn default_owner_annotation() -> String {
    "ssh-gateway.io/owner".into()
}
fn default_members_annotation() -> String {
    "ssh-gateway.io/members".into()
}

impl KubernetesConfig {
    /// Checks one cluster section. `remote`: which `[remotes.<name>]` it is (errors
    /// then name the section in their message), `None` for `[kubernetes]`.
    fn validate(&self, remote: Option<&str>) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, rule: &str| {
            Err(match remote {
                None => ConfigError::Invalid {
                    field,
                    message: rule.to_owned(),
                },
                Some(name) => ConfigError::Invalid {
                    field: "remotes",
                    message: format!(
                        "[remotes.{name}] {}: {rule}",
                        field.trim_start_matches("kubernetes.")
                    ),
                },
            })
        };
        if self.request_timeout_secs == 0 || self.request_timeout_secs > 300 {
            return invalid(
                "kubernetes.request_timeout_secs",
                "must be between 1 and 300",
            );
        }
        if self.sandbox_label.is_empty()
            || self.job_label.is_empty()
            || self.node_label.is_empty()
            || self.model_label.is_empty()
            || self.deployment_label.is_empty()
            || self.replica_label.is_empty()
        {
            return invalid("kubernetes.sandbox_label", "labels must not be empty");
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn resume_timeout(&self) -> Duration {
        Duration::from_secs(self.resume_timeout_secs)
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            max_body_bytes: default_max_body(),
            max_connections: default_api_max_connections(),
            header_timeout_secs: default_api_header_timeout(),
            request_timeout_secs: default_api_request_timeout(),
            max_header_bytes: default_api_max_header_bytes(),
            terminal: true,
        }
    }
}

impl ApiConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Local {
            shell: default_shell(),
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig::Static {
            sandbox_root: default_sandbox_root(),
        }
    }
}

fn default_ssh_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 22))
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_public_port() -> u16 {
    22
}
fn default_login_grace() -> u64 {
    30
}
fn default_max_auth_attempts() -> usize {
    6
}
fn default_max_connections() -> usize {
    4096
}
fn default_inactivity() -> u64 {
    3600
}
fn default_accept_env() -> Vec<String> {
    vec!["LANG".into(), "LC_*".into(), "COLORTERM".into()]
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_api_max_connections() -> usize {
    256
}
fn default_api_header_timeout() -> u64 {
    10
}
fn default_api_request_timeout() -> u64 {
    30
}
fn default_api_max_header_bytes() -> usize {
    16 * 1024
}
fn default_pool_size() -> u32 {
    10
}
/// Prefer bash (what VS Code and most users expect), fall back to POSIX sh.
pub fn default_shell() -> PathBuf {
    ["/bin/bash", "/usr/bin/bash", "/bin/sh"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

impl SshConfig {
    pub fn login_grace(&self) -> Duration {
        Duration::from_secs(self.login_grace_secs)
    }
    pub fn inactivity_timeout(&self) -> Duration {
        Duration::from_secs(self.inactivity_timeout_secs)
    }
    /// Whether a client-sent variable may reach the workload.
    pub fn env_allowed(&self, name: &str) -> bool {
        self.accept_env
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => pattern == name,
            })
    }
}

impl Config {
    /// Reads `path`, applies `SSH_GATEWAY__…` overrides from `env`, validates.
    pub fn load(
        path: &Path,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), env)
    }

    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin.to_owned(),
                    message: e.message().to_owned(),
                })?;
        for (var, value) in env {
            if let Some(key) = var.strip_prefix(ENV_PREFIX) {
                apply_override(&mut table, &var, key, &value)?;
            }
        }
        let config: Config = Config::deserialize(table).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.ssh.public_host.trim().is_empty() {
            return invalid("ssh.public_host", "must name the host users connect to");
        }
        if self.ssh.login_grace_secs == 0 || self.ssh.login_grace_secs > 600 {
            return invalid("ssh.login_grace_secs", "must be between 1 and 600");
        }
        if self.ssh.max_auth_attempts == 0 || self.ssh.max_auth_attempts > 20 {
            return invalid("ssh.max_auth_attempts", "must be between 1 and 20");
        }
        if self.ssh.max_connections == 0 {
            return invalid("ssh.max_connections", "must be at least 1");
        }
        if self.activity.heartbeat_secs == 0 || self.activity.heartbeat_secs > 86_400 {
            return invalid("activity.heartbeat_secs", "must be between 1 and 86400");
        }
        if let Some(dir) = &self.sftp.helper_dir
            && (!dir.starts_with('/') || dir.chars().any(char::is_control))
        {
            return invalid(
                "sftp.helper_dir",
                "must be an absolute path without control characters",
            );
        }
        let a = &self.admission;
        if a.max_unauthenticated == 0 {
            return invalid("admission.max_unauthenticated", "must be at least 1");
        }
        if a.max_unauthenticated_per_source == 0
            || a.max_unauthenticated_per_source > a.max_unauthenticated
        {
            return invalid(
                "admission.max_unauthenticated_per_source",
                "must be between 1 and admission.max_unauthenticated",
            );
        }
        if a.penalty_max_secs > 86_400 || a.penalty_threshold_secs > a.penalty_max_secs {
            return invalid(
                "admission.penalty_threshold_secs",
                "must not exceed admission.penalty_max_secs (at most 86400)",
            );
        }
        a.limits(self.ssh.max_connections)?;
        if self.ssh.inactivity_timeout_secs == 0 {
            return invalid("ssh.inactivity_timeout_secs", "must be at least 1");
        }
        if self.api.max_body_bytes < 1024 || self.api.max_body_bytes > 16 << 20 {
            return invalid("api.max_body_bytes", "must be between 1024 and 16777216");
        }
        if self.api.max_connections == 0 || self.api.max_connections > 65536 {
            return invalid("api.max_connections", "must be between 1 and 65536");
        }
        if self.api.header_timeout_secs == 0 || self.api.header_timeout_secs > 300 {
            return invalid("api.header_timeout_secs", "must be between 1 and 300");
        }
        if self.api.request_timeout_secs == 0 || self.api.request_timeout_secs > 3600 {
            return invalid("api.request_timeout_secs", "must be between 1 and 3600");
        }
        if self.api.max_header_bytes < 1024 || self.api.max_header_bytes > 1 << 20 {
            return invalid("api.max_header_bytes", "must be between 1024 and 1048576");
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            );
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if let BackendConfig::Local { shell } = &self.backend
            && !shell.is_absolute()
        {
            return invalid("backend.shell", "must be an absolute path");
        }
        if let ControlConfig::Http(h) = &self.control {
            if !(h.url.starts_with("http://") || h.url.starts_with("https://"))
                || h.url.chars().any(|c| c.is_control() || c == ' ')
            {
                return invalid("control.url", "must be an http:// or https:// URL");
            }
            if h.request_timeout_secs == 0 || h.request_timeout_secs > 300 {
                return invalid("control.request_timeout_secs", "must be between 1 and 300");
            }
            if h.resume_timeout_secs == 0 || h.resume_timeout_secs > 3600 {
                return invalid("control.resume_timeout_secs", "must be between 1 and 3600");
            }
            if h.retry_budget_secs > 300 {
                return invalid("control.retry_budget_secs", "must be at most 300");
            }
        }
        self.ssh.proxy_sources()?;
        if let Some(domain) = &self.routing.domain {
            let d = domain.trim_end_matches('.');
            if d.is_empty()
                || d.len() > 200
                || !d.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            {
                return invalid(
                    "routing.domain",
                    "must be a DNS name such as ssh.example.com",
                );
            }
        }
        if let Some(c) = &self.certificates {
            if c.max_ttl_secs == 0 || c.max_ttl_secs > 31 * 24 * 3600 {
                return invalid(
                    "certificates.max_ttl_secs",
                    "must be between 1 and 2678400 (31 days)",
                );
            }
            if c.clock_skew_secs > 3600 {
                return invalid("certificates.clock_skew_secs", "must be at most 3600");
            }
            if c.ca_key_file.is_none() && c.trusted_ca_files.is_empty() {
                return invalid(
                    "certificates",
                    "set ca_key_file (to issue certificates) or trusted_ca_files (to accept other CAs'), or remove the section",
                );
            }
        }
        if self.fronts.connect.is_some() && self.routing.domain.is_none() {
            return invalid(
                "fronts.connect",
                "needs [routing] domain, so that the host names it receives route",
            );
        }
        if self.fronts.tls.is_some() && self.routing.domain.is_none() {
            return invalid(
                "fronts.tls",
                "needs [routing] domain, so that the SNI host names it receives route",
            );
        }
        let needs_kube = matches!(self.backend, BackendConfig::Kubernetes)
            || matches!(self.control, ControlConfig::Kubernetes);
        match &self.kubernetes {
            None if needs_kube => {
                return invalid(
                    "kubernetes",
                    "a [kubernetes] section is required by the kubernetes backend or control plane",
                );
            }
            Some(k) => k.validate(None)?,
            None => {}
        }
        self.validate_remotes()
    }

    /// `[routing] remotes` and the `[remotes.<name>]` sections: one for one, DNS
    /// labels, under a domain, on the Kubernetes backend and control plane.
    fn validate_remotes(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        let listed = &self.routing.remotes;
        if listed.is_empty() && self.remotes.is_empty() {
            return Ok(());
        }
        if self.routing.domain.is_none() {
            return invalid(
                "routing.remotes",
                "needs [routing] domain: remotes are named in host names (<target>.<remote>.<domain>)".into(),
            );
        }
        if !matches!(self.backend, BackendConfig::Kubernetes)
            || !matches!(self.control, ControlConfig::Kubernetes)
        {
            return invalid(
                "routing.remotes",
                "remotes are Kubernetes clusters: they need [backend] kind = \"kubernetes\" and [control] kind = \"kubernetes\"".into(),
            );
        }
        for (i, name) in listed.iter().enumerate() {
            let label = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !label {
                return invalid(
                    "routing.remotes",
                    format!(
                        "{name:?} is not a lower-case DNS label (a-z, 0-9 and '-', not at either end, at most 63)"
                    ),
                );
            }
            if listed[..i].contains(name) {
                return invalid("routing.remotes", format!("{name:?} is listed twice"));
            }
            if !self.remotes.contains_key(name) {
                return invalid(
                    "routing.remotes",
                    format!(
                        "remote {name:?} has no [remotes.{name}] section saying how to reach its cluster"
                    ),
                );
            }
        }
        for (name, k) in &self.remotes {
            if !listed.contains(name) {
                return invalid(
                    "remotes",
                    format!("[remotes.{name}] is not listed in [routing] remotes"),
                );
            }
            k.validate(Some(name))?;
        }
        Ok(())
    }
}

/// `SSH__LISTEN` → table["ssh"]["listen"]. The value is read as a TOML value when it
/// parses as one (numbers, booleans, arrays) and as a plain string otherwise.
fn apply_override(
    table: &mut toml::Table,
    var: &str,
    key: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "expected SSH_GATEWAY__SECTION__FIELD".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path
        .split_last()
        .expect("split on a non-empty string yields one item");
    let mut cursor = table;
    for part in parents {
        let entry = cursor
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.to_owned(),
            message: format!("`{part}` is not a section"),
        })?;
    }
    cursor.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_recording_policy_names_users_and_targets() {
        let policy = RecordingConfig {
            users: vec!["bob".into()],
            targets: vec!["lab-*".into(), "eu/box".into()],
            ..RecordingConfig::default()
        };
        assert!(policy.any());
        assert!(policy.applies("bob", "box"));
        assert!(policy.applies("ana", "lab-1"));
        assert!(policy.applies("ana", "eu/box"));
        assert!(!policy.applies("ana", "box"));
        assert!(
            !policy.applies("ana", "eu/lab-1"),
            "a prefix matches from the start"
        );
        assert!(!policy.applies("bobby", "box"));
        assert!(!RecordingConfig::default().any());
    }

    use super::*;

    const MINIMAL: &str = r#"
        [ssh]
        host_key_dir = "/tmp/keys"
        public_host = "gw.example.com"
        [database]
        url = "sqlite://x.db"
    "#;

    fn no_env() -> std::iter::Empty<(String, String)> {
        std::iter::empty()
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::from_toml(MINIMAL, "t", no_env()).unwrap();
        assert_eq!(c.ssh.listen.port(), 22);
        assert_eq!(c.ssh.public_port, 22);
        assert!(c.ssh.env_allowed("LC_ALL"));
        assert!(!c.ssh.env_allowed("LD_PRELOAD"));
    }

    #[test]
    fn http_control_plane_is_validated_and_its_token_file_overridable() {
        let text = format!("{MINIMAL}[control]\nkind = \"http\"\nurl = \"ftp://x\"\n");
        let err = Config::from_toml(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("control.url"), "{err}");
        let text = format!("{MINIMAL}[control]\nkind = \"http\"\nurl = \"https://p/x\"\n");
        let env = vec![(
            "SSH_GATEWAY__CONTROL__TOKEN_FILE".to_string(),
            "/run/secrets/t".to_string(),
        )];
        let c = Config::from_toml(&text, "t", env.into_iter()).unwrap();
        let ControlConfig::Http(h) = c.control else {
            panic!("not http")
        };
        assert_eq!(
            h.token_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/t"))
        );
        assert_eq!((h.resume_timeout_secs, h.retry_budget_secs), (120, 10));
    }

    #[test]
    fn env_overrides_file_values_with_types() {
        let env = vec![
            (
                "SSH_GATEWAY__SSH__LISTEN".to_string(),
                "127.0.0.1:2222".to_string(),
            ),
            (
                "SSH_GATEWAY__SSH__PUBLIC_PORT".to_string(),
                "2222".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::from_toml(MINIMAL, "t", env.into_iter()).unwrap();
        assert_eq!(c.ssh.listen.to_string(), "127.0.0.1:2222");
        assert_eq!(c.ssh.public_port, 2222);
    }

    #[test]
    fn unknown_field_is_named() {
        let text = format!("{MINIMAL}\n[api]\nlisten_addr = \"x\"\n");
        let err = Config::from_toml(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let env = vec![(
            "SSH_GATEWAY__SSH__LOGIN_GRACE_SECS".to_string(),
            "0".to_string(),
        )];
        let err = Config::from_toml(MINIMAL, "t", env.into_iter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssh.login_grace_secs"), "{err}");
        let text = MINIMAL.replace("sqlite://x.db", "mysql://x");
        let err = Config::from_toml(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    fn api_limits_have_defaults_and_name_their_field() {
        let c = Config::from_toml(MINIMAL, "t", no_env()).unwrap();
        assert_eq!(c.api.max_connections, 256);
        assert_eq!(c.api.header_timeout_secs, 10);
        assert_eq!(c.api.request_timeout_secs, 30);
        assert_eq!(c.api.max_header_bytes, 16 * 1024);
        for (field, value) in [
            ("max_connections", "0"),
            ("header_timeout_secs", "0"),
            ("request_timeout_secs", "0"),
            ("max_header_bytes", "100"),
        ] {
            let env = vec![(
                format!("SSH_GATEWAY__API__{}", field.to_uppercase()),
                value.to_string(),
            )];
            let err = Config::from_toml(MINIMAL, "t", env.into_iter())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("api.{field}")), "{err}");
        }
    }

    #[test]
    fn database_password_stays_out_of_debug_output() {
        let text = MINIMAL.replace("sqlite://x.db", "postgres://gw:hunter2@db/gw");
        let c = Config::from_toml(&text, "t", no_env()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres:<redacted>"), "{shown}");
    }

    #[test]
    fn bad_listen_address_is_reported() {
        let env = vec![(
            "SSH_GATEWAY__SSH__LISTEN".to_string(),
            "nonsense".to_string(),
        )];
        let err = Config::from_toml(MINIMAL, "t", env.into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen") || err.contains("socket address"),
            "{err}"
        );
    }

    #[test]
    fn remotes_need_a_section_each_a_domain_and_kubernetes() {
        let kube = format!(
            "{MINIMAL}\n[backend]\nkind = \"kubernetes\"\n[control]\nkind = \"kubernetes\"\n[kubernetes]\n"
        );
        let with = |routing: &str, sections: &str| {
            Config::from_toml(
                &format!("{kube}[routing]\n{routing}\n{sections}"),
                "t",
                no_env(),
            )
        };
        let two = "[remotes.a]\nkubeconfig = \"/a\"\n[remotes.gpu-2]\nnamespaces = [\"ml\"]\n";
        let c = with(
            "domain = \"ssh.example.com\"\nremotes = [\"a\", \"gpu-2\"]",
            two,
        )
        .unwrap();
        assert_eq!(c.routing.remotes, ["a", "gpu-2"]);
        assert_eq!(c.remotes["a"].kubeconfig.as_deref(), Some(Path::new("/a")));
        assert_eq!(c.remotes["gpu-2"].namespaces, ["ml"]);
        // Every refusal names what is wrong.
        for (routing, sections, part) in [
            (
                "domain = \"ssh.example.com\"\nremotes = [\"a\", \"b\"]",
                "[remotes.a]\n",
                "remote \"b\" has no [remotes.b] section",
            ),
            (
                "domain = \"ssh.example.com\"\nremotes = [\"a\"]",
                two,
                "[remotes.gpu-2] is not listed in [routing] remotes",
            ),
            (
                "remotes = [\"a\"]",
                "[remotes.a]\n",
                "needs [routing] domain",
            ),
            (
                "domain = \"ssh.example.com\"\nremotes = [\"A\"]",
                "[remotes.A]\n",
                "\"A\" is not a lower-case DNS label",
            ),
            (
                "domain = \"ssh.example.com\"\nremotes = [\"a.b\"]",
                "",
                "\"a.b\" is not a lower-case DNS label",
            ),
            (
                "domain = \"ssh.example.com\"\nremotes = [\"a\", \"a\"]",
                "[remotes.a]\n",
                "\"a\" is listed twice",
            ),
            (
                "domain = \"ssh.example.com\"\nremotes = [\"a\"]",
                "[remotes.a]\nrequest_timeout_secs = 0\n",
                "[remotes.a] request_timeout_secs: must be between 1 and 300",
            ),
        ] {
            let err = with(routing, sections).unwrap_err().to_string();
            assert!(err.contains(part), "{routing:?} {sections:?}: {err}");
        }
        // Remotes are clusters: not with the static control plane.
        let err = Config::from_toml(
            &format!(
                "{MINIMAL}\n[routing]\ndomain = \"ssh.example.com\"\nremotes = [\"a\"]\n[remotes.a]\n"
            ),
            "t",
            no_env(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("need [backend] kind = \"kubernetes\""),
            "{err}"
        );
    }
}
