//! Pre-authentication admission, in the spirit of OpenSSH's MaxStartups and
//! PerSourcePenalties: caps on connections that have not authenticated yet (in total
//! and per source address), and a penalty that a source accrues by failing to log in,
//! which turns its new connections away once it passes a threshold. A flood of idle
//! sockets from one address therefore cannot lock out everybody else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::events::Rejection;
pub use super::limits::{AdmissionLimits, IpNet};

/// Sources whose penalty state is kept at most; beyond it the least penalized are
/// forgotten first, so a spray of addresses cannot grow memory without bound.
const MAX_TRACKED_SOURCES: usize = 65_536;

/// One source: an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) >> 64 << 64).into()),
        },
    }
}

pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    connections: usize,
    unauthenticated: usize,
    per_source: HashMap<IpAddr, usize>,
    penalties: HashMap<IpAddr, Penalty>,
}

/// Accrued penalty; it drains at one second per second.
#[derive(Debug, Clone, Copy)]
struct Penalty {
    amount: Duration,
    at: Instant,
}

impl Penalty {
    fn now(&self, now: Instant) -> Duration {
        self.amount
            .saturating_sub(now.saturating_duration_since(self.at))
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection from `ip`, or says why not. Decided before any SSH
    /// byte is exchanged, so a refusal costs the gateway almost nothing.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(ConnPermit, PreAuthPermit), Rejection> {
        self.admit_from(Some(ip))
    }

    /// Admits a connection whose real source is not known yet (a PROXY protocol
    /// header will say): counted in the totals now, and against its source once
    /// `PreAuthPermit::assign` names it.
    pub fn admit_pending(self: &Arc<Self>) -> Result<(ConnPermit, PreAuthPermit), Rejection> {
        self.admit_from(None)
    }

    fn admit_from(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
    ) -> Result<(ConnPermit, PreAuthPermit), Rejection> {
        let source = ip.map(source_of);
        let mut s = self.lock();
        if s.connections >= self.limits.max_connections {
            return Err(Rejection::ConnectionCap);
        }
        if let Some(source) = source {
            self.check_source(&s, source)?;
        }
        if s.unauthenticated >= self.limits.max_unauthenticated {
            return Err(Rejection::UnauthenticatedCap);
        }
        s.connections += 1;
        s.unauthenticated += 1;
        if let Some(source) = source {
            *s.per_source.entry(source).or_insert(0) += 1;
        }
        Ok((
            ConnPermit {
                admission: self.clone(),
            },
            PreAuthPermit {
                admission: self.clone(),
                source,
            },
        ))
    }

    /// Penalty and per-source cap for `source`.
    fn check_source(&self, s: &State, source: IpAddr) -> Result<(), Rejection> {
        if let Some(p) = s.penalties.get(&source)
            && p.now(Instant::now()) > self.limits.penalty_threshold
        {
            return Err(Rejection::Penalized);
        }
        let from_source = s.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.max_unauthenticated_per_source {
            return Err(Rejection::SourceCap);
        }
        Ok(())
    }

    /// A connection from `ip` ended without authenticating.
    pub fn penalize(&self, ip: IpAddr, offered_keys: bool) {
        if self.limits.penalty_exempt.iter().any(|n| n.contains(ip)) {
            return;
        }
        let add = if offered_keys {
            self.limits.penalty_auth_failure
        } else {
            self.limits.penalty_no_auth
        };
        if add.is_zero() {
            return;
        }
        let source = source_of(ip);
        let now = Instant::now();
        let mut s = self.lock();
        if s.penalties.len() >= MAX_TRACKED_SOURCES && !s.penalties.contains_key(&source) {
            forget_expired(&mut s.penalties, now);
            if s.penalties.len() >= MAX_TRACKED_SOURCES
                && let Some(least) = s
                    .penalties
                    .iter()
                    .min_by_key(|(_, p)| p.now(now))
                    .map(|(ip, _)| *ip)
            {
                s.penalties.remove(&least);
            }
        }
        let current = s
            .penalties
            .get(&source)
            .map_or(Duration::ZERO, |p| p.now(now));
        let amount = (current + add).min(self.limits.penalty_max);
        s.penalties.insert(source, Penalty { amount, at: now });
    }

    /// Counts for tests, metrics and the log.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.connections, s.unauthenticated)
    }
}

fn forget_expired(penalties: &mut HashMap<IpAddr, Penalty>, now: Instant) {
    penalties.retain(|_, p| !p.now(now).is_zero());
}

/// Counts a connection against `max_connections` until dropped.
pub struct ConnPermit {
    admission: Arc<Admission>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        s.connections = s.connections.saturating_sub(1);
    }
}

/// Counts a connection as unauthenticated until dropped (at authentication or close).
pub struct PreAuthPermit {
    admission: Arc<Admission>,
    /// `None` until a pending connection's source is known.
    source: Option<IpAddr>,
}

impl PreAuthPermit {
    /// Names the source of a connection admitted pending, subject to its penalty and
    /// per-source cap.
    pub fn assign(&mut self, ip: IpAddr) -> Result<(), Rejection> {
        let source = source_of(ip);
        let mut s = self.admission.lock();
        if self.source.is_some() {
            return Ok(());
        }
        self.admission.check_source(&s, source)?;
        *s.per_source.entry(source).or_insert(0) += 1;
        self.source = Some(source);
        Ok(())
    }
}

impl Drop for PreAuthPermit {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        s.unauthenticated = s.unauthenticated.saturating_sub(1);
        if let Some(source) = self.source
            && let Some(n) = s.per_source.get_mut(&source)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                super::remove_and_shrink(&mut s.per_source, &source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections: 4,
            max_unauthenticated: 3,
            max_unauthenticated_per_source: 2,
            penalty_auth_failure: Duration::from_secs(5),
            penalty_no_auth: Duration::from_secs(1),
            penalty_threshold: Duration::from_secs(15),
            penalty_max: Duration::from_secs(600),
            penalty_exempt: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_source_then_total_then_connections() {
        let a = Admission::new(limits());
        let one = a.admit(ip("192.0.2.1")).unwrap();
        let two = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.1")).err(), Some(Rejection::SourceCap));
        let three = a.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.3")).err(),
            Some(Rejection::UnauthenticatedCap)
        );
        // Authenticating frees the pre-auth slot but still counts the connection.
        drop(one.1);
        let four = a.admit(ip("192.0.2.1")).unwrap();
        drop(two.1);
        assert_eq!(
            a.admit(ip("192.0.2.9")).err(),
            Some(Rejection::ConnectionCap)
        );
        drop((one.0, two.0, three, four));
        assert_eq!(a.counts(), (0, 0));
    }

    #[test]
    fn pending_connections_count_in_totals_then_against_their_source() {
        let a = Admission::new(limits());
        let mut one = a.admit_pending().unwrap();
        let mut two = a.admit_pending().unwrap();
        let mut three = a.admit_pending().unwrap();
        assert_eq!(a.admit_pending().err(), Some(Rejection::UnauthenticatedCap));
        one.1.assign(ip("192.0.2.1")).unwrap();
        two.1.assign(ip("192.0.2.1")).unwrap();
        assert_eq!(three.1.assign(ip("192.0.2.1")), Err(Rejection::SourceCap));
        three.1.assign(ip("192.0.2.2")).unwrap();
        drop((one, two, three));
        assert_eq!(a.counts(), (0, 0));
        for _ in 0..4 {
            a.penalize(ip("192.0.2.7"), true);
        }
        let mut late = a.admit_pending().unwrap();
        assert_eq!(late.1.assign(ip("192.0.2.7")), Err(Rejection::Penalized));
    }

    #[test]
    fn ipv6_sources_are_slash_64s() {
        let a = Admission::new(limits());
        let _x = a.admit(ip("2001:db8::1")).unwrap();
        let _y = a.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(a.admit(ip("2001:db8::3")).err(), Some(Rejection::SourceCap));
        assert!(a.admit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn failing_sources_are_refused_until_the_penalty_drains() {
        let a = Admission::new(limits());
        for _ in 0..3 {
            a.penalize(ip("192.0.2.7"), true);
        }
        // 15 s accrued: not yet past the threshold.
        assert!(a.admit(ip("192.0.2.7")).is_ok());
        a.penalize(ip("192.0.2.7"), true);
        assert_eq!(a.admit(ip("192.0.2.7")).err(), Some(Rejection::Penalized));
        // Others are unaffected, and exempt ranges are never penalized.
        assert!(a.admit(ip("192.0.2.8")).is_ok());
        for _ in 0..10 {
            a.penalize(ip("10.1.2.3"), true);
        }
        assert!(a.admit(ip("10.1.2.3")).is_ok());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(a.admit(ip("192.0.2.7")).is_ok());
    }

    #[test]
    fn nets_parse_and_match() {
        let net = IpNet::parse("192.168.0.0/16").unwrap();
        assert!(net.contains(ip("192.168.4.5")));
        assert!(!net.contains(ip("192.169.0.1")));
        assert!(IpNet::parse("::1").unwrap().contains(ip("::1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(IpNet::parse("1.2.3.4/33").is_err());
        assert!(IpNet::parse("nope").is_err());
    }
}
