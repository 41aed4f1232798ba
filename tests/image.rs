//! The container image, built and run the way CI can: `buildah bud` (vfs storage)
//! of docker/ci.Containerfile, a FROM scratch stand-in for docker/Dockerfile whose
//! base images cannot be pulled here, then `buildah run --isolation chroot`. Inside
//! it, `ssh-gateway --version` answers, and a `dev` gateway runs as uid 10001 and is
//! reached by the real `ssh` from the host.

mod support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{BIN, free_port, keygen, run, stderr, stdout};

/// buildah with its own storage under `root`, so tests leave nothing behind.
fn buildah(root: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

fn copy_into(rootfs: &Path, source: &Path, at: &str) {
    let to = rootfs.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    // Follow links: the image has no other copy of what they point to.
    std::fs::copy(source, &to).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
}

/// The build context of docker/ci.Containerfile: rootfs/ and data/.
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("context");
    let rootfs = ctx.join("rootfs");
    copy_into(&rootfs, Path::new(BIN), "/usr/local/bin/ssh-gateway");
    // The shared libraries the test build links, where its loader looks for them.
    let ldd = Command::new("ldd").arg(BIN).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        copy_into(&rootfs, Path::new(lib), lib);
    }
    copy_into(
        &rootfs,
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        "/etc/ssl/certs/ca-certificates.crt",
    );
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed (.ci/run)");
    copy_into(&rootfs, Path::new(busybox), "/bin/sh");
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/sbin/nologin\nssh-gateway:x:10001:10001::/var/lib/ssh-gateway:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nssh-gateway:x:10001:\n",
    )
    .unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::set_permissions(rootfs.join("tmp"), PermissionsExt::from_mode(0o1777)).unwrap();
    std::fs::create_dir_all(ctx.join("data")).unwrap();
    std::fs::set_permissions(ctx.join("data"), PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/ci.Containerfile"),
        ctx.join("Containerfile"),
    )
    .unwrap();
    ctx
}

/// A process and its group, ended when dropped (buildah runs the command as a child).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_image_runs_the_gateway_as_its_own_user_and_ssh_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let out = run({
        let mut cmd = buildah(dir.path());
        cmd.args(["bud", "-q", "-t", "ssh-gateway-ci", "-f"])
            .arg(ctx.join("Containerfile"))
            .arg(&ctx);
        cmd
    });
    assert!(out.status.success(), "buildah bud: {}", stderr(&out));
    let inspect = run({
        let mut cmd = buildah(dir.path());
        cmd.args(["inspect", "--type", "image", "ssh-gateway-ci"]);
        cmd
    });
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let oci = &config["OCIv1"]["config"];
    assert_eq!(oci["User"], "10001:10001");
    assert_eq!(oci["Entrypoint"], serde_json::json!(["ssh-gateway"]));
    assert_eq!(
        oci["Cmd"],
        serde_json::json!(["serve", "--config", "/etc/ssh-gateway/gateway.toml"])
    );

    let from = run({
        let mut cmd = buildah(dir.path());
        cmd.args(["from", "ssh-gateway-ci"]);
        cmd
    });
    assert!(from.status.success(), "{}", stderr(&from));
    let container = stdout(&from).trim().to_owned();
    let in_image = |args: &[&str]| {
        let mut cmd = buildah(dir.path());
        cmd.args(["run", "--isolation", "chroot", &container, "--"])
            .args(args);
        cmd
    };

    let out = run(in_image(&["ssh-gateway", "--version"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ssh-gateway "), "{}", stdout(&out));

    // A dev gateway inside, on the host's network.
    let (ssh_port, api_port) = (free_port(), free_port());
    let log = dir.path().join("dev.out");
    let mut dev = in_image(&[
        "ssh-gateway",
        "dev",
        "--data-dir",
        "/var/lib/ssh-gateway/data",
        "--ssh-listen",
        &format!("127.0.0.1:{ssh_port}"),
        "--api-listen",
        &format!("127.0.0.1:{api_port}"),
    ]);
    dev.stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .process_group(0);
    let _dev = Group(dev.spawn().unwrap());
    let mut token = String::new();
    let started = support::process::wait_until(Duration::from_secs(60), || {
        let mut text = String::new();
        let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
        match text.lines().find_map(|l| l.strip_prefix("dev API token: ")) {
            Some(t) => {
                token = t.trim().to_owned();
                true
            }
            None => false,
        }
    });
    assert!(
        started,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let key = keygen(dir.path(), "user", &["-t", "ed25519"]);
    let public = std::fs::read_to_string(format!("{}.pub", key.private.display())).unwrap();
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        support::http()
            .post(format!("http://127.0.0.1:{api_port}/users/me/ssh-keys"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "host", "public_key": public.trim()}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 201);

    let mut ssh = support::client("ssh", &key, ssh_port);
    ssh.args([
        "demo@127.0.0.1",
        "echo in $PWD; while read k v rest; do [ \"$k\" = Uid: ] && echo uid=$v; done < /proc/self/status; true",
    ]);
    let out = run(ssh);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "in /var/lib/ssh-gateway/data/sandboxes/demo\nuid=10001\n",
        "{}",
        stderr(&out)
    );
}
