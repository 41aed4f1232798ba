//! The extensions and critical options certificates carry, and what they permit.
//! Plain data, so the certificate fuzz target (fuzz/) compiles it with `check`.

/// What a connection may do beyond running programs. Keys and tokens may do all of
/// it; a certificate only what its extensions permit, as sshd decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permits {
    pub pty: bool,
    pub port_forwarding: bool,
    pub agent_forwarding: bool,
}

impl Permits {
    pub const ALL: Permits = Permits {
        pty: true,
        port_forwarding: true,
        agent_forwarding: true,
    };
    pub const NONE: Permits = Permits {
        pty: false,
        port_forwarding: false,
        agent_forwarding: false,
    };
}

/// The extensions the gateway's CA grants; what `Permits` reads back.
pub const EXT_PTY: &str = "permit-pty";
pub const EXT_PORT_FORWARDING: &str = "permit-port-forwarding";
pub const EXT_AGENT_FORWARDING: &str = "permit-agent-forwarding";
pub const EXT_USER_RC: &str = "permit-user-rc";
/// The one critical option honoured; any other makes a certificate unusable, as
/// PROTOCOL.certkeys requires of options a server does not recognise.
pub const OPT_SOURCE_ADDRESS: &str = "source-address";
