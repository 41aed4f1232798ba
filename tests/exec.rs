//! `ssh host cmd` through the real OpenSSH client: exit codes, stdout/stderr, stdin
//! and its EOF, binary data, env, and who may reach which sandbox.

mod support;

use support::{Gateway, keygen, run, run_with_input, stderr, stdout};

const NO_ACCESS: &str = "does not exist or you have no access to it";

#[test]
fn exit_status_and_separate_streams() {
    let gw = Gateway::start();
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["demo@127.0.0.1", "echo out; echo err >&2; exit 42"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(42), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
}

#[test]
fn commands_run_in_the_sandbox_home() {
    let gw = Gateway::start();
    std::fs::write(
        gw.sandbox_dir("demo").join("hello.txt"),
        "from the sandbox\n",
    )
    .unwrap();
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["demo@127.0.0.1", "cat hello.txt; echo $HOME; pwd"]);
    let out = run(cmd);
    let home = gw
        .sandbox_dir("demo")
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    assert_eq!(stdout(&out), format!("from the sandbox\n{home}\n{home}\n"));
}

#[test]
fn binary_stdin_round_trips_and_eof_reaches_the_program() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.bin");
    support::random_file(&input_path, 8 * 1024 * 1024 + 13);
    let input = std::fs::read(&input_path).unwrap();

    let mut cat = gw.ssh(&gw.dev_key);
    cat.args(["demo@127.0.0.1", "cat"]);
    let out = run_with_input(cat, &input);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout == input,
        "binary data changed in transit ({} bytes back)",
        out.stdout.len()
    );

    let mut wc = gw.ssh(&gw.dev_key);
    wc.args(["demo@127.0.0.1", "wc -c"]);
    let out = run_with_input(wc, &input);
    assert_eq!(stdout(&out).trim(), input.len().to_string());
}

#[test]
fn large_output_arrives_whole_with_the_exit_code() {
    let gw = Gateway::start();
    let mut cmd = gw.ssh(&gw.dev_key);
    // 64 MiB on stdout and some stderr interleaved, then a non-zero exit.
    cmd.args([
        "demo@127.0.0.1",
        "head -c 67108864 /dev/zero; echo done >&2; exit 3",
    ]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout.len(), 64 << 20);
    assert!(out.stdout.iter().all(|b| *b == 0));
    assert_eq!(stderr(&out), "done\n");
}

#[test]
fn script_on_stdin_like_vscode_install() {
    let gw = Gateway::start();
    let script = b"set -e\nX=$((6*7))\necho \"answer $X\"\nfor i in 1 2 3; do echo line$i; done\n";
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["-T", "demo@127.0.0.1", "bash"]);
    let out = run_with_input(cmd, script);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "answer 42\nline1\nline2\nline3\n");
}

#[test]
fn permitted_env_is_applied_and_others_are_not() {
    let gw = Gateway::start();
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args([
        "-o",
        "SetEnv=LC_GREETING=hello LD_PRELOAD=/evil.so",
        "demo@127.0.0.1",
    ])
    .arg("echo \"[$LC_GREETING] [$LD_PRELOAD]\"");
    let out = run(cmd);
    assert_eq!(stdout(&out), "[hello] []\n", "{}", stderr(&out));
}

#[test]
fn gateway_environment_does_not_leak_into_sandboxes() {
    let gw = Gateway::start();
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["demo@127.0.0.1", "env"]);
    let out = run(cmd);
    let env = stdout(&out);
    assert!(env.contains("HOME="), "{env}");
    assert!(!env.contains("RUST_LOG"), "gateway env leaked: {env}");
}

#[test]
fn killed_by_signal_is_not_success() {
    let gw = Gateway::start();
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["demo@127.0.0.1", "echo before; kill -KILL $$"]);
    let out = run(cmd);
    assert_eq!(stdout(&out), "before\n");
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_forbidden_sandboxes_read_the_same() {
    let gw = Gateway::start();
    let (_token, alice) = gw.user_with_key("alice").await;
    gw.admin(&["sandbox", "add", "alice-box", "--owner", "alice"]);

    let attempt = |key: &std::path::Path, target: &str| {
        let mut cmd = gw.ssh(key);
        cmd.args([&format!("{target}@127.0.0.1"), "echo reached"]);
        run(cmd)
    };
    let unknown = attempt(&gw.dev_key, "no-such-box");
    let forbidden = attempt(&gw.dev_key, "alice-box");
    for (out, name) in [(&unknown, "no-such-box"), (&forbidden, "alice-box")] {
        assert_ne!(out.status.code(), Some(0));
        assert_eq!(stdout(out), "");
        assert_eq!(
            stderr(out),
            format!("ssh-gateway: sandbox \"{name}\" {NO_ACCESS}\n"),
            "the two cases must be indistinguishable"
        );
    }
    assert_eq!(unknown.status.code(), forbidden.status.code());

    // The owner gets in; so does a member once added.
    assert_eq!(stdout(&attempt(&alice.private, "alice-box")), "reached\n");
    assert!(stderr(&attempt(&alice.private, "demo")).contains(NO_ACCESS));
    gw.admin(&[
        "sandbox", "add", "shared", "--owner", "alice", "--member", "dev",
    ]);
    assert_eq!(stdout(&attempt(&gw.dev_key, "shared")), "reached\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_key_cannot_open_the_next_connection() {
    let gw = Gateway::start();
    let (token, alice) = gw.user_with_key("alice").await;
    gw.admin(&["sandbox", "add", "box", "--owner", "alice"]);
    let connect = || {
        let mut cmd = gw.ssh(&alice.private);
        cmd.args(["box@127.0.0.1", "echo in"]);
        run(cmd)
    };
    assert_eq!(stdout(&connect()), "in\n");

    let client = support::http();
    let keys: serde_json::Value = client
        .get(format!("{}/users/me/ssh-keys", gw.api))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = keys[0]["id"].as_str().unwrap();
    let resp = client
        .delete(format!("{}/users/me/ssh-keys/{id}", gw.api))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let out = connect();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unregistered_keys_and_passwords_get_nowhere() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let stranger = keygen(dir.path(), "stranger", &["-t", "ed25519"]);
    let mut cmd = gw.ssh(&stranger.private);
    cmd.args(["demo@127.0.0.1", "true"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );

    // Only publickey is offered: a password-only client is refused outright.
    let mut cmd = gw.ssh(&stranger.private);
    cmd.args([
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "-v",
        "demo@127.0.0.1",
        "true",
    ]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(
        err.contains("Authentications that can continue: publickey\r\n")
            || err.contains("Authentications that can continue: publickey\n"),
        "{err}"
    );
}

#[test]
fn weak_algorithms_are_refused() {
    let gw = Gateway::start();
    for (option, value) in [
        ("Ciphers", "aes128-cbc"),
        // With a non-AEAD cipher so the MAC is actually negotiated.
        ("MACs", "hmac-sha1"),
        ("KexAlgorithms", "diffie-hellman-group14-sha1"),
        ("HostKeyAlgorithms", "ssh-rsa"),
    ] {
        let mut cmd = gw.ssh(&gw.dev_key);
        // ssh keeps the first value given for an option: the one under test goes first.
        cmd.args([
            "-v",
            "-o",
            &format!("{option}={value}"),
            "-o",
            "Ciphers=aes128-ctr",
            "demo@127.0.0.1",
            "true",
        ]);
        let out = run(cmd);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{option}={value} was accepted"
        );
        assert!(
            stderr(&out).contains("no matching"),
            "{option}: {}",
            stderr(&out)
        );
    }
    // And a modern client gets the fast AEAD cipher it asks for.
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args([
        "-o",
        "Ciphers=aes128-gcm@openssh.com",
        "demo@127.0.0.1",
        "echo ok",
    ]);
    assert_eq!(stdout(&run(cmd)), "ok\n");
}

#[test]
fn local_port_forward_carries_a_request() {
    let gw = Gateway::start();
    let (request, response) =
        support::forward::http_through_tunnel("127.0.0.1", b"hello through the tunnel", |spec| {
            let mut cmd = gw.ssh(&gw.dev_key);
            cmd.args([
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                spec,
                "demo@127.0.0.1",
            ]);
            cmd
        });
    assert!(
        response.ends_with("hello through the tunnel"),
        "{response:?}"
    );
    assert!(request.starts_with("GET / HTTP/1.0"));
}

#[test]
fn refused_forwards_say_why() {
    let gw = Gateway::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["-v", "-W", &format!("127.0.0.1:{closed}"), "demo@127.0.0.1"]);
    let err = stderr(&run(cmd));
    assert!(
        err.contains(&format!(
            "open failed: connect failed: ssh-gateway: port {closed} in the sandbox"
        )),
        "{err}"
    );

    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["-v", "-W", "10.1.2.3:22", "demo@127.0.0.1"]);
    let err = stderr(&run(cmd));
    assert!(
        err.contains(
            "administratively prohibited: ssh-gateway: only ports on the sandbox's own localhost"
        ),
        "{err}"
    );

    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["-v", "-W", "127.0.0.1:22", "no-such-box@127.0.0.1"]);
    let err = stderr(&run(cmd));
    assert!(
        err.contains(&format!("ssh-gateway: sandbox \"no-such-box\" {NO_ACCESS}")),
        "{err}"
    );
}

/// What the gateway does not offer is refused the way sshd refuses it, so the client
/// says so at once instead of waiting: X11 (`ssh -X`, a failed x11-req) and remote
/// forwarding (`ssh -R`, TCP ports and sockets alike).
#[test]
fn x11_and_remote_forwarding_are_refused_as_sshd_refuses_them() {
    let gw = Gateway::start();
    let mut cmd = gw.ssh(&gw.dev_key);
    // ssh asks for X11 only with a local display to forward to.
    cmd.env("DISPLAY", ":0").args([
        "-X",
        "demo@127.0.0.1",
        "echo ran; echo \"display=$DISPLAY\"",
    ]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ran\ndisplay=\n");
    assert!(
        stderr(&out).contains("X11 forwarding request failed on channel 0"),
        "{}",
        stderr(&out)
    );

    for (spec, what) in [
        ("9999:localhost:22", "listen port 9999"),
        ("/tmp/ssh-gateway-test-r.sock:localhost:22", "listen path"),
    ] {
        let mut cmd = gw.ssh(&gw.dev_key);
        cmd.args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            spec,
            "demo@127.0.0.1",
            "echo ran",
        ]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(255), "{spec}: {}", stdout(&out));
        assert!(
            stderr(&out).contains(&format!("remote port forwarding failed for {what}")),
            "{spec}: {}",
            stderr(&out)
        );
    }
    assert!(
        gw.log().contains("remote forwarding (ssh -R) refused"),
        "{}",
        gw.log()
    );
}

/// `direct-streamlocal@openssh.com` (`ssh -L LOCAL.sock:REMOTE.sock`, what VS Code
/// opens with `remoteServerListenOnSocket`): a Unix socket in the sandbox, relayed by
/// the in-workload helper, both ways and half-closed as a socket is; a socket that is
/// not there reads "connect failed" with the reason.
#[test]
fn a_unix_socket_in_the_sandbox_is_forwarded() {
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;
    use std::time::Duration;

    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("app.sock");
    support::forward::unix_echo(&remote, 0o777);
    let local = dir.path().join("local.sock");
    let missing_local = dir.path().join("missing.sock");
    // At INFO, as ssh runs by default: it reports a forward's open failure there.
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(Gateway::client_opts_for(&gw.dev_key).into_iter().map(|o| {
        if o == "LogLevel=ERROR" {
            "LogLevel=INFO".to_owned()
        } else {
            o
        }
    }))
    .args(["-p", &gw.ssh_port.to_string()]);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "StreamLocalBindUnlink=yes",
    ])
    .arg("-L")
    .arg(format!("{}:{}", local.display(), remote.display()))
    .arg("-L")
    .arg(format!(
        "{}:{}/nothing.sock",
        missing_local.display(),
        dir.path().display()
    ))
    .arg("demo@127.0.0.1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut ssh = cmd.spawn().unwrap();
    assert!(
        support::process::wait_until(Duration::from_secs(20), || local.exists()
            && missing_local.exists()),
        "ssh did not listen"
    );

    let got = support::forward::unix_exchange(&local, b"one\ntwo\n").unwrap();
    assert_eq!(got, "pong:one\npong:two\nbye\n");

    // Nothing there: the forward's connection is closed, and ssh says why.
    let mut conn = UnixStream::connect(&missing_local).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn, &mut got);
    assert!(got.is_empty());
    let _ = ssh.kill();
    let out = ssh.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("open failed: connect failed: ssh-gateway: the socket")
            && err.contains("No such file or directory"),
        "{err}"
    );
}

/// A `signal` request (RFC 4254 §6.9; OpenSSH's client has no way to send one, so
/// paramiko sends it raw) reaches the program on the local backend.
#[test]
fn a_signal_request_reaches_the_program() {
    let gw = Gateway::start();
    let out = support::raw::signal_after_first_line(
        gw.ssh_port,
        &gw.dev_key,
        "demo",
        "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        "TERM",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "got-term 7\n");
}
