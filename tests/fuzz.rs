//! The fuzz targets (fuzz/fuzz_targets/) build and run, on the stable toolchain CI
//! has: the coverage instrumentation cargo-fuzz asks rustc for (`-Cpasses=sancov-module`
//! and the `-Cllvm-args` below) are stable flags; only the sanitizers cargo-fuzz adds by
//! default need nightly, and the targets have no unsafe code for them to check.
//!
//! Each target first replays its committed seeds (`fuzz/seeds/<target>/`: hand-made
//! inputs plus a set-cover of what earlier long runs found) as a regression test,
//! then a short guided run must find nothing. Longer runs (nightly):
//! `cargo fuzz run <target> fuzz/corpus/<target> fuzz/seeds/<target>`.

use std::path::Path;
use std::process::Command;

const COVERAGE_FLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions";

/// Builds fuzz target `name` and runs it for `seconds`; panics on a finding, or if
/// the run was not guided by coverage.
fn fuzz(name: &str, seconds: u32, max_len: u32) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let target_dir = fuzz.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let triple = "x86_64-unknown-linux-gnu";
    // --target: RUSTFLAGS then reach the target only, not build scripts.
    let out = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "--release",
            "--bin",
            name,
            "--target",
            triple,
        ])
        .current_dir(&fuzz)
        .env("RUSTFLAGS", COVERAGE_FLAGS)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building the fuzz target {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = target_dir.join(triple).join("release").join(name);
    let seeds = fuzz.join("seeds").join(name);
    let seed_count = std::fs::read_dir(&seeds).map_or(0, |d| d.count());
    assert!(seed_count > 0, "no seeds in {}", seeds.display());

    // Every seed once, no mutation: an input that once passed still passes.
    let out = Command::new(&binary)
        .arg(&seeds)
        .arg("-runs=0")
        .output()
        .expect("the fuzz target runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a seed of {name} fails:\n{log}");
    assert!(
        log.contains(&format!("seed corpus: files: {seed_count} ")),
        "not every seed was read:\n{log}"
    );

    // Then guided mutation, starting from the seeds; new finds go to a scratch dir.
    let corpus = tempfile::tempdir().unwrap();
    let out = Command::new(&binary)
        .arg(corpus.path())
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={max_len}"))
        .arg("-seed=1")
        .output()
        .expect("the fuzz target runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the fuzzer found a failing input for {name}:\n{log}"
    );
    // Guided, not blind: libFuzzer saw coverage counters and found new inputs.
    assert!(log.contains("cov:"), "{log}");
    assert!(
        std::fs::read_dir(corpus.path()).unwrap().count() > 0,
        "nothing new was found: coverage instrumentation is missing\n{log}"
    );
}

/// User names, host names, domains: no panic, no target with a malformed name.
#[test]
fn the_route_fuzz_target_finds_nothing() {
    fuzz("route", 15, 512);
}

/// PROXY protocol headers and HTTP CONNECT preludes: no panic, nothing read past
/// its bound, tunnels only to routable host names.
#[test]
fn the_fronts_fuzz_target_finds_nothing() {
    fuzz("fronts", 15, 2048);
}

/// Authorized-key lines and key names at the API: no panic; an accepted key is of
/// an accepted type, normalizes to a fixed point, and carries no unsafe character.
#[test]
fn the_keys_fuzz_target_finds_nothing() {
    fuzz("keys", 10, 4096);
}

/// User certificates at login: no panic; one accepted is exactly one sshd would
/// accept from a trusted CA, and its claims are its own.
#[test]
fn the_certificates_fuzz_target_finds_nothing() {
    fuzz("certificates", 10, 4096);
}

/// The configuration file and its environment overrides: no panic; an accepted
/// configuration derives valid limits, and reads the same twice.
#[test]
fn the_config_fuzz_target_finds_nothing() {
    fuzz("config", 10, 8192);
}

/// The agent-forwarding frames between the gateway and the in-workload helper: no
/// panic; every frame read is exactly what encoding it gives, within the cap.
#[test]
fn the_agent_frames_fuzz_target_finds_nothing() {
    fuzz("agent_frames", 10, 1024);
}
