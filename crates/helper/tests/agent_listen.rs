//! `agent-listen` as the gateway drives it: the socket's place and modes, connections
//! carried as frames both ways with half-closes, the cap on connections, a client that
//! does not read cut off without stalling another, and garbage on stdin ending it
//! cleanly with the socket removed. Real Unix sockets and the built binary.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sgw_helper::agent::wire::{self, Kind};

const WAIT: Duration = Duration::from_secs(10);

/// A running `agent-listen`, with its frames read on a thread.
struct Listener {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: mpsc::Receiver<(u32, Kind, Vec<u8>)>,
    socket: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Listener {
    fn start() -> Listener {
        let tmp = support::tempdir();
        let mut child = Command::new(support::helper())
            .arg("agent-listen")
            .env_clear()
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let socket = PathBuf::from(line.strip_suffix('\n').expect("a whole line"));
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(Some((header, payload))) = wire::read_frame(&mut stdout) {
                if tx.send((header.id, header.kind, payload)).is_err() {
                    break;
                }
            }
        });
        Listener {
            stdin: child.stdin.take(),
            child,
            frames,
            socket,
            _tmp: tmp,
        }
    }

    fn dir(&self) -> &Path {
        self.socket.parent().unwrap()
    }

    fn send(&mut self, id: u32, kind: Kind, payload: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(&wire::encode(id, kind, payload)).unwrap();
    }

    fn next(&self) -> (u32, Kind, Vec<u8>) {
        self.frames
            .recv_timeout(WAIT)
            .expect("a frame from the helper")
    }

    /// Connects a client and returns it with the id the helper announced.
    fn connect(&self) -> (UnixStream, u32) {
        let client = UnixStream::connect(&self.socket).unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        let (id, kind, _) = self.next();
        assert_eq!(kind, Kind::Open);
        (client, id)
    }

    /// Closes stdin (the gateway hung up) and returns the exit code and stderr.
    fn end(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code(), err)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_to_end(client: &mut UnixStream) -> Vec<u8> {
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    got
}

#[test]
fn connections_are_carried_both_ways_and_the_socket_goes_with_stdin() {
    let mut l = Listener::start();
    assert!(
        l.socket.starts_with(l._tmp.path()),
        "{}",
        l.socket.display()
    );
    let dir_mode = std::fs::metadata(l.dir()).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let sock_mode = std::fs::metadata(&l.socket).unwrap().permissions().mode();
    assert_eq!(sock_mode & 0o777, 0o600);
    let name = l.dir().file_name().unwrap().to_string_lossy().into_owned();
    // Ten random characters, as sshd's: not the template's X's.
    assert!(
        name.starts_with("ssh-") && name.len() == 14 && &name[4..8] != "XXXX",
        "{name}"
    );

    let (mut a, ida) = l.connect();
    let (mut b, idb) = l.connect();
    assert_ne!(ida, idb);

    a.write_all(b"from a").unwrap();
    assert_eq!(l.next(), (ida, Kind::Data, b"from a".to_vec()));
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(l.next(), (ida, Kind::Eof, Vec::new()));

    l.send(idb, Kind::Data, b"to b");
    l.send(idb, Kind::Eof, b"");
    assert_eq!(read_to_end(&mut b), b"to b");
    // B can still send after its read side ended.
    b.write_all(b"late").unwrap();
    assert_eq!(l.next(), (idb, Kind::Data, b"late".to_vec()));

    // What was queued before the gateway's CLOSE is still written.
    l.send(ida, Kind::Data, b"answer");
    l.send(ida, Kind::Close, b"");
    assert_eq!(read_to_end(&mut a), b"answer");
    // Frames about a closed or unknown connection are ignored.
    l.send(ida, Kind::Data, b"ignored");
    l.send(999, Kind::Eof, b"");

    let dir = l.dir().to_owned();
    let (code, err) = l.end();
    assert_eq!(code, Some(0), "{err}");
    assert!(!dir.exists(), "the socket's directory outlived the helper");
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let mut l = Listener::start();
    let max = sgw_helper::agent::MAX_CONNECTIONS;
    let clients: Vec<(UnixStream, u32)> = (0..max).map(|_| l.connect()).collect();
    let mut extra = UnixStream::connect(&l.socket).unwrap();
    extra.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_to_end(&mut extra), b"", "closed without a word");
    // Once one goes, there is room again (for a new id: ids are never reused).
    let (_, first) = &clients[0];
    l.send(*first, Kind::Close, b"");
    let deadline = std::time::Instant::now() + WAIT;
    let again = loop {
        let client = UnixStream::connect(&l.socket).unwrap();
        match l.frames.recv_timeout(Duration::from_millis(200)) {
            Ok((id, Kind::Open, _)) => break (client, id),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(std::time::Instant::now() < deadline, "no room again"),
        }
    };
    assert_eq!(again.1, max as u32);
}

#[test]
fn a_client_that_does_not_read_is_cut_off_and_the_others_go_on() {
    let mut l = Listener::start();
    let (_stuck, stuck) = l.connect();
    let (mut fine, other) = l.connect();
    // Far more than the socket buffer and the queue hold, for a client that never
    // reads; the helper must keep reading stdin meanwhile.
    let chunk = vec![7u8; wire::MAX_PAYLOAD];
    let mut closed = false;
    for _ in 0..256 {
        l.send(stuck, Kind::Data, &chunk);
        if let Ok(frame) = l.frames.try_recv() {
            assert_eq!(frame, (stuck, Kind::Close, Vec::new()));
            closed = true;
            break;
        }
    }
    if !closed {
        assert_eq!(l.next(), (stuck, Kind::Close, Vec::new()));
    }
    l.send(other, Kind::Data, b"still served");
    let mut got = [0u8; 12];
    fine.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still served");
}

#[test]
fn garbage_on_stdin_ends_it_cleanly() {
    let mut oversized = wire::encode(0, Kind::Data, b"");
    oversized[5..9].copy_from_slice(&(wire::MAX_PAYLOAD as u32 + 1).to_be_bytes());
    let mut unknown = wire::encode(0, Kind::Eof, b"");
    unknown[4] = 42;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("oversized", oversized, "at most"),
        ("unknown kind", unknown, "unknown frame kind 42"),
        (
            "truncated",
            wire::encode(0, Kind::Data, b"abcdef")[..12].to_vec(),
            "inside a frame",
        ),
        (
            "OPEN from the gateway",
            wire::encode(0, Kind::Open, b""),
            "the gateway sent OPEN",
        ),
    ];
    for (what, bytes, said) in cases {
        let mut l = Listener::start();
        let (mut client, _) = l.connect();
        l.stdin.as_mut().unwrap().write_all(&bytes).unwrap();
        let dir = l.dir().to_owned();
        let (code, err) = l.end();
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(
            err.starts_with("ssh-gateway-helper: agent-listen: ") && err.contains(said),
            "{what}: {err}"
        );
        assert!(!dir.exists(), "{what}: the socket's directory outlived it");
        assert_eq!(read_to_end(&mut client), b"", "{what}");
    }
}

#[test]
fn hangup_and_terminate_remove_the_socket() {
    for signal in ["-HUP", "-TERM"] {
        let mut l = Listener::start();
        let dir = l.dir().to_owned();
        let status = Command::new("kill")
            .arg(signal)
            .arg(l.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exited = l.child.wait().unwrap();
        assert_eq!(exited.code(), Some(0), "{signal}");
        assert!(
            !dir.exists(),
            "{signal}: the socket's directory outlived it"
        );
    }
}

#[test]
fn arguments_are_refused() {
    let out = Command::new(support::helper())
        .args(["agent-listen", "extra"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
