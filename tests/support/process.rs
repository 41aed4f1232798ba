//! The gateway as a process: its pid and resident memory, for tests that bound what a
//! stalled peer can make it hold.

use super::Gateway;

impl Gateway {
    /// The `ssh-gateway dev` process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident set size in KiB (VmRSS in /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        status_field(self.pid(), "VmRSS:").unwrap_or_else(|| panic!("no VmRSS for the gateway"))
    }
}

/// A numeric `Name: value kB` line of /proc/<pid>/status.
pub fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The offset of `pid`'s file descriptor `fd` (the `pos:` of /proc/<pid>/fdinfo/<fd>):
/// how far a process has read a file it was given.
pub fn fd_offset(pid: u32, fd: u32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("pos:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether a process whose command line matches `pattern` is running (`pgrep -f`).
pub fn running(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `cond` every 100 ms for up to `limit`; whether it became true.
pub fn wait_until(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
