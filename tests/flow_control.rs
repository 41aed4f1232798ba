//! SSH flow control on the way in: a channel whose reader stops reading closes its own
//! window and stalls nobody else on the connection, what a client can make the gateway
//! hold stays bounded in both directions, and data still flows both ways at once.
//! Multiplexed with OpenSSH ControlMaster, as VS Code and `ssh -S` users do. What makes
//! this hold is the patched russh in vendor/russh (see its PATCHES.md).

mod support;

use support::process::wait_until;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::process::fd_offset;
use support::{Gateway, random_file, sha256_file, stderr, stdout};

const MIB: u64 = 1024 * 1024;
/// Each neighbour command gets this long; the stall these tests catch is forever.
const PER_COMMAND: Duration = Duration::from_secs(60);

/// One SSH connection (an OpenSSH control master) that `ssh -S` clients share.
struct Mux {
    master: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mux {
    fn start(gw: &Gateway) -> Mux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ctl");
        let mut master = gw.ssh(&gw.dev_key);
        master
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-o"])
            .arg(format!("ControlPath={}", socket.display()))
            .args(["-N", "demo@127.0.0.1"])
            .stdin(Stdio::null());
        let mux = Mux {
            master: master.spawn().unwrap(),
            socket,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_secs(30), || mux.socket.exists()),
            "control master never came up"
        );
        mux
    }

    /// `ssh -S ctl demo@… COMMAND` over the master's connection. Port 1 stops a
    /// client that cannot reach the master from quietly opening a connection of its own.
    fn ssh(&self, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-o", "LogLevel=ERROR", "-o", "Port=1"])
            .arg("-S")
            .arg(&self.socket)
            .args(["-o", "ControlMaster=no", "demo@127.0.0.1", command]);
        cmd
    }

    /// `echo` on twenty new channels, one after another, each within `PER_COMMAND`.
    fn neighbours_answer(&self) {
        for i in 0..20 {
            let mut echo = self.ssh(&format!("echo ok-{i}"));
            echo.stdin(Stdio::null());
            let out = run_within(echo, PER_COMMAND);
            assert_eq!(stdout(&out), format!("ok-{i}\n"), "{}", stderr(&out));
        }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// Kills and reaps on drop, so a failed assertion leaves nothing running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = signal(self.0.id(), "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` to completion, or kills it and fails after `limit`.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

/// A file of `len` zero bytes that costs no disk.
fn sparse_file(path: &Path, len: u64) -> std::fs::File {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
    std::fs::File::open(path).unwrap()
}

/// Starts `ssh -S ctl demo@… 'sleep 600' < FILE`: a remote program that never reads
/// the `len` bytes sent to it. Waits until the client has stopped reading FILE and
/// returns the client and how far it got.
fn start_unread_upload(mux: &Mux, dir: &Path, len: u64) -> (Reaped, u64) {
    let input = sparse_file(&dir.join("upload.bin"), len);
    let mut push = mux.ssh("sleep 600");
    push.stdin(input)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let push = Reaped(push.spawn().unwrap());
    // ControlMaster reads the client's stdin through the same open file, so the
    // client's fd 0 offset is what has been sent. Wait for it to settle.
    let (mut last, mut since) = (0, Instant::now());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) && since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(250));
        let now = fd_offset(push.0.id(), 0).unwrap_or(last);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    (push, last)
}

#[test]
fn a_reader_that_never_reads_stalls_only_its_own_channel() {
    let gw = Gateway::start();
    let mux = Mux::start(&gw);
    let dir = tempfile::tempdir().unwrap();
    let (mut push, sent) = start_unread_upload(&mux, dir.path(), 64 * MIB);
    assert!(
        push.0.try_wait().unwrap().is_none(),
        "the upload into `sleep` finished"
    );
    eprintln!("upload stalled after {} KiB", sent / 1024);
    assert!(
        sent < 64 * MIB,
        "all 64 MiB were taken by a program that never reads"
    );
    mux.neighbours_answer();
}

#[test]
fn what_stalled_peers_make_the_gateway_hold_stays_bounded() {
    let gw = Gateway::start();
    let mux = Mux::start(&gw);
    mux.neighbours_answer();
    let before = gw.rss_kib();
    let dir = tempfile::tempdir().unwrap();

    // In: 512 MiB pushed at a program that never reads. The window closes; the rest
    // stays with the client.
    let (mut push, sent) = start_unread_upload(&mux, dir.path(), 512 * MIB);
    assert!(
        push.0.try_wait().unwrap().is_none(),
        "the upload into `sleep` finished"
    );
    assert!(
        sent < 64 * MIB,
        "{} MiB were taken from the client for a program that reads nothing",
        sent / MIB
    );

    // Out: endless output to a client whose stdout pipe nobody reads (same connection)…
    let mut unread = mux.ssh("cat /dev/zero");
    unread
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let _unread = Reaped(unread.spawn().unwrap());
    // …and to a client that has stopped altogether (its own connection).
    let mut stopped = gw.ssh(&gw.dev_key);
    stopped
        .args(["demo@127.0.0.1", "cat /dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let stopped = Reaped(stopped.spawn().unwrap());
    std::thread::sleep(Duration::from_secs(2));
    assert!(signal(stopped.0.id(), "STOP"), "SIGSTOP failed");

    // The connection with the stalled channels still answers, and memory stays put.
    mux.neighbours_answer();
    let mut peak = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        peak = peak.max(gw.rss_kib());
        std::thread::sleep(Duration::from_millis(250));
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "upload stalled after {} KiB; gateway RSS {before} KiB before, {peak} KiB peak",
        sent / 1024
    );
    assert!(
        grown_mib < 100,
        "gateway RSS grew by {grown_mib} MiB ({before} KiB before, {peak} KiB peak)"
    );
    assert!(
        push.0.try_wait().unwrap().is_none(),
        "the upload into `sleep` finished"
    );
}

/// Both directions at once on one channel. Unpatched, the session loop waited for room
/// in the channel's input queue while `cat` waited for the window the client had
/// already re-opened in a packet queued behind that input: a deadlock once more is in
/// flight than the queues hold (32 MiB hangs every round in the debug build; 10 MiB
/// hangs about two rounds in five in the release build only).
#[test]
fn cat_round_trip_32_mib_five_times() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    let len = 32 * MIB as usize;
    random_file(&src, len);
    let want = sha256_file(&src);
    for round in 0..5 {
        let mut cat = gw.ssh(&gw.dev_key);
        cat.args(["demo@127.0.0.1", "cat"])
            .stdin(std::fs::File::open(&src).unwrap());
        let out = run_within(cat, Duration::from_secs(120));
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        let got = format!("{:x}", Sha256::digest(&out.stdout));
        assert_eq!(
            (got, out.stdout.len()),
            (want.clone(), len),
            "round {round}"
        );
    }
}
