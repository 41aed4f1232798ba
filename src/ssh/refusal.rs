//! Why a channel could not start, as typed errors from each stage, and the one place
//! that decides what the user reads about each (and what only the log sees). Unknown
//! and forbidden targets read the same, whichever stage noticed.

use russh::ChannelOpenFailure;
use tracing::{info, warn};

use crate::backend::BackendError;
use crate::control::ControlError;
use crate::route::RouteError;

#[derive(Debug)]
pub enum Refusal {
    /// The key that opened this connection is no longer registered to its user.
    KeyRevoked,
    /// The API token the browser terminal signed in with was deleted.
    TokenRevoked,
    /// The certificate that opened this connection is no longer accepted (its key
    /// deleted, or its user).
    CertificateRevoked,
    /// The key store could not be asked (database down).
    KeyStoreUnavailable(String),
    Route(RouteError),
    Control(ControlError),
    Backend(BackendError),
    /// A forward whose port inside the target could not be reached.
    Forward {
        port: u16,
        error: BackendError,
    },
    /// Too many channels open at once on this connection.
    TooManyChannels,
    /// A forward to somewhere other than the sandbox's own loopback.
    ForwardDestination,
    /// A socket forward to a path no socket can have.
    SocketPath,
    /// A subsystem other than sftp.
    UnknownSubsystem(String),
    /// An exec request longer than the gateway accepts.
    CommandTooLong,
    /// The certificate that logged in lacks the extension (`permit-…`) this needs.
    NotPermitted(&'static str),
}

impl Refusal {
    /// What the user reads, without the `ssh-gateway: ` prefix.
    pub fn user_message(&self) -> String {
        match self {
            Refusal::KeyRevoked => {
                "the key this connection logged in with is no longer registered; reconnect with a registered key".to_owned()
            }
            Refusal::TokenRevoked => {
                "the API token this terminal signed in with was deleted; sign in again with a current one".to_owned()
            }
            Refusal::CertificateRevoked => {
                "the certificate this connection logged in with is no longer accepted (its key was deleted); reconnect with a current one".to_owned()
            }
            Refusal::KeyStoreUnavailable(_) => {
                "the gateway cannot check your key right now; try again in a moment".to_owned()
            }
            Refusal::Route(e) => e.to_string(),
            Refusal::Control(e) => e.to_string(),
            Refusal::Backend(e) => backend_message(e),
            Refusal::Forward { port, error } => {
                format!("port {port} in the sandbox: {}", backend_message(error))
            }
            Refusal::TooManyChannels => "too many channels open on this connection".to_owned(),
            Refusal::ForwardDestination => {
                "only ports on the sandbox's own localhost can be forwarded".to_owned()
            }
            Refusal::SocketPath => "a Unix socket path must be 1 to 107 bytes without NUL".to_owned(),
            Refusal::UnknownSubsystem(name) => {
                format!("subsystem {name:?} is not available (only sftp is)")
            }
            Refusal::CommandTooLong => "the command line is too long".to_owned(),
            Refusal::NotPermitted(extension) => {
                format!("the certificate you logged in with does not permit this ({extension} is not among its extensions)")
            }
        }
    }

    /// The RFC 4254 §5.1 reason code for a refused channel open.
    fn open_code(&self) -> u32 {
        match self {
            // sshd tries any socket path and fails to connect to an impossible one.
            Refusal::Backend(_) | Refusal::Forward { .. } | Refusal::SocketPath => 2, // connect failed
            Refusal::TooManyChannels => 4, // resource shortage
            _ => 1,                        // administratively prohibited
        }
    }

    /// A channel-open failure carrying the message, which OpenSSH prints.
    pub fn open_failure(&self) -> ChannelOpenFailure {
        ChannelOpenFailure::Other {
            code: self.open_code(),
            reason: format!("ssh-gateway: {}", self.user_message()),
        }
    }

    /// Logs the refusal with what the user does not see.
    pub fn log(&self, user: &str) {
        match self {
            Refusal::KeyStoreUnavailable(detail)
            | Refusal::Control(ControlError::Unavailable(detail) | ControlError::Denied(detail))
            | Refusal::Backend(BackendError::Internal(detail) | BackendError::Denied(detail))
            | Refusal::Forward {
                error: BackendError::Internal(detail) | BackendError::Denied(detail),
                ..
            } => {
                warn!(account = %user, error = %detail, "channel refused: {}", self.user_message())
            }
            _ => info!(account = %user, "channel refused: {}", self.user_message()),
        }
    }
}

impl From<ControlError> for Refusal {
    fn from(e: ControlError) -> Self {
        Refusal::Control(e)
    }
}

impl From<BackendError> for Refusal {
    fn from(e: BackendError) -> Self {
        Refusal::Backend(e)
    }
}

fn backend_message(e: &BackendError) -> String {
    match e {
        BackendError::User(m) | BackendError::Gone(m) => m.clone(),
        BackendError::Internal(_) => {
            "the sandbox could not start this session; try again, and contact support if it persists".to_owned()
        }
        BackendError::Denied(_) => crate::control::DENIED.to_owned(),
    }
}
