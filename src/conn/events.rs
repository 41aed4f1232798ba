//! What happens to a connection, as plain data. The registry and admission emit these;
//! subscribers (the log today; metrics, audit and activity later) observe them. The
//! SSH handler and the bridge never log a lifecycle step themselves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::ConnId;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it, or the network did.
    ClientGone,
    /// Not authenticated before the login deadline (counted from accept).
    LoginTimeout,
    /// Too many keys offered.
    TooManyAuthAttempts,
    /// The SSH handshake or protocol failed.
    ProtocolError,
    /// The gateway is shutting down.
    Shutdown,
    /// A revocation ended it (see `Revocation` for which).
    Revoked(Revocation),
    /// No payload moved for `[activity] idle_timeout_secs`.
    Idle,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientGone => "client closed",
            CloseReason::LoginTimeout => "login grace time expired",
            CloseReason::TooManyAuthAttempts => "too many authentication attempts",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::Shutdown => "gateway shutting down",
            CloseReason::Revoked(why) => why.as_str(),
            CloseReason::Idle => {
                "closed for inactivity: no input or output for longer than this gateway's idle timeout"
            }
        }
    }

    /// Whether this end counts against the source (PerSourcePenalties).
    pub fn is_auth_failure(self) -> bool {
        matches!(
            self,
            CloseReason::LoginTimeout | CloseReason::TooManyAuthAttempts
        )
    }
}

/// What was taken away from a live connection. The texts follow `Connection closed:`
/// in what the client prints, so they speak to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The key it logged in with was deleted.
    Key,
    /// The certificate it logged in with is no longer accepted (its key or the token
    /// that issued it was deleted).
    Certificate,
    /// Its user was deleted.
    Account,
    /// The API token it signed in with (the browser terminal) was deleted.
    Token,
    /// Its user may no longer use the target (member removed, owner changed, target
    /// deleted).
    Access,
}

impl Revocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Revocation::Key => "connection closed: your key was revoked",
            Revocation::Certificate => "connection closed: your certificate was revoked",
            Revocation::Account => "connection closed: your account was deleted",
            Revocation::Token => "connection closed: the API token it signed in with was deleted",
            Revocation::Access => "connection closed: your access to this sandbox was removed",
        }
    }
}

/// Why admission turned a connection away before any SSH byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `ssh.max_connections` reached.
    ConnectionCap,
    /// `ssh.max_unauthenticated` reached.
    UnauthenticatedCap,
    /// `ssh.max_unauthenticated_per_source` reached for this address.
    SourceCap,
    /// The address keeps failing authentication and is penalized.
    Penalized,
    /// PROXY protocol is on and this peer is not in `ssh.proxy_protocol_from`.
    UntrustedProxy,
    /// PROXY protocol is on and the header is missing or malformed.
    BadProxyHeader,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::ConnectionCap => "connection limit reached",
            Rejection::UnauthenticatedCap => "too many unauthenticated connections",
            Rejection::SourceCap => "too many unauthenticated connections from this address",
            Rejection::Penalized => "address penalized for failed logins",
            Rejection::UntrustedProxy => {
                "PROXY protocol from an address not in ssh.proxy_protocol_from"
            }
            Rejection::BadProxyHeader => "missing or malformed PROXY protocol header",
        }
    }
}

/// How a channel's program ended, as far as the client was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEnd {
    Exit(u32),
    Signal(String),
    /// The gateway refused to start it (the user saw why).
    Refused,
    /// A forward or a channel that carries no exit status.
    Closed,
}

#[derive(Debug, Clone)]
pub enum Event {
    Accepted {
        conn: ConnId,
        peer: SocketAddr,
    },
    Rejected {
        peer: SocketAddr,
        reason: Rejection,
    },
    Authenticated {
        conn: ConnId,
        /// The client's address (the PROXY protocol's when one was sent).
        peer: SocketAddr,
        user_id: String,
        user: String,
        key_id: String,
        /// SHA-256 fingerprint of the key that logged in (the certified key's, for a
        /// certificate).
        fingerprint: String,
        /// The serial of the certificate that logged in, if one did.
        certificate: Option<u64>,
        target: String,
    },
    ChannelOpened {
        conn: ConnId,
        channel: u32,
        kind: &'static str,
        detail: String,
    },
    ChannelClosed {
        conn: ConnId,
        channel: u32,
        kind: &'static str,
        /// What it ran or reached: `shell`, `sftp`, the exec command line, or the
        /// forward's destination; empty if it never asked for anything.
        program: String,
        /// Its recording's file, when it was recorded.
        recording: Option<String>,
        /// When it opened (Unix ms).
        opened_ms: u64,
        bytes_in: u64,
        bytes_out: u64,
        /// When payload last moved on it (Unix ms), if it ever did.
        last_payload_ms: Option<u64>,
        end: ChannelEnd,
    },
    Closed {
        conn: ConnId,
        peer: SocketAddr,
        reason: CloseReason,
        lifetime: Duration,
        user: Option<String>,
    },
}

/// Something that wants to know. Called inline, so it must be quick and never block:
/// hand slow work (audit writes) to a bounded queue of your own.
pub trait Subscriber: Send + Sync + 'static {
    fn on_event(&self, event: &Event);
}

/// The fan-out: subscribers are fixed at start-up.
#[derive(Clone, Default)]
pub struct Events {
    subscribers: Arc<Vec<Arc<dyn Subscriber>>>,
}

impl Events {
    pub fn new(subscribers: Vec<Arc<dyn Subscriber>>) -> Self {
        Self {
            subscribers: Arc::new(subscribers),
        }
    }

    pub fn emit(&self, event: Event) {
        for s in self.subscribers.iter() {
            s.on_event(&event);
        }
    }
}

/// Writes every event to the log: the gateway's access log. Refusals under a flood
/// are summarized, at most one line a second.
#[derive(Default)]
pub struct LogSubscriber {
    refusals: std::sync::Mutex<RefusalLog>,
}

#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogSubscriber {
    fn refused(&self, peer: &SocketAddr, reason: Rejection) {
        let mut log = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            log.suppressed += 1;
            return;
        }
        let also = std::mem::take(&mut log.suppressed);
        log.last = Some(now);
        tracing::warn!(%peer, reason = reason.as_str(), refused_since_last_line = also, "connection refused");
    }
}

impl Subscriber for LogSubscriber {
    fn on_event(&self, event: &Event) {
        use tracing::{debug, info};
        match event {
            Event::Accepted { conn, peer } => debug!(conn, %peer, "accepted"),
            Event::Rejected { peer, reason } => self.refused(peer, *reason),
            Event::Authenticated {
                conn,
                user,
                key_id,
                certificate: Some(serial),
                target,
                ..
            } => {
                info!(conn, account = %user, key = %key_id, certificate = serial, target = %target, "authenticated")
            }
            Event::Authenticated {
                conn,
                user,
                key_id,
                certificate: None,
                target,
                ..
            } => info!(conn, account = %user, key = %key_id, target = %target, "authenticated"),
            Event::ChannelOpened {
                conn,
                channel,
                kind,
                detail,
            } => info!(conn, channel, kind, detail = %detail, "channel opened"),
            Event::ChannelClosed {
                conn,
                channel,
                kind,
                bytes_in,
                bytes_out,
                end,
                ..
            } => info!(conn, channel, kind, bytes_in, bytes_out, end = ?end, "channel closed"),
            Event::Closed {
                conn,
                peer,
                reason,
                lifetime,
                user,
            } => info!(
                conn,
                %peer,
                reason = reason.as_str(),
                secs = lifetime.as_secs_f64(),
                account = user.as_deref().unwrap_or("-"),
                "connection closed"
            ),
        }
    }
}
