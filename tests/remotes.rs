//! Several remotes: one gateway, two more Kubernetes clusters (kube-emulators) named
//! `a` and `b` in `[routing] remotes`, reached by host name through the HTTP CONNECT
//! front (`ssh-gateway proxy --connect`). The same sandbox id lives in both with other
//! owners and other files: `demo.a.<domain>` reaches only a's pod, `demo.b.<domain>`
//! only b's, and who may use it, waking it, its activity and its forwards are that
//! cluster's alone.

mod support;

use std::time::Duration;

use kube_emulator::Kind;
use serde_json::{Value, json};
use support::kube::{EmulatorThread, KubeGateway, sandbox};
use support::process::wait_until;
use support::{run, stderr, stdout};

const DOMAIN: &str = "ssh.test.example";
const NO_ACCESS: &str = "sandbox \"demo\" does not exist or you have no access to it";

/// `demo` in a (alice's), in b (bob's), and nowhere in the main cluster; each pod has
/// a file only it has.
fn two_remotes() -> KubeGateway {
    let gw = KubeGateway::start_remotes(&["default"], DOMAIN, &["a", "b"], "");
    for (remote, owner) in [("a", "alice"), ("b", "bob")] {
        let emu = gw.remote(remote);
        let (labels, annotations) = sandbox("demo", owner);
        emu.pod("default", "sandbox-demo", labels, annotations);
        std::fs::write(
            emu.pod_dir("default", "sandbox-demo").join("cluster.txt"),
            format!("this is cluster {remote}\n"),
        )
        .unwrap();
    }
    gw
}

#[test]
fn the_remote_in_the_host_name_picks_the_cluster() {
    let gw = two_remotes();
    let mut ssh = gw.ssh_by_host(&gw.alice);
    ssh.args([&format!("laptop@demo.a.{DOMAIN}"), "cat cluster.txt"]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "this is cluster a\n");

    let mut ssh = gw.ssh_by_host(&gw.bob);
    ssh.args([&format!("bob@DEMO.B.{DOMAIN}"), "cat cluster.txt; pwd"]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    let pod_b = gw.remote("b").pod_dir("default", "sandbox-demo");
    assert_eq!(
        stdout(&out),
        format!("this is cluster b\n{}\n", pod_b.display())
    );
}

#[test]
fn owners_are_per_cluster_and_the_default_cluster_has_no_demo() {
    let gw = two_remotes();
    // alice owns demo in a only: on b it is unknown to her, in b's words.
    let mut ssh = gw.ssh_by_host(&gw.alice);
    ssh.args([&format!("alice@demo.b.{DOMAIN}"), "cat cluster.txt"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out).trim(), format!("ssh-gateway: {NO_ACCESS}"));
    // One label before the domain is the default cluster, which has no demo.
    let mut ssh = gw.ssh_by_host(&gw.alice);
    ssh.args([&format!("alice@demo.{DOMAIN}"), "true"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim(), format!("ssh-gateway: {NO_ACCESS}"));
}

#[test]
fn an_unknown_remote_is_refused_with_the_remotes_there_are() {
    let gw = two_remotes();
    let mut ssh = gw.ssh_by_host(&gw.alice);
    ssh.args([&format!("alice@demo.nope.{DOMAIN}"), "true"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "host name \"demo.nope.{DOMAIN}\": unknown remote \"nope\"; this gateway's remotes are: a, b"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn port_forwards_are_authorized_by_the_remote_they_name() {
    let gw = two_remotes();
    // bob owns demo in b: `-L` through demo.b is his; through demo.a it is not.
    let forward = |host: String| {
        support::forward::http_through_tunnel("localhost", b"from the pod", |spec| {
            let mut cmd = gw.ssh_by_host(&gw.bob);
            cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", spec])
                .arg(format!("bob@{host}"));
            cmd
        })
    };
    let (_, response) = forward(format!("demo.b.{DOMAIN}"));
    assert!(
        response.ends_with("from the pod"),
        "{response:?}\n{}",
        gw.log()
    );
    let mut refused = gw.ssh_by_host(&gw.bob);
    // -v: the open failure's reason is a debug line.
    refused.args(["-v", "-W", "localhost:9", &format!("bob@demo.a.{DOMAIN}")]);
    let out = run(refused);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));
}

/// A paused sandbox `sleepy` (StatefulSet at 0 replicas) owned by bob in `emu`.
fn paused(emu: &EmulatorThread) {
    emu.create(
        Kind::StatefulSet,
        "default",
        json!({
            "metadata": {"name": "sleepy", "labels": {"ssh-gateway.io/sandbox": "sleepy"},
                         "annotations": {"ssh-gateway.io/owner": "bob"}},
            "spec": {
                "replicas": 0, "serviceName": "sleepy",
                "selector": {"matchLabels": {"ssh-gateway.io/sandbox": "sleepy"}},
                "template": {
                    "metadata": {"labels": {"ssh-gateway.io/sandbox": "sleepy"}},
                    "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
                },
            },
        }),
    );
}

fn set(emu: &EmulatorThread) -> Value {
    emu.get(Kind::StatefulSet, "default", "sleepy")
}

#[test]
fn waking_and_activity_reach_the_remote_named() {
    let gw = KubeGateway::start_remotes(
        &["default"],
        DOMAIN,
        &["a", "b"],
        "[activity]\nheartbeat_secs = 1\n",
    );
    paused(gw.remote("a"));
    paused(gw.remote("b"));
    let mut ssh = gw.ssh_by_host(&gw.bob);
    ssh.args([&format!("bob@sleepy.b.{DOMAIN}"), "echo awake"]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "awake\n");
    assert!(
        stderr(&out).contains("sleepy is paused; resuming it"),
        "{}",
        stderr(&out)
    );
    // b's StatefulSet woke; a's, of the same name, slept on.
    assert_eq!(set(gw.remote("b"))["spec"]["replicas"], 1);
    assert_eq!(set(gw.remote("a"))["spec"]["replicas"], 0);
    // The activity report lands on b's StatefulSet, and only there.
    let last = "ssh-gateway.io/last-activity";
    assert!(
        wait_until(Duration::from_secs(20), || set(gw.remote("b"))["metadata"]
            ["annotations"][last]
            .is_string()),
        "{}",
        gw.log()
    );
    assert_eq!(
        set(gw.remote("a"))["metadata"]["annotations"]["ssh-gateway.io/open-sessions"],
        Value::Null
    );
    assert!(gw.log().contains("b/sleepy"), "{}", gw.log());
}
