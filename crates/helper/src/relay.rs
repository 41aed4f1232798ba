//! `relay-unix PATH`: a Unix-domain socket inside the workload, bridged to the
//! helper's stdin and stdout, for `direct-streamlocal@openssh.com` channels (`ssh -L
//! 9000:/run/app.sock`, VS Code's `remoteServerListenOnSocket`): the Kubernetes
//! port-forward API carries only TCP, but exec carries bytes.
//!
//! The wire: once connected, one `0` byte on stdout, so the gateway confirms the SSH
//! channel only when the socket is really there (as sshd answers "connect failed"
//! otherwise); then the socket's bytes, unchanged, both ways. End of stdin half-closes
//! the socket; the socket's end ends the helper. A failed connect writes nothing on
//! stdout, says why on stderr and exits 1.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use crate::sys::StdFd;

const USAGE: &str = "usage: ssh-gateway-helper relay-unix PATH";

pub fn main(args: &[OsString]) -> ExitCode {
    let [path] = args else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let socket = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "ssh-gateway-helper: connect to {}: {e}",
                path.to_string_lossy()
            );
            return ExitCode::from(1);
        }
    };
    let mut stdout = StdFd::stdout();
    if stdout.write_all(&[0]).is_err() {
        return ExitCode::from(1);
    }
    let Ok(mut to_socket) = socket.try_clone() else {
        return ExitCode::from(1);
    };
    std::thread::spawn(move || {
        let _ = copy(&mut StdFd::stdin(), &mut to_socket);
        let _ = to_socket.shutdown(Shutdown::Write);
    });
    let mut from_socket = socket;
    match copy(&mut from_socket, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// Copies until end of input, writing each read at once (no buffering: a request
/// and its answer must not wait for more bytes).
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
