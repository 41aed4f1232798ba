//! The browser terminal's WebSocket, driven without a browser: what a hostile or
//! broken page gets (a foreign origin, no login, garbage, a huge message), and that
//! a terminal session is an SSH session like any other: in the audit trail, ended
//! when its token is deleted, and ended with a reason at shutdown.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use support::browser::{login, open, read_all, read_until, request, typed};
use support::{StaticConfig, run, stderr};
use tokio_tungstenite::tungstenite::{self, Message};

/// On SQLite another process's edits (`admin token delete`) reach the gateway by its
/// periodic re-check, made short here.
const SHORT_LOGIN: &[(&str, &str)] = &[
    ("SSH_GATEWAY__API__HEADER_TIMEOUT_SECS", "2"),
    ("SSH_GATEWAY__REVOCATION__RECHECK_SECS", "1"),
    ("SSH_GATEWAY__SSH__DRAIN_TIMEOUT_SECS", "2"),
];

/// A gateway with ana, who owns `box`, and bob, who may not use it; bob's key.
fn gateway(dir: &std::path::Path) -> (StaticConfig, support::KeyPair) {
    let config = StaticConfig::write(dir, "", "");
    let mut keys = config.users_with_keys(&["ana", "bob"]);
    config.admin(&["sandbox", "add", "box", "--owner", "ana"]);
    (config, keys.remove(1))
}

#[test]
fn hostile_pages_get_nothing_and_hold_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = gateway(dir.path());
    let _serve = config.serve_with_env(SHORT_LOGIN);
    let token = config.token("ana");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Another site's page cannot open the socket, even with the user's browser.
        let foreign = request(config.api_port, "box", Some("https://evil.example"));
        match tokio_tungstenite::connect_async(foreign).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
            other => panic!("a foreign origin was let in: {other:?}"),
        }

        // A page that never logs in is told so and closed at the deadline.
        let mut silent = open(config.api_port, "box").await;
        let (output, control) = read_all(&mut silent, Duration::from_secs(10)).await;
        assert!(output.is_empty(), "{output}");
        assert_eq!(control[0]["type"], "unauthorized", "{control:?}");
        assert!(
            control[0]["message"]
                .as_str()
                .unwrap()
                .contains("no login within 2 s"),
            "{control:?}"
        );

        // Keystrokes before the login are not a login.
        let mut early = open(config.api_port, "box").await;
        typed(&mut early, "id\r").await;
        let (output, control) = read_all(&mut early, Duration::from_secs(10)).await;
        assert!(output.is_empty(), "{output}");
        assert_eq!(control[0]["type"], "unauthorized", "{control:?}");

        // A wrong token gets the API's answer and no shell.
        let mut wrong = open(config.api_port, "box").await;
        login(&mut wrong, "sgw_wrong").await;
        let (output, control) = read_all(&mut wrong, Duration::from_secs(10)).await;
        assert!(output.is_empty(), "{output}");
        assert_eq!(
            control[0]["message"], "invalid or revoked token",
            "{control:?}"
        );

        // A message over the limit ends the socket rather than being buffered.
        let mut flood = open(config.api_port, "box").await;
        login(&mut flood, &token).await;
        typed(&mut flood, "echo up-$((1+1))\r").await;
        read_until(&mut flood, "up-2").await;
        let _ = flood
            .send(Message::Binary(vec![b'x'; 1 << 20].into()))
            .await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match flood.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "an oversized message did not end the socket");
    });
    // None of them left a connection behind, and the flood's SSH session is closed.
    let log = std::fs::read_to_string(config.dir.join("gateway.log")).unwrap();
    assert_eq!(log.matches("browser terminal opened").count(), 1, "{log}");
}

#[test]
fn a_terminal_session_is_an_ssh_session_of_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let (config, bob_key) = gateway(dir.path());
    let mut serve = config.serve_with_env(SHORT_LOGIN);
    let ana = config.token("ana");
    let bob = config.token("bob");
    let keep = config.admin(&["token", "create", "ana", "--name", "keep"]);
    let keep = keep.trim();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Someone without access reads the refusal `ssh` prints, and exit status 1.
        let mut ssh = support::client("ssh", &bob_key, config.ssh_port);
        ssh.args(["box@127.0.0.1", "true"]);
        let refusal = stderr(&run(ssh)).trim().to_owned();
        assert!(refusal.starts_with("ssh-gateway: "), "{refusal}");
        let mut outsider = open(config.api_port, "box").await;
        login(&mut outsider, &bob).await;
        let (output, control) = read_all(&mut outsider, Duration::from_secs(20)).await;
        assert!(output.contains(&refusal), "{output:?} vs {refusal:?}");
        assert!(
            control
                .iter()
                .any(|c| c["type"] == "exit" && c["status"] == 1),
            "{control:?}"
        );
        // An unknown sandbox reads the same.
        let mut unknown = open(config.api_port, "nope").await;
        login(&mut unknown, &bob).await;
        let (output, _) = read_all(&mut unknown, Duration::from_secs(20)).await;
        let same = output
            .lines()
            .any(|l| l.trim() == refusal.replace("\"box\"", "\"nope\""));
        assert!(
            same,
            "{output:?} vs {:?}",
            refusal.replace("\"box\"", "\"nope\"")
        );

        // The owner gets a shell; it runs as any ssh session does.
        let mut shell = open(config.api_port, "box").await;
        login(&mut shell, &ana).await;
        typed(&mut shell, "echo $((6*7))-done\r").await;
        read_until(&mut shell, "42-done").await;

        // Deleting the token it signed in with ends it, with the reason.
        config.admin(&["token", "delete", "ana", "--name", "cli"]);
        let (_, control) = read_all(&mut shell, Duration::from_secs(30)).await;
        let reason = control
            .iter()
            .find(|c| c["type"] == "closed")
            .unwrap_or_else(|| panic!("no reason: {control:?}"));
        assert!(
            reason["reason"].as_str().unwrap().contains("API token"),
            "{reason}"
        );

        // A shutdown says why, too.
        let mut last = open(config.api_port, "box").await;
        login(&mut last, keep).await;
        typed(&mut last, "echo ready-$((1+1))\r").await;
        read_until(&mut last, "ready-2").await;

        // The audit trail has the terminal sessions under the user, from the
        // browser's address.
        let sessions: Value = support::http()
            .get(format!("{}/users/me/sessions", config.api()))
            .bearer_auth(keep)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = sessions["sessions"].as_array().unwrap();
        assert!(list.len() >= 2, "{sessions}");
        assert!(
            list.iter().all(|s| s["source_address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")),
            "{sessions}"
        );
        // Each names the token it signed in with.
        assert!(
            list.iter()
                .all(|s| s["key_id"].as_str().unwrap().starts_with("tok_")),
            "{sessions}"
        );

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(serve.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let (_, control) = read_all(&mut last, Duration::from_secs(30)).await;
        assert!(control.iter().any(|c| c["type"] == "closed"), "{control:?}");
    });
    let _ = serve.wait_exit(Duration::from_secs(30));
}

#[test]
fn terminal_sockets_count_against_the_api_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = gateway(dir.path());
    let mut env = SHORT_LOGIN.to_vec();
    env.push(("SSH_GATEWAY__API__MAX_CONNECTIONS", "3"));
    let _serve = config.serve_with_env(&env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Upgraded sockets that never log in keep their places until the deadline:
        // a flood of them is bounded by the API's cap, like any other client.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(open(config.api_port, "box").await);
        }
        let origin = format!("http://127.0.0.1:{}", config.api_port);
        match tokio_tungstenite::connect_async(request(config.api_port, "box", Some(&origin))).await
        {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
            Err(tungstenite::Error::Io(_) | tungstenite::Error::Protocol(_)) => {}
            other => panic!("a socket over the cap was let in: {other:?}"),
        }
        // Once the deadline closes them, there is room again.
        for mut socket in idle {
            let (_, control) = read_all(&mut socket, Duration::from_secs(10)).await;
            assert_eq!(control[0]["type"], "unauthorized", "{control:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _again = open(config.api_port, "box").await;
    });
}
