//! Kubernetes authorization is decided on the exact pod a channel runs in, and an
//! attacker who can create pods with a victim's sandbox label (a decoy) gets nothing:
//! not the victim's pod, and not the power to decide who gets in. Access is re-read
//! for every channel, so a connection cannot keep using a pod it lost access to.

mod support;

use kube_emulator::Kind;
use serde_json::{Value, json};
use support::kube::{KubeGateway, model_replica, sandbox};
use support::mux::Master;
use support::{run, run_with_input, stderr, stdout};

const NO_ACCESS: &str = "does not exist or you have no access to it";

fn manifest(name: &str, labels: Value, annotations: Value, extra: Value) -> Value {
    let mut pod = json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
    });
    if let (Some(meta), Some(extra)) = (pod["metadata"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            meta.insert(k.clone(), v.clone());
        }
    }
    pod
}

/// alice's sandbox `shared`, running, with a secret in its working directory.
fn victim(gw: &KubeGateway) {
    let (labels, annotations) = sandbox("shared", "alice");
    gw.emu.pod("default", "sandbox-shared", labels, annotations);
    std::fs::write(
        gw.emu.pod_dir("default", "sandbox-shared").join("secret"),
        "alice's secret\n",
    )
    .unwrap();
}

fn cat_secret(gw: &KubeGateway, key: &support::KeyPair) -> std::process::Output {
    let mut cmd = gw.ssh(key);
    cmd.args(["shared@127.0.0.1", "cat secret"]);
    run(cmd)
}

fn assert_refused(out: &std::process::Output, who: &str) {
    assert_ne!(out.status.code(), Some(0), "{who} got in: {}", stdout(out));
    assert!(
        !stdout(out).contains("secret"),
        "{who} read the secret: {}",
        stdout(out)
    );
    assert!(stderr(out).contains(NO_ACCESS), "{who}: {}", stderr(out));
}

#[test]
fn a_pending_decoy_pod_neither_lets_the_attacker_in_nor_decides_for_the_owner() {
    let gw = KubeGateway::start(&["default", "team-b"], None);
    victim(&gw);
    // Bob can create pods in the namespace: a Pending pod carrying alice's sandbox
    // label, named to sort first, annotated with himself as owner.
    let (labels, _) = sandbox("shared", "bob");
    gw.emu.create_pod(
        "default",
        manifest(
            "a-decoy",
            labels,
            json!({"ssh-gateway.io/owner": "bob", "kube-emulator/phase": "Pending"}),
            json!({}),
        ),
    );
    assert_refused(&cat_secret(&gw, &gw.bob), "bob");
    // While the conflict stands nobody is let in, and the log names both pods.
    assert_refused(&cat_secret(&gw, &gw.alice), "alice");
    let log = gw.log();
    assert!(
        log.contains("disagree on owner") && log.contains("default/a-decoy"),
        "{log}"
    );
    // Once the decoy is gone, the owner is back in.
    gw.emu.delete_pod("default", "a-decoy");
    let out = cat_secret(&gw, &gw.alice);
    assert_eq!(stdout(&out), "alice's secret\n", "{}", stderr(&out));
}

#[test]
fn a_decoy_in_another_watched_namespace_is_a_conflict() {
    let gw = KubeGateway::start(&["default", "team-b"], None);
    victim(&gw);
    let (labels, _) = sandbox("shared", "bob");
    gw.emu.create_pod(
        "team-b",
        manifest(
            "a-decoy",
            labels,
            json!({"ssh-gateway.io/owner": "bob", "kube-emulator/phase": "Pending"}),
            json!({}),
        ),
    );
    assert_refused(&cat_secret(&gw, &gw.bob), "bob");
    assert_refused(&cat_secret(&gw, &gw.alice), "alice");
    assert!(gw.log().contains("team-b/a-decoy"), "{}", gw.log());

    // The same annotations in a second namespace are still two workloads.
    gw.emu.delete_pod("team-b", "a-decoy");
    let (labels, annotations) = sandbox("shared", "alice");
    gw.emu.pod("team-b", "sandbox-shared", labels, annotations);
    assert_refused(&cat_secret(&gw, &gw.alice), "alice (two namespaces)");
}

#[test]
fn a_decoy_replica_with_another_owner_makes_a_model_deployment_unusable() {
    let gw = KubeGateway::start(&["default"], None);
    for replica in 0..2 {
        let (labels, annotations) = model_replica("m1", "d1", replica, "alice");
        gw.emu
            .pod("default", &format!("m1-d1-{replica}"), labels, annotations);
    }
    let reach = |key: &support::KeyPair, name: &str| {
        let mut cmd = gw.ssh(key);
        cmd.args([&format!("{name}@127.0.0.1"), "echo in"]);
        run(cmd)
    };
    assert_eq!(
        stdout(&reach(&gw.alice, "model-m1-d1")),
        "in\n",
        "{}",
        gw.log()
    );
    // Bob adds a Pending "replica" with himself as owner: neither he nor alice gets
    // in, whichever replica is named, and the log names the decoy.
    let (labels, _) = model_replica("m1", "d1", 1, "bob");
    gw.emu.create_pod(
        "default",
        manifest(
            "a-decoy",
            labels,
            json!({"ssh-gateway.io/owner": "bob", "kube-emulator/phase": "Pending"}),
            json!({}),
        ),
    );
    for name in ["model-m1-d1", "model-m1-d1-0", "model-m1-d1-1"] {
        for (who, key) in [("alice", &gw.alice), ("bob", &gw.bob)] {
            let out = reach(key, name);
            assert_ne!(out.status.code(), Some(0), "{who} got into {name}");
            assert!(
                stderr(&out).contains(NO_ACCESS),
                "{who} {name}: {}",
                stderr(&out)
            );
        }
    }
    assert!(gw.log().contains("default/a-decoy"), "{}", gw.log());
    gw.emu.delete_pod("default", "a-decoy");
    assert_eq!(stdout(&reach(&gw.alice, "model-m1-d1-1")), "in\n");
}

fn owned_by(kind: &str, name: &str) -> Value {
    json!({"ownerReferences": [{
        "apiVersion": "apps/v1", "kind": kind, "name": name,
        "uid": format!("uid-{name}"), "controller": true,
    }]})
}

#[test]
fn pods_of_different_controllers_conflict_but_one_deployment_rolling_over_does_not() {
    let gw = KubeGateway::start(&["default"], None);
    let (labels, annotations) = sandbox("shared", "alice");
    gw.emu.create_pod(
        "default",
        manifest(
            "sandbox-shared-0",
            labels.clone(),
            annotations.clone(),
            owned_by("StatefulSet", "sandbox-shared"),
        ),
    );
    std::fs::write(
        gw.emu.pod_dir("default", "sandbox-shared-0").join("secret"),
        "alice's secret\n",
    )
    .unwrap();
    gw.emu.create_pod(
        "default",
        manifest(
            "other-0",
            labels.clone(),
            annotations.clone(),
            owned_by("StatefulSet", "other"),
        ),
    );
    assert_refused(&cat_secret(&gw, &gw.alice), "alice (two controllers)");
    gw.emu.delete_pod("default", "other-0");
    gw.emu.delete_pod("default", "sandbox-shared-0");

    // A Deployment mid-rollout: two ReplicaSets, one workload.
    for (pod, hash) in [("web-7d4b9-abcde", "7d4b9"), ("web-5f6c8-fghij", "5f6c8")] {
        let mut labels = labels.clone();
        labels["pod-template-hash"] = json!(hash);
        gw.emu.create_pod(
            "default",
            manifest(
                pod,
                labels,
                annotations.clone(),
                owned_by("ReplicaSet", &format!("web-{hash}")),
            ),
        );
    }
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["shared@127.0.0.1", "echo in"]);
    let out = run(cmd);
    assert_eq!(stdout(&out), "in\n", "{}\n{}", stderr(&out), gw.log());
}

#[test]
fn each_new_channel_rereads_access_from_the_current_pod() {
    // Without the access watch (which would end the connection itself, see below):
    // the channel check alone must hold.
    let gw = KubeGateway::start_with(&["default"], None, "watch_access = false\n");
    victim(&gw);
    let dir = tempfile::tempdir().unwrap();
    let master = Master::open(gw.ssh_port, &gw.alice.private, dir.path(), "shared");
    let out = master.run("cat secret");
    assert_eq!(stdout(&out), "alice's secret\n", "{}", stderr(&out));

    // The pod is handed to bob: alice's open connection may not start anything more.
    gw.emu.update_pod("default", "sandbox-shared", |p| {
        p["metadata"]["annotations"]["ssh-gateway.io/owner"] = json!("bob");
    });
    let out = master.run("cat secret");
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));

    // Back to alice, then deleted and re-created under the same name for bob: the
    // name now means another object, and alice's connection does not follow it.
    gw.emu.update_pod("default", "sandbox-shared", |p| {
        p["metadata"]["annotations"]["ssh-gateway.io/owner"] = json!("alice");
    });
    assert_eq!(stdout(&master.run("echo again")), "again\n");
    gw.emu.delete_pod("default", "sandbox-shared");
    let (labels, annotations) = sandbox("shared", "bob");
    gw.emu.pod("default", "sandbox-shared", labels, annotations);
    let out = master.run("cat secret");
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));
}

/// Access edited on the cluster ends the live sessions it now refuses, at once and
/// without the periodic re-check (off here): a member taken off the pod's members
/// annotation is disconnected and told why, the owner's session carries on, and an
/// edit that changes nobody's access (an unrelated annotation) ends nothing.
#[test]
fn a_members_edit_on_the_pod_ends_that_members_live_session() {
    use std::time::Duration;
    use support::live::live;

    let gw = KubeGateway::start_with(&["default"], None, "[revocation]\nrecheck_secs = 0\n");
    let (labels, mut annotations) = sandbox("shared", "alice");
    annotations["ssh-gateway.io/members"] = json!("bob");
    gw.emu.pod("default", "sandbox-shared", labels, annotations);

    let session = |key| {
        let mut cmd = gw.ssh(key);
        cmd.arg("shared@127.0.0.1");
        cmd
    };
    let mut alice = live(
        session(&gw.alice),
        "echo started; sleep 120",
        "alice's session",
    );
    let bob = live(session(&gw.bob), "echo started; sleep 120", "bob's session");

    gw.emu.update_pod("default", "sandbox-shared", |p| {
        p["metadata"]["annotations"]["example.com/unrelated"] = json!("edited");
    });
    gw.emu.update_pod("default", "sandbox-shared", |p| {
        p["metadata"]["annotations"]["ssh-gateway.io/members"] = json!("");
    });
    let out = bob.ended(Duration::from_secs(20));
    assert!(
        stderr(&out).contains("your access to this sandbox was removed"),
        "{}\n{}",
        stderr(&out),
        gw.log()
    );
    assert!(
        alice.is_running(),
        "the owner's session ended too:\n{}",
        gw.log()
    );
    // And bob cannot come back in.
    let mut again = gw.ssh(&gw.bob);
    again.args(["shared@127.0.0.1", "true"]);
    let out = run(again);
    assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));
    assert!(alice.is_running());
}

/// The exec and port-forward APIs address a pod by name. A pod deleted and re-created
/// under that name between the gateway's access check and the stream (by anyone
/// allowed to create pods in the namespace) must receive none of the user's input and
/// send nothing back: the gateway pins every stream to the pod object it checked,
/// and decides again on the pod that is there now. The emulator replaces the pod as
/// the stream request arrives, so the race is certain.
#[test]
fn a_pod_replaced_under_its_name_between_the_check_and_the_stream_gets_nothing() {
    // Without the access watch, which would otherwise end the connection too (as a
    // replaced pod is an access edit): the stream's own check must hold.
    let gw = KubeGateway::start_with(&["default"], None, "watch_access = false\n");
    victim(&gw);
    let (_, bobs) = sandbox("shared", "bob");
    let upload = gw.emu.pod_dir("default", "sandbox-shared").join("upload");

    // bob swaps in a pod of his own under the name of alice's: her upload over exec
    // must not reach it, and she is told what an unknown sandbox would tell her.
    gw.emu
        .replace_pod_at_next_stream("default", "sandbox-shared", Some(bobs.clone()));
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["shared@127.0.0.1", "cat > upload; echo stored"]);
    let out = run_with_input(cmd, b"alice's upload\n");
    assert_ne!(out.status.code(), Some(0), "{}\n{}", stdout(&out), gw.log());
    assert!(!stdout(&out).contains("stored"), "{}", stdout(&out));
    assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));
    let landed = std::fs::read_to_string(&upload).unwrap_or_default();
    assert!(!landed.contains("alice"), "the upload reached bob's pod");
    assert!(gw.log().contains("the pod was replaced under its name"));

    // The same through a port forward: nothing she says reaches his pod's port.
    let (_, alices) = sandbox("shared", "alice");
    gw.emu.update_pod("default", "sandbox-shared", |p| {
        p["metadata"]["annotations"] = alices.clone();
    });
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let (heard_tx, heard_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut line);
            let _ = heard_tx.send(line);
        }
    });
    gw.emu
        .replace_pod_at_next_stream("default", "sandbox-shared", Some(bobs));
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["-W", &format!("localhost:{port}"), "shared@127.0.0.1"]);
    let out = run_with_input(cmd, b"alice's request\n");
    assert_ne!(out.status.code(), Some(0), "{}\n{}", stdout(&out), gw.log());
    let heard: Vec<String> = heard_rx.try_iter().collect();
    assert!(
        heard.iter().all(|line| !line.contains("alice")),
        "bob's pod's port heard {heard:?}"
    );

    // A controller re-creating alice's pod as it was: decided again on the new pod,
    // which is hers, and the upload goes ahead into it.
    gw.emu.update_pod("default", "sandbox-shared", |p| {
        p["metadata"]["annotations"] = alices.clone();
    });
    gw.emu
        .replace_pod_at_next_stream("default", "sandbox-shared", None);
    let before = gw.emu.get(Kind::Pod, "default", "sandbox-shared")["metadata"]["uid"].clone();
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["shared@127.0.0.1", "cat > upload; echo stored"]);
    let out = run_with_input(cmd, b"alice's upload\n");
    assert_eq!(stdout(&out), "stored\n", "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&upload).unwrap(),
        "alice's upload\n"
    );
    let after = gw.emu.get(Kind::Pod, "default", "sandbox-shared")["metadata"]["uid"].clone();
    assert_ne!(before, after, "the pod was not replaced");
}
