//! The one place channel requests are validated: what a session channel may ask for
//! before its program starts (pty, env, agent forwarding, shell/exec/subsystem), and
//! where a forward may go. Pure functions over the client's values; the handler
//! replies with their verdict and hands the accepted setup to the channel task.

use crate::backend::{ExecSpec, Program, PtySpec, window_size_from_ssh};
use crate::config::SshConfig;

use super::refusal::Refusal;

/// Env requests honoured per channel.
pub const MAX_ENV: usize = 64;
const MAX_ENV_VALUE: usize = 4096;
/// Longest command line accepted (sshd has no limit; 256 KiB is far past any shell's
/// ARG_MAX-sized one-liner and bounds what one request can make us hold).
const MAX_COMMAND: usize = 256 * 1024;

/// What a session channel accumulates before its program starts.
#[derive(Debug, Default)]
pub struct SessionSetup {
    pty: Option<PtySpec>,
    env: Vec<(String, String)>,
    agent: bool,
}

/// What the channel task starts: the program, and whether agent forwarding was
/// accepted for it.
#[derive(Debug)]
pub struct SessionStart {
    pub spec: ExecSpec,
    pub agent: bool,
}

impl SessionSetup {
    pub fn pty(&mut self, term: &str, cols: u32, rows: u32, px_w: u32, px_h: u32) {
        self.pty = Some(PtySpec {
            term: sanitize_term(term),
            size: window_size_from_ssh(cols, rows, px_w, px_h),
        });
    }

    /// Records a variable if policy allows it; returns whether it did.
    pub fn env(&mut self, settings: &SshConfig, name: &str, value: &str) -> bool {
        let ok = self.env.len() < MAX_ENV
            && value.len() <= MAX_ENV_VALUE
            && !name.contains('=')
            && !name.contains('\0')
            && !value.contains('\0')
            && settings.env_allowed(name);
        if ok {
            self.env.push((name.to_owned(), value.to_owned()));
        }
        ok
    }

    /// A resize before the program starts changes the size it starts with.
    pub fn resize(&mut self, cols: u32, rows: u32, px_w: u32, px_h: u32) {
        if let Some(p) = &mut self.pty {
            p.size = window_size_from_ssh(cols, rows, px_w, px_h);
        }
    }

    /// The client asked for agent forwarding, and may have it.
    pub fn agent(&mut self) {
        self.agent = true;
    }

    pub fn start(self, program: Program) -> SessionStart {
        SessionStart {
            spec: ExecSpec {
                program,
                pty: self.pty,
                env: self.env,
            },
            agent: self.agent,
        }
    }
}

/// `exec` requests: the command line, as the shell will see it.
pub fn command(data: &[u8]) -> Result<Program, Refusal> {
    if data.len() > MAX_COMMAND {
        return Err(Refusal::CommandTooLong);
    }
    Ok(Program::Command(String::from_utf8_lossy(data).into_owned()))
}

pub fn subsystem(name: &str) -> Result<Program, Refusal> {
    match name {
        "sftp" => Ok(Program::Sftp),
        other => Err(Refusal::UnknownSubsystem(other.chars().take(64).collect())),
    }
}

/// `direct-tcpip` may reach only ports on the target's own loopback.
pub fn forward_destination(host: &str, port: u32) -> Result<u16, Refusal> {
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]");
    match u16::try_from(port) {
        Ok(port) if loopback && port != 0 => Ok(port),
        _ => Err(Refusal::ForwardDestination),
    }
}

/// `direct-streamlocal` may name any socket path the kernel could take: absolute or
/// relative to the workload's working directory, no NUL, within sun_path's 108 bytes.
pub fn socket_path(path: &str) -> Result<&str, Refusal> {
    if path.is_empty() || path.len() > 107 || path.contains('\0') {
        return Err(Refusal::SocketPath);
    }
    Ok(path)
}

/// TERM is put in the environment: keep it to a plain terminal name.
fn sanitize_term(term: &str) -> String {
    let ok = !term.is_empty()
        && term.len() <= 64
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if ok {
        term.to_owned()
    } else {
        "xterm".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_what_a_socket_can_have() {
        assert_eq!(socket_path("/run/app.sock").ok(), Some("/run/app.sock"));
        assert_eq!(socket_path("rel.sock").ok(), Some("rel.sock"));
        assert_eq!(socket_path(&"x".repeat(107)).ok().map(str::len), Some(107));
        // OpenSSH's client refuses these itself; another client need not.
        for bad in [String::new(), "x".repeat(108), "/run/a\0b".to_owned()] {
            assert!(
                matches!(socket_path(&bad), Err(Refusal::SocketPath)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn forwards_only_to_loopback_ports() {
        assert_eq!(forward_destination("localhost", 8080).ok(), Some(8080));
        assert_eq!(forward_destination("::1", 22).ok(), Some(22));
        assert!(forward_destination("10.0.0.1", 80).is_err());
        assert!(forward_destination("localhost", 0).is_err());
        assert!(forward_destination("localhost", 70000).is_err());
        assert!(forward_destination("metadata.google.internal", 80).is_err());
    }

    #[test]
    fn terminal_names_are_plain() {
        assert_eq!(sanitize_term("xterm-256color"), "xterm-256color");
        assert_eq!(sanitize_term("x; rm -rf /"), "xterm");
        assert_eq!(sanitize_term(""), "xterm");
    }

    #[test]
    fn only_sftp_is_a_subsystem() {
        assert_eq!(subsystem("sftp").ok(), Some(Program::Sftp));
        assert!(subsystem("netconf").is_err());
    }
}
