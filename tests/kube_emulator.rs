//! The Kubernetes API emulator's fidelity, checked with clients nobody here wrote: the
//! real `kubectl` and Debian's python3-kubernetes. If our backend and the emulator
//! agreed on something these reject, the emulator would be wrong.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

use support::kube::EmulatorThread;

/// The emulator plus a place for kubectl's files.
struct Running {
    _emulator: EmulatorThread,
    dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let emulator =
            EmulatorThread::start(&dir.path().join("root"), &dir.path().join("kubeconfig"));
        Running {
            _emulator: emulator,
            dir,
        }
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn kubectl(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn apply(&self, yaml: &str) {
        let path = self.dir.path().join("obj.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = self.kubectl(&["create", "-f", path.to_str().unwrap()], b"");
        assert!(
            out.status.success(),
            "kubectl create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box-0\n  labels:\n    app: box\nspec:\n  containers:\n  - name: main\n    image: debian:12\n";

#[test]
fn kubectl_creates_lists_and_execs_with_stdin_and_exit_code() {
    let emu = Running::start();
    emu.apply(POD);

    let out = emu.kubectl(&["get", "pods"], b"");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("box-0") && table.contains("Running") && table.contains("1/1"),
        "{table}"
    );

    let out = emu.kubectl(&["get", "pods", "-l", "app=other", "-o", "name"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");

    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = emu.kubectl(
        &[
            "exec",
            "-i",
            "box-0",
            "--",
            "sh",
            "-c",
            "wc -c; echo to-stderr >&2; exit 3",
        ],
        &input,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "300000");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("to-stderr"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");
    assert_eq!(out.status.code(), Some(3));

    let out = emu.kubectl(&["exec", "box-0", "--", "pwd"], b"");
    let pwd = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(pwd.ends_with("/default/box-0"), "{pwd}");

    let out = emu.kubectl(&["exec", "missing", "--", "true"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pods \"missing\" not found"));
}

#[test]
fn kubectl_scales_statefulsets() {
    let emu = Running::start();
    emu.apply(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: job\nspec:\n  replicas: 0\n  serviceName: job\n  selector:\n    matchLabels: {app: job}\n  template:\n    metadata:\n      labels: {app: job}\n    spec:\n      containers:\n      - name: main\n        image: debian:12\n",
    );
    let out = emu.kubectl(&["scale", "statefulset", "job", "--replicas=2"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = emu.kubectl(&["get", "pods", "-l", "app=job", "-o", "name"], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod/job-0\npod/job-1\n"
    );
    let out = emu.kubectl(&["scale", "statefulset", "job", "--replicas=0"], b"");
    assert!(out.status.success());
    let out = emu.kubectl(&["get", "pods", "-o", "name"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

const PYTHON_CLIENT: &str = r#"
import socket, sys
from kubernetes import client, config
from kubernetes import watch
from kubernetes.stream import stream, portforward

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
pods = [p.metadata.name for p in v1.list_namespaced_pod("default", label_selector="app=box").items]
print("pods", pods)
events = [(e["type"], e["object"].metadata.name)
          for e in watch.Watch().stream(v1.list_namespaced_pod, "default", label_selector="app=box", timeout_seconds=1)]
print("watch", events)

resp = stream(v1.connect_get_namespaced_pod_exec, "box-0", "default",
              command=["sh", "-c", "read line; echo got:$line; echo oops >&2; exit 4"],
              stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
resp.write_stdin("ping\n")
out, err = "", ""
while resp.is_open():
    resp.update(timeout=1)
    if resp.peek_stdout():
        out += resp.read_stdout()
    if resp.peek_stderr():
        err += resp.read_stderr()
resp.close()
print("exec", repr(out), repr(err), resp.returncode)

# A terminal: resize through channel 4, then ask the terminal its size.
tty = stream(v1.connect_get_namespaced_pod_exec, "box-0", "default",
             command=["sh", "-c", "read go; stty size; tty"],
             stderr=False, stdin=True, stdout=True, tty=True, _preload_content=False)
tty.write_channel(4, '{"Width": 101, "Height": 33}')
tty.write_stdin("go\n")
screen = ""
while tty.is_open():
    tty.update(timeout=1)
    if tty.peek_stdout():
        screen += tty.read_stdout()
tty.close()
print("tty", repr(screen.replace("\r", "")), tty.returncode)

port = int(sys.argv[2])
pf = portforward(v1.connect_get_namespaced_pod_portforward, "box-0", "default", ports=str(port))
sock = pf.socket(port)
sock.setblocking(True)
sock.sendall(b"hello pod\n")
data = b""
while True:
    chunk = sock.recv(1024)
    if not chunk:
        break
    data += chunk
sock.close()
print("forward", repr(data.decode()))
"#;

#[test]
fn python_kubernetes_client_execs_and_port_forwards() {
    let emu = Running::start();
    emu.apply(POD);
    // A server "in the pod": in emulation its ports are the host's loopback ports.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let echo = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(b"pod says: ").unwrap();
        conn.write_all(&buf[..n]).unwrap();
    });
    let script = emu.dir.path().join("client.py");
    std::fs::write(&script, PYTHON_CLIENT).unwrap();
    // Debian's interpreter, where python3-kubernetes is installed.
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(emu.kubeconfig())
        .arg(port.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pods ['box-0']"), "{stdout}");
    assert!(stdout.contains("watch [('ADDED', 'box-0')]"), "{stdout}");
    assert!(
        stdout.contains("exec 'got:ping\\n' 'oops\\n' 4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("forward 'pod says: hello pod\\n'"),
        "{stdout}"
    );
    // The line discipline echoes "go"; then the size sent over channel 4, and a pts.
    assert!(stdout.contains("tty 'go\\n33 101\\n/dev/pts/"), "{stdout}");
    echo.join().unwrap();
}

/// The raw exec protocol: subprotocol choice follows the client's order, the handshake
/// frame comes first, pings are answered while a command runs, and the status frame
/// precedes the close.
#[tokio::test(flavor = "multi_thread")]
async fn exec_websocket_handshake_ping_and_status() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let dir = tempfile::tempdir().unwrap();
    let emulator = kube_emulator::Emulator::start(kube_emulator::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        root: dir.path().join("root"),
        token: None,
        rbac: None,
        start_delay: std::time::Duration::ZERO,
    })
    .await
    .unwrap();
    let pod = serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    emulator
        .store
        .create(kube_emulator::Kind::Pod, "default", pod)
        .unwrap();
    let url = format!(
        "ws://{}/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&command=sleep%200.5%3B%20exit%205&stdout=true&stderr=true",
        emulator.addr
    );
    let mut request = url.into_client_request().unwrap();
    // v4 offered first: the server must take the client's preference.
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io, v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );

    let first = ws.next().await.unwrap().unwrap();
    assert_eq!(
        first,
        Message::Binary(vec![1u8].into()),
        "the handshake frame is [1]"
    );
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let (mut ponged, mut status) = (false, None);
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            Message::Pong(p) => ponged = p.as_ref() == b"are you there",
            Message::Binary(b) if b.first() == Some(&3) => {
                status = Some(String::from_utf8_lossy(&b[1..]).into_owned())
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(ponged, "the ping was not answered while the command ran");
    let status = status.expect("a status frame before the close");
    assert!(
        status.contains("\"reason\":\"NonZeroExitCode\"") && status.contains("\"message\":\"5\""),
        "{status}"
    );
}
