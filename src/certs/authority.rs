//! The gateway's user CA: signs a caller's public key into a certificate whose one
//! principal is the caller's user name, valid from a little before now (so a replica
//! whose clock lags accepts it) for at most `max_ttl`.

use std::time::Duration;

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Certificate, PrivateKey};

use super::{EXT_AGENT_FORWARDING, EXT_PORT_FORWARDING, EXT_PTY, EXT_USER_RC, OPT_SOURCE_ADDRESS};
use crate::conn::admission::IpNet;

pub struct Authority {
    key: PrivateKey,
    /// `ssh-ed25519 AAAA… comment`, as `GET /api/v1/ssh/user-ca` serves it.
    public_line: String,
    max_ttl: Duration,
    /// How far `valid_after` is set before now.
    skew: Duration,
}

/// What a caller asks to be certified.
pub struct CertRequest<'a> {
    pub public_key: &'a KeyData,
    pub user_name: &'a str,
    /// The store's id of the key, recorded in the certificate's key id for logs.
    pub key_id: &'a str,
    pub serial: u64,
    pub ttl: Duration,
    /// Networks the certificate may be used from (`source-address`); empty: any.
    pub source_address: &'a [IpNet],
    /// Unix seconds.
    pub now: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("ttl_secs must be between 1 and {max} (certificates.max_ttl_secs)")]
    Ttl { max: u64 },
    #[error("signing the certificate failed: {0}")]
    Sign(String),
}

impl Authority {
    pub fn new(key: PrivateKey, max_ttl: Duration, skew: Duration) -> Result<Self, String> {
        let public_line = key
            .public_key()
            .to_openssh()
            .map_err(|e| format!("encoding the CA public key: {e}"))?;
        Ok(Self {
            key,
            public_line,
            max_ttl,
            skew,
        })
    }

    pub fn public_line(&self) -> &str {
        &self.public_line
    }

    pub fn public_key(&self) -> &KeyData {
        self.key.public_key().key_data()
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// Whether a certificate may live `ttl`: checked before anything is registered.
    pub fn check_ttl(&self, ttl: Duration) -> Result<(), IssueError> {
        if ttl.as_secs() == 0 || ttl > self.max_ttl {
            return Err(IssueError::Ttl {
                max: self.max_ttl.as_secs(),
            });
        }
        Ok(())
    }

    pub fn issue(&self, req: &CertRequest<'_>) -> Result<Certificate, IssueError> {
        self.check_ttl(req.ttl)?;
        let ttl = req.ttl.as_secs();
        let sign = |e: russh::keys::ssh_key::Error| IssueError::Sign(e.to_string());
        let valid_after = req.now.saturating_sub(self.skew.as_secs());
        let valid_before = req.now.saturating_add(ttl);
        let nonce: [u8; 32] = rand::random();
        let mut b = Builder::new(
            nonce.to_vec(),
            req.public_key.clone(),
            valid_after,
            valid_before,
        )
        .map_err(sign)?;
        b.serial(req.serial).map_err(sign)?;
        b.cert_type(CertType::User).map_err(sign)?;
        b.key_id(format!("ssh-gateway:{}:{}", req.user_name, req.key_id))
            .map_err(sign)?;
        b.valid_principal(req.user_name).map_err(sign)?;
        for ext in [
            EXT_AGENT_FORWARDING,
            EXT_PORT_FORWARDING,
            EXT_PTY,
            EXT_USER_RC,
        ] {
            b.extension(ext, "").map_err(sign)?;
        }
        if !req.source_address.is_empty() {
            let list = req
                .source_address
                .iter()
                .map(|n| format!("{}/{}", n.addr, n.prefix))
                .collect::<Vec<_>>()
                .join(",");
            b.critical_option(OPT_SOURCE_ADDRESS, list).map_err(sign)?;
        }
        b.comment(format!("{}@ssh-gateway", req.user_name))
            .map_err(sign)?;
        b.sign(&self.key).map_err(sign)
    }
}

/// Signs an OpenSSH host certificate for `host` (what `ssh-keygen -s CA -h` makes):
/// valid from `skew` before `now` for `valid_for`, for `principals` (host names or
/// patterns clients match against `@cert-authority` lines).
pub fn sign_host_certificate(
    ca: &PrivateKey,
    host: &russh::keys::PublicKey,
    principals: &[String],
    key_id: &str,
    now: u64,
    valid_for: std::time::Duration,
) -> Result<Certificate, IssueError> {
    let sign = |e: russh::keys::ssh_key::Error| IssueError::Sign(e.to_string());
    if principals.is_empty() {
        // An empty list would make the certificate good for every host name.
        return Err(IssueError::Sign(
            "name at least one host principal (--principal)".into(),
        ));
    }
    let nonce: [u8; 32] = rand::random();
    let mut b = Builder::new(
        nonce.to_vec(),
        host.key_data().clone(),
        now.saturating_sub(60),
        now.saturating_add(valid_for.as_secs()),
    )
    .map_err(sign)?;
    b.serial(rand::random::<u64>() >> 11).map_err(sign)?;
    b.cert_type(CertType::Host).map_err(sign)?;
    b.key_id(key_id).map_err(sign)?;
    for p in principals {
        b.valid_principal(p.as_str()).map_err(sign)?;
    }
    b.sign(ca).map_err(sign)
}
