//! The HTTP control plane against the reference one in tests/support: a paused
//! sandbox wakes on connect with progress on stderr only, one resume however many
//! connect, 5xx retried and 4xx not, a resume that never ends times out with a
//! message, stopped and forbidden targets wake nothing, and activity reports carry
//! honest counts and payload times.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::control_plane::HttpGateway;
use support::process::wait_until;
use support::{run, run_with_input, stderr, stdout};

const UNKNOWN: &str = "does not exist or you have no access to it";

#[test]
fn a_paused_sandbox_wakes_for_ssh_and_sftp_with_progress_only_on_stderr() {
    let gw = HttpGateway::start("", "");
    gw.plane.add("demo", "paused", "alice", &[]);

    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["demo@127.0.0.1", "echo hello"]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "hello\n");
    let err = stderr(&out);
    assert!(err.contains("demo is paused; resuming it"), "{err}");
    assert!(err.contains("demo is ready ("), "{err}");
    assert_eq!(gw.plane.count("POST", "demo/resume"), 1);
    assert_eq!(gw.plane.state("demo"), "running");
    assert!(gw.plane.calls().iter().all(|c| c.authorized));

    // sftp's byte stream stays clean while another paused sandbox wakes.
    gw.plane.add("files", "paused", "alice", &[]);
    let local = gw.dir.path().join("up.bin");
    support::random_file(&local, 300_000);
    let mut sftp = gw.sftp(&gw.alice);
    sftp.args(["-b", "-", "files@127.0.0.1"]);
    let out = run_with_input(sftp, format!("put {} up.bin\n", local.display()).as_bytes());
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(
        support::sha256_file(&gw.sandbox_dir("files").join("up.bin")),
        support::sha256_file(&local)
    );
    assert_eq!(gw.plane.count("POST", "files/resume"), 1);
}

#[test]
fn five_connections_at_once_cause_one_resume() {
    let gw = HttpGateway::start("", "");
    gw.plane.add("burst", "paused", "alice", &[]);
    gw.plane
        .set_resume_delay("burst", Some(Duration::from_millis(1500)));
    let children: Vec<_> = (0..5)
        .map(|i| {
            let mut ssh = gw.ssh(&gw.alice);
            ssh.args(["-q", "burst@127.0.0.1", &format!("echo {i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            ssh.spawn().unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
        assert_eq!(stdout(&out), format!("{i}\n"));
    }
    assert_eq!(gw.plane.count("POST", "burst/resume"), 1);
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let gw = HttpGateway::start("", "");
    gw.plane.add("demo", "running", "alice", &[]);

    gw.plane.fail_next("GET", "demo", &[503, 502]);
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["demo@127.0.0.1", "echo ok"]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "ok\n");
    let after_retries = gw.plane.count("GET", "demo");
    assert!(after_retries >= 3, "{:?}", gw.plane.calls());

    gw.plane.fail_next("GET", "demo", &[400]);
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["demo@127.0.0.1", "echo ok"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach its control plane"),
        "{}",
        stderr(&out)
    );
    assert_eq!(gw.plane.count("GET", "demo"), after_retries + 1);
}

#[test]
fn a_wrong_token_is_refused_once_and_not_retried() {
    let gw = HttpGateway::start_with_token("not-the-token", "", "");
    gw.plane.add("demo", "paused", "alice", &[]);
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["demo@127.0.0.1", "true"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot reach its control plane"));
    assert_eq!(gw.plane.count("GET", "demo"), 1);
    assert_eq!(gw.plane.count("POST", "demo/resume"), 0);
    assert!(!gw.log().contains("not-the-token"), "the token was logged");
}

#[test]
fn a_resume_that_never_ends_times_out_with_a_message() {
    let gw = HttpGateway::start("resume_timeout_secs = 2", "");
    gw.plane.add("stuck", "paused", "alice", &[]);
    gw.plane.set_resume_delay("stuck", None);
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["stuck@127.0.0.1", "true"]);
    let out = run(ssh);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("sandbox \"stuck\" could not be resumed"),
        "{err}"
    );
    assert!(err.contains("did not start within 2 s"), "{err}");
    assert_eq!(gw.plane.count("POST", "stuck/resume"), 1);
}

#[test]
fn stopped_unknown_and_forbidden_targets_wake_nothing() {
    let gw = HttpGateway::start("", "");
    gw.plane.add("halted", "stopped", "alice", &[]);
    gw.plane.add("mine", "paused", "alice", &[]);

    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["halted@127.0.0.1", "true"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sandbox \"halted\" is stopped"),
        "{}",
        stderr(&out)
    );

    // bob may not use alice's sandbox: told exactly what an unknown id is told.
    let mut ssh = gw.ssh(&gw.bob);
    ssh.args(["mine@127.0.0.1", "true"]);
    let forbidden = stderr(&run(ssh));
    let mut ssh = gw.ssh(&gw.bob);
    ssh.args(["nosuch@127.0.0.1", "true"]);
    let unknown = stderr(&run(ssh));
    assert!(forbidden.contains(UNKNOWN), "{forbidden}");
    assert_eq!(
        forbidden.replace("mine", "X"),
        unknown.replace("nosuch", "X")
    );
    assert_eq!(gw.plane.count("POST", "halted/resume"), 0);
    assert_eq!(gw.plane.count("POST", "mine/resume"), 0);
    assert_eq!(gw.plane.state("mine"), "paused");

    // Membership is read from the platform on every channel.
    gw.plane.set_members("mine", &["bob"]);
    let mut ssh = gw.ssh(&gw.bob);
    ssh.args(["-q", "mine@127.0.0.1", "echo in"]);
    let out = run(ssh);
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
}

fn ms(v: &serde_json::Value) -> Option<i64> {
    let at = v["last_payload_at"].as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp_millis(),
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[test]
fn activity_reports_count_sessions_and_only_payload_moves_the_time() {
    let gw = HttpGateway::start("", "[activity]\nheartbeat_secs = 1\n");
    gw.plane.add("act", "running", "alice", &[]);
    let limit = Duration::from_secs(20);

    // Open, exchanging nothing but keepalives.
    let mut idle = gw.ssh(&gw.alice);
    idle.args([
        "-n",
        "-o",
        "ServerAliveInterval=1",
        "act@127.0.0.1",
        "sleep 60",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut idle = idle.spawn().unwrap();
    assert!(wait_until(limit, || gw.plane.activity("act").len() >= 3));
    let reports = gw.plane.activity("act");
    assert_eq!(reports[0]["event"], "connect", "{reports:?}");
    assert_eq!(reports[0]["open_sessions"], 1);
    for r in &reports[1..] {
        assert_eq!(r["event"], "heartbeat", "{reports:?}");
        assert_eq!(r["open_sessions"], 1);
    }
    assert!(
        reports.iter().all(|r| r["last_payload_at"].is_null()),
        "keepalives moved last_payload_at: {reports:?}"
    );

    // A command with output: payload, then it ends.
    let before = now_ms();
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["act@127.0.0.1", "echo hi"]);
    assert_eq!(stdout(&run(ssh)), "hi\n");
    let after = now_ms();
    assert!(wait_until(limit, || {
        gw.plane
            .activity("act")
            .iter()
            .any(|r| r["event"] == "disconnect" && r["open_sessions"] == 1)
    }));
    let reports = gw.plane.activity("act");
    let gone = reports.iter().find(|r| r["event"] == "disconnect").unwrap();
    assert_eq!(gone["reason"], "client closed");
    let at = ms(gone).expect("payload moved");
    assert!(
        (before - 5..=after + 5).contains(&at),
        "{before} <= {at} <= {after}"
    );

    // Heartbeats after it keep that time: the idle session's keepalives do not move it.
    let seen = gw.plane.activity("act").len();
    assert!(wait_until(limit, || gw.plane.activity("act").len() >= seen + 2));
    for r in &gw.plane.activity("act")[seen..] {
        assert_eq!(r["event"], "heartbeat");
        assert_eq!(ms(r), Some(at), "{r}");
    }

    // The last one leaves: zero sessions.
    idle.kill().unwrap();
    idle.wait().unwrap();
    assert!(wait_until(limit, || {
        gw.plane
            .activity("act")
            .last()
            .is_some_and(|r| r["event"] == "disconnect" && r["open_sessions"] == 0)
    }));
}

#[test]
fn the_contract_is_served_by_the_api() {
    let gw = HttpGateway::start("", "");
    let body = plain_http::get(gw.api_port);
    assert!(body.contains("openapi: 3.0.3"), "{body}");
    assert!(body.contains("/v1/sandboxes/{id}/resume"));
}

mod plain_http {
    /// GET /control-plane.openapi.yaml over a plain socket (the suite's reqwest is
    /// async; this keeps the test synchronous).
    pub fn get(port: u16) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            b"GET /control-plane.openapi.yaml HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }
}

#[test]
fn an_idle_target_is_paused_only_after_its_last_connection_closes() {
    let gw = HttpGateway::start(
        "",
        "[activity]\nheartbeat_secs = 1\npause_after_idle_secs = 1\n",
    );
    gw.plane.add("nap", "running", "alice", &[]);
    let limit = Duration::from_secs(20);

    // Open, quiet for three times the idle period: never paused while it is open.
    let mut open = gw.ssh(&gw.alice);
    open.args(["-n", "nap@127.0.0.1", "sleep 3; echo done"]);
    let out = run(open);
    assert_eq!(stdout(&out), "done\n", "{}", stderr(&out));
    assert_eq!(gw.plane.count("POST", "nap/pause"), 0);
    assert_eq!(gw.plane.state("nap"), "running");

    // Then, a second after it closed, the gateway pauses it, once.
    assert!(
        wait_until(limit, || gw.plane.state("nap") == "paused"),
        "{}",
        gw.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(gw.plane.count("POST", "nap/pause"), 1);

    // And the next connection wakes it again.
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["-q", "nap@127.0.0.1", "echo back"]);
    assert_eq!(stdout(&run(ssh)), "back\n");
    assert_eq!(gw.plane.count("POST", "nap/resume"), 1);
}

#[test]
fn a_platform_that_long_polls_is_asked_once_while_it_wakes() {
    let gw = HttpGateway::start("", "");
    gw.plane.set_long_poll(true);
    gw.plane.add("lp", "paused", "alice", &[]);
    gw.plane
        .set_resume_delay("lp", Some(Duration::from_millis(1500)));
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["-q", "lp@127.0.0.1", "echo up"]);
    let out = run(ssh);
    assert_eq!(stdout(&out), "up\n", "{}", stderr(&out));
    // Authorize, authorize before the resume, one held GET, authorize after: a
    // polling gateway would have asked about six more times in 1.5 s.
    let gets = gw.plane.count("GET", "lp");
    assert!(gets <= 5, "{gets} GETs: {:?}", gw.plane.calls());
    assert_eq!(gw.plane.count("POST", "lp/resume"), 1);
}

#[test]
fn an_answer_about_another_target_or_none_at_all_lets_nobody_in() {
    let gw = HttpGateway::start("request_timeout_secs = 1\nretry_budget_secs = 2", "");
    // Asked about "decoy", the plane answers about alice's "real" (owned by alice):
    // the gateway must not decide on an object it did not ask about.
    gw.plane.add("decoy", "paused", "alice", &[]);
    gw.plane.set_answer_id("decoy", "real");
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["decoy@127.0.0.1", "echo in"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("cannot reach its control plane"),
        "{}",
        stderr(&out)
    );
    assert_eq!(gw.plane.count("POST", "decoy/resume"), 0);

    // A plane that never answers in time: retried within the budget, then the user
    // is told, rather than left waiting.
    gw.plane.add("slow", "running", "alice", &[]);
    gw.plane.set_stall("slow", Duration::from_secs(30));
    let mut ssh = gw.ssh(&gw.alice);
    ssh.args(["slow@127.0.0.1", "echo in"]);
    let started = std::time::Instant::now();
    let out = run(ssh);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach its control plane"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert!(gw.plane.count("GET", "slow") >= 2, "{:?}", gw.plane.calls());
}
