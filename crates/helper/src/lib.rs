//! The in-workload helper: a small static program the gateway copies into containers
//! that lack OpenSSH, so `scp` and `sftp` work there.
//!
//! Its command line is a small versioned set of subcommands (see [`USAGE`]); the gateway
//! and the helper it embeds always come from the same build, but a placed copy can
//! outlive a gateway upgrade, so the gateway places copies by content hash.

/// The command-line protocol version; bumped when a subcommand changes incompatibly.
pub const PROTOCOL: u32 = 1;

pub const USAGE: &str =
    "usage: ssh-gateway-helper version | sftp-server | scp <scp remote arguments>";
