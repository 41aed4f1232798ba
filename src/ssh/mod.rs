//! SSH transport stage: the listener, russh settings (algorithms, limits, timeouts) and
//! one task per connection. Every accepted socket passes admission, is registered
//! with the connection registry, and lives in a task the registry tracks; channels go
//! to `channel.rs`.

mod agent;
pub mod auth;
mod channel;
mod handler;
pub mod hostkeys;
pub mod loopback;
mod refusal;
mod request;
pub mod revoke;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{Disconnect, MethodKind, MethodSet, Preferred, SshId, cipher, compression, kex, mac};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::config::{SftpServer, SshConfig};
use crate::conn::admission::{Admission, ConnPermit};
use crate::conn::events::{CloseReason, Event, Rejection};
use crate::conn::stream::ConnStream;
use crate::conn::{Conn, Registry};
use crate::control::Principal;
use crate::helper::Placer;
use crate::remotes::Remotes;
use auth::KeyStore;
use handler::ConnectionHandler;

/// After asking a client to go (revocation, drain), how long it has before its socket
/// is shut.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);

/// Everything a connection needs, shared by all of them.
pub struct Gateway {
    pub settings: SshConfig,
    pub keys: Arc<dyn KeyStore>,
    /// The control plane and backend of each cluster a route may name.
    pub remotes: Arc<Remotes>,
    pub registry: Arc<Registry>,
    pub admission: Arc<Admission>,
    /// Which SFTP server sessions get (`[sftp] server`).
    pub sftp_server: SftpServer,
    /// What each workload has for file transfers, and the helper copies placed there.
    pub placer: Arc<Placer>,
    /// What host names route (`[routing]`).
    pub routing: crate::route::Routing,
    /// The CAs whose user certificates log in (`[certificates]`).
    pub trust: crate::certs::Trust,
    /// Balancers allowed to send a PROXY protocol header (`ssh.proxy_protocol_from`;
    /// empty: any).
    pub proxy_sources: Vec<crate::conn::admission::IpNet>,
    /// The TLS front's acceptor, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whether and where PTY sessions are recorded (`[recording]`).
    pub recording: crate::config::RecordingConfig,
}

/// What a listener expects before SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// SSH from the first byte.
    Plain,
    /// An HTTP CONNECT prelude naming the host (`conn::connect`).
    Connect,
    /// A PROXY protocol header naming the client (`conn::proxy_protocol`), then SSH.
    Proxied,
    /// TLS (`conn::tls`), then inside either SSH, its SNI host name the route hint,
    /// or an HTTP CONNECT prelude, its host the route hint.
    Tls,
}

/// Modern algorithms only: no SHA-1 (`ssh-rsa` signatures, hmac-sha1, group1/14-sha1),
/// no CBC. AES-GCM is offered because it is the fastest cipher on AES-NI machines.
fn algorithms() -> Preferred {
    const KEX: &[kex::Name] = &[
        kex::MLKEM768X25519_SHA256,
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::DH_GEX_SHA256,
        kex::DH_G18_SHA512,
        kex::DH_G16_SHA512,
        kex::EXTENSION_SUPPORT_AS_SERVER,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ];
    const CIPHERS: &[cipher::Name] = &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    // Encrypt-then-MAC only (what ssh-audit asks for): the MAC covers the ciphertext,
    // so a tampered packet is refused before it is decrypted. Only the CTR ciphers use
    // a MAC at all; every current client, paramiko and asyncssh included, has these.
    const MACS: &[mac::Name] = &[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM];
    const KEYS: &[Algorithm] = &[
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::SkEd25519,
        Algorithm::SkEcdsaSha2NistP256,
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ];
    Preferred {
        kex: Cow::Borrowed(KEX),
        key: Cow::Borrowed(KEYS),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(&[compression::NONE]),
        ..Preferred::default()
    }
}

/// russh settings; the figures behind them are in notes/russh-tuning.md.
pub fn russh_config(settings: &SshConfig, host_keys: &hostkeys::HostKeys) -> russh::server::Config {
    russh::server::Config {
        // The comment tells SFTP clients that infer server quirks from the banner
        // (asyncssh, for one) that SFTP here behaves as OpenSSH's does, reversed
        // SYMLINK arguments included: whether the image's own sftp-server or the
        // helper serves it. OpenSSH's own compat patterns match the software version
        // from its start, so the comment does not make clients treat us as OpenSSH.
        server_id: SshId::Standard(Cow::Borrowed(concat!(
            "SSH-2.0-ssh-gateway_",
            env!("CARGO_PKG_VERSION"),
            " sftp-as-OpenSSH"
        ))),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // OpenSSH probes with "none" first; delaying that answer costs every login.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Each unknown key a client offers costs it this much.
        auth_rejection_time: Duration::from_millis(250),
        keys: host_keys.keys.clone(),
        certificates: host_keys.certificates.clone(),
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 65535,
        max_auth_attempts: settings.max_auth_attempts,
        inactivity_timeout: Some(settings.inactivity_timeout()),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        preferred: algorithms(),
        ..Default::default()
    }
}

/// Accepts connections until `stop` is cancelled. Each admitted one runs in a task the
/// registry tracks; refused ones are closed at once, so accepting never stalls.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut accept_errors = RateLimit::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: admission keeps us below the descriptor
                    // limit, so this is rare; yield briefly instead of spinning.
                    if accept_errors.allow() {
                        warn!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return Ok(()),
        };
        let admitted = match front {
            Front::Proxied
                if !gw.proxy_sources.is_empty()
                    && !gw.proxy_sources.iter().any(|n| n.contains(peer.ip())) =>
            {
                Err(Rejection::UntrustedProxy)
            }
            // Whose connection it is, the header will say.
            Front::Proxied => gw.admission.admit_pending(),
            Front::Plain | Front::Connect | Front::Tls => gw.admission.admit(peer.ip()),
        };
        let (conn_permit, preauth) = match admitted {
            Ok(permits) => permits,
            Err(reason) => {
                gw.registry.events().emit(Event::Rejected { peer, reason });
                continue; // dropping the socket closes it
            }
        };
        if front == Front::Proxied {
            gw.registry.spawn(
                handle_proxied(
                    stream,
                    peer,
                    conn_permit,
                    preauth,
                    config.clone(),
                    gw.clone(),
                )
                .instrument(tracing::info_span!("proxied", balancer = %peer)),
            );
            continue;
        }
        let conn = gw.registry.register(peer, preauth);
        let span = tracing::info_span!("conn", id = conn.id(), %peer);
        gw.registry.spawn(
            handle_front(front, stream, conn, conn_permit, config.clone(), gw.clone())
                .instrument(span),
        );
    }
}

/// Reads the PROXY protocol header under the login deadline, counts the connection
/// against the client it names, registers it with that address, then runs SSH.
async fn handle_proxied(
    mut tcp: TcpStream,
    balancer: SocketAddr,
    permit: ConnPermit,
    mut preauth: crate::conn::admission::PreAuthPermit,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
) {
    let accepted_at = tokio::time::Instant::now();
    let deadline = accepted_at + gw.settings.login_grace();
    let header = tokio::select! {
        h = tokio::time::timeout_at(deadline, crate::conn::proxy_protocol::read_header(&mut tcp)) => h,
        _ = gw.registry.shutting_down() => return,
    };
    let client = match header {
        Ok(Ok(Some(client))) => client,
        // A balancer's own health check: the balancer is the peer.
        Ok(Ok(None)) => balancer,
        Ok(Err(e)) => {
            debug!(error = %e, "PROXY protocol header refused");
            gw.registry.events().emit(Event::Rejected {
                peer: balancer,
                reason: Rejection::BadProxyHeader,
            });
            return;
        }
        Err(_) => return,
    };
    if let Err(reason) = preauth.assign(client.ip()) {
        gw.registry.events().emit(Event::Rejected {
            peer: client,
            reason,
        });
        return;
    }
    let conn = gw.registry.register_accepted(client, preauth, accepted_at);
    let span = tracing::info_span!("conn", id = conn.id(), peer = %client);
    handle_connection(tcp, conn, permit, config, gw, None, None)
        .instrument(span)
        .await
}

/// Reads what the front expects before SSH (under the login deadline, counted by
/// admission like any unauthenticated connection), then runs SSH.
async fn handle_front(
    front: Front,
    mut tcp: TcpStream,
    conn: Conn,
    permit: ConnPermit,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
) {
    let hint = match front {
        Front::Plain | Front::Proxied => None,
        Front::Tls => {
            let Some(acceptor) = gw.tls.clone() else {
                return;
            };
            let deadline = conn.meta().accepted_at + gw.settings.login_grace();
            // Before the handshake, not after: with Nagle on, the server's flight
            // waited for the client's delayed ACK (40 ms on Linux) on every login.
            let _ = tcp.set_nodelay(true);
            let accepted = tokio::select! {
                a = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => a,
                _ = conn.cancelled() => return,
            };
            let mut tls = match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    conn.set_reason(CloseReason::ProtocolError);
                    return;
                }
                Err(_) => {
                    conn.set_reason(CloseReason::LoginTimeout);
                    return;
                }
            };
            let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
            use crate::conn::{stream::Replay, tls::Inside};
            let inside = tokio::select! {
                s = tokio::time::timeout_at(deadline, crate::conn::tls::sniff(&mut tls)) => s,
                _ = conn.cancelled() => return,
            };
            return match inside {
                Ok(Ok(Inside::Ssh(seen))) => {
                    handle_connection(Replay::new(tls, seen), conn, permit, config, gw, sni, None)
                        .await
                }
                // CONNECT inside TLS: its host routes, whatever the SNI said.
                Ok(Ok(Inside::Http(seen))) => {
                    let Some(host) = connect_prelude(&mut tls, seen, &conn, &gw).await else {
                        return;
                    };
                    let tls = Replay::new(tls, Vec::new());
                    handle_connection(tls, conn, permit, config, gw, Some(host), None).await
                }
                Ok(Err(_)) => conn.set_reason(CloseReason::ProtocolError),
                Err(_) => conn.set_reason(CloseReason::LoginTimeout),
            };
        }
        Front::Connect => {
            let Some(host) = connect_prelude(&mut tcp, Vec::new(), &conn, &gw).await else {
                return;
            };
            Some(host)
        }
    };
    handle_connection(tcp, conn, permit, config, gw, hint, None).await
}

/// Reads and answers an HTTP CONNECT prelude (whose first bytes, `start`, were read
/// already) under the login deadline; the host it tunnels to, or `None` when it was
/// refused or the client went away (the reason is set on `conn`).
async fn connect_prelude<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    start: Vec<u8>,
    conn: &Conn,
    gw: &Gateway,
) -> Option<String> {
    use crate::conn::connect::{Prelude, answer, parse, read_prelude};
    let deadline = conn.meta().accepted_at + gw.settings.login_grace();
    let prelude = tokio::select! {
        read = tokio::time::timeout_at(deadline, read_prelude(stream, start)) => read,
        _ = conn.cancelled() => return None,
    };
    let prelude = match prelude {
        Ok(Ok(bytes)) => parse(&bytes, &gw.routing),
        Ok(Err(_)) => {
            conn.set_reason(CloseReason::ProtocolError);
            return None;
        }
        Err(_) => {
            conn.set_reason(CloseReason::LoginTimeout);
            return None;
        }
    };
    let answered = tokio::time::timeout_at(deadline, answer(stream, &prelude)).await;
    match prelude {
        Prelude::Tunnel(host) if matches!(answered, Ok(Ok(()))) => Some(host),
        Prelude::Refuse(status, why) => {
            info!(status, %why, "CONNECT refused");
            conn.set_reason(CloseReason::ProtocolError);
            gw.admission.penalize(conn.meta().peer.ip(), false);
            None
        }
        Prelude::Tunnel(_) => None,
    }
}

/// Runs SSH on an admitted connection. `preauth`: who the gateway's own in-memory
/// connection (`loopback`) was opened for; `None` for everything from the network.
#[allow(clippy::too_many_arguments)]
async fn handle_connection<S: crate::conn::stream::Socket>(
    tcp: S,
    conn: Conn,
    _permit: ConnPermit,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
    route_hint: Option<String>,
    preauth: Option<Principal>,
) {
    // The login deadline is absolute, from accept: nothing the client sends moves it.
    let deadline = conn.meta().accepted_at + gw.settings.login_grace();
    let kill = CancellationToken::new();
    // Whatever way this task ends, the socket is shut.
    let _shut = kill.clone().drop_guard();
    let stream = ConnStream::new(tcp, kill.clone());
    let handler =
        ConnectionHandler::new(gw.clone(), conn.handle(), conn.meta().peer.ip(), route_hint)
            .logged_in_as(preauth);
    // Boxed: the handshake's state is only needed until the session starts, and this
    // task lives as long as the connection (~3 KiB less per idle connection).
    let session = tokio::select! {
        started = Box::pin(russh::server::run_stream(config, stream, handler)) => match started {
            Ok(session) => Some(session),
            Err(e) => {
                debug!(error = %e, "handshake failed");
                conn.set_reason(CloseReason::ProtocolError);
                None
            }
        },
        _ = tokio::time::sleep_until(deadline) => {
            conn.set_reason(CloseReason::LoginTimeout);
            None
        }
        _ = conn.cancelled() => None,
    };
    if let Some(session) = session {
        tokio::pin!(session);
        let login_timer = tokio::time::sleep_until(deadline);
        let goodbye = tokio::time::sleep(Duration::MAX);
        tokio::pin!(login_timer, goodbye);
        let (mut login_checked, mut leaving) = (false, false);
        loop {
            tokio::select! {
                ended = &mut session => {
                    if let Err(e) = ended {
                        debug!(error = %e, "session ended");
                    }
                    break;
                }
                _ = &mut login_timer, if !login_checked => {
                    login_checked = true;
                    if !conn.is_authenticated() {
                        info!(grace_secs = gw.settings.login_grace_secs, "login grace time expired; disconnecting");
                        conn.cancel(CloseReason::LoginTimeout);
                    }
                }
                _ = conn.cancelled(), if !leaving => {
                    leaving = true;
                    if conn.is_authenticated() {
                        // Say why before the socket goes: OpenSSH prints this.
                        let reason = conn.reason().unwrap_or(CloseReason::Shutdown);
                        let text = format!("ssh-gateway: {}", reason.as_str());
                        let handle = session.handle();
                        gw.registry.spawn(async move {
                            let _ = handle.disconnect(Disconnect::ByApplication, text, "en".into()).await;
                        });
                        goodbye.as_mut().reset(tokio::time::Instant::now() + GOODBYE_GRACE);
                    } else {
                        kill.cancel();
                        session.abort();
                    }
                }
                // Time's up: shut the socket, and end the session task even if it is
                // waiting on something other than the socket.
                _ = &mut goodbye, if leaving => {
                    kill.cancel();
                    session.abort();
                }
            }
        }
    }
    if !conn.is_authenticated() && conn.reason() != Some(CloseReason::Shutdown) {
        gw.admission
            .penalize(conn.meta().peer.ip(), conn.keys_were_offered());
    }
}

/// At most one log line a second for a noisy condition.
#[derive(Default)]
struct RateLimit {
    last: Option<tokio::time::Instant>,
}

impl RateLimit {
    fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

pub fn log_listening(addr: SocketAddr, host_keys: &hostkeys::HostKeys) {
    let fingerprints: Vec<String> = host_keys.keys.iter().map(hostkeys::fingerprint).collect();
    info!(%addr, fingerprint = %fingerprints.join(" "), certificates = host_keys.certificates.len(), "SSH listening");
}
