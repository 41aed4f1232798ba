//! The embedded default (`ssh-gateway dev`): SQLite and host keys in a data directory,
//! the local backend, a user `dev` holding the invoking user's ~/.ssh/*.pub keys, and
//! a sandbox `demo` owned by `dev`. Everything a newcomer needs on a fresh machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{
    AdmissionConfig, ApiConfig, BackendConfig, CertificatesConfig, Config, ControlConfig,
    DatabaseConfig, SshConfig, default_shell,
};
use crate::keys::{Escaped, check_key_name, escape, parse_public_key};
use crate::store::{NewKey, Store, StoreError, ensure_private_dir};

pub const DEV_USER: &str = "dev";
pub const DEMO_SANDBOX: &str = "demo";

/// Creates the data directory (and its host-keys directory) readable by the owner
/// only, and tightens them if they already exist more open: the directory holds the
/// database with every user's tokens and keys, and the host private key.
pub fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    ensure_private_dir(data_dir)?;
    ensure_private_dir(&data_dir.join(HOST_KEY_DIR))?;
    ensure_private_dir(&data_dir.join(USER_CA_DIR))?;
    Ok(())
}

const HOST_KEY_DIR: &str = "host-keys";
const USER_CA_DIR: &str = "user-ca";
const USER_CA_FILE: &str = "user_ca_ed25519_key";

pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("gateway.db").display())
}

/// The configuration `dev` runs with.
pub fn config(data_dir: &Path, ssh_listen: SocketAddr, api_listen: SocketAddr) -> Config {
    Config {
        ssh: SshConfig {
            listen: ssh_listen,
            host_key_dir: data_dir.join(HOST_KEY_DIR),
            public_host: ssh_listen.ip().to_string(),
            // 0: filled in with the bound port, so `--ssh-listen 127.0.0.1:0` works.
            public_port: 0,
            login_grace_secs: 30,
            max_auth_attempts: 6,
            max_connections: 256,
            inactivity_timeout_secs: 3600,
            accept_env: vec!["LANG".into(), "LC_*".into(), "COLORTERM".into()],
            proxy_protocol: false,
            proxy_protocol_from: Vec::new(),
            // Ctrl-C in a terminal means now.
            drain_timeout_secs: 0,
            agent_forwarding: true,
        },
        api: ApiConfig {
            listen: api_listen,
            ..ApiConfig::default()
        },
        admission: AdmissionConfig::default(),
        sftp: Default::default(),
        revocation: Default::default(),
        audit: Default::default(),
        recording: Default::default(),
        activity: Default::default(),
        database: DatabaseConfig {
            url: sqlite_url(data_dir),
            max_connections: 5,
            migrate_on_start: true,
        },
        backend: BackendConfig::Local {
            shell: default_shell(),
        },
        control: ControlConfig::Static {
            sandbox_root: data_dir.join("sandboxes"),
        },
        kubernetes: None,
        remotes: Default::default(),
        routing: Default::default(),
        fronts: Default::default(),
        // dev issues certificates too, from a CA of its own in the data directory.
        certificates: Some(CertificatesConfig {
            ca_key_file: Some(data_dir.join(USER_CA_DIR).join(USER_CA_FILE)),
            max_ttl_secs: 16 * 3600,
            clock_skew_secs: 60,
            trusted_ca_files: Vec::new(),
        }),
    }
}

/// What seeding did, for the start-up message.
pub struct Seeded {
    pub token: String,
    /// Paths of the registered key files, already escaped for printing.
    pub keys_registered: Vec<String>,
    pub workdir: PathBuf,
}

/// Creates the dev user, the demo sandbox and a fresh dev API token, and registers
/// the public keys found in `ssh_dir` (normally ~/.ssh).
pub async fn seed(
    store: &Store,
    data_dir: &Path,
    ssh_dir: Option<&Path>,
) -> anyhow::Result<Seeded> {
    let user = store.ensure_user(DEV_USER).await?;
    match store.create_sandbox(DEMO_SANDBOX, &user.id, None).await {
        Ok(_) | Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let workdir = data_dir.join("sandboxes").join(DEMO_SANDBOX);
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;

    let mut keys_registered = Vec::new();
    if let Some(dir) = ssh_dir {
        for path in public_key_files(dir) {
            // File names are whatever is in ~/.ssh: printed escaped, like any name.
            let shown = escape(&path.display().to_string());
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Some(line) = text.lines().find(|l| !l.trim().is_empty()) else {
                continue;
            };
            let parsed = match parse_public_key(line) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::warn!(path = %shown, error = %e, "skipping public key");
                    continue;
                }
            };
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // The API would refuse this name; so does dev, rather than store it.
            let name = match check_key_name(&file_name) {
                Ok(name) => name,
                Err(e) => {
                    tracing::warn!(path = %shown, error = %e, "skipping public key");
                    continue;
                }
            };
            let new = NewKey {
                user_id: &user.id,
                name,
                key: &parsed,
            };
            match store.add_key(new).await {
                Ok(_) => {}
                Err(StoreError::Conflict(message)) if message.contains("your account") => {}
                Err(StoreError::Conflict(message)) => {
                    tracing::warn!(path = %shown, "{}", Escaped(&message));
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            tracing::info!(path = %shown, fingerprint = %parsed.fingerprint, "registered public key for user dev");
            keys_registered.push(shown);
        }
    }
    store.delete_tokens_named(&user.id, "dev").await?;
    let token = store.create_token(&user.id, "dev").await?;
    Ok(Seeded {
        token: token.secret,
        keys_registered,
        workdir,
    })
}

fn public_key_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub") && p.is_file())
        .collect();
    files.sort();
    files
}

/// What to type next.
pub fn banner(ssh: SocketAddr, api: SocketAddr, seeded: &Seeded) -> String {
    let port = ssh.port();
    let host = ssh.ip();
    let keys = if seeded.keys_registered.is_empty() {
        format!(
            "  No ~/.ssh/*.pub keys found. Create one with `ssh-keygen -t ed25519`, then add it:\n    curl -X POST http://{api}/users/me/ssh-keys -H \"Authorization: Bearer {token}\" \\\n      -H 'Content-Type: application/json' -d \"{{\\\"name\\\":\\\"laptop\\\",\\\"public_key\\\":\\\"$(cat ~/.ssh/id_ed25519.pub)\\\"}}\"\n",
            token = seeded.token
        )
    } else {
        format!(
            "  Registered for user dev: {}\n",
            seeded.keys_registered.join(", ")
        )
    };
    format!(
        "\nssh-gateway dev is running.\n\
         SSH on {ssh}\n\
         API on http://{api}\n\
         dev API token: {token}\n\
         {keys}\n\
         Try:\n\
         \x20 ssh -p {port} demo@{host}\n\
         \x20 ssh -p {port} demo@{host} 'uname -a'\n\
         \x20 scp -P {port} somefile demo@{host}:\n\
         \x20 sftp -P {port} demo@{host}\n\
         \x20 curl -H \"Authorization: Bearer {token}\" http://{api}/users/me/ssh-keys\n\
         \x20 a terminal in your browser: http://{api}/terminal/demo (sign in with the token above)\n\
         Sandbox demo works in {workdir}\n",
        token = seeded.token,
        workdir = Escaped(&seeded.workdir.display().to_string()),
    )
}
