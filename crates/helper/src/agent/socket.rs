//! Where `agent-listen` listens, and how that place goes away again.
//!
//! As sshd does (`/tmp/ssh-XXXXXXXXXX/agent.<pid>`): a directory of its own with an
//! unpredictable name, mode 0700, so only the workload's user (and root) can reach the
//! socket inside, which is 0600 besides. The first of `$TMPDIR`, `/tmp` and `/dev/shm`
//! where that works is used (a read-only root filesystem often leaves only one).
//!
//! Both are removed when the helper ends: by the caller on a normal end, and by a
//! signal handler on SIGHUP, SIGTERM or SIGINT (how backends end a program whose
//! session is gone). Only SIGKILL leaves them behind, as it would sshd's.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::sync::OnceLock;

use crate::sys;

/// sun_path holds 108 bytes, NUL included.
const MAX_SOCKET_PATH: usize = 107;

/// The socket and its directory, for [`remove`] and the signal handler (which may
/// not allocate, so the C strings are made beforehand).
static PLACE: OnceLock<(CString, CString)> = OnceLock::new();

pub struct Listening {
    pub listener: UnixListener,
    /// The socket's path, as the workload's programs will find it in SSH_AUTH_SOCK.
    pub path: Vec<u8>,
}

/// Binds the socket in the first place that allows it, or says why none did.
pub fn listen() -> Result<Listening, String> {
    let mut failures = Vec::new();
    for base in candidates() {
        match listen_in(&base) {
            Ok(listening) => return Ok(listening),
            Err(e) => failures.push(format!("{}: {e}", String::from_utf8_lossy(&base))),
        }
    }
    Err(format!(
        "no place for the agent socket ({})",
        failures.join("; ")
    ))
}

fn candidates() -> Vec<Vec<u8>> {
    let mut bases = Vec::new();
    if let Some(tmpdir) = std::env::var_os("TMPDIR") {
        let tmpdir = tmpdir.as_bytes();
        if tmpdir.starts_with(b"/") {
            bases.push(tmpdir.to_vec());
        }
    }
    for fixed in [&b"/tmp"[..], b"/dev/shm"] {
        if !bases.iter().any(|b| b == fixed) {
            bases.push(fixed.to_vec());
        }
    }
    bases
}

fn listen_in(base: &[u8]) -> io::Result<Listening> {
    let mut template = base.to_vec();
    while template.len() > 1 && template.ends_with(b"/") {
        template.pop();
    }
    // Ten random characters, as sshd's `ssh-XXXXXXXXXX`: mkdtemp(3) draws only the
    // last six, so the first four come from here.
    template.extend_from_slice(b"/ssh-");
    template.extend_from_slice(&random_letters::<4>());
    template.extend_from_slice(b"XXXXXX");
    let name = format!("/agent.{}", std::process::id());
    if template.len() + name.len() > MAX_SOCKET_PATH {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // The umask decides the modes: 0700 for the directory, 0600 for the socket (bind
    // has no mode argument); the explicit chmods below only make sure.
    let old = sys::umask(0o077);
    let made = sys::mkdtemp(&template).and_then(|dir| {
        sys::chmod(&dir, 0o700)?;
        Ok(dir)
    });
    let dir = match made {
        Ok(dir) => dir,
        Err(e) => {
            sys::umask(old);
            return Err(e);
        }
    };
    let mut path = dir.clone();
    path.extend_from_slice(name.as_bytes());
    sys::umask(0o177);
    let bound = UnixListener::bind(OsStr::from_bytes(&path));
    sys::umask(old);
    let listener = match bound.and_then(|l| sys::chmod(&path, 0o600).map(|()| l)) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = sys::unlink(&path);
            let _ = sys::rmdir(&dir);
            return Err(e);
        }
    };
    let (Ok(socket), Ok(cdir)) = (CString::new(path.clone()), CString::new(dir)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let _ = PLACE.set((socket, cdir));
    install_signal_handlers();
    Ok(Listening { listener, path })
}

/// Letters and digits from the kernel's random source; if that fails, `X`s (the name
/// then has only mkdtemp's six random characters).
fn random_letters<const N: usize>() -> [u8; N] {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; N];
    // SAFETY: bytes is a writable buffer of N bytes.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), N, 0) };
    if got != N as isize {
        return [b'X'; N];
    }
    bytes.map(|b| ALPHABET[usize::from(b) % ALPHABET.len()])
}

/// Removes the socket and its directory (once they exist; harmless to repeat).
/// Async-signal-safe: two system calls on strings made beforehand.
pub fn remove() {
    if let Some((socket, dir)) = PLACE.get() {
        // SAFETY: both are valid NUL-terminated strings that live for the process.
        unsafe {
            libc::unlink(socket.as_ptr());
            libc::rmdir(dir.as_ptr());
        }
    }
}

extern "C" fn on_signal(_signal: libc::c_int) {
    remove();
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(0) }
}

fn install_signal_handlers() {
    for signal in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler only
        // makes async-signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}
