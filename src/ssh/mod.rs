//! SSH transport stage: the listener, russh settings (algorithms, limits, timeouts) and
//! one task per connection. Hands authenticated channels to `channel.rs`.

pub mod auth;
mod channel;
mod handler;
pub mod hostkeys;
mod socket;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::{MethodKind, MethodSet, Preferred, SshId, cipher, compression, kex, mac};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, warn};

use crate::backend::Backend;
use crate::config::SshConfig;
use crate::control::ControlPlane;
use auth::KeyStore;
use handler::ConnectionHandler;

/// Everything a connection needs, shared by all of them.
pub struct Gateway {
    pub settings: SshConfig,
    pub keys: Arc<dyn KeyStore>,
    pub control: Arc<dyn ControlPlane>,
    pub backend: Arc<dyn Backend>,
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
    const MACS: &[mac::Name] = &[
        mac::HMAC_SHA512_ETM,
        mac::HMAC_SHA256_ETM,
        mac::HMAC_SHA512,
        mac::HMAC_SHA256,
    ];
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
pub fn russh_config(settings: &SshConfig, host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: SshId::Standard(Cow::Borrowed(concat!(
            "SSH-2.0-ssh-gateway_",
            env!("CARGO_PKG_VERSION")
        ))),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // OpenSSH probes with "none" first; delaying that answer costs every login.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Each unknown key a client offers costs it this much.
        auth_rejection_time: Duration::from_millis(250),
        keys: vec![host_key],
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

/// Accepts connections until the listener fails; each runs in its own task.
pub async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(gw.settings.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "connection limit reached; dropping connection");
            continue;
        };
        let span = tracing::info_span!("conn", %peer);
        let (config, gw) = (config.clone(), gw.clone());
        tokio::spawn(
            async move {
                handle_connection(stream, peer, config, gw).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn handle_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
) {
    let grace = gw.settings.login_grace();
    let authenticated = Arc::new(AtomicBool::new(false));
    let handler = ConnectionHandler::new(gw, peer, authenticated.clone());
    // russh runs the session in its own task, which dropping our future does not end;
    // shutting the socket down does, whatever state the session is in.
    let killer = match socket::Killer::new(&stream) {
        Ok(killer) => killer,
        Err(e) => {
            warn!(error = %e, "cannot duplicate socket");
            return;
        }
    };
    let stream = socket::TunedStream::new(stream);
    let started = russh::server::run_stream(config, stream, handler);
    let session = match tokio::time::timeout(grace, started).await {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => return killer.kill(),
    };
    tokio::pin!(session);
    tokio::select! {
        result = &mut session => return log_end(result),
        _ = tokio::time::sleep(grace) => {}
    }
    if !authenticated.load(Ordering::Acquire) {
        info!(
            grace_secs = grace.as_secs(),
            "login grace time expired; disconnecting"
        );
        killer.kill();
    }
    log_end(session.await);
}

fn log_end(result: Result<(), russh::Error>) {
    match result {
        Ok(()) => debug!("connection closed"),
        Err(e) => debug!(error = %e, "connection ended"),
    }
}

pub fn log_listening(addr: SocketAddr, host_key: &PrivateKey) {
    info!(%addr, fingerprint = %hostkeys::fingerprint(host_key), "SSH listening");
}
