//! Image roots for emulator pods that look like minimal images (see kube-emulator's
//! rootfs module): a busybox tree with nothing but `/bin/sh` and busybox's utilities —
//! no OpenSSH (sftp-server, scp), no rsync, no bash, no libc. That is stricter than a
//! `pytorch/pytorch` runtime image (Ubuntu with coreutils and bash but no OpenSSH):
//! what works here works there. Built once per target directory and shared by tests.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The busybox image, as `uname -m` on this machine reports itself.
pub fn busybox() -> PathBuf {
    build("busybox")
}

fn build(name: &str) -> PathBuf {
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    let root = images.join(name);
    if root.join(".complete").exists() {
        return root;
    }
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "tests of minimal images need a static busybox: apt-get install busybox-static"
    );
    std::fs::create_dir_all(&images).unwrap();
    // Tests run on threads of one process: the staging name must differ per build.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = images.join(format!(".{name}.{}.{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    for dir in [
        "bin",
        "etc",
        "proc",
        "dev",
        "tmp",
        "root",
        "home/user",
        "data",
        "var/tmp",
    ] {
        std::fs::create_dir_all(staging.join(dir)).unwrap();
    }
    std::fs::set_permissions(staging.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(staging.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(busybox, staging.join("bin/busybox")).unwrap();
    let applets = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8(applets.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            symlink("busybox", staging.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::create_dir_all(staging.join("usr")).unwrap();
    symlink("../bin", staging.join("usr/bin")).unwrap();
    std::fs::write(
        staging.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:Training User:/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(staging.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    std::fs::write(staging.join(".complete"), "").unwrap();
    // Another test may have finished the same image meanwhile; either copy will do.
    if std::fs::rename(&staging, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    root
}
