//! Revocation ends live sessions on every replica. Two `serve` processes share one
//! PostgreSQL, host keys and CA; sessions run through replica B while what let them
//! in is taken away through replica A's API or the admin CLI (a third process). The
//! periodic re-check is off, so only the database's notifications can end them.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use support::live::{Live, live};
use support::{KeyPair, Serve, admin_with_config, free_port, keygen, stderr};

/// How long a revoked session may take to end before the test calls it a failure: a
/// bound for a stuck mechanism, not the latency target (benches/revocation.rs).
const ENDS_WITHIN: Duration = Duration::from_secs(20);

struct Replica {
    ssh_port: u16,
    api: String,
    _serve: Serve,
}

fn replica(dir: &Path, name: &str, db: &str) -> Replica {
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, replica_toml(dir, ssh_port, api_port, db)).unwrap();
    let serve = Serve::start(&config, &dir.join(format!("{name}.log")), api_port);
    Replica {
        ssh_port,
        api: format!("http://127.0.0.1:{api_port}"),
        _serve: serve,
    }
}

/// One replica's configuration: everything but the ports is shared.
fn replica_toml(dir: &Path, ssh_port: u16, api_port: u16, db: &str) -> String {
    let d = dir.display();
    format!(
        "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"{db}\"\n\
         [control]\nkind = \"static\"\nsandbox_root = \"{d}/sandboxes\"\n\
         [certificates]\nca_key_file = \"{d}/ca/user_ca\"\n\
         [revocation]\nrecheck_secs = 0\n"
    )
}

/// A session past login that waits until it is ended.
fn waiting(cmd: Command, what: &'static str) -> Live {
    live(cmd, "echo started; exec sleep 300", what)
}

fn assert_ended_with(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(255), "{}", stderr(out));
    assert!(
        stderr(out).contains(&format!("ssh-gateway: connection closed: {why}")),
        "{}",
        stderr(out)
    );
}

async fn upload(api: &str, token: &str, name: &str, key: &KeyPair) -> String {
    let resp = support::http()
        .post(format!("{api}/users/me/ssh-keys"))
        .bearer_auth(token)
        .json(&json!({"name": name, "public_key": key.public_line}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_through_one_replica_ends_sessions_on_the_other() {
    let db = support::postgres::cluster().database("revocation").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cli = d.join("cli.toml");
    std::fs::write(&cli, replica_toml(d, free_port(), free_port(), &db)).unwrap();
    let admin = |args: &[&str]| admin_with_config(&cli, args);
    let migrate = Command::new(support::BIN)
        .args(["migrate", "--config"])
        .arg(&cli)
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{}", stderr(&migrate));
    admin(&["user", "add", "ana"]);
    admin(&["user", "add", "bob"]);
    admin(&[
        "sandbox", "add", "job-1", "--owner", "ana", "--member", "bob",
    ]);
    let token = |user: &str| admin(&["token", "create", user]).trim().to_owned();
    let (ana_token, bob_token) = (token("ana"), token("bob"));

    let a = replica(d, "a", &db);
    let b = replica(d, "b", &db);
    let (laptop, desktop, bob_key, cert_key) = (
        keygen(d, "laptop", &["-t", "ed25519"]),
        keygen(d, "desktop", &["-t", "ed25519"]),
        keygen(d, "bob", &["-t", "ed25519"]),
        keygen(d, "certified", &["-t", "ed25519"]),
    );
    let laptop_id = upload(&a.api, &ana_token, "laptop", &laptop).await;
    upload(&a.api, &ana_token, "desktop", &desktop).await;
    upload(&a.api, &bob_token, "bob", &bob_key).await;
    let resp = support::http()
        .post(format!("{}/users/me/ssh-certificates", a.api))
        .bearer_auth(&ana_token)
        .json(&json!({"public_key": cert_key.public_line, "ttl_secs": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let cert: Value = resp.json().await.unwrap();
    std::fs::write(
        format!("{}-cert.pub", cert_key.private.display()),
        cert["certificate"].as_str().unwrap(),
    )
    .unwrap();

    let session = |key: &KeyPair| {
        let mut cmd = support::client("ssh", key, b.ssh_port);
        cmd.arg("job-1@127.0.0.1");
        cmd
    };
    let by_laptop = waiting(session(&laptop), "ana's laptop session");
    let mut by_desktop = waiting(session(&desktop), "ana's desktop session");
    let mut by_bob = waiting(session(&bob_key), "bob's session");
    let mut certified = session(&cert_key);
    certified.args([
        "-o",
        "PubkeyAcceptedAlgorithms=ssh-ed25519-cert-v01@openssh.com",
    ]);
    let mut by_cert = waiting(certified, "ana's certificate session");

    // A key deleted through replica A's API: only the session it opened ends.
    let resp = support::http()
        .delete(format!("{}/users/me/ssh-keys/{laptop_id}", a.api))
        .bearer_auth(&ana_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_ended_with(&by_laptop.ended(ENDS_WITHIN), "your key was revoked");
    assert!(by_desktop.is_running() && by_bob.is_running() && by_cert.is_running());

    // A member taken off by the admin CLI.
    admin(&["sandbox", "remove-member", "job-1", "bob"]);
    assert_ended_with(
        &by_bob.ended(ENDS_WITHIN),
        "your access to this sandbox was removed",
    );
    assert!(by_desktop.is_running() && by_cert.is_running());

    // The token that issued a certificate deleted: the certificate's session ends,
    // and the certificate no longer logs in; key sessions are not the token's.
    admin(&["token", "delete", "ana", "--name", "cli"]);
    assert_ended_with(&by_cert.ended(ENDS_WITHIN), "your certificate was revoked");
    assert!(by_desktop.is_running());

    // The user deleted: the rest of her sessions end, and she cannot come back.
    admin(&["user", "delete", "ana"]);
    assert_ended_with(&by_desktop.ended(ENDS_WITHIN), "your account was deleted");
    let mut again = support::client("ssh", &desktop, a.ssh_port);
    again.args(["job-1@127.0.0.1", "true"]);
    let out = support::run(again);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );

    // The audit trail (on PostgreSQL here) says why each ended, deleted user included.
    let trail = || admin(&["sessions", "--limit", "50"]);
    let why = [
        "your key was revoked",
        "your access to this sandbox was removed",
        "your certificate was revoked",
        "your account was deleted",
    ];
    let deadline = std::time::Instant::now() + ENDS_WITHIN;
    while !why.iter().all(|w| trail().contains(w)) {
        assert!(std::time::Instant::now() < deadline, "{}", trail());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// On SQLite one process serves: its own API's deletions end sessions at once, and
/// the periodic re-check catches what another process (the admin CLI) changed in the
/// file, which no notification announces.
#[tokio::test(flavor = "multi_thread")]
async fn on_sqlite_the_gateway_acts_itself_and_the_recheck_catches_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = support::StaticConfig::write(d, "", "[revocation]\nrecheck_secs = 1\n");
    let admin = |args: &[&str]| config.admin(args);
    admin(&["user", "add", "ana"]);
    admin(&["user", "add", "bob"]);
    admin(&["sandbox", "add", "box", "--owner", "ana", "--member", "bob"]);
    let (ana_token, bob_token) = (config.token("ana"), config.token("bob"));
    let _serve = config.serve();
    let api = config.api();
    let ssh_port = config.ssh_port;
    let (ana_key, bob_key) = (
        keygen(d, "ana", &["-t", "ed25519"]),
        keygen(d, "bob", &["-t", "ed25519"]),
    );
    let ana_key_id = upload(&api, &ana_token, "laptop", &ana_key).await;
    upload(&api, &bob_token, "laptop", &bob_key).await;
    let session = |key: &KeyPair| {
        let mut cmd = support::client("ssh", key, ssh_port);
        cmd.arg("box@127.0.0.1");
        cmd
    };
    let by_ana = waiting(session(&ana_key), "ana's session");
    let mut by_bob = waiting(session(&bob_key), "bob's session");

    let resp = support::http()
        .delete(format!("{api}/users/me/ssh-keys/{ana_key_id}"))
        .bearer_auth(&ana_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_ended_with(&by_ana.ended(ENDS_WITHIN), "your key was revoked");
    assert!(by_bob.is_running());

    admin(&["sandbox", "remove-member", "box", "bob"]);
    assert_ended_with(
        &by_bob.ended(ENDS_WITHIN),
        "your access to this sandbox was removed",
    );
}
