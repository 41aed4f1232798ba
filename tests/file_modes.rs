//! What the gateway keeps on disk is its owner's alone: the dev data directory and
//! its host-keys directory 0700, the SQLite database and its companions 0600, under
//! the usual umask 022 and when an older version left them open.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{BIN, Serve, admin_with_config, free_port};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `ssh-gateway dev --data-dir DATA` under umask 022, killed on drop.
struct Dev {
    child: Child,
    log: std::path::PathBuf,
}

impl Dev {
    fn start(data: &Path, log: &Path) -> Dev {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "dev",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("HOME", data.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
        // SAFETY: umask is async-signal-safe and touches nothing but the child's mask.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        let mut dev = Dev {
            child: cmd.spawn().unwrap(),
            log: log.to_owned(),
        };
        // Up once the banner is out: the database is open and migrated by then.
        let stdout = dev.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with("dev API token: ") => return dev,
                Ok(_) => {}
                Err(_) => panic!("dev did not start: {}", dev.log()),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_private_database(data: &Path) {
    let db = data.join("gateway.db");
    assert_eq!(mode(&db), 0o600, "gateway.db");
    // WAL mode: while the gateway runs it has -wal and -shm files; whichever exist
    // must be as private as the database they belong to.
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = data.join(format!("gateway.db{suffix}"));
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "gateway.db{suffix}");
        }
    }
}

#[test]
fn dev_creates_a_private_data_directory_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = Dev::start(&data, &dir.path().join("log"));
    assert_eq!(mode(&data), 0o700, "data dir; log:\n{}", dev.log());
    assert_eq!(mode(&data.join("host-keys")), 0o700, "host-keys dir");
    assert_eq!(
        mode(&data.join("host-keys/ssh_host_ed25519_key")),
        0o600,
        "host key"
    );
    assert_private_database(&data);
    assert!(
        data.join("gateway.db-wal").exists(),
        "expected the WAL file while running"
    );
}

#[test]
fn dev_tightens_a_data_directory_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // What an older version left behind: a database made by the admin CLI, with the
    // directory and file as open as umask 022 and SQLite's defaults made them.
    let out = Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(&data)
        .args(["user", "add", "alice"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(data.join("host-keys")).unwrap();
    let open = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    open(&data, 0o755).unwrap();
    open(&data.join("host-keys"), 0o755).unwrap();
    open(&data.join("gateway.db"), 0o644).unwrap();

    let dev = Dev::start(&data, &dir.path().join("log"));
    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&data.join("host-keys")), 0o700, "host-keys dir");
    assert_private_database(&data);
    let log = dev.log();
    assert!(log.contains("tightened permissions"), "{log}");
    assert!(log.contains("gateway.db"), "{log}");
}

#[test]
fn serve_keeps_its_sqlite_database_private() {
    let dir = tempfile::tempdir().unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/gw.db\"\n\
             [control]\nkind = \"static\"\nsandbox_root = \"{d}/sb\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    // Created by the admin CLI, then opened by serve: private either way.
    admin_with_config(&config, &["user", "add", "u"]);
    assert_eq!(mode(&dir.path().join("gw.db")), 0o600);
    std::fs::set_permissions(
        dir.path().join("gw.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let _server = Serve::start(&config, &dir.path().join("log"), api_port);
    assert_eq!(mode(&dir.path().join("gw.db")), 0o600);
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("gw.db{suffix}"));
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "gw.db{suffix}");
        }
    }
}
