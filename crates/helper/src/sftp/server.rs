//! Serving one parsed request: the file-system side of SFTP, with OpenSSH's
//! sftp-server semantics (which calls it makes, which errno becomes which status).
//!
//! Paths are used as the client sent them, relative to the current directory, as
//! whatever user the helper runs as: the kernel's permission checks decide, exactly as
//! for OpenSSH's sftp-server without a chroot.

use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::attrs::Attrs;
use super::handles::{Entry, Handles, Kind, MAX_HANDLES};
use super::longname;
use super::names::Names;
use super::packet::*;
use super::realpath::realpath;
use crate::sys;

/// OpenSSH's readdir sends at most this many entries per NAME reply.
const READDIR_BATCH: usize = 100;
/// copy-data moves data in chunks of this size (as OpenSSH does).
const COPY_CHUNK: usize = 64 * 1024;
const PATH_MAX: usize = 4096;

/// Why the session must end: the client broke the protocol.
#[derive(Debug)]
pub enum Fatal {
    Parse(ParseError),
    BeforeInit(u8),
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Parse(e) => e.fmt(f),
            Fatal::BeforeInit(t) => write!(f, "received request type {t} before init"),
        }
    }
}

impl From<ParseError> for Fatal {
    fn from(e: ParseError) -> Self {
        Fatal::Parse(e)
    }
}

/// errno → SSH_FX_*, as OpenSSH's errno_to_portable.
pub fn errno_to_status(errno: i32) -> u32 {
    match errno {
        0 => FX_OK,
        libc::ENOENT | libc::ENOTDIR | libc::EBADF | libc::ELOOP => FX_NO_SUCH_FILE,
        libc::EPERM | libc::EACCES | libc::EFAULT => FX_PERMISSION_DENIED,
        libc::ENAMETOOLONG | libc::EINVAL => FX_BAD_MESSAGE,
        libc::ENOSYS => FX_OP_UNSUPPORTED,
        _ => FX_FAILURE,
    }
}

/// The status texts OpenSSH's sftp-server sends.
fn status_text(status: u32) -> &'static str {
    match status {
        0 => "Success",
        1 => "End of file",
        2 => "No such file",
        3 => "Permission denied",
        4 => "Failure",
        5 => "Bad message",
        6 => "No connection",
        7 => "Connection lost",
        8 => "Operation unsupported",
        _ => "Unknown error",
    }
}

fn io_status(e: &io::Error) -> u32 {
    errno_to_status(sys::errno(e))
}

fn open_flags(pflags: u32) -> i32 {
    let mut flags = match (pflags & FXF_READ != 0, pflags & FXF_WRITE != 0) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    };
    if pflags & FXF_APPEND != 0 {
        flags |= libc::O_APPEND;
    }
    if pflags & FXF_CREAT != 0 {
        flags |= libc::O_CREAT;
    }
    if pflags & FXF_TRUNC != 0 {
        flags |= libc::O_TRUNC;
    }
    if pflags & FXF_EXCL != 0 {
        flags |= libc::O_EXCL;
    }
    flags
}

/// An offset as the kernel takes it: beyond i64::MAX lseek/pread fail with EINVAL.
fn check_offset(off: u64) -> io::Result<()> {
    if off > i64::MAX as u64 {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        Ok(())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub struct Server {
    handles: Handles,
    names: Option<Names>,
    version: u32,
    init_done: bool,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    pub fn new() -> Server {
        // Leave room for stdio and a spare descriptor, as OpenSSH's limits reply does.
        let cap = sys::nofile_limit()
            .map_or(MAX_HANDLES, |n| n.saturating_sub(5) as usize)
            .clamp(1, MAX_HANDLES);
        Server {
            handles: Handles::new(cap),
            names: None,
            version: 0,
            init_done: false,
        }
    }

    fn names(&mut self) -> &Names {
        self.names.get_or_insert_with(Names::load)
    }

    // ---- replies ----

    fn status_msg(&self, out: &mut Vec<u8>, id: u32, status: u32, msg: Option<&str>) {
        let version = self.version;
        message(out, FXP_STATUS, |o| {
            put_u32(o, id);
            put_u32(o, status);
            if version >= 3 {
                put_string(o, msg.unwrap_or(status_text(status)).as_bytes());
                put_string(o, b"");
            }
        });
    }

    fn status(&self, out: &mut Vec<u8>, id: u32, status: u32) {
        self.status_msg(out, id, status, None);
    }

    fn result(&self, out: &mut Vec<u8>, id: u32, r: io::Result<()>) {
        let status = match r {
            Ok(()) => FX_OK,
            Err(e) => io_status(&e),
        };
        self.status(out, id, status);
    }

    fn handle_reply(&self, out: &mut Vec<u8>, id: u32, handle: &[u8]) {
        message(out, FXP_HANDLE, |o| {
            put_u32(o, id);
            put_string(o, handle);
        });
    }

    fn attrs_reply(&self, out: &mut Vec<u8>, id: u32, r: io::Result<sys::Stat>) {
        match r {
            Ok(st) => message(out, FXP_ATTRS, |o| {
                put_u32(o, id);
                Attrs::from_stat(&st).encode(o);
            }),
            Err(e) => self.status(out, id, io_status(&e)),
        }
    }

    /// A NAME reply with one entry whose name and longname are both `name` (REALPATH,
    /// READLINK, expand-path, home-directory).
    fn single_name(&self, out: &mut Vec<u8>, id: u32, r: io::Result<Vec<u8>>) {
        match r {
            Ok(name) => message(out, FXP_NAME, |o| {
                put_u32(o, id);
                put_u32(o, 1);
                put_string(o, &name);
                put_string(o, &name);
                Attrs::default().encode(o);
            }),
            Err(e) => self.status(out, id, io_status(&e)),
        }
    }

    // ---- dispatch ----

    /// Serves one packet payload, appending the reply (if any) to `out`.
    pub fn process(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Fatal> {
        let req = parse(payload)?;
        if let Request::Init { version } = req {
            self.version = version;
            self.init_done = true;
            message(out, FXP_VERSION, |o| {
                put_u32(o, FILEXFER_VERSION);
                for (name, ver) in EXTENSIONS {
                    put_string(o, name.as_bytes());
                    put_string(o, ver.as_bytes());
                }
            });
            return Ok(());
        }
        if !self.init_done {
            return Err(Fatal::BeforeInit(payload.first().copied().unwrap_or(0)));
        }
        match req {
            Request::Init { .. } => {}
            Request::Open {
                id,
                path,
                pflags,
                attrs,
            } => self.open(out, id, path, pflags, attrs),
            Request::Close { id, handle } => {
                let r = match self.handles.remove(handle) {
                    None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
                    Some(Entry {
                        kind: Kind::File { file, .. },
                        ..
                    }) => sys::close(file),
                    Some(Entry {
                        kind: Kind::Dir(dir),
                        ..
                    }) => dir.close(),
                };
                self.result(out, id, r);
            }
            Request::Read {
                id,
                handle,
                offset,
                len,
            } => self.read(out, id, handle, offset, len),
            Request::Write {
                id,
                handle,
                offset,
                data,
            } => {
                let status = match self.handles.file(handle) {
                    None => FX_FAILURE,
                    Some((mut file, append)) => {
                        let r = if append {
                            file.write_all(data)
                        } else {
                            check_offset(offset).and_then(|()| file.write_all_at(data, offset))
                        };
                        r.map_or_else(|e| io_status(&e), |()| FX_OK)
                    }
                };
                self.status(out, id, status);
            }
            Request::Lstat { id, path } => self.attrs_reply(out, id, sys::lstat(path)),
            Request::Stat { id, path } => self.attrs_reply(out, id, sys::stat(path)),
            Request::Fstat { id, handle } => match self.handles.file(handle) {
                None => self.status(out, id, FX_FAILURE),
                Some((file, _)) => self.attrs_reply(out, id, sys::fstat(file)),
            },
            Request::Setstat { id, path, attrs } => {
                let status = setstat(path, &attrs);
                self.status(out, id, status);
            }
            Request::Fsetstat { id, handle, attrs } => {
                let status = match self.handles.file(handle) {
                    None => FX_FAILURE,
                    Some((file, _)) => fsetstat(file, &attrs),
                };
                self.status(out, id, status);
            }
            Request::Opendir { id, path } => match sys::Dir::open(path) {
                Err(e) => self.status(out, id, io_status(&e)),
                Ok(dir) => {
                    let entry = Entry {
                        name: path.to_vec(),
                        kind: Kind::Dir(dir),
                    };
                    match self.handles.insert(entry) {
                        Ok(h) => self.handle_reply(out, id, &h),
                        Err(_) => self.status(out, id, FX_FAILURE),
                    }
                }
            },
            Request::Readdir { id, handle } => self.readdir(out, id, handle),
            Request::Remove { id, path } => self.result(out, id, sys::unlink(path)),
            Request::Mkdir { id, path, attrs } => {
                let mode = attrs.perm.map_or(0o777, |p| p & 0o7777);
                self.result(out, id, sys::mkdir(path, mode));
            }
            Request::Rmdir { id, path } => self.result(out, id, sys::rmdir(path)),
            Request::Realpath { id, path } => {
                let path = if path.is_empty() { b"." } else { path };
                self.single_name(out, id, realpath(path));
            }
            Request::Rename { id, old, new } => {
                let status = rename(old, new);
                self.status(out, id, status);
            }
            Request::Readlink { id, path } => self.single_name(out, id, sys::readlink(path)),
            Request::Symlink { id, target, link } => {
                self.result(out, id, sys::symlink(target, link))
            }
            Request::Extended { id, request } => self.extended(out, id, request),
            Request::Unknown { kind, id } => {
                // OpenSSH logs and drops these, leaving the client waiting; the draft
                // says to answer, so we do when there is an id to answer.
                eprintln!("ssh-gateway-helper sftp-server: unknown message type {kind}");
                if let Some(id) = id {
                    self.status(out, id, FX_OP_UNSUPPORTED);
                }
            }
        }
        Ok(())
    }

    fn open(&mut self, out: &mut Vec<u8>, id: u32, path: &[u8], pflags: u32, attrs: Attrs) {
        let flags = open_flags(pflags);
        let mode = attrs.perm.unwrap_or(0o666);
        match sys::open(path, flags, mode) {
            Err(e) => self.status(out, id, io_status(&e)),
            Ok(file) => {
                let entry = Entry {
                    name: path.to_vec(),
                    kind: Kind::File {
                        file,
                        append: flags & libc::O_APPEND != 0,
                    },
                };
                match self.handles.insert(entry) {
                    Ok(h) => self.handle_reply(out, id, &h),
                    Err(_) => self.status(out, id, FX_FAILURE),
                }
            }
        }
    }

    /// READ: one pread(2) straight into the reply buffer; a short read is returned
    /// as is (the client asks again), zero bytes is EOF.
    fn read(&mut self, out: &mut Vec<u8>, id: u32, handle: &[u8], offset: u64, len: u32) {
        let Some((file, _)) = self.handles.file(handle) else {
            return self.status(out, id, FX_FAILURE);
        };
        let len = len.min(MAX_READ_LENGTH) as usize;
        if let Err(e) = check_offset(offset) {
            return self.status(out, id, io_status(&e));
        }
        let start = out.len();
        let header = 4 + 1 + 4 + 4;
        out.resize(start + header + len, 0);
        let r = if len == 0 {
            Ok(0)
        } else {
            file.read_at(&mut out[start + header..], offset)
        };
        match r {
            Err(e) => {
                out.truncate(start);
                self.status(out, id, io_status(&e));
            }
            Ok(0) if len > 0 => {
                out.truncate(start);
                self.status(out, id, FX_EOF);
            }
            Ok(n) => {
                out.truncate(start + header + n);
                let frame_len = (1 + 4 + 4 + n) as u32;
                out[start..start + 4].copy_from_slice(&frame_len.to_be_bytes());
                out[start + 4] = FXP_DATA;
                out[start + 5..start + 9].copy_from_slice(&id.to_be_bytes());
                out[start + 9..start + 13].copy_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    fn readdir(&mut self, out: &mut Vec<u8>, id: u32, handle: &[u8]) {
        let mut batch: Vec<(Vec<u8>, sys::Stat)> = Vec::new();
        {
            let Some(entry) = self.handles.get_mut(handle) else {
                return self.status(out, id, FX_FAILURE);
            };
            let Kind::Dir(dir) = &mut entry.kind else {
                return self.status(out, id, FX_FAILURE);
            };
            let dirname = &entry.name;
            while let Some((name, _ino)) = dir.next_entry() {
                let mut path = dirname.clone();
                if path != b"/" {
                    path.push(b'/');
                }
                path.extend_from_slice(&name);
                // Entries that vanished (or cannot be stat'ed) are skipped.
                let Ok(st) = sys::lstat(&path) else { continue };
                batch.push((name, st));
                if batch.len() == READDIR_BATCH {
                    break;
                }
            }
        }
        if batch.is_empty() {
            return self.status(out, id, FX_EOF);
        }
        let now = now();
        let names = self.names();
        let lines: Vec<Vec<u8>> = batch
            .iter()
            .map(|(name, st)| {
                let time = longname::format_time(sys::localtime(st.mtime), st.mtime, now);
                longname::longname(
                    name,
                    st,
                    names.user_name(st.uid),
                    names.group_name(st.gid),
                    &time,
                )
            })
            .collect();
        message(out, FXP_NAME, |o| {
            put_u32(o, id);
            put_u32(o, batch.len() as u32);
            for ((name, st), line) in batch.iter().zip(&lines) {
                put_string(o, name);
                put_string(o, line);
                Attrs::from_stat(st).encode(o);
            }
        });
    }

    fn extended(&mut self, out: &mut Vec<u8>, id: u32, request: Extended<'_>) {
        match request {
            Extended::PosixRename { old, new } => self.result(out, id, sys::rename(old, new)),
            Extended::Statvfs { path } => self.statvfs_reply(out, id, sys::statvfs(path)),
            Extended::Fstatvfs { handle } => match self.handles.file(handle) {
                None => self.status(out, id, FX_FAILURE),
                Some((file, _)) => self.statvfs_reply(out, id, sys::fstatvfs(file)),
            },
            Extended::Hardlink { old, new } => self.result(out, id, sys::link(old, new)),
            Extended::Fsync { handle } => match self.handles.file(handle) {
                None => self.status(out, id, FX_NO_SUCH_FILE),
                Some((file, _)) => self.result(out, id, sys::fsync(file)),
            },
            Extended::Lsetstat { path, attrs } => {
                let status = lsetstat(path, &attrs);
                self.status(out, id, status);
            }
            Extended::Limits => {
                let handles = self.handles.cap() as u64;
                message(out, FXP_EXTENDED_REPLY, |o| {
                    put_u32(o, id);
                    put_u64(o, MAX_MSG_LENGTH as u64);
                    put_u64(o, MAX_READ_LENGTH as u64);
                    put_u64(o, MAX_WRITE_LENGTH);
                    put_u64(o, handles);
                });
            }
            Extended::ExpandPath { path } => self.expand_path(out, id, path),
            Extended::CopyData {
                read_handle,
                read_offset,
                read_len,
                write_handle,
                write_offset,
            } => {
                let status = self.copy_data(
                    read_handle,
                    read_offset,
                    read_len,
                    write_handle,
                    write_offset,
                );
                self.status(out, id, status);
            }
            Extended::HomeDirectory { username } => {
                let home = if username.is_empty() {
                    self.own_home()
                } else {
                    self.names().user_by_name(username).map(|u| u.home.clone())
                };
                match home {
                    Some(h) => self.single_name(out, id, Ok(h)),
                    None => self.status(out, id, FX_FAILURE),
                }
            }
            Extended::UsersGroupsById { uids, gids } => {
                let names = self.names();
                let mut users = Vec::new();
                for uid in uids {
                    put_string(&mut users, names.user_name(uid).unwrap_or_default());
                }
                let mut groups = Vec::new();
                for gid in gids {
                    put_string(&mut groups, names.group_name(gid).unwrap_or_default());
                }
                // Many ids with long names could exceed what a client accepts.
                if users.len() + groups.len() + 32 > MAX_MSG_LENGTH {
                    return self.status(out, id, FX_FAILURE);
                }
                message(out, FXP_EXTENDED_REPLY, |o| {
                    put_u32(o, id);
                    put_string(o, &users);
                    put_string(o, &groups);
                });
            }
            Extended::Unknown { .. } => self.status(out, id, FX_OP_UNSUPPORTED),
        }
    }

    fn statvfs_reply(&self, out: &mut Vec<u8>, id: u32, r: io::Result<sys::StatVfs>) {
        let st = match r {
            Ok(st) => st,
            Err(e) => return self.status(out, id, io_status(&e)),
        };
        let mut flag = 0;
        if st.flag & libc::ST_RDONLY != 0 {
            flag |= 1;
        }
        if st.flag & libc::ST_NOSUID != 0 {
            flag |= 2;
        }
        message(out, FXP_EXTENDED_REPLY, |o| {
            put_u32(o, id);
            for v in [
                st.bsize, st.frsize, st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.favail,
                st.fsid, flag, st.namemax,
            ] {
                put_u64(o, v);
            }
        });
    }

    /// The helper user's home: passwd's entry for our uid, else $HOME.
    fn own_home(&mut self) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        let uid = sys::getuid();
        if let Some(u) = self.names().user(uid) {
            return Some(u.home.clone());
        }
        std::env::var_os("HOME").map(|h| h.into_vec())
    }

    /// expand-path@openssh.com: "~" and "~/..." are relative to the current directory
    /// (the session starts in the user's home), "~user/..." uses that user's home.
    fn expand_path(&mut self, out: &mut Vec<u8>, id: u32, path: &[u8]) {
        let cwd = match sys::getcwd() {
            Ok(c) => c,
            Err(e) => return self.status(out, id, io_status(&e)),
        };
        let join = |a: &[u8], b: &[u8]| [a, b"/", b].concat();
        let path: Vec<u8> = if path.is_empty() {
            b".".to_vec()
        } else if path == b"~" {
            cwd
        } else if let Some(rest) = path.strip_prefix(b"~/") {
            join(&cwd, rest)
        } else if let Some(rest) = path.strip_prefix(b"~") {
            match self.tilde_user(rest) {
                Some(p) => p,
                None => {
                    return self.status_msg(
                        out,
                        id,
                        errno_to_status(libc::ENOENT),
                        Some("no such user"),
                    );
                }
            }
        } else if path[0] != b'/' {
            join(&cwd, path)
        } else {
            path.to_vec()
        };
        self.single_name(out, id, realpath(&path));
    }

    /// "user" or "user/path" (after the '~') → home/path, as OpenSSH's tilde_expand.
    fn tilde_user(&mut self, rest: &[u8]) -> Option<Vec<u8>> {
        let (user, path) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => {
                let p = &rest[i + 1..];
                let skip = p.iter().take_while(|&&b| b == b'/').count();
                (&rest[..i], &p[skip..])
            }
            None => (rest, &b""[..]),
        };
        let home = self.names().user_by_name(user)?.home.clone();
        let mut s = home;
        if s.last() != Some(&b'/') {
            s.push(b'/');
        }
        s.extend_from_slice(path);
        (s.len() < PATH_MAX).then_some(s)
    }

    fn copy_data(
        &self,
        read_handle: &[u8],
        read_offset: u64,
        read_len: u64,
        write_handle: &[u8],
        write_offset: u64,
    ) -> u32 {
        let (Some(rentry), Some(wentry)) = (
            self.handles.get(read_handle),
            self.handles.get(write_handle),
        ) else {
            return FX_FAILURE;
        };
        let (Some((rfile, _)), Some((mut wfile, append))) = (
            self.handles.file(read_handle),
            self.handles.file(write_handle),
        ) else {
            return FX_FAILURE;
        };
        // Not the same handle, nor the same path (OpenSSH refuses both).
        if read_handle == write_handle || rentry.name == wentry.name {
            return FX_FAILURE;
        }
        if let Err(e) = check_offset(read_offset) {
            return io_status(&e);
        }
        if !append && let Err(e) = check_offset(write_offset) {
            return io_status(&e);
        }
        let until_eof = read_len == 0;
        let mut remaining = if until_eof {
            u64::MAX - read_offset
        } else {
            read_len
        };
        let (mut roff, mut woff) = (read_offset, write_offset);
        let mut buf = vec![0u8; COPY_CHUNK];
        while remaining > 0 {
            let want = remaining.min(COPY_CHUNK as u64) as usize;
            // Fill the chunk (short reads only at EOF), as OpenSSH's atomicio does.
            let mut got = 0;
            while got < want {
                match rfile.read_at(&mut buf[got..want], roff + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return io_status(&e),
                }
            }
            if got == 0 {
                return if until_eof { FX_OK } else { FX_EOF };
            }
            let r = if append {
                wfile.write_all(&buf[..got])
            } else {
                wfile.write_all_at(&buf[..got], woff)
            };
            if let Err(e) = r {
                return io_status(&e);
            }
            remaining -= got as u64;
            roff += got as u64;
            woff += got as u64;
        }
        FX_OK
    }
}

/// SETSTAT: each attribute in turn; a failure is reported but does not stop the
/// rest (the last failure wins), as in OpenSSH.
fn setstat(path: &[u8], a: &Attrs) -> u32 {
    let mut status = FX_OK;
    let mut note = |r: io::Result<()>| {
        if let Err(e) = r {
            status = io_status(&e);
        }
    };
    if let Some(size) = a.size {
        note(sys::truncate(path, size as i64));
    }
    if let Some(perm) = a.perm {
        note(sys::chmod(path, perm & 0o7777));
    }
    if let Some((atime, mtime)) = a.times {
        note(sys::utimes(path, (atime as i64, 0), (mtime as i64, 0)));
    }
    if let Some((uid, gid)) = a.uid_gid {
        note(sys::chown(path, uid, gid));
    }
    status
}

fn fsetstat(file: &std::fs::File, a: &Attrs) -> u32 {
    let mut status = FX_OK;
    let mut note = |r: io::Result<()>| {
        if let Err(e) = r {
            status = io_status(&e);
        }
    };
    if let Some(size) = a.size {
        note(sys::ftruncate(file, size as i64));
    }
    if let Some(perm) = a.perm {
        note(sys::fchmod(file, perm & 0o7777));
    }
    if let Some((atime, mtime)) = a.times {
        note(sys::futimes(file, atime as i64, mtime as i64));
    }
    if let Some((uid, gid)) = a.uid_gid {
        note(sys::fchown(file, uid, gid));
    }
    status
}

/// lsetstat@openssh.com: like SETSTAT without following a final symlink; a size
/// makes no sense for a link.
fn lsetstat(path: &[u8], a: &Attrs) -> u32 {
    if a.size.is_some() {
        return FX_BAD_MESSAGE;
    }
    let mut status = FX_OK;
    let mut note = |r: io::Result<()>| {
        if let Err(e) = r {
            status = io_status(&e);
        }
    };
    if let Some(perm) = a.perm {
        note(sys::lchmod(path, perm & 0o7777));
    }
    if let Some((atime, mtime)) = a.times {
        note(sys::lutimes(path, atime as i64, mtime as i64));
    }
    if let Some((uid, gid)) = a.uid_gid {
        note(sys::lchown(path, uid, gid));
    }
    status
}

/// RENAME with the draft's semantics as OpenSSH implements them: never replace an
/// existing target. Regular files use link+unlink (race-free); where the file system
/// has no hard links, a stat check and rename(2) instead.
fn rename(old: &[u8], new: &[u8]) -> u32 {
    let st = match sys::lstat(old) {
        Ok(st) => st,
        Err(e) => return io_status(&e),
    };
    let rename_if_absent = || {
        if sys::stat(new).is_err() {
            sys::rename(old, new).map_or_else(|e| io_status(&e), |()| FX_OK)
        } else {
            FX_FAILURE
        }
    };
    if st.is_reg() {
        match sys::link(old, new) {
            Ok(()) => match sys::unlink(old) {
                Ok(()) => FX_OK,
                Err(e) => {
                    let _ = sys::unlink(new);
                    io_status(&e)
                }
            },
            Err(e) => match sys::errno(&e) {
                libc::EOPNOTSUPP | libc::ENOSYS | libc::EXDEV | libc::EPERM => rename_if_absent(),
                _ => io_status(&e),
            },
        }
    } else {
        rename_if_absent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_matches_openssh() {
        assert_eq!(errno_to_status(libc::ENOENT), FX_NO_SUCH_FILE);
        assert_eq!(errno_to_status(libc::ELOOP), FX_NO_SUCH_FILE);
        assert_eq!(errno_to_status(libc::EACCES), FX_PERMISSION_DENIED);
        assert_eq!(errno_to_status(libc::EINVAL), FX_BAD_MESSAGE);
        assert_eq!(errno_to_status(libc::ENOSYS), FX_OP_UNSUPPORTED);
        assert_eq!(errno_to_status(libc::EEXIST), FX_FAILURE);
        assert_eq!(errno_to_status(libc::ENOTEMPTY), FX_FAILURE);
    }

    #[test]
    fn open_flags_follow_the_portable_bits() {
        assert_eq!(open_flags(0), libc::O_RDONLY);
        assert_eq!(
            open_flags(FXF_WRITE | FXF_CREAT | FXF_TRUNC),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC
        );
        assert_eq!(open_flags(FXF_READ | FXF_WRITE), libc::O_RDWR);
    }

    #[test]
    fn requests_before_init_are_fatal() {
        let mut s = Server::new();
        let mut out = Vec::new();
        assert!(matches!(
            s.process(&[FXP_STAT, 0, 0, 0, 1, 0, 0, 0, 1, b'.'], &mut out),
            Err(Fatal::BeforeInit(FXP_STAT))
        ));
    }
}
