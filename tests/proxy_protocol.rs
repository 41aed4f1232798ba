//! PROXY protocol on the SSH listener: behind a balancer that sends a v1 or v2 header,
//! the gateway logs (and limits) the client the header names; a connection without
//! one, or from a peer not allowed to send one, is refused.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    KeyPair, Serve, admin_with_config, free_port, run, static_gateway_toml, stderr, stdout,
    users_with_keys,
};

/// A ProxyCommand that sends the header in `header.bin` and then relays stdio.
const RELAY: &str = r#"
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(open(sys.argv[2], "rb").read())
def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(d)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    os.write(1, d)
"#;

struct Gw {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    ssh_port: u16,
    alice: KeyPair,
    _server: Serve,
}

fn start(from: &str) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        static_gateway_toml(
            dir.path(),
            ssh_port,
            api_port,
            &format!("proxy_protocol = true\nproxy_protocol_from = {from}\n"),
            "",
        ),
    )
    .unwrap();
    let alice = users_with_keys(
        &config,
        &format!("sqlite://{d}/gw.db"),
        dir.path(),
        &["alice"],
    )
    .remove(0);
    admin_with_config(&config, &["sandbox", "add", "demo", "--owner", "alice"]);
    std::fs::write(dir.path().join("relay.py"), RELAY).unwrap();
    let server = Serve::start(&config, &dir.path().join("gateway.log"), api_port);
    Gw {
        dir,
        config,
        ssh_port,
        alice,
        _server: server,
    }
}

impl Gw {
    fn ssh_with_header(&self, header: &[u8]) -> Command {
        let file = self.dir.path().join(format!("header-{}.bin", header.len()));
        std::fs::write(&file, header).unwrap();
        let mut cmd = Command::new("ssh");
        cmd.args(support::Gateway::client_opts_for(&self.alice.private))
            .args([
                "-o",
                &format!(
                    "ProxyCommand=python3 {} {} {}",
                    self.dir.path().join("relay.py").display(),
                    self.ssh_port,
                    file.display()
                ),
            ]);
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(src);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(22u16.to_be_bytes());
    h
}

#[test]
fn the_client_named_by_a_v1_or_v2_header_is_the_one_logged() {
    let gw = start("[]");
    let mut ssh = gw.ssh_with_header(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 22\r\n");
    ssh.args(["demo@gw", "echo v1"]);
    let out = run(ssh);
    assert_eq!(stdout(&out), "v1\n", "{}\n{}", stderr(&out), gw.log());

    let mut ssh = gw.ssh_with_header(&v2_tcp4([198, 51, 100, 23], 4444));
    ssh.args(["demo@gw", "echo v2"]);
    let out = run(ssh);
    assert_eq!(stdout(&out), "v2\n", "{}\n{}", stderr(&out), gw.log());

    // The gateway logs a connection's close after the client has gone: wait for it.
    assert!(
        support::process::wait_until(Duration::from_secs(10), || {
            let log = gw.log();
            log.contains("connection closed conn=2 peer=198.51.100.23:4444")
        }),
        "{}",
        gw.log()
    );
    let log = gw.log();
    assert!(log.contains("peer=203.0.113.7:5555"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("connection closed") && l.contains("peer=127.0.0.1")),
        "{log}"
    );
    // The audit trail records the header's address too, never the balancer's.
    let audited = || admin_with_config(&gw.config, &["sessions", "--limit", "10"]);
    assert!(
        support::process::wait_until(Duration::from_secs(10), || audited()
            .contains("from 198.51.100.23:4444")),
        "{}",
        audited()
    );
    let trail = audited();
    assert!(trail.contains("from 203.0.113.7:5555"), "{trail}");
    assert!(!trail.contains("from 127.0.0.1"), "{trail}");

    // Straight SSH, with no header, is refused.
    let mut plain = support::client("ssh", &gw.alice, gw.ssh_port);
    plain.args(["demo@127.0.0.1", "echo no"]);
    let out = run(plain);
    assert!(!out.status.success());
    assert!(
        gw.log()
            .contains("missing or malformed PROXY protocol header")
    );
}

#[test]
fn a_peer_not_allowed_to_send_headers_is_refused() {
    let gw = start("[\"10.0.0.0/8\"]");
    let mut ssh = gw.ssh_with_header(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 22\r\n");
    ssh.args(["demo@gw", "echo spoofed"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(
        gw.log().contains("not in ssh.proxy_protocol_from"),
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("203.0.113.7"));
}
