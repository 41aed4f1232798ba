//! One channel's life: collect its requests (pty, env, then shell/exec/subsystem),
//! resolve the connection's target once, start the program in the backend, and hand
//! everything to the bridge. Failures reach the user as a message on stderr and a
//! non-zero exit status, never as a hang.

use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::Gateway;
use super::handler::{ChannelSlot, MAX_ENV, refusal};
use crate::backend::{BackendError, ExecSpec, Program, PtySpec, window_size_from_ssh};
use crate::bridge::{self, Counters};
use crate::control::{ControlError, Principal, Target};
use crate::route::{RouteError, TargetRef};

/// Exit status for "the gateway could not run this" (like sshd's 255 is taken by ssh).
const REFUSED_EXIT: u32 = 1;

pub struct ChannelCtx {
    pub gw: Arc<Gateway>,
    pub principal: Principal,
    pub target: Arc<TargetCell>,
    pub handle: Handle,
    pub slots: ChannelSlot,
}

/// The connection's target, resolved by the first channel that needs it and shared by
/// the rest, so a connection asks the control plane once. Only a success is kept: a
/// "not ready" or an outage is asked again by the next channel, and a target whose
/// pod has gone is forgotten (a multiplexed VS Code connection outlives pods).
pub struct TargetCell {
    route: Result<TargetRef, RouteError>,
    resolved: Mutex<Option<Target>>,
}

impl TargetCell {
    pub fn new(route: Result<TargetRef, RouteError>) -> Self {
        Self {
            route,
            resolved: Mutex::new(None),
        }
    }

    /// The target, or the message to show the user.
    async fn get(&self, gw: &Gateway, who: &Principal) -> Result<Target, String> {
        // Held across the lookup so concurrent channels wait for one answer.
        let mut slot = self.resolved.lock().await;
        if let Some(target) = slot.as_ref() {
            return Ok(target.clone());
        }
        let target_ref = self.route.as_ref().map_err(|e| e.to_string())?;
        match gw.control.resolve(who, target_ref).await {
            Ok(target) => {
                *slot = Some(target.clone());
                Ok(target)
            }
            Err(ControlError::Unavailable(detail)) => {
                warn!(error = %detail, "control plane unavailable");
                Err(ControlError::Unavailable(detail).to_string())
            }
            Err(e) => {
                info!(user = %who.user_name, target = %target_ref, "refused: {e}");
                Err(e.to_string())
            }
        }
    }

    /// Drops `stale` so the next `get` resolves afresh.
    async fn forget(&self, stale: &Target) {
        let mut slot = self.resolved.lock().await;
        if slot.as_ref() == Some(stale) {
            *slot = None;
        }
    }

    /// Runs `op` on the target; if the backend reports the target gone, resolves once
    /// more and retries on whatever the control plane names now.
    async fn with_target<T, F, Fut>(
        &self,
        gw: &Gateway,
        who: &Principal,
        op: F,
    ) -> Result<(Target, T), Failure>
    where
        F: Fn(Target) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        let mut retried = false;
        loop {
            let target = self.get(gw, who).await.map_err(Failure::Refused)?;
            match op(target.clone()).await {
                Ok(value) => return Ok((target, value)),
                Err(BackendError::Gone(_)) if !retried => {
                    info!(target = %target.id, "target gone; resolving again");
                    self.forget(&target).await;
                    retried = true;
                }
                Err(e) => return Err(Failure::Backend(user_message(&e))),
            }
        }
    }
}

/// Why a channel could not start, as the user reads it.
enum Failure {
    /// The control plane said no (unknown, forbidden, not ready, unavailable).
    Refused(String),
    /// The target was found but the program or port could not be reached.
    Backend(String),
}

pub async fn serve_session(channel: Channel<Msg>, ctx: ChannelCtx) {
    let (mut rx, tx) = channel.split();
    let Some((program, pty, env)) = collect_requests(&mut rx, &ctx.gw).await else {
        return;
    };
    let newline = if pty.is_some() { "\r\n" } else { "\n" };
    let spec = ExecSpec { program, pty, env };
    let (gw, who) = (&ctx.gw, &ctx.principal);
    let started = ctx
        .target
        .with_target(gw, who, |target| {
            let spec = spec.clone();
            async move {
                info!(user = %who.user_name, target = %target.id, program = ?spec.program, tty = spec.pty.is_some(), "starting");
                gw.backend.exec(&target, spec).await
            }
        })
        .await;
    let process = match started {
        Ok((_, process)) => process,
        Err(Failure::Refused(message) | Failure::Backend(message)) => {
            return refuse(rx, tx, &format!("ssh-gateway: {message}{newline}")).await;
        }
    };
    let counters = Arc::new(Counters::default());
    bridge::run_process(rx, tx, ctx.handle, process, counters.clone()).await;
    let (up, down) = counters.snapshot();
    info!(bytes_in = up, bytes_out = down, "channel closed");
    drop(ctx.slots);
}

/// Answers the channel open only once the port is reached, so failures read as
/// "open failed: …" with a reason, as they would from sshd.
pub async fn serve_direct_tcpip(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    port: u16,
    ctx: ChannelCtx,
) {
    let gw = &ctx.gw;
    let opened = ctx
        .target
        .with_target(gw, &ctx.principal, |target| async move {
            gw.backend.connect(&target, port).await
        })
        .await;
    let (target, stream) = match opened {
        Ok(opened) => opened,
        Err(Failure::Refused(message)) => {
            return reply
                .reject(refusal(1, &format!("ssh-gateway: {message}")))
                .await;
        }
        Err(Failure::Backend(message)) => {
            info!(error = %message, "forward failed");
            let reason = format!("ssh-gateway: port {port} in the sandbox: {message}");
            return reply.reject(refusal(2, &reason)).await;
        }
    };
    reply.accept().await;
    let (rx, tx) = channel.split();
    let counters = Arc::new(Counters::default());
    bridge::run_stream(rx, tx, stream, counters.clone()).await;
    let (up, down) = counters.snapshot();
    info!(target = %target.id, bytes_in = up, bytes_out = down, "forward closed");
    drop(ctx.slots);
}

type Requests = (Program, Option<PtySpec>, Vec<(String, String)>);

/// Reads channel requests until one starts a program. The handler has already replied
/// to each; this only records what was accepted.
async fn collect_requests(rx: &mut ChannelReadHalf, gw: &Gateway) -> Option<Requests> {
    let mut pty: Option<PtySpec> = None;
    let mut env = Vec::new();
    loop {
        match rx.wait().await? {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                ..
            } => {
                pty = Some(PtySpec {
                    term: sanitize_term(&term),
                    size: window_size_from_ssh(col_width, row_height, pix_width, pix_height),
                });
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if env.len() < MAX_ENV && gw.env_allowed(&variable_name, &variable_value) => {
                env.push((variable_name, variable_value));
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(p) = &mut pty {
                    p.size = window_size_from_ssh(col_width, row_height, pix_width, pix_height);
                }
            }
            ChannelMsg::RequestShell { .. } => return Some((Program::Shell, pty, env)),
            ChannelMsg::Exec { command, .. } => {
                let line = String::from_utf8_lossy(&command).into_owned();
                return Some((Program::Command(line), pty, env));
            }
            ChannelMsg::RequestSubsystem { name, .. } if name == "sftp" => {
                return Some((Program::Sftp, pty, env));
            }
            ChannelMsg::Close => return None,
            _ => {}
        }
    }
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

fn user_message(e: &BackendError) -> String {
    match e {
        BackendError::User(message) | BackendError::Gone(message) => message.clone(),
        BackendError::Internal(detail) => {
            warn!(error = %detail, "backend failed");
            "the sandbox could not start this session; try again, and contact support if it persists".to_owned()
        }
    }
}

/// Tells the user why on stderr, exits non-zero, closes, and drains until the client
/// closes too.
async fn refuse(mut rx: ChannelReadHalf, tx: ChannelWriteHalf<Msg>, message: &str) {
    let _ = tx.extended_data_bytes(1, message.as_bytes().to_vec()).await;
    let _ = tx.eof().await;
    let _ = tx.exit_status(REFUSED_EXIT).await;
    let _ = tx.close().await;
    while let Some(msg) = rx.wait().await {
        if matches!(msg, ChannelMsg::Close) {
            break;
        }
    }
}
