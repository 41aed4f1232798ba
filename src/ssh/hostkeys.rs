//! Host keys: generated on first start, persisted with 0600 permissions, and refused
//! if anyone else can read them. Replicas behind one load balancer share the directory
//! (a Kubernetes Secret) so clients never see a host-key change.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{Certificate, HashAlg, PrivateKey};

pub const ED25519_FILE: &str = "ssh_host_ed25519_key";
/// Optional further host keys, loaded when present (never generated: a fleet's come
/// from its Secret), for clients that pin or prefer them.
pub const OPTIONAL_FILES: [&str; 2] = ["ssh_host_ecdsa_key", "ssh_host_rsa_key"];
/// Beside a key `K`, `K-cert.pub` is its OpenSSH host certificate, as sshd's
/// `HostCertificate`: clients that trust the CA (`@cert-authority *.ssh.example.com`)
/// need no pinned key.
pub const CERT_SUFFIX: &str = "-cert.pub";

/// Every host key the listener presents, Ed25519 first, and their certificates.
#[derive(Clone)]
pub struct HostKeys {
    pub keys: Vec<PrivateKey>,
    pub certificates: Vec<Certificate>,
}

impl HostKeys {
    /// The Ed25519 key: what logs and `setup` name first.
    pub fn primary(&self) -> &PrivateKey {
        &self.keys[0]
    }

    pub fn public_keys(&self) -> Vec<russh::keys::PublicKey> {
        self.keys.iter().map(|k| k.public_key().clone()).collect()
    }
}

/// Loads the host keys from `dir`: the Ed25519 key (generated if missing), the
/// optional ECDSA and RSA keys, and a certificate beside any of them. A certificate
/// that is not a host certificate for its key is refused; one outside its validity
/// is loaded with a warning (clients will refuse it until renewed).
pub fn load_all(dir: &Path) -> Result<HostKeys, HostKeyError> {
    let (mut keys, mut certificates) = (Vec::new(), Vec::new());
    for name in std::iter::once(ED25519_FILE).chain(OPTIONAL_FILES) {
        let path = dir.join(name);
        let key = if name == ED25519_FILE {
            load_or_generate(dir)?
        } else if path.exists() {
            load_or_generate_key(&path, "host key")?
        } else {
            continue;
        };
        let cert_path = dir.join(format!("{name}{CERT_SUFFIX}"));
        if cert_path.exists() {
            let cert = load_certificate(&cert_path, &key)?;
            let now = crate::certs::unix_now();
            if now < cert.valid_after() || now >= cert.valid_before() {
                tracing::warn!(path = %cert_path.display(), valid_after = cert.valid_after(), valid_before = cert.valid_before(), "host certificate is outside its validity; clients will refuse it");
            }
            certificates.push(cert);
        }
        keys.push(key);
    }
    Ok(HostKeys { keys, certificates })
}

fn load_certificate(path: &Path, key: &PrivateKey) -> Result<Certificate, HostKeyError> {
    let what = "host certificate";
    let bad = |message: String| HostKeyError::Parse {
        what,
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| HostKeyError::Io {
        what,
        path: path.to_owned(),
        source,
    })?;
    let cert = Certificate::from_openssh(text.trim()).map_err(|e| bad(e.to_string()))?;
    if cert.cert_type() != CertType::Host {
        return Err(bad(
            "it is a user certificate; sign with ssh-keygen -h".into()
        ));
    }
    if cert.public_key() != key.public_key().key_data() {
        return Err(bad("it certifies another key than the one beside it".into()));
    }
    Ok(cert)
}

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not an OpenSSH private key: {message}")]
    Parse {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{what} {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Unprotected {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

/// Loads the host key from `dir`, generating an Ed25519 key there if none exists.
pub fn load_or_generate(dir: &Path) -> Result<PrivateKey, HostKeyError> {
    load_or_generate_key(&dir.join(ED25519_FILE), "host key")
}

/// Loads the private key at `path`, generating an Ed25519 key there (0600, its public
/// half beside it as `.pub`) if none exists. Refused if group or others may read it,
/// as sshd refuses. `what` names the key in errors ("host key", "user CA key").
pub fn load_or_generate_key(path: &Path, what: &'static str) -> Result<PrivateKey, HostKeyError> {
    let io = |source| HostKeyError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        generate(path, &format!("ssh-gateway {what}")).map_err(io)?;
        tracing::info!(path = %path.display(), "generated a new {what}");
    }
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(HostKeyError::Unprotected {
            what,
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    PrivateKey::from_openssh(text).map_err(|e| HostKeyError::Parse {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn generate(path: &Path, comment: &str) -> std::io::Result<()> {
    let seed: [u8; 32] = rand::random();
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // create_new + 0600 at creation: the key is never briefly world-readable.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    if let Ok(public) = key.public_key().to_openssh() {
        let mut name = path.as_os_str().to_owned();
        name.push(".pub");
        let _ = std::fs::write(PathBuf::from(name), format!("{public}\n"));
    }
    Ok(())
}

pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path()).unwrap();
        let second = load_or_generate(dir.path()).unwrap();
        assert_eq!(fingerprint(&first), fingerprint(&second));
        let mode = std::fs::metadata(dir.path().join(ED25519_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path()).unwrap();
        let path = dir.path().join(ED25519_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_generate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
