//! `ssh -L` carrying one HTTP request to a server "inside" the target (in these tests a
//! target's ports are this machine's loopback ports, for both backends).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts a one-shot HTTP server, runs `ssh -N -L local:<host>:<port> …` built by
/// `tunnel` (given the -L spec), sends a GET through it, and returns (the request the
/// server saw, the response the client got).
pub fn http_through_tunnel(
    host: &str,
    body: &'static [u8],
    tunnel: impl FnOnce(&str) -> Command,
) -> (String, String) {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        conn.write_all(body).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let local = super::free_port();
    let mut cmd = tunnel(&format!("{local}:{host}:{port}"));
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut response = String::new();
    for _ in 0..100 {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            conn.read_to_string(&mut response).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    (handle.join().unwrap(), response)
}

/// A Unix socket server at `path` (mode `mode`, so a pod's user may connect) that
/// answers each line with `pong:<line>` and, once its client half-closes, `bye`.
pub fn unix_echo(path: &std::path::Path, mode: u32) {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let _ = conn.write_all(format!("pong:{line}").as_bytes());
                    line.clear();
                }
                // The client's end of input arrives as end of file here.
                let _ = conn.write_all(b"bye\n");
            });
        }
    });
}

/// Connects to the socket at `path`, sends `input`, half-closes, and reads to the
/// end (or gives up after 30 s of silence).
pub fn unix_exchange(path: &std::path::Path, input: &[u8]) -> std::io::Result<String> {
    let mut conn = std::os::unix::net::UnixStream::connect(path)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(input)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut got = String::new();
    conn.read_to_string(&mut got).map(|_| got)
}
