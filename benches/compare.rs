//! Side-by-side benchmark: the same OpenSSH client against this gateway (`dev`, local
//! backend), the gateway on its Kubernetes backend through the kube-emulator (pods/exec
//! and port-forward WebSockets, processes local), and OpenSSH `sshd` on loopback; same
//! cipher, rounds interleaved so machine noise hits all alike. Prints a Markdown table
//! for the README.
//!
//!     cargo bench --bench compare                # defaults: 1 GiB, 3 rounds
//!     BENCH_MIB=256 BENCH_ROUNDS=5 cargo bench --bench compare
//!
//! Needs openssh-server (for /usr/sbin/sshd) and openssh-client. Not run by CI.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GATEWAY: &str = env!("CARGO_BIN_EXE_ssh-gateway");
const CIPHERS: &[&str] = &["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"];
const LATENCY_RUNS: usize = 20;

struct Server {
    name: &'static str,
    port: u16,
    user: String,
    child: Child,
    /// Keeps the emulator (and its runtime) alive for the Kubernetes row.
    _cluster: Option<Cluster>,
}

struct Cluster {
    emulator: Option<kube_emulator::Emulator>,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        drop(self.emulator.take());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_sshd(dir: &Path, pubkey: &str) -> Option<Server> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        eprintln!(
            "/usr/sbin/sshd not found (apt-get install openssh-server): skipping the reference"
        );
        return None;
    }
    let _ = std::fs::create_dir_all("/run/sshd");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("sshd_host_key"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(dir.join("authorized_keys"), pubkey).unwrap();
    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/sshd_host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nLogLevel ERROR\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(sshd)
        .arg("-D")
        .arg("-f")
        .arg(&config)
        .spawn()
        .unwrap();
    wait_port(port);
    let user = nix_user();
    Some(Server {
        name: "OpenSSH sshd",
        port,
        user,
        child,
        _cluster: None,
    })
}

fn nix_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn start_gateway(dir: &Path) -> Server {
    let mut child = Command::new(GATEWAY)
        .args([
            "dev",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("gw-data"))
        .env("HOME", dir.join("home"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut port = 0;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(addr) = line.strip_prefix("SSH on ") {
            port = addr.rsplit(':').next().unwrap().parse().unwrap();
            break;
        }
    }
    // Keep reading so the gateway never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    assert!(port != 0, "gateway did not start");
    Server {
        name: "ssh-gateway (local)",
        port,
        user: "demo".into(),
        child,
        _cluster: None,
    }
}

/// The gateway on its Kubernetes backend and control plane, against an in-process
/// kube-emulator holding one pod for sandbox `bench`.
fn start_kube_gateway(dir: &Path, pubkey: &str) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime
        .block_on(kube_emulator::Emulator::start(kube_emulator::Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            root: dir.join("cluster"),
            token: None,
            start_delay: Duration::ZERO,
        }))
        .unwrap();
    emulator.write_kubeconfig(&dir.join("kubeconfig")).unwrap();
    {
        let _guard = runtime.enter();
        let pod = serde_json::json!({
            "metadata": {"name": "bench-0", "labels": {"ssh-gateway.io/sandbox": "bench"},
                         "annotations": {"ssh-gateway.io/owner": "bench"}},
            "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
        });
        emulator
            .store
            .create(kube_emulator::Kind::Pod, "default", pod)
            .unwrap();
    }
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.join("kube-gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/kgw-keys\"\npublic_host = \"gw\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/kgw.db\"\n\
             [backend]\nkind = \"kubernetes\"\n[control]\nkind = \"kubernetes\"\n\
             [kubernetes]\nkubeconfig = \"{d}/kubeconfig\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let admin = |args: &[&str]| {
        let out = Command::new(GATEWAY)
            .arg("admin")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    admin(&["user", "add", "bench"]);
    runtime.block_on(async {
        let store =
            ssh_gateway::store::Store::open(&format!("sqlite://{}/kgw.db", dir.display()), 1)
                .await
                .unwrap();
        let user = store.user_by_name("bench").await.unwrap();
        let key = ssh_gateway::keys::parse_public_key(pubkey).unwrap();
        store
            .add_key(ssh_gateway::store::NewKey {
                user_id: &user.id,
                name: "bench",
                key: &key,
            })
            .await
            .unwrap();
    });
    let child = Command::new(GATEWAY)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(ssh_port);
    Server {
        name: "ssh-gateway (Kubernetes)",
        port: ssh_port,
        user: "bench".into(),
        child,
        _cluster: Some(Cluster {
            emulator: Some(emulator),
            runtime,
        }),
    }
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("port {port} never opened");
}

struct Client {
    key: PathBuf,
}

impl Client {
    fn opts(&self, cipher: &str) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "LogLevel=ERROR",
            "-o",
            &format!("Ciphers={cipher}"),
            "-i",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([self.key.display().to_string()])
        .collect()
    }

    fn ssh(&self, server: &Server, cipher: &str, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.opts(cipher))
            .args(["-p", &server.port.to_string()])
            .arg(format!("{}@127.0.0.1", server.user))
            .arg(command);
        cmd
    }

    fn scp(&self, server: &Server, cipher: &str, from: &str, to: &str) -> Command {
        let mut cmd = Command::new("scp");
        cmd.args(self.opts(cipher))
            .args(["-P", &server.port.to_string(), from, to]);
        cmd
    }
}

fn timed(mut cmd: Command, stdin: Option<&Path>) -> Duration {
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    if let Some(path) = stdin {
        cmd.stdin(std::fs::File::open(path).unwrap());
    } else {
        cmd.stdin(Stdio::null());
    }
    let started = Instant::now();
    let status = cmd.status().unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[derive(Default, Clone)]
struct Row {
    latency_ms: Vec<f64>,
    up: Vec<f64>,
    down: Vec<f64>,
    scp_up: Vec<f64>,
    scp_down: Vec<f64>,
}

fn main() {
    let mib = env_usize("BENCH_MIB", 1024);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let dir = tempfile::Builder::new()
        .prefix("sgw-bench")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    std::fs::create_dir_all(dir.join("home/.ssh")).unwrap();
    let key = dir.join("home/.ssh/id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    let payload = dir.join("payload.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&payload).unwrap());
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    let bytes = (mib * 1024 * 1024) as f64;
    let client = Client { key };
    let mut servers = vec![start_gateway(dir), start_kube_gateway(dir, pubkey.trim())];
    if let Some(sshd) = start_sshd(dir, &pubkey) {
        servers.push(sshd);
    }
    let reference = servers.iter().position(|s| s.name == "OpenSSH sshd");
    let remote_payload = payload.display().to_string();
    let remote_up = dir.join("scp-up.bin").display().to_string();
    let local_down = dir.join("scp-down.bin");

    let mut rows: Vec<Vec<Row>> = vec![vec![Row::default(); servers.len()]; CIPHERS.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (c, cipher) in CIPHERS.iter().enumerate() {
            for (s, server) in servers.iter().enumerate() {
                let row = &mut rows[c][s];
                for _ in 0..LATENCY_RUNS / rounds.max(1) + 1 {
                    let t = timed(client.ssh(server, cipher, "true"), None);
                    row.latency_ms.push(t.as_secs_f64() * 1000.0);
                }
                let t = timed(
                    client.ssh(server, cipher, "cat > /dev/null"),
                    Some(&payload),
                );
                row.up.push(bytes / t.as_secs_f64() / 1e6);
                let t = timed(
                    client.ssh(server, cipher, &format!("cat {remote_payload}")),
                    None,
                );
                row.down.push(bytes / t.as_secs_f64() / 1e6);
                let target = format!("{}@127.0.0.1:{remote_up}", server.user);
                let t = timed(client.scp(server, cipher, &remote_payload, &target), None);
                row.scp_up.push(bytes / t.as_secs_f64() / 1e6);
                let _ = std::fs::remove_file(&remote_up);
                let source = format!("{}@127.0.0.1:{remote_payload}", server.user);
                let t = timed(
                    client.scp(server, cipher, &source, &local_down.display().to_string()),
                    None,
                );
                row.scp_down.push(bytes / t.as_secs_f64() / 1e6);
                let _ = std::fs::remove_file(&local_down);
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
    for (c, cipher) in CIPHERS.iter().enumerate() {
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
            let ratio = |i: usize| match reference {
                Some(r) if r != s => format!(" ({:.2}×)", m[i] / med[r][i]),
                _ => String::new(),
            };
            println!(
                "| {cipher} | {} | {:.1} ms{} | {:.0} MB/s{} | {:.0} MB/s{} | {:.0} MB/s{} | {:.0} MB/s{} |",
                server.name,
                m[0],
                ratio(0),
                m[1],
                ratio(1),
                m[2],
                ratio(2),
                m[3],
                ratio(3),
                m[4],
                ratio(4)
            );
        }
    }
}
