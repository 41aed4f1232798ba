//! What admission enforces, as plain data: the limits and the address ranges they
//! exempt. Only std, so the config fuzz target (fuzz/) compiles it without the rest
//! of the gateway.

use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionLimits {
    /// Connections in total (authenticated or not).
    pub max_connections: usize,
    /// Connections that have not authenticated yet, in total.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections from one source (an IPv4 address, an IPv6 /64).
    pub max_unauthenticated_per_source: usize,
    /// Penalty for a connection that offered keys and never authenticated.
    pub penalty_auth_failure: Duration,
    /// Penalty for a connection that never tried to authenticate.
    pub penalty_no_auth: Duration,
    /// A source is refused while its penalty exceeds this.
    pub penalty_threshold: Duration,
    /// Penalties never accrue past this.
    pub penalty_max: Duration,
    /// Sources never penalized (load balancers' health checks, trusted networks).
    pub penalty_exempt: Vec<IpNet>,
}

/// An address range `addr/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(net) as u128, self.prefix, 32)
                    == mask(u32::from(ip) as u128, self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(net), self.prefix, 128) == mask(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = width - prefix;
    (bits >> shift) << shift
}
