//! What the benchmarks share: the servers under comparison (the gateway on its local
//! and Kubernetes backends, OpenSSH sshd), an OpenSSH client with fixed options, and
//! timing helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_ssh-gateway");

pub struct Server {
    pub name: &'static str,
    pub port: u16,
    pub user: String,
    pub child: Child,
    /// Keeps the emulator (and its runtime) alive for the Kubernetes row.
    _cluster: Option<Cluster>,
}

pub struct Cluster {
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn start_sshd(dir: &Path, pubkey: &str) -> Option<Server> {
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

pub fn nix_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn start_gateway(dir: &Path) -> Server {
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
pub fn start_kube_gateway(dir: &Path, pubkey: &str) -> Server {
    start_kube_gateway_with(
        dir,
        pubkey,
        "ssh-gateway (Kubernetes)",
        "kgw",
        "",
        Duration::ZERO,
    )
}

/// As above; `tag` names its files (several may share `dir`), `extra` adds TOML, and
/// pods a StatefulSet creates turn Ready after `start_delay`.
pub fn start_kube_gateway_with(
    dir: &Path,
    pubkey: &str,
    name: &'static str,
    tag: &str,
    extra: &str,
    start_delay: Duration,
) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime
        .block_on(kube_emulator::Emulator::start(kube_emulator::Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            root: dir.join(format!("{tag}-cluster")),
            token: None,
            rbac: None,
            start_delay,
        }))
        .unwrap();
    emulator
        .write_kubeconfig(&dir.join(format!("{tag}-kubeconfig")))
        .unwrap();
    add_pod(&runtime, &emulator, "bench");
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/{tag}-keys\"\npublic_host = \"gw\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/{tag}.db\"\n\
             [backend]\nkind = \"kubernetes\"\n[control]\nkind = \"kubernetes\"\n\
             [kubernetes]\nkubeconfig = \"{d}/{tag}-kubeconfig\"\n{extra}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    add_bench_user(
        &runtime,
        &config,
        &format!("sqlite://{}/{tag}.db", dir.display()),
        pubkey,
    );
    // `BENCH_KUBE_B` (compare.rs) runs another build of the gateway in a second row.
    let binary = match tag {
        "kgwb" => std::env::var("BENCH_KUBE_B").unwrap_or_else(|_| GATEWAY.into()),
        _ => GATEWAY.into(),
    };
    let child = spawn_serve(&binary, &config, ssh_port);
    Server {
        name,
        port: ssh_port,
        user: "bench".into(),
        child,
        _cluster: Some(Cluster {
            emulator: Some(emulator),
            runtime,
        }),
    }
}

/// `binary serve --config config`, quiet, once `ssh_port` accepts.
pub fn spawn_serve(binary: &str, config: &Path, ssh_port: u16) -> Child {
    let child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(ssh_port);
    child
}

/// `ssh-gateway admin --config CONFIG ARGS…`; its stdout, panics on failure.
pub fn admin(config: &Path, args: &[&str]) -> String {
    let out = Command::new(GATEWAY)
        .arg("admin")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Adds user `bench` with `pubkey` to the store of the gateway configured by `config`.
pub fn add_bench_user(
    runtime: &tokio::runtime::Runtime,
    config: &Path,
    db_url: &str,
    pubkey: &str,
) {
    admin(config, &["user", "add", "bench"]);
    runtime.block_on(async {
        let store = ssh_gateway::store::Store::open(db_url, 1).await.unwrap();
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
}

/// The gateway on its local backend with `[control] kind = "http"` at `url` (no
/// token), for user `bench`.
pub fn start_http_gateway(dir: &Path, pubkey: &str, url: &str, tag: &str) -> Server {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/{tag}-keys\"\npublic_host = \"gw\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/{tag}.db\"\n\
             [backend]\nkind = \"local\"\n[control]\nkind = \"http\"\nurl = \"{url}\"\nsandbox_root = \"{d}/{tag}-sandboxes\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    add_bench_user(
        &runtime,
        &config,
        &format!("sqlite://{}/{tag}.db", dir.display()),
        pubkey,
    );
    let child = spawn_serve(GATEWAY, &config, ssh_port);
    Server {
        name: "ssh-gateway (HTTP control plane)",
        port: ssh_port,
        user: "bench".into(),
        child,
        _cluster: None,
    }
}

/// A Running pod for sandbox `id`, owned by the benchmark's user, on the host's
/// filesystem (so it has OpenSSH's sftp-server, as a full image would).
fn add_pod(runtime: &tokio::runtime::Runtime, emulator: &kube_emulator::Emulator, id: &str) {
    let _guard = runtime.enter();
    let pod = serde_json::json!({
        "metadata": {"name": format!("{id}-0"), "labels": {"ssh-gateway.io/sandbox": id},
                     "annotations": {"ssh-gateway.io/owner": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
    });
    emulator
        .store
        .create(kube_emulator::Kind::Pod, "default", pod)
        .unwrap();
}

impl Server {
    /// Adds a paused sandbox `id`: a StatefulSet at 0 replicas owned by the benchmark's
    /// user (Kubernetes servers only).
    pub fn add_paused(&self, id: &str) {
        let cluster = self._cluster.as_ref().expect("a Kubernetes server");
        let emulator = cluster.emulator.as_ref().expect("running");
        let _guard = cluster.runtime.enter();
        let set = serde_json::json!({
            "metadata": {"name": id, "labels": {"ssh-gateway.io/sandbox": id},
                         "annotations": {"ssh-gateway.io/owner": "bench"}},
            "spec": {"replicas": 0, "serviceName": id,
                     "selector": {"matchLabels": {"ssh-gateway.io/sandbox": id}},
                     "template": {"metadata": {"labels": {"ssh-gateway.io/sandbox": id}},
                                  "spec": {"containers": [{"name": "main", "image": "debian:12"}]}}},
        });
        emulator
            .store
            .create(kube_emulator::Kind::StatefulSet, "default", set)
            .unwrap();
    }

    /// Adds a pod for sandbox `id` to a Kubernetes server's cluster.
    pub fn add_pod(&self, id: &str) {
        let cluster = self._cluster.as_ref().expect("a Kubernetes server");
        let emulator = cluster.emulator.as_ref().expect("running");
        add_pod(&cluster.runtime, emulator, id);
    }
}

pub fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("port {port} never opened");
}

pub struct Client {
    pub key: PathBuf,
}

impl Client {
    pub fn opts(&self, cipher: &str) -> Vec<String> {
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

    /// `ssh user@server command`, with a sandbox id as the user.
    pub fn ssh_as(&self, server: &Server, cipher: &str, user: &str, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.opts(cipher))
            .args(["-p", &server.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command);
        cmd
    }

    pub fn ssh(&self, server: &Server, cipher: &str, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.opts(cipher))
            .args(["-p", &server.port.to_string()])
            .arg(format!("{}@127.0.0.1", server.user))
            .arg(command);
        cmd
    }

    pub fn scp(&self, server: &Server, cipher: &str, from: &str, to: &str) -> Command {
        let mut cmd = Command::new("scp");
        cmd.args(self.opts(cipher))
            .args(["-P", &server.port.to_string(), from, to]);
        cmd
    }
}

impl Client {
    /// `sftp -b batch` as `user` (a sandbox id on the gateways).
    pub fn sftp(&self, server: &Server, cipher: &str, user: &str, batch: &Path) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.args(self.opts(cipher))
            .args(["-P", &server.port.to_string(), "-b"])
            .arg(batch)
            .arg(format!("{user}@127.0.0.1"));
        cmd
    }
}

/// A fresh client key under `dir/home/.ssh`; returns the client and its public key.
pub fn client_key(dir: &Path) -> (Client, String) {
    std::fs::create_dir_all(dir.join("home/.ssh")).unwrap();
    let key = dir.join("home/.ssh/id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (Client { key }, pubkey)
}

/// `mib` MiB of incompressible bytes (xorshift), the same every run.
pub fn write_payload(path: &Path, mib: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
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

pub fn timed(mut cmd: Command, stdin: Option<&Path>) -> Duration {
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

/// The median; NaN for no samples (a test left out of the run).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// User + system CPU time of process `pid` so far (its own threads), in ms.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5): 11 and 12 counting from the
    // state, the first field after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) * 1000.0 / hz
}

/// CPU ms per GiB since `before` (server pid's, this process's), for `mib` MiB moved.
pub fn cpu_per_gib(before: (f64, f64), server: u32, mib: usize) -> (f64, f64) {
    let per_gib = 1024.0 / mib as f64;
    (
        (cpu_ms(server) - before.0) * per_gib,
        (cpu_ms(std::process::id()) - before.1) * per_gib,
    )
}
