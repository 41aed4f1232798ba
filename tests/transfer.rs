//! File transfer with the real clients: scp (SFTP mode, the OpenSSH default, and the
//! legacy `-O` protocol), sftp in batch and piped-interactive use, and rsync over ssh.
//! Every transfer is checked by SHA-256.

mod support;

use support::{Gateway, random_file, run, run_with_input, sha256_file, stderr, stdout};

const BIG: usize = 100 * 1024 * 1024;

#[test]
fn scp_round_trip_100_mib() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    random_file(&src, BIG);
    let want = sha256_file(&src);

    let mut up = gw.scp(&gw.dev_key);
    up.arg(&src).arg("demo@127.0.0.1:uploaded.bin");
    let out = run(up);
    assert!(out.status.success(), "scp upload: {}", stderr(&out));
    assert_eq!(
        sha256_file(&gw.sandbox_dir("demo").join("uploaded.bin")),
        want
    );

    let back = dir.path().join("back.bin");
    let mut down = gw.scp(&gw.dev_key);
    down.arg("demo@127.0.0.1:uploaded.bin").arg(&back);
    let out = run(down);
    assert!(out.status.success(), "scp download: {}", stderr(&out));
    assert_eq!(sha256_file(&back), want);
}

#[test]
fn sftp_batch_round_trip_100_mib() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    random_file(&src, BIG + 7);
    let want = sha256_file(&src);
    let back = dir.path().join("back.bin");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir data\ncd data\nput {} big.bin\nget big.bin {}\nrename big.bin renamed.bin\nls\n",
            src.display(),
            back.display()
        ),
    )
    .unwrap();
    let mut sftp = gw.sftp(&gw.dev_key);
    sftp.arg("-b").arg(&batch).arg("demo@127.0.0.1");
    let out = run(sftp);
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert!(stdout(&out).contains("renamed.bin"), "{}", stdout(&out));
    assert_eq!(
        sha256_file(&gw.sandbox_dir("demo").join("data/renamed.bin")),
        want
    );
    assert_eq!(sha256_file(&back), want);
}

#[test]
fn sftp_commands_on_stdin_and_ssh_cat_see_the_same_file() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("note.txt");
    std::fs::write(&src, "written over sftp\n").unwrap();
    let mut sftp = gw.sftp(&gw.dev_key);
    sftp.arg("demo@127.0.0.1");
    let out = run_with_input(
        sftp,
        format!("put {} note.txt\npwd\nbye\n", src.display()).as_bytes(),
    );
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    let home = gw
        .sandbox_dir("demo")
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    assert!(
        stdout(&out).contains(&format!("Remote working directory: {home}")),
        "{}",
        stdout(&out)
    );

    let mut cat = gw.ssh(&gw.dev_key);
    cat.args(["demo@127.0.0.1", "cat note.txt"]);
    assert_eq!(stdout(&run(cat)), "written over sftp\n");
}

#[test]
fn legacy_scp_and_rsync() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("file.bin");
    random_file(&src, 3 * 1024 * 1024 + 1);
    let want = sha256_file(&src);

    let mut legacy = gw.scp(&gw.dev_key);
    legacy.arg("-O").arg(&src).arg("demo@127.0.0.1:legacy.bin");
    let out = run(legacy);
    assert!(out.status.success(), "scp -O: {}", stderr(&out));
    assert_eq!(
        sha256_file(&gw.sandbox_dir("demo").join("legacy.bin")),
        want
    );

    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::copy(&src, tree.join("sub/a.bin")).unwrap();
    std::fs::write(tree.join("b.txt"), "bee\n").unwrap();
    let mut rsync = std::process::Command::new("rsync");
    rsync
        .args(["-a", "-e", &gw.rsync_shell(&gw.dev_key)])
        .arg(format!("{}/", tree.display()))
        .arg("demo@127.0.0.1:synced/");
    let out = run(rsync);
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    let synced = gw.sandbox_dir("demo").join("synced");
    assert_eq!(sha256_file(&synced.join("sub/a.bin")), want);
    assert_eq!(
        std::fs::read_to_string(synced.join("b.txt")).unwrap(),
        "bee\n"
    );
}
