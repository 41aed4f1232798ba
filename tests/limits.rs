//! Limits a peer cannot talk its way around: the login grace time and the cap on
//! authentication attempts.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Serve, admin_with_config, free_port, keygen, register_key, run, stderr, stdout};

struct Gw {
    _server: Serve,
    ssh_port: u16,
    dir: tempfile::TempDir,
}

/// `serve` on SQLite with extra `[ssh]` settings, a user `u` owning sandbox `box`.
fn serve(ssh_extra: &str) -> (Gw, support::KeyPair) {
    let dir = tempfile::tempdir().unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n{ssh_extra}\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/gw.db\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sb\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let admin = |args: &[&str]| admin_with_config(&config, args);
    admin(&["user", "add", "u"]);
    admin(&["sandbox", "add", "box", "--owner", "u"]);
    let key = keygen(dir.path(), "u", &["-t", "ed25519"]);
    register_key(
        &format!("sqlite://{}/gw.db", dir.path().display()),
        "u",
        &key,
    );
    let server = Serve::start(&config, &dir.path().join("log"), api_port);
    (
        Gw {
            _server: server,
            ssh_port,
            dir,
        },
        key,
    )
}

#[test]
fn silent_clients_are_disconnected_after_the_grace_time() {
    let (gw, _) = serve("login_grace_secs = 1");
    let mut conn = TcpStream::connect(("127.0.0.1", gw.ssh_port)).unwrap();
    conn.write_all(b"SSH-2.0-OpenSSH_9.2 silent\r\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("connection still open after {:?}: {e}", started.elapsed()),
        }
    }
}

#[test]
fn authentication_attempts_are_capped() {
    let (gw, key) = serve("max_auth_attempts = 3");
    // Five unknown keys offered before the right one: the cap ends the connection first.
    let wrong: Vec<_> = (0..5)
        .map(|i| keygen(gw.dir.path(), &format!("wrong{i}"), &["-t", "ed25519"]))
        .collect();
    let mut cmd = Command::new("ssh");
    cmd.args(support::Gateway::client_opts_for(&wrong[0].private));
    for k in &wrong[1..] {
        cmd.arg("-i").arg(&k.private);
    }
    cmd.arg("-i").arg(&key.private);
    cmd.args(["-p", &gw.ssh_port.to_string(), "box@127.0.0.1", "echo in"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    assert_eq!(stdout(&out), "");

    // With the right key first, the same server lets the user in.
    let mut cmd = Command::new("ssh");
    cmd.args(support::Gateway::client_opts_for(&key.private))
        .args(["-p", &gw.ssh_port.to_string(), "box@127.0.0.1", "echo in"]);
    let out = run(cmd);
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
}

/// A peer can send requests nobody handles as fast as it likes: each is answered (or
/// ignored) without a log line of its own, so it cannot flood the gateway's log, and
/// the connection goes on working. Sent with paramiko, whose transport can send any
/// message.
#[test]
fn unhandled_requests_are_answered_without_flooding_the_log() {
    let (gw, key) = serve("");
    let body = r#"
noise = t.open_session()
for i in range(500):
    if i % 2:
        channel_request(noise, "break", 500)
    else:
        channel_request(noise, "noise-%d@example.com" % i)
for i in range(200):
    m = Message()
    m.add_byte(cMSG_REQUEST_FAILURE)
    t._send_user_message(m)
ch = t.open_session()
ch.exec_command("echo still-$((40+2))")
print(ch.makefile().read().decode().strip())
"#;
    let out = support::raw::paramiko(gw.ssh_port, &key.private, "box", body, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "still-42\n");
    let log = std::fs::read_to_string(gw.dir.path().join("log")).unwrap();
    let noisy = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(noisy < 5, "{noisy} warnings for one client's noise:\n{log}");
}

/// `no-more-sessions@openssh.com`, as sshd answers it: acknowledged, and a session
/// channel opened after it ends the connection (someone other than the client that
/// promised is using it). OpenSSH's own client sends it on every plain `ssh`.
#[test]
fn a_session_after_no_more_sessions_ends_the_connection() {
    let (gw, key) = serve("");
    let body = r#"
first = t.open_session()
first.exec_command("echo first")
print(first.makefile().read().decode().strip())
print("acknowledged" if t.global_request("no-more-sessions@openssh.com", wait=True) is not None else "refused")
try:
    t.open_session(timeout=10)
    print("second session opened")
except Exception as e:
    print("second session refused")
t.join(10)
print("connection ended" if not t.is_active() else "connection still up")
"#;
    let out = support::raw::paramiko(gw.ssh_port, &key.private, "box", body, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "first\nacknowledged\nsecond session refused\nconnection ended\n"
    );
    let log = std::fs::read_to_string(gw.dir.path().join("log")).unwrap();
    assert!(
        log.contains("after no-more-sessions: possible attack"),
        "{log}"
    );

    // A plain ssh sends it too, and works as ever.
    let mut ssh = support::client("ssh", &key, gw.ssh_port);
    ssh.args(["box@127.0.0.1", "echo plain"]);
    assert_eq!(stdout(&run(ssh)), "plain\n");
}
