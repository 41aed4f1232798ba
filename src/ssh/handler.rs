//! The russh `Handler` for one connection: glue only. Auth callbacks turn a proven key
//! into a `Principal`; channel callbacks validate (through `request.rs`), reply, and
//! hand the accepted work to a channel task registered with the connection's owner,
//! so no callback ever waits on a workload.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, warn};

use super::Gateway;
use super::auth::{
    Refusal as AuthRefusal, authenticate, authenticate_certificate, check_signature_algorithm,
};
use super::channel::{ChannelCtx, serve_direct_streamlocal, serve_direct_tcpip, serve_session};
use super::refusal::Refusal;
use super::request::{self, SessionSetup, SessionStart};
use crate::backend::Program;
use crate::certs::{CertRefusal, Permits};
use crate::conn::ConnRef;
use crate::conn::events::CloseReason;
use crate::control::Principal;
use crate::keys::Escaped;
use crate::route::{self, Route, RouteError};

/// Channels open at once on one connection (VS Code uses a handful; closed channels
/// free their place).
pub(super) const MAX_OPEN_CHANNELS: usize = 64;

pub struct ConnectionHandler {
    gw: Arc<Gateway>,
    conn: ConnRef,
    /// The host name a front (HTTP CONNECT) learned; it routes before the username.
    route_hint: Option<String>,
    login: Option<Login>,
    /// Keys offered so far. russh does not count offers it rejects, but OpenSSH's
    /// MaxAuthTries does, and so do we: otherwise a client could probe keys forever.
    offers: usize,
    /// The key or certificate whose offer was just accepted, and its owner.
    accepted_offer: Option<(Offered, Principal)>,
    /// The client's address (the PROXY-protocol one when present): a certificate's
    /// `source-address` is checked against it.
    peer: IpAddr,
    /// Session channels whose program has not started yet.
    setups: HashMap<ChannelId, PendingSession>,
    /// The client said it opens no more sessions (`no-more-sessions@openssh.com`).
    no_more_sessions: bool,
    /// Who the gateway's own in-memory connection (the browser terminal, see
    /// `loopback`) was opened for, proven before SSH began; taken by the first
    /// `none` auth. Never set for a connection from the network. Boxed: every
    /// connection carries the field, few use it.
    preauth: Option<Box<Principal>>,
}

/// What an accepted offer was.
#[derive(PartialEq)]
enum Offered {
    Key(russh::keys::PublicKey),
    Certificate(Box<Certificate>),
}

/// Who logged in, and what they asked for.
struct Login {
    principal: Principal,
    route: Arc<Result<Route, RouteError>>,
}

struct PendingSession {
    setup: SessionSetup,
    start: oneshot::Sender<SessionStart>,
}

impl ConnectionHandler {
    /// `route_hint`: the host name a front learned, if any.
    pub fn new(gw: Arc<Gateway>, conn: ConnRef, peer: IpAddr, route_hint: Option<String>) -> Self {
        Self {
            gw,
            conn,
            route_hint,
            login: None,
            offers: 0,
            accepted_offer: None,
            peer,
            setups: HashMap::new(),
            no_more_sessions: false,
            preauth: None,
        }
    }

    /// For the gateway's own in-memory connections: `principal` logs in with the
    /// `none` method (it proved itself to the API; see `loopback`).
    pub fn logged_in_as(mut self, principal: Option<Principal>) -> Self {
        self.preauth = principal.map(Box::new);
        self
    }

    async fn authenticate_certificate(
        &self,
        cert: &Certificate,
        algorithm: &russh::keys::Algorithm,
    ) -> Result<Principal, AuthRefusal> {
        authenticate_certificate(
            self.gw.keys.as_ref(),
            &self.gw.trust,
            cert,
            algorithm,
            self.peer,
        )
        .await
    }

    /// Records a successful login, or logs why there was none.
    fn logged_in(&mut self, user: &str, looked_up: Result<Principal, AuthRefusal>) -> Auth {
        match looked_up {
            Ok(principal) => {
                let method = match principal.credential() {
                    crate::control::Credential::Key { .. } => "publickey",
                    crate::control::Credential::Certificate { .. } => "certificate",
                    crate::control::Credential::ApiToken { .. } => "api_token",
                };
                crate::metrics::global().auth(method, "accepted");
                self.login = Some(Login {
                    principal,
                    route: Arc::new(route::resolve(
                        user,
                        self.route_hint.as_deref(),
                        &self.gw.routing,
                    )),
                });
                Auth::Accept
            }
            Err(refusal) => {
                self.log_refusal(user, &refusal);
                Self::publickey_only()
            }
        }
    }

    fn log_refusal(&self, user: &str, refusal: &AuthRefusal) {
        let conn = self.conn.id();
        let (method, outcome) = match refusal {
            AuthRefusal::Sha1Signature => ("publickey", "sha1_signature"),
            AuthRefusal::Policy(_) => ("publickey", "key_policy"),
            AuthRefusal::UnknownKey => ("publickey", "unknown_key"),
            AuthRefusal::Certificate(_) => ("certificate", "refused"),
            AuthRefusal::CertificateRevoked => ("certificate", "not_on_record"),
            AuthRefusal::StoreFailed(_) => ("publickey", "store_unavailable"),
        };
        crate::metrics::global().auth(method, outcome);
        match refusal {
            AuthRefusal::StoreFailed(e) => {
                warn!(conn, error = %e, "key store unavailable during auth");
            }
            // Worth an operator's attention: someone holds a certificate (from a CA we
            // trust, or claiming to be) that does not fit.
            AuthRefusal::Certificate(reason) => {
                info!(conn, user = %Escaped(user), %reason, "certificate refused");
            }
            AuthRefusal::CertificateRevoked => {
                info!(conn, user = %Escaped(user), "certificate refused: its user, key or record is gone");
            }
            other => debug!(conn, user = %Escaped(user), refusal = ?other, "key refused"),
        }
    }

    /// What the login may do; nothing before there is one.
    fn permits(&self) -> Permits {
        self.login
            .as_ref()
            .map_or(Permits::NONE, |l| l.principal.permits())
    }

    fn publickey_only() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }

    /// Registers a new channel with the connection's owner and builds its context.
    /// `channel_ctx` for a forward, once this login may forward (a certificate
    /// without `permit-port-forwarding` may not, as with sshd).
    fn forward_ctx(
        &self,
        channel: ChannelId,
        kind: &'static str,
        detail: String,
        session: &Session,
    ) -> Result<ChannelCtx, Refusal> {
        if !self.permits().port_forwarding {
            let refusal = Refusal::NotPermitted(crate::certs::EXT_PORT_FORWARDING);
            debug!(
                conn = self.conn.id(),
                kind,
                "forward refused: {}",
                refusal.user_message()
            );
            return Err(refusal);
        }
        self.channel_ctx(channel, kind, detail, session)
    }

    fn channel_ctx(
        &self,
        channel: ChannelId,
        kind: &'static str,
        detail: String,
        session: &Session,
    ) -> Result<ChannelCtx, Refusal> {
        // russh only offers channels after auth; without a login there is nothing to do.
        let Some(login) = &self.login else {
            return Err(Refusal::TooManyChannels);
        };
        let guard = self
            .conn
            .open_channel(channel.into(), kind, detail, MAX_OPEN_CHANNELS)
            .map_err(|_| Refusal::TooManyChannels)?;
        Ok(ChannelCtx {
            gw: self.gw.clone(),
            principal: login.principal.clone(),
            route: login.route.clone(),
            handle: session.handle(),
            guard,
        })
    }

    /// Starts the program of a pending session channel; false if there is none.
    fn start(&mut self, channel: ChannelId, program: Program) -> bool {
        match self.setups.remove(&channel) {
            Some(pending) => pending.start.send(pending.setup.start(program)).is_ok(),
            None => false,
        }
    }

    fn reply(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

impl russh::server::Handler for ConnectionHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        match self.preauth.take() {
            Some(principal) => Ok(self.logged_in(user, Ok(*principal))),
            None => Ok(Self::publickey_only()),
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.offers += 1;
        self.conn.key_offered();
        if self.offers > self.gw.settings.max_auth_attempts {
            self.conn.set_reason(CloseReason::TooManyAuthAttempts);
            return Err(russh::Error::NoAuthMethod);
        }
        // Saying no before the client signs saves it a signature per unknown key.
        let (offered, verdict) = match offer.certificate {
            Some(cert) => (
                Offered::Certificate(Box::new(cert.clone())),
                self.authenticate_certificate(cert, offer.algorithm).await,
            ),
            None => (
                Offered::Key(offer.public_key.clone()),
                authenticate(self.gw.keys.as_ref(), offer.public_key, offer.algorithm).await,
            ),
        };
        match verdict {
            Ok(principal) => {
                self.accepted_offer = Some((offered, principal));
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                self.log_refusal(user, &refusal);
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
            Some((Offered::Key(offered), principal))
                if &offered == key.public_key && check_signature_algorithm(key.algorithm) =>
            {
                Ok(principal)
            }
            _ => authenticate(self.gw.keys.as_ref(), key.public_key, key.algorithm).await,
        };
        Ok(self.logged_in(user, looked_up))
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let looked_up = match self.accepted_offer.take() {
            Some((Offered::Certificate(offered), principal)) if *offered == *certificate => {
                Ok(principal)
            }
            // russh asks `auth_publickey_offered` about every certificate right before
            // this, signed or not, so an accepted offer is always there; without one
            // (and russh gives no signature algorithm here to judge it) refuse.
            _ => Err(AuthRefusal::Certificate(CertRefusal::NotOffered)),
        };
        Ok(self.logged_in(user, looked_up))
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(login) = &self.login {
            // The route's key names the remote too (`<remote>/<name>`), so activity
            // reaches that remote; what a refused route showed must never read as
            // one, hence no `/` in it.
            let target = match login.route.as_ref() {
                Ok(route) => route.key(),
                Err(e) => e.shown().replace('/', "%2F"),
            };
            self.conn
                .authenticated(&login.principal, &target, login.route.clone());
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        if self.no_more_sessions {
            // What sshd does: the client promised none, so whoever asks is not it.
            info!(
                conn = self.conn.id(),
                "session channel after no-more-sessions: possible attack; disconnecting"
            );
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            self.conn.cancel(CloseReason::ProtocolError);
            return Ok(());
        }
        let ctx = match self.channel_ctx(id, "session", String::new(), session) {
            Ok(ctx) => ctx,
            Err(refusal) => {
                reply.reject(refusal.open_failure()).await;
                return Ok(());
            }
        };
        let (start, started) = oneshot::channel();
        self.setups.insert(
            id,
            PendingSession {
                setup: SessionSetup::default(),
                start,
            },
        );
        reply.accept().await;
        let span =
            tracing::info_span!("channel", conn = self.conn.id(), id = %id, kind = "session");
        self.conn
            .registry()
            .spawn(serve_session(channel, started, ctx).instrument(span));
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
        let port = match request::forward_destination(host_to_connect, port_to_connect) {
            Ok(port) => port,
            Err(refusal) => {
                debug!(
                    conn = self.conn.id(),
                    host = host_to_connect,
                    port = port_to_connect,
                    "forward refused"
                );
                reply.reject(refusal.open_failure()).await;
                return Ok(());
            }
        };
        let detail = format!("localhost:{port}");
        let ctx = match self.forward_ctx(channel.id(), "direct-tcpip", detail, session) {
            Ok(ctx) => ctx,
            Err(refusal) => {
                reply.reject(refusal.open_failure()).await;
                return Ok(());
            }
        };
        // The reply goes with the task: it answers once the port is actually reached,
        // so a refused connection reads "connect failed" as it would from sshd.
        let span = tracing::info_span!("channel", conn = self.conn.id(), id = %channel.id(), kind = "direct-tcpip", port);
        self.conn
            .registry()
            .spawn(serve_direct_tcpip(channel, reply, port, ctx).instrument(span));
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        let ctx = request::socket_path(socket_path)
            .and_then(|path| self.forward_ctx(id, "direct-streamlocal", path.to_owned(), session));
        let ctx = match ctx {
            Ok(ctx) => ctx,
            Err(refusal) => {
                reply.reject(refusal.open_failure()).await;
                return Ok(());
            }
        };
        let span = tracing::info_span!("channel", conn = self.conn.id(), id = %id, kind = "direct-streamlocal");
        self.conn.registry().spawn(
            serve_direct_streamlocal(channel, reply, socket_path.to_owned(), ctx).instrument(span),
        );
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Without permit-pty the client hears "PTY allocation request failed" and
        // goes on without one, as with sshd.
        let permitted = self.permits().pty;
        let ok = match self.setups.get_mut(&channel) {
            Some(p) if permitted => {
                p.setup
                    .pty(term, col_width, row_height, pix_width, pix_height);
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let settings = &self.gw.settings;
        let ok = self
            .setups
            .get_mut(&channel)
            .is_some_and(|p| p.setup.env(settings, variable_name, variable_value));
        Self::reply(session, channel, ok)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // OpenSSH asks without wanting a reply, so a refusal is silent there (as with
        // sshd's `AllowAgentForwarding no`): the session starts without SSH_AUTH_SOCK.
        let refused = if !self.gw.settings.agent_forwarding {
            Some("turned off by [ssh] agent_forwarding".to_owned())
        } else if !self.permits().agent_forwarding {
            Some(Refusal::NotPermitted(crate::certs::EXT_AGENT_FORWARDING).user_message())
        } else {
            None
        };
        let conn = self.conn.id();
        match (self.setups.get_mut(&channel), refused) {
            (Some(pending), None) => {
                pending.setup.agent();
                Ok(true)
            }
            (Some(_), Some(why)) => {
                debug!(conn, "agent forwarding refused: {why}");
                Ok(false)
            }
            (None, _) => {
                debug!(
                    conn,
                    "agent forwarding refused: not a session channel whose program is yet to start"
                );
                Ok(false)
            }
        }
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Workloads have no X server to forward to. Answered as sshd with
        // `X11Forwarding no` answers, so the client says "X11 forwarding request
        // failed" rather than waiting for a DISPLAY that never comes.
        debug!(
            conn = self.conn.id(),
            "x11-req refused: X11 forwarding is not offered"
        );
        Self::reply(session, channel, false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // The client prints "remote port forwarding failed for listen port N".
        info!(
            conn = self.conn.id(),
            address = %crate::keys::Escaped(address),
            port = *port,
            "remote forwarding (ssh -R) refused: not offered by this gateway"
        );
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        info!(
            conn = self.conn.id(),
            path = %crate::keys::Escaped(socket_path),
            "remote socket forwarding (ssh -R PATH) refused: not offered by this gateway"
        );
        Ok(false)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Once the program runs, the bridge applies resizes from the channel itself.
        if let Some(p) = self.setups.get_mut(&channel) {
            p.setup.resize(col_width, row_height, pix_width, pix_height);
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.start(channel, Program::Shell);
        Self::reply(session, channel, ok)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match request::command(data) {
            Ok(program) => self.start(channel, program),
            Err(refusal) => {
                debug!(
                    conn = self.conn.id(),
                    "exec refused: {}",
                    refusal.user_message()
                );
                false
            }
        };
        Self::reply(session, channel, ok)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match request::subsystem(name) {
            Ok(program) => self.start(channel, program),
            Err(refusal) => {
                debug!(
                    conn = self.conn.id(),
                    "subsystem refused: {}",
                    refusal.user_message()
                );
                false
            }
        };
        Self::reply(session, channel, ok)
    }

    async fn no_more_sessions(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.no_more_sessions = true;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping a pending setup ends its channel task; a running one is told to stop
        // even if it is blocked feeding a program that does not read.
        self.setups.remove(&channel);
        self.conn.channel_closed_by_client(channel.into());
        Ok(())
    }
}
