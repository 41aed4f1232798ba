//! Shared test plumbing: the helper's path, the real OpenSSH programs, tree snapshots,
//! output normalisation, and a raw SFTP client for protocol-level checks.
#![allow(dead_code)]

pub mod raw;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

pub const OPENSSH_SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
pub const OPENSSH_SCP: &str = "/usr/bin/scp";

pub fn helper() -> &'static str {
    env!("CARGO_BIN_EXE_ssh-gateway-helper")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sgw-helper-test")
        .tempdir()
        .expect("tempdir")
}

/// The -D command for `sftp`: a server started in `dir`.
pub fn server_cmd(openssh: bool, dir: &Path) -> String {
    if openssh {
        format!("{OPENSSH_SFTP_SERVER} -d {}", dir.display())
    } else {
        format!("{} sftp-server -d {}", helper(), dir.display())
    }
}

/// Runs an sftp batch (`-b`) against a server command, the client in `local`.
pub fn sftp_batch(server: &str, local: &Path, batch: &str) -> Output {
    let bdir = tempdir();
    let bfile = bdir.path().join("batch");
    std::fs::write(&bfile, batch).unwrap();
    Command::new("sftp")
        .arg("-q")
        .arg("-b")
        .arg(&bfile)
        .arg("-D")
        .arg(server)
        .current_dir(local)
        .stdin(Stdio::null())
        .output()
        .expect("run sftp")
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// Writes `len` pseudo-random bytes (xorshift; fast and reproducible).
pub fn write_random(p: &Path, len: usize, seed: u64) {
    use std::io::Write;
    let mut x = seed | 1;
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

/// What a user would notice about one tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        sha: String,
        mtime: Option<i64>,
    },
    Dir {
        mode: u32,
        mtime: Option<i64>,
    },
    Link(PathBuf),
}

/// Every entry under `root` (relative names as raw bytes), modes, contents, link
/// targets, and mtimes if asked for.
pub fn snapshot(root: &Path, with_mtime: bool) -> BTreeMap<Vec<u8>, Node> {
    fn walk(root: &Path, dir: &Path, with_mtime: bool, out: &mut BTreeMap<Vec<u8>, Node>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mtime = with_mtime.then(|| m.mtime());
            let node = if m.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                walk(root, &p, with_mtime, out);
                Node::Dir {
                    mode: m.mode() & 0o7777,
                    mtime,
                }
            } else {
                Node::File {
                    mode: m.mode() & 0o7777,
                    sha: sha256_file(&p),
                    mtime,
                }
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, with_mtime, &mut out);
    out
}

/// Replaces each (from, to) in order, then blanks the date columns of `ls -l` lines
/// (times of files created during the test differ between runs).
pub fn normalize(bytes: &[u8], replace: &[(&Path, &str)]) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    for (from, to) in replace {
        s = s.replace(&from.display().to_string(), to);
    }
    s.lines()
        .map(|line| {
            let looks_like_ls = line.len() > 10
                && matches!(
                    line.as_bytes()[0],
                    b'-' | b'd' | b'l' | b'p' | b's' | b'c' | b'b'
                )
                && line.as_bytes()[1..10]
                    .iter()
                    .all(|c| b"rwxsStT-".contains(c));
            if !looks_like_ls {
                return line.to_string();
            }
            // mode links user group size MON DD TIME name...
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 9 {
                return line.to_string();
            }
            let name_start = {
                // The name is what follows the 8th field.
                let mut idx = 0;
                let mut count = 0;
                let b = line.as_bytes();
                while count < 8 && idx < b.len() {
                    while idx < b.len() && b[idx] == b' ' {
                        idx += 1;
                    }
                    while idx < b.len() && b[idx] != b' ' {
                        idx += 1;
                    }
                    count += 1;
                }
                (idx + 1).min(b.len())
            };
            format!(
                "{} {} {} {} {} <date> {}",
                parts[0],
                parts[1],
                parts[2],
                parts[3],
                parts[4],
                &line[name_start..]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn os(s: &[u8]) -> &OsStr {
    OsStr::from_bytes(s)
}

/// A fake `ssh` for `scp -S`: ignores host and options and runs the remote command
/// locally in `home`, with its leading `scp` replaced by `remote_scp`.
pub fn fake_ssh(dir: &Path, name: &str, remote_scp: &str, home: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    let script = format!(
        "#!/bin/sh\n\
         for last; do :; done\n\
         cd '{}' || exit 1\n\
         exec /bin/sh -c \"exec {} ${{last#scp }}\"\n",
        home.display(),
        remote_scp
    );
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The remote-scp command for the helper or for OpenSSH's scp.
pub fn remote_scp(openssh: bool) -> String {
    if openssh {
        OPENSSH_SCP.to_string()
    } else {
        format!("{} scp", helper())
    }
}

pub fn scp(ssh: &Path, cwd: &Path, args: &[&OsStr]) -> Output {
    Command::new("scp")
        .arg("-O")
        .arg("-q")
        .arg("-S")
        .arg(ssh)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run scp")
}

/// Sets fixed times on everything under (and including) `root`, symlinks themselves
/// included: mtimes in the past, atimes in the future so reads do not move them
/// (relatime), keeping listings identical between runs.
pub fn fix_times(root: &Path) {
    fn set(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let ts = [
            libc::timespec {
                tv_sec: 2_000_000_000,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 1_700_000_000,
                tv_nsec: 0,
            },
        ];
        // SAFETY: valid C string and two timespecs.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(r, 0, "utimensat {}", p.display());
    }
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            fix_times(&p);
        } else {
            set(&p);
        }
    }
    set(root);
}
