//! The helper as the remote side of legacy scp: the real OpenSSH client (`scp -O`)
//! with a fake ssh that runs the remote command locally, compared against the real
//! /usr/bin/scp as the remote.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::*;

fn seed_remote(home: &Path) {
    fs::create_dir_all(home.join("sub")).unwrap();
    fs::create_dir_all(home.join("odd")).unwrap();
    fs::write(home.join("existing.txt"), b"existing\n").unwrap();
    fs::write(home.join("sub/inner.txt"), b"inner\n").unwrap();
    fs::write(home.join("odd").join(os(b"new\nline")), b"nl\n").unwrap();
    fs::write(home.join("odd").join(os(b"back\\slash \xe9")), b"bs\n").unwrap();
    fs::write(home.join("odd/plain"), b"plain\n").unwrap();
    std::os::unix::fs::symlink("/nonexistent-target", home.join("dangling")).unwrap();
    fix_times(home);
}

fn seed_local(local: &Path) {
    fs::create_dir_all(local.join("tree/deeper/deepest")).unwrap();
    fs::write(local.join("src.txt"), b"source\n").unwrap();
    fs::write(local.join("tree/a"), b"a\n").unwrap();
    fs::write(local.join("tree/run.sh"), b"#!/bin/sh\n").unwrap();
    fs::write(local.join("tree/deeper/b"), vec![9u8; 300_000]).unwrap();
    fs::write(local.join("tree/deeper/deepest/empty"), b"").unwrap();
    write_random(&local.join("big.bin"), 20 << 20, 7);
    fs::set_permissions(local.join("tree/a"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(local.join("tree/run.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(local.join("tree/deeper"), fs::Permissions::from_mode(0o710)).unwrap();
    fix_times(local);
}

/// Each step: the scp arguments ("host:" marks the remote side).
const STEPS: &[&[&str]] = &[
    &["src.txt", "host:up.txt"],
    &["src.txt", "host:sub/"],
    &["big.bin", "host:big.bin"],
    &["host:big.bin", "big.back"],
    &["-r", "-p", "tree", "host:"],
    &["-r", "-p", "host:tree", "tree.back"],
    &["-p", "host:existing.txt", "got.txt"],
    &["-r", "host:odd", "odd.back"],
    &["host:missing.txt", "x"],
    &["host:sub", "y"],
    &["host:dangling", "z"],
    &["src.txt", "tree/a", "host:existing.txt"],
    &["src.txt", "tree/a", "host:nodir"],
    &["src.txt", "host:nodir/x"],
    &["-r", "tree", "host:existing.txt"],
    &["host:sub/inner.txt", "host:existing.txt", "multi"],
];

type Run = (
    Vec<(Option<i32>, String)>,
    BTreeMap<Vec<u8>, Node>,
    BTreeMap<Vec<u8>, Node>,
);

fn run_all(base: &Path, openssh: bool) -> Run {
    let tag = if openssh { "openssh" } else { "helper" };
    let home = base.join(format!("home-{tag}"));
    let local = base.join(format!("local-{tag}"));
    seed_remote(&home);
    seed_local(&local);
    fs::create_dir_all(local.join("multi")).unwrap();
    let ssh = fake_ssh(base, &format!("ssh-{tag}"), &remote_scp(openssh), &home);
    let mut results = Vec::new();
    for step in STEPS {
        let args: Vec<&std::ffi::OsStr> = step.iter().map(|a| std::ffi::OsStr::new(*a)).collect();
        let out = scp(&ssh, &local, &args);
        let repl = [(home.as_path(), "<home>"), (local.as_path(), "<local>")];
        results.push((out.status.code(), normalize(&out.stderr, &repl)));
    }
    // Modes everywhere; mtimes where -p kept them.
    let mut remote = snapshot(&home, false);
    remote.extend(
        snapshot(&home.join("tree"), true)
            .into_iter()
            .map(|(k, v)| ([b"tree-p/", &k[..]].concat(), v)),
    );
    let mut loc = snapshot(&local, false);
    loc.extend(
        snapshot(&local.join("tree.back"), true)
            .into_iter()
            .map(|(k, v)| ([b"tree.back-p/", &k[..]].concat(), v)),
    );
    (results, remote, loc)
}

#[test]
fn transfers_errors_and_trees_match_openssh_scp() {
    let base = tempdir();
    let o = run_all(base.path(), true);
    let h = run_all(base.path(), false);
    for ((step, a), b) in STEPS.iter().zip(&o.0).zip(&h.0) {
        assert_eq!(b, a, "step {step:?}: helper vs openssh (exit, stderr)");
    }
    assert_eq!(h.1, o.1, "remote trees differ");
    assert_eq!(h.2, o.2, "local trees differ");

    // And what the user asked for happened.
    let home = base.path().join("home-helper");
    let local = base.path().join("local-helper");
    assert_eq!(
        sha256_file(&home.join("big.bin")),
        sha256_file(&local.join("big.bin"))
    );
    assert_eq!(
        sha256_file(&local.join("big.back")),
        sha256_file(&local.join("big.bin"))
    );
    assert_eq!(
        snapshot(&home.join("tree"), true),
        snapshot(&local.join("tree"), true),
        "-r -p keeps modes and times"
    );
    assert_eq!(
        snapshot(&local.join("tree.back"), true),
        snapshot(&local.join("tree"), true)
    );
    let errors: Vec<&String> = h.0.iter().map(|(_, e)| e).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("scp: missing.txt: No such file or directory"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("scp: sub: not a regular file"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("scp: existing.txt: Not a directory"))
    );
}

#[test]
fn protocol_errors_are_reported_in_the_protocol() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let base = tempdir();
    let run = |input: &[u8], args: &[&str]| {
        let mut child = Command::new(helper())
            .arg("scp")
            .args(args)
            .current_dir(base.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let status = child.wait().unwrap();
        (status.code(), out)
    };
    let (code, out) = run(b"C0644 5 ../escape\nhello\0", &["-t", "--", "."]);
    assert_eq!(code, Some(1));
    assert_eq!(out, b"\0\x01scp: error: unexpected filename: ../escape\n");
    assert!(!base.path().parent().unwrap().join("escape").exists());

    let (code, out) = run(b"C0644 5 a/b\n", &["-t", "--", "."]);
    assert_eq!(code, Some(1));
    assert_eq!(out, b"\0\x01scp: error: unexpected filename: a/b\n");

    let (code, out) = run(b"D0755 0 d\nE\n", &["-t", "--", "."]);
    assert_eq!(code, Some(1));
    assert_eq!(
        out,
        b"\0\x01scp: protocol error: received directory without -r\n"
    );

    let (code, out) = run(b"C06x4 5 f\n", &["-t", "--", "."]);
    assert_eq!(code, Some(1));
    assert_eq!(out, b"\0\x01scp: protocol error: bad mode\n");

    // A control line longer than the buffer is cut there, not read without bound.
    let mut long = b"C0644 1 ".to_vec();
    long.extend(std::iter::repeat_n(b'n', 100_000));
    long.push(b'\n');
    let (code, out) = run(&long, &["-t", "--", "."]);
    assert_eq!(code, Some(1));
    assert!(out.len() < 4096, "reply stays small: {}", out.len());

    let (code, out) = run(b"", &["-t", "a", "b"]);
    assert_eq!(
        (code, &out[..]),
        (Some(1), &b"\x01scp: ambiguous target\n"[..])
    );

    let (code, out) = run(b"C0644 5 f\nhel", &["-t", "--", "."]);
    assert_eq!(code, Some(1));
    assert_eq!(out, b"\0\0\x01scp: Broken pipe\n");
}
