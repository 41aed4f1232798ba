//! Pods that look like real minimal images: a pod annotated `kube-emulator/root: <dir>`
//! runs its processes chrooted into that directory (an image's root filesystem, such
//! as a busybox or debootstrap tree), in a private mount namespace set up the way a
//! container runtime would:
//!
//! - the image root is shared by every pod using it and mounted read-only: what a
//!   container writes lives in its own places, as with a runtime's writable layer;
//! - `$HOME` (`kube-emulator/home-path`, default `/root`) is the pod's own directory,
//!   writable unless `kube-emulator/home: readonly`;
//! - `/tmp` is the pod's own, mode 1777, executable unless `kube-emulator/tmp: noexec`,
//!   and read-only when the container sets `securityContext.readOnlyRootFilesystem`
//!   (as `/tmp` is on a real read-only root with no emptyDir there);
//! - `/dev/shm` is the pod's own tmpfs-like directory, `nosuid,nodev,noexec` as
//!   containerd and Docker mount it; `/dev` and `/proc` are the host's;
//! - `kube-emulator/volumes: "/data,/scratch"` mounts a writable, executable directory
//!   of the pod's own at each path, as an emptyDir volume would be (mode 0777);
//! - `securityContext.runAsUser`/`runAsGroup` (container, then pod) set the user;
//! - `kube-emulator/personality: linux32` runs it under the kernel's 32-bit personality,
//!   so `uname -m` reports `i686`, as on a node of another architecture.
//!
//! Needs root (CAP_SYS_ADMIN for the namespace, CAP_SYS_CHROOT), as the emulator's
//! callers are in CI. Pods without the annotation run on the host filesystem as before.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Rootfs {
    root: PathBuf,
    home_inside: String,
    home_read_only: bool,
    tmp_noexec: bool,
    read_only_root: bool,
    volumes: Vec<String>,
    linux32: bool,
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Rootfs {
    /// The container's filesystem, if its pod asks for one.
    pub fn of(pod: &Value, container: &str) -> Option<Rootfs> {
        let annotations = &pod["metadata"]["annotations"];
        let root = annotations["kube-emulator/root"].as_str()?;
        let spec = pod["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container))
            .cloned()
            .unwrap_or(Value::Null);
        let security = |key: &str| {
            spec["securityContext"][key]
                .as_u64()
                .or_else(|| pod["spec"]["securityContext"][key].as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        Some(Rootfs {
            root: PathBuf::from(root),
            home_inside: annotations["kube-emulator/home-path"]
                .as_str()
                .unwrap_or("/root")
                .to_owned(),
            home_read_only: annotations["kube-emulator/home"] == "readonly",
            tmp_noexec: annotations["kube-emulator/tmp"] == "noexec",
            read_only_root: spec["securityContext"]["readOnlyRootFilesystem"] == true,
            volumes: annotations["kube-emulator/volumes"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|v| v.starts_with('/'))
                .map(str::to_owned)
                .collect(),
            linux32: annotations["kube-emulator/personality"] == "linux32",
            uid: security("runAsUser"),
            gid: security("runAsGroup"),
        })
    }

    pub fn home(&self) -> &str {
        &self.home_inside
    }

    /// Prepares the pod's own places (next to its directory) and returns what the
    /// child does between fork and exec.
    pub fn prepare(&self, pod_dir: &Path) -> io::Result<ChildSetup> {
        let parent = pod_dir.parent().unwrap_or(pod_dir);
        let name = pod_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let own = |suffix: &str| {
            let mut n = std::ffi::OsString::from(".");
            n.push(&name);
            n.push(suffix);
            parent.join(n)
        };
        let (tmp, shm) = (own(".tmp"), own(".shm"));
        for dir in [&tmp, &shm] {
            std::fs::create_dir_all(dir)?;
            set_mode(dir, 0o1777)?;
        }
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(pod_dir, Some(uid), self.gid)?;
        }
        let inside = |p: &str| self.root.join(p.trim_start_matches('/'));
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
        let mut mounts = vec![
            // The image, shared and read-only.
            Mount::bind(c(&self.root)?, c(&self.root)?, libc::MS_RDONLY),
            Mount::bind(c(Path::new("/proc"))?, c(&inside("/proc"))?, 0),
            Mount::bind(c(Path::new("/dev"))?, c(&inside("/dev"))?, 0),
            Mount::bind(
                c(&shm)?,
                c(&inside("/dev/shm"))?,
                libc::MS_NOEXEC | libc::MS_NOSUID | libc::MS_NODEV,
            ),
        ];
        if !self.read_only_root {
            let noexec = if self.tmp_noexec { libc::MS_NOEXEC } else { 0 };
            mounts.push(Mount::bind(
                c(&tmp)?,
                c(&inside("/tmp"))?,
                noexec | libc::MS_NOSUID | libc::MS_NODEV,
            ));
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            let dir = own(&format!(".vol{i}"));
            std::fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o777)?;
            mounts.push(Mount::bind(c(&dir)?, c(&inside(volume))?, 0));
        }
        let home_flags = if self.home_read_only {
            libc::MS_RDONLY
        } else {
            0
        };
        mounts.push(Mount::bind(
            c(pod_dir)?,
            c(&inside(&self.home_inside))?,
            home_flags,
        ));
        Ok(ChildSetup {
            mounts,
            root: c(&self.root)?,
            home: CString::new(self.home_inside.as_bytes()).map_err(io::Error::other)?,
            slash: CString::new("/").map_err(io::Error::other)?,
            linux32: self.linux32,
            uid: self.uid,
            gid: self.gid,
        })
    }
}

fn set_mode(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[derive(Debug)]
struct Mount {
    source: CString,
    target: CString,
    /// Applied by a remount after the bind (the kernel ignores them on the bind).
    flags: libc::c_ulong,
}

impl Mount {
    fn bind(source: CString, target: CString, flags: libc::c_ulong) -> Mount {
        Mount {
            source,
            target,
            flags,
        }
    }
}

/// Everything allocated before fork: the child only makes system calls.
#[derive(Debug)]
pub struct ChildSetup {
    mounts: Vec<Mount>,
    root: CString,
    home: CString,
    slash: CString,
    linux32: bool,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl ChildSetup {
    /// Runs in the child between fork and exec: a private mount namespace, the mounts,
    /// chroot, the user, then `$HOME` as the working directory.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: plain system calls on pointers to CStrings owned by `self`, which
        // outlives the calls; no allocation happens here.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                self.slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for m in &self.mounts {
                check(libc::mount(
                    m.source.as_ptr(),
                    m.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if m.flags != 0 {
                    check(libc::mount(
                        std::ptr::null(),
                        m.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REMOUNT | libc::MS_BIND | m.flags,
                        std::ptr::null(),
                    ))?;
                }
            }
            check(libc::chroot(self.root.as_ptr()))?;
            check(libc::chdir(self.slash.as_ptr()))?;
            if let Some(gid) = self.gid.or(self.uid) {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
            }
            if let Some(uid) = self.uid {
                check(libc::setuid(uid))?;
            }
            if self.linux32 {
                /// PER_LINUX32 from <linux/personality.h>.
                const PER_LINUX32: libc::c_ulong = 0x0008;
                if libc::personality(PER_LINUX32) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Like a runtime with an unreadable working directory: stay at /.
            let _ = libc::chdir(self.home.as_ptr());
        }
        Ok(())
    }
}
