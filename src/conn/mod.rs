//! Accepted connections and their one owner: admission decides whether a connection
//! may start, the registry holds it (and its channels) while it lives, and events say
//! what happened to it. Fronts (plain TCP today; TLS and HTTP CONNECT later) hand over
//! an accepted socket with its metadata; everything after that goes through here.

pub mod activity;
pub mod admission;
pub mod connect;
pub mod events;
pub mod limits;
pub mod proxy_protocol;
pub mod registry;
pub mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

pub use registry::{ChannelGuard, Conn, ConnInfo, ConnRef, Registry};

pub type ConnId = u64;

/// What is known about a connection when it is accepted.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    pub id: ConnId,
    pub peer: SocketAddr,
    /// The login deadline counts from here.
    pub accepted_at: Instant,
}

/// Bytes moved on one channel, both ways, and when payload last moved (keepalives and
/// window adjustments are not payload and never reach these).
#[derive(Debug, Default)]
pub struct Counters {
    to_workload: AtomicU64,
    from_workload: AtomicU64,
    /// Unix milliseconds; 0 = never.
    last_payload_ms: AtomicU64,
}

/// Payload bytes of every channel in this process, both ways, as they move: what the
/// metrics report, so a long transfer shows while it runs rather than at its close.
static PAYLOAD_TO_WORKLOAD: AtomicU64 = AtomicU64::new(0);
static PAYLOAD_FROM_WORKLOAD: AtomicU64 = AtomicU64::new(0);

/// Removes `key` from a map that holds one entry per live connection, and halves the
/// map once it is a quarter full: a map never shrinks by itself, so after a burst of
/// 10,000 connections each such map would keep its empty slots (megabytes) for good.
/// Shrinking only at a quarter keeps the cost amortized.
pub fn remove_and_shrink<K: std::hash::Hash + Eq, V>(
    map: &mut std::collections::HashMap<K, V>,
    key: &K,
) -> Option<V> {
    let value = map.remove(key)?;
    if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
        let len = map.len();
        map.shrink_to(len * 2);
    }
    Some(value)
}

/// (to workloads, from workloads) moved so far by this process; never decreases.
pub fn payload_totals() -> (u64, u64) {
    (
        PAYLOAD_TO_WORKLOAD.load(Ordering::Relaxed),
        PAYLOAD_FROM_WORKLOAD.load(Ordering::Relaxed),
    )
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Counters {
    pub fn add_in(&self, n: usize) {
        self.to_workload.fetch_add(n as u64, Ordering::Relaxed);
        PAYLOAD_TO_WORKLOAD.fetch_add(n as u64, Ordering::Relaxed);
        self.moved(n);
    }

    pub fn add_out(&self, n: usize) {
        self.from_workload.fetch_add(n as u64, Ordering::Relaxed);
        PAYLOAD_FROM_WORKLOAD.fetch_add(n as u64, Ordering::Relaxed);
        self.moved(n);
    }

    fn moved(&self, n: usize) {
        if n > 0 {
            self.last_payload_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// When payload last moved on this channel (Unix ms), if it ever did.
    pub fn last_payload_ms(&self) -> Option<u64> {
        Some(self.last_payload_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// (to the workload, from the workload)
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.to_workload.load(Ordering::Relaxed),
            self.from_workload.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod map_tests {
    use std::collections::HashMap;

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_slots_back() {
        let mut map: HashMap<u64, [u8; 64]> = (0..10_000).map(|i| (i, [0; 64])).collect();
        let full = map.capacity();
        for i in 0..9_990 {
            assert!(super::remove_and_shrink(&mut map, &i).is_some());
        }
        assert_eq!(map.len(), 10);
        assert!(
            map.capacity() <= 2048,
            "{} of {full} slots kept",
            map.capacity()
        );
        assert!((9_990..10_000).all(|i| map.contains_key(&i)));
        assert!(super::remove_and_shrink(&mut map, &0).is_none());
    }
}
