//! Test harness: starts the real `ssh-gateway dev` binary on ephemeral ports in a
//! throwaway data directory and drives it with the real OpenSSH clients.
#![allow(dead_code)]

pub mod agent;
pub mod browser;
pub mod control_plane;
pub mod forward;
pub mod helm;
pub mod images;
pub mod kube;
pub mod live;
pub mod mux;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod raw;
pub mod relay;
pub mod terminal;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_ssh-gateway");

/// A running gateway in `dev` mode. Killed on drop.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub ssh_port: u16,
    pub api: String,
    /// The `dev` user's API token.
    pub token: String,
    /// The `dev` user's private key (its .pub was registered from ~/.ssh).
    pub dev_key: PathBuf,
    child: Child,
}

/// An SSH key pair made with ssh-keygen.
pub struct KeyPair {
    pub private: PathBuf,
    pub public_line: String,
}

pub fn keygen(dir: &Path, name: &str, args: &[&str]) -> KeyPair {
    let private = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", &format!("{name}@test"), "-f"])
        .arg(&private)
        .args(args)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen {args:?} failed");
    let public_line = std::fs::read_to_string(private.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", private.display())))
        .expect("public key written");
    KeyPair {
        private,
        public_line: public_line.trim().to_owned(),
    }
}

impl Gateway {
    pub fn start() -> Self {
        Self::start_in(Command::new(BIN))
    }

    /// `dev` on a machine without OpenSSH's sftp-server, scp or rsync: they are hidden
    /// in a private mount namespace (an empty directory over /usr/lib/openssh, a
    /// non-executable file over the binaries). Needs root, as CI has.
    pub fn start_without_openssh() -> Self {
        let hide = tempfile::tempdir().expect("tempdir");
        let (empty, plain) = (hide.path().join("empty"), hide.path().join("plain"));
        std::fs::create_dir(&empty).unwrap();
        std::fs::write(&plain, "").unwrap();
        let mut script = format!("mount --bind {} /usr/lib/openssh", empty.display());
        for bin in ["/usr/bin/scp", "/usr/bin/rsync", "/usr/bin/sftp-server"] {
            if Path::new(bin).exists() {
                script.push_str(&format!(" && mount --bind {} {bin}", plain.display()));
            }
        }
        script.push_str(" && exec \"$0\" \"$@\"");
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, BIN]);
        let gw = Self::start_in(cmd);
        // The mounts hold their sources; the directory may go.
        drop(hide);
        gw
    }

    fn start_in(mut command: Command) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let dev = keygen(&home.join(".ssh"), "id_ed25519", &["-t", "ed25519"]);
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let mut child = command
            .args([
                "dev",
                "--ssh-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("HOME", &home)
            .env("RUST_LOG", "info,ssh_gateway=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("gateway starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut ssh_port, mut api, mut token) = (None, None, None);
        while ssh_port.is_none() || api.is_none() || token.is_none() {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(_) => {
                    let log =
                        std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
                    panic!("gateway did not start; log:\n{log}");
                }
            };
            if let Some(addr) = line.strip_prefix("SSH on ") {
                ssh_port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
            } else if let Some(url) = line.strip_prefix("API on ") {
                api = Some(url.to_owned());
            } else if let Some(t) = line.strip_prefix("dev API token: ") {
                token = Some(t.to_owned());
            }
        }
        Gateway {
            dir,
            ssh_port: ssh_port.unwrap(),
            api: api.unwrap(),
            token: token.unwrap(),
            dev_key: dev.private,
            child,
        }
    }

    /// Waits up to `limit` for the gateway to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.data_dir().join("sandboxes").join(id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn client_opts(&self, key: &Path) -> Vec<String> {
        Self::client_opts_for(key)
    }

    /// Common client options: this key only, no agent, no prompts, no known_hosts.
    pub fn client_opts_for(key: &Path) -> Vec<String> {
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
            "ConnectTimeout=20",
            "-i",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([key.display().to_string()])
        .collect()
    }

    /// `ssh -p PORT <opts> <extra…>`; add `user@127.0.0.1` and the command yourself.
    pub fn ssh(&self, key: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.client_opts(key))
            .arg("-p")
            .arg(self.ssh_port.to_string());
        cmd
    }

    pub fn scp(&self, key: &Path) -> Command {
        let mut cmd = Command::new("scp");
        cmd.args(self.client_opts(key))
            .arg("-P")
            .arg(self.ssh_port.to_string());
        cmd
    }

    pub fn sftp(&self, key: &Path) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.args(self.client_opts(key))
            .arg("-P")
            .arg(self.ssh_port.to_string());
        cmd
    }

    /// The `-e` argument for rsync.
    pub fn rsync_shell(&self, key: &Path) -> String {
        format!(
            "ssh {} -p {}",
            self.client_opts(key).join(" "),
            self.ssh_port
        )
    }

    /// Runs `ssh-gateway admin --data-dir <data> ARGS…` and returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("admin")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("admin runs");
        assert!(
            out.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new user with an API token and one registered ed25519 key.
    pub async fn user_with_key(&self, name: &str) -> (String, KeyPair) {
        self.admin(&["user", "add", name]);
        let token = self.admin(&["token", "create", name]).trim().to_owned();
        let key = keygen(self.dir.path(), &format!("{name}_key"), &["-t", "ed25519"]);
        let resp = http()
            .post(format!("{}/users/me/ssh-keys", self.api))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "laptop", "public_key": key.public_line}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        (token, key)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    format!("{:x}", hasher.finalize())
}

/// Writes `len` pseudo-random bytes (every byte value occurs) to `path`.
pub fn random_file(path: &Path, len: usize) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    let mut written = 0;
    let mut block = vec![0u8; 1 << 16];
    while written < len {
        for chunk in block.chunks_mut(8) {
            // xorshift64*: fast, and incompressible enough for transfer tests.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let n = block.len().min(len - written);
        file.write_all(&block[..n]).unwrap();
        written += n;
    }
    file.flush().unwrap();
}

/// Runs a command with stdin from `input`, with a generous timeout so a hang fails
/// the test instead of the whole suite.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, Duration::from_secs(300));
    let _ = writer.join();
    out
}

pub fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_output(child, Duration::from_secs(300))
}

fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("command did not finish within {limit:?}");
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An HTTP client for the API. reqwest's TLS is rustls without a built-in provider
/// (the gateway brings aws-lc-rs), so one is installed for the process first.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

/// A loopback port nobody listens on, for a server a test is about to start. Taken
/// below the kernel's ephemeral range (32768-60999 by default), not from it: an
/// ephemeral port can be handed to one of the many outgoing connections tests make
/// between this check and the server's bind ("Address already in use", seen when the
/// whole suite ran). Threads of a test process share the counter, so no two get the
/// same port; the process id spreads test processes run side by side.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    let spread = std::process::id().wrapping_mul(977);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + spread.wrapping_add(n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

/// The configuration of a `serve` gateway on loopback with its SQLite store, host
/// keys and the static control plane's sandboxes in `dir`: `ssh_extra` are more
/// `[ssh]` fields (lines), `extra` whole sections after.
pub fn static_gateway_toml(
    dir: &Path,
    ssh_port: u16,
    api_port: u16,
    ssh_extra: &str,
    extra: &str,
) -> String {
    let d = dir.display();
    format!(
        "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n{ssh_extra}\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/gw.db\"\n\
         [control]\nkind = \"static\"\nsandbox_root = \"{d}/sandboxes\"\n{extra}"
    )
}

/// A `serve` gateway on SQLite and the static control plane, configured in `dir`
/// (`static_gateway_toml`, written to `dir/gateway.toml` on fresh ports) but not
/// started yet: add users and sandboxes, then `serve`.
pub struct StaticConfig {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub ssh_port: u16,
    pub api_port: u16,
}

impl StaticConfig {
    pub fn write(dir: &Path, ssh_extra: &str, extra: &str) -> Self {
        let (ssh_port, api_port) = (free_port(), free_port());
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            static_gateway_toml(dir, ssh_port, api_port, ssh_extra, extra),
        )
        .unwrap();
        StaticConfig {
            path,
            dir: dir.to_owned(),
            ssh_port,
            api_port,
        }
    }

    pub fn admin(&self, args: &[&str]) -> String {
        admin_with_config(&self.path, args)
    }

    /// A fresh API token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.admin(&["token", "create", user]).trim().to_owned()
    }

    /// Adds each of `users`, each with a fresh ed25519 key registered.
    pub fn users_with_keys(&self, users: &[&str]) -> Vec<KeyPair> {
        let db = format!("sqlite://{}/gw.db", self.dir.display());
        users_with_keys(&self.path, &db, &self.dir, users)
    }

    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Starts it, logging to `dir/gateway.log`.
    pub fn serve(&self) -> Serve {
        self.serve_with_env(&[])
    }

    pub fn serve_with_env(&self, env: &[(&str, &str)]) -> Serve {
        Serve::start_with_env(
            &self.path,
            &self.dir.join("gateway.log"),
            self.api_port,
            env,
        )
    }
}

/// The keys registered to `token`'s user, as `GET /users/me/ssh-keys` lists them.
pub async fn list_keys(api: &str, token: &str) -> serde_json::Value {
    http()
        .get(format!("{api}/users/me/ssh-keys"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `ssh-gateway serve --config FILE`, killed and reaped on drop.
pub struct Serve {
    child: Child,
    /// The log, opened at start: readable on drop even after the test's temporary
    /// directory (dropped first in most fixtures) has removed it.
    log: Option<std::fs::File>,
}

impl Serve {
    /// Starts serve and waits until its API port answers.
    pub fn start(config: &Path, log: &Path, api_port: u16) -> Serve {
        Self::start_with_env(config, log, api_port, &[])
    }

    /// As `start`, with these environment variables set for it.
    pub fn start_with_env(config: &Path, log: &Path, api_port: u16, env: &[(&str, &str)]) -> Serve {
        // Wrapped at once so every path (including the panic below) reaps it.
        let writer = std::fs::File::create(log).unwrap();
        let mut server = Serve {
            log: std::fs::File::open(log).ok(),
            child: Command::new(BIN)
                .args(["serve", "--config"])
                .arg(config)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(writer)
                .spawn()
                .unwrap(),
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "serve exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "serve did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

impl Serve {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for serve to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, limit)
    }
}

/// Waits up to `limit` for `child` to exit by itself.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test's gateway log dies with its temporary directory: show its
        // end, so a failure in CI says what the gateway was doing.
        if std::thread::panicking() {
            let mut log = String::new();
            if let Some(file) = &mut self.log {
                use std::io::Read;
                let _ = file.read_to_string(&mut log);
            }
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- last {} lines of the gateway log ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// `ssh-gateway admin --config FILE ARGS…`; returns stdout, panics on failure.
pub fn admin_with_config(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
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

/// `program` (`ssh`, `scp` or `sftp`) with the common client options and `key`,
/// pointed at `port` on loopback; add the destination and arguments yourself.
pub fn client(program: &str, key: &KeyPair, port: u16) -> Command {
    let port_flag = if program == "ssh" { "-p" } else { "-P" };
    let mut cmd = Command::new(program);
    cmd.args(Gateway::client_opts_for(&key.private))
        .args([port_flag, &port.to_string()]);
    cmd
}

/// Adds each of `users` to the store of the gateway configured by `config` (database
/// `db_url`), each with a fresh ed25519 key in `dir`, in order.
pub fn users_with_keys(config: &Path, db_url: &str, dir: &Path, users: &[&str]) -> Vec<KeyPair> {
    users
        .iter()
        .map(|user| {
            admin_with_config(config, &["user", "add", user]);
            let key = keygen(dir, user, &["-t", "ed25519"]);
            register_key(db_url, user, &key);
            key
        })
        .collect()
}

/// Registers `key` for `user` straight in the store at `db_url` (the key API itself
/// is tested on its own).
pub fn register_key(db_url: &str, user: &str, key: &KeyPair) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = ssh_gateway::store::Store::open(db_url, 1).await.unwrap();
        let user = store.user_by_name(user).await.unwrap();
        let parsed = ssh_gateway::keys::parse_public_key(&key.public_line).unwrap();
        store
            .add_key(ssh_gateway::store::NewKey {
                user_id: &user.id,
                name: "test",
                key: &parsed,
            })
            .await
            .unwrap();
        store.close().await;
    });
}
