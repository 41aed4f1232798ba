//! Region mode: `ssh-gateway serve --config` on PostgreSQL, administered with the same
//! CLI, reached with the real ssh client; host keys stable across a restart.

mod support;

use std::process::Command;

use support::{Serve, admin_with_config, free_port, keygen, run, stderr, stdout};

fn host_key_line(port: u16) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("ssh-ed25519"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_on_postgres_end_to_end() {
    let db = support::postgres::cluster().database("region").await;
    let dir = tempfile::tempdir().unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{keys}\"\npublic_host = \"ssh.test.example.com\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"{db}\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{root}\"\n",
            keys = dir.path().join("keys").display(),
            root = dir.path().join("sandboxes").display(),
        ),
    )
    .unwrap();
    let admin = |args: &[&str]| admin_with_config(&config, args);
    let migrate = Command::new(support::BIN)
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(migrate.status.success());
    admin(&["user", "add", "ana"]);
    admin(&["sandbox", "add", "job-1", "--owner", "ana"]);
    let token = admin(&["token", "create", "ana"]).trim().to_owned();
    assert!(token.starts_with("sgw_") && !token.contains('\n'));

    let log = dir.path().join("serve.log");
    let server = Serve::start(&config, &log, api_port);
    let key = keygen(dir.path(), "ana", &["-t", "ed25519"]);
    let api = format!("http://127.0.0.1:{api_port}");
    let resp = support::http()
        .post(format!("{api}/users/me/ssh-keys"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "laptop", "public_key": key.public_line}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let detail: serde_json::Value = support::http()
        .get(format!("{api}/api/v1/sandboxes/job-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        detail["ssh"],
        serde_json::json!({"host": "ssh.test.example.com", "port": 22, "username": "job-1"})
    );

    let ssh = |args: &[&str]| {
        let gw_opts = support::Gateway::client_opts_for(&key.private);
        let mut cmd = Command::new("ssh");
        cmd.args(gw_opts)
            .args(["-p", &ssh_port.to_string()])
            .args(args);
        run(cmd)
    };
    let out = ssh(&["job-1@127.0.0.1", "echo hello from $(basename $PWD)"]);
    assert_eq!(stdout(&out), "hello from job-1\n", "{}", stderr(&out));

    // The host key persists: a restarted gateway presents the same one.
    let before = host_key_line(ssh_port);
    assert!(before.contains("ssh-ed25519"));
    drop(server);
    let _server = Serve::start(&config, &log, api_port);
    assert_eq!(host_key_line(ssh_port), before);
    let out = ssh(&["job-1@127.0.0.1", "echo again"]);
    assert_eq!(stdout(&out), "again\n");
}
