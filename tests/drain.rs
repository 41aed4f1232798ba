//! Shutting down: on SIGTERM the gateway stops accepting, tells connected users why,
//! ends their programs, and exits, instead of just vanishing under them.

mod support;

use support::process::{running, wait_until};

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Gateway, stderr};

#[test]
fn sigterm_tells_users_why_ends_their_programs_and_exits() {
    let mut gw = Gateway::start();
    let n = std::process::id() % 1000;
    let marker = format!("sleep 89{n}.5");
    let mut client = gw.ssh(&gw.dev_key);
    client
        .args(["demo@127.0.0.1", &format!("N=89; sleep ${{N}}{n}.5")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let client = client.spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || running(&marker)),
        "remote command never started"
    );

    let status = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(client.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the client was not disconnected")
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("ssh-gateway: gateway shutting down"),
        "{}",
        stderr(&out)
    );
    let exited = gw.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|s| s.success()),
        "gateway did not exit cleanly: {exited:?}\n{}",
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(30), || !running(&marker)),
        "the program outlived the gateway"
    );
    assert!(gw.log().contains("draining connections"), "{}", gw.log());
}
