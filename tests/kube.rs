//! The Kubernetes bridge end to end: OpenSSH `ssh`/`scp`/`sftp`/`rsync`/`ssh -L` →
//! gateway (kubernetes backend and control plane) → kube-emulator → local processes.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::kube::{KubeGateway, model_replica, sandbox};
use support::terminal::check_interactive_session;
use support::{random_file, run, run_with_input, sha256_file, stderr, stdout};

const NO_ACCESS: &str = "does not exist or you have no access to it";

fn with_alpha() -> KubeGateway {
    let gw = KubeGateway::start(&["default", "team-b"], None);
    let (labels, annotations) = sandbox("alpha", "alice");
    gw.emu.pod("default", "sandbox-alpha", labels, annotations);
    gw
}

#[test]
fn exec_exit_codes_streams_and_stdin_eof() {
    let gw = with_alpha();
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["alpha@127.0.0.1", "echo out; echo err >&2; pwd; exit 42"]);
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}\n{}",
        stderr(&out),
        gw.log()
    );
    let pod_dir = gw
        .emu
        .pod_dir("default", "sandbox-alpha")
        .display()
        .to_string();
    assert_eq!(stdout(&out), format!("out\n{pod_dir}\n"));
    assert_eq!(stderr(&out), "err\n");

    // stdin EOF reaches the process over the v5 close frame.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    random_file(&input, 8 * 1024 * 1024 + 5);
    let data = std::fs::read(&input).unwrap();
    let mut wc = gw.ssh(&gw.alice);
    wc.args(["alpha@127.0.0.1", "wc -c"]);
    assert_eq!(
        stdout(&run_with_input(wc, &data)).trim(),
        data.len().to_string()
    );
    let mut cat = gw.ssh(&gw.alice);
    cat.args(["alpha@127.0.0.1", "cat"]);
    let out = run_with_input(cat, &data);
    assert!(
        out.stdout == data,
        "binary round trip changed the data ({} bytes back)",
        out.stdout.len()
    );
}

#[test]
fn env_and_script_on_stdin() {
    let gw = with_alpha();
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args([
        "-o",
        "SetEnv=LC_GREETING=\"it's here\" LD_PRELOAD=x",
        "-T",
        "alpha@127.0.0.1",
        "bash",
    ]);
    let out = run_with_input(cmd, b"echo \"[$LC_GREETING] [$LD_PRELOAD] $((6*7))\"\n");
    assert_eq!(stdout(&out), "[it's here] [] 42\n", "{}", stderr(&out));
}

#[test]
fn transfers_100_mib_scp_sftp_legacy_scp_and_rsync() {
    let gw = with_alpha();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    random_file(&src, 100 * 1024 * 1024);
    let want = sha256_file(&src);
    let pod_dir = gw.emu.pod_dir("default", "sandbox-alpha");

    let mut up = gw.scp(&gw.alice);
    up.arg(&src).arg("alpha@127.0.0.1:up.bin");
    let out = run(up);
    assert!(out.status.success(), "scp up: {}", stderr(&out));
    assert_eq!(sha256_file(&pod_dir.join("up.bin")), want);
    let back = dir.path().join("back.bin");
    let mut down = gw.scp(&gw.alice);
    down.arg("alpha@127.0.0.1:up.bin").arg(&back);
    assert!(run(down).status.success());
    assert_eq!(sha256_file(&back), want);

    let batch = dir.path().join("batch");
    let sftp_back = dir.path().join("sftp-back.bin");
    std::fs::write(
        &batch,
        format!(
            "put {} s.bin\nget s.bin {}\n",
            src.display(),
            sftp_back.display()
        ),
    )
    .unwrap();
    let mut sftp = Command::new("sftp");
    sftp.args(support::Gateway::client_opts_for(&gw.alice.private))
        .args(["-P", &gw.ssh_port.to_string(), "-b"])
        .arg(&batch)
        .arg("alpha@127.0.0.1");
    let out = run(sftp);
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert_eq!(sha256_file(&pod_dir.join("s.bin")), want);
    assert_eq!(sha256_file(&sftp_back), want);

    let small = dir.path().join("small.bin");
    random_file(&small, 2 * 1024 * 1024 + 3);
    let small_sum = sha256_file(&small);
    let mut legacy = gw.scp(&gw.alice);
    legacy
        .arg("-O")
        .arg(&small)
        .arg("alpha@127.0.0.1:legacy.bin");
    let out = run(legacy);
    assert!(out.status.success(), "scp -O: {}", stderr(&out));
    assert_eq!(sha256_file(&pod_dir.join("legacy.bin")), small_sum);
    let mut legacy_down = gw.scp(&gw.alice);
    legacy_down
        .arg("-O")
        .arg("alpha@127.0.0.1:legacy.bin")
        .arg(dir.path().join("legacy-back.bin"));
    assert!(run(legacy_down).status.success());
    assert_eq!(sha256_file(&dir.path().join("legacy-back.bin")), small_sum);

    let shell = format!(
        "ssh {} -p {}",
        support::Gateway::client_opts_for(&gw.alice.private).join(" "),
        gw.ssh_port
    );
    let mut rsync = Command::new("rsync");
    rsync
        .args(["-a", "-e", &shell])
        .arg(&small)
        .arg("alpha@127.0.0.1:rsynced.bin");
    let out = run(rsync);
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    assert_eq!(sha256_file(&pod_dir.join("rsynced.bin")), small_sum);
}

#[test]
fn pty_shell_in_a_pod() {
    // Set up outside any runtime (the harness runs its own), then drive the terminal.
    let gw = with_alpha();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(drive_pty_shell(&gw));
}

async fn drive_pty_shell(gw: &KubeGateway) {
    let opts = support::Gateway::client_opts_for(&gw.alice.private);
    check_interactive_session(&opts, gw.ssh_port, "alpha@127.0.0.1").await;
}

#[test]
fn local_forward_reaches_a_port_in_the_pod() {
    let gw = with_alpha();
    // In emulation a pod's ports are the host's loopback ports.
    let (request, response) =
        support::forward::http_through_tunnel("localhost", b"from the pod", |spec| {
            let mut cmd = gw.ssh(&gw.alice);
            cmd.args([
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                spec,
                "alpha@127.0.0.1",
            ]);
            cmd
        });
    assert!(response.ends_with("from the pod"), "{response:?}");
    assert!(request.starts_with("GET / HTTP/1.0"));

    // Other destinations are refused at channel open, with the reason.
    let mut refused = gw.ssh(&gw.alice);
    refused.args(["-v", "-W", "example.com:80", "alpha@127.0.0.1"]);
    let out = run(refused);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "administratively prohibited: ssh-gateway: only ports on the sandbox's own localhost"
        ),
        "{err}"
    );
}

#[test]
fn namespaces_owners_and_members() {
    let gw = with_alpha();
    gw.emu.pod(
        "team-b",
        "sandbox-beta",
        json!({"ssh-gateway.io/sandbox": "beta"}),
        json!({"ssh-gateway.io/owner": "bob", "ssh-gateway.io/members": "carol, alice"}),
    );
    let (labels, annotations) = sandbox("gamma", "bob");
    gw.emu.pod("team-b", "sandbox-gamma", labels, annotations);
    // Not in a configured namespace: invisible.
    let (labels, annotations) = sandbox("delta", "alice");
    gw.emu
        .pod("elsewhere", "sandbox-delta", labels, annotations);

    let reach = |key: &support::KeyPair, target: &str| {
        let mut cmd = gw.ssh(key);
        cmd.args([&format!("{target}@127.0.0.1"), "echo $HOSTNAME"]);
        run(cmd)
    };
    assert_eq!(stdout(&reach(&gw.alice, "alpha")), "sandbox-alpha\n");
    assert_eq!(stdout(&reach(&gw.alice, "beta")), "sandbox-beta\n");
    assert_eq!(stdout(&reach(&gw.bob, "beta")), "sandbox-beta\n");
    for target in ["gamma", "nope", "delta"] {
        let out = reach(&gw.alice, target);
        assert_eq!(out.status.code(), Some(1), "{target}");
        assert_eq!(
            stderr(&out),
            format!("ssh-gateway: sandbox \"{target}\" {NO_ACCESS}\n")
        );
    }
}

#[test]
fn training_job_nodes_by_name() {
    let gw = KubeGateway::start(&["default"], None);
    for node in 0..2 {
        gw.emu.pod(
            "default",
            &format!("job-x1-worker-{node}"),
            json!({"ssh-gateway.io/training-job": "x1", "ssh-gateway.io/node-index": node.to_string()}),
            json!({"ssh-gateway.io/owner": "alice"}),
        );
    }
    for node in 0..2 {
        let mut cmd = gw.ssh(&gw.alice);
        cmd.args([
            &format!("training-job-x1-{node}@127.0.0.1"),
            "echo $HOSTNAME",
        ]);
        assert_eq!(stdout(&run(cmd)), format!("job-x1-worker-{node}\n"));
    }
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["training-job-x1-2@127.0.0.1", "true"]);
    let out = run(cmd);
    assert!(stderr(&out).contains(NO_ACCESS), "{}", stderr(&out));
}

#[test]
fn model_deployments_by_name_one_pod_per_user_or_the_replica_asked_for() {
    let gw = KubeGateway::start(&["default"], None);
    for (replica, pod) in ["m1-d1-a", "m1-d1-b", "m1-d1-c"].iter().enumerate() {
        let (labels, annotations) = model_replica("m1", "d1", replica as u32, "alice");
        gw.emu.pod("default", pod, labels, annotations);
    }
    // Replica 3 is still starting: nobody is sent to it unless they ask for it.
    let (labels, mut annotations) = model_replica("m1", "d1", 3, "alice");
    annotations["kube-emulator/phase"] = json!("Pending");
    gw.emu.create_pod(
        "default",
        json!({"metadata": {"name": "m1-d1-d", "labels": labels, "annotations": annotations},
               "spec": {"containers": [{"name": "main", "image": "debian:12"}]}}),
    );
    let hostname = |user: &str| {
        let mut cmd = gw.ssh(&gw.alice);
        cmd.args([&format!("{user}@127.0.0.1"), "echo $HOSTNAME"]);
        let out = run(cmd);
        assert!(
            out.status.success(),
            "{user}: {}\n{}",
            stderr(&out),
            gw.log()
        );
        stdout(&out).trim().to_owned()
    };
    // Repeat connections (VS Code opens several) land on the same Ready pod.
    let first = hostname("model-m1-d1");
    assert!(
        ["m1-d1-a", "m1-d1-b", "m1-d1-c"].contains(&first.as_str()),
        "{first}"
    );
    for _ in 0..3 {
        assert_eq!(hostname("model-m1-d1"), first);
    }
    // Another replica going away does not move this user.
    let other = ["m1-d1-a", "m1-d1-b", "m1-d1-c"]
        .into_iter()
        .find(|p| *p != first)
        .unwrap();
    gw.emu.delete_pod("default", other);
    assert_eq!(hostname("model-m1-d1"), first);

    // `-<replica>` picks the pod whose replica label says so.
    let replica_of = |pod: &str| (pod.as_bytes()[6] - b'a').to_string();
    assert_eq!(
        hostname(&format!("model-m1-d1-{}", replica_of(&first))),
        first
    );
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["model-m1-d1-3@127.0.0.1", "true"]);
    let out = run(cmd);
    assert!(
        stderr(&out).contains("is not ready (its pod is Pending)"),
        "{}",
        stderr(&out)
    );
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["model-m1-d1-9@127.0.0.1", "true"]);
    let out = run(cmd);
    assert!(
        stderr(&out).contains("replica 9 does not exist (its replicas: "),
        "{}",
        stderr(&out)
    );

    // Someone neither owner nor member reads what an unknown deployment reads.
    for name in ["model-m1-d1", "model-m1-d1-0", "model-m1-nope"] {
        let mut cmd = gw.ssh(&gw.bob);
        cmd.args([&format!("{name}@127.0.0.1"), "echo in"]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        assert_eq!(
            stderr(&out),
            format!("ssh-gateway: sandbox \"{name}\" {NO_ACCESS}\n")
        );
    }
    // A malformed name says which part is wrong.
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["model-M1-d1@127.0.0.1", "true"]);
    let out = run(cmd);
    assert!(
        stderr(&out).contains("invalid model id \"M1\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pods_not_running_get_a_clear_message_not_a_hang() {
    let gw = KubeGateway::start(&["default"], None);
    gw.emu.pod(
        "default",
        "sandbox-slow",
        json!({"ssh-gateway.io/sandbox": "slow"}),
        json!({"ssh-gateway.io/owner": "alice", "kube-emulator/phase": "Pending"}),
    );
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["slow@127.0.0.1", "true"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not ready (its pod is Pending)"),
        "{}",
        stderr(&out)
    );
    // Someone else asking gets only the no-access answer.
    let mut cmd = gw.ssh(&gw.bob);
    cmd.args(["slow@127.0.0.1", "true"]);
    assert!(stderr(&run(cmd)).contains(NO_ACCESS));
}

#[test]
fn a_pod_deleted_mid_session_ends_it_with_a_message() {
    let gw = with_alpha();
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["alpha@127.0.0.1", "echo started; sleep 60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut first = [0u8; 8];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"started\n");
    gw.emu.delete_pod("default", "sandbox-alpha");
    let started = Instant::now();
    let out = loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "session did not end after its pod was deleted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("was deleted; the session has ended"), "{err}");
}

#[test]
fn an_unreachable_api_server_gives_a_clear_error_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    // A port with nothing listening.
    let dead = support::free_port();
    let kubeconfig = dir.path().join("dead-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster:\n    server: http://127.0.0.1:{dead}\n\
             contexts:\n- name: x\n  context:\n    cluster: x\n    user: x\ncurrent-context: x\nusers:\n- name: x\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let gw = KubeGateway::start(&["default"], Some(&kubeconfig));
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["alpha@127.0.0.1", "true"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach its control plane"),
        "{}",
        stderr(&out)
    );
}

/// The Kubernetes API vanishing and coming back (a relay in front of it is cut and
/// restored): meanwhile logins get a clear error within the request timeout; once it
/// is back the gateway recovers by itself, with no restart.
#[test]
fn the_gateway_recovers_when_the_api_server_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let emu = support::kube::EmulatorThread::start(
        &dir.path().join("cluster"),
        &dir.path().join("kubeconfig"),
    );
    let direct = emu.emulator().addr;
    let mut relay = support::relay::Relay::start(direct);
    let kubeconfig = dir.path().join("relayed-kubeconfig");
    let original = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
    assert!(original.contains(&direct.to_string()));
    std::fs::write(
        &kubeconfig,
        original.replace(&direct.to_string(), &format!("127.0.0.1:{}", relay.port)),
    )
    .unwrap();
    let gw = KubeGateway::start(&["default"], Some(&kubeconfig));
    let (labels, annotations) = sandbox("alpha", "alice");
    emu.pod("default", "sandbox-alpha", labels, annotations);
    let attempt = || {
        let mut cmd = gw.ssh(&gw.alice);
        cmd.args(["alpha@127.0.0.1", "echo up"]);
        run(cmd)
    };
    let out = attempt();
    assert_eq!(stdout(&out), "up\n", "{}", stderr(&out));
    // Every API call is in the metrics, by kind and outcome.
    let metrics = || {
        let url = format!("http://127.0.0.1:{}/metrics", gw.api_port);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            support::http()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    let count = |text: &str, kind: &str, outcome: &str| -> u64 {
        let series = format!(
            "ssh_gateway_kubernetes_request_seconds_count{{kind=\"{kind}\",outcome=\"{outcome}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = metrics();
    assert!(count(&before, "list", "ok") >= 1, "{before}");
    assert!(count(&before, "exec", "ok") >= 1, "{before}");

    relay.down();
    let out = attempt();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach its control plane"),
        "{}",
        stderr(&out)
    );
    let during = metrics();
    assert!(count(&during, "list", "transport_error") >= 1, "{during}");

    relay.up();
    let mut last = None;
    let recovered = support::process::wait_until(Duration::from_secs(30), || {
        let out = attempt();
        let ok = stdout(&out) == "up\n";
        last = Some(out);
        ok
    });
    assert!(
        recovered,
        "no recovery after the API came back: {}",
        last.map(|o| stderr(&o)).unwrap_or_default()
    );
}

#[test]
fn a_long_lived_connection_follows_its_sandbox_to_a_new_pod() {
    let gw = with_alpha();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mux");
    let mux = |cmd: &mut Command| {
        cmd.args(["-o", "ControlMaster=auto", "-o"])
            .arg(format!("ControlPath={}", socket.display()));
    };
    let mut master = gw.ssh(&gw.alice);
    mux(&mut master);
    master.args(["-N", "alpha@127.0.0.1"]).stdin(Stdio::null());
    let mut master = master.spawn().unwrap();
    let hostname = || {
        let mut cmd = gw.ssh(&gw.alice);
        mux(&mut cmd);
        cmd.args(["alpha@127.0.0.1", "echo $HOSTNAME"]);
        run(cmd)
    };
    let started = Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stdout(&hostname()), "sandbox-alpha\n");

    // The pod is replaced (a restart, a reschedule): same sandbox, new pod.
    gw.emu.delete_pod("default", "sandbox-alpha");
    let (labels, annotations) = sandbox("alpha", "alice");
    gw.emu
        .pod("default", "sandbox-alpha-2", labels, annotations);
    let out = hostname();
    let _ = master.kill();
    let _ = master.wait();
    assert_eq!(stdout(&out), "sandbox-alpha-2\n", "{}", stderr(&out));
}

fn processes_matching(pattern: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn abandoned_sessions_end_their_pod_processes_and_streams() {
    let gw = with_alpha();
    let n = std::process::id() % 1000;
    // Only the pod's processes carry this argument (the clients say `${N}`).
    let marker = format!("sleep 88{n}.5");
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let mut cmd = gw.ssh(&gw.alice);
            cmd.args(["alpha@127.0.0.1", &format!("N=88; sleep ${{N}}{n}.5")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes_matching(&marker) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // On a loaded machine a few pod lookups may time out (`request_timeout_secs` is 3
    // here) and those clients are refused with a message; what matters is that every
    // session that did start ends with its client.
    let started = processes_matching(&marker);
    assert!(
        started >= 50,
        "only {started} sessions started\n{}",
        gw.log()
    );
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_matching(&marker) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        processes_matching(&marker),
        0,
        "pod processes outlived their clients"
    );
}

/// A `signal` request reaches a program without a terminal in the pod, though the
/// exec API has no signal channel (a second exec kills the pid the wrapper named).
#[test]
fn a_signal_request_reaches_the_program_in_the_pod() {
    let gw = KubeGateway::start(&["default"], None);
    let (labels, annotations) = sandbox("sig", "alice");
    gw.emu.pod("default", "sandbox-sig", labels, annotations);
    let out = support::raw::signal_after_first_line(
        gw.ssh_port,
        &gw.alice.private,
        "sig",
        "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        "TERM",
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "got-term 7\n");
    // Nothing of the wrapper's pid line reaches stderr.
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["sig@127.0.0.1", "echo to-stderr >&2"]);
    let out = run(cmd);
    assert_eq!(stderr(&out), "to-stderr\n");
}
