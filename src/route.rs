//! Route stage: the SSH username (and later a front-door hint such as a TLS SNI host)
//! becomes a `TargetRef`. Pure: no I/O, so it is table-tested and fuzzable.

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
}

impl TargetRef {
    /// The name as the user typed it, for messages.
    pub fn name(&self) -> String {
        match self {
            TargetRef::Sandbox(id) => id.clone(),
            TargetRef::TrainingJob { job, node } => format!("{JOB_PREFIX}{job}-{node}"),
        }
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetRef::Sandbox(id) => write!(f, "sandbox {id:?}"),
            TargetRef::TrainingJob { job, node } => write!(f, "training job {job:?} node {node}"),
        }
    }
}

const JOB_PREFIX: &str = "training-job-";

/// Only a malformed name fails here; its message reads like any unknown sandbox so a
/// prober learns nothing from the difference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox {0:?} does not exist or you have no access to it")]
pub struct RouteError(pub String);

const MAX_ID: usize = 63;

/// `username` is the SSH user name: a sandbox id (`ssh demo@gw`) or a training job
/// node (`ssh training-job-<id>-<node>@gw`).
pub fn route(username: &str) -> Result<TargetRef, RouteError> {
    let shown: String = username.chars().take(MAX_ID + 1).collect();
    if !valid_id(username) {
        return Err(RouteError(shown));
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

    #[test]
    fn refusal_reads_like_no_access() {
        let msg = route("../x").unwrap_err().to_string();
        assert_eq!(
            msg,
            "sandbox \"../x\" does not exist or you have no access to it"
        );
    }
}
