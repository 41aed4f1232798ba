//! Backend stage: runs one SSH channel's program (shell, command, SFTP server) or opens
//! one forwarded connection inside an authorized `Target`, and hands back plain streams
//! plus a control/exit pair for the bridge.

pub mod kubernetes;
pub mod local;
mod pid_line;

pub use sgw_pty as pty;
pub use sgw_pty::WindowSize;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::control::Target;

/// What to run for a session channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The user's login shell (`ssh host`).
    Shell,
    /// A command line, given to the shell with `-c` (`ssh host cmd`).
    Command(String),
    /// The SFTP subsystem: the workload's own `sftp-server`.
    Sftp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtySpec {
    pub term: String,
    pub size: WindowSize,
}

/// SSH carries u32s; terminals use u16s. Clamp rather than wrap.
pub fn window_size_from_ssh(cols: u32, rows: u32, px_width: u32, px_height: u32) -> WindowSize {
    let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
    WindowSize {
        cols: clamp(cols),
        rows: clamp(rows),
        px_width: clamp(px_width),
        px_height: clamp(px_height),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub program: Program,
    pub pty: Option<PtySpec>,
    /// Client-sent variables that passed the `accept_env` filter, and the gateway's
    /// own (`SSH_AUTH_SOCK` with agent forwarding), which no filter applies to.
    pub env: Vec<(String, String)>,
}

/// Signals a client may send (RFC 4254 §6.9 names, without `SIG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Kill,
    Term,
    Usr1,
    Usr2,
}

/// Sent by the bridge to a running program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Resize(WindowSize),
    Signal(Signal),
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(u32),
    /// Killed by a signal; `name` without `SIG` (`INT`, `KILL`).
    Signal {
        name: String,
        core_dumped: bool,
    },
}

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A started program. Dropping `control` asks the backend to end it.
pub struct Process {
    pub stdin: BoxWrite,
    pub stdout: BoxRead,
    /// `None` with a PTY: stderr is merged into the terminal.
    pub stderr: Option<BoxRead>,
    pub control: mpsc::Sender<Control>,
    /// Resolves once, when the program has exited.
    pub exit: oneshot::Receiver<Exit>,
    pub tty: bool,
}

/// A bidirectional byte stream (a forwarded TCP connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Shown to the user as is.
    #[error("{0}")]
    User(String),
    /// The target's workload no longer exists (its pod was deleted or replaced):
    /// the control plane may name a new one.
    #[error("{0}")]
    Gone(String),
    /// Logged; the user sees a generic message.
    #[error("internal backend error: {0}")]
    Internal(String),
    /// The cluster refused the gateway itself (missing RBAC): logged; the user reads
    /// that it is the operator's to fix (`control::DENIED`).
    #[error("the cluster refused the gateway: {0}")]
    Denied(String),
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn exec(&self, target: &Target, spec: ExecSpec) -> Result<Process, BackendError>;
    /// Opens a TCP connection to `port` on the target's own loopback.
    async fn connect(&self, target: &Target, port: u16) -> Result<Box<dyn Duplex>, BackendError>;
}

/// `'…'` quoting for POSIX sh: any value becomes one literal word.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Where distributions put sftp-server (Debian/Ubuntu, RHEL/Fedora, Alpine/Arch, others).
pub const SFTP_SERVER_PATHS: &[&str] = &[
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/sftp-server",
];

/// A POSIX sh script that execs the first sftp-server found, or explains on stderr.
/// Running it inside the workload lets every backend probe the workload's own image.
pub fn sftp_probe_script() -> String {
    sftp_probe_script_for(SFTP_SERVER_PATHS)
}

fn sftp_probe_script_for(paths: &[&str]) -> String {
    let paths = paths.join(" ");
    format!(
        "for p in {paths}; do if [ -x \"$p\" ]; then exec \"$p\"; fi; done; \
         echo 'ssh-gateway: SFTP is not available: this sandbox has no sftp-server (looked in {paths}). \
         Install it in the image (Debian/Ubuntu: openssh-sftp-server, RHEL/Fedora: openssh-server, Alpine: openssh-sftp-server).' >&2; \
         exit 127"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_sftp_server_is_explained() {
        let script = sftp_probe_script_for(&["/nonexistent/sftp-server", "/also/missing"]);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(127));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("SFTP is not available"), "{err}");
        assert!(
            err.contains("/nonexistent/sftp-server /also/missing"),
            "{err}"
        );
    }

    #[test]
    fn present_sftp_server_is_executed() {
        // `true` stands in for an sftp-server: the probe must exec the first that exists.
        let script = sftp_probe_script_for(&["/nonexistent/sftp-server", "/bin/true"]);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty());
    }
}
