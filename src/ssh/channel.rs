//! One channel's life: wait for the handler to hand over the accepted setup, check
//! access afresh (the key is still registered, the control plane still authorizes the
//! target — its owner, members or pod may have changed since the last channel), start
//! the program or open the port in the backend, and hand everything to the bridge.
//! Failures reach the user as a message and a non-zero exit status, never as a hang.
//! The channel ends when its program does, when the client closes it, or when its
//! connection is being ended.

use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use super::Gateway;
use super::agent;
use super::auth::still_valid;
use super::refusal::Refusal;
use super::request::SessionStart;
use crate::backend::{Backend, BackendError, ExecSpec, Program};
use crate::bridge;
use crate::conn::ChannelGuard;
use crate::conn::events::ChannelEnd;
use crate::control::{ControlError, Credential, Principal, Target};
use crate::helper;
use crate::remotes::Cluster;
use crate::route::{Route, RouteError, TargetRef};

/// Exit status for "the gateway could not run this" (255 is taken by ssh itself).
const REFUSED_EXIT: u32 = 1;

pub struct ChannelCtx {
    pub gw: Arc<Gateway>,
    pub principal: Principal,
    pub route: Arc<Result<Route, RouteError>>,
    pub handle: Handle,
    pub guard: ChannelGuard,
}

impl ChannelCtx {
    /// The cluster (control plane and backend) this connection's route names, and
    /// the target there; or why there is none.
    fn routed(&self) -> Result<(&Cluster, &TargetRef), Refusal> {
        let route = match self.route.as_ref() {
            Ok(route) => route,
            Err(e) => return Err(Refusal::Route(e.clone())),
        };
        match self.gw.remotes.get(route.remote.as_deref()) {
            Some(cluster) => Ok((cluster, &route.target)),
            // Routing refuses remotes that are not configured: only a bug gets here.
            None => Err(Refusal::Control(ControlError::Unavailable(format!(
                "no cluster for remote {:?}",
                route.remote
            )))),
        }
    }

    /// Authorizes the target for this channel on its route's cluster; see the module
    /// comment. A paused target is resumed (once; authorization is decided before),
    /// with what the wait is about sent to `notes` for the user.
    async fn authorize(&self, notes: Option<&mpsc::Sender<String>>) -> Result<Target, Refusal> {
        match still_valid(self.gw.keys.as_ref(), &self.principal).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(match self.principal.credential() {
                    Credential::Key { .. } => Refusal::KeyRevoked,
                    Credential::Certificate { .. } => Refusal::CertificateRevoked,
                    Credential::ApiToken { .. } => Refusal::TokenRevoked,
                });
            }
            Err(e) => return Err(Refusal::KeyStoreUnavailable(e)),
        }
        let (cluster, target_ref) = self.routed()?;
        let control = &cluster.control;
        match control.resolve(&self.principal, target_ref).await {
            Err(ControlError::Paused(name)) => {
                let took = control.resume(&self.principal, target_ref, notes).await?;
                if let Some(n) = notes {
                    let _ = n
                        .send(format!("{name} is ready ({:.1} s)", took.as_secs_f64()))
                        .await;
                }
                Ok(control.resolve(&self.principal, target_ref).await?)
            }
            other => Ok(other?),
        }
    }

    /// Runs `op` on a freshly authorized target, with the backend of its cluster; if
    /// the backend reports the target gone (its pod was replaced), authorizes once
    /// more and retries on whatever the control plane names now.
    async fn with_target<'a, T, F, Fut>(
        &'a self,
        notes: Option<&mpsc::Sender<String>>,
        op: F,
    ) -> Result<(Target, T), Refusal>
    where
        F: Fn(&'a dyn Backend, Target) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        let mut retried = false;
        loop {
            let target = self.authorize(notes).await?;
            // The backend of the cluster whose control plane just authorized it.
            let backend = self.routed()?.0.backend.as_ref();
            match op(backend, target.clone()).await {
                Ok(value) => return Ok((target, value)),
                Err(BackendError::Gone(_)) if !retried => {
                    info!(target = %target.id(), "target gone; authorizing again");
                    retried = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether this connection's PTY sessions are recorded (`[recording]`).
    fn recorded(&self) -> bool {
        let policy = &self.gw.recording;
        match self.route.as_ref() {
            Ok(route) => policy.applies(self.principal.user_name(), &route.key()),
            Err(_) => false,
        }
    }

    fn refused(&self, refusal: &Refusal) {
        refusal.log(self.principal.user_name());
    }
}

/// A session channel: `start` delivers what the handler accepted once the client asks
/// for a shell, a command or a subsystem.
pub async fn serve_session(
    channel: Channel<Msg>,
    start: oneshot::Receiver<SessionStart>,
    mut ctx: ChannelCtx,
) {
    let (rx, tx) = channel.split();
    let start = tokio::select! {
        start = start => match start {
            Ok(start) => start,
            Err(_) => return, // closed before it asked for anything
        },
        _ = ctx.guard.cancelled() => return,
    };
    let SessionStart { spec, agent } = start;
    ctx.guard.set_program(match &spec.program {
        Program::Shell => "shell".to_owned(),
        Program::Sftp => "sftp".to_owned(),
        Program::Command(line) => line.clone(),
    });
    // Boxed: until the client asks for a program this task only waits, and an idle
    // channel should not carry the running session's state (~1.6 KiB) meanwhile.
    let end = tokio::select! {
        end = Box::pin(run_session(&ctx, rx, tx, spec, agent)) => end,
        // Client closed the channel, or the connection is ending: dropping the
        // bridge ends the program.
        _ = ctx.guard.cancelled() => ChannelEnd::Closed,
    };
    ctx.guard.set_end(end);
}

/// `agent`: the client asked for agent forwarding and may have it.
async fn run_session(
    ctx: &ChannelCtx,
    rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    spec: ExecSpec,
    agent: bool,
) -> ChannelEnd {
    let newline = if spec.pty.is_some() { "\r\n" } else { "\n" };
    let pty = spec.pty.clone();
    let gw = &ctx.gw;
    // What a wait is about (a paused workload waking) goes to the user as stderr,
    // never into stdout, so scp, sftp and rsync streams stay clean.
    let (notes_tx, mut notes_rx) = mpsc::channel::<String>(16);
    let note = |text: String| {
        let line = format!("ssh-gateway: {text}{newline}");
        let tx = &tx;
        async move {
            let _ = tx.extended_data_bytes(1, line.into_bytes()).await;
        }
    };
    let notes = &notes_tx;
    let starting = ctx
        .with_target(Some(notes), |backend, target| {
            let spec = spec.clone();
            async move {
                info!(account = %ctx.principal.user_name(), target = %target.id(), program = ?spec.program, tty = spec.pty.is_some(), agent, "starting");
                // The same target, just authorized, decides how to serve the program
                // (the in-workload helper for scp/sftp where the image lacks them).
                let resolved =
                    helper::resolve(&gw.placer, gw.sftp_server, backend, &target, spec).await?;
                let mut spec = resolved.spec;
                // In the same target, before the program, so its SSH_AUTH_SOCK is
                // there from the start. Agent forwarding is a convenience: without
                // it the session still starts, and the user is told why.
                let listener = if agent {
                    match agent::listen(&gw.placer, backend, &target).await {
                        Ok(listener) => {
                            agent::export(&mut spec.env, &listener.path);
                            Some(listener)
                        }
                        Err(why) => {
                            info!(target = %target.id(), %why, "agent forwarding not available");
                            let _ = notes
                                .send(format!("agent forwarding is not available here: {why}"))
                                .await;
                            None
                        }
                    }
                } else {
                    None
                };
                let process = backend.exec(&target, spec).await?;
                Ok((process, resolved.via_helper, listener))
            }
        });
    tokio::pin!(starting);
    let started = loop {
        tokio::select! {
            started = &mut starting => break started,
            Some(text) = notes_rx.recv() => note(text).await,
        }
    };
    while let Ok(text) = notes_rx.try_recv() {
        note(text).await;
    }
    let (target, process, via_helper, listener) = match started {
        Ok((target, (process, via_helper, listener))) => (target, process, via_helper, listener),
        Err(refusal) => {
            ctx.refused(&refusal);
            let message = format!("ssh-gateway: {}{newline}", refusal.user_message());
            refuse(tx, &message).await;
            return ChannelEnd::Refused;
        }
    };
    let recorder = match &pty {
        Some(terminal) if ctx.recorded() => record(ctx, terminal, &tx).await,
        _ => None,
    };
    // Forwarded for as long as this channel runs; dropping the guard ends it.
    let _agent = listener.map(|l| agent::spawn(l, ctx.handle.clone(), ctx.guard.conn()));
    let counters = ctx.guard.counters();
    let notices = ctx.gw.registry.notices();
    let end = bridge::run_process(
        rx,
        tx,
        ctx.handle.clone(),
        process,
        &counters,
        notices,
        recorder.as_ref(),
    )
    .await;
    if via_helper && end == ChannelEnd::Exit(helper::programs::HELPER_MISSING) {
        gw.placer.forget(target.location());
    }
    end
}

/// Starts recording a PTY session and tells the user so; a recording that cannot be
/// started is logged and the session goes on unrecorded (and is not announced).
async fn record(
    ctx: &ChannelCtx,
    pty: &crate::backend::PtySpec,
    tx: &ChannelWriteHalf<Msg>,
) -> Option<crate::recording::Recorder> {
    let terminal = crate::recording::Terminal {
        term: &pty.term,
        cols: pty.size.cols,
        rows: pty.size.rows,
    };
    let id = crate::store::new_id("rec");
    let gw = &ctx.gw;
    match crate::recording::Recorder::start(&gw.recording, &gw.registry, &id, terminal).await {
        Ok((recorder, file)) => {
            ctx.guard.set_recording(file);
            let note = "ssh-gateway: this session is recorded\r\n";
            let _ = tx.extended_data_bytes(1, note.as_bytes().to_vec()).await;
            Some(recorder)
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %ctx.gw.recording.dir.display(), "cannot record this session; it goes on unrecorded");
            None
        }
    }
}

/// A direct-tcpip channel. Answers the open only once the port is reached, so
/// failures read as "open failed: …" with a reason, as they would from sshd.
pub async fn serve_direct_tcpip(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    port: u16,
    ctx: ChannelCtx,
) {
    let opened = tokio::select! {
        opened = ctx.with_target(None, |backend, target| async move { backend.connect(&target, port).await }) => opened,
        _ = ctx.guard.cancelled() => return,
    };
    let opened = opened.map_err(|refusal| match refusal {
        Refusal::Backend(error) => Refusal::Forward { port, error },
        other => other,
    });
    forward(channel, reply, opened, &ctx).await;
}

/// Answers a forward's open with what opening its far end gave (a refusal reads as
/// "open failed" with the reason), then bridges the two until either end closes or
/// the channel must stop.
async fn forward(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    opened: Result<(Target, Box<dyn crate::backend::Duplex>), Refusal>,
    ctx: &ChannelCtx,
) {
    let stream = match opened {
        Ok((_, stream)) => stream,
        Err(refusal) => {
            ctx.refused(&refusal);
            return reply.reject(refusal.open_failure()).await;
        }
    };
    reply.accept().await;
    let (rx, tx) = channel.split();
    let counters = ctx.guard.counters();
    tokio::select! {
        _ = bridge::run_stream(rx, tx, stream, &counters) => {}
        _ = ctx.guard.cancelled() => {}
    }
}

/// How long the helper may take to reach a socket once it runs.
const SOCKET_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A `direct-streamlocal@openssh.com` channel (`ssh -L 9000:/run/app.sock`, VS Code's
/// `remoteServerListenOnSocket`): the Unix socket `path` inside the target. The
/// Kubernetes port-forward API carries only TCP, so the in-workload helper connects
/// to it and relays it over an exec stream, on every backend alike (with the same
/// authority as the user's own shell there). The channel is confirmed only once the
/// helper has connected, so a missing socket reads "connect failed" as from sshd.
pub async fn serve_direct_streamlocal(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    path: String,
    ctx: ChannelCtx,
) {
    let gw = ctx.gw.clone();
    let opened = tokio::select! {
        opened = ctx.with_target(None, |backend, target| {
            let (gw, path) = (&gw, &path);
            async move {
                let helper = gw.placer.helper(backend, &target).await?;
                let spec = ExecSpec {
                    program: Program::Command(helper::programs::relay_unix_line(&helper, path)),
                    pty: None,
                    env: Vec::new(),
                };
                relay_connected(backend.exec(&target, spec).await?, path).await
            }
        }) => opened,
        _ = ctx.guard.cancelled() => return,
    };
    forward(channel, reply, opened, &ctx).await;
}

/// The helper's relay once it says it has connected (one `0` byte), or why not.
async fn relay_connected(
    mut process: crate::backend::Process,
    path: &str,
) -> Result<Box<dyn crate::backend::Duplex>, BackendError> {
    use tokio::io::AsyncReadExt;
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(SOCKET_CONNECT_TIMEOUT, process.stdout.read(&mut first)).await;
    if let Ok(Ok(1)) = read
        && first[0] == 0
    {
        return Ok(Box::new(Relay {
            stdout: process.stdout,
            stdin: Some(process.stdin),
            _control: process.control,
        }));
    }
    let why = helper::programs::helper_said(process.stderr.take()).await;
    Err(BackendError::User(format!(
        "the socket {} in the sandbox cannot be reached{}",
        crate::keys::escape(path),
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", crate::keys::escape(&why))
        }
    )))
}

/// The relay's stdout and stdin as one stream, holding the program's control handle:
/// dropping that hangs the program up, which is how the relay ends with the channel.
/// Shutting it down closes the program's stdin (a child's stdin only closes when
/// dropped), which the helper passes on to the socket as a half-close.
struct Relay {
    stdout: crate::backend::BoxRead,
    stdin: Option<crate::backend::BoxWrite>,
    _control: mpsc::Sender<crate::backend::Control>,
}

impl tokio::io::AsyncRead for Relay {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl Relay {
    fn stdin(&mut self) -> std::io::Result<&mut crate::backend::BoxWrite> {
        self.stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl tokio::io::AsyncWrite for Relay {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.stdin() {
            Ok(stdin) => std::pin::Pin::new(stdin).poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => std::pin::Pin::new(stdin).poll_flush(cx),
            None => std::task::Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(stdin) = self.stdin.as_mut() {
            std::task::ready!(std::pin::Pin::new(stdin).poll_shutdown(cx))?;
        }
        self.stdin = None;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Tells the user why on stderr, exits non-zero and closes.
async fn refuse(tx: ChannelWriteHalf<Msg>, message: &str) {
    let _ = tx.extended_data_bytes(1, message.as_bytes().to_vec()).await;
    let _ = tx.eof().await;
    let _ = tx.exit_status(REFUSED_EXIT).await;
    let _ = tx.close().await;
}
