//! What VS Code Remote-SSH does, replayed with OpenSSH against a Kubernetes pod (from
//! its documentation and logs): it probes and installs with `ssh -T host bash` and a
//! script on stdin that starts its server detached and prints where it listens;
//! opens several connections to the host at once; then holds long-lived forwards to
//! that server, a TCP port (`direct-tcpip`) or, with `remoteServerListenOnSocket`, a
//! Unix socket (`direct-streamlocal`); and after the network drops it connects again
//! and finds its server where it left it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::kube::{KubeGateway, sandbox};
use support::relay::Relay;
use support::{KeyPair, free_port, run, run_with_input, stderr, stdout};

/// What the install script does: write the server, start it detached (it outlives
/// the install connection), wait for it, print where it listens.
const INSTALL: &str = r#"set -e
cd "$HOME"
cat > server.py <<'PY'
import os, socket, threading
def handle(c):
    for line in c.makefile('rb'):
        c.sendall(b'code-server:' + line)
    c.close()
def serve(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen()
u = socket.socket(socket.AF_UNIX); u.bind(os.path.abspath('code.sock')); u.listen()
threading.Thread(target=serve, args=(u,), daemon=True).start()
open('pid', 'w').write(str(os.getpid()))
open('port', 'w').write(str(t.getsockname()[1]))
serve(t)
PY
rm -f code.sock port pid
setsid nohup python3 server.py > /dev/null 2>&1 < /dev/null &
i=0; while [ ! -s port ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
echo "listeningOn==$(cat port)=="
echo "socketPath==$PWD/code.sock=="
"#;

/// The server the install started, stopped when the test ends.
struct Server {
    pid_file: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

struct Forwards(Child);

impl Drop for Forwards {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn between<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text
        .find(key)
        .map(|i| i + key.len())
        .unwrap_or_else(|| panic!("{key} in {text}"));
    let rest = &text[start..];
    &rest[..rest.find("==").unwrap()]
}

/// `ssh -N` holding a TCP forward to `port` and a socket forward to `socket`.
fn forwards(
    key: &KeyPair,
    ssh_port: u16,
    port: u16,
    socket: &str,
    dir: &Path,
) -> (Forwards, u16, PathBuf) {
    let local_port = free_port();
    let local_sock = dir.join(format!("vscode-{local_port}.sock"));
    let mut cmd = support::client("ssh", key, ssh_port);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ServerAliveInterval=1",
    ])
    .arg("-L")
    .arg(format!("{local_port}:127.0.0.1:{port}"))
    .arg("-L")
    .arg(format!("{}:{socket}", local_sock.display()))
    .arg("code@127.0.0.1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = Forwards(cmd.spawn().unwrap());
    assert!(
        support::process::wait_until(Duration::from_secs(20), || local_sock.exists()
            && TcpStream::connect(("127.0.0.1", local_port)).is_ok()),
        "the forwards did not come up"
    );
    (child, local_port, local_sock)
}

fn tcp(port: u16) -> TcpStream {
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn
}

fn unix(path: &Path) -> UnixStream {
    let conn = UnixStream::connect(path).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn
}

/// Several requests over one long-lived forwarded connection, answered each in turn.
fn converse(mut conn: impl Read + Write, what: &str) {
    for i in 0..4 {
        conn.write_all(format!("{what} {i}\n").as_bytes()).unwrap();
        let mut byte = [0u8; 1];
        let mut line = Vec::new();
        while line.last() != Some(&b'\n') {
            conn.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        assert_eq!(
            String::from_utf8_lossy(&line),
            format!("code-server:{what} {i}\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vscode_installs_connects_in_parallel_forwards_and_reconnects() {
    let gw = KubeGateway::start(&["default"], None);
    let (labels, annotations) = sandbox("code", "alice");
    gw.emu.pod("default", "sandbox-code", labels, annotations);
    let _server = Server {
        pid_file: gw.emu.pod_dir("default", "sandbox-code").join("pid"),
    };

    // Install: bash -T with the script on stdin.
    let mut install = gw.ssh(&gw.alice);
    install.args(["-T", "code@127.0.0.1", "bash"]);
    let out = run_with_input(install, INSTALL.as_bytes());
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    let printed = stdout(&out);
    let port: u16 = between(&printed, "listeningOn==").parse().unwrap();
    let socket = between(&printed, "socketPath==").to_owned();

    // Several connections at once, as the window, the terminal and extensions open.
    let parallel: Vec<_> = (0..4)
        .map(|i| {
            let mut cmd = gw.ssh(&gw.alice);
            cmd.args(["code@127.0.0.1", &format!("echo parallel {i}")]);
            std::thread::spawn(move || run(cmd))
        })
        .collect();
    for (i, t) in parallel.into_iter().enumerate() {
        let out = t.join().unwrap();
        assert_eq!(stdout(&out), format!("parallel {i}\n"), "{}", stderr(&out));
    }

    // Long-lived forwards to the server, through a network path that will drop.
    let dir = tempfile::tempdir().unwrap();
    let mut network = Relay::start(([127, 0, 0, 1], gw.ssh_port).into());
    let (held, local_port, local_sock) =
        forwards(&gw.alice, network.port, port, &socket, dir.path());
    converse(tcp(local_port), "tcp");
    converse(unix(&local_sock), "socket");

    // The network drops: the client notices and ends; when it is back, it connects
    // again and finds its server where it left it.
    network.down();
    let mut held = held;
    assert!(
        support::process::wait_until(Duration::from_secs(20), || held
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "the client did not notice the drop"
    );
    network.up();
    let (_again, local_port, local_sock) =
        forwards(&gw.alice, network.port, port, &socket, dir.path());
    converse(tcp(local_port), "tcp again");
    converse(unix(&local_sock), "socket again");
}
