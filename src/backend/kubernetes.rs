//! The Kubernetes backend: each session channel is one pods/exec stream, each forwarded
//! connection one pods/portforward stream. The exec API has no environment or signal
//! channel, so TERM and permitted variables travel in a `sh -c` wrapper, and ^C as the
//! byte 0x03 through the terminal.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::sync::{mpsc, oneshot};

use super::{
    Backend, BackendError, Control, Duplex, ExecSpec, Exit, Process, Program, sftp_probe_script,
    sh_quote,
};
use crate::control::{Location, Target};
use crate::kubernetes::exec::{self, ExecRequest, Outcome};
use crate::kubernetes::portforward;

pub struct KubernetesBackend {
    client: kube::Client,
    timeout: Duration,
}

impl KubernetesBackend {
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

/// Names that are safe to put after `export` unquoted.
fn plain_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The argv that runs `spec` in a container: a sh wrapper that exports the session's
/// variables, starts in $HOME like sshd does, and prefers bash as the user's shell.
/// Without a terminal it first says its pid on stderr (`pid_line`), which the program
/// keeps through `exec`, so a `signal` request can reach it.
pub fn command(spec: &ExecSpec) -> Vec<String> {
    let mut script = String::new();
    if spec.pty.is_none() {
        script.push_str("printf '%s\\n' \"$$\" >&2; ");
    }
    script.push_str("cd \"$HOME\" 2>/dev/null; ");
    let term = spec
        .pty
        .as_ref()
        .map(|p| ("TERM".to_owned(), p.term.clone()));
    for (name, value) in term.iter().chain(spec.env.iter()) {
        if plain_name(name) {
            script.push_str(&format!("export {name}={}; ", sh_quote(value)));
        }
    }
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned()];
    match &spec.program {
        Program::Shell => {
            script.push_str("if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l");
            argv.push(script);
        }
        Program::Command(line) => {
            // The user's command line travels as $0, so it needs no quoting here.
            script.push_str(
                "if [ -x /bin/bash ]; then exec /bin/bash -c \"$0\"; fi; exec /bin/sh -c \"$0\"",
            );
            argv.push(script);
            argv.push(line.clone());
        }
        Program::Sftp => {
            script.push_str(&sftp_probe_script());
            argv.push(script);
        }
    }
    argv
}

/// The namespace, name, uid and container of a pod target.
fn pod_location(target: &Target) -> Result<(&str, &str, &str, &str), BackendError> {
    match target.location() {
        Location::Pod {
            namespace,
            pod,
            uid,
            container,
            ..
        } => Ok((namespace, pod, uid, container)),
        Location::Local { .. } => Err(BackendError::Internal(
            "the kubernetes backend needs a pod target".into(),
        )),
    }
}

/// Turns an API error at stream set-up (`what`: "exec into" or "port-forward to")
/// into what the user reads.
fn setup_error(what: &str, pod: &str, e: kube::Error) -> BackendError {
    match &e {
        kube::Error::Api(status) if status.code == 404 => BackendError::Gone(format!(
            "the pod running this sandbox ({pod}) no longer exists; try again in a moment"
        )),
        kube::Error::Api(status) if status.code == 400 => {
            BackendError::User(format!("the sandbox is not ready: {}", status.message))
        }
        kube::Error::Api(status) if status.code == 403 => {
            BackendError::Denied(format!("{what} {pod}: {e}"))
        }
        _ => BackendError::Internal(format!("{what} {pod}: {e}")),
    }
}

/// Whether `pod` is the object `uid` names (a target without a uid pins nothing).
fn is_object(pod: &Pod, uid: &str) -> bool {
    uid.is_empty() || pod.metadata.uid.as_deref() == Some(uid)
}

impl KubernetesBackend {
    /// The pod of that name as the API server has it now (`None`: there is none),
    /// or the API's error, or `Err` when it did not answer within the timeout.
    async fn read_pod(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<Result<Option<Pod>, kube::Error>, tokio::time::error::Elapsed> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        tokio::time::timeout(self.timeout, api.get_opt(pod)).await
    }

    /// Whether the pod named `pod` is still the object `uid` authorization was decided
    /// on, asked once a stream to it is open. The exec and port-forward APIs address
    /// a pod by name, so a pod deleted and re-created under that name between the
    /// check and the stream (by anyone who may create pods there) would receive the
    /// user's input. A pod of that name now with `uid` proves the stream reached it:
    /// the kubelet resolved the name before this read, and a uid never returns.
    /// Nothing flows either way until this says yes.
    async fn still_the_pod(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
    ) -> Result<(), BackendError> {
        if uid.is_empty() {
            return Ok(());
        }
        match self.read_pod(namespace, pod).await {
            Ok(Ok(Some(p))) if is_object(&p, uid) => Ok(()),
            Ok(Ok(found)) => {
                tracing::warn!(
                    %namespace,
                    %pod,
                    authorized = %uid,
                    now = found.as_ref().and_then(|p| p.metadata.uid.as_deref()).unwrap_or("none"),
                    "the pod was replaced under its name between the access check and the stream; refused"
                );
                Err(BackendError::Gone(format!(
                    "the pod running this sandbox ({pod}) was replaced just now; try again in a moment"
                )))
            }
            Ok(Err(e)) => Err(setup_error("read", pod, e)),
            Err(_) => Err(BackendError::User(
                "the Kubernetes API did not answer in time; try again in a moment".into(),
            )),
        }
    }

    /// After a stream ends badly: was the pod (`uid`, the object the stream ran in)
    /// deleted under us? A StatefulSet re-creates a deleted pod under the same name at
    /// once, so a pod of that name with another uid means ours is gone.
    async fn pod_gone(&self, namespace: &str, pod: &str, uid: &str) -> bool {
        match self.read_pod(namespace, pod).await {
            Ok(Ok(None)) => true,
            Ok(Ok(Some(p))) => p.metadata.deletion_timestamp.is_some() || !is_object(&p, uid),
            // Say why the session's end goes unexplained (a Role without `get` on
            // pods, say), rather than guessing.
            Ok(Err(e)) => {
                tracing::warn!(%namespace, %pod, error = %e, "could not read the pod after its stream ended, so cannot tell whether it was deleted");
                false
            }
            Err(_) => {
                tracing::warn!(%namespace, %pod, "reading the pod after its stream ended timed out");
                false
            }
        }
    }
}

/// Delivers a `signal` request to a running program by a second exec in its container.
struct Signaller {
    client: kube::Client,
    timeout: std::time::Duration,
    namespace: String,
    pod: String,
    container: String,
}

impl Signaller {
    async fn kill(&self, pid: u32, sig: super::Signal) {
        use super::Signal;
        let name = match sig {
            Signal::Hup => "HUP",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
        };
        let request = ExecRequest {
            namespace: &self.namespace,
            pod: &self.pod,
            container: &self.container,
            command: vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!("kill -s {name} {pid}"),
            ],
            tty: false,
        };
        // The kill's own stream ends with it; it is dropped once it has.
        match tokio::time::timeout(self.timeout, exec::start(&self.client, request)).await {
            Ok(Ok(stream)) => {
                let _ = tokio::time::timeout(self.timeout, stream.ended).await;
            }
            Ok(Err(e)) => tracing::info!(pod = %self.pod, error = %e, "could not deliver a signal"),
            Err(_) => tracing::info!(pod = %self.pod, "delivering a signal timed out"),
        }
    }
}

/// Runtime errors read like `OCI runtime exec failed: … exec: "/bin/sh": stat /bin/sh: no
/// such file or directory`; the one users can act on is a missing shell.
fn explain_failure(message: &str) -> String {
    let no_shell = message.contains("/bin/sh")
        && (message.contains("no such file") || message.contains("not found"));
    if no_shell {
        "this container has no /bin/sh; SSH sessions need a POSIX shell in the image (distroless images have none)".to_owned()
    } else {
        message.to_owned()
    }
}

#[async_trait::async_trait]
impl Backend for KubernetesBackend {
    async fn exec(&self, target: &Target, spec: ExecSpec) -> Result<Process, BackendError> {
        let (namespace, pod, uid, container) = pod_location(target)?;
        let tty = spec.pty.is_some();
        let request = ExecRequest {
            namespace,
            pod,
            container,
            command: command(&spec),
            tty,
        };
        let stream =
            match tokio::time::timeout(self.timeout, exec::start(&self.client, request)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(setup_error("exec into", pod, e)),
                Err(_) => {
                    return Err(BackendError::User(
                        "the Kubernetes API did not answer in time; try again in a moment".into(),
                    ));
                }
            };
        if let Err(e) = self.still_the_pod(namespace, pod, uid).await {
            // Closing the stream ends the program it started, unheard.
            stream.abandon.cancel();
            return Err(e);
        }
        if let Some(p) = &spec.pty {
            let _ = stream.resize.send(p.size).await;
        }
        let (control_tx, mut control_rx) = mpsc::channel::<Control>(16);
        let resize = stream.resize.clone();
        // Without a terminal the wrapper's first stderr line is the program's pid.
        let (stderr, mut pid_rx) = match stream.stderr {
            Some(stderr) => {
                let (reader, pid) = super::pid_line::PidLine::new(stderr);
                (Some(Box::new(reader) as super::BoxRead), Some(pid))
            }
            None => (None, None),
        };
        let signaller = Signaller {
            client: self.client.clone(),
            timeout: self.timeout,
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
        };
        // The bridge drops `control` when the client is gone: close the stream then,
        // so the remote process ends too (the exec API has no kill).
        let abandon = stream.abandon.clone().drop_guard();
        tokio::spawn(async move {
            let _abandon = abandon;
            let mut pid = None;
            while let Some(control) = control_rx.recv().await {
                match control {
                    Control::Resize(size) => {
                        let _ = resize.send(size).await;
                    }
                    // No signal channel in the exec API: a second exec runs `kill`
                    // on the program's pid. With a tty, ^C already travels as a byte
                    // (and the wrapper says no pid).
                    Control::Signal(sig) => {
                        if pid.is_none() {
                            pid = pid_rx.as_mut().and_then(|rx| rx.try_recv().ok());
                        }
                        match pid {
                            Some(pid) => signaller.kill(pid, sig).await,
                            None => tracing::debug!(?sig, "signal not deliverable: no pid known"),
                        }
                    }
                }
            }
        });
        let (exit_tx, exit_rx) = oneshot::channel();
        let ended = stream.ended;
        let backend = KubernetesBackend {
            client: self.client.clone(),
            timeout: self.timeout,
        };
        let (namespace, pod, uid) = (namespace.to_owned(), pod.to_owned(), uid.to_owned());
        tokio::spawn(async move {
            let Ok(ended) = ended.await else {
                let _ = exit_tx.send(Exit::Code(255));
                return;
            };
            let newline = if tty { "\r\n" } else { "\n" };
            // 137 is SIGKILL, what a deleted pod's processes die of.
            let suspicious = matches!(
                ended.outcome,
                Outcome::Lost | Outcome::Failed(_) | Outcome::Exited(137)
            );
            let note = if suspicious && backend.pod_gone(&namespace, &pod, &uid).await {
                Some(format!(
                    "{newline}ssh-gateway: the pod running this sandbox ({pod}) was deleted; the session has ended{newline}"
                ))
            } else {
                match &ended.outcome {
                    Outcome::Lost => Some(format!(
                        "{newline}ssh-gateway: the connection to the sandbox was lost{newline}"
                    )),
                    Outcome::Failed(message) => Some(format!(
                        "ssh-gateway: {}{newline}",
                        explain_failure(message)
                    )),
                    Outcome::Exited(_) => None,
                }
            };
            if let Some(note) = note {
                let to = ended.stderr.as_ref().unwrap_or(&ended.stdout);
                let _ = to.send(bytes::Bytes::from(note)).await;
            }
            let code = match ended.outcome {
                Outcome::Exited(code) => code.clamp(0, 255) as u32,
                Outcome::Failed(_) => 126,
                Outcome::Lost => 255,
            };
            drop(ended.stdout);
            drop(ended.stderr);
            let _ = exit_tx.send(Exit::Code(code));
        });
        Ok(Process {
            stdin: Box::new(stream.stdin),
            stdout: Box::new(stream.stdout),
            stderr,
            control: control_tx,
            exit: exit_rx,
            tty,
        })
    }

    async fn connect(&self, target: &Target, port: u16) -> Result<Box<dyn Duplex>, BackendError> {
        let (namespace, pod, uid, _) = pod_location(target)?;
        match tokio::time::timeout(
            self.timeout,
            portforward::open(&self.client, namespace, pod, port),
        )
        .await
        {
            Ok(Ok(stream)) => {
                self.still_the_pod(namespace, pod, uid).await?;
                Ok(Box::new(stream))
            }
            Ok(Err(e)) => Err(setup_error("port-forward to", pod, e)),
            Err(_) => Err(BackendError::User(
                "the Kubernetes API did not answer in time".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{PtySpec, WindowSize};

    fn run_sh(argv: &[String]) -> String {
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("HOME", "/tmp")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_missing_shell_is_explained() {
        let raw = "OCI runtime exec failed: exec failed: unable to start container process: exec: \"/bin/sh\": stat /bin/sh: no such file or directory: unknown";
        assert!(explain_failure(raw).contains("no /bin/sh"));
        assert_eq!(explain_failure("permission denied"), "permission denied");
    }

    #[test]
    fn wrapper_exports_env_and_passes_the_command_untouched() {
        let spec = ExecSpec {
            program: Program::Command("echo \"$TERM|$LC_X|$0\" 'it''s'; pwd".into()),
            pty: Some(PtySpec {
                term: "xterm-256color".into(),
                size: WindowSize::default(),
            }),
            env: vec![
                ("LC_X".into(), "a'b $(nope)".into()),
                ("BAD-NAME;rm".into(), "x".into()),
            ],
        };
        let argv = command(&spec);
        assert_eq!(argv[0], "/bin/sh");
        let out = run_sh(&argv);
        assert!(out.starts_with("xterm-256color|a'b $(nope)|"), "{out}");
        assert!(out.contains(" its\n/tmp\n"), "{out}");
        assert!(!argv[2].contains("BAD-NAME"));
    }
}
