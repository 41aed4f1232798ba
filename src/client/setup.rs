//! `ssh-gateway setup`: everything a user would otherwise do by hand, once per machine
//! and gateway. Idempotent: running it again renews what it wrote and changes nothing
//! else; `--remove` takes its block out of ~/.ssh/config byte-exactly.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::sshconfig::{self, Removed};
use super::{Api, FrontAddr, Profile, profile_path, write_atomically};

pub struct SetupArgs {
    pub api: String,
    pub token: String,
    pub domain: Option<String>,
    /// `tls://host:port` or `connect://host:port`; default: what the gateway advertises.
    pub front: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    /// Register the key even where the gateway issues certificates.
    pub no_certificate: bool,
    pub dir: PathBuf,
    pub ssh_config: PathBuf,
    /// The `ssh-gateway` binary the config block runs.
    pub program: PathBuf,
}

/// What setup did, for the user.
pub struct SetupDone {
    pub domain: String,
    pub certificate: bool,
    pub front: String,
}

const KEY_FILE: &str = "id_ed25519";

pub async fn run(args: &SetupArgs) -> anyhow::Result<SetupDone> {
    let api = Api::new(&args.api, args.tls_ca_file.as_deref())?;
    let info = api.info().await?;
    let domain = match (&args.domain, &info.domain) {
        (Some(d), _) => d.trim_end_matches('.').to_ascii_lowercase(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            bail!("the gateway routes no host names ([routing] domain is not set); pass --domain")
        }
    };
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        bail!("--domain {domain:?} is not a DNS name");
    }
    let front = match (&args.front, &info.fronts.tls, &info.fronts.connect) {
        (Some(f), _, _) => f.clone(),
        (None, Some(tls), _) => format!("tls://{tls}"),
        (None, None, Some(connect)) => format!("connect://{connect}"),
        (None, None, None) => bail!(
            "the gateway advertises no TLS or CONNECT front (fronts.*.public_address); pass --front tls://host:port or connect://host:port"
        ),
    };
    FrontAddr::parse(&front)?;

    // Holds the private key and the API token: 0700, tightened if it is looser.
    crate::store::ensure_private_dir(&args.dir)?;
    let identity = args.dir.join(KEY_FILE);
    let public_line = crate::ssh::hostkeys::load_or_generate_key(&identity, "key")?
        .public_key()
        .to_openssh()?;

    let use_certificate = info.user_ca.is_some() && !args.no_certificate;
    let (certificate_file, token_file) = if use_certificate {
        let cert = api.certificate(&args.token, &public_line).await?;
        let cert_file = args.dir.join(format!("{KEY_FILE}-cert.pub"));
        write_atomically(&cert_file, format!("{cert}\n").as_bytes(), 0o644)?;
        // Kept for renewals (like gh or gcloud keep theirs), readable by the user only.
        let token_file = args.dir.join(format!("{domain}.token"));
        write_atomically(&token_file, format!("{}\n", args.token).as_bytes(), 0o600)?;
        (Some(cert_file), Some(token_file))
    } else {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "this machine".into());
        let name: String = format!("ssh-gateway setup on {host}")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(100)
            .collect();
        api.register_key(&args.token, &name, &public_line).await?;
        (None, None)
    };

    // The gateway's host keys, for every name under the domain: OpenSSH checks the key
    // against the name typed (%h) when a ProxyCommand connects.
    let known_hosts = args.dir.join(format!("{domain}.known_hosts"));
    let mut lines = String::new();
    for key in &info.host_keys {
        lines.push_str(&format!("*.{domain} {key}\n"));
    }
    if lines.is_empty() {
        bail!("the gateway sent no host keys");
    }
    write_atomically(&known_hosts, lines.as_bytes(), 0o644)?;

    let profile = Profile {
        domain: domain.clone(),
        api: args.api.trim_end_matches('/').to_owned(),
        front: front.clone(),
        tls_ca_file: args.tls_ca_file.clone(),
        identity_file: identity.clone(),
        certificate_file: certificate_file.clone(),
        token_file,
    };
    write_atomically(
        &profile_path(&args.dir, &domain),
        toml::to_string(&profile)?.as_bytes(),
        0o600,
    )?;

    let body = block_body(
        &domain,
        &args.program,
        &identity,
        certificate_file.as_deref(),
        &known_hosts,
    );
    let original = match std::fs::read_to_string(&args.ssh_config) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.ssh_config.display())),
    };
    let updated = sshconfig::install(original.as_deref(), &domain, &body);
    if original.as_deref() != Some(updated.as_str()) {
        // A missing ~/.ssh is made 0700; an existing directory is left as it is.
        if let Some(parent) = args.ssh_config.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_atomically(
            &args.ssh_config,
            updated.as_bytes(),
            config_mode(&args.ssh_config),
        )?;
    }
    Ok(SetupDone {
        domain,
        certificate: use_certificate,
        front,
    })
}

/// `--remove`: the block out of the ssh config (byte-exactly), and the profile; the
/// key stays (it may be registered elsewhere too).
pub fn remove(dir: &Path, ssh_config: &Path, domain: &str) -> anyhow::Result<bool> {
    let _ = std::fs::remove_file(profile_path(dir, domain));
    let _ = std::fs::remove_file(dir.join(format!("{domain}.token")));
    let _ = std::fs::remove_file(dir.join(format!("{domain}.known_hosts")));
    let text = match std::fs::read_to_string(ssh_config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", ssh_config.display())),
    };
    match sshconfig::remove(&text, domain) {
        Removed::Absent => Ok(false),
        Removed::Text(rest) => {
            write_atomically(ssh_config, rest.as_bytes(), config_mode(ssh_config))?;
            Ok(true)
        }
        Removed::DeleteFile => {
            std::fs::remove_file(ssh_config)
                .with_context(|| format!("removing {}", ssh_config.display()))?;
            Ok(true)
        }
    }
}

/// The options of the block. `Match exec` runs before OpenSSH reads any key or
/// certificate file, so the certificate is renewed in time for this very connection
/// (a ProxyCommand starts only after they are read); it always succeeds, and the
/// options that matter are in the `Host` section after it.
fn block_body(
    domain: &str,
    program: &Path,
    identity: &Path,
    certificate: Option<&Path>,
    known_hosts: &Path,
) -> String {
    let program = shell_quote(&program.display().to_string());
    let mut body = String::new();
    if certificate.is_some() {
        body.push_str(&format!(
            "Match host \"*.{domain}\" exec \"{program} refresh %h\"\n"
        ));
    }
    body.push_str(&format!("Host *.{domain}\n"));
    body.push_str(&format!("    ProxyCommand {program} proxy %h %p\n"));
    body.push_str(&format!("    IdentityFile {}\n", config_path(identity)));
    if let Some(cert) = certificate {
        body.push_str(&format!("    CertificateFile {}\n", config_path(cert)));
    }
    body.push_str("    IdentitiesOnly yes\n");
    body.push_str(&format!(
        "    UserKnownHostsFile {}\n",
        config_path(known_hosts)
    ));
    body.push_str("    StrictHostKeyChecking yes\n");
    body.push_str("    ServerAliveInterval 30\n");
    body.push_str("    ServerAliveCountMax 4\n");
    body
}

/// A path as an ssh_config argument: quoted if it has spaces.
fn config_path(path: &Path) -> String {
    let s = path.display().to_string();
    if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s
    }
}

/// For the shell that runs ProxyCommand and `Match exec`.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A new file gets 0600; an existing one keeps its mode.
fn config_mode(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777)
}
