//! One file descriptor per connection: a gateway that held two per connection (a
//! duplicate for its kill switch) could serve only half the connections its limit
//! allows. And no locked memory per connection.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::Gateway;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn each_idle_connection_costs_one_descriptor() {
    let gw = Gateway::start();
    let before = open_fds(gw.pid());
    const N: usize = 40;
    let mut clients: Vec<Child> = (0..N)
        .map(|_| {
            let mut cmd = gw.ssh(&gw.dev_key);
            cmd.args(["-N", "demo@127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    // Wait until all of them have logged in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.log().matches("authenticated conn=").count() < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gw.log().matches("authenticated conn=").count(), N);
    let held = open_fds(gw.pid());
    // Nor does a connection lock memory: russh mlock()ed every buffer, which split the
    // heap into a mapping per buffer and, past RLIMIT_MEMLOCK, failed with a security
    // warning in the log (vendor/russh-cryptovec/PATCHES.md).
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    let locked = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    assert_eq!(locked.split_whitespace().nth(1), Some("0"), "{locked}");
    for c in &mut clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    // The database pool may open a few more (up to 5 SQLite connections with their
    // -wal and -shm files) while the logins run; two per connection would be 80.
    assert!(
        held - before <= N + 16,
        "{N} idle connections hold {} descriptors",
        held - before
    );
    assert!(held - before >= N, "the connections were not all open");
}
