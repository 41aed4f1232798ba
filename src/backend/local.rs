//! The local backend: each channel is a process of the gateway's own user, started in
//! the sandbox's working directory with a clean environment. This is the embedded
//! default and what the end-to-end tests drive; it is not an isolation boundary.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::pty::{self, PtyMaster};
use super::{
    Backend, BackendError, Control, Duplex, ExecSpec, Exit, Process, Program, Signal,
    sftp_probe_script,
};
use crate::control::{Location, Target};

/// How long a hung-up program gets to exit before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// Control messages queued per program (resizes, signals).
const CONTROL_QUEUE: usize = 16;

pub struct LocalBackend {
    shell: PathBuf,
}

impl LocalBackend {
    pub fn new(shell: PathBuf) -> Self {
        Self { shell }
    }

    fn command(&self, spec: &ExecSpec, workdir: &std::path::Path) -> Command {
        let mut cmd = match &spec.program {
            Program::Shell => {
                let mut c = Command::new(&self.shell);
                c.arg("-l");
                c
            }
            Program::Command(line) => {
                let mut c = Command::new(&self.shell);
                c.arg("-c").arg(line);
                c
            }
            Program::Sftp => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(sftp_probe_script());
                c
            }
        };
        // Nothing of the gateway's own environment (database URLs, tokens) leaks in.
        cmd.env_clear()
            .current_dir(workdir)
            .env("HOME", workdir)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("SHELL", &self.shell)
            .env("LANG", "C.UTF-8");
        if let Some(user) = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
        {
            cmd.env("USER", &user.name).env("LOGNAME", &user.name);
        }
        if let Some(pty) = &spec.pty {
            cmd.env("TERM", &pty.term);
        }
        for (name, value) in &spec.env {
            cmd.env(name, value);
        }
        cmd.kill_on_drop(true);
        cmd
    }
}

fn workdir(target: &Target) -> Result<&std::path::Path, BackendError> {
    match target.location() {
        Location::Local { workdir } => Ok(workdir),
        Location::Pod { .. } => Err(BackendError::Internal(
            "the local backend cannot run pods".into(),
        )),
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    async fn exec(&self, target: &Target, spec: ExecSpec) -> Result<Process, BackendError> {
        let mut cmd = self.command(&spec, workdir(target)?);
        let spawn_err =
            |e: std::io::Error| BackendError::Internal(format!("spawning {:?}: {e}", spec.program));
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (exit_tx, exit_rx) = oneshot::channel();
        match &spec.pty {
            Some(pty_spec) => {
                let pair = pty::open(pty_spec.size).map_err(spawn_err)?;
                let stdio = |fd: &std::os::fd::OwnedFd| fd.try_clone().map(Stdio::from);
                cmd.stdin(stdio(&pair.slave).map_err(spawn_err)?)
                    .stdout(stdio(&pair.slave).map_err(spawn_err)?)
                    .stderr(stdio(&pair.slave).map_err(spawn_err)?);
                pty::make_controlling_terminal(&mut cmd);
                let child = cmd.spawn().map_err(spawn_err)?;
                // The parent's slave must close, or reads never see the end of the PTY.
                drop(pair.slave);
                tokio::spawn(supervise(
                    child,
                    Some(pair.master.clone()),
                    control_rx,
                    exit_tx,
                ));
                Ok(Process {
                    stdin: Box::new(pair.master.clone()),
                    stdout: Box::new(pair.master),
                    stderr: None,
                    control: control_tx,
                    exit: exit_rx,
                    tty: true,
                })
            }
            None => {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0);
                let mut child = cmd.spawn().map_err(spawn_err)?;
                let (Some(stdin), Some(stdout), Some(stderr)) =
                    (child.stdin.take(), child.stdout.take(), child.stderr.take())
                else {
                    return Err(BackendError::Internal("child stdio missing".into()));
                };
                tokio::spawn(supervise(child, None, control_rx, exit_tx));
                Ok(Process {
                    stdin: Box::new(stdin),
                    stdout: Box::new(stdout),
                    stderr: Some(Box::new(stderr)),
                    control: control_tx,
                    exit: exit_rx,
                    tty: false,
                })
            }
        }
    }

    async fn connect(&self, _target: &Target, port: u16) -> Result<Box<dyn Duplex>, BackendError> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| BackendError::User(format!("connect to port {port} failed: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}

/// Owns the child: applies resizes and signals, reports the exit, and ends the
/// process group once nobody holds the control sender any more (the channel closed).
async fn supervise(
    mut child: Child,
    master: Option<PtyMaster>,
    mut control: mpsc::Receiver<Control>,
    exit_tx: oneshot::Sender<Exit>,
) {
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            msg = control.recv() => match msg {
                Some(Control::Resize(size)) => {
                    if let Some(m) = &master && let Err(e) = m.resize(size) {
                        tracing::debug!(error = %e, "resize failed");
                    }
                }
                Some(Control::Signal(sig)) => {
                    if let Some(pgid) = pgid {
                        let _ = killpg(pgid, to_nix(sig));
                    }
                }
                None => {
                    // The client went away: hang up like a terminal would, then insist.
                    if let Some(pgid) = pgid {
                        let _ = killpg(pgid, NixSignal::SIGHUP);
                        let _ = killpg(pgid, NixSignal::SIGCONT);
                    }
                    match tokio::time::timeout(HANGUP_GRACE, child.wait()).await {
                        Ok(status) => break status,
                        Err(_) => {
                            if let Some(pgid) = pgid {
                                let _ = killpg(pgid, NixSignal::SIGKILL);
                            }
                            break child.wait().await;
                        }
                    }
                }
            },
        }
    };
    let exit = match status {
        Ok(status) => exit_of(status),
        Err(e) => {
            tracing::warn!(error = %e, "waiting for child failed");
            Exit::Code(255)
        }
    };
    let _ = exit_tx.send(exit);
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return Exit::Code(code as u32);
    }
    let sig = status.signal().unwrap_or(libc::SIGKILL);
    let name = NixSignal::try_from(sig)
        .map(|s| s.as_str().trim_start_matches("SIG").to_owned())
        .unwrap_or_else(|_| sig.to_string());
    Exit::Signal {
        name,
        core_dumped: status.core_dumped(),
    }
}

fn to_nix(sig: Signal) -> NixSignal {
    match sig {
        Signal::Hup => NixSignal::SIGHUP,
        Signal::Int => NixSignal::SIGINT,
        Signal::Quit => NixSignal::SIGQUIT,
        Signal::Kill => NixSignal::SIGKILL,
        Signal::Term => NixSignal::SIGTERM,
        Signal::Usr1 => NixSignal::SIGUSR1,
        Signal::Usr2 => NixSignal::SIGUSR2,
    }
}
