//! Wake on connect: a sandbox whose StatefulSet is scaled to 0 is resumed by the first
//! connection to it, with progress on stderr, one scale-up however many connect at
//! once, a clear message when it does not come up in time, and no wake-up at all for
//! users who may not use it. Pods of the emulator's StatefulSets turn Ready after a
//! delay, as a real pod's scheduling and image pull would take.

mod support;

use std::process::Stdio;
use std::time::Duration;

use kube_emulator::Kind;
use serde_json::json;
use support::kube::KubeGateway;
use support::{run, stderr, stdout};

const NO_ACCESS: &str = "does not exist or you have no access to it";

/// A paused sandbox: its StatefulSet names the owner; its pod template carries a decoy
/// owner, which must count for nothing (the set decides).
fn paused(gw: &KubeGateway, id: &str, owner: &str) {
    gw.emu.create(
        Kind::StatefulSet,
        "default",
        json!({
            "metadata": {"name": id, "labels": {"ssh-gateway.io/sandbox": id},
                         "annotations": {"ssh-gateway.io/owner": owner}},
            "spec": {
                "replicas": 0, "serviceName": id,
                "selector": {"matchLabels": {"ssh-gateway.io/sandbox": id}},
                "template": {
                    "metadata": {"labels": {"ssh-gateway.io/sandbox": id},
                                 "annotations": {"ssh-gateway.io/owner": "bob"}},
                    "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
                },
            },
        }),
    );
}

fn replicas(gw: &KubeGateway, id: &str) -> u64 {
    gw.emu.get(Kind::StatefulSet, "default", id)["spec"]["replicas"]
        .as_u64()
        .unwrap_or(99)
}

fn scale_ups(gw: &KubeGateway) -> usize {
    gw.log().matches("scaling up to 1 replica").count()
}

#[test]
fn ssh_wakes_a_paused_sandbox_and_shows_progress_on_stderr_only() {
    let gw = KubeGateway::start_full(&["default"], None, "", Duration::from_millis(1500));
    paused(&gw, "demo", "alice");

    // Authorization comes first: bob (the template's decoy owner) wakes nothing.
    let mut cmd = gw.ssh(&gw.bob);
    cmd.args(["demo@127.0.0.1", "echo hi"]);
    let out = run(cmd);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));
    assert_eq!(replicas(&gw, "demo"), 0);
    assert_eq!(scale_ups(&gw), 0);

    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["demo@127.0.0.1", "echo hi; echo $HOSTNAME"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "hi\ndemo-0\n");
    let err = stderr(&out);
    assert!(
        err.contains("ssh-gateway: demo is paused; resuming it"),
        "{err}"
    );
    assert!(
        err.contains("scaling StatefulSet default/demo to 1 replica"),
        "{err}"
    );
    assert!(err.contains("pod demo-0 is Pending"), "{err}");
    assert!(err.contains("ssh-gateway: demo is ready ("), "{err}");
    assert_eq!(replicas(&gw, "demo"), 1);
    assert_eq!(scale_ups(&gw), 1);

    // Running now: the next connection neither waits nor says anything.
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["demo@127.0.0.1", "echo again"]);
    let out = run(cmd);
    assert_eq!(stdout(&out), "again\n");
    assert_eq!(stderr(&out), "");
    assert_eq!(scale_ups(&gw), 1);
}

#[test]
fn a_burst_of_connections_shares_one_resume_and_sftp_streams_stay_clean() {
    let gw = KubeGateway::start_full(&["default"], None, "", Duration::from_millis(1500));
    paused(&gw, "burst", "alice");
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("batch");
    std::fs::write(&batch, "pwd\n").unwrap();
    // Like VS Code: several connections at once, one of them SFTP.
    let mut children = Vec::new();
    for i in 0..4 {
        let mut cmd = gw.ssh(&gw.alice);
        cmd.args(["burst@127.0.0.1", &format!("echo n{i}")]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    let mut sftp = gw.sftp(&gw.alice);
    sftp.arg("-b")
        .arg(&batch)
        .arg("burst@127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let sftp = sftp.spawn().unwrap();
    // And scp, in its legacy protocol (an exec of `scp -t`), whose stream must stay
    // clean as well.
    let upload = dir.path().join("up.txt");
    std::fs::write(&upload, "woken\n").unwrap();
    let remote = format!("/tmp/sgw-wake-scp-{}.txt", std::process::id());
    let mut scp = gw.scp(&gw.alice);
    scp.arg("-O")
        .arg(&upload)
        .arg(format!("burst@127.0.0.1:{remote}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let scp = scp.spawn().unwrap();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("n{i}\n"));
    }
    let out = sftp.wait_with_output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{se}\n{}", gw.log());
    assert!(so.contains("Remote working directory:"), "{so}");
    assert!(
        !so.contains("ssh-gateway"),
        "progress leaked into stdout: {so}"
    );
    let out = scp.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "scp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cat = gw.ssh(&gw.alice);
    cat.args(["burst@127.0.0.1", &format!("cat {remote}; rm -f {remote}")]);
    assert_eq!(
        String::from_utf8_lossy(&cat.output().unwrap().stdout),
        "woken\n"
    );
    assert_eq!(scale_ups(&gw), 1, "{}", gw.log());
}

#[test]
fn a_workload_that_never_becomes_ready_times_out_with_a_reason() {
    let gw = KubeGateway::start_full(
        &["default"],
        None,
        "resume_timeout_secs = 2\n",
        Duration::from_secs(60),
    );
    paused(&gw, "stuck", "alice");
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["stuck@127.0.0.1", "echo never"]);
    let started = std::time::Instant::now();
    let out = run(cmd);
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.contains("\"stuck\" could not be resumed: it did not become ready within 2 s"),
        "{err}"
    );
    assert!(
        err.contains("pod stuck-0 is Pending (ContainerCreating)"),
        "{err}"
    );
    // Bounded: the timeout, not the pod's minute, decides.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_pod_claiming_a_statefulset_it_does_not_belong_to_is_refused() {
    let gw = KubeGateway::start(&["default"], None);
    paused(&gw, "claimed", "alice");
    // bob's own pod with the sandbox's label and an owner reference naming alice's set
    // (but not its UID): it must not become alice's sandbox, nor bob's.
    gw.emu.create_pod(
        "default",
        json!({
            "metadata": {"name": "claimed-9", "labels": {"ssh-gateway.io/sandbox": "claimed"},
                         "annotations": {"ssh-gateway.io/owner": "bob"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                              "name": "claimed", "uid": "forged", "controller": true}]},
            "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
        }),
    );
    for key in [&gw.alice, &gw.bob] {
        let mut cmd = gw.ssh(key);
        cmd.args(["claimed@127.0.0.1", "echo in"]);
        let out = run(cmd);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));
    }
    assert_eq!(replicas(&gw, "claimed"), 0);
    assert!(
        gw.log().contains("names a StatefulSet controller"),
        "{}",
        gw.log()
    );
}

/// A port forward is often the first thing an IDE opens: it wakes the sandbox too
/// (there is no stderr to show progress on; the open just waits).
#[test]
fn a_port_forward_wakes_a_paused_sandbox() {
    let gw = KubeGateway::start_full(&["default"], None, "", Duration::from_millis(800));
    paused(&gw, "fwd", "alice");
    let (request, response) =
        support::forward::http_through_tunnel("localhost", b"woken", |spec| {
            let mut cmd = gw.ssh(&gw.alice);
            cmd.args(["-N", "-L", spec, "fwd@127.0.0.1"]);
            cmd
        });
    assert!(request.starts_with("GET / "), "{request}");
    assert!(response.ends_with("woken"), "{response}\n{}", gw.log());
    assert_eq!(replicas(&gw, "fwd"), 1);
    assert_eq!(scale_ups(&gw), 1);
}

/// `training-job-<id>-<node>` on a paused job: its StatefulSet is resumed whole (its
/// resume-replicas annotation), and the connection lands on the node asked for.
#[test]
fn a_training_job_node_wakes_its_job() {
    let gw = KubeGateway::start_full(
        &["default"],
        None,
        "node_label = \"apps.kubernetes.io/pod-index\"\n",
        Duration::from_millis(800),
    );
    gw.emu.create(
        Kind::StatefulSet,
        "default",
        json!({
            "metadata": {"name": "job-abc1234", "labels": {"ssh-gateway.io/training-job": "abc1234"},
                         "annotations": {"ssh-gateway.io/owner": "alice",
                                         "ssh-gateway.io/resume-replicas": "2"}},
            "spec": {
                "replicas": 0, "serviceName": "job-abc1234",
                "selector": {"matchLabels": {"ssh-gateway.io/training-job": "abc1234"}},
                "template": {
                    "metadata": {"labels": {"ssh-gateway.io/training-job": "abc1234"}},
                    "spec": {"containers": [{"name": "main", "image": "pytorch"}]},
                },
            },
        }),
    );
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["training-job-abc1234-1@127.0.0.1", "echo $HOSTNAME"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "job-abc1234-1\n");
    assert!(stderr(&out).contains("to 2 replicas"), "{}", stderr(&out));
    assert_eq!(
        gw.emu.get(Kind::StatefulSet, "default", "job-abc1234")["spec"]["replicas"],
        2
    );
}

#[test]
fn a_browser_terminal_wakes_a_paused_sandbox_and_shows_the_progress() {
    let gw = KubeGateway::start_full(&["default"], None, "", Duration::from_millis(1500));
    paused(&gw, "demo", "alice");
    let token = support::admin_with_config(
        &gw.dir.path().join("gateway.toml"),
        &["token", "create", "alice"],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut term = support::browser::open(gw.api_port, "demo").await;
        support::browser::login(&mut term, token.trim()).await;
        // The progress lines are the terminal's first output, then the shell.
        let shown = support::browser::read_until(&mut term, "is ready (").await;
        assert!(
            shown.contains("ssh-gateway: demo is paused; resuming it"),
            "{shown}"
        );
        assert!(shown.contains("pod demo-0 is Pending"), "{shown}");
        support::browser::typed(&mut term, "echo $HOSTNAME-up\r").await;
        support::browser::read_until(&mut term, "demo-0-up").await;
    });
    assert_eq!(replicas(&gw, "demo"), 1);
    assert_eq!(scale_ups(&gw), 1);
}
