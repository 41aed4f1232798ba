//! Agent forwarding (`ssh -A`). A session channel that asked for it, and may (the
//! `[ssh] agent_forwarding` switch, and `permit-agent-forwarding` for a certificate;
//! the handler decides), gets `SSH_AUTH_SOCK` in the workload. No sshd is there to
//! make that socket, so the in-workload helper's `agent-listen` does, in the same
//! target the session runs in and under its authorization. It carries every
//! connection to the socket as frames over one exec stream
//! (`sgw_helper::agent::wire`, shared with the helper); here each connection becomes
//! an `auth-agent@openssh.com` channel to the client, registered with the connection
//! like any channel (kind `auth-agent`), and the two are bridged.
//!
//! Everything ends with the session channel: the forward is stopped, the helper's exec
//! is dropped (which hangs it up: it removes the socket and its directory), and the
//! agent channels still open are closed.
//!
//! Bounds, as the helper in the workload is not to be trusted with the gateway's
//! memory: [`MAX_CHANNELS`] agent channels per session at once (connections past that
//! are closed at once); per connection at most [`CONNECTION_BUDGET`] bytes from the
//! workload waiting for the client's window, and a connection whose client-side
//! channel does not drain is closed rather than allowed to stall the others; a frame
//! stream that breaks the protocol ends the whole forward.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use russh::ChannelMsg;
use russh::server::Handle;
use sgw_helper::agent::wire::{self, HEADER_LEN, Header, Kind, MAX_PAYLOAD};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::backend::{Backend, BackendError, BoxRead, BoxWrite, Control, ExecSpec, Exit, Program};
use crate::conn::ConnRef;
use crate::control::Target;
use crate::helper::{self, Placer};

/// The variable the workload's programs find the agent by.
pub const SOCK_VAR: &str = "SSH_AUTH_SOCK";
/// Agent channels open at once for one session (each counts against the connection's
/// channel limit too, so a workload cannot take all of them).
pub const MAX_CHANNELS: usize = 16;
/// Bytes from one connection waiting to reach the client: one largest agent message
/// (OpenSSH's AGENT_MAX_LEN).
pub const CONNECTION_BUDGET: usize = 256 * 1024;
/// How long the helper may take to print the socket's path once it runs.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
/// A socket path is at most 107 bytes (sun_path); a line longer than this is not one.
const MAX_PATH_LINE: usize = 256;
/// Frames waiting to be written to the helper's stdin.
const TO_HELPER_QUEUE: usize = 64;
/// Frames waiting for one connection's channel (bytes are bounded separately).
const CONNECTION_QUEUE: usize = 64;
/// Connections the helper may have open at once, as this side sees them: its own cap,
/// with room for the moments where it has let one go and not yet said so. A helper
/// that claims more is broken.
const MAX_OPEN: usize = 2 * sgw_helper::agent::MAX_CONNECTIONS;

/// Why a frame stream from the helper was given up on.
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("OPEN for connection {0}, which is open")]
    Reopened(u32),
    #[error("more than {MAX_OPEN} connections at once")]
    TooMany,
}

/// A running `agent-listen` in the session's target.
pub struct Listener {
    /// The socket's path inside the target.
    pub path: String,
    stdout: BufReader<BoxRead>,
    stdin: BoxWrite,
    /// Dropping it hangs the helper up.
    _control: mpsc::Sender<Control>,
}

/// Starts `agent-listen` in `target` (placing the helper first if need be) and waits
/// for the socket's path; or says why not, in words for the user.
pub async fn listen(
    placer: &Placer,
    backend: &dyn Backend,
    target: &Target,
) -> Result<Listener, String> {
    let shown = |e: BackendError| match e {
        BackendError::User(m) | BackendError::Gone(m) => m,
        BackendError::Internal(detail) | BackendError::Denied(detail) => {
            tracing::warn!(target = %target.id(), error = %detail, "agent forwarding could not start");
            "the gateway could not start it".to_owned()
        }
    };
    let helper = placer.helper(backend, target).await.map_err(shown)?;
    let spec = ExecSpec {
        program: Program::Command(helper::programs::agent_listen_line(&helper)),
        pty: None,
        env: Vec::new(),
    };
    let process = backend.exec(target, spec).await.map_err(shown)?;
    let mut stdout = BufReader::new(process.stdout);
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        LISTEN_TIMEOUT,
        (&mut stdout)
            .take(MAX_PATH_LINE as u64)
            .read_until(b'\n', &mut line),
    )
    .await;
    if read.is_err() {
        return Err("the sandbox did not answer in time".to_owned());
    }
    // Nothing but a whole line will do: an end of output first means it failed.
    if !matches!(read, Ok(Ok(_))) || line.pop() != Some(b'\n') {
        let why = helper::programs::helper_said(process.stderr).await;
        if let Ok(Ok(Exit::Code(helper::programs::HELPER_MISSING))) =
            tokio::time::timeout(Duration::from_secs(2), process.exit).await
        {
            placer.forget(target.location());
        }
        return Err(if why.is_empty() {
            "the helper did not start".to_owned()
        } else {
            crate::keys::escape(&why)
        });
    }
    let path = socket_path(&line)
        .ok_or_else(|| "the helper named a socket path that cannot be used".to_owned())?
        .to_owned();
    // Its stderr is not read from here on: dropped, it cannot fill and stall stdout.
    drop(process.stderr);
    Ok(Listener {
        path,
        stdout,
        stdin: process.stdin,
        _control: process.control,
    })
}

/// The path line, if it is one a program can use as `SSH_AUTH_SOCK`.
fn socket_path(line: &[u8]) -> Option<&str> {
    let path = std::str::from_utf8(line).ok()?;
    let fits = path.starts_with('/') && path.len() <= 107;
    (fits && !path.chars().any(char::is_control)).then_some(path)
}

/// Puts the socket in a program's environment, in place of any the client sent.
pub fn export(env: &mut Vec<(String, String)>, path: &str) {
    env.retain(|(name, _)| name != SOCK_VAR);
    env.push((SOCK_VAR.to_owned(), path.to_owned()));
}

/// Runs `listener`'s forward on the registry's tracker until the returned guard is
/// dropped (the session channel ends) or the helper ends.
pub fn spawn(listener: Listener, handle: Handle, conn: &ConnRef) -> tokio_util::sync::DropGuard {
    let stop = CancellationToken::new();
    conn.registry()
        .spawn(serve(listener, handle, conn.clone(), stop.clone()));
    stop.drop_guard()
}

async fn serve(listener: Listener, handle: Handle, conn: ConnRef, stop: CancellationToken) {
    let Listener {
        stdout,
        stdin,
        _control,
        ..
    } = listener;
    let (to_helper, frames) = mpsc::channel(TO_HELPER_QUEUE);
    let forward = Forward {
        to_helper,
        handle,
        conn,
        stop: stop.child_token(),
        slots: Arc::new(Semaphore::new(MAX_CHANNELS)),
    };
    // Its connections end with it, however it ends.
    let _connections = forward.stop.clone().drop_guard();
    tokio::select! {
        ended = forward.dispatch(stdout) => match ended {
            Ok(()) => debug!("agent forwarding ended: the helper closed its output"),
            Err(e) => tracing::info!(error = %e, "agent forwarding ended: the helper broke the protocol"),
        },
        _ = write_frames(stdin, frames) => debug!("agent forwarding ended: the helper stopped reading"),
        _ = stop.cancelled() => {}
    }
}

/// Writes queued frames to the helper's stdin, each in one piece.
async fn write_frames(mut stdin: BoxWrite, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        if stdin.write_all(&frame).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Reads one frame; `None` at a clean end between frames. A read error is a stream
/// that broke off, as good as one that ended inside a frame.
async fn read_frame(
    from: &mut (impl AsyncRead + Unpin),
) -> Result<Option<(Header, Vec<u8>)>, wire::WireError> {
    let mut header = [0u8; HEADER_LEN];
    match from.read(&mut header[..1]).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Err(wire::WireError::Truncated),
    }
    from.read_exact(&mut header[1..])
        .await
        .map_err(|_| wire::WireError::Truncated)?;
    let header = Header::parse(&header)?;
    let mut payload = vec![0u8; header.len];
    from.read_exact(&mut payload)
        .await
        .map_err(|_| wire::WireError::Truncated)?;
    Ok(Some((header, payload)))
}

/// What reaches one connection's task from the helper.
enum Inbound {
    Data(Bytes),
    Eof,
}

/// The dispatcher's side of one connection. Dropping it tells the task the helper
/// closed the connection.
struct Inbox {
    frames: mpsc::Sender<Inbound>,
    /// Bytes handed to the task and not yet taken by the client's window.
    waiting: Arc<AtomicUsize>,
    /// Cancelled when the connection is cut off here (the helper must be told).
    cut: CancellationToken,
}

impl Inbox {
    /// Hands a frame to the task without waiting; false if it has no room (its
    /// channel does not drain) or is gone.
    fn offer(&self, inbound: Inbound) -> bool {
        if let Inbound::Data(bytes) = &inbound {
            if self.waiting.load(Ordering::Acquire) + bytes.len() > CONNECTION_BUDGET {
                return false;
            }
            self.waiting.fetch_add(bytes.len(), Ordering::AcqRel);
        }
        self.frames.try_send(inbound).is_ok()
    }
}

struct Forward {
    to_helper: mpsc::Sender<Vec<u8>>,
    handle: Handle,
    conn: ConnRef,
    /// Ends every connection's task.
    stop: CancellationToken,
    /// Agent channels that may be open at once.
    slots: Arc<Semaphore>,
}

impl Forward {
    /// Routes the helper's frames to the connections' tasks, never waiting on any of
    /// them: waiting here would let one stall the rest.
    async fn dispatch(&self, mut from: BufReader<BoxRead>) -> Result<(), Broken> {
        let mut open: HashMap<u32, Inbox> = HashMap::new();
        while let Some((header, payload)) = read_frame(&mut from).await? {
            let id = header.id;
            match header.kind {
                Kind::Open => {
                    open.retain(|_, inbox| !inbox.frames.is_closed());
                    if open.contains_key(&id) {
                        return Err(Broken::Reopened(id));
                    }
                    if open.len() >= MAX_OPEN {
                        return Err(Broken::TooMany);
                    }
                    open.insert(id, self.start(id));
                }
                Kind::Data | Kind::Eof => {
                    let inbound = match header.kind {
                        Kind::Data => Inbound::Data(Bytes::from(payload)),
                        _ => Inbound::Eof,
                    };
                    if let Some(inbox) = open.get(&id)
                        && !inbox.offer(inbound)
                    {
                        inbox.cut.cancel();
                        open.remove(&id);
                    }
                }
                Kind::Close => {
                    open.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// Starts the task of a new connection.
    fn start(&self, id: u32) -> Inbox {
        let (frames, inbox) = mpsc::channel(CONNECTION_QUEUE);
        let waiting = Arc::new(AtomicUsize::new(0));
        let cut = self.stop.child_token();
        let connection = Connection {
            id,
            inbox,
            waiting: waiting.clone(),
            to_helper: self.to_helper.clone(),
            handle: self.handle.clone(),
            conn: self.conn.clone(),
            slots: self.slots.clone(),
            cut: cut.clone(),
        };
        let all = self.stop.clone();
        self.conn.registry().spawn(async move {
            let to_helper = connection.to_helper.clone();
            // Once the whole forward has ended the helper is being hung up anyway.
            if connection.carry().await && !all.is_cancelled() {
                tokio::select! {
                    _ = to_helper.send(wire::encode(id, Kind::Close, &[])) => {}
                    _ = all.cancelled() => {}
                }
            }
        });
        Inbox {
            frames,
            waiting,
            cut,
        }
    }
}

/// One connection to the socket, bridged to its own agent channel.
struct Connection {
    id: u32,
    inbox: mpsc::Receiver<Inbound>,
    waiting: Arc<AtomicUsize>,
    to_helper: mpsc::Sender<Vec<u8>>,
    handle: Handle,
    conn: ConnRef,
    slots: Arc<Semaphore>,
    /// Cancelled when the dispatcher cuts this connection off or the forward ends.
    cut: CancellationToken,
}

impl Connection {
    /// Opens the agent channel and bridges it until both sides are done, either
    /// closes, or it is cut off. Returns whether the helper still has to be told it is
    /// closed.
    async fn carry(mut self) -> bool {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            debug!(
                id = self.id,
                "agent connection refused: {MAX_CHANNELS} already open"
            );
            return true;
        };
        // Not given up on while the connection lives, even if this one is cut off
        // meanwhile: a channel the client confirmed after nobody here held it would
        // stay open on its side, and `ssh` waits for every channel before it exits.
        // OpenSSH answers at once (it only connects to its local agent).
        let opened = tokio::select! {
            opened = self.handle.channel_open_agent() => opened,
            _ = self.conn.cancelled() => return false,
        };
        let channel = match opened {
            Ok(channel) => channel,
            Err(e) => {
                debug!(error = %e, "the client refused an agent channel");
                return true;
            }
        };
        let guard = match self.conn.open_channel(
            channel.id().into(),
            "auth-agent",
            String::new(),
            super::handler::MAX_OPEN_CHANNELS,
        ) {
            Ok(guard) => guard,
            Err(_) => {
                let _ = channel.close().await;
                return true;
            }
        };
        let counters = guard.counters();
        let (mut rx, tx) = channel.split();
        let (mut client_eof, mut workload_eof) = (false, false);
        // Every wait below also ends when the connection is cut off, so a client
        // window that never opens holds nothing for good.
        let helper_closed = loop {
            if client_eof && workload_eof {
                break false;
            }
            tokio::select! {
                _ = self.cut.cancelled() => break false,
                // The client closed the channel, or the connection is ending.
                _ = guard.cancelled() => break false,
                msg = rx.wait(), if !client_eof => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        counters.add_in(data.len());
                        if !self.send_data(&data).await {
                            break false;
                        }
                    }
                    Some(ChannelMsg::Eof) => {
                        client_eof = true;
                        if !self.send(wire::encode(self.id, Kind::Eof, &[])).await {
                            break false;
                        }
                    }
                    Some(ChannelMsg::Close) | None => break false,
                    Some(_) => {}
                },
                inbound = self.inbox.recv() => match inbound {
                    Some(Inbound::Data(bytes)) => {
                        let n = bytes.len();
                        counters.add_out(n);
                        let sent = tokio::select! {
                            sent = tx.data_bytes(bytes) => sent.is_ok(),
                            _ = self.cut.cancelled() => false,
                        };
                        self.waiting.fetch_sub(n, Ordering::AcqRel);
                        if !sent {
                            break false;
                        }
                    }
                    Some(Inbound::Eof) => {
                        workload_eof = true;
                        let _ = tx.eof().await;
                    }
                    None => break true,
                },
            }
        };
        let _ = tx.close().await;
        !helper_closed
    }

    /// The client's bytes to the helper, in frames it accepts; false if it is gone or
    /// this connection was cut off.
    async fn send_data(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_PAYLOAD) {
            if !self.send(wire::encode(self.id, Kind::Data, chunk)).await {
                return false;
            }
        }
        true
    }

    async fn send(&self, frame: Vec<u8>) -> bool {
        tokio::select! {
            sent = self.to_helper.send(frame) => sent.is_ok(),
            _ = self.cut.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usable_socket_paths_are_exported() {
        assert_eq!(
            socket_path(b"/tmp/ssh-AbC123/agent.42"),
            Some("/tmp/ssh-AbC123/agent.42")
        );
        for bad in [
            &b"relative/agent.1"[..],
            b"",
            b"/tmp/a\x1b[31m",
            b"/tmp/\xff",
            &[b'/'; 108][..],
        ] {
            assert_eq!(socket_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_gateways_socket_replaces_one_the_client_sent() {
        let mut env = vec![
            ("LANG".to_owned(), "C".to_owned()),
            (SOCK_VAR.to_owned(), "/client/said".to_owned()),
        ];
        export(&mut env, "/tmp/ssh-x/agent.1");
        assert_eq!(
            env,
            [
                ("LANG".to_owned(), "C".to_owned()),
                (SOCK_VAR.to_owned(), "/tmp/ssh-x/agent.1".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn frames_are_read_as_the_helper_writes_them() {
        let mut stream = wire::encode(5, Kind::Open, &[]);
        stream.extend(wire::encode(5, Kind::Data, b"abc"));
        let mut reader = &stream[..];
        let (h, p) = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!((h.id, h.kind, p.len()), (5, Kind::Open, 0));
        let (h, p) = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!((h.kind, &p[..]), (Kind::Data, &b"abc"[..]));
        assert!(read_frame(&mut reader).await.unwrap().is_none());
        // Cut short, and an oversized length: errors, not a hang or an allocation.
        let mut short = &stream[..stream.len() - 1];
        let _ = read_frame(&mut short).await.unwrap();
        assert_eq!(
            read_frame(&mut short).await.unwrap_err(),
            wire::WireError::Truncated
        );
        let mut huge = wire::encode(1, Kind::Data, &[]);
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            read_frame(&mut &huge[..]).await.unwrap_err(),
            wire::WireError::TooLong(u32::MAX)
        );
    }
}
