//! `ssh-gateway dev` on a machine without OpenSSH's sftp-server, scp or rsync (hidden in
//! a private mount namespace): the local backend follows the same rule as pods, so scp
//! and sftp still work through the helper, and rsync says what is missing.

mod support;

use support::{Gateway, random_file, run, sha256_file, stderr, stdout};

#[test]
fn scp_sftp_and_legacy_scp_work_and_rsync_explains() {
    let gw = Gateway::start_without_openssh();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f.bin");
    random_file(&src, 10 * 1024 * 1024 + 1);
    let want = sha256_file(&src);
    // The sandbox really lacks them.
    let mut probe = gw.ssh(&gw.dev_key);
    probe.args([
        "demo@127.0.0.1",
        "ls /usr/lib/openssh | wc -l; [ -x /usr/bin/scp ] || echo no-scp",
    ]);
    assert_eq!(stdout(&run(probe)), "0\nno-scp\n");

    for (mode, name) in [(None, "sftp-mode.bin"), (Some("-O"), "legacy.bin")] {
        let mut up = gw.scp(&gw.dev_key);
        up.args(mode)
            .arg(&src)
            .arg(format!("demo@127.0.0.1:{name}"));
        let out = run(up);
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            stderr(&out),
            gw.log()
        );
        assert_eq!(sha256_file(&gw.sandbox_dir("demo").join(name)), want);
        let back = dir.path().join(format!("back-{name}"));
        let mut down = gw.scp(&gw.dev_key);
        down.args(mode)
            .arg(format!("demo@127.0.0.1:{name}"))
            .arg(&back);
        let out = run(down);
        assert!(out.status.success(), "{name} down: {}", stderr(&out));
        assert_eq!(sha256_file(&back), want);
    }
    let batch = dir.path().join("batch");
    std::fs::write(&batch, "mkdir d\nrename sftp-mode.bin d/x.bin\nls d\n").unwrap();
    let mut sftp = gw.sftp(&gw.dev_key);
    sftp.arg("-b").arg(&batch).arg("demo@127.0.0.1");
    let out = run(sftp);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("x.bin"), "{}", stdout(&out));
    assert!(gw.log().contains("helper placed"), "{}", gw.log());

    let mut rsync = std::process::Command::new("rsync");
    rsync
        .arg("-e")
        .arg(gw.rsync_shell(&gw.dev_key))
        .arg(&src)
        .arg("demo@127.0.0.1:r.bin");
    let out = run(rsync);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rsync is not installed in this sandbox"),
        "{}",
        stderr(&out)
    );
}
