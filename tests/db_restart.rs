//! A PostgreSQL restart under a running gateway: while the database is down, logins
//! fail closed and the gateway stays up; once it is back, the same gateway serves again
//! without a restart of its own. (Its own test binary: it stops the shared cluster.)

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
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sandboxes\"\n",
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
        500,
        "health must report the database outage"
    );

    tokio::task::block_in_place(|| cluster.start());
    let out = connect();
    assert_eq!(stdout(&out), "up\n", "{}", stderr(&out));
    assert_eq!(health().await.unwrap(), 200);
}
