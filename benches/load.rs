//! Load benchmark: how many idle authenticated SSH connections the gateway holds, at
//! what memory and descriptor cost, how fast it accepts new ones, and how much memory
//! it gives back once they are gone. Prints a Markdown table for the README.
//!
//!     cargo bench --bench load                        # N = 1000, 5000, 10000
//!     LOAD_N=10000 LOAD_CONCURRENCY=128 LOAD_CHANNEL=0 cargo bench --bench load
//!     LOAD_GATEWAY=/tmp/ssh-gateway-jemalloc cargo bench --bench load   # another build
//!
//! For each N, a fresh `ssh-gateway serve` (SQLite store, local backend, static
//! control plane; admission caps raised for a burst from one address) is started and
//! an in-process russh client opens N TCP connections with at most LOAD_CONCURRENCY
//! in flight, completes key exchange and ed25519 public-key authentication on each,
//! and (LOAD_CHANNEL=1, the default) opens one session channel on each that asks for
//! nothing yet (LOAD_CHANNEL=0 holds bare connections, like `ssh -N`). Then all are
//! held idle, measured, and closed at once.
//!
//! Figures come from the gateway's /proc/<pid>: VmRSS, the number of open
//! descriptors, and utime+stime for "per core" (connections per CPU second the
//! gateway spent during the burst). The client runs on the same two cores, so the
//! wall-clock rate is what client and gateway manage together. Environment variables
//! the bench sees reach the gateway (`MALLOC_ARENA_MAX=2 cargo bench --bench load`).
//! With N held it also times `GET /metrics` (the scrape cost at N sessions), and with
//! LOAD_DRAIN=1 it ends the burst with SIGTERM instead of closing the clients: the
//! time from the signal to the gateway's exit is what telling N clients and closing
//! them takes (`drain_timeout_secs = 0`; the memory-after-close columns are then
//! empty).
//! LOAD_DB=postgres stores users and keys in a PostgreSQL the bench starts (as the
//! tests do) instead of SQLite; the database server's CPU is not the gateway's.
//! Not run by CI; nothing here is a pass/fail assertion.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use futures::StreamExt;
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

/// LOAD_GATEWAY=/path/to/ssh-gateway measures another build (an allocator variant)
/// against the same client.
fn gateway_bin() -> String {
    std::env::var("LOAD_GATEWAY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ssh-gateway").into())
}
const USER: &str = "bench";

/// The store every gateway of the run opens (set once in `main`).
static DATABASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn database_url() -> &'static str {
    DATABASE.get().expect("the database is chosen first")
}
/// Each connection must be up within this; a slower one counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// After the burst, before measuring "held": lets the last callbacks and log lines
/// finish.
const SETTLE: Duration = Duration::from_secs(2);
/// Times after the close at which RSS is read.
const AFTER_CLOSE: [u64; 3] = [1, 10, 30];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What /proc says about one process.
struct Proc(u32);

impl Proc {
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0))
            .unwrap()
            .count()
    }

    /// utime + stime, in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap();
        // The command name may hold spaces and parentheses: fields count from the last ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime and stime are fields 14 and 15.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks as f64 / hz
    }
}

/// This process's own CPU time (the client side), in seconds.
fn own_cpu_secs() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The client holds one descriptor per connection too.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    hard
}

/// Which allocator the gateway binary was linked with, from the symbols it carries.
fn allocator_of(binary: &str) -> &'static str {
    let bytes = std::fs::read(binary).unwrap_or_default();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if has(b"_rjem_je_") {
        "jemalloc"
    } else if has(b"mi_option_set") {
        "mimalloc"
    } else {
        "glibc malloc"
    }
}

struct Gateway {
    child: Child,
    port: u16,
    api_port: u16,
    /// The gateway process itself (a descendant of `child` under LOAD_WRAPPER).
    pid: u32,
}

impl Gateway {
    fn proc(&self) -> Proc {
        Proc(self.pid)
    }
}

/// The parent of `pid`, from /proc/<pid>/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The gateway process under `root`: `root` itself, or (when a wrapper such as
/// heaptrack started it) the descendant running the gateway binary.
fn find_gateway(root: u32) -> Option<u32> {
    let gateway = std::fs::canonicalize(gateway_bin()).ok()?;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            exe.as_deref() == Some(gateway.as_path()) && {
                let mut p = Some(pid);
                while let Some(q) = p.filter(|&q| q > 1) {
                    if q == root {
                        return true;
                    }
                    p = parent_of(q);
                }
                false
            }
        })
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM, so a wrapper (heaptrack) gets to write its report; then make sure.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, ssh_port: u16, api_port: u16, max: usize) -> std::path::PathBuf {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/host-keys\"\npublic_host = \"127.0.0.1\"\n\
             max_connections = {max}\ndrain_timeout_secs = 0\n\
             [admission]\nmax_unauthenticated = {max}\nmax_unauthenticated_per_source = {max}\npenalty_no_auth_secs = 0\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             [database]\nurl = \"{db}\"\n\
             [backend]\nkind = \"local\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sandboxes\"\n{audit}",
            d = dir.display(),
            db = database_url(),
            // LOAD_AUDIT=0: without the audit trail, to see what it costs.
            audit = if std::env::var("LOAD_AUDIT").is_ok_and(|v| v == "0") {
                "[audit]\nenabled = false\n"
            } else {
                ""
            },
        ),
    )
    .unwrap();
    config
}

fn admin(config: &Path, args: &[&str]) {
    let out = Command::new(gateway_bin())
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
}

fn start_gateway(dir: &Path, max: usize) -> Gateway {
    let (port, api_port) = (free_port(), free_port());
    let config = write_config(dir, port, api_port, max);
    let log = std::fs::File::create(dir.join(format!("gateway-{port}.log"))).unwrap();
    // LOAD_WRAPPER="heaptrack -o /tmp/gw" runs the gateway under a profiler.
    let wrapper = std::env::var("LOAD_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(gateway_bin());
            c
        }
        None => Command::new(gateway_bin()),
    };
    let child = command
        .args(["serve", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("LOAD_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Owned at once, so that a panic below still ends it.
    let mut gateway = Gateway {
        pid: child.id(),
        child,
        port,
        api_port,
    };
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            gateway.pid = find_gateway(gateway.child.id()).expect("the gateway process");
            return gateway;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("gateway did not listen on {port}; see {}", dir.display());
}

struct Trusting;

impl client::Handler for Trusting {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// One idle connection, held open by keeping these.
struct Held {
    _handle: client::Handle<Trusting>,
    _channel: Option<russh::Channel<client::Msg>>,
}

async fn connect_one(
    config: Arc<client::Config>,
    port: u16,
    key: Arc<PrivateKey>,
    channel: bool,
) -> Result<(Held, Duration), String> {
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut handle = client::connect_stream(config, tcp, Trusting)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let auth = handle
        .authenticate_publickey(USER, PrivateKeyWithHashAlg::new(key, None))
        .await
        .map_err(|e| format!("auth: {e}"))?;
    if !auth.success() {
        return Err(format!("auth refused: {auth:?}"));
    }
    let channel = if channel {
        Some(
            handle
                .channel_open_session()
                .await
                .map_err(|e| format!("channel: {e}"))?,
        )
    } else {
        None
    };
    Ok((
        Held {
            _handle: handle,
            _channel: channel,
        },
        started.elapsed(),
    ))
}

struct Run {
    n: usize,
    failed: usize,
    first_error: Option<String>,
    rss_before: u64,
    fds_before: usize,
    rss_held: u64,
    fds_held: usize,
    wall: Duration,
    gateway_cpu: f64,
    client_cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
    after: Vec<(u64, u64, usize)>,
    /// `GET /metrics` with N held: median time and body size.
    scrape_ms: f64,
    scrape_bytes: usize,
    /// LOAD_DRAIN=1: SIGTERM to exit with N held.
    drain: Option<Duration>,
}

/// One `GET /metrics` over a fresh connection: (milliseconds, body bytes).
fn scrape(api_port: u16) -> (f64, usize) {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api_port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| response.len() - at - 4);
    (ms, body)
}

fn run(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    n: usize,
    concurrency: usize,
    channel: bool,
    key: &Arc<PrivateKey>,
) -> Run {
    let gw = start_gateway(dir, 20_000.max(n + 1000));
    let proc = gw.proc();
    // Let start-up allocations (store pool, host key, runtime) settle.
    std::thread::sleep(Duration::from_secs(1));
    let (rss_before, fds_before) = (proc.rss_kib(), proc.fds());
    let config = Arc::new(client::Config {
        nodelay: true,
        ..Default::default()
    });

    let (cpu0, own0, started) = (proc.cpu_secs(), own_cpu_secs(), Instant::now());
    let results: Vec<_> = rt.block_on(async {
        futures::stream::iter(0..n)
            .map(|_| {
                let task = connect_one(config.clone(), gw.port, key.clone(), channel);
                async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::spawn(task)).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => Err(format!("task: {e}")),
                        Err(_) => Err("timed out".into()),
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    });
    let wall = started.elapsed();
    let (gateway_cpu, client_cpu) = (proc.cpu_secs() - cpu0, own_cpu_secs() - own0);

    let mut held = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok((h, t)) => {
                held.push(h);
                times.push(t.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    std::thread::sleep(SETTLE);
    let (rss_held, fds_held) = (proc.rss_kib(), proc.fds());
    let scrapes: Vec<(f64, usize)> = (0..21).map(|_| scrape(gw.api_port)).collect();
    let mut scrape_times: Vec<f64> = scrapes.iter().map(|s| s.0).collect();
    scrape_times.sort_by(|a, b| a.total_cmp(b));
    let (scrape_ms, scrape_bytes) = (scrape_times[scrape_times.len() / 2], scrapes[0].1);

    let mut after = Vec::new();
    let mut drain = None;
    if std::env::var("LOAD_DRAIN").is_ok_and(|v| v == "1") {
        let mut gw = gw;
        let signalled = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(gw.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        while gw.child.try_wait().ok().flatten().is_none()
            && signalled.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        drain = Some(signalled.elapsed());
        rt.block_on(async move { drop(held) });
    } else {
        // Close everything at once; the client sessions end when their handles go.
        rt.block_on(async move { drop(held) });
        let closed = Instant::now();
        for secs in AFTER_CLOSE {
            let at = closed + Duration::from_secs(secs);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            after.push((secs, proc.rss_kib(), proc.fds()));
        }
    }
    Run {
        n,
        failed,
        first_error,
        rss_before,
        fds_before,
        rss_held,
        fds_held,
        wall,
        gateway_cpu,
        client_cpu,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        after,
        scrape_ms,
        scrape_bytes,
        drain,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    let ns: Vec<usize> = std::env::var("LOAD_N")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let concurrency = env_or("LOAD_CONCURRENCY", 128usize).max(1);
    let channel = env_or("LOAD_CHANNEL", 1u8) != 0;
    let fd_limit = raise_fd_limit();
    if let Some(&max) = ns.iter().max()
        && (max as u64) + 64 > fd_limit
    {
        eprintln!("warning: N={max} needs more descriptors than RLIMIT_NOFILE allows ({fd_limit})");
    }

    let dir = tempfile::Builder::new()
        .prefix("sgw-load")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = match std::env::var("LOAD_DB").as_deref() {
        Ok("postgres") => rt.block_on(postgres::cluster().database("load_bench")),
        _ => format!("sqlite://{}/load.db", dir.display()),
    };
    DATABASE.set(url).unwrap();
    let key_path = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key_path)
        .status()
        .unwrap();
    assert!(status.success());
    let public_line = std::fs::read_to_string(key_path.with_extension("pub")).unwrap();
    let key = Arc::new(russh::keys::load_secret_key(&key_path, None).unwrap());

    // One user, its key and its sandbox, in the store every gateway below opens.
    let config = write_config(dir, free_port(), free_port(), 20_000);
    admin(&config, &["user", "add", USER]);
    let workdir = dir.join("sandboxes").join(USER);
    std::fs::create_dir_all(&workdir).unwrap();
    admin(
        &config,
        &[
            "sandbox",
            "add",
            USER,
            "--owner",
            USER,
            "--workdir",
            workdir.to_str().unwrap(),
        ],
    );
    rt.block_on(async {
        let store = ssh_gateway::store::Store::open(database_url(), 1)
            .await
            .unwrap();
        let user = store.user_by_name(USER).await.unwrap();
        let parsed = ssh_gateway::keys::parse_public_key(public_line.trim()).unwrap();
        store
            .add_key(ssh_gateway::store::NewKey {
                user_id: &user.id,
                name: "load",
                key: &parsed,
            })
            .await
            .unwrap();
        store.close().await;
    });

    let allocator = allocator_of(&gateway_bin());
    let mut runs = Vec::new();
    for &n in &ns {
        eprintln!("N={n}: connecting ({concurrency} in flight, session channel: {channel})");
        let r = run(&rt, dir, n, concurrency, channel, &key);
        eprintln!(
            "N={n}: {} held, {} failed{} in {:.1} s; RSS {} -> {}; fds {}",
            n - r.failed,
            r.failed,
            r.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            r.wall.as_secs_f64(),
            mib(r.rss_before),
            mib(r.rss_held),
            r.fds_held
        );
        runs.push(r);
    }

    let arena = std::env::var("MALLOC_ARENA_MAX")
        .map(|v| format!(", MALLOC_ARENA_MAX={v}"))
        .unwrap_or_default();
    println!(
        "\ngateway allocator: {allocator}{arena}; store: {}; idle connections {}; {concurrency} connects in flight; \
         rates are connect + key exchange + auth{}\n",
        if database_url().starts_with("sqlite:") {
            "SQLite"
        } else {
            "PostgreSQL (its own CPU not counted)"
        },
        if channel {
            "each with one idle session channel"
        } else {
            "without channels"
        },
        if channel { " + channel open" } else { "" },
    );
    println!(
        "| N held | RSS before | RSS at N | per session | gateway fds | connects/s (wall) | per gateway core | gateway CPU/conn | connect p50 / p99 | RSS +1 s | +10 s | +30 s | +30 s ÷ before |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let ok = r.n - r.failed;
        let per_session = (r.rss_held.saturating_sub(r.rss_before)) as f64 / ok.max(1) as f64;
        let after: Vec<String> = r.after.iter().map(|&(_, rss, _)| mib(rss)).collect();
        let last = r.after.last().map_or(0, |a| a.1);
        println!(
            "| {ok}{} | {} | {} | {per_session:.1} KiB | {} (+{} for {ok}) | {:.0} | {:.0} | {:.2} ms | {:.0} / {:.0} ms | {} | {:.2}× |",
            if r.failed > 0 {
                format!(" ({} failed)", r.failed)
            } else {
                String::new()
            },
            mib(r.rss_before),
            mib(r.rss_held),
            r.fds_held,
            r.fds_held.saturating_sub(r.fds_before),
            ok as f64 / r.wall.as_secs_f64(),
            ok as f64 / r.gateway_cpu.max(1e-9),
            r.gateway_cpu * 1000.0 / ok.max(1) as f64,
            r.p50_ms,
            r.p99_ms,
            after.join(" | "),
            last as f64 / r.rss_before.max(1) as f64,
        );
    }
    println!();
    for r in &runs {
        let fds: Vec<String> = r
            .after
            .iter()
            .map(|&(s, _, f)| format!("{f} at +{s} s"))
            .collect();
        println!(
            "N={}: burst {:.1} s wall, gateway CPU {:.1} s, client CPU {:.1} s; gateway fds before {}, after close {}; \
             GET /metrics {:.1} ms ({} bytes){}",
            r.n,
            r.wall.as_secs_f64(),
            r.gateway_cpu,
            r.client_cpu,
            r.fds_before,
            fds.join(", "),
            r.scrape_ms,
            r.scrape_bytes,
            r.drain
                .map(|d| format!("; SIGTERM to exit {:.2} s", d.as_secs_f64()))
                .unwrap_or_default()
        );
    }
}
