//! Truthful activity: the gateway writes open connections and the time payload last
//! moved onto a sandbox's StatefulSet, where an idle-pause controller reads them. A
//! connection that only exchanges keepalives is open but not active.

mod support;

use std::process::Stdio;
use std::time::Duration;

use kube_emulator::Kind;
use serde_json::{Value, json};
use support::kube::KubeGateway;
use support::process::wait_until;
use support::{run, stdout};

const OPEN: &str = "ssh-gateway.io/open-sessions";
const LAST: &str = "ssh-gateway.io/last-activity";

fn running_set(gw: &KubeGateway) {
    gw.emu.create(
        Kind::StatefulSet,
        "default",
        json!({
            "metadata": {"name": "act", "labels": {"ssh-gateway.io/sandbox": "act"},
                         "annotations": {"ssh-gateway.io/owner": "alice"}},
            "spec": {"replicas": 1, "serviceName": "act",
                     "selector": {"matchLabels": {"ssh-gateway.io/sandbox": "act"}},
                     "template": {"metadata": {"labels": {"ssh-gateway.io/sandbox": "act"}},
                                  "spec": {"containers": [{"name": "main", "image": "debian:12"}]}}},
        }),
    );
}

fn annotation(gw: &KubeGateway, key: &str) -> Option<String> {
    let set: Value = gw.emu.get(Kind::StatefulSet, "default", "act");
    set["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn open_sessions_and_last_payload_reach_the_statefulset() {
    let gw = KubeGateway::start_full(
        &["default"],
        None,
        "[activity]\nheartbeat_secs = 1\n",
        Duration::ZERO,
    );
    running_set(&gw);
    let limit = Duration::from_secs(20);

    // Open, but nothing but keepalives: counted, not active.
    let mut idle = gw.ssh(&gw.alice);
    idle.args(["-N", "-o", "ServerAliveInterval=1", "act@127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut idle = idle.spawn().unwrap();
    assert!(
        wait_until(limit, || annotation(&gw, OPEN).as_deref() == Some("1")),
        "{}",
        gw.log()
    );
    // Several heartbeats and keepalives go by.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(annotation(&gw, LAST), None);
    assert_eq!(annotation(&gw, OPEN).as_deref(), Some("1"));

    // Payload moves: the time is recorded, and the short connection is counted out.
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["act@127.0.0.1", "echo payload"]);
    let before = chrono::Utc::now();
    assert_eq!(stdout(&run(cmd)), "payload\n");
    // Read once the short connection is counted out: a heartbeat may have written
    // the time while it ran, and its closing report may only then land.
    assert!(
        wait_until(limit, || annotation(&gw, LAST).is_some()
            && annotation(&gw, OPEN).as_deref() == Some("1")),
        "{}",
        gw.log()
    );
    let last = annotation(&gw, LAST).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(&last).unwrap();
    assert!(
        at >= before - chrono::Duration::seconds(1),
        "{last} vs {before}"
    );

    // Keepalives alone do not move it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(annotation(&gw, LAST), Some(last));

    let _ = idle.kill();
    let _ = idle.wait();
    assert!(
        wait_until(limit, || annotation(&gw, OPEN).as_deref() == Some("0")),
        "{}",
        gw.log()
    );
}

/// Idle means no payload: keepalives do not keep a connection open past the idle
/// timeout, output does; the user is told why.
#[test]
fn idle_connections_are_closed_with_a_reason_and_busy_ones_are_not() {
    let gw = KubeGateway::start_full(
        &["default"],
        None,
        "[activity]\nidle_timeout_secs = 3\n",
        Duration::ZERO,
    );
    running_set(&gw);
    let mut busy = gw.ssh(&gw.alice);
    busy.args([
        "act@127.0.0.1",
        // Output every 0.25 s against a 3 s idle timeout: busy by a wide margin even
        // on a loaded machine, where a 0.5 s sleep can take much longer.
        "i=0; while [ $i -lt 16 ]; do i=$((i+1)); echo $i; sleep 0.25; done",
    ]);
    let busy = busy
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut idle = gw.ssh(&gw.alice);
    idle.args(["-N", "-o", "ServerAliveInterval=1", "act@127.0.0.1"]);
    let out = run(idle);
    assert!(!out.status.success());
    let err = support::stderr(&out);
    assert!(err.contains("closed for inactivity"), "{err}");
    let out = busy.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: String = (1..=16).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

fn replicas(gw: &KubeGateway) -> u64 {
    let set: Value = gw.emu.get(Kind::StatefulSet, "default", "act");
    set["spec"]["replicas"].as_u64().unwrap_or(1)
}

/// `pause_after_idle_secs`: the gateway scales a sandbox's StatefulSet to 0 once its
/// last connection has closed and that long has passed, never while one is open, and
/// not when the StatefulSet shows open sessions another gateway replica wrote.
#[test]
fn an_idle_sandbox_is_scaled_to_zero_after_its_last_connection() {
    let gw = KubeGateway::start_full(
        &["default"],
        None,
        "[activity]\nheartbeat_secs = 1\npause_after_idle_secs = 8\n",
        Duration::ZERO,
    );
    running_set(&gw);
    let limit = Duration::from_secs(20);

    let mut open = gw.ssh(&gw.alice);
    open.args(["-n", "act@127.0.0.1", "sleep 5; echo done"]);
    assert_eq!(stdout(&run(open)), "done\n");
    assert_eq!(replicas(&gw), 1, "paused while a session was open");
    assert!(wait_until(limit, || replicas(&gw) == 0), "{}", gw.log());

    // Scaled up again, with another replica's open session on record: left alone.
    gw.emu.update(Kind::StatefulSet, "default", "act", |s| {
        s["spec"]["replicas"] = json!(1)
    });
    let last = annotation(&gw, LAST);
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["-q", "act@127.0.0.1", "echo again"]);
    assert_eq!(stdout(&run(cmd)), "again\n");
    // This replica has reported the close (new payload time, no sessions); within
    // the 8 s before it would pause (wide, so a loaded machine noticing the report
    // late still writes in time), another replica writes that it has two.
    assert!(wait_until(limit, || {
        annotation(&gw, LAST) != last && annotation(&gw, OPEN).as_deref() == Some("0")
    }));
    gw.emu.update(Kind::StatefulSet, "default", "act", |s| {
        s["metadata"]["annotations"][OPEN] = json!("2")
    });
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(replicas(&gw), 1, "{}", gw.log());
    assert!(gw.log().contains("not pausing"), "{}", gw.log());
}
