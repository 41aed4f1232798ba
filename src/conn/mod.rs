//! Accepted connections and their one owner: admission decides whether a connection
//! may start, the registry holds it (and its channels) while it lives, and events say
//! what happened to it. Fronts (plain TCP today; TLS and HTTP CONNECT later) hand over
//! an accepted socket with its metadata; everything after that goes through here.

pub mod admission;
pub mod events;
pub mod registry;
pub mod stream;

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
    /// A route hint from the front door (TLS SNI, HTTP CONNECT host); none on plain TCP.
    pub route_hint: Option<String>,
    /// The login deadline counts from here.
    pub accepted_at: Instant,
}

/// Bytes moved on one channel, both ways.
#[derive(Debug, Default)]
pub struct Counters {
    to_workload: AtomicU64,
    from_workload: AtomicU64,
}

impl Counters {
    pub fn add_in(&self, n: usize) {
        self.to_workload.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_out(&self, n: usize) {
        self.from_workload.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// (to the workload, from the workload)
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.to_workload.load(Ordering::Relaxed),
            self.from_workload.load(Ordering::Relaxed),
        )
    }
}
