//! Builds the in-workload helper (crates/helper) as a static binary and embeds it, so a
//! plain `cargo build` yields one gateway binary that can serve scp and sftp in images
//! without OpenSSH.
//!
//! A nested `cargo build` of the helper package runs with its own target directory
//! (`target/helper`) — the outer build holds the lock on the main one — for each target
//! in `SSH_GATEWAY_HELPER_TARGETS` (default `x86_64-unknown-linux-gnu`). With an explicit
//! `--target`, the crt-static flag applies only to the helper, not to build scripts.
//! The generated `helpers.rs` lists each binary with its architecture (as `uname -m`
//! names it) and SHA-256.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const DEFAULT_TARGETS: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-changed=crates/helper/src");
    println!("cargo:rerun-if-changed=crates/helper/Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=SSH_GATEWAY_HELPER_TARGETS");

    let out_dir = PathBuf::from(env("OUT_DIR"));
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let helper_target_dir = target_dir(&out_dir).join("helper");
    let targets =
        std::env::var("SSH_GATEWAY_HELPER_TARGETS").unwrap_or_else(|_| DEFAULT_TARGETS.to_owned());

    let host = env("HOST");
    let mut version_line = None;
    let mut generated = String::from("pub static EMBEDDED: &[Embedded] = &[\n");
    for target in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let binary = build_helper(&manifest_dir, &helper_target_dir, target);
        if target == host {
            version_line = Some(version_of(&binary));
        }
        let bytes =
            std::fs::read(&binary).unwrap_or_else(|e| panic!("reading {}: {e}", binary.display()));
        let sha256 = hex(&Sha256::digest(&bytes));
        let arch = uname_arch(target);
        let copy = out_dir.join(format!("ssh-gateway-helper-{arch}"));
        std::fs::write(&copy, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", copy.display()));
        writeln!(
            generated,
            "    Embedded {{ arch: {arch:?}, sha256: {sha256:?}, bytes: include_bytes!({copy:?}) }},",
            copy = copy.display().to_string(),
        )
        .expect("formatting into a String");
    }
    generated.push_str("];\n");
    // What `helper version` prints: how a placed copy proves it runs and is this one's
    // kind. Every embedded binary comes from the same source, so the host's answer
    // holds for all of them.
    let version_line = version_line.unwrap_or_else(|| {
        panic!("SSH_GATEWAY_HELPER_TARGETS must include the build host ({host})")
    });
    writeln!(
        generated,
        "pub static VERSION_LINE: &str = {version_line:?};"
    )
    .expect("formatting into a String");
    std::fs::write(out_dir.join("helpers.rs"), generated).expect("writing helpers.rs");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

/// `OUT_DIR` is `<target>/<profile>/build/<pkg>-<hash>/out`; the helper shares one
/// build directory under `<target>` across profiles, so test, clippy and debug builds
/// do not each rebuild it.
fn target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("helper-target"))
}

fn build_helper(manifest_dir: &Path, target_dir: &Path, target: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir)
        .args(["build", "--locked", "--quiet", "--package", "sgw-helper"])
        .args(["--bin", "ssh-gateway-helper", "--profile", "helper"])
        .args(["--target", target])
        .arg("--target-dir")
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    // What the outer build sets for its own compiler must not leak into this one
    // (clippy's wrapper, coverage flags, a build target).
    for var in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build the helper: {e}"));
    assert!(
        status.success(),
        "building the in-workload helper (crates/helper) for {target} failed: {status}"
    );
    target_dir
        .join(target)
        .join("helper")
        .join("ssh-gateway-helper")
}

fn version_of(binary: &Path) -> String {
    let out = Command::new(binary)
        .arg("version")
        .output()
        .unwrap_or_else(|e| panic!("running {} version: {e}", binary.display()));
    assert!(out.status.success(), "{} version failed", binary.display());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The architecture name `uname -m` prints on a machine of this Rust target.
fn uname_arch(target: &str) -> &str {
    target.split('-').next().unwrap_or(target)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
