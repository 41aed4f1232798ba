//! A throwaway PostgreSQL cluster from the installed server binaries, or the server
//! named by `DATABASE_URL`. initdb refuses to run as root, so as root the cluster
//! runs as the unprivileged `nobody` user.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Cluster {
    /// `postgres://…/postgres`: the maintenance database to create test databases from.
    pub admin_url: String,
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    as_nobody: bool,
    /// The server options `pg_ctl start` passes, kept for restarts.
    server_options: String,
}

fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries not found (install postgresql, or set DATABASE_URL)")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        command(&self.bin, program, self.as_nobody)
    }

    fn create() -> Cluster {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Cluster {
                admin_url: url,
                dir: None,
                bin: PathBuf::new(),
                as_nobody: false,
                server_options: String::new(),
            };
        }
        let bin = bindir();
        let as_nobody = is_root();
        let dir = tempfile::Builder::new().prefix("sgw-pg").tempdir().unwrap();
        let data = dir.path().join("data");
        if as_nobody {
            chown_nobody(dir.path());
        }
        let port = free_port();
        let run = |mut cmd: Command, what: &str| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mut initdb = command(&bin, "initdb", as_nobody);
        initdb
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data);
        run(initdb, "initdb");
        let server_options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.path().display()
        );
        let cluster = Cluster {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir: Some(dir),
            bin,
            as_nobody,
            server_options,
        };
        cluster.start();
        cluster
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start(&self) {
        let dir = self.dir.as_ref().expect("a cluster of our own");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(dir.path().join("data"))
            .arg("-l")
            .arg(dir.path().join("pg.log"))
            .arg("-o")
            .arg(&self.server_options)
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server the way an operator's restart does (fast shutdown).
    pub fn stop(&self) {
        let dir = self.dir.as_ref().expect("a cluster of our own");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh, empty database on this cluster; returns its URL.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .expect("connect to postgres");
        let unique = format!("{name}_{}", std::process::id());
        let drop = format!("DROP DATABASE IF EXISTS \"{unique}\"");
        let create = format!("CREATE DATABASE \"{unique}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = self
            .admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&self.admin_url);
        format!("{base}/{unique}")
    }
}

fn command(bin: &Path, program: &str, as_nobody: bool) -> Command {
    let path = bin.join(program);
    if as_nobody {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "nobody", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

fn chown_nobody(dir: &Path) {
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody exists");
    nix::unistd::chown(dir, Some(nobody.uid), Some(nobody.gid)).unwrap();
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Statics are never dropped, so the cluster is stopped from an exit hook.
extern "C" fn stop_cluster() {
    if let Some(cluster) = CLUSTER.get()
        && let Some(dir) = &cluster.dir
    {
        let _ = cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(dir.path());
    }
}

/// One cluster per test binary, stopped when the process exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let cluster = Cluster::create();
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(stop_cluster) };
        cluster
    })
}
