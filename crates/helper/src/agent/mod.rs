//! `agent-listen`: the workload's end of SSH agent forwarding (`ssh -A`). No sshd runs
//! in the workload to make `SSH_AUTH_SOCK`, so the helper does: it listens on a Unix
//! socket in a private directory ([`socket`]) and carries every connection to it over
//! its stdin and stdout to the gateway, which opens one `auth-agent@openssh.com`
//! channel to the client per connection.
//!
//! The wire: first the socket's path and a newline on stdout (the gateway puts it in
//! the session's `SSH_AUTH_SOCK`), then frames both ways ([`wire`]). End of stdin (the
//! gateway hung up) removes the socket and ends the helper; so do SIGHUP and SIGTERM. A
//! protocol error on stdin is said on stderr and ends it with status 1, the socket
//! removed too.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once (more are closed as soon as
//! they are accepted); per connection a queue of [`SOCKET_QUEUE`] frames towards the
//! socket, and a client that lets it fill, or leaves a write stuck for 30 s (it does
//! not read its answers), is cut off rather than allowed to stall the others, whose
//! frames share stdin. Two threads per connection, blocking I/O: the helper has no
//! async runtime.

pub mod socket;
pub mod wire;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sys::StdFd;
use wire::Kind;

const USAGE: &str = "usage: ssh-gateway-helper agent-listen";

/// Connections to the socket at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Frames waiting for one connection's client to read them.
pub const SOCKET_QUEUE: usize = 8;
/// How long a write to a client may make no progress.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Read size from a connection (agent messages are small; a large one takes several).
const READ_CHUNK: usize = 16 * 1024;

pub fn main(args: &[OsString]) -> ExitCode {
    if !args.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let listening = match socket::listen() {
        Ok(listening) => listening,
        Err(e) => {
            eprintln!("ssh-gateway-helper: {e}");
            return ExitCode::from(1);
        }
    };
    let shared = Arc::new(Shared {
        conns: Mutex::new(HashMap::new()),
        out: Mutex::new(StdFd::stdout()),
    });
    let mut line = listening.path.clone();
    line.push(b'\n');
    shared.write(&line);
    let accepting = shared.clone();
    let listener = listening.listener;
    if std::thread::Builder::new()
        .spawn(move || accept(&listener, &accepting))
        .is_err()
    {
        socket::remove();
        eprintln!("ssh-gateway-helper: cannot start a thread");
        return ExitCode::from(1);
    }
    let served = serve_stdin(&shared);
    socket::remove();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssh-gateway-helper: agent-listen: {e}");
            ExitCode::from(1)
        }
    }
}

/// What goes to one connection's client, in order.
enum ToSocket {
    Data(Vec<u8>),
    Eof,
}

struct Conn {
    /// `None` once the gateway knows the connection is closed (told, or it said so):
    /// no more frames either way. Dropping it ends the writer once the queue is
    /// written.
    queue: Option<SyncSender<ToSocket>>,
    socket: UnixStream,
}

struct Shared {
    /// Live connections; an entry goes when its writer thread ends, so the count
    /// bounds threads too.
    conns: Mutex<HashMap<u32, Conn>>,
    out: Mutex<StdFd>,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u32, Conn>> {
        // Plain data; a panicked thread leaves nothing half-done that matters.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes to stdout in one piece. If the gateway is gone there is nobody left to
    /// serve: remove the socket and end.
    fn write(&self, bytes: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if out.write_all(bytes).is_err() {
            socket::remove();
            std::process::exit(0);
        }
    }

    fn frame(&self, id: u32, kind: Kind, payload: &[u8]) {
        self.write(&wire::encode(id, kind, payload));
    }

    /// Whether frames about `id` still interest the gateway.
    fn is_open(&self, id: u32) -> bool {
        self.conns().get(&id).is_some_and(|c| c.queue.is_some())
    }

    /// Hands `msg` to the connection's writer; a connection whose queue is full is
    /// cut off.
    fn to_socket(&self, id: u32, msg: ToSocket) {
        let stuck = match self.conns().get(&id).and_then(|c| c.queue.as_ref()) {
            Some(queue) => queue.try_send(msg).is_err(),
            None => false,
        };
        if stuck {
            self.cut_off(id);
        }
    }

    /// Ends a connection from this side: shuts its socket (so both its threads end)
    /// and tells the gateway, once.
    fn cut_off(&self, id: u32) {
        let tell = match self.conns().get_mut(&id) {
            Some(conn) => {
                let was_open = conn.queue.take().is_some();
                if was_open {
                    let _ = conn.socket.shutdown(Shutdown::Both);
                }
                was_open
            }
            None => false,
        };
        if tell {
            self.frame(id, Kind::Close, &[]);
        }
    }

    /// The gateway closed `id`: what is queued is still written, then it ends.
    fn closed_by_gateway(&self, id: u32) {
        if let Some(conn) = self.conns().get_mut(&id) {
            conn.queue = None;
        }
    }

    /// A connection's writer has ended: forget it, telling the gateway if it does
    /// not know yet.
    fn finished(&self, id: u32) {
        let gone = self.conns().remove(&id);
        if let Some(conn) = gone
            && conn.queue.is_some()
        {
            self.frame(id, Kind::Close, &[]);
        }
    }
}

/// Reads the gateway's frames until its end of stdin.
fn serve_stdin(shared: &Shared) -> io::Result<()> {
    let mut stdin = BufReader::with_capacity(wire::HEADER_LEN + wire::MAX_PAYLOAD, StdFd::stdin());
    while let Some((header, payload)) = wire::read_frame(&mut stdin)? {
        match header.kind {
            Kind::Open => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the gateway sent OPEN",
                ));
            }
            Kind::Data => shared.to_socket(header.id, ToSocket::Data(payload)),
            Kind::Eof => shared.to_socket(header.id, ToSocket::Eof),
            Kind::Close => shared.closed_by_gateway(header.id),
        }
    }
    Ok(())
}

fn accept(listener: &UnixListener, shared: &Arc<Shared>) {
    // Ids are never reused, so a late frame about a closed connection can never be
    // taken for a new one; after 2^32 connections the listener stops taking more.
    let mut next_id: u32 = 0;
    for stream in listener.incoming() {
        let socket = match stream {
            Ok(socket) => socket,
            // Out of descriptors, say: do not spin.
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if next_id == u32::MAX {
            continue;
        }
        let (Ok(reading), Ok(writing)) = (socket.try_clone(), socket.try_clone()) else {
            continue;
        };
        // A client that stops reading while answers wait for it is cut off after
        // this long (sooner if its queue fills), so it cannot hold its place forever.
        let _ = writing.set_write_timeout(Some(WRITE_TIMEOUT));
        let (queue, queued) = sync_channel(SOCKET_QUEUE);
        {
            let mut conns = shared.conns();
            if conns.len() >= MAX_CONNECTIONS {
                continue; // dropping it closes it
            }
            conns.insert(
                next_id,
                Conn {
                    queue: Some(queue),
                    socket,
                },
            );
        }
        let id = next_id;
        next_id += 1;
        // OPEN goes out before the reader can send the connection's first DATA.
        shared.frame(id, Kind::Open, &[]);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .spawn(move || write_to_socket(id, writing, &queued, &writer_shared));
        if writer.is_err() {
            shared.cut_off(id);
            shared.finished(id);
            continue;
        }
        let reader_shared = shared.clone();
        let reader = std::thread::Builder::new()
            .spawn(move || read_from_socket(id, reading, &reader_shared));
        if reader.is_err() {
            shared.cut_off(id);
        }
    }
}

/// The connection's client's bytes, as frames, until it half-closes or fails.
fn read_from_socket(id: u32, mut socket: UnixStream, shared: &Shared) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => {
                if shared.is_open(id) {
                    shared.frame(id, Kind::Eof, &[]);
                }
                return;
            }
            Ok(n) => {
                if !shared.is_open(id) {
                    return;
                }
                shared.frame(id, Kind::Data, &buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                shared.cut_off(id);
                return;
            }
        }
    }
}

/// Writes what the gateway sent to the connection's client, in order, until the
/// gateway closes it or the client is gone.
fn write_to_socket(id: u32, mut socket: UnixStream, queued: &Receiver<ToSocket>, shared: &Shared) {
    while let Ok(msg) = queued.recv() {
        match msg {
            ToSocket::Data(bytes) => {
                if socket.write_all(&bytes).is_err() {
                    break;
                }
            }
            ToSocket::Eof => {
                let _ = socket.shutdown(Shutdown::Write);
            }
        }
    }
    // Ends the reader too (its read returns 0).
    let _ = socket.shutdown(Shutdown::Both);
    shared.finished(id);
}
