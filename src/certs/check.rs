//! Whether a presented user certificate is one this gateway accepts, and what it
//! claims. Pure: the certificate, the time, the client's address and the trusted CAs
//! in; claims or the precise reason out (logged, never shown to the client, which only
//! sees a rejected key). Whether the claimed user still exists, and for the gateway's
//! own certificates whether the key they were issued for is still registered, is the
//! key store's to say afterwards.
//!
//! The fuzz target fuzz/fuzz_targets/certificates.rs compiles this file alone, with
//! permits.rs and conn/limits.rs: keep it to those, ssh-key and thiserror.

use std::net::IpAddr;

use russh::keys::HashAlg;
use russh::keys::ssh_key::Certificate;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::public::KeyData;

use super::{EXT_AGENT_FORWARDING, EXT_PORT_FORWARDING, EXT_PTY, OPT_SOURCE_ADDRESS, Permits};
use crate::conn::admission::IpNet;

/// The CAs whose user certificates are accepted.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The gateway's own CA: its certificates must also be on record.
    pub own: Option<KeyData>,
    /// Configured CAs (`certificates.trusted_ca_files`): their certificates name an
    /// existing user by its name.
    pub external: Vec<KeyData>,
}

impl Trust {
    pub fn is_empty(&self) -> bool {
        self.own.is_none() && self.external.is_empty()
    }
}

/// Who signed an accepted certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    Own,
    /// A configured CA, by the SHA-256 fingerprint of its key.
    External(String),
}

/// What an accepted certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertClaims {
    pub issuer: Issuer,
    pub serial: u64,
    /// The user name the certificate is for: its one principal.
    pub principal: String,
    pub permits: Permits,
    /// The SHA-256 fingerprint of the certified key.
    pub key_fingerprint: String,
    /// The certificate's key id, for logs (the CA chose it; escape it when shown).
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    #[error("signed with a certificate that was not offered first")]
    NotOffered,
    #[error("certificates are not accepted here (no trusted CA configured)")]
    NoTrust,
    #[error("a host certificate cannot log a user in")]
    HostCertificate,
    #[error("signed by a CA this gateway does not trust ({0})")]
    UntrustedCa(String),
    #[error("the CA signature does not verify")]
    BadSignature,
    #[error("not valid until {valid_after} (now {now})")]
    NotYetValid { valid_after: u64, now: u64 },
    #[error("expired at {valid_before} (now {now})")]
    Expired { valid_before: u64, now: u64 },
    #[error("a certificate must name exactly one principal (the user name); this one names {0}")]
    Principals(usize),
    #[error("unsupported critical option {0:?}")]
    UnknownCriticalOption(String),
    #[error("source-address {0:?} is malformed")]
    BadSourceAddress(String),
    #[error("source-address {list:?} does not include the client's address {client}")]
    SourceAddress { list: String, client: IpAddr },
}

/// Judges `cert` presented at `now` (Unix seconds) by a client at `client`.
pub fn check(
    cert: &Certificate,
    now: u64,
    client: IpAddr,
    trust: &Trust,
) -> Result<CertClaims, CertRefusal> {
    if trust.is_empty() {
        return Err(CertRefusal::NoTrust);
    }
    if cert.cert_type() != CertType::User {
        return Err(CertRefusal::HostCertificate);
    }
    let ca = cert.signature_key();
    let issuer = if trust.own.as_ref() == Some(ca) {
        Issuer::Own
    } else if trust.external.iter().any(|k| k == ca) {
        Issuer::External(ca.fingerprint(HashAlg::Sha256).to_string())
    } else {
        return Err(CertRefusal::UntrustedCa(
            ca.fingerprint(HashAlg::Sha256).to_string(),
        ));
    };
    // russh verified it already; checked again here so this function's verdict does
    // not depend on who called it.
    cert.verify_signature()
        .map_err(|_| CertRefusal::BadSignature)?;
    // OpenSSH's window: valid_after <= now < valid_before.
    if now < cert.valid_after() {
        return Err(CertRefusal::NotYetValid {
            valid_after: cert.valid_after(),
            now,
        });
    }
    if now >= cert.valid_before() {
        return Err(CertRefusal::Expired {
            valid_before: cert.valid_before(),
            now,
        });
    }
    // No principals means "any user" to OpenSSH: never here.
    let [principal] = cert.valid_principals() else {
        return Err(CertRefusal::Principals(cert.valid_principals().len()));
    };
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            OPT_SOURCE_ADDRESS => source_address(value, client)?,
            other => {
                return Err(CertRefusal::UnknownCriticalOption(
                    other.chars().take(64).collect(),
                ));
            }
        }
    }
    let ext = cert.extensions();
    Ok(CertClaims {
        issuer,
        serial: cert.serial(),
        principal: principal.clone(),
        permits: Permits {
            pty: ext.contains_key(EXT_PTY),
            port_forwarding: ext.contains_key(EXT_PORT_FORWARDING),
            agent_forwarding: ext.contains_key(EXT_AGENT_FORWARDING),
        },
        key_fingerprint: cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
        key_id: cert.key_id().chars().take(128).collect(),
    })
}

/// `source-address`: a comma-separated list of addresses and CIDR ranges, one of
/// which must contain the client's address.
fn source_address(list: &str, client: IpAddr) -> Result<(), CertRefusal> {
    let nets = parse_source_address(list)?;
    // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
        v4 => v4,
    };
    if nets.iter().any(|n| n.contains(client)) {
        Ok(())
    } else {
        Err(CertRefusal::SourceAddress {
            list: list.chars().take(256).collect(),
            client,
        })
    }
}

pub fn parse_source_address(list: &str) -> Result<Vec<IpNet>, CertRefusal> {
    let bad = || CertRefusal::BadSourceAddress(list.chars().take(256).collect());
    let nets = list
        .split(',')
        .map(|item| IpNet::parse(item.trim()).map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    if nets.is_empty() {
        return Err(bad());
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_address_lists() {
        assert!(source_address("127.0.0.1/32,::1", ip("127.0.0.1")).is_ok());
        assert!(source_address("10.0.0.0/8", ip("10.200.3.4")).is_ok());
        // An IPv4 client seen through a dual-stack socket.
        assert!(source_address("192.0.2.0/24", ip("::ffff:192.0.2.7")).is_ok());
        assert!(matches!(
            source_address("10.0.0.0/8", ip("192.0.2.1")),
            Err(CertRefusal::SourceAddress { .. })
        ));
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0.1,"] {
            assert!(
                matches!(
                    source_address(bad, ip("10.0.0.1")),
                    Err(CertRefusal::BadSourceAddress(_))
                ),
                "{bad:?}"
            );
        }
    }
}
