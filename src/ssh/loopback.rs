//! Connections the gateway opens to itself. The browser terminal speaks SSH over an
//! in-memory pipe into the same handler as any client, so its sessions go through
//! the same admission, registry (drain, revocation, idle limits, audit, activity),
//! authorization, wake-on-connect, backend and recording path as `ssh`; only the
//! login differs: the user proved themselves to the API with a token, so the
//! connection starts with that `Principal` and logs in with the `none` method. The
//! pipe is reachable from nowhere else.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::DuplexStream;
use tracing::Instrument;

use super::{Gateway, handle_connection};
use crate::conn::events::{Event, Rejection};
use crate::control::Principal;

/// Bytes either side of the pipe may hold before the writer waits: SSH's own
/// windows bound the rest.
const PIPE_BYTES: usize = 64 * 1024;

pub struct Loopback {
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
}

impl Loopback {
    pub fn new(config: Arc<russh::server::Config>, gw: Arc<Gateway>) -> Self {
        Self { config, gw }
    }

    /// Admits a connection for `principal`, coming from `peer` (the browser's
    /// address: limits, penalties and the audit trail see it as any client's), and
    /// returns the client's end of its pipe.
    pub fn dial(&self, principal: Principal, peer: SocketAddr) -> Result<DuplexStream, Rejection> {
        let gw = &self.gw;
        let (permit, preauth) = match gw.admission.admit(peer.ip()) {
            Ok(permits) => permits,
            Err(reason) => {
                gw.registry.events().emit(Event::Rejected { peer, reason });
                return Err(reason);
            }
        };
        let conn = gw.registry.register(peer, preauth);
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let span = tracing::info_span!("conn", id = conn.id(), %peer, via = "terminal");
        gw.registry.spawn(
            handle_connection(
                server,
                conn,
                permit,
                self.config.clone(),
                gw.clone(),
                None,
                Some(principal),
            )
            .instrument(span),
        );
        Ok(client)
    }
}
