//! scp, sftp and rsync into pods whose image has no OpenSSH: the gateway places its
//! in-workload helper there. Pods are chrooted into a busybox root (see
//! support::images and kube-emulator's rootfs module) and run as uid 1000, so the
//! image has nothing but `/bin/sh` and busybox's utilities.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::kube::KubeGateway;
use support::{images, random_file, run, sha256_file, stderr, stdout};

/// A Running pod of the minimal image, for sandbox `id` owned by alice, as uid 1000
/// with HOME=/home/user. `annotations` and `security` add to the defaults.
fn minimal_pod(gw: &KubeGateway, id: &str, root: &Path, annotations: Value, security: Value) {
    let mut all = json!({
        "ssh-gateway.io/owner": "alice",
        "kube-emulator/root": root.display().to_string(),
        "kube-emulator/home-path": "/home/user",
    });
    merge(&mut all, annotations);
    let mut ctx = json!({"runAsUser": 1000, "runAsGroup": 1000});
    merge(&mut ctx, security);
    gw.emu.create_pod(
        "default",
        json!({
            "metadata": {"name": format!("pod-{id}"), "labels": {"ssh-gateway.io/sandbox": id}, "annotations": all},
            "spec": {"containers": [{"name": "main", "image": "busybox:minimal", "securityContext": ctx}]},
        }),
    );
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn ssh(gw: &KubeGateway, id: &str, command: &str) -> std::process::Output {
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args([&format!("{id}@127.0.0.1"), command]);
    run(cmd)
}

fn scp(gw: &KubeGateway, args: &[&str]) -> std::process::Output {
    let mut cmd = gw.scp(&gw.alice);
    cmd.args(args);
    run(cmd)
}

fn sftp_batch(gw: &KubeGateway, id: &str, batch: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch");
    std::fs::write(&file, batch).unwrap();
    let mut cmd = gw.sftp(&gw.alice);
    cmd.arg("-b").arg(&file).arg(format!("{id}@127.0.0.1"));
    run(cmd)
}

/// The pod's own directories on the host: HOME, /tmp.
fn home_of(gw: &KubeGateway, id: &str) -> PathBuf {
    gw.emu.pod_dir("default", &format!("pod-{id}"))
}

fn tmp_of(gw: &KubeGateway, id: &str) -> PathBuf {
    let home = home_of(gw, id);
    home.parent().unwrap().join(format!(".pod-{id}.tmp"))
}

/// Every placed copy of the helper under `dir`.
fn copies_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "helper") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn scp_and_sftp_work_in_an_image_without_openssh() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    // The image really has none of it.
    let out = ssh(
        &gw,
        "mini",
        "command -v scp sftp-server rsync bash; ls /usr/lib/openssh 2>&1; id -u",
    );
    assert_eq!(
        stdout(&out).lines().last(),
        Some("1000"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("/scp"), "{}", stdout(&out));

    let local = tempfile::tempdir().unwrap();
    let up = local.path().join("up.bin");
    random_file(&up, 100 * 1024 * 1024);
    let sum = sha256_file(&up);
    // SFTP mode (OpenSSH's default), up and down.
    let out = scp(&gw, &[up.to_str().unwrap(), "mini@127.0.0.1:up.bin"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(sha256_file(&home_of(&gw, "mini").join("up.bin")), sum);
    let down = local.path().join("down.bin");
    let out = scp(&gw, &["mini@127.0.0.1:up.bin", down.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&down), sum);
    // Legacy scp (`-O`), up and down.
    let out = scp(
        &gw,
        &["-O", up.to_str().unwrap(), "mini@127.0.0.1:legacy.bin"],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(sha256_file(&home_of(&gw, "mini").join("legacy.bin")), sum);
    let down_legacy = local.path().join("down-legacy.bin");
    let out = scp(
        &gw,
        &[
            "-O",
            "mini@127.0.0.1:legacy.bin",
            down_legacy.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&down_legacy), sum);

    // One copy, in $HOME/.cache, private to the container user.
    let copies = copies_under(&home_of(&gw, "mini").join(".cache/ssh-gateway"));
    assert_eq!(copies.len(), 1, "{copies:?}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&copies[0]).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), 1000);
    assert_eq!(gw.log().matches("helper placed").count(), 1, "{}", gw.log());
}

#[test]
fn sftp_batch_and_scp_tree_with_modes_and_times() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    std::fs::write(l.join("a.txt"), "alpha\n").unwrap();
    random_file(&l.join("big.bin"), 3 * 1024 * 1024);
    // A partial copy for reput, and a partial local one for reget.
    let big = std::fs::read(l.join("big.bin")).unwrap();
    std::fs::write(home_of(&gw, "mini").join("resume.bin"), &big[..1024 * 1024]).unwrap();
    std::fs::write(l.join("reget.bin"), &big[..512 * 1024]).unwrap();
    std::fs::write(home_of(&gw, "mini").join("remote-big.bin"), &big).unwrap();
    std::os::unix::fs::chown(
        home_of(&gw, "mini").join("resume.bin"),
        Some(1000),
        Some(1000),
    )
    .unwrap();
    let batch = format!(
        "put {a} a.txt\nmkdir d\nrename a.txt d/b.txt\nls -l d\nsymlink d/b.txt link\nchmod 640 d/b.txt\n\
         df -h .\nreput {big} resume.bin\nreget remote-big.bin {reget}\nget d/b.txt {back}\nrm link\nls\n",
        a = l.join("a.txt").display(),
        big = l.join("big.bin").display(),
        reget = l.join("reget.bin").display(),
        back = l.join("back.txt").display(),
    );
    let out = sftp_batch(&gw, "mini", &batch);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        gw.log()
    );
    let listing = stdout(&out);
    assert!(
        listing.contains("-rw-") && listing.contains("b.txt"),
        "{listing}"
    );
    let home = home_of(&gw, "mini");
    assert_eq!(
        std::fs::read_to_string(home.join("d/b.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read_to_string(l.join("back.txt")).unwrap(),
        "alpha\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(home.join("d/b.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert!(!home.join("link").exists());
    assert_eq!(
        sha256_file(&home.join("resume.bin")),
        sha256_file(&l.join("big.bin"))
    );
    assert_eq!(
        sha256_file(&l.join("reget.bin")),
        sha256_file(&l.join("big.bin"))
    );

    // scp -r -p keeps modes and times, both ways, in both protocols.
    let tree = l.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/x.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        tree.join("sub/x.sh"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    std::fs::write(tree.join("y.txt"), "y").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for f in ["sub/x.sh", "y.txt"] {
        std::fs::File::options()
            .write(true)
            .open(tree.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    for (mode, name) in [(None, "tree-sftp"), (Some("-O"), "tree-legacy")] {
        let mut args: Vec<&str> = mode.into_iter().collect();
        let dest = format!("mini@127.0.0.1:{name}");
        args.extend(["-r", "-p", tree.to_str().unwrap(), &dest]);
        let out = scp(&gw, &args);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let remote = home.join(name);
        let meta = std::fs::metadata(remote.join("sub/x.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o751, "{name}");
        assert_eq!(meta.modified().unwrap(), old, "{name}");
        assert_eq!(std::fs::read(remote.join("y.txt")).unwrap(), b"y");
        let back = l.join(format!("{name}-back"));
        let mut args: Vec<&str> = mode.into_iter().collect();
        args.extend(["-r", "-p", &dest, back.to_str().unwrap()]);
        let out = scp(&gw, &args);
        assert!(out.status.success(), "{name} back: {}", stderr(&out));
        let meta = std::fs::metadata(back.join("sub/x.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o751, "{name} back");
        assert_eq!(meta.modified().unwrap(), old, "{name} back");
    }
}

#[test]
fn read_only_root_uses_home_and_read_only_home_falls_back_to_tmp() {
    let gw = KubeGateway::start(&["default"], None);
    let root = images::busybox();
    minimal_pod(
        &gw,
        "rofs",
        &root,
        json!({}),
        json!({"readOnlyRootFilesystem": true}),
    );
    minimal_pod(
        &gw,
        "rohome",
        &root,
        json!({"kube-emulator/home": "readonly"}),
        json!({}),
    );
    for id in ["rofs", "rohome"] {
        let out = sftp_batch(&gw, id, "ls -la /\n");
        assert!(out.status.success(), "{id}: {}\n{}", stderr(&out), gw.log());
    }
    assert_eq!(copies_under(&home_of(&gw, "rofs")).len(), 1);
    assert_eq!(copies_under(&home_of(&gw, "rohome")).len(), 0);
    let in_tmp = copies_under(&tmp_of(&gw, "rohome"));
    assert_eq!(in_tmp.len(), 1);
    assert!(
        in_tmp[0].to_string_lossy().contains("ssh-gateway-1000/"),
        "{in_tmp:?}"
    );
}

#[test]
fn no_writable_executable_place_gets_one_clear_message() {
    let gw = KubeGateway::start(&["default"], None);
    // HOME read-only, /tmp noexec, /dev/shm noexec (as runtimes mount it).
    minimal_pod(
        &gw,
        "sealed",
        &images::busybox(),
        json!({"kube-emulator/home": "readonly", "kube-emulator/tmp": "noexec"}),
        json!({}),
    );
    let out = sftp_batch(&gw, "sealed", "ls\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no place to put its file-transfer helper"),
        "{err}"
    );
    for place in [
        "/home/user/.cache/ssh-gateway: cannot create it",
        "/tmp/ssh-gateway-1000: cannot run programs there (mounted noexec)",
        "/dev/shm/ssh-gateway-1000: cannot run programs there",
    ] {
        assert!(err.contains(place), "{place} missing from: {err}");
    }
    assert!(err.contains("[sftp] helper_dir"), "{err}");
    // Legacy scp gets the same explanation.
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f");
    std::fs::write(&f, "x").unwrap();
    let out = scp(&gw, &["-O", f.to_str().unwrap(), "sealed@127.0.0.1:f"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no place to put its file-transfer helper"),
        "{}",
        stderr(&out)
    );
}

/// `ssh -A` where the helper cannot be placed: the session still runs, without
/// SSH_AUTH_SOCK, and the user reads one line saying why.
#[test]
fn agent_forwarding_that_cannot_start_leaves_the_session_running() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(
        &gw,
        "sealed",
        &images::busybox(),
        json!({"kube-emulator/home": "readonly", "kube-emulator/tmp": "noexec"}),
        json!({}),
    );
    let agent = support::agent::Agent::start();
    let mut cmd = agent.forwarding(&gw.ssh(&gw.alice));
    cmd.args(["sealed@127.0.0.1", "echo \"ran [${SSH_AUTH_SOCK-unset}]\""]);
    let out = run(cmd);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out), "ran [unset]\n");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("ssh-gateway: agent forwarding is not available here: ")
            && err.contains("no place to put its file-transfer helper"),
        "{err}"
    );
}

#[test]
fn a_configured_directory_is_used_when_home_and_tmp_will_not_do() {
    let gw = KubeGateway::start_with(
        &["default"],
        None,
        "[sftp]\nhelper_dir = \"/data/ssh-gateway\"\n",
    );
    minimal_pod(
        &gw,
        "vol",
        &images::busybox(),
        json!({"kube-emulator/home": "readonly", "kube-emulator/tmp": "noexec", "kube-emulator/volumes": "/data"}),
        json!({}),
    );
    let out = sftp_batch(&gw, "vol", "ls /\n");
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    let volume = home_of(&gw, "vol").parent().unwrap().join(".pod-vol.vol0");
    assert_eq!(copies_under(&volume).len(), 1);
}

#[test]
fn another_architecture_is_refused_with_a_reason() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(
        &gw,
        "arm",
        &images::busybox(),
        json!({"kube-emulator/personality": "linux32"}),
        json!({}),
    );
    let out = sftp_batch(&gw, "arm", "ls\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("runs on i686"), "{err}");
    assert!(
        err.contains(&format!("helper for {} only", std::env::consts::ARCH)),
        "{err}"
    );
    assert!(copies_under(&home_of(&gw, "arm")).is_empty());
}

#[test]
fn rsync_without_rsync_in_the_image_says_so() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("f"), "x").unwrap();
    let mut cmd = Command::new("rsync");
    cmd.arg("-e").arg(format!(
        "ssh {} -p {}",
        support::Gateway::client_opts_for(&gw.alice.private).join(" "),
        gw.ssh_port
    ));
    cmd.arg(local.path().join("f")).arg("mini@127.0.0.1:f");
    let out = run(cmd);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("rsync is not installed in this sandbox"),
        "{err}"
    );
    assert!(err.contains("scp or sftp"), "{err}");
}

#[test]
fn an_image_with_its_own_sftp_server_keeps_it_under_auto() {
    let gw = KubeGateway::start(&["default"], None);
    // A pod on the host's filesystem, which has OpenSSH's sftp-server.
    let (labels, annotations) = support::kube::sandbox("full", "alice");
    gw.emu.pod("default", "pod-full", labels, annotations);
    let out = sftp_batch(&gw, "full", "ls -l\n");
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert!(copies_under(&home_of(&gw, "full")).is_empty());
    assert!(!gw.log().contains("helper placed"));
}

#[test]
fn five_simultaneous_first_connections_share_one_placement() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    let local = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..5)
        .map(|i| {
            let f = local.path().join(format!("f{i}"));
            random_file(&f, 4 * 1024 * 1024 + i);
            f
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut cmd = gw.scp(&gw.alice);
            cmd.arg(f).arg(format!("mini@127.0.0.1:f{i}"));
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sha256_file(&home_of(&gw, "mini").join(format!("f{i}"))),
            sha256_file(&files[i])
        );
    }
    assert_eq!(copies_under(&home_of(&gw, "mini")).len(), 1);
    assert_eq!(gw.log().matches("helper placed").count(), 1, "{}", gw.log());
}

/// Two independent SFTP client implementations, as scripts and IDE plugins use them.
#[test]
fn paramiko_and_asyncssh_sftp_clients() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src.bin");
    random_file(&src, 5 * 1024 * 1024 + 3);
    let paramiko = r#"
import sys, paramiko
port, key, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", port=port, username="mini", key_filename=key, look_for_keys=False, allow_agent=False)
s = c.open_sftp()
s.put(src, "p.bin")
s.mkdir("pdir")
s.rename("p.bin", "pdir/p.bin")
print(sorted(s.listdir("pdir")), s.stat("pdir/p.bin").st_size)
s.get("pdir/p.bin", dst)
s.chmod("pdir/p.bin", 0o600)
print(oct(s.stat("pdir/p.bin").st_mode & 0o777), s.normalize("."))
c.close()
"#;
    let asyncssh = r#"
import sys, asyncio, asyncssh
port, key, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
async def main():
    async with asyncssh.connect("127.0.0.1", port=port, username="mini", client_keys=[key], known_hosts=None) as conn:
        async with conn.start_sftp_client() as s:
            await s.put(src, "a.bin")
            await s.makedirs("adir/deep")
            await s.rename("a.bin", "adir/deep/a.bin")
            print(sorted(await s.listdir("adir/deep")), (await s.stat("adir/deep/a.bin")).size)
            await s.get("adir/deep/a.bin", dst)
            await s.symlink("adir/deep/a.bin", "alink")
            print(await s.readlink("alink"), await s.realpath("."))
asyncio.run(main())
"#;
    let size = (5 * 1024 * 1024 + 3).to_string();
    for (name, script, listed) in [
        ("paramiko", paramiko, "['p.bin']"),
        // asyncssh lists . and .. as OpenSSH's server sends them; paramiko drops them.
        ("asyncssh", asyncssh, "['.', '..', 'a.bin']"),
    ] {
        let dst = local.path().join(format!("{name}.bin"));
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-W", "ignore", "-c", script])
            .arg(gw.ssh_port.to_string())
            .arg(&gw.alice.private)
            .arg(&src)
            .arg(&dst);
        let out = run(cmd);
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            stderr(&out),
            gw.log()
        );
        let printed = stdout(&out);
        assert!(
            printed.contains(&format!("{listed} {size}")),
            "{name}: {printed}"
        );
        assert_eq!(sha256_file(&dst), sha256_file(&src), "{name}");
        if name == "paramiko" {
            assert!(printed.contains("0o600 /home/user"), "{printed}");
        } else {
            assert!(printed.contains("adir/deep/a.bin /home/user"), "{printed}");
        }
    }
}

#[test]
fn server_workload_never_places_the_helper() {
    let gw = KubeGateway::start_with(&["default"], None, "[sftp]\nserver = \"workload\"\n");
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    let out = sftp_batch(&gw, "mini", "ls\n");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("this sandbox has no sftp-server"),
        "{}",
        stderr(&out)
    );
    assert!(copies_under(&home_of(&gw, "mini")).is_empty());
}

/// Garbage on the SFTP channel ends that channel with the helper's error; the gateway
/// and the next transfer are unaffected.
#[test]
fn malformed_sftp_packets_end_only_their_channel() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    // SSH_FXP_INIT v3, then a packet claiming 16 MiB.
    let mut garbage = vec![0, 0, 0, 5, 1, 0, 0, 0, 3];
    garbage.extend_from_slice(&[0x01, 0x00, 0x00, 0x00, 0x11, 0xff, 0xff]);
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["-s", "mini@127.0.0.1", "sftp"]);
    let out = support::run_with_input(cmd, &garbage);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ssh-gateway-helper"),
        "{}",
        stderr(&out)
    );
    let out = sftp_batch(&gw, "mini", "mkdir after\nls\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("after"));
}

/// A client that stops reading mid-download stalls its own transfer only; when it
/// reads again the file arrives intact.
#[test]
fn a_stalled_download_stalls_only_itself() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    // 1 GiB, sparse (instant to make): far more than one stall's worth of windows
    // and buffers, so the client is stopped long before the end.
    const SIZE: u64 = 1024 * 1024 * 1024;
    let big = home_of(&gw, "mini").join("big.bin");
    std::fs::File::create(&big).unwrap().set_len(SIZE).unwrap();
    let local = tempfile::tempdir().unwrap();
    let dest = local.path().join("big.bin");
    let mut cmd = gw.scp(&gw.alice);
    cmd.arg("mini@127.0.0.1:big.bin").arg(&dest);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Stop the client once the download is under way.
    let started = support::process::wait_until(std::time::Duration::from_secs(60), || {
        std::fs::metadata(&dest).is_ok_and(|m| m.len() > 0)
    });
    assert!(started, "the download never started: {}", gw.log());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stalled_at = std::fs::metadata(&dest).unwrap().len();
    // Meanwhile other connections to the same pod work, through the helper too.
    for i in 0..3 {
        let out = sftp_batch(&gw, "mini", &format!("mkdir meanwhile{i}\n"));
        assert!(out.status.success(), "{}", stderr(&out));
        let out = ssh(&gw, "mini", "echo alive");
        assert_eq!(stdout(&out), "alive\n");
    }
    assert!(home_of(&gw, "mini").join("meanwhile2").is_dir());
    let now = std::fs::metadata(&dest).unwrap().len();
    assert!(now < SIZE, "stalled at {stalled_at}, now {now}");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same = Command::new("cmp").arg(&big).arg(&dest).status().unwrap();
    assert!(same.success(), "the resumed download differs");
}

/// What an attacker (or an unlucky user) tries through the helper, with a second SFTP
/// implementation as the client: names with newlines and control bytes, `..` and a
/// symlink leading out of HOME (allowed exactly as OpenSSH's sftp-server allows them:
/// the kernel's permissions decide), and a 4 GiB sparse file read at its end.
#[test]
fn odd_names_paths_outside_home_and_a_4_gib_sparse_file() {
    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "mini", &images::busybox(), json!({}), json!({}));
    let home = home_of(&gw, "mini");
    let sparse = home.join("sparse.bin");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(4 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"tail!", (4 << 30) - 5).unwrap();
    let script = r#"
import sys, paramiko
port, key = int(sys.argv[1]), sys.argv[2]
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", port=port, username="mini", key_filename=key, look_for_keys=False, allow_agent=False)
s = c.open_sftp()
odd = "line\nbreak\x01\x1b[31m"
with s.open(odd, "w") as f:
    f.write("odd")
print(repr(odd in s.listdir(".")))
print(s.open("../../etc/passwd").read().decode().splitlines()[0])
s.symlink("/etc/group", "out")
print(s.open("out").read().decode().splitlines()[0])
try:
    s.open("/root/secret", "w")
    print("wrote into /root")
except IOError as e:
    print("refused:", e)
print(s.stat("sparse.bin").st_size)
with s.open("sparse.bin") as f:
    f.seek((4 << 30) - 5)
    print(f.read(5).decode())
c.close()
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-W", "ignore", "-c", script])
        .arg(gw.ssh_port.to_string())
        .arg(&gw.alice.private);
    let out = run(cmd);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(
        stdout(&out),
        "True\nroot:x:0:0:root:/root:/bin/sh\nroot:x:0:\nrefused: [Errno 13] Permission denied\n4294967296\ntail!\n"
    );
    assert_eq!(
        std::fs::read(home.join("line\nbreak\x01\x1b[31m")).unwrap(),
        b"odd"
    );
}

/// `ssh -L LOCAL.sock:/home/user/app.sock` into a pod whose image has no OpenSSH: the
/// Kubernetes port-forward API carries only TCP, so the helper relays the pod's Unix
/// socket over exec, both ways and half-closed as a socket is.
#[test]
fn a_unix_socket_in_a_pod_without_openssh_is_forwarded() {
    use std::process::Stdio;
    use std::time::Duration;

    let gw = KubeGateway::start(&["default"], None);
    minimal_pod(&gw, "sock", &images::busybox(), json!({}), json!({}));
    let at = home_of(&gw, "sock").join("app.sock");
    // The pod runs as uid 1000; connecting takes write permission on the socket.
    support::forward::unix_echo(&at, 0o777);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.sock");
    let mut cmd = gw.ssh(&gw.alice);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("{}:/home/user/app.sock", local.display()))
        .arg("sock@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut ssh = cmd.spawn().unwrap();
    assert!(
        support::process::wait_until(Duration::from_secs(20), || local.exists()),
        "ssh did not listen: {}",
        gw.log()
    );
    let got = support::forward::unix_exchange(&local, b"one\n");
    let _ = ssh.kill();
    let _ = ssh.wait();
    assert_eq!(got.ok().as_deref(), Some("pong:one\nbye\n"), "{}", gw.log());
}
