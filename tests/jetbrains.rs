//! What JetBrains Gateway does, replayed with OpenSSH against a Kubernetes pod (from
//! its documentation and logs): one SSH connection carries everything. It probes the
//! host with short exec channels (`uname -sm`, `$HOME`, what is installed), uploads the
//! IDE backend over SFTP, starts it in a long-lived exec channel whose output names
//! the port it listens on, forwards a local port to it (`direct-tcpip`) while more
//! exec channels come and go, and when the IDE closes, the backend ends with its
//! channel. OpenSSH's ControlMaster stands in for Gateway's own SSH client: every
//! step below is a new channel on the one connection.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use support::kube::{KubeGateway, sandbox};
use support::mux::Master;
use support::{free_port, stderr, stdout};

/// The "IDE backend": prints where it listens, then echoes every line it gets.
const BACKEND: &str = r#"import os, socket, sys, threading
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
open(os.path.expanduser('~/backend.pid'), 'w').write(str(os.getpid()))
print('Join link: tcp://127.0.0.1:%d' % s.getsockname()[1], flush=True)
def handle(c):
    for line in c.makefile('rb'):
        c.sendall(b'backend:' + line)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

#[test]
fn jetbrains_gateway_probes_uploads_runs_its_backend_and_forwards_over_one_connection() {
    let gw = KubeGateway::start(&["default"], None);
    let (labels, annotations) = sandbox("ide", "alice");
    gw.emu.pod("default", "sandbox-ide", labels, annotations);
    let dir = tempfile::tempdir().unwrap();
    let master = Master::open(gw.ssh_port, &gw.alice.private, dir.path(), "ide");

    // Probes, each its own exec channel.
    let out = master.run("uname -sm; echo home=$HOME; command -v python3 >/dev/null && echo py");
    assert!(out.status.success(), "{}", stderr(&out));
    let probed = stdout(&out);
    assert!(
        probed.contains("home=/") && probed.contains("py\n"),
        "{probed}"
    );

    // The backend goes up over SFTP on the same connection.
    let backend = dir.path().join("server.py");
    std::fs::write(&backend, BACKEND).unwrap();
    let mut sftp = std::process::Command::new("sftp");
    sftp.args(gw_opts(&gw))
        .arg("-o")
        .arg(format!("ControlPath={}", dir.path().join("ctl").display()))
        .arg("-b")
        .arg("-")
        .arg("ide@127.0.0.1")
        .stdin(Stdio::piped());
    let out = support::run_with_input(
        sftp,
        format!(
            "mkdir ide-backend\nput {} ide-backend/server.py\n",
            backend.display()
        )
        .as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The backend runs attached to a long-lived exec channel; its first line says
    // where to connect.
    let mut run_backend = master.command();
    run_backend
        .args(["ide@127.0.0.1", "exec python3 -u ide-backend/server.py"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ide = run_backend.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(ide.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port: u16 = first
        .trim()
        .strip_prefix("Join link: tcp://127.0.0.1:")
        .unwrap_or_else(|| panic!("{first:?}"))
        .parse()
        .unwrap();

    // A local port forwarded to it over the same connection, while more exec
    // channels come and go.
    let local = free_port();
    master.forward(local, port);
    let mut conn = TcpStream::connect(("127.0.0.1", local)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    for i in 0..5 {
        let out = master.run(&format!("echo status-{i}"));
        assert_eq!(stdout(&out), format!("status-{i}\n"), "{}", stderr(&out));
        conn.write_all(format!("frame {i}\n").as_bytes()).unwrap();
        let mut reply = vec![0u8; format!("backend:frame {i}\n").len()];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reply),
            format!("backend:frame {i}\n")
        );
    }
    assert!(master.is_up());

    // The IDE closes: its channel ends, and the backend with it.
    let _ = ide.kill();
    let _ = ide.wait();
    let pid = std::fs::read_to_string(gw.emu.pod_dir("default", "sandbox-ide").join("backend.pid"))
        .unwrap();
    // OpenSSH's mux master (9.2 here) can notice its client's death in a pass that
    // runs after it looked for EOFs to send, and then sleeps in poll() with the
    // channel's EOF and CLOSE unsent until anything else wakes it (our keepalive, at
    // the latest, 30 s on; seen about one run in thirty). A `-O check` wakes it, as
    // JetBrains' own client, which has no master, never needs.
    let backend = format!("/proc/{}", pid.trim());
    let mut last_poke = std::time::Instant::now();
    let gone = support::process::wait_until(Duration::from_secs(20), || {
        if !std::path::Path::new(&backend).exists() {
            return true;
        }
        if last_poke.elapsed() >= Duration::from_secs(1) {
            last_poke = std::time::Instant::now();
            master.is_up();
        }
        false
    });
    assert!(gone, "the backend outlived its channel");
    let out = master.run("echo still-here");
    assert_eq!(stdout(&out), "still-here\n", "the connection carries on");
    // All of it was one SSH connection.
    assert_eq!(
        gw.log().matches(" authenticated conn=").count(),
        1,
        "{}",
        gw.log()
    );
}

/// The client options the gateway's test clients use, for a program (sftp) that
/// takes them without `-p`.
fn gw_opts(gw: &KubeGateway) -> Vec<String> {
    support::Gateway::client_opts_for(&gw.alice.private)
        .into_iter()
        .chain(["-P".into(), gw.ssh_port.to_string()])
        .collect()
}
