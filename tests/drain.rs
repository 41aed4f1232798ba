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

struct Served {
    serve: support::Serve,
    ssh_port: u16,
    api: String,
    key: support::KeyPair,
    _dir: tempfile::TempDir,
}

/// `serve` on SQLite with `drain_timeout_secs`, user ana and her sandbox `box`.
fn served(drain_timeout_secs: u64) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let config = support::StaticConfig::write(
        dir.path(),
        &format!("drain_timeout_secs = {drain_timeout_secs}\n"),
        "",
    );
    let key = config.users_with_keys(&["ana"]).remove(0);
    config.admin(&["sandbox", "add", "box", "--owner", "ana"]);
    Served {
        serve: config.serve(),
        ssh_port: config.ssh_port,
        api: config.api(),
        key,
        _dir: dir,
    }
}

impl Served {
    fn session(&self, script: &str, what: &'static str) -> support::live::Live {
        let mut cmd = support::client("ssh", &self.key, self.ssh_port);
        cmd.arg("box@127.0.0.1");
        support::live::live(cmd, script, what)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.serve.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn status_of(&self, path: &str) -> Option<u16> {
        let url = format!("{}{path}", self.api);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            support::http()
                .get(url)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        })
    }
}

/// SIGTERM: not ready at once (alive still), no new connections, sessions told and
/// allowed to finish within drain_timeout_secs, the rest closed with a reason, exit 0.
#[test]
fn sigterm_drains_sessions_for_drain_timeout_then_closes_the_rest() {
    let mut gw = served(6);
    assert_eq!(gw.status_of("/readyz"), Some(200));
    let finishing = gw.session(
        "echo started; sleep 2; echo finished",
        "a session that finishes within the drain",
    );
    let lingering = gw.session("echo started; exec sleep 300", "a session that would not");
    gw.sigterm();
    assert!(
        wait_until(Duration::from_secs(10), || gw.status_of("/readyz")
            == Some(503)),
        "/readyz did not turn 503"
    );
    assert_eq!(gw.status_of("/livez"), Some(200));
    let mut late = support::client("ssh", &gw.key, gw.ssh_port);
    late.args(["-o", "ConnectTimeout=5", "box@127.0.0.1", "true"]);
    let out = support::run(late);
    assert_eq!(
        out.status.code(),
        Some(255),
        "a new connection got in while draining"
    );

    let out = finishing.ended(Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "finished\n");
    assert!(
        stderr(&out).contains("ssh-gateway: this gateway is restarting"),
        "{}",
        stderr(&out)
    );
    let out = lingering.ended(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("this gateway is restarting"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("ssh-gateway: gateway shutting down"),
        "{}",
        stderr(&out)
    );
    let exited = gw.serve.wait_exit(Duration::from_secs(30));
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
}

/// A second SIGTERM during the drain: exit now.
#[test]
fn a_second_sigterm_exits_at_once() {
    let mut gw = served(300);
    let _held = gw.session(
        "echo started; exec sleep 300",
        "a session holding the drain open",
    );
    gw.sigterm();
    assert!(
        wait_until(Duration::from_secs(10), || gw.status_of("/readyz")
            == Some(503)),
        "/readyz did not turn 503"
    );
    gw.sigterm();
    let exited = gw.serve.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some(),
        "a second SIGTERM did not end a 300 s drain"
    );
}
