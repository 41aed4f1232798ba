//! Side-by-side benchmark: the same OpenSSH client against this gateway (`dev`, local
//! backend), the gateway on its Kubernetes backend through the kube-emulator (pods/exec
//! and port-forward WebSockets, processes local), and OpenSSH `sshd` on loopback; same
//! cipher, rounds interleaved so machine noise hits all alike. Prints a Markdown table
//! for the README.
//!
//!     cargo bench --bench compare                # defaults: 1 GiB, 3 rounds
//!     BENCH_MIB=256 BENCH_ROUNDS=5 cargo bench --bench compare
//!     BENCH_SERVERS=kube,sshd BENCH_CIPHERS=aes cargo bench --bench compare
//!
//! `BENCH_SERVERS` (any of `local`, `kube`, `sshd`, comma-separated), `BENCH_CIPHERS`
//! (substrings of cipher names) and `BENCH_TESTS` (any of `true`, `up`, `down`,
//! `scp-up`, `scp-down`) narrow the run for quicker iteration or profiling; columns
//! not run print `–`. `BENCH_KUBE_B=/path/to/ssh-gateway` adds a row for another build
//! on the Kubernetes backend (its own emulator), interleaved with the others, for A/B
//! comparisons under the same noise. `BENCH_CPU=1` adds a table of CPU time per GiB
//! for the server process and for this process (which hosts the emulator). The README's table is always a full default run.
//!
//! Needs openssh-server (for /usr/sbin/sshd) and openssh-client. Not run by CI.

mod common;

use common::{
    client_key, env_usize, median, start_gateway, start_kube_gateway, start_sshd, timed,
    write_payload,
};
const CIPHERS: &[&str] = &["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"];
const LATENCY_RUNS: usize = 20;

#[derive(Default, Clone)]
struct Row {
    latency_ms: Vec<f64>,
    up: Vec<f64>,
    down: Vec<f64>,
    scp_up: Vec<f64>,
    scp_down: Vec<f64>,
    /// Per transfer column (up, down, scp up, scp down): CPU ms per GiB of the server
    /// process and of this process (the emulator, for the Kubernetes rows).
    cpu: [Vec<(f64, f64)>; 4],
}

fn main() {
    // This process hosts the emulator standing in for the API server and kubelet,
    // which run on other machines in a cluster and reuse their buffers. Under glibc's
    // defaults every large frame it receives (the gateway sends up to 1 MiB) is a
    // fresh mmap faulted in page by page; keep them in the heap instead.
    if std::env::var_os("BENCH_EMULATOR_DEFAULT_MALLOC").is_none() {
        // SAFETY: mallopt only sets allocator parameters; any value is accepted.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
    }
    let mib = env_usize("BENCH_MIB", 1024);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let dir = tempfile::Builder::new()
        .prefix("sgw-bench")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let (client, pubkey) = client_key(dir);
    let payload = dir.join("payload.bin");
    write_payload(&payload, mib);
    let bytes = (mib * 1024 * 1024) as f64;
    let wanted = |name: &str| {
        std::env::var("BENCH_SERVERS")
            .map(|v| v.split(',').any(|s| s.trim() == name))
            .unwrap_or(true)
    };
    let ciphers: Vec<&str> = match std::env::var("BENCH_CIPHERS") {
        Ok(v) => CIPHERS
            .iter()
            .copied()
            .filter(|c| v.split(',').any(|s| c.contains(s.trim())))
            .collect(),
        Err(_) => CIPHERS.to_vec(),
    };
    let test = |name: &str| {
        std::env::var("BENCH_TESTS")
            .map(|v| v.split(',').any(|s| s.trim() == name))
            .unwrap_or(true)
    };
    let mut servers = Vec::new();
    if wanted("local") {
        servers.push(start_gateway(dir));
    }
    if wanted("kube") {
        servers.push(start_kube_gateway(dir, pubkey.trim()));
    }
    if std::env::var_os("BENCH_KUBE_B").is_some() {
        servers.push(common::start_kube_gateway_with(
            dir,
            pubkey.trim(),
            "ssh-gateway (Kubernetes, BENCH_KUBE_B)",
            "kgwb",
            "",
            std::time::Duration::ZERO,
        ));
    }
    if wanted("sshd")
        && let Some(sshd) = start_sshd(dir, &pubkey)
    {
        servers.push(sshd);
    }
    let reference = servers.iter().position(|s| s.name == "OpenSSH sshd");
    let remote_payload = payload.display().to_string();
    let remote_up = dir.join("scp-up.bin").display().to_string();
    let local_down = dir.join("scp-down.bin");

    let mut rows: Vec<Vec<Row>> = vec![vec![Row::default(); servers.len()]; ciphers.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (c, cipher) in ciphers.iter().enumerate() {
            for (s, server) in servers.iter().enumerate() {
                let row = &mut rows[c][s];
                if test("true") {
                    for _ in 0..LATENCY_RUNS / rounds.max(1) + 1 {
                        let t = timed(client.ssh(server, cipher, "true"), None);
                        row.latency_ms.push(t.as_secs_f64() * 1000.0);
                    }
                }
                if test("up") {
                    let cpu0 = (
                        common::cpu_ms(server.child.id()),
                        common::cpu_ms(std::process::id()),
                    );
                    let t = timed(
                        client.ssh(server, cipher, "cat > /dev/null"),
                        Some(&payload),
                    );
                    row.up.push(bytes / t.as_secs_f64() / 1e6);
                    row.cpu[0].push(common::cpu_per_gib(cpu0, server.child.id(), mib));
                }
                if test("down") {
                    let cpu0 = (
                        common::cpu_ms(server.child.id()),
                        common::cpu_ms(std::process::id()),
                    );
                    let t = timed(
                        client.ssh(server, cipher, &format!("cat {remote_payload}")),
                        None,
                    );
                    row.down.push(bytes / t.as_secs_f64() / 1e6);
                    row.cpu[1].push(common::cpu_per_gib(cpu0, server.child.id(), mib));
                }
                if test("scp-up") {
                    let target = format!("{}@127.0.0.1:{remote_up}", server.user);
                    let cpu0 = (
                        common::cpu_ms(server.child.id()),
                        common::cpu_ms(std::process::id()),
                    );
                    let t = timed(client.scp(server, cipher, &remote_payload, &target), None);
                    row.scp_up.push(bytes / t.as_secs_f64() / 1e6);
                    row.cpu[2].push(common::cpu_per_gib(cpu0, server.child.id(), mib));
                    let _ = std::fs::remove_file(&remote_up);
                }
                if test("scp-down") {
                    let source = format!("{}@127.0.0.1:{remote_payload}", server.user);
                    let cpu0 = (
                        common::cpu_ms(server.child.id()),
                        common::cpu_ms(std::process::id()),
                    );
                    let t = timed(
                        client.scp(server, cipher, &source, &local_down.display().to_string()),
                        None,
                    );
                    row.scp_down.push(bytes / t.as_secs_f64() / 1e6);
                    row.cpu[3].push(common::cpu_per_gib(cpu0, server.child.id(), mib));
                    let _ = std::fs::remove_file(&local_down);
                }
            }
        }
    }

    println!(
        "\n{mib} MiB payload, {rounds} rounds, medians; MB/s include connection setup; ratio = this row / sshd\n"
    );
    println!(
        "| cipher | server | `ssh host true` | up `cat > /dev/null` | down `cat file` | scp up | scp down |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (c, cipher) in ciphers.iter().enumerate() {
        let med: Vec<[f64; 5]> = rows[c]
            .iter()
            .map(|r| {
                [
                    median(r.latency_ms.clone()),
                    median(r.up.clone()),
                    median(r.down.clone()),
                    median(r.scp_up.clone()),
                    median(r.scp_down.clone()),
                ]
            })
            .collect();
        for (s, server) in servers.iter().enumerate() {
            let m = med[s];
            let cell = |i: usize, unit: &str, precision: usize| {
                if m[i].is_nan() {
                    return "–".to_owned();
                }
                let ratio = match reference {
                    Some(r) if r != s => format!(" ({:.2}×)", m[i] / med[r][i]),
                    _ => String::new(),
                };
                format!("{:.precision$} {unit}{ratio}", m[i])
            };
            println!(
                "| {cipher} | {} | {} | {} | {} | {} | {} |",
                server.name,
                cell(0, "ms", 1),
                cell(1, "MB/s", 0),
                cell(2, "MB/s", 0),
                cell(3, "MB/s", 0),
                cell(4, "MB/s", 0),
            );
        }
    }
    if std::env::var_os("BENCH_CPU").is_some() {
        println!(
            "\nCPU ms per GiB, medians: server process (its own threads; for sshd and the local gateway \
             not their child processes) / this process (the emulator and its pod processes' I/O, Kubernetes rows)\n"
        );
        println!("| cipher | server | up | down | scp up | scp down |");
        println!("|---|---|---|---|---|---|");
        for (c, cipher) in ciphers.iter().enumerate() {
            for (s, server) in servers.iter().enumerate() {
                if reference == Some(s) {
                    continue; // sshd's work is in forked children, not in its own threads
                }
                let cells: Vec<String> = rows[c][s]
                    .cpu
                    .iter()
                    .map(|v| {
                        if v.is_empty() {
                            return "–".to_owned();
                        }
                        let server = median(v.iter().map(|x| x.0).collect());
                        let here = median(v.iter().map(|x| x.1).collect());
                        format!("{server:.0} / {here:.0}")
                    })
                    .collect();
                println!("| {cipher} | {} | {} |", server.name, cells.join(" | "));
            }
        }
    }
}
