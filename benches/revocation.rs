//! Revocation latency across replicas: two `serve` processes on one PostgreSQL; a
//! session through replica B; its key deleted through replica A's API. Measured from
//! just before the DELETE is sent to the moment the session's `ssh` exits (it has
//! printed `Connection closed: your key was revoked`): what a user would time.
//! The periodic re-check is off, so this is LISTEN/NOTIFY alone.
//!
//!     cargo bench --bench revocation      # REVOKE_RUNS=30 sessions
//!
//! Not run by CI.

mod common;

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, GATEWAY as BIN, admin, env_usize, free_port, spawn_serve, wait_port};

/// The session's cipher: what a client picks first by default.
const CIPHER: &str = "chacha20-poly1305@openssh.com";

fn config(dir: &Path, ssh_port: u16, api_port: u16, db: &str) -> String {
    let d = dir.display();
    format!(
        "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"{db}\"\n\
         [control]\nkind = \"static\"\nsandbox_root = \"{d}/sandboxes\"\n\
         [revocation]\nrecheck_secs = 0\n"
    )
}

fn replica(dir: &Path, name: &str, db: &str) -> (Child, u16, String) {
    let (ssh_port, api_port) = (free_port(), free_port());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config(dir, ssh_port, api_port, db)).unwrap();
    let child = spawn_serve(BIN, &path, ssh_port);
    wait_port(api_port);
    (child, ssh_port, format!("http://127.0.0.1:{api_port}"))
}

fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let private = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&private)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let public = std::fs::read_to_string(format!("{}.pub", private.display())).unwrap();
    (private, public.trim().to_owned())
}

/// A session through `port` that has printed `started`.
fn session(key: &Path, port: u16) -> Child {
    let client = Client {
        key: key.to_owned(),
    };
    let mut child = Command::new("ssh")
        .args(client.opts(CIPHER))
        .args(["-p", &port.to_string(), "box@127.0.0.1"])
        .arg("echo started; exec sleep 300")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    child
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let runs = env_usize("REVOKE_RUNS", 30);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("sgw-revocation-bench")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let db = rt.block_on(postgres::cluster().database("revocation_bench"));
    let cli = d.join("cli.toml");
    std::fs::write(&cli, config(d, free_port(), free_port(), &db)).unwrap();
    let migrated = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&cli)
        .status()
        .unwrap();
    assert!(migrated.success());
    admin(&cli, &["user", "add", "ana"]);
    admin(&cli, &["sandbox", "add", "box", "--owner", "ana"]);
    let token = admin(&cli, &["token", "create", "ana"]).trim().to_owned();
    let (mut a, _, a_api) = replica(d, "a", &db);
    let (mut b, b_ssh, _) = replica(d, "b", &db);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::new();

    let mut latencies = Vec::with_capacity(runs);
    for i in 0..runs {
        let (key, public) = keygen(d, &format!("k{i}"));
        let id: String = rt.block_on(async {
            let resp = http
                .post(format!("{a_api}/users/me/ssh-keys"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"name": format!("k{i}"), "public_key": public}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            let body: serde_json::Value = resp.json().await.unwrap();
            body["id"].as_str().unwrap().to_owned()
        });
        let mut child = session(&key, b_ssh);
        let start = Instant::now();
        rt.block_on(async {
            let resp = http
                .delete(format!("{a_api}/users/me/ssh-keys/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 204);
        });
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "session {i} was not ended"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|x, y| x.total_cmp(y));
    println!("\n{runs} sessions through replica B, each key deleted through replica A's API\n");
    println!("| revocation latency (DELETE sent → session's ssh exited) | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| two replicas, one PostgreSQL (LISTEN/NOTIFY) | {:.1} ms | {:.1} ms | {:.1} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
}
