//! The audit trail: every authenticated connection and channel is recorded (who, from
//! where, with which key, to what, what ran, bytes, exit status, why it ended); users
//! read their own through `GET /users/me/sessions`, admins everyone's; failed logins
//! leave no row; records outlive the user.

mod support;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{KeyPair, Serve, StaticConfig, admin_with_config, keygen, run, stderr};

struct Gw {
    _serve: Serve,
    ssh_port: u16,
    api: String,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn start() -> (Gw, KeyPair, KeyPair, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = StaticConfig::write(dir.path(), "", "");
    let mut keys = config.users_with_keys(&["ana", "bob"]);
    config.admin(&["sandbox", "add", "box", "--owner", "ana", "--member", "bob"]);
    let (ana_token, bob_token) = (config.token("ana"), config.token("bob"));
    // Structured logs too: the same events, one JSON object a line.
    let serve = config.serve_with_env(&[("SSH_GATEWAY_LOG_FORMAT", "json")]);
    let bob = keys.remove(1);
    let ana = keys.remove(0);
    (
        Gw {
            _serve: serve,
            ssh_port: config.ssh_port,
            api: config.api(),
            config: config.path,
            dir,
        },
        ana,
        bob,
        ana_token,
        bob_token,
    )
}

async fn sessions(gw: &Gw, token: &str, query: &str) -> (u16, Value) {
    get(gw, token, &format!("/users/me/sessions{query}")).await
}

async fn get(gw: &Gw, token: &str, path: &str) -> (u16, Value) {
    let resp = support::http()
        .get(format!("{}{path}", gw.api))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until `token`'s user has `n` sessions, all ended (the writer is
/// asynchronous: a record lands just after the connection closes).
async fn ended_sessions(gw: &Gw, token: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = sessions(gw, token, "?limit=100").await;
        assert_eq!(status, 200, "{body}");
        let list = body["sessions"].as_array().cloned().unwrap_or_default();
        if list.len() == n && list.iter().all(|s| s["ended_at"].is_string()) {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} ended sessions: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fingerprint(key: &KeyPair) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(format!("{}.pub", key.private.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

#[test]
fn connections_and_channels_are_recorded_and_shown_to_their_owner() {
    // Set up before the runtime: the store helpers run their own.
    let (gw, ana, bob, ana_token, bob_token) = start();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(recorded_and_shown(gw, ana, bob, ana_token, bob_token));
}

async fn recorded_and_shown(
    gw: Gw,
    ana: KeyPair,
    bob: KeyPair,
    ana_token: String,
    bob_token: String,
) {
    let port = gw.ssh_port;

    // An exec that fails, an sftp session, a forward.
    let mut exec = support::client("ssh", &ana, port);
    exec.args(["box@127.0.0.1", "echo hi; exit 3"]);
    let out = run(exec);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let batch = gw.dir.path().join("batch");
    std::fs::write(&batch, "pwd\n").unwrap();
    let mut sftp = support::client("sftp", &ana, port);
    sftp.arg("-b").arg(&batch).arg("box@127.0.0.1");
    let out = run(sftp);
    assert!(out.status.success(), "{}", stderr(&out));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let forward_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"pong\n");
        }
    });
    let mut forward = support::client("ssh", &ana, port);
    forward.args(["-W", &format!("localhost:{forward_port}"), "box@127.0.0.1"]);
    let out = run(forward);
    assert_eq!(support::stdout(&out), "pong\n", "{}", stderr(&out));

    // Bob logs in once; a stranger's key never gets in and leaves no record.
    let mut by_bob = support::client("ssh", &bob, port);
    by_bob.args(["box@127.0.0.1", "true"]);
    assert!(run(by_bob).status.success());
    let stranger = keygen(gw.dir.path(), "stranger", &["-t", "ed25519"]);
    let mut denied = support::client("ssh", &stranger, port);
    denied.args(["box@127.0.0.1", "true"]);
    assert_eq!(run(denied).status.code(), Some(255));

    let list = ended_sessions(&gw, &ana_token, 3).await;
    // Newest first: the forward, the sftp session, the exec.
    let (fwd, sftp, exec) = (&list[0], &list[1], &list[2]);
    assert_eq!(exec["user"], "ana");
    assert_eq!(exec["target"], "box");
    assert_eq!(exec["key_fingerprint"], fingerprint(&ana));
    assert!(exec["key_id"].as_str().unwrap().starts_with("key_"));
    assert!(
        exec["source_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{exec}"
    );
    assert_eq!(exec["close_reason"], "client closed");
    let ch = &exec["channels"][0];
    assert_eq!(ch["kind"], "session");
    assert_eq!(ch["program"], "echo hi; exit 3");
    assert_eq!(ch["exit_status"], 3);
    assert_eq!(ch["outcome"], "exit");
    assert_eq!(ch["bytes_out"], 3, "{ch}");
    assert_eq!(exec["bytes_out"], 3);
    assert_eq!(sftp["channels"][0]["program"], "sftp");
    assert_eq!(sftp["channels"][0]["exit_status"], 0);
    assert!(sftp["bytes_in"].as_i64().unwrap() > 0);
    let fwd_channel = &fwd["channels"][0];
    assert_eq!(fwd_channel["kind"], "direct-tcpip");
    assert_eq!(fwd_channel["program"], format!("localhost:{forward_port}"));
    assert_eq!(fwd_channel["bytes_out"], 5);

    // Pages of one: each names the next until the last.
    let (_, first) = sessions(&gw, &ana_token, "?limit=1").await;
    assert_eq!(first["sessions"][0]["id"], fwd["id"]);
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = sessions(&gw, &ana_token, &format!("?limit=1&after={next}")).await;
    assert_eq!(second["sessions"][0]["id"], sftp["id"]);
    let next = second["next"].as_str().unwrap().to_owned();
    let (_, third) = sessions(&gw, &ana_token, &format!("?limit=2&after={next}")).await;
    assert_eq!(third["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(third["sessions"][0]["id"], exec["id"]);
    assert!(third.get("next").is_none(), "{third}");

    // Each sees only their own; nonsense is a 400, no token a 401.
    let bobs = ended_sessions(&gw, &bob_token, 1).await;
    assert_eq!(bobs[0]["user"], "bob");
    for bad in [
        "?limit=0",
        "?limit=101",
        "?after=x",
        "?after=1.a%27--",
        "?other=1",
    ] {
        let (status, body) = sessions(&gw, &ana_token, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let resp = support::http()
        .get(format!("{}/users/me/sessions", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The admin API: a user without the right is refused, one with it sees
    // everyone's, by user name too; the record outlives its user; taking the right
    // back works on the next request.
    let (status, body) = get(&gw, &ana_token, "/admin/sessions").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let resp = support::http()
        .get(format!("{}/admin/sessions", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    admin_with_config(&gw.config, &["user", "admin", "ana"]);
    let (status, all) = get(&gw, &ana_token, "/admin/sessions?limit=10").await;
    assert_eq!(status, 200, "{all}");
    let users: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["bob", "ana", "ana", "ana"], "{all:#}");
    let (_, page) = get(&gw, &ana_token, "/admin/sessions?limit=3").await;
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, last) = get(&gw, &ana_token, &format!("/admin/sessions?after={next}")).await;
    assert_eq!(last["sessions"][0]["id"], exec["id"], "{last}");
    for bad in [
        "?user=bob%27--",
        "?user=",
        "?limit=0",
        "?after=x",
        "?other=1",
    ] {
        let (status, body) = get(&gw, &ana_token, &format!("/admin/sessions{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    admin_with_config(&gw.config, &["user", "delete", "bob"]);
    let (_, of_bob) = get(&gw, &ana_token, "/admin/sessions?user=bob").await;
    let of_bob = of_bob["sessions"].as_array().unwrap().clone();
    assert_eq!(of_bob.len(), 1, "{of_bob:?}");
    assert_eq!(of_bob[0]["id"], bobs[0]["id"]);
    let (_, of_nobody) = get(&gw, &ana_token, "/admin/sessions?user=carol").await;
    assert_eq!(of_nobody["sessions"].as_array().unwrap().len(), 0);

    let all = admin_with_config(&gw.config, &["sessions", "--limit", "10"]);
    assert_eq!(
        all.lines().filter(|l| l.starts_with("ses_")).count(),
        4,
        "{all}"
    );
    assert!(
        all.contains("  bob  ") && all.contains("\"echo hi; exit 3\""),
        "{all}"
    );
    let bobs_trail = admin_with_config(&gw.config, &["sessions", "--user", "bob"]);
    assert_eq!(
        bobs_trail.lines().filter(|l| l.starts_with("ses_")).count(),
        1,
        "{bobs_trail}"
    );

    admin_with_config(&gw.config, &["user", "admin", "ana", "--off"]);
    let (status, _) = get(&gw, &ana_token, "/admin/sessions").await;
    assert_eq!(status, 403);
}

/// A gateway killed with a session open leaves no connection open in the trail for
/// ever: a replica that outlives it closes it once it has been silent for
/// `orphan_after_secs`; that replica's own open sessions stay open meanwhile.
#[test]
fn the_connections_of_a_killed_gateway_are_closed_by_the_one_that_outlives_it() {
    use support::live::live;

    let dir = tempfile::tempdir().unwrap();
    let config = StaticConfig::write(dir.path(), "", "[audit]\norphan_after_secs = 2\n");
    let ana = config.users_with_keys(&["ana"]).remove(0);
    config.admin(&["sandbox", "add", "box", "--owner", "ana"]);
    let trail = || config.admin(&["sessions", "--limit", "10"]);
    let session = || {
        let mut cmd = support::client("ssh", &ana, config.ssh_port);
        cmd.arg("box@127.0.0.1");
        live(cmd, "echo started; sleep 120", "ana's session")
    };

    let mut first = config.serve();
    let held = session();
    assert!(
        support::process::wait_until(Duration::from_secs(20), || trail().contains(" open ")),
        "{}",
        trail()
    );
    let status = Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    first.wait_exit(Duration::from_secs(10));
    drop(held);

    let _second = config.serve();
    let still_open = session();
    assert!(
        support::process::wait_until(Duration::from_secs(20), || trail()
            .contains("the gateway serving it stopped without closing it")),
        "{}",
        trail()
    );
    // Well past the silence allowed: the live replica's own session is still open.
    std::thread::sleep(Duration::from_secs(3));
    let now = trail();
    let lines: Vec<&str> = now.lines().filter(|l| l.starts_with("ses_")).collect();
    assert_eq!(lines.len(), 2, "{now}");
    assert!(
        lines[0].contains(" open "),
        "newest, on the live gateway: {now}"
    );
    assert!(
        lines[1].contains("the gateway serving it stopped without closing it"),
        "{now}"
    );
    drop(still_open);
}
