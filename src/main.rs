//! Command line: `dev`, `serve`, `migrate`, `admin …`, and the client side: `setup`,
//! `proxy`, `refresh`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use ssh_gateway::client::{self, FrontAddr};
use ssh_gateway::config::Config;
use ssh_gateway::store::Store;
use ssh_gateway::{app, dev};

// The allocator is glibc malloc, chosen by the numbers rather than by default. With
// `cargo bench --bench load` (10,000 idle connections, each with an idle session
// channel, 2 cores, 2026-12-01), the same code otherwise unless said:
//   glibc malloc: 51.3 KiB per session; RSS 30 s after they all closed 1.6x the
//     starting RSS, thanks to the `malloc_trim` that app.rs runs after bursts (without
//     it glibc kept the peak, 44x);
//   jemalloc (background threads, dirty decay 1 s, muzzy decay 0): 57.8 KiB, 2.0x;
//   mimalloc 0.1.52 (v3), one build earlier (glibc then 55.8 KiB): 64.5 KiB, never
//     returned (29x).
// Connections per second of gateway CPU overlapped from run to run for all three.
// jemalloc and mimalloc round russh's large per-connection blocks (a ~25 KiB session
// task, ~5 KiB queue blocks) up to their size classes; glibc does not, and trimming
// gives back what a burst freed. Figures and method: README, Performance, Load.
// `app::tune_allocator` fixes glibc's trim and mmap thresholds so that streaming does
// not hand pages back and fault them in again for every packet (README, Performance).

#[derive(Parser)]
#[command(
    name = "ssh-gateway",
    version,
    about = "SSH gateway into sandboxes and training jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded default: SQLite, local processes, user `dev`, sandbox `demo`.
    Dev {
        #[arg(long, default_value = "ssh-gateway-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:2222")]
        ssh_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        api_listen: SocketAddr,
    },
    /// Run from a config file (region deployment).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Tunnel SSH through the gateway's TLS or HTTP CONNECT front to HOST (which
    /// routes): `ProxyCommand ssh-gateway proxy %h %p`. Without --tls or --connect,
    /// the front comes from the profile `setup` wrote for HOST's domain.
    Proxy {
        /// The TLS front, host:port (HOST is the SNI name and must match its certificate).
        #[arg(long, env = "SSH_GATEWAY_TLS", conflicts_with = "connect")]
        tls: Option<String>,
        /// The CONNECT front, host:port.
        #[arg(long, env = "SSH_GATEWAY_CONNECT")]
        connect: Option<String>,
        /// A PEM CA file the TLS front's certificate may chain to (instead of the system's roots).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        host: String,
        port: u16,
    },
    /// Set this machine up for a gateway: a key under ~/.ssh/ssh-gateway, a
    /// certificate (or the key registered), its host keys, and one block in
    /// ~/.ssh/config for `*.<domain>`. Run again to renew; --remove to undo.
    Setup {
        /// The gateway's API, e.g. https://api.ssh.example.com.
        #[arg(long, required_unless_present = "remove")]
        api: Option<String>,
        /// An API token of yours.
        #[arg(long, env = "SSH_GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Host names `<target>.<domain>` route; default: the gateway's own.
        #[arg(long, required_if_eq("remove", "true"))]
        domain: Option<String>,
        /// tls://host:port or connect://host:port; default: what the gateway advertises.
        #[arg(long)]
        front: Option<String>,
        /// A PEM CA file for the API and TLS front (instead of the system's roots).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// Register the key instead of fetching certificates.
        #[arg(long)]
        no_certificate: bool,
        /// Take the block out of the ssh config again.
        #[arg(long)]
        remove: bool,
        /// Default: ~/.ssh/config.
        #[arg(long)]
        ssh_config: Option<PathBuf>,
        /// Default: ~/.ssh/ssh-gateway.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Renew the certificate for HOST's gateway if it is near its end (run by the
    /// block `setup` writes, before OpenSSH reads the certificate). Always exits 0.
    Refresh {
        host: String,
        /// Default: ~/.ssh/ssh-gateway.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Sign a host key with a host CA: writes KEY-cert.pub beside HOST_KEY (KEY.pub),
    /// which the gateway then presents; clients trust the CA with
    /// `@cert-authority *.ssh.example.com <CA public key>` in known_hosts.
    SignHostKey {
        /// The host key's public half (e.g. host-keys/ssh_host_ed25519_key.pub).
        host_key: PathBuf,
        /// The CA's OpenSSH private key.
        #[arg(long)]
        ca: PathBuf,
        /// A host name or pattern the certificate is for (repeat for more).
        #[arg(long = "principal", required = true)]
        principals: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// The certificate's key id (shown in sshd-style logs).
        #[arg(long, default_value = "ssh-gateway host key")]
        id: String,
    },
    /// Create or update the database schema.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Manage users, tokens and static sandboxes.
    Admin {
        #[command(flatten)]
        db: DbArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

/// Which store to act on: a config file's database, or a dev data directory's.
#[derive(Args)]
struct DbArgs {
    #[arg(long, short, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AdminCommand {
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// The audit trail: connections, newest first, each with its channels.
    Sessions {
        /// Only this user's (by the name recorded, so also a deleted user's).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Add { name: String },
    /// Delete a user with their keys, tokens, certificates and sandboxes; their live
    /// connections end (on every replica).
    Delete { name: String },
    /// Let a user call the admin API (GET /admin/sessions: everyone's audit trail);
    /// `--off` takes the right back, effective on their next request.
    Admin {
        name: String,
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint an API token for USER; prints the token alone on stdout.
    Create {
        user: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Delete USER's tokens named NAME, and the certificates issued with them (their
    /// live connections end).
    Delete {
        user: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Add a sandbox to the static control plane.
    Add {
        id: String,
        #[arg(long)]
        owner: String,
        #[arg(long = "member")]
        members: Vec<String>,
        /// Working directory for the local backend (default: <sandbox_root>/<id>).
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// Let USER use the sandbox.
    AddMember { id: String, user: String },
    /// Take USER off the sandbox; their live connections to it end.
    RemoveMember { id: String, user: String },
    /// Give the sandbox to USER; the old owner's live connections to it end.
    SetOwner { id: String, user: String },
}

/// Logs to stderr, filtered by `RUST_LOG`; one JSON object per line when
/// `SSH_GATEWAY_LOG_FORMAT=json` (for log shippers), human-readable otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("SSH_GATEWAY_LOG_FORMAT").as_deref() {
        Ok("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        _ => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> std::process::ExitCode {
    // Before the runtime starts its threads: each thread that allocates may get an
    // arena of its own, and the arena cap only holds for arenas not yet made.
    app::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ssh-gateway: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli_main())
}

async fn cli_main() -> std::process::ExitCode {
    init_logging();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssh-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev {
            data_dir,
            ssh_listen,
            api_listen,
        } => run_dev(&data_dir, ssh_listen, api_listen).await,
        Command::Serve { config } => {
            let config = Config::load(&config, std::env::vars())?;
            app::bind(config).await?.run().await
        }
        Command::Proxy {
            tls,
            connect,
            tls_ca,
            host,
            port,
        } => {
            let (front, tls_ca) = match (tls, connect) {
                (Some(addr), _) => (FrontAddr::Tls(addr), tls_ca),
                (None, Some(addr)) => (FrontAddr::Connect(addr), tls_ca),
                (None, None) => {
                    let dir = client::default_dir()?;
                    let profile = client::profile_for_host(&dir, &host)?.with_context(|| {
                        format!("no --tls or --connect given, and no gateway set up for {host:?} in {} (run `ssh-gateway setup`)", dir.display())
                    })?;
                    (
                        FrontAddr::parse(&profile.front)?,
                        tls_ca.or(profile.tls_ca_file),
                    )
                }
            };
            ssh_gateway::proxy::run(&front, tls_ca.as_deref(), &host, port).await
        }
        Command::Setup {
            api,
            token,
            domain,
            front,
            tls_ca,
            no_certificate,
            remove,
            ssh_config,
            dir,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => client::default_dir()?,
            };
            let ssh_config = match ssh_config {
                Some(p) => p,
                None => client::home()?.join(".ssh").join("config"),
            };
            if remove {
                let domain = domain.context("--remove needs --domain")?;
                if client::setup::remove(&dir, &ssh_config, &domain)? {
                    eprintln!(
                        "removed the ssh-gateway block for {domain} from {}",
                        ssh_config.display()
                    );
                } else {
                    eprintln!(
                        "{} has no ssh-gateway block for {domain}",
                        ssh_config.display()
                    );
                }
                return Ok(());
            }
            let args = client::setup::SetupArgs {
                api: api.context("--api is required")?,
                token: token.context("--token (or SSH_GATEWAY_TOKEN) is required")?,
                domain,
                front,
                tls_ca_file: tls_ca,
                no_certificate,
                dir,
                ssh_config: ssh_config.clone(),
                program: std::env::current_exe()?,
            };
            let done = client::setup::run(&args).await?;
            eprintln!(
                "set up {} through {} ({}); try: ssh <sandbox-id>.{}",
                done.domain,
                done.front,
                if done.certificate {
                    "certificates, renewed automatically"
                } else {
                    "registered key"
                },
                done.domain
            );
            eprintln!(
                "wrote a block for *.{} in {}",
                done.domain,
                ssh_config.display()
            );
            Ok(())
        }
        Command::Refresh { host, dir } => {
            let dir = match dir {
                Some(d) => d,
                None => client::default_dir()?,
            };
            // OpenSSH goes on either way; a failure is worth a line, not an error.
            if let Err(e) = client::refresh(&dir, &host).await {
                eprintln!("ssh-gateway: could not renew the certificate: {e:#}");
            }
            Ok(())
        }
        Command::SignHostKey {
            host_key,
            ca,
            principals,
            days,
            id,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let host = russh::keys::PublicKey::from_openssh(read(&host_key)?.trim())
                .with_context(|| format!("{} is not an OpenSSH public key", host_key.display()))?;
            let ca_key = russh::keys::PrivateKey::from_openssh(read(&ca)?)
                .with_context(|| format!("{} is not an OpenSSH private key", ca.display()))?;
            let cert = ssh_gateway::certs::sign_host_certificate(
                &ca_key,
                &host,
                &principals,
                &id,
                ssh_gateway::certs::unix_now(),
                std::time::Duration::from_secs(days.saturating_mul(86_400)),
            )?;
            let name = host_key.display().to_string();
            let out = PathBuf::from(format!(
                "{}-cert.pub",
                name.strip_suffix(".pub").unwrap_or(&name)
            ));
            std::fs::write(&out, format!("{}\n", cert.to_openssh()?))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Migrate { db } => {
            let store = open_store(&db).await?;
            store.migrate().await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Admin { db, command } => admin(&open_store(&db).await?, command).await,
    }
}

async fn run_dev(
    data_dir: &Path,
    ssh_listen: SocketAddr,
    api_listen: SocketAddr,
) -> anyhow::Result<()> {
    dev::prepare_data_dir(data_dir)?;
    // Absolute, because sandboxes use it as their working directory and HOME.
    let data_dir = data_dir.canonicalize()?;
    let bound = app::bind(dev::config(&data_dir, ssh_listen, api_listen)).await?;
    let ssh_dir = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh"));
    let seeded = dev::seed(bound.store(), &data_dir, ssh_dir.as_deref()).await?;
    // Not println!: it panics when stdout is a closed pipe, and a gateway must not
    // die because whoever started it stopped reading its banner.
    let banner = dev::banner(bound.ssh_addr, bound.api_addr, &seeded);
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, banner.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut out));
    drop(out);
    bound.run().await
}

async fn open_store(db: &DbArgs) -> anyhow::Result<Store> {
    let (url, pool) = match (&db.config, &db.data_dir) {
        (Some(path), _) => {
            let config = Config::load(path, std::env::vars())?;
            (config.database.url, 2)
        }
        (None, dir) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("ssh-gateway-data"));
            dev::prepare_data_dir(&dir)?;
            (dev::sqlite_url(&dir), 2)
        }
    };
    Ok(Store::open(&url, pool).await?)
}

async fn admin(store: &Store, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::User {
            command: UserCommand::Add { name },
        } => {
            let user = store.create_user(&name).await?;
            eprintln!("created user {} ({})", user.name, user.id);
        }
        AdminCommand::Sessions { user, limit } => {
            use ssh_gateway::store::AuditFilter;
            let filter = match &user {
                Some(name) => AuditFilter::UserName(name),
                None => AuditFilter::Everyone,
            };
            let sessions = store
                .audit_sessions(filter, None, limit.clamp(1, 10_000))
                .await?;
            print!("{}", ssh_gateway::audit::table(&sessions));
        }
        AdminCommand::User {
            command: UserCommand::Admin { name, off },
        } => {
            let user = store
                .user_by_name(&name)
                .await
                .with_context(|| format!("user {name:?}"))?;
            store.set_admin(&user.id, !off).await?;
            let now = if off {
                "no longer an admin"
            } else {
                "an admin"
            };
            eprintln!("user {} ({}) is {now}", user.name, user.id);
        }
        AdminCommand::User {
            command: UserCommand::Delete { name },
        } => {
            let user = store
                .user_by_name(&name)
                .await
                .with_context(|| format!("user {name:?}"))?;
            store.delete_user(&user.id).await?;
            eprintln!("deleted user {} ({})", user.name, user.id);
        }
        AdminCommand::Token {
            command: TokenCommand::Delete { user, name },
        } => {
            let owner = store
                .user_by_name(&user)
                .await
                .with_context(|| format!("user {user:?}"))?;
            match store.delete_tokens_named(&owner.id, &name).await? {
                0 => bail!("{user} has no token named {name:?}"),
                n => eprintln!("deleted {n} token(s) of {user} named {name:?}"),
            }
        }
        AdminCommand::Token {
            command: TokenCommand::Create { user, name },
        } => {
            let user = store
                .user_by_name(&user)
                .await
                .with_context(|| format!("user {user:?}"))?;
            let token = store.create_token(&user.id, &name).await?;
            println!("{}", token.secret);
        }
        AdminCommand::Sandbox {
            command:
                SandboxCommand::Add {
                    id,
                    owner,
                    members,
                    workdir,
                },
        } => {
            if !ssh_gateway::route::valid_id(&id) {
                bail!(
                    "sandbox id {id:?} is not valid (1-63 of A-Z a-z 0-9 - _ ., starting with a letter or digit)"
                );
            }
            if id.starts_with(ssh_gateway::route::MODEL_PREFIX) {
                bail!(
                    "sandbox id {id:?} is not valid: ids starting with {:?} name model deployments",
                    ssh_gateway::route::MODEL_PREFIX
                );
            }
            let owner = store
                .user_by_name(&owner)
                .await
                .with_context(|| format!("owner {owner:?}"))?;
            let workdir = workdir.map(|w| w.display().to_string());
            store
                .create_sandbox(&id, &owner.id, workdir.as_deref())
                .await?;
            for member in members {
                let user = store
                    .user_by_name(&member)
                    .await
                    .with_context(|| format!("member {member:?}"))?;
                store.add_member(&id, &user.id).await?;
            }
            eprintln!("created sandbox {id} owned by {}", owner.name);
        }
        AdminCommand::Sandbox {
            command: SandboxCommand::AddMember { id, user },
        } => {
            let member = store
                .user_by_name(&user)
                .await
                .with_context(|| format!("user {user:?}"))?;
            store.add_member(&id, &member.id).await?;
            eprintln!("{user} is now a member of sandbox {id}");
        }
        AdminCommand::Sandbox {
            command: SandboxCommand::RemoveMember { id, user },
        } => {
            let member = store
                .user_by_name(&user)
                .await
                .with_context(|| format!("user {user:?}"))?;
            store
                .remove_member(&id, &member.id)
                .await
                .with_context(|| format!("{user:?} is not a member of sandbox {id:?}"))?;
            eprintln!("{user} is no longer a member of sandbox {id}");
        }
        AdminCommand::Sandbox {
            command: SandboxCommand::SetOwner { id, user },
        } => {
            let owner = store
                .user_by_name(&user)
                .await
                .with_context(|| format!("user {user:?}"))?;
            store
                .set_owner(&id, &owner.id)
                .await
                .with_context(|| format!("sandbox {id:?}"))?;
            eprintln!("sandbox {id} is now owned by {user}");
        }
    }
    Ok(())
}
