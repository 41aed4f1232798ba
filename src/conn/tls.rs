//! The TLS front: TLS on its own listener, then inside it either SSH, whose route is
//! the SNI host name (`ProxyCommand openssl s_client -quiet -connect gw:443
//! -servername %h`), or an HTTP CONNECT prelude, whose host routes (`proxytunnel -E
//! -p gw:443 -d %h:%p`; the SNI may then be the gateway's own name). Which one is
//! read from the first bytes inside TLS (`sniff`): an SSH client's identification
//! starts `SSH-`, anything else is judged as an HTTP request by `conn::connect`. No
//! ALPN: the port carries only these two (the API has its own listener behind your
//! ingress), and neither OpenSSH through `openssl s_client` nor proxytunnel sends one.
//! The certificate and key are PEM files, reloaded when either changes on disk
//! (checked every few seconds) or on SIGHUP; a reload that fails keeps the old pair
//! and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// What the TLS stream carries, from its first bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Inside {
    /// SSH; the bytes read to see it, to be read again.
    Ssh(Vec<u8>),
    /// Something else: an HTTP prelude, which starts with these bytes.
    Http(Vec<u8>),
}

const SSH_START: &[u8] = b"SSH-";

/// A client that has sent nothing this long after the handshake is taken to wait for
/// the server's SSH identification (RFC 4253 lets either side speak first; OpenSSH,
/// and any CONNECT client, speak at once).
pub const CLIENT_FIRST: Duration = Duration::from_secs(1);

/// Reads at most the first 4 bytes inside TLS, one at a time, until they can only be
/// SSH or can only be something else. Silence for `CLIENT_FIRST` is SSH.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Inside> {
    let mut seen = Vec::with_capacity(SSH_START.len());
    let mut byte = [0u8; 1];
    while seen.len() < SSH_START.len() {
        let read = if seen.is_empty() {
            match tokio::time::timeout(CLIENT_FIRST, stream.read(&mut byte)).await {
                Ok(read) => read?,
                Err(_) => return Ok(Inside::Ssh(seen)),
            }
        } else {
            stream.read(&mut byte).await?
        };
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.push(byte[0]);
        if !SSH_START.starts_with(&seen) {
            return Ok(Inside::Http(seen));
        }
    }
    Ok(Inside::Ssh(seen))
}

/// How often the files' modification times are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The files' modification times when last loaded (`None`: one was unreadable).
type Seen = Option<(SystemTime, SystemTime)>;

#[derive(Debug)]
pub struct CertFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Seen)>,
}

impl CertFiles {
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Self>> {
        let key = load_pair(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new((Arc::new(key), mtimes(cert_file, key_file))),
        }))
    }

    /// Loads the files again if they changed (or `force`); keeps the old pair when the
    /// new one does not load.
    pub fn reload(&self, force: bool) {
        let seen = mtimes(&self.cert_file, &self.key_file);
        let unchanged = self.current.read().map(|c| c.1 == seen).unwrap_or(false);
        if unchanged && !force {
            return;
        }
        match load_pair(&self.cert_file, &self.key_file) {
            Ok(key) => {
                if let Ok(mut c) = self.current.write() {
                    *c = (Arc::new(key), seen);
                }
                tracing::info!(cert = %self.cert_file.display(), "TLS front certificate loaded");
            }
            Err(e) => {
                // Remember the times, so a broken pair is reported once, not every tick.
                if let Ok(mut c) = self.current.write() {
                    c.1 = seen;
                }
                tracing::warn!(error = %format!("{e:#}"), "TLS front certificate not reloaded; keeping the previous one");
            }
        }
    }

    /// Reloads on change and on SIGHUP until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY) => self.reload(false),
                _ = hangup => self.reload(true),
                _ = stop.cancelled() => return,
            }
        }
    }

    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

fn mtimes(cert: &Path, key: &Path) -> Seen {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn load_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading fronts.tls.cert_file {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading fronts.tls.key_file {}", key_file.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "{} does not go with {}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sniffed(bytes: &[u8]) -> std::io::Result<Inside> {
        let mut reader = bytes;
        sniff(&mut reader).await
    }

    #[tokio::test]
    async fn first_bytes_say_ssh_or_http() {
        assert_eq!(
            sniffed(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap(),
            Inside::Ssh(b"SSH-".to_vec())
        );
        assert_eq!(
            sniffed(b"CONNECT x:22 HTTP/1.1\r\n\r\n").await.unwrap(),
            Inside::Http(b"C".to_vec())
        );
        assert_eq!(
            sniffed(b"SS").await.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            sniffed(b"SSX").await.unwrap(),
            Inside::Http(b"SSX".to_vec())
        );
        assert!(sniffed(b"").await.is_err());
    }
}
