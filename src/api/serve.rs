//! The API's accept loop. `axum::serve` has no header timeout, no connection cap and
//! no bound on header size, so a handful of clients that connect and say nothing (or
//! trickle one header byte at a time) could hold sockets forever and, through the
//! process's file-descriptor limit, starve the SSH listener. Here each connection
//! needs a permit from a fixed pool, hyper's HTTP/1 builder enforces the header
//! timeout and size, and the router's own layer (see `mod.rs`) bounds the rest of the
//! request.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::Layer;

use crate::config::ApiConfig;

/// What a connection over the cap reads before it is closed.
const AT_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 103\r\n\
\r\n\
{\"error\":{\"code\":\"unavailable\",\"message\":\"the API is at its connection limit; try again in a moment\"}}\n";

/// How long connections get to finish their current request at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets
/// requests in flight finish (for at most [`DRAIN`]) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ApiConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max = limits.max_connections;
    warn_if_fd_limit_is_low(max);
    let permits = Arc::new(Semaphore::new(max));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_header_size(limits.max_header_bytes)
        // The read buffer must hold a full header block, and bounds per-connection
        // memory otherwise (hyper's default is ~400 KiB).
        .max_buf_size(limits.max_header_bytes.max(64 * 1024));
    let http = Arc::new(http);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut refusals = RateLimitedLog::new();
    let mut accept_errors = RateLimitedLog::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning,
                    // and keep serving the connections already open.
                    if let Some(skipped) = accept_errors.tick() {
                        tracing::error!(error = %e, skipped, "API accept failed");
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Accepting and closing at once keeps the backlog moving and tells the
            // client why; waiting for a slot would let idle clients stall new ones.
            refuse(stream);
            if let Some(skipped) = refusals.tick() {
                tracing::warn!(
                    limit = max,
                    refused_since_last_warning = skipped,
                    "API connection limit (api.max_connections) reached; refusing new connections"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let http = http.clone();
        // Handlers that need the client's address (the browser terminal's audit
        // trail and limits) read it as axum's ConnectInfo. Every request carries the
        // connection's slot: an upgraded socket (the browser terminal's WebSocket)
        // outlives this task, and keeps its slot by holding the request's copy.
        let slot = Slot {
            _permit: Arc::new(permit),
        };
        let service = TowerToHyperService::new(
            axum::Extension(axum::extract::ConnectInfo(peer))
                .layer(axum::Extension(slot.clone()).layer(app.clone())),
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                // Sent once, at shutdown; an error means the loop itself is gone,
                // which is a shutdown too.
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            // Header timeouts, oversized headers and clients going away end up here;
            // they are the peer's business, not an error of ours.
            if let Err(e) = result {
                tracing::debug!(error = %e, "API connection ended");
            }
        });
    }
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: holding them all means drained.
    let everyone = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(everyone))
        .await
        .is_err()
    {
        tracing::info!("API connections still open after the drain time; closing them");
    }
    Ok(())
}

/// One of the `api.max_connections` places, held by a connection for as long as its
/// socket is open, upgraded or not.
#[derive(Clone)]
pub struct Slot {
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

/// Best effort and never waits on the peer: the 503 fits in an empty socket buffer,
/// and if it does not go out the client still sees the connection close.
fn refuse(stream: TcpStream) {
    // Reading what already arrived lets the close be a FIN; unread data would turn
    // it into an RST that can destroy the 503 before the client reads it.
    let mut scratch = [0u8; 4096];
    let _ = stream.try_read(&mut scratch);
    let _ = stream.try_write(AT_CAPACITY);
}

/// Accept errors that concern one connection (it was reset while queued), as opposed
/// to the listener or the process (EMFILE, ENFILE, ENOBUFS).
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// At most one line a second, however often the event happens.
struct RateLimitedLog {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    fn new() -> Self {
        Self {
            last: None,
            skipped: 0,
        }
    }

    /// `Some(events not logged since the last line)` when a line is due.
    fn tick(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// The cap only protects SSH if the process can afford it: say so when the API alone
/// could take a large share of the descriptors.
fn warn_if_fd_limit_is_low(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit};
    if let Ok((soft, _hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let api = u64::try_from(max_connections).unwrap_or(u64::MAX);
        if api.saturating_mul(4) > soft {
            tracing::warn!(
                api_max_connections = max_connections,
                open_files_limit = soft,
                "api.max_connections is more than a quarter of the open-files limit (ulimit -n); SSH connections may run short of descriptors"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_capacity_response_has_the_length_it_says() {
        let text = std::str::from_utf8(AT_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "unavailable");
    }

    #[test]
    fn rate_limited_log_counts_what_it_skips() {
        let mut log = RateLimitedLog::new();
        assert_eq!(log.tick(), Some(0));
        assert_eq!(log.tick(), None);
        assert_eq!(log.tick(), None);
        log.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(log.tick(), Some(2));
    }
}
