//! The routing fuzz target builds and runs, on the stable toolchain CI has: the
//! coverage instrumentation cargo-fuzz asks rustc for (`-Cpasses=sancov-module` and
//! the `-Cllvm-args` below) are stable flags; only the sanitizers cargo-fuzz adds by
//! default need nightly, and the target has no unsafe code for them to check. A short
//! guided run over the routing function (user names, host names, domains) must find
//! no panic and no target with a malformed name. Longer runs: `cargo fuzz run route`.

use std::path::Path;
use std::process::Command;

const COVERAGE_FLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions";

#[test]
fn the_route_fuzz_target_builds_and_finds_nothing() {
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
            "route",
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
        "building the fuzz target failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let corpus = tempfile::tempdir().unwrap();
    let out = Command::new(target_dir.join(triple).join("release/route"))
        .arg(corpus.path())
        .args(["-max_total_time=15", "-max_len=512", "-seed=1"])
        .output()
        .expect("the fuzz target runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the fuzzer found a failing input:\n{log}"
    );
    // Guided, not blind: libFuzzer saw coverage counters and grew a corpus.
    assert!(log.contains("cov:"), "{log}");
    assert!(
        std::fs::read_dir(corpus.path()).unwrap().count() > 10,
        "the corpus did not grow: coverage instrumentation is missing\n{log}"
    );
}
