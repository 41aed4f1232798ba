//! Learns, once per container instance, what a workload has (its own sftp-server,
//! scp, rsync, a placed helper), and places the helper there when a channel needs it.
//!
//! One placement at a time per container: VS Code and parallel `scp` open several first
//! channels at once, and they all wait for the one probe and the one upload (other
//! gateways may upload too; the rename makes that harmless). What is learnt is kept in
//! memory, keyed by the container instance, so later channels pay nothing; a restarted
//! container is a new instance with a fresh filesystem.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::embedded::{self, Embedded};
use super::scripts::{self, Facts, Placed, Places};
use crate::backend::{Backend, BackendError, ExecSpec, Exit, Process, Program};
use crate::control::{Location, Target};

/// Bound on a probe or an upload: the copy is a few MiB, and a stalled workload must
/// not hold a channel (and the channels queued behind it) forever.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Scripts print a few short lines; more than this is not ours.
const MAX_OUTPUT: usize = 64 * 1024;
/// Containers remembered; past this the memory is cleared (it is only a cache).
const MAX_REMEMBERED: usize = 16_384;

type Slot = Arc<tokio::sync::Mutex<Option<Facts>>>;

pub struct Placer {
    places: Places,
    known: Mutex<HashMap<Location, Slot>>,
}

impl Placer {
    pub fn new(configured_dir: Option<&str>) -> Self {
        Self {
            places: Places::standard(configured_dir),
            known: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, location: &Location) -> Slot {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_REMEMBERED && !known.contains_key(location) {
            known.clear();
        }
        known.entry(location.clone()).or_default().clone()
    }

    /// Forgets a container's facts (its helper copy was found missing).
    pub fn forget(&self, location: &Location) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.remove(location);
    }

    /// What the target's container has; probed on first use.
    pub async fn facts(
        &self,
        backend: &dyn Backend,
        target: &Target,
    ) -> Result<Facts, BackendError> {
        let slot = self.slot(target.location());
        let mut facts = slot.lock().await;
        if let Some(f) = facts.as_ref() {
            return Ok(f.clone());
        }
        let found = self.probe(backend, target).await?;
        *facts = Some(found.clone());
        Ok(found)
    }

    /// The path of a usable helper copy in the target's container, placing one first
    /// if there is none.
    pub async fn helper(
        &self,
        backend: &dyn Backend,
        target: &Target,
    ) -> Result<String, BackendError> {
        let slot = self.slot(target.location());
        let mut facts = slot.lock().await;
        let mut known = match facts.take() {
            Some(f) => f,
            None => self.probe(backend, target).await?,
        };
        if let Some(path) = &known.helper {
            let path = path.clone();
            *facts = Some(known);
            return Ok(path);
        }
        let result = match embedded::for_arch(&known.arch) {
            Some(helper) => self.place(backend, target, helper).await,
            None => Err(BackendError::User(wrong_arch(&known.arch))),
        };
        if let Ok(path) = &result {
            known.helper = Some(path.clone());
        }
        *facts = Some(known);
        result
    }

    async fn probe(&self, backend: &dyn Backend, target: &Target) -> Result<Facts, BackendError> {
        let helper = embedded::for_arch(std::env::consts::ARCH).or(embedded::EMBEDDED.first());
        let hash_dir = helper.map(Embedded::dir_name).unwrap_or("none");
        let script = scripts::probe(hash_dir, embedded::version_line(), &self.places);
        let out = run_script(backend, target, script, b"").await?;
        let facts = Facts::parse(&out.stdout);
        if facts.arch.is_empty() {
            return Err(BackendError::User(format!(
                "cannot inspect this sandbox to serve file transfers (exit {}): {}",
                out.code,
                out.stderr.trim()
            )));
        }
        tracing::debug!(target = %target.id(), ?facts, "workload probed");
        Ok(facts)
    }

    async fn place(
        &self,
        backend: &dyn Backend,
        target: &Target,
        helper: &'static Embedded,
    ) -> Result<String, BackendError> {
        let script = scripts::place(
            helper.dir_name(),
            embedded::version_line(),
            helper.bytes.len(),
            &self.places,
        );
        let started = std::time::Instant::now();
        let out = run_script(backend, target, script, helper.bytes).await?;
        match Placed::parse(&out.stdout) {
            Placed::At(path) => {
                tracing::info!(target = %target.id(), %path, elapsed_ms = started.elapsed().as_millis() as u64, "helper placed");
                Ok(path)
            }
            Placed::Failed(reason) => Err(BackendError::User(format!(
                "could not copy the file-transfer helper into this sandbox: {reason}"
            ))),
            Placed::NoPlace(tried) if !tried.is_empty() => Err(BackendError::User(format!(
                "this sandbox has no sftp-server, and the gateway found no place to put its \
                 file-transfer helper: tried {}. Make one of these writable and executable for \
                 the container user (or set [sftp] helper_dir to one that is), or install \
                 OpenSSH's sftp-server in the image",
                tried.join("; ")
            ))),
            Placed::NoPlace(_) => Err(BackendError::User(format!(
                "could not copy the file-transfer helper into this sandbox (exit {}): {}",
                out.code,
                out.stderr.trim()
            ))),
        }
    }
}

fn wrong_arch(arch: &str) -> String {
    format!(
        "this sandbox runs on {arch}, and this gateway carries its file-transfer helper for {} only; \
         install OpenSSH's sftp-server (and scp) in the image, or use a gateway built with a helper for {arch}",
        embedded::arches()
    )
}

struct ScriptOutput {
    stdout: String,
    stderr: String,
    code: u32,
}

/// Runs a script in the target through the backend, feeding `input` to its stdin.
async fn run_script(
    backend: &dyn Backend,
    target: &Target,
    script: String,
    input: &'static [u8],
) -> Result<ScriptOutput, BackendError> {
    let spec = ExecSpec {
        program: Program::Command(script),
        pty: None,
        env: Vec::new(),
    };
    let run = async {
        let process = backend.exec(target, spec).await?;
        collect(process, input).await
    };
    match tokio::time::timeout(SCRIPT_TIMEOUT, run).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::User(
            "the sandbox did not answer while the gateway prepared file transfers; try again in a moment".into(),
        )),
    }
}

async fn collect(process: Process, input: &'static [u8]) -> Result<ScriptOutput, BackendError> {
    let Process {
        mut stdin,
        stdout,
        stderr,
        control,
        exit,
        ..
    } = process;
    let feed = async move {
        // A script that needs no input (or gave up) exits without reading: the write
        // then fails, which is fine.
        let _ = stdin.write_all(input).await;
        let _ = stdin.shutdown().await;
    };
    let read_out = read_bounded(stdout);
    let read_err = async move {
        match stderr {
            Some(s) => read_bounded(s).await,
            None => String::new(),
        }
    };
    let ((), out, err) = tokio::join!(feed, read_out, read_err);
    let exit = exit.await;
    drop(control);
    let code = match exit {
        Ok(Exit::Code(c)) => c,
        Ok(Exit::Signal { .. }) | Err(_) => 255,
    };
    Ok(ScriptOutput {
        stdout: out,
        stderr: err,
        code,
    })
}

async fn read_bounded(reader: crate::backend::BoxRead) -> String {
    let mut buf = Vec::new();
    let _ = reader.take(MAX_OUTPUT as u64).read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}
