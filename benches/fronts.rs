//! The fronts against the plain listener: `ssh host true` latency and 1-channel
//! throughput (`cat > /dev/null` up, `cat file` down) through the same gateway,
//! reached directly, through the HTTP CONNECT front (`ssh-gateway proxy` as
//! ProxyCommand) and through the TLS front (`ssh-gateway proxy --tls`, which verifies
//! the front's certificate, and `openssl s_client`, as ProxyCommands).
//! The ProxyCommand's own copying is part of what a user pays, so it is measured in.
//!
//!     cargo bench --bench fronts          # BENCH_MIB=256 BENCH_ROUNDS=3
//!
//! Not run by CI.

mod common;
#[path = "../tests/support/pki.rs"]
mod pki;

use std::process::Command;

use common::{
    Client, GATEWAY, add_bench_user, client_key, env_usize, free_port, median, spawn_serve, timed,
    wait_port, write_payload,
};

const CIPHER: &str = "aes128-gcm@openssh.com";
const DOMAIN: &str = "ssh.bench.example";

fn main() {
    let mib = env_usize("BENCH_MIB", 256);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let dir = tempfile::Builder::new()
        .prefix("sgw-fronts-bench")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let (client, pubkey) = client_key(dir);
    pki::ca_and_leaf(dir, DOMAIN);
    let (ssh_port, api_port, connect_port, tls_port) =
        (free_port(), free_port(), free_port(), free_port());
    let d = dir.display();
    let config = dir.join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/gw.db\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sandboxes\"\n\
             [routing]\ndomain = \"{DOMAIN}\"\n\
             [fronts.connect]\nlisten = \"127.0.0.1:{connect_port}\"\n\
             [fronts.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n"
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    add_bench_user(
        &runtime,
        &config,
        &format!("sqlite://{d}/gw.db"),
        pubkey.trim(),
    );
    let added = Command::new(GATEWAY)
        .args(["admin", "--config"])
        .arg(&config)
        .args(["sandbox", "add", "bench", "--owner", "bench"])
        .output()
        .unwrap();
    assert!(added.status.success());
    let mut server = spawn_serve(GATEWAY, &config, ssh_port);
    wait_port(tls_port);
    let payload = dir.join("payload");
    write_payload(&payload, mib);
    std::fs::create_dir_all(dir.join("sandboxes/bench")).unwrap();
    std::fs::copy(&payload, dir.join("sandboxes/bench/payload")).unwrap();

    let paths: [(&str, Vec<String>, String); 4] = [
        (
            "plain listener",
            vec!["-p".into(), ssh_port.to_string()],
            "bench@127.0.0.1".into(),
        ),
        (
            "HTTP CONNECT (`ssh-gateway proxy`)",
            vec![
                "-o".into(),
                format!("ProxyCommand={GATEWAY} proxy --connect 127.0.0.1:{connect_port} %h %p"),
            ],
            format!("u@bench.{DOMAIN}"),
        ),
        (
            "TLS/SNI (`ssh-gateway proxy --tls`)",
            vec![
                "-o".into(),
                format!(
                    "ProxyCommand={GATEWAY} proxy --tls 127.0.0.1:{tls_port} --tls-ca {d}/ca.pem %h %p"
                ),
            ],
            format!("u@bench.{DOMAIN}"),
        ),
        (
            "TLS/SNI (`openssl s_client`)",
            vec![
                "-o".into(),
                format!(
                    "ProxyCommand=openssl s_client -quiet -verify_quiet -connect 127.0.0.1:{tls_port} -servername %h"
                ),
            ],
            format!("u@bench.{DOMAIN}"),
        ),
    ];
    let ssh = |client: &Client, extra: &[String], dest: &str, command: &str| {
        let mut cmd = Command::new("ssh");
        cmd.args(client.opts(CIPHER))
            .args(extra)
            .arg(dest)
            .arg(command);
        cmd
    };
    let mut results = vec![(Vec::new(), Vec::new(), Vec::new()); paths.len()];
    for _ in 0..rounds {
        for (i, (_, extra, dest)) in paths.iter().enumerate() {
            for _ in 0..3 {
                let t = timed(ssh(&client, extra, dest, "true"), None);
                results[i].0.push(t.as_secs_f64() * 1000.0);
            }
            let mb = (mib as f64) * 1.048_576;
            let up = timed(ssh(&client, extra, dest, "cat > /dev/null"), Some(&payload));
            results[i].1.push(mb / up.as_secs_f64());
            let down = timed(ssh(&client, extra, dest, "cat payload"), None);
            results[i].2.push(mb / down.as_secs_f64());
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    println!("\n{mib} MiB, {rounds} interleaved rounds, {CIPHER}, medians\n");
    println!("| path | `ssh host true` | up `cat > /dev/null` | down `cat file` |");
    println!("|---|---|---|---|");
    let base = (
        median(results[0].0.clone()),
        median(results[0].1.clone()),
        median(results[0].2.clone()),
    );
    for (i, (name, _, _)) in paths.iter().enumerate() {
        let (t, u, dn) = (
            median(results[i].0.clone()),
            median(results[i].1.clone()),
            median(results[i].2.clone()),
        );
        println!(
            "| {name} | {t:.1} ms (+{:.1}) | {u:.0} MB/s ({:.2}×) | {dn:.0} MB/s ({:.2}×) |",
            t - base.0,
            u / base.1,
            dn / base.2
        );
    }
}
