//! Route stage: the SSH username (and later a front-door hint such as a TLS SNI host)
//! becomes a `TargetRef`. Pure: no I/O, so it is table-tested and fuzzable.

use std::fmt;

/// What the user asked to reach, before anyone has checked it exists or is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetRef {
    Sandbox(String),
}

impl TargetRef {
    /// The name as the user typed it, for messages.
    pub fn name(&self) -> &str {
        match self {
            TargetRef::Sandbox(id) => id,
        }
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetRef::Sandbox(id) => write!(f, "sandbox {id:?}"),
        }
    }
}

/// Only a malformed name fails here; its message reads like any unknown sandbox so a
/// prober learns nothing from the difference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox {0:?} does not exist or you have no access to it")]
pub struct RouteError(pub String);

const MAX_ID: usize = 63;

/// `username` is the SSH user name: a sandbox id (`ssh demo@gw`).
pub fn route(username: &str) -> Result<TargetRef, RouteError> {
    let shown: String = username.chars().take(MAX_ID + 1).collect();
    if valid_id(username) {
        Ok(TargetRef::Sandbox(username.to_owned()))
    } else {
        Err(RouteError(shown))
    }
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
    fn refusal_reads_like_no_access() {
        let msg = route("../x").unwrap_err().to_string();
        assert_eq!(
            msg,
            "sandbox \"../x\" does not exist or you have no access to it"
        );
    }
}
