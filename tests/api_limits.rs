//! The REST API's own limits, through the real binary: a header timeout, a connection
//! cap that never stalls and never touches SSH, a header size limit and a deadline on
//! the whole request. Timings appear only as generous bounds on a wait, never as
//! assertions.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Serve, admin_with_config, free_port, keygen, register_key, run, stderr, stdout};

/// How long a test waits for something that should happen, before calling it a hang.
const PATIENCE: Duration = Duration::from_secs(30);

struct Gw {
    _server: Serve,
    ssh_port: u16,
    api_port: u16,
    token: String,
    key: support::KeyPair,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `serve` on SQLite with extra `[api]` settings; user `u` owns sandbox `box`.
fn serve(api_extra: &str) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n{api_extra}\n\
             [database]\nurl = \"sqlite://{d}/gw.db\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sb\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let admin = |args: &[&str]| admin_with_config(&config, args);
    admin(&["user", "add", "u"]);
    admin(&["sandbox", "add", "box", "--owner", "u"]);
    let token = admin(&["token", "create", "u"]).trim().to_owned();
    let key = keygen(dir.path(), "u", &["-t", "ed25519"]);
    register_key(
        &format!("sqlite://{}/gw.db", dir.path().display()),
        "u",
        &key,
    );
    let log = dir.path().join("log");
    let server = Serve::start(&config, &log, api_port);
    Gw {
        _server: server,
        ssh_port,
        api_port,
        token,
        key,
        log,
        _dir: dir,
    }
}

impl Gw {
    /// A keep-alive connection that has been answered 200 once, so it holds a slot.
    fn connect_served(&self) -> TcpStream {
        for _ in 0..100 {
            let mut conn = self.connect();
            let _ = conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
            let mut buf = [0u8; 1024];
            if let Ok(n) = conn.read(&mut buf)
                && buf[..n].starts_with(b"HTTP/1.1 200")
            {
                return conn;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no connection was served");
    }

    fn connect(&self) -> TcpStream {
        let conn = TcpStream::connect(("127.0.0.1", self.api_port)).unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        conn
    }

    /// One `GET path` on a fresh connection: the status line's code, or None when the
    /// server closed the connection without answering.
    fn get(&self, path: &str) -> Option<u16> {
        let mut conn = self.connect();
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        if conn.write_all(request.as_bytes()).is_err() {
            return None;
        }
        status_of(&read_to_close(&mut conn))
    }

    fn ssh_works(&self) {
        let mut cmd = Command::new("ssh");
        cmd.args(support::Gateway::client_opts_for(&self.key.private))
            .args(["-p", &self.ssh_port.to_string(), "box@127.0.0.1", "echo in"]);
        let out = run(cmd);
        assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Everything the server sends until it closes the connection (a reset counts as a
/// close). Panics if it neither answers nor closes within PATIENCE.
fn read_to_close(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "connection neither answered nor closed within {PATIENCE:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn a_client_that_stops_mid_header_is_disconnected_while_others_are_served() {
    let gw = serve("header_timeout_secs = 1");
    let mut stalled = gw.connect();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: g")
        .unwrap();

    // Meanwhile, on another connection, the API answers as usual.
    assert_eq!(gw.get("/healthz"), Some(200));

    // The half-sent request gets no answer: the server hangs up on it.
    let answer = read_to_close(&mut stalled);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(gw.get("/healthz"), Some(200));
}

#[test]
fn over_the_connection_cap_new_clients_are_turned_away_and_ssh_is_untouched() {
    // Idle connections may stay for the length of the test: the header timeout
    // (which also bounds idle keep-alive connections) is set well past it.
    let gw = serve("max_connections = 8\nheader_timeout_secs = 300");
    // Each of the 8 proves it holds a slot by being served once and kept alive (the
    // harness's own readiness probe may still hold a slot for a moment at start).
    let mut idle: Vec<TcpStream> = (0..8).map(|_| gw.connect_served()).collect();

    // The ninth is answered (503) or closed, at once rather than left waiting.
    let mut ninth = gw.connect();
    let _ = ninth.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    let answer = read_to_close(&mut ninth);
    assert_ne!(
        status_of(&answer),
        Some(200),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    if !answer.is_empty() {
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status_of(&answer), Some(503), "{text}");
        assert!(text.contains("connection limit"), "{text}");
    }

    // SSH has its own listener and descriptors: logins carry on.
    gw.ssh_works();

    // One idle client leaves; its slot is free again soon after the server sees it go.
    drop(idle.pop());
    let started = Instant::now();
    while gw.get("/healthz") != Some(200) {
        assert!(
            started.elapsed() < PATIENCE,
            "a freed slot was never reused; log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        gw.log()
            .contains("API connection limit (api.max_connections) reached"),
        "{}",
        gw.log()
    );
    drop(idle);
}

#[test]
fn oversized_headers_get_431() {
    let gw = serve("");
    let mut conn = gw.connect();
    // Over the default api.max_header_bytes (16 KiB), well under what hyper takes by
    // default (~400 KiB).
    let big = "a".repeat(32 * 1024);
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-Big: {big}\r\n\r\n");
    let _ = conn.write_all(request.as_bytes());
    let answer = read_to_close(&mut conn);
    assert!(
        answer.is_empty() || status_of(&answer) == Some(431),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A request just under the limit is fine.
    let mut conn = gw.connect();
    let fits = "a".repeat(8 * 1024);
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-Big: {fits}\r\n\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    assert_eq!(status_of(&read_to_close(&mut conn)), Some(200));
}

#[test]
fn a_trickled_body_is_cut_off_by_the_request_timeout() {
    let gw = serve("request_timeout_secs = 1");
    let mut conn = gw.connect();
    let head = format!(
        "POST /users/me/ssh-keys HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{{\"name\": \"",
        gw.token
    );
    conn.write_all(head.as_bytes()).unwrap();
    // One byte at a time, each well inside any read or idle timeout: only a bound on
    // the whole request stops this. The writer gives up when the server hangs up.
    let mut writer = conn.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..4000 {
            if writer.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let answer = read_to_close(&mut conn);
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), Some(408), "{text}");
    assert!(text.contains("api.request_timeout_secs"), "{text}");
    // The connection is closed (read_to_close returned), so the trickle stops too.
    trickle.join().unwrap();

    // A body sent at once is not affected.
    assert_eq!(upload_a_key(&gw), Some(201));
}

/// A normal key upload on a fresh connection, the whole body in one write.
fn upload_a_key(gw: &Gw) -> Option<u16> {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "fresh", &["-t", "ed25519"]).public_line;
    let body = serde_json::json!({"name": "fresh", "public_key": key}).to_string();
    let mut conn = gw.connect();
    let request = format!(
        "POST /users/me/ssh-keys HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        gw.token,
        body.len()
    );
    conn.write_all(request.as_bytes()).ok()?;
    status_of(&read_to_close(&mut conn))
}
