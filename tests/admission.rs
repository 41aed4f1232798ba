//! Pre-authentication admission: idle sockets from one address cannot lock everyone
//! else out, the login deadline counts from accept whatever the client sends, and an
//! address that keeps failing to log in is turned away for a while.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Serve, admin_with_config, free_port, keygen, register_key, run, stderr, stdout};

struct Gw {
    _server: Serve,
    ssh_port: u16,
    dir: tempfile::TempDir,
    key: support::KeyPair,
}

/// `serve` on SQLite with extra settings, a user `u` owning sandbox `box`.
fn serve(ssh_extra: &str, admission: &str) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n{ssh_extra}\n\
             [admission]\n{admission}\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/gw.db\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sb\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    admin_with_config(&config, &["user", "add", "u"]);
    admin_with_config(&config, &["sandbox", "add", "box", "--owner", "u"]);
    let key = keygen(dir.path(), "u", &["-t", "ed25519"]);
    register_key(
        &format!("sqlite://{}/gw.db", dir.path().display()),
        "u",
        &key,
    );
    let server = Serve::start(&config, &dir.path().join("log"), api_port);
    Gw {
        _server: server,
        ssh_port,
        dir,
        key,
    }
}

impl Gw {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `ssh` from `source` (127.0.0.1 or 127.0.0.2) with `key`.
    fn ssh_from(&self, source: &str, key: &std::path::Path, command: &str) -> std::process::Output {
        let mut cmd = Command::new("ssh");
        cmd.args(support::Gateway::client_opts_for(key)).args([
            "-b",
            source,
            "-p",
            &self.ssh_port.to_string(),
            "box@127.0.0.1",
            command,
        ]);
        run(cmd)
    }
}

/// Lets this test process hold a few thousand sockets (the default soft limit is
/// often 1024).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Whether the gateway has closed `conn` (EOF or reset) within `limit`.
fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left.min(Duration::from_secs(1))))
            .unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // the server's banner
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

#[test]
fn a_flood_of_idle_sockets_from_one_address_does_not_lock_out_another() {
    raise_fd_limit();
    let gw = serve("login_grace_secs = 3\nmax_connections = 500", "");
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.ssh_port).parse().unwrap();
    // A thousand connections from 127.0.0.1 that never send a byte.
    let mut idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
        .collect();
    assert!(idle.len() > 500, "only {} connections opened", idle.len());

    // A real user from another address still gets in.
    let out = gw.ssh_from("127.0.0.2", &gw.key.private, "echo in");
    assert_eq!(stdout(&out), "in\n", "{}\n{}", stderr(&out), gw.log());
    assert!(
        gw.log()
            .contains("too many unauthenticated connections from this address")
    );

    // After the login deadline every idle socket has been closed by the gateway.
    for (i, conn) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(conn, Duration::from_secs(30)),
            "idle connection {i} still open"
        );
    }
}

#[test]
fn the_login_deadline_counts_from_accept_not_from_the_last_byte() {
    let gw = serve("login_grace_secs = 4", "");
    let started = Instant::now();
    let mut conn = TcpStream::connect(("127.0.0.1", gw.ssh_port)).unwrap();
    // Just before the deadline, the client finally says hello.
    std::thread::sleep(Duration::from_millis(3500));
    conn.write_all(b"SSH-2.0-OpenSSH_9.2 slow\r\n").unwrap();
    assert!(closed_within(&mut conn, Duration::from_secs(30)));
    // A restarted timer would have held it until 7.5 s.
    let held = started.elapsed();
    assert!(
        held < Duration::from_millis(6500),
        "held for {held:?}: the banner restarted the login timer"
    );
}

#[test]
fn an_address_that_keeps_failing_to_log_in_is_turned_away_and_others_are_not() {
    let gw = serve(
        "",
        "penalty_auth_failure_secs = 10\npenalty_threshold_secs = 15",
    );
    let stranger = keygen(gw.dir.path(), "stranger", &["-t", "ed25519"]);
    // Two failures (20 s of penalty) put 127.0.0.2 past the threshold.
    for _ in 0..2 {
        let out = gw.ssh_from("127.0.0.2", &stranger.private, "true");
        assert_eq!(out.status.code(), Some(255));
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
    }
    // (The penalty is booked when the gateway sees the connection end.)
    std::thread::sleep(Duration::from_secs(1));
    // Now even the right key from that address is refused before any SSH exchange...
    let out = gw.ssh_from("127.0.0.2", &gw.key.private, "echo in");
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    assert!(
        !stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(
        gw.log().contains("address penalized for failed logins"),
        "{}",
        gw.log()
    );
    // ...while another address is unaffected.
    let out = gw.ssh_from("127.0.0.1", &gw.key.private, "echo in");
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
}
