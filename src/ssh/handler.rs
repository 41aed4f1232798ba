//! The russh `Handler` for one connection: glue only. Each callback validates and
//! replies; the work of a channel happens in its own task (`channel.rs`), so no
//! callback ever waits on a workload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tracing::{Instrument, debug, info, warn};

use super::Gateway;
use super::auth::{Refusal, authenticate, check_signature_algorithm};
use super::channel::{ChannelCtx, TargetCell, serve_direct_tcpip, serve_session};
use crate::control::Principal;
use crate::route;

/// Open channels allowed per connection (VS Code uses a handful).
const MAX_CHANNELS: usize = 64;
/// Env requests honoured per channel.
pub const MAX_ENV: usize = 64;
const MAX_ENV_VALUE: usize = 4096;

pub struct ConnectionHandler {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    principal: Option<Principal>,
    target: Option<Arc<TargetCell>>,
    /// Set once auth succeeds; the login-grace timer reads it.
    authenticated: Arc<AtomicBool>,
    open_channels: Arc<AtomicUsize>,
    /// Keys offered so far. russh does not count offers it rejects, but OpenSSH's
    /// MaxAuthTries does, and so do we: otherwise a client could probe keys forever.
    offers: usize,
    /// The key whose offer was just accepted, and its owner.
    accepted_offer: Option<(russh::keys::PublicKey, Principal)>,
}

impl ConnectionHandler {
    pub fn new(gw: Arc<Gateway>, peer: SocketAddr, authenticated: Arc<AtomicBool>) -> Self {
        Self {
            gw,
            peer,
            principal: None,
            target: None,
            authenticated,
            open_channels: Arc::new(AtomicUsize::new(0)),
            offers: 0,
            accepted_offer: None,
        }
    }

    fn publickey_only() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }

    /// Context for a new channel, or None before auth (russh never gets here then).
    fn channel_ctx(&self, session: &Session) -> Option<ChannelCtx> {
        Some(ChannelCtx {
            gw: self.gw.clone(),
            principal: self.principal.clone()?,
            target: self.target.clone()?,
            handle: session.handle(),
            slots: ChannelSlot::take(&self.open_channels)?,
        })
    }
}

/// Counts an open channel; frees its slot when dropped.
pub struct ChannelSlot(Arc<AtomicUsize>);

impl ChannelSlot {
    fn take(counter: &Arc<AtomicUsize>) -> Option<Self> {
        let prev = counter.fetch_add(1, Ordering::AcqRel);
        if prev >= MAX_CHANNELS {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(counter.clone()))
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl russh::server::Handler for ConnectionHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::publickey_only())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.offers += 1;
        if self.offers > self.gw.settings.max_auth_attempts {
            info!(peer = %self.peer, user, "too many authentication attempts; disconnecting");
            return Err(russh::Error::NoAuthMethod);
        }
        // Saying no before the client signs saves it a signature per unknown key.
        match authenticate(self.gw.keys.as_ref(), offer.public_key, offer.algorithm).await {
            Ok(principal) => {
                self.accepted_offer = Some((offer.public_key.clone(), principal));
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                debug!(peer = %self.peer, user, ?refusal, "key offer refused");
                Ok(Self::publickey_only())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // The client signs right after we accepted its offer: reuse that lookup rather
        // than asking the store twice per login.
        let looked_up = match self.accepted_offer.take() {
            Some((offered, principal))
                if &offered == key.public_key && check_signature_algorithm(key.algorithm) =>
            {
                Ok(principal)
            }
            _ => authenticate(self.gw.keys.as_ref(), key.public_key, key.algorithm).await,
        };
        match looked_up {
            Ok(principal) => {
                info!(peer = %self.peer, user, account = %principal.user_name, key = %principal.key_id, "authenticated");
                self.target = Some(Arc::new(TargetCell::new(route::route(user))));
                self.principal = Some(principal);
                Ok(Auth::Accept)
            }
            Err(Refusal::StoreFailed(e)) => {
                warn!(peer = %self.peer, error = %e, "key store unavailable during auth");
                Ok(Self::publickey_only())
            }
            Err(refusal) => {
                debug!(peer = %self.peer, user, ?refusal, "key refused");
                Ok(Self::publickey_only())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.store(true, Ordering::Release);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ctx) = self.channel_ctx(session) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        reply.accept().await;
        let span = tracing::info_span!("channel", id = %channel.id(), kind = "session");
        tokio::spawn(serve_session(channel, ctx).instrument(span));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let loopback = matches!(host_to_connect, "localhost" | "127.0.0.1" | "::1" | "[::1]");
        let port = u16::try_from(port_to_connect).ok().filter(|p| *p != 0);
        let (true, Some(port)) = (loopback, port) else {
            info!(
                host = host_to_connect,
                port = port_to_connect,
                "refused forward: not the sandbox's localhost"
            );
            reply
                .reject(refusal(
                    1,
                    "ssh-gateway: only ports on the sandbox's own localhost can be forwarded",
                ))
                .await;
            return Ok(());
        };
        let Some(ctx) = self.channel_ctx(session) else {
            reply
                .reject(refusal(
                    4,
                    "ssh-gateway: too many channels open on this connection",
                ))
                .await;
            return Ok(());
        };
        // The reply goes with the task: it answers once the port is actually reached,
        // so a refused connection reads "connect failed" as it would from sshd.
        let span = tracing::info_span!("channel", id = %channel.id(), kind = "direct-tcpip", port);
        tokio::spawn(serve_direct_tcpip(channel, reply, port, ctx).instrument(span));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.gw.env_allowed(variable_name, variable_value) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

/// A channel-open refusal with a reason the client prints (RFC 4254 §5.1 codes:
/// 1 administratively prohibited, 2 connect failed, 4 resource shortage).
pub fn refusal(code: u32, reason: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code,
        reason: reason.to_owned(),
    }
}

impl Gateway {
    /// Whether a client-sent variable may reach the workload.
    pub fn env_allowed(&self, name: &str, value: &str) -> bool {
        value.len() <= MAX_ENV_VALUE && self.settings.env_allowed(name)
    }
}
