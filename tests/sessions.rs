//! Session lifecycles a user notices: a client that vanishes leaves nothing running,
//! and one busy channel does not hold up the others on the same connection (the way
//! VS Code and `ControlMaster` multiplex many channels over one connection).

mod support;

use support::process::{running, wait_until};

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Gateway, run, stderr, stdout};

#[test]
fn a_vanished_client_leaves_no_process_behind() {
    let gw = Gateway::start();
    // A distinctive argument that only the remote process carries: the client's own
    // command line says `sleep ${N}…`, which pgrep does not match.
    let n = std::process::id() % 1000;
    let marker = format!("sleep 86{n}.5");
    let mut client = gw.ssh(&gw.dev_key);
    client
        .args(["demo@127.0.0.1", &format!("N=86; sleep ${{N}}{n}.5")])
        .stdin(Stdio::null());
    let mut child = client.spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || running(&marker)),
        "remote command never started"
    );
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        wait_until(Duration::from_secs(30), || !running(&marker)),
        "the sandbox process outlived its client"
    );
}

#[test]
fn a_stalled_channel_does_not_block_its_neighbours() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mux");
    let mux_opts = |cmd: &mut Command| {
        cmd.args(["-o", "ControlMaster=auto", "-o"])
            .arg(format!("ControlPath={}", socket.display()));
    };
    let mut master = gw.ssh(&gw.dev_key);
    mux_opts(&mut master);
    master.args(["-N", "demo@127.0.0.1"]).stdin(Stdio::null());
    let mut master = master.spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || socket.exists()),
        "control master never came up"
    );

    // Channel 1 produces output forever into a pipe nobody reads: its window closes.
    let mut flood = gw.ssh(&gw.dev_key);
    mux_opts(&mut flood);
    flood
        .args(["demo@127.0.0.1", "cat /dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut flood = flood.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Channel 2 on the same connection still answers.
    let mut other = gw.ssh(&gw.dev_key);
    mux_opts(&mut other);
    other.args(["demo@127.0.0.1", "echo neighbour ok"]);
    let out = run(other);
    let _ = flood.kill();
    let _ = flood.wait();
    let _ = master.kill();
    let _ = master.wait();
    assert_eq!(stdout(&out), "neighbour ok\n", "{}", stderr(&out));
}

#[test]
fn a_vanished_client_of_a_program_that_reads_nothing_and_ignores_hangups_leaves_nothing() {
    let gw = Gateway::start();
    let n = std::process::id() % 1000;
    let marker = format!("sleep 87{n}.5");
    // The program never reads its stdin, which the client keeps filling, and it shrugs
    // off SIGHUP: only the gateway's SIGKILL ends it.
    let mut client = gw.ssh(&gw.dev_key);
    client
        .args([
            "demo@127.0.0.1",
            &format!("trap '' HUP; N=87; sleep ${{N}}{n}.5"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = client.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let block = vec![b'x'; 64 * 1024];
        while std::io::Write::write_all(&mut stdin, &block).is_ok() {}
    });
    assert!(
        wait_until(Duration::from_secs(20), || running(&marker)),
        "remote command never started"
    );
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        wait_until(Duration::from_secs(30), || !running(&marker)),
        "the sandbox process outlived its client"
    );
}
