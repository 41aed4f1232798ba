//! Route stage: the SSH username and the hostname a front learned (HTTP CONNECT, later
//! TLS SNI) become a `TargetRef`. Pure: no I/O, so it is table-tested and fuzzable.
//!
//! - username only: `demo`, `training-job-<id>-<node>`,
//!   `model-<model-id>-<deployment-id>[-<replica>]`;
//! - hostname `<target>.<domain>` (`[routing] domain`): the first label is the target,
//!   compared in lower case as DNS does; the username is then free (VS Code puts the
//!   local user's name there), unless it is itself a training-job or model name for
//!   another target, which is refused as contradictory;
//! - the bare domain as hostname: the username routes, as without a front;
//! - with remotes configured (`[routing] remotes`, each one cluster this gateway
//!   reaches), `<target>.<remote>.<domain>` names the target on that remote; one label
//!   before the domain, and the username alone, name the default remote (`None`: the
//!   gateway's main cluster). An unknown remote is refused with the remotes there are.
//!
//! Model names: `model-` is a reserved prefix (no sandbox id starts with it), and what
//! follows is `<model-id>-<deployment-id>` with an optional `-<replica>`. Model and
//! deployment ids are 1 or more of `a-z 0-9` (lower case, so a host name and a user
//! name read the same; no `-` inside an id, since `-` separates); the replica is a
//! number without leading zeros. The whole name is at most 63 characters (one DNS
//! label). A name under the prefix that breaks these rules is refused with which part
//! is wrong (`invalid model id "M1": …`), never read as a sandbox id.

use std::fmt;

/// What the user asked to reach, before anyone has checked it exists or is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetRef {
    Sandbox(String),
    /// One node of a multi-node training job; node 0 is the leader.
    TrainingJob {
        job: String,
        node: u32,
    },
    /// A replica of an inference model deployment; `None`: any Ready replica, the
    /// same one for a user while it lives (the control plane's choice).
    Model {
        model: String,
        deployment: String,
        replica: Option<u32>,
    },
}

impl TargetRef {
    /// The name as the user typed it, for messages.
    pub fn name(&self) -> String {
        match self {
            TargetRef::Sandbox(id) => id.clone(),
            TargetRef::TrainingJob { job, node } => format!("{JOB_PREFIX}{job}-{node}"),
            TargetRef::Model {
                model,
                deployment,
                replica: None,
            } => format!("{MODEL_PREFIX}{model}-{deployment}"),
            TargetRef::Model {
                model,
                deployment,
                replica: Some(r),
            } => format!("{MODEL_PREFIX}{model}-{deployment}-{r}"),
        }
    }
}

impl TargetRef {
    /// The workload whose objects decide access to this target, whatever node or
    /// replica was asked for: `sandbox/<id>`, `job/<id>`, `model/<model>/<deployment>`.
    /// Every node of a job and every replica of a deployment must agree on access, so
    /// a change to any of them concerns all of its connections.
    pub fn family(&self) -> String {
        match self {
            TargetRef::Sandbox(id) => format!("sandbox/{id}"),
            TargetRef::TrainingJob { job, .. } => format!("job/{job}"),
            TargetRef::Model {
                model, deployment, ..
            } => format!("model/{model}/{deployment}"),
        }
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetRef::Sandbox(id) => write!(f, "sandbox {id:?}"),
            TargetRef::TrainingJob { job, node } => write!(f, "training job {job:?} node {node}"),
            TargetRef::Model {
                model,
                deployment,
                replica,
            } => {
                write!(f, "model {model:?} deployment {deployment:?}")?;
                match replica {
                    Some(r) => write!(f, " replica {r}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A target on one of the gateway's remotes: what a connection asked to reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The remote (cluster) named by the host name; `None`: the default one.
    pub remote: Option<String>,
    pub target: TargetRef,
}

impl Route {
    /// On the default remote.
    pub fn local(target: TargetRef) -> Self {
        Route {
            remote: None,
            target,
        }
    }

    /// One string per target per remote, for logs, events and activity:
    /// `<remote>/<name>`, or the name alone on the default remote (no target name
    /// contains `/`, so the two never collide).
    pub fn key(&self) -> String {
        match &self.remote {
            Some(remote) => format!("{remote}/{}", self.target.name()),
            None => self.target.name(),
        }
    }
}

/// Splits a `Route::key` into its remote (if any) and the target's name.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((remote, name)) => (Some(remote), name),
        None => (None, key),
    }
}

const JOB_PREFIX: &str = "training-job-";
/// Reserved: names under it are model deployments, never sandbox ids.
pub const MODEL_PREFIX: &str = "model-";

/// Why a name routes nowhere. A malformed user name reads like any unknown sandbox, as
/// it always has; a host name says which part is wrong (only its form is judged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("sandbox {0:?} does not exist or you have no access to it")]
    Unknown(String),
    /// A name under a reserved prefix (`model-`) that breaks its grammar.
    #[error("{error}")]
    Name { name: String, error: NameError },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// What is wrong with a model name; only its form is judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid model id {0:?}: {ID_RULE}")]
    ModelId(String),
    #[error("invalid deployment id {0:?}: {ID_RULE}")]
    DeploymentId(String),
    #[error("invalid replica {0:?}: a replica is a number without leading zeros (0, 1, 2, …)")]
    Replica(String),
    #[error("{0:?} is not a model name: {1}; use model-<model-id>-<deployment-id>[-<replica>]")]
    Shape(String, &'static str),
}

const ID_RULE: &str =
    "model and deployment ids are lower-case letters and digits (a-z, 0-9), with no '-'";

impl RouteError {
    /// What the client asked for, as shown in logs.
    pub fn shown(&self) -> String {
        match self {
            RouteError::Unknown(name) => name.clone(),
            RouteError::Name { name, .. } => name.clone(),
            RouteError::Host(HostError::Disagree { host, .. })
            | RouteError::Host(HostError::UnknownRemote { host, .. })
            | RouteError::Host(HostError::Name(host, _))
            | RouteError::Host(HostError::ForeignDomain(host, _))
            | RouteError::Host(HostError::Malformed(host, _)) => host.clone(),
            RouteError::Host(HostError::NoDomain) => "(host name)".into(),
        }
    }
}

const MAX_ID: usize = 63;

/// `[routing]`: what hostnames route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// Lower case, without a trailing dot; `None`: hostnames do not route.
    pub domain: Option<String>,
    /// The remotes `<target>.<remote>.<domain>` may name (lower-case DNS labels);
    /// empty: one label before the domain, on the default remote only.
    pub remotes: Vec<String>,
}

impl Routing {
    pub fn new(domain: Option<&str>) -> Self {
        Self {
            domain: domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
            remotes: Vec::new(),
        }
    }

    /// With these remotes (compared in lower case, as DNS does).
    pub fn with_remotes<S: AsRef<str>>(mut self, remotes: &[S]) -> Self {
        self.remotes = remotes
            .iter()
            .map(|r| r.as_ref().to_ascii_lowercase())
            .collect();
        self
    }
}

/// Why what the client gave names no target. Only about the name's form: whether a
/// well-formed target exists is the control plane's to say (in its one message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host name {0:?} is not under this gateway's domain {1:?}")]
    ForeignDomain(String, String),
    #[error(
        "this gateway does not route by host name (no [routing] domain); use the sandbox id as the user name"
    )]
    NoDomain,
    #[error("host name {0:?} is malformed: {1}")]
    Malformed(String, &'static str),
    #[error("host name {0:?} is malformed: {1}")]
    Name(String, NameError),
    #[error(
        "the user name {user:?} names another target than the host name {host:?}; use one of them"
    )]
    Disagree { user: String, host: String },
    #[error("host name {host:?}: unknown remote {remote:?}; this gateway's remotes are: {known}")]
    UnknownRemote {
        host: String,
        remote: String,
        /// The configured remotes, comma-separated.
        known: String,
    },
}

/// The target (and remote) for a connection whose username is `user` and whose front
/// (if any) learned the hostname `host` (no port). A hostname route wins over the
/// username; a username alone routes on the default remote.
pub fn resolve(user: &str, host: Option<&str>, routing: &Routing) -> Result<Route, RouteError> {
    let Some(host) = host else {
        return route(user).map(Route::local);
    };
    let Some(by_host) = host_target(host, routing)? else {
        return route(user).map(Route::local);
    };
    // A user name that names a job node or a model by itself must agree; any other
    // user name is free (a local account name, say).
    if let Ok(by_user @ (TargetRef::TrainingJob { .. } | TargetRef::Model { .. })) = route(user)
        && by_user != by_host.target
    {
        return Err(HostError::Disagree {
            user: user.chars().take(MAX_ID + 1).collect(),
            host: host.to_owned(),
        }
        .into());
    }
    Ok(by_host)
}

/// The target (and remote) a host name names, `None` for the bare domain (the user
/// name routes then, on the default remote), or what is wrong with it. Fronts judge a
/// host with this before SSH starts.
pub fn host_target(host: &str, routing: &Routing) -> Result<Option<Route>, HostError> {
    let Some((label, remote)) = host_labels(host, routing)? else {
        return Ok(None);
    };
    match route(&label) {
        Ok(target) => Ok(Some(Route { remote, target })),
        Err(RouteError::Name { error, .. }) => {
            Err(HostError::Name(host.chars().take(255).collect(), error))
        }
        // The label failed the id rules: say which part.
        Err(_) => Err(HostError::Malformed(
            host.chars().take(255).collect(),
            "its first label must be a sandbox id (letters, digits, - and _), training-job-<id>-<node> or model-<model-id>-<deployment-id>[-<replica>]",
        )),
    }
}

/// The target label of `host` under the domain and the remote label after it (if
/// any, and known), or `None` for the domain itself.
fn host_labels(
    host: &str,
    routing: &Routing,
) -> Result<Option<(String, Option<String>)>, HostError> {
    let shown: String = host.chars().take(255).collect();
    if host.is_empty() || host.len() > 253 {
        return Err(HostError::Malformed(shown, "it must be 1-253 characters"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(HostError::Malformed(
            shown,
            "only letters, digits, '-', '_' and '.' may appear in it",
        ));
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let Some(domain) = routing.domain.as_deref() else {
        return Err(HostError::NoDomain);
    };
    if host == domain {
        return Ok(None);
    }
    let Some(prefix) = host.strip_suffix(domain).and_then(|p| p.strip_suffix('.')) else {
        return Err(HostError::ForeignDomain(shown, domain.to_owned()));
    };
    if prefix.is_empty() || prefix.split('.').any(str::is_empty) {
        return Err(HostError::Malformed(shown, "it has an empty label"));
    }
    let Some((target, remote)) = prefix.split_once('.') else {
        return Ok(Some((prefix.to_owned(), None)));
    };
    if routing.remotes.is_empty() {
        return Err(HostError::Malformed(
            shown,
            "exactly one label may come before the domain (remotes are not configured)",
        ));
    }
    if remote.contains('.') {
        return Err(HostError::Malformed(
            shown,
            "at most two labels, <target>.<remote>, may come before the domain",
        ));
    }
    if !routing.remotes.iter().any(|r| r == remote) {
        return Err(HostError::UnknownRemote {
            host: shown,
            remote: remote.chars().take(MAX_ID + 1).collect(),
            known: routing.remotes.join(", "),
        });
    }
    Ok(Some((target.to_owned(), Some(remote.to_owned()))))
}

/// `username` is the SSH user name: a sandbox id (`ssh demo@gw`), a training job
/// node (`ssh training-job-<id>-<node>@gw`) or a model deployment
/// (`ssh model-<model-id>-<deployment-id>[-<replica>]@gw`).
pub fn route(username: &str) -> Result<TargetRef, RouteError> {
    let shown: String = username.chars().take(MAX_ID + 1).collect();
    if let Some(rest) = username.strip_prefix(MODEL_PREFIX) {
        return model(username, rest).map_err(|error| RouteError::Name { name: shown, error });
    }
    if !valid_id(username) {
        return Err(RouteError::Unknown(shown));
    }
    if let Some(rest) = username.strip_prefix(JOB_PREFIX)
        && let Some((job, node_text)) = rest.rsplit_once('-')
        && !job.is_empty()
        && let Ok(node) = node_text.parse::<u32>()
        // `-007` is not an alias of node 7: that name stays a plain sandbox id.
        && node.to_string() == node_text
    {
        return Ok(TargetRef::TrainingJob {
            job: job.to_owned(),
            node,
        });
    }
    Ok(TargetRef::Sandbox(username.to_owned()))
}

/// `rest` is what follows `model-` in `name`: see the module comment for the grammar.
fn model(name: &str, rest: &str) -> Result<TargetRef, NameError> {
    let shown = |s: &str| -> String { s.chars().take(MAX_ID + 1).collect() };
    if name.len() > MAX_ID {
        return Err(NameError::Shape(
            shown(name),
            "it is longer than 63 characters",
        ));
    }
    let is_id =
        |s: &str| !s.is_empty() && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9'));
    let mut parts = rest.split('-');
    let model = parts.next().unwrap_or_default();
    let (Some(deployment), replica, None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NameError::Shape(
            shown(name),
            if rest.contains('-') {
                "it has more than three parts after model- (no '-' inside an id)"
            } else {
                "it has no deployment id"
            },
        ));
    };
    if !is_id(model) {
        return Err(NameError::ModelId(shown(model)));
    }
    if !is_id(deployment) {
        return Err(NameError::DeploymentId(shown(deployment)));
    }
    let replica = match replica {
        None => None,
        Some(text) => match text.parse::<u32>() {
            // `-01` is not an alias of replica 1.
            Ok(r) if r.to_string() == text => Some(r),
            _ => return Err(NameError::Replica(shown(text))),
        },
    };
    Ok(TargetRef::Model {
        model: model.to_owned(),
        deployment: deployment.to_owned(),
        replica,
    })
}

/// Sandbox ids: 1-63 of `A-Z a-z 0-9 - _ .`, starting with a letter or digit.
pub fn valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target of a route that must be on the default remote.
    fn on_default(r: Result<Route, RouteError>) -> Result<TargetRef, RouteError> {
        r.map(|r| {
            assert_eq!(r.remote, None, "{r:?}");
            r.target
        })
    }

    #[test]
    fn table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("demo", Some("demo")),
            ("sb-01.a_b", Some("sb-01.a_b")),
            ("", None),
            ("-rf", None),
            ("../etc", None),
            ("a b", None),
            ("ünïcode", None),
            (&"x".repeat(64), None),
        ];
        for (input, want) in cases {
            let got = route(input).ok();
            assert_eq!(
                got,
                want.map(|w| TargetRef::Sandbox(w.to_string())),
                "{input:?}"
            );
        }
    }

    #[test]
    fn training_job_nodes() {
        let job = |j: &str, n| {
            Some(TargetRef::TrainingJob {
                job: j.into(),
                node: n,
            })
        };
        assert_eq!(route("training-job-abc123-0").ok(), job("abc123", 0));
        assert_eq!(route("training-job-a-b-c-12").ok(), job("a-b-c", 12));
        // Not a node suffix: an ordinary sandbox id that happens to start the same way.
        assert_eq!(
            route("training-job-abc").ok(),
            Some(TargetRef::Sandbox("training-job-abc".into()))
        );
        assert_eq!(
            route("training-job-abc-007").ok(),
            Some(TargetRef::Sandbox("training-job-abc-007".into()))
        );
        assert_eq!(
            route("training-job--1").ok(),
            Some(TargetRef::Sandbox("training-job--1".into()))
        );
        assert_eq!(job("x", 3).unwrap().name(), "training-job-x-3");
    }

    fn model(m: &str, d: &str, replica: Option<u32>) -> TargetRef {
        TargetRef::Model {
            model: m.into(),
            deployment: d.into(),
            replica,
        }
    }

    #[test]
    fn model_deployments() {
        let ok: &[(&str, TargetRef)] = &[
            ("model-m1-d1", model("m1", "d1", None)),
            ("model-llama3-prod-0", model("llama3", "prod", Some(0))),
            ("model-7b-x9-12", model("7b", "x9", Some(12))),
        ];
        for (input, want) in ok {
            assert_eq!(route(input).as_ref(), Ok(want), "{input:?}");
            // The name it prints is the name that reaches it.
            assert_eq!(&want.name(), input);
        }
        // Each malformed part is named, with the rule it broke.
        let bad: &[(&str, &str)] = &[
            (
                "model-x!-d1",
                r#"invalid model id "x!": model and deployment ids are lower-case"#,
            ),
            ("model-M1-d1", r#"invalid model id "M1""#),
            ("model-m_1-d1", r#"invalid model id "m_1""#),
            ("model--d1", r#"invalid model id """#),
            ("model-m1-D1", r#"invalid deployment id "D1""#),
            ("model-m1-d.1", r#"invalid deployment id "d.1""#),
            ("model-m1--0", r#"invalid deployment id """#),
            ("model-m1-d1-x", r#"invalid replica "x""#),
            ("model-m1-d1-01", r#"invalid replica "01""#),
            ("model-m1-d1-", r#"invalid replica """#),
            (
                "model-m1-d1-99999999999",
                r#"invalid replica "99999999999""#,
            ),
            ("model-m1", "has no deployment id"),
            ("model-", "has no deployment id"),
            ("model-a-b-c-d", "more than three parts"),
        ];
        for (input, part) in bad {
            let err = route(input).unwrap_err();
            assert!(err.to_string().contains(part), "{input:?}: {err}");
            assert_eq!(err.shown(), *input);
        }
        let long = format!("model-{}-d", "m".repeat(60));
        assert!(
            route(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 63")
        );
        // Only the exact lower-case prefix is reserved.
        assert_eq!(
            route("Model-x").ok(),
            Some(TargetRef::Sandbox("Model-x".into()))
        );
        assert_eq!(
            route("models").ok(),
            Some(TargetRef::Sandbox("models".into()))
        );
        assert_eq!(
            model("m", "d", Some(2)).to_string(),
            r#"model "m" deployment "d" replica 2"#
        );
    }

    #[test]
    fn model_host_names_and_disagreement() {
        let r = Routing::new(Some("ssh.example.com"));
        let disagree = |user: &str, host: &str| {
            Err(RouteError::Host(HostError::Disagree {
                user: user.into(),
                host: host.into(),
            }))
        };
        let cases: Vec<(&str, Option<&str>, Result<TargetRef, RouteError>)> = vec![
            (
                "alice",
                Some("model-m1-d1.ssh.example.com"),
                Ok(model("m1", "d1", None)),
            ),
            // DNS is case-insensitive: the host is read in lower case.
            (
                "alice",
                Some("Model-M1-D1-3.SSH.example.com"),
                Ok(model("m1", "d1", Some(3))),
            ),
            (
                "model-m1-d1",
                Some("model-m1-d1.ssh.example.com"),
                Ok(model("m1", "d1", None)),
            ),
            ("model-m1-d1", None, Ok(model("m1", "d1", None))),
            (
                "model-m1-d1-2",
                Some("ssh.example.com"),
                Ok(model("m1", "d1", Some(2))),
            ),
            // Both name a target, and not the same one: refused, whichever the kinds.
            (
                "model-m1-d2",
                Some("model-m1-d1.ssh.example.com"),
                disagree("model-m1-d2", "model-m1-d1.ssh.example.com"),
            ),
            // A specific replica is another target than "any replica".
            (
                "model-m1-d1-0",
                Some("model-m1-d1.ssh.example.com"),
                disagree("model-m1-d1-0", "model-m1-d1.ssh.example.com"),
            ),
            (
                "model-m1-d1",
                Some("demo.ssh.example.com"),
                disagree("model-m1-d1", "demo.ssh.example.com"),
            ),
            (
                "training-job-a-0",
                Some("model-m1-d1.ssh.example.com"),
                disagree("training-job-a-0", "model-m1-d1.ssh.example.com"),
            ),
            // A malformed model user name is no target: the host name routes.
            (
                "model-X",
                Some("model-m1-d1.ssh.example.com"),
                Ok(model("m1", "d1", None)),
            ),
        ];
        for (user, host, want) in cases {
            assert_eq!(
                on_default(resolve(user, host, &r)),
                want,
                "{user:?} {host:?}"
            );
        }
        for (host, part) in [
            ("model-m_1-d1.ssh.example.com", r#"invalid model id "m_1""#),
            ("model-m1.ssh.example.com", "no deployment id"),
            ("model-m1-d1-01.ssh.example.com", r#"invalid replica "01""#),
        ] {
            let err = resolve("u", Some(host), &r).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("host name {host:?} is malformed: ")),
                "{err}"
            );
            assert!(err.contains(part), "{host:?}: {err}");
        }
    }

    #[test]
    fn host_names_route_under_the_domain() {
        let r = Routing::new(Some("SSH.Example.com."));
        let sb = |s: &str| Ok(TargetRef::Sandbox(s.into()));
        let job = |j: &str, n| {
            Ok(TargetRef::TrainingJob {
                job: j.into(),
                node: n,
            })
        };
        let host_err = |e: HostError| Err(RouteError::Host(e));
        let cases: Vec<(&str, Option<&str>, Result<TargetRef, RouteError>)> = vec![
            // No front: the username.
            ("demo", None, sb("demo")),
            // The host wins; the username is free.
            ("alice", Some("demo.ssh.example.com"), sb("demo")),
            ("alice", Some("Demo.SSH.example.com."), sb("demo")),
            (
                "x",
                Some("training-job-abc1234-1.ssh.example.com"),
                job("abc1234", 1),
            ),
            // A username that is the same job node agrees.
            (
                "training-job-abc-0",
                Some("training-job-abc-0.ssh.example.com"),
                job("abc", 0),
            ),
            // The bare domain: the username routes.
            ("demo", Some("ssh.example.com"), sb("demo")),
            (
                "training-job-abc-1",
                Some("training-job-abc-0.ssh.example.com"),
                host_err(HostError::Disagree {
                    user: "training-job-abc-1".into(),
                    host: "training-job-abc-0.ssh.example.com".into(),
                }),
            ),
            (
                "u",
                Some("demo.other.org"),
                host_err(HostError::ForeignDomain(
                    "demo.other.org".into(),
                    "ssh.example.com".into(),
                )),
            ),
            // `evilssh.example.com` is not under `ssh.example.com`.
            (
                "u",
                Some("evilssh.example.com"),
                host_err(HostError::ForeignDomain(
                    "evilssh.example.com".into(),
                    "ssh.example.com".into(),
                )),
            ),
        ];
        for (user, host, want) in cases {
            assert_eq!(
                on_default(resolve(user, host, &r)),
                want,
                "{user:?} {host:?}"
            );
        }
        for (host, part) in [
            ("a.b.ssh.example.com", "exactly one label"),
            (".ssh.example.com", "empty label"),
            ("a..ssh.example.com", "empty label"),
            ("-rf.ssh.example.com", "first label"),
            ("a b.ssh.example.com", "only letters"),
            ("ü.ssh.example.com", "only letters"),
            ("", "1-253"),
        ] {
            let err = resolve("u", Some(host), &r).unwrap_err().to_string();
            assert!(err.contains(part), "{host:?}: {err}");
        }
        assert_eq!(
            resolve("u", Some("demo.ssh.example.com"), &Routing::default()),
            Err(RouteError::Host(HostError::NoDomain))
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A cheap stand-in for the fuzz target (fuzz/fuzz_targets/route.rs) in the
        // normal suite: pseudo-random bytes from a fixed seed.
        let r = Routing::new(Some("ssh.example.com"));
        let two = Routing::new(Some("ssh.example.com")).with_remotes(&["a", "b"]);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ab-_.0Z9 \0\xffssh.example.comtraining-job-model-";
        for _ in 0..20_000 {
            let mut s = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for i in 0..(x % 40) {
                let c = alphabet[((x >> (i % 50)) as usize + i as usize) % alphabet.len()];
                s.push(c as char);
            }
            let _ = resolve(&s, Some(&s), &r);
            if let Ok(t) = resolve(&s, Some(&format!("{s}.ssh.example.com")), &r) {
                assert_eq!(route(&t.target.name()), Ok(t.target));
            }
            for remote in ["a", "b", "nope", ""] {
                let host = format!("{s}.{remote}.ssh.example.com");
                if let Ok(t) = resolve(&s, Some(&host), &two) {
                    assert_eq!(route(&t.target.name()).as_ref(), Ok(&t.target));
                    let key = t.key();
                    assert_eq!(split_key(&key), (t.remote.as_deref(), &*t.target.name()));
                }
            }
            if let Ok(t) = route(&s) {
                assert_eq!(route(&t.name()).as_ref(), Ok(&t), "{s:?}");
            }
        }
    }

    #[test]
    fn remotes_are_named_between_target_and_domain() {
        let r = Routing::new(Some("ssh.example.com")).with_remotes(&["a", "gpu-2"]);
        let on = |remote: Option<&str>, target: TargetRef| {
            Ok(Route {
                remote: remote.map(str::to_owned),
                target,
            })
        };
        let sb = |s: &str| TargetRef::Sandbox(s.into());
        let job = |j: &str, node| TargetRef::TrainingJob {
            job: j.into(),
            node,
        };
        let cases: Vec<(&str, Option<&str>, Result<Route, RouteError>)> = vec![
            // No front, or the bare domain: the user name, on the default remote.
            ("demo", None, on(None, sb("demo"))),
            ("demo", Some("ssh.example.com"), on(None, sb("demo"))),
            // One label before the domain: the default remote, as without remotes.
            ("u", Some("demo.ssh.example.com"), on(None, sb("demo"))),
            // A sandbox may be called like a remote: one label is always the target.
            ("u", Some("a.ssh.example.com"), on(None, sb("a"))),
            // <target>.<remote>.<domain>, whatever the case.
            (
                "u",
                Some("demo.a.ssh.example.com"),
                on(Some("a"), sb("demo")),
            ),
            (
                "u",
                Some("DEMO.GPU-2.ssh.Example.com."),
                on(Some("gpu-2"), sb("demo")),
            ),
            (
                "u",
                Some("training-job-abc1234-1.gpu-2.ssh.example.com"),
                on(Some("gpu-2"), job("abc1234", 1)),
            ),
            (
                "u",
                Some("model-m1-d1-0.a.ssh.example.com"),
                on(Some("a"), model("m1", "d1", Some(0))),
            ),
            // A user name naming the same job node agrees, on the host's remote.
            (
                "training-job-abc-0",
                Some("training-job-abc-0.a.ssh.example.com"),
                on(Some("a"), job("abc", 0)),
            ),
            (
                "training-job-abc-1",
                Some("training-job-abc-0.a.ssh.example.com"),
                Err(RouteError::Host(HostError::Disagree {
                    user: "training-job-abc-1".into(),
                    host: "training-job-abc-0.a.ssh.example.com".into(),
                })),
            ),
        ];
        for (user, host, want) in cases {
            assert_eq!(resolve(user, host, &r), want, "{user:?} {host:?}");
        }
        assert_eq!(
            resolve("u", Some("x.nope.ssh.example.com"), &r)
                .unwrap_err()
                .to_string(),
            r#"host name "x.nope.ssh.example.com": unknown remote "nope"; this gateway's remotes are: a, gpu-2"#
        );
        let err = resolve("u", Some("x.nope.ssh.example.com"), &r).unwrap_err();
        assert_eq!(err.shown(), "x.nope.ssh.example.com");
        for (host, part) in [
            ("x.a.b.ssh.example.com", "at most two labels"),
            ("x..ssh.example.com", "empty label"),
            (".a.ssh.example.com", "empty label"),
            ("-rf.a.ssh.example.com", "first label"),
            ("model-m1.a.ssh.example.com", "no deployment id"),
            ("x.a.other.org", "not under this gateway's domain"),
        ] {
            let err = resolve("u", Some(host), &r).unwrap_err().to_string();
            assert!(err.contains(part), "{host:?}: {err}");
        }
        // Without remotes, two labels stay malformed.
        let plain = Routing::new(Some("ssh.example.com"));
        let err = resolve("u", Some("demo.a.ssh.example.com"), &plain)
            .unwrap_err()
            .to_string();
        assert!(err.contains("remotes are not configured"), "{err}");
        // Keys tell remotes apart, and split back.
        let on_a = Route {
            remote: Some("a".into()),
            target: sb("demo"),
        };
        assert_eq!(on_a.key(), "a/demo");
        assert_eq!(split_key("a/demo"), (Some("a"), "demo"));
        assert_eq!(Route::local(sb("demo")).key(), "demo");
        assert_eq!(split_key("demo"), (None, "demo"));
    }

    #[test]
    fn refusal_reads_like_no_access() {
        let msg = route("../x").unwrap_err().to_string();
        assert_eq!(
            msg,
            "sandbox \"../x\" does not exist or you have no access to it"
        );
    }
}
