//! SFTP through the in-workload helper, side by side with the image's own sftp-server
//! on the same path (gateway → kube-emulator pod) and with OpenSSH sshd direct; plus
//! what placing the helper costs a first channel, and later ones.
//!
//!     cargo bench --bench sftp                  # defaults: 256 MiB, 3 rounds
//!     BENCH_MIB=64 BENCH_ROUNDS=5 cargo bench --bench sftp
//!
//! Both gateways reach pods on the host's filesystem, which has OpenSSH's sftp-server:
//! one runs with `[sftp] server = "auto"` (so the image's own serves), the other with
//! `"helper"`. Needs openssh-server for the sshd row. Not run by CI.

mod common;

use std::time::Duration;

use common::{
    client_key, env_usize, median, start_kube_gateway_with, start_sshd, timed, write_payload,
};

const CIPHER: &str = "aes128-gcm@openssh.com";
/// Fresh pods whose first channels are timed.
const FIRST_CHANNELS: usize = 7;

fn main() {
    let mib = env_usize("BENCH_MIB", 256);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let dir = tempfile::Builder::new()
        .prefix("sgw-sftp-bench")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let (client, pubkey) = client_key(dir);
    let payload = dir.join("payload.bin");
    write_payload(&payload, mib);
    let own = start_kube_gateway_with(
        dir,
        pubkey.trim(),
        "gateway → pod, image's own sftp-server",
        "own",
        "",
        Duration::ZERO,
    );
    let helper = start_kube_gateway_with(
        dir,
        pubkey.trim(),
        "gateway → pod, helper",
        "helper",
        "[sftp]\nserver = \"helper\"\n",
        Duration::ZERO,
    );
    let mut servers = vec![own, helper];
    if let Some(sshd) = start_sshd(dir, &pubkey) {
        servers.push(sshd);
    }
    let batch = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let remote = dir.join("remote.bin");
    let back = dir.join("back.bin");
    let put = batch(
        "put",
        format!("put {} {}\n", payload.display(), remote.display()),
    );
    let get = batch(
        "get",
        format!("get {} {}\n", remote.display(), back.display()),
    );
    let user = |s: &common::Server| {
        if s.name == "OpenSSH sshd" {
            s.user.clone()
        } else {
            "bench".to_owned()
        }
    };
    // Warm up: the first channel on each gateway probes the pod (and places the helper).
    for s in &servers {
        timed(client.sftp(s, CIPHER, &user(s), &put), None);
    }
    let bytes = (mib * 1024 * 1024) as f64;
    let mut up = vec![Vec::new(); servers.len()];
    let mut down = vec![Vec::new(); servers.len()];
    let mut scp_up = vec![Vec::new(); servers.len()];
    let mut scp_down = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (i, s) in servers.iter().enumerate() {
            let t = timed(client.sftp(s, CIPHER, &user(s), &put), None);
            up[i].push(bytes / t.as_secs_f64() / 1e6);
            let t = timed(client.sftp(s, CIPHER, &user(s), &get), None);
            down[i].push(bytes / t.as_secs_f64() / 1e6);
            let same = std::process::Command::new("cmp")
                .arg(&payload)
                .arg(&back)
                .status()
                .unwrap();
            assert!(same.success(), "{}: the download differs", s.name);
            let _ = std::fs::remove_file(&back);
            // scp's SFTP mode (OpenSSH's default) over the same server.
            let to = format!("{}@127.0.0.1:{}", user(s), remote.display());
            let t = timed(
                client.scp(s, CIPHER, &payload.display().to_string(), &to),
                None,
            );
            scp_up[i].push(bytes / t.as_secs_f64() / 1e6);
            let t = timed(
                client.scp(s, CIPHER, &to, &back.display().to_string()),
                None,
            );
            scp_down[i].push(bytes / t.as_secs_f64() / 1e6);
            let _ = std::fs::remove_file(&back);
        }
    }
    println!("\n{mib} MiB, {rounds} rounds, {CIPHER}, medians; MB/s include connection setup\n");
    println!("| path | sftp put | sftp get | scp up | scp down |");
    println!("|---|---|---|---|---|");
    let columns = [&up, &down, &scp_up, &scp_down];
    for (i, s) in servers.iter().enumerate() {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let (v, own) = (median(c[i].clone()), median(c[0].clone()));
                if i == 0 {
                    format!("{v:.0} MB/s")
                } else {
                    format!("{v:.0} MB/s ({:.2}× own)", v / own)
                }
            })
            .collect();
        println!("| {} | {} |", s.name, cells.join(" | "));
    }

    // The servers alone, without the gateway: `sftp -D` runs one on the client's
    // pipes, so only the server process differs between the two rows.
    let helper_bin = dir.join("ssh-gateway-helper");
    let embedded = ssh_gateway::helper::embedded::for_arch(std::env::consts::ARCH)
        .expect("a helper for this machine");
    std::fs::write(&helper_bin, embedded.bytes).unwrap();
    std::fs::set_permissions(
        &helper_bin,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let direct = [
        (
            "OpenSSH sftp-server",
            "/usr/lib/openssh/sftp-server".to_owned(),
        ),
        ("helper", format!("{} sftp-server", helper_bin.display())),
    ];
    let (mut d_up, mut d_down) = (vec![Vec::new(); 2], vec![Vec::new(); 2]);
    for _ in 0..rounds {
        for (i, (_, server)) in direct.iter().enumerate() {
            let sftp = |batch: &std::path::Path| {
                let mut cmd = std::process::Command::new("sftp");
                cmd.arg("-q").arg("-b").arg(batch).arg("-D").arg(server);
                cmd
            };
            d_up[i].push(bytes / timed(sftp(&put), None).as_secs_f64() / 1e6);
            d_down[i].push(bytes / timed(sftp(&get), None).as_secs_f64() / 1e6);
            let _ = std::fs::remove_file(&back);
        }
    }
    println!("\n| server, over `sftp -D` (no SSH) | sftp put | sftp get |");
    println!("|---|---|---|");
    for (i, (name, _)) in direct.iter().enumerate() {
        let (u, d) = (median(d_up[i].clone()), median(d_down[i].clone()));
        let ratio = |v: f64, c: &[Vec<f64>]| {
            if i == 0 {
                String::new()
            } else {
                format!(" ({:.2}×)", v / median(c[0].clone()))
            }
        };
        println!(
            "| {name} | {u:.0} MB/s{} | {d:.0} MB/s{} |",
            ratio(u, &d_up),
            ratio(d, &d_down)
        );
    }

    // First channel on a fresh pod (probe, and for the helper the copy) against the
    // next channels on the same pod.
    let pwd = batch("pwd", "pwd\n".to_owned());
    println!("\n| path | first channel on a fresh pod | later channels | placement overhead |");
    println!("|---|---|---|---|");
    for s in &servers[..2] {
        let (mut first, mut later) = (Vec::new(), Vec::new());
        for n in 0..FIRST_CHANNELS {
            let id = format!("fresh{n}");
            s.add_pod(&id);
            std::thread::sleep(Duration::from_millis(200)); // the gateway's watch sees it
            first.push(ms(timed(client.sftp(s, CIPHER, &id, &pwd), None)));
            for _ in 0..3 {
                later.push(ms(timed(client.sftp(s, CIPHER, &id, &pwd), None)));
            }
        }
        let (f, l) = (median(first), median(later));
        println!("| {} | {f:.1} ms | {l:.1} ms | {:.1} ms |", s.name, f - l);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
