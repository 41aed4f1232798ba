//! A PostgreSQL restart under a running gateway: while the database is down, logins
//! fail closed, the gateway stays up and an established session carries on (the
//! revocation listener and re-check must not end it); once it is back, the same
//! gateway serves again without a restart of its own. (Its own test binary: it stops the shared cluster.)

mod support;

use std::process::Command;

use support::{Serve, admin_with_config, free_port, keygen, register_key, run, stderr, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_rides_out_a_database_restart() {
    if std::env::var("DATABASE_URL").is_ok() {
        eprintln!("DATABASE_URL points at a server this test cannot restart; skipping");
        return;
    }
    let cluster = support::postgres::cluster();
    let db = cluster.database("restart").await;
    let dir = tempfile::tempdir().unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"{db}\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sandboxes\"\n\
             [revocation]\nrecheck_secs = 1\n",
            d = dir.path().display(),
        ),
    )
    .unwrap();
    admin_with_config(&config, &["user", "add", "ana"]);
    admin_with_config(&config, &["sandbox", "add", "box", "--owner", "ana"]);
    let key = keygen(dir.path(), "ana", &["-t", "ed25519"]);
    tokio::task::block_in_place(|| register_key(&db, "ana", &key));
    let _server = Serve::start(&config, &dir.path().join("gateway.log"), api_port);
    let connect = || {
        let mut cmd = Command::new("ssh");
        cmd.args(support::Gateway::client_opts_for(&key.private))
            .args(["-p", &ssh_port.to_string(), "box@127.0.0.1", "echo up"]);
        tokio::task::block_in_place(|| run(cmd))
    };
    let health = || async {
        support::http()
            .get(format!("http://127.0.0.1:{api_port}/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    assert_eq!(stdout(&connect()), "up\n");
    assert_eq!(health().await.unwrap(), 200);
    // Runs across the outage: it waits until told the database is back.
    let mark = dir.path().join("database-is-back");
    let mut session = Command::new("ssh");
    session
        .args(support::Gateway::client_opts_for(&key.private))
        .args(["-p", &ssh_port.to_string(), "box@127.0.0.1"]);
    let script = format!(
        "echo started; while [ ! -e {} ]; do sleep 0.2; done; echo survived",
        mark.display()
    );
    let session = tokio::task::block_in_place(|| {
        support::live::live(session, &script, "a session across the outage")
    });

    tokio::task::block_in_place(|| cluster.stop());
    let out = connect();
    assert_eq!(
        out.status.code(),
        Some(255),
        "a login without the key store must fail closed"
    );
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        health().await.unwrap(),
        503,
        "health must report the database outage"
    );

    // Several re-checks went by while the database was away.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| cluster.start());
    std::fs::write(&mark, "").unwrap();
    let out = tokio::task::block_in_place(|| session.ended(std::time::Duration::from_secs(60)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "survived\n");
    let out = connect();
    assert_eq!(stdout(&out), "up\n", "{}", stderr(&out));
    assert_eq!(health().await.unwrap(), 200);
}
