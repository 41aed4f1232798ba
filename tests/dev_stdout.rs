//! A gateway whose stdout nobody reads must keep serving: its banner is written after
//! the listeners are up, and a write into a closed pipe once killed the process.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, keygen, run, stdout};

#[test]
fn a_closed_stdout_does_not_kill_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = keygen(&home.join(".ssh"), "id_ed25519", &["-t", "ed25519"]);
    // A pipe whose reading end is already gone: every write to it fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (ssh_port, api_port) = (free_port(), free_port());
    let mut child = Command::new(support::BIN)
        .args(["dev", "--ssh-listen", &format!("127.0.0.1:{ssh_port}")])
        .args([
            "--api-listen",
            &format!("127.0.0.1:{api_port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("HOME", &home)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give a dying process time to die before asking it anything.
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = Command::new("ssh");
    cmd.args(support::Gateway::client_opts_for(&key.private))
        .args(["-p", &ssh_port.to_string(), "demo@127.0.0.1", "echo alive"]);
    let out = run(cmd);
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the gateway never came up");
    assert_eq!(exited, None, "the gateway exited");
    assert_eq!(stdout(&out), "alive\n");
}
