//! Thin wrappers over the system calls the helper needs, taking paths as raw bytes.
//!
//! Paths on the wire are bytes, never required to be UTF-8, so everything here takes
//! `&[u8]`. The calls mirror what OpenSSH's sftp-server and scp make (open with the
//! client's flags and mode, link, utimes, ...), which std does not always expose with
//! the same semantics (e.g. `OpenOptions` refuses O_CREAT without write access).
//!
//! Nothing here may touch NSS: the binary is static, and glibc's getpw*/getgr* would
//! try to dlopen modules that do not exist in a foreign container.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A path as a C string. Wire parsing already refuses embedded NULs (as OpenSSH's
/// sshbuf_get_cstring does); a NUL that slips through is an invalid argument.
pub fn cpath(path: &[u8]) -> io::Result<CString> {
    CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The errno of an error (EIO for the rare std error that carries none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The C library's text for an errno, as OpenSSH prints it with strerror(3).
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: the XSI strerror_r writes a NUL-terminated string into buf (at most its
    // length) and returns non-zero on failure.
    let ret = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if ret != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: on success buf holds a NUL-terminated string.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The fields of `struct stat` the helper uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: i64,
    pub atime: i64,
    pub mtime: i64,
    pub blksize: i64,
}

impl Stat {
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size,
            atime: st.st_atime,
            mtime: st.st_mtime,
            blksize: st.st_blksize,
        }
    }
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    pub fn is_lnk(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

fn stat_with(
    path: &[u8],
    f: unsafe extern "C" fn(*const libc::c_char, *mut libc::stat) -> libc::c_int,
) -> io::Result<Stat> {
    let c = cpath(path)?;
    // SAFETY: zeroed is a valid `struct stat`; f fills it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out pointer.
    check(unsafe { f(c.as_ptr(), &mut st) })?;
    Ok(Stat::from_raw(&st))
}

pub fn stat(path: &[u8]) -> io::Result<Stat> {
    stat_with(path, libc::stat)
}

pub fn lstat(path: &[u8]) -> io::Result<Stat> {
    stat_with(path, libc::lstat)
}

pub fn fstat(fd: &impl AsRawFd) -> io::Result<Stat> {
    // SAFETY: as in stat_with.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a file descriptor we own, valid out pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(Stat::from_raw(&st))
}

/// open(2) with exactly the flags and mode given (O_CLOEXEC added: nothing is exec'd,
/// but a descriptor should never leak).
pub fn open(path: &[u8], flags: i32, mode: u32) -> io::Result<File> {
    let c = cpath(path)?;
    // SAFETY: c is a valid C string; the mode is passed as the variadic argument.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// close(2) reporting its error, which dropping a File would swallow.
pub fn close(file: File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: we own fd (taken out of the File) and close it exactly once.
    check(unsafe { libc::close(fd) })
}

macro_rules! path_call {
    ($(#[$m:meta])* $name:ident($($arg:ident: $ty:ty),*) => $call:expr) => {
        $(#[$m])*
        pub fn $name(path: &[u8] $(, $arg: $ty)*) -> io::Result<()> {
            let p = cpath(path)?;
            let p = p.as_ptr();
            // SAFETY: p is a valid C string for the duration of the call.
            check(unsafe { $call(p $(, $arg)*) })
        }
    };
}

macro_rules! two_path_call {
    ($name:ident => $call:expr) => {
        pub fn $name(a: &[u8], b: &[u8]) -> io::Result<()> {
            let (a, b) = (cpath(a)?, cpath(b)?);
            // SAFETY: both are valid C strings for the duration of the call.
            check(unsafe { $call(a.as_ptr(), b.as_ptr()) })
        }
    };
}

path_call!(unlink() => libc::unlink);
path_call!(rmdir() => libc::rmdir);
path_call!(chdir() => libc::chdir);
path_call!(mkdir(mode: libc::mode_t) => libc::mkdir);
path_call!(chmod(mode: libc::mode_t) => libc::chmod);
path_call!(chown(uid: libc::uid_t, gid: libc::gid_t) => libc::chown);
path_call!(truncate(size: libc::off_t) => libc::truncate);
two_path_call!(link => libc::link);
two_path_call!(symlink => libc::symlink);
two_path_call!(rename => libc::rename);

fn timevals(atime: (i64, i64), mtime: (i64, i64)) -> [libc::timeval; 2] {
    [
        libc::timeval {
            tv_sec: atime.0,
            tv_usec: atime.1,
        },
        libc::timeval {
            tv_sec: mtime.0,
            tv_usec: mtime.1,
        },
    ]
}

/// utimes(2): (seconds, microseconds) for access and modification time.
pub fn utimes(path: &[u8], atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cpath(path)?;
    let tv = timevals(atime, mtime);
    // SAFETY: valid C string and a pointer to two timevals.
    check(unsafe { libc::utimes(c.as_ptr(), tv.as_ptr()) })
}

pub fn futimes(fd: &impl AsRawFd, atime: i64, mtime: i64) -> io::Result<()> {
    let tv = timevals((atime, 0), (mtime, 0));
    // SAFETY: an owned descriptor and a pointer to two timevals.
    check(unsafe { libc::futimes(fd.as_raw_fd(), tv.as_ptr()) })
}

pub fn fchmod(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an owned descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

pub fn fchown(fd: &impl AsRawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an owned descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub fn ftruncate(fd: &impl AsRawFd, size: i64) -> io::Result<()> {
    // SAFETY: plain syscall on an owned descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })
}

pub fn fsync(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain syscall on an owned descriptor.
    check(unsafe { libc::fsync(fd.as_raw_fd()) })
}

/// The *at(2) calls that do not follow a final symlink (lsetstat@openssh.com).
pub fn lchmod(path: &[u8], mode: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW) })
}

pub fn lchown(path: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe {
        libc::fchownat(
            libc::AT_FDCWD,
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn lutimes(path: &[u8], atime: i64, mtime: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid C string and a pointer to two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn readlink(path: &[u8]) -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    cpath(path)?;
    std::fs::read_link(std::ffi::OsStr::from_bytes(path)).map(|p| p.into_os_string().into_vec())
}

pub fn getcwd() -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::env::current_dir().map(|p| p.into_os_string().into_vec())
}

/// The subset of `struct statvfs` statvfs@openssh.com reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatVfs {
    pub bsize: u64,
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub favail: u64,
    pub fsid: u64,
    pub flag: u64,
    pub namemax: u64,
}

impl StatVfs {
    fn from_raw(st: &libc::statvfs) -> StatVfs {
        StatVfs {
            bsize: st.f_bsize,
            frsize: st.f_frsize,
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            favail: st.f_favail,
            fsid: st.f_fsid,
            flag: st.f_flag,
            namemax: st.f_namemax,
        }
    }
}

pub fn statvfs(path: &[u8]) -> io::Result<StatVfs> {
    let c = cpath(path)?;
    // SAFETY: zeroed is a valid statvfs; filled on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(StatVfs::from_raw(&st))
}

pub fn fstatvfs(fd: &impl AsRawFd) -> io::Result<StatVfs> {
    // SAFETY: as in statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: owned descriptor and out pointer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(StatVfs::from_raw(&st))
}

/// mkdtemp(3): creates a directory (mode 0700, less the umask) named `prefix` plus six
/// or more random characters (`template` ends in `XXXXXX`), and returns its path.
pub fn mkdtemp(template: &[u8]) -> io::Result<Vec<u8>> {
    let mut buf = cpath(template)?.into_bytes_with_nul();
    // SAFETY: buf is a NUL-terminated, writable buffer that mkdtemp fills in place.
    let ret = unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) };
    if ret.is_null() {
        return Err(io::Error::last_os_error());
    }
    buf.pop();
    Ok(buf)
}

/// Sets the process umask, returning the previous one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) }
}

pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// RLIMIT_NOFILE's soft limit, if known.
pub fn nofile_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == -1 {
        return None;
    }
    Some(rl.rlim_cur)
}

/// Broken-down local time, the fields `ls -l` needs. glibc's localtime_r reads TZ and
/// /etc/localtime itself (no NSS), so it is safe in a static binary; a container with
/// neither gets UTC, as OpenSSH's sftp-server would there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tm {
    pub year: i32,
    /// 0-11
    pub mon: i32,
    pub mday: i32,
    pub hour: i32,
    pub min: i32,
}

pub fn localtime(t: i64) -> Option<Tm> {
    // SAFETY: zeroed is a valid tm; localtime_r fills it or returns NULL.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a time_t and a tm.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some(Tm {
        year: tm.tm_year + 1900,
        mon: tm.tm_mon,
        mday: tm.tm_mday,
        hour: tm.tm_hour,
        min: tm.tm_min,
    })
}

/// An open directory stream (opendir/readdir rather than std's read_dir because the
/// listing must include "." and "..", as OpenSSH's does).
pub struct Dir(NonNull<libc::DIR>);

impl Dir {
    pub fn open(path: &[u8]) -> io::Result<Dir> {
        let c = cpath(path)?;
        // SAFETY: valid C string.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        NonNull::new(d)
            .map(Dir)
            .ok_or_else(io::Error::last_os_error)
    }

    /// The next entry's (name, d_ino), or None at the end (or on a read error, which
    /// readdir(3) reports the same way to OpenSSH).
    pub fn next_entry(&mut self) -> Option<(Vec<u8>, u64)> {
        // SAFETY: self.0 is an open DIR*; the returned dirent stays valid until the
        // next readdir on this stream, and we copy the name out before that.
        unsafe {
            let ent = libc::readdir(self.0.as_ptr());
            if ent.is_null() {
                return None;
            }
            let name = CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes().to_vec();
            Some((name, (*ent).d_ino))
        }
    }

    /// closedir(3), reporting its error.
    pub fn close(self) -> io::Result<()> {
        let d = self.0;
        std::mem::forget(self);
        // SAFETY: d is an open DIR* closed exactly once (Drop is skipped).
        check(unsafe { libc::closedir(d.as_ptr()) })
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: self.0 is an open DIR*, closed once here.
        unsafe {
            libc::closedir(self.0.as_ptr());
        }
    }
}

// The DIR* is only ever used by the thread that owns the Dir.
unsafe impl Send for Dir {}

/// stdin or stdout as unbuffered Read + Write that is never closed by us (the helper
/// does its own buffering, in large chunks).
pub struct StdFd(std::mem::ManuallyDrop<File>);

impl StdFd {
    fn new(fd: i32) -> StdFd {
        // SAFETY: fds 0 and 1 are open for the life of the process (the gateway or
        // sshd sets them up); ManuallyDrop keeps us from ever closing them.
        StdFd(std::mem::ManuallyDrop::new(unsafe {
            File::from_raw_fd(fd)
        }))
    }
    pub fn stdin() -> StdFd {
        StdFd::new(0)
    }
    pub fn stdout() -> StdFd {
        StdFd::new(1)
    }
}

impl io::Read for StdFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl io::Write for StdFd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_matches_the_c_library() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(strerror(libc::ENOTDIR), "Not a directory");
    }

    #[test]
    fn paths_with_nul_are_invalid() {
        assert_eq!(
            stat(b"a\0b").unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
