//! Per channel: does the program run as the client asked, or through the helper?
//!
//! - The SFTP subsystem: `[sftp] server` decides — `workload` always runs the image's
//!   own sftp-server (or explains its absence), `helper` always the helper, `auto` the
//!   image's own when it has one and the helper otherwise.
//! - `scp -t …` / `scp -f …` (the remote side of legacy scp, `scp -O`) in an image
//!   without scp: the helper plays it, with the rest of the command line left to the
//!   shell exactly as a real scp would receive it (globs, quoting).
//! - `rsync` in an image without rsync: refused with a clear message; rsync's protocol
//!   is not emulated.
//!
//! Other programs never cause a probe, so they pay nothing for this.

use super::Placer;
use crate::backend::{Backend, BackendError, ExecSpec, Program, sh_quote as quote};
use crate::config::SftpServer;
use crate::control::Target;

/// The exit status of a helper command whose copy has vanished (like sh's "not found").
pub const HELPER_MISSING: u32 = 127;

/// What a channel will run.
pub struct Resolved {
    pub spec: ExecSpec,
    /// Set when the program is the placed helper (so a vanished copy can be forgotten).
    pub via_helper: bool,
}

pub async fn resolve(
    placer: &Placer,
    server: SftpServer,
    backend: &dyn Backend,
    target: &Target,
    spec: ExecSpec,
) -> Result<Resolved, BackendError> {
    let as_asked = |spec| {
        Ok(Resolved {
            spec,
            via_helper: false,
        })
    };
    let via_helper = |spec: ExecSpec, line: String| {
        Ok(Resolved {
            spec: ExecSpec {
                program: Program::Command(line),
                ..spec
            },
            via_helper: true,
        })
    };
    match &spec.program {
        Program::Shell => as_asked(spec),
        Program::Sftp => {
            let use_helper = match server {
                SftpServer::Workload => false,
                SftpServer::Helper => true,
                SftpServer::Auto => placer.facts(backend, target).await?.sftp_server.is_none(),
            };
            if !use_helper {
                return as_asked(spec);
            }
            let path = placer.helper(backend, target).await?;
            via_helper(spec, helper_line(&path, "sftp-server"))
        }
        Program::Command(line) => match remote_side(line) {
            Some(Remote::Scp(rest)) => {
                if placer.facts(backend, target).await?.scp {
                    return as_asked(spec);
                }
                let path = placer.helper(backend, target).await?;
                let line = helper_line(&path, &format!("scp{rest}"));
                via_helper(spec, line)
            }
            Some(Remote::Rsync) => {
                if placer.facts(backend, target).await?.rsync {
                    return as_asked(spec);
                }
                Err(BackendError::User(
                    "rsync is not installed in this sandbox, and rsync needs it on both ends. \
                     Install rsync in the image, or copy with scp or sftp, which work here"
                        .into(),
                ))
            }
            None => as_asked(spec),
        },
    }
}

/// The command line that relays the Unix socket `socket` inside the workload over the
/// exec stream (`direct-streamlocal@openssh.com`), with the helper placed at `helper`.
pub fn relay_unix_line(helper: &str, socket: &str) -> String {
    helper_line(helper, &format!("relay-unix {}", quote(socket)))
}

/// The command line that listens on a fresh agent socket inside the workload and
/// carries its connections over the exec stream (agent forwarding).
pub fn agent_listen_line(helper: &str) -> String {
    helper_line(helper, "agent-listen")
}

/// How long a failed helper command has to say why on stderr.
const WHY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// What the gateway reads of it: its one line, and a bound on a chatty one.
const WHY_MAX: usize = 1024;

/// What a helper command that failed said on stderr (its first read, bounded), without
/// the helper's own `ssh-gateway-helper: ` prefix; empty if it said nothing in time.
pub async fn helper_said(stderr: Option<crate::backend::BoxRead>) -> String {
    use tokio::io::AsyncReadExt;
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut buf = vec![0u8; WHY_MAX];
    let n = match tokio::time::timeout(WHY_TIMEOUT, stderr.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    let why = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    why.strip_prefix("ssh-gateway-helper: ")
        .map(str::to_owned)
        .unwrap_or(why)
}

/// Runs the helper with `args` (left to the shell, unquoted); if the copy has vanished
/// it says so instead of sh's bare "not found".
fn helper_line(path: &str, args: &str) -> String {
    let p = quote(path);
    format!(
        "if [ ! -x {p} ]; then echo 'ssh-gateway: the file-transfer helper was removed from this sandbox; \
         connect again and the gateway will place a new copy' >&2; exit {HELPER_MISSING}; fi; exec {p} {args}"
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Remote<'a> {
    /// The command line after the word `scp`.
    Scp(&'a str),
    Rsync,
}

/// Recognizes the command lines OpenSSH's scp and rsync send: `scp [-v] [-r] [-p] [-d]
/// -t|-f [--] path` and `rsync --server …`.
fn remote_side(line: &str) -> Option<Remote<'_>> {
    let trimmed = line.trim_start();
    let mut words = trimmed.split_ascii_whitespace();
    match words.next()? {
        "scp" => {
            let remote = words.take_while(|w| *w != "--").any(|w| {
                w.starts_with('-') && !w.starts_with("--") && (w.contains('t') || w.contains('f'))
            });
            remote.then(|| Remote::Scp(&trimmed[3..]))
        }
        "rsync" => Some(Remote::Rsync),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_side_of_scp_and_rsync_is_recognized() {
        assert_eq!(
            remote_side("scp -t -- /tmp/x"),
            Some(Remote::Scp(" -t -- /tmp/x"))
        );
        assert_eq!(
            remote_side("  scp -v -r -p -f 'a b'"),
            Some(Remote::Scp(" -v -r -p -f 'a b'"))
        );
        assert_eq!(remote_side("scp -pt dir"), Some(Remote::Scp(" -pt dir")));
        // Someone running scp from inside the sandbox is not the remote side.
        assert_eq!(remote_side("scp other:file ."), None);
        assert_eq!(remote_side("scp -- -t"), None);
        assert_eq!(remote_side("scpx -t a"), None);
        assert_eq!(
            remote_side("rsync --server -vlogDtpre.iLsfxCIvu . /d"),
            Some(Remote::Rsync)
        );
        assert_eq!(remote_side("echo scp -t"), None);
    }

    #[test]
    fn a_vanished_helper_is_explained() {
        let line = helper_line("/nonexistent/it's/helper", "sftp-server");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&line)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(HELPER_MISSING as i32));
        assert!(String::from_utf8_lossy(&out.stderr).contains("was removed"));
    }
}
