//! Short-lived OpenSSH user certificates: the gateway's own user CA issues them
//! (`authority`), and auth accepts them from that CA and from configured ones
//! (`check`). A certificate names its user in its one principal and carries what the
//! connection may do in its extensions (`Permits`).

mod authority;
mod check;
mod permits;

pub use authority::{Authority, CertRequest, IssueError, sign_host_certificate};
pub use check::{CertClaims, CertRefusal, Issuer, Trust, check, parse_source_address};
pub use permits::{
    EXT_AGENT_FORWARDING, EXT_PORT_FORWARDING, EXT_PTY, EXT_USER_RC, OPT_SOURCE_ADDRESS, Permits,
};

/// Now, in the Unix seconds certificates count in.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Loads `[certificates]`: the gateway's CA (generated on first start) and the other
/// trusted CAs' keys. Errors name the file and line.
pub fn load(
    config: &crate::config::CertificatesConfig,
) -> anyhow::Result<(Option<std::sync::Arc<Authority>>, Trust)> {
    use anyhow::Context;
    use std::time::Duration;

    let authority = match &config.ca_key_file {
        Some(path) => {
            let key = crate::ssh::hostkeys::load_or_generate_key(path, "user CA key")?;
            let authority = Authority::new(
                key,
                Duration::from_secs(config.max_ttl_secs),
                Duration::from_secs(config.clock_skew_secs),
            )
            .map_err(anyhow::Error::msg)?;
            Some(std::sync::Arc::new(authority))
        }
        None => None,
    };
    let mut external = Vec::new();
    for path in &config.trusted_ca_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading trusted CA file {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = russh::keys::PublicKey::from_openssh(line).map_err(|e| {
                anyhow::anyhow!(
                    "trusted CA file {}, line {}: not an OpenSSH public key: {e}",
                    path.display(),
                    n + 1
                )
            })?;
            external.push(key.key_data().clone());
        }
    }
    let trust = Trust {
        own: authority.as_ref().map(|a| a.public_key().clone()),
        external,
    };
    Ok((authority, trust))
}
