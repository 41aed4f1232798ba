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
