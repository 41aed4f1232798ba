//! The in-workload helper: a small static program the gateway copies into containers
//! that lack OpenSSH, so `scp` and `sftp` work there, and that relays Unix sockets for
//! socket forwards and agent forwarding.
//!
//! Its command line is a small versioned set of subcommands (see [`USAGE`]); the gateway
//! and the helper it embeds always come from the same build, but a placed copy can
//! outlive a gateway upgrade, so the gateway places copies by content hash.
//!
//! - `sftp-server`: SFTP v3 on stdin/stdout, as OpenSSH's sftp-server ([`sftp`]).
//! - `scp`: the remote side of the legacy rcp-style scp protocol ([`scp`]).
//! - `relay-unix PATH`: a Unix socket in the workload on stdin/stdout, for
//!   `direct-streamlocal@openssh.com` channels ([`relay`]).
//! - `agent-listen`: listens on a fresh socket for `SSH_AUTH_SOCK` and carries its
//!   connections, framed, on stdin/stdout, for agent forwarding ([`agent`]).

pub mod agent;
pub mod relay;
pub mod scp;
pub mod sftp;
pub mod sys;

use std::ffi::OsString;
use std::process::ExitCode;

/// The command-line protocol version; bumped when a subcommand changes incompatibly.
pub const PROTOCOL: u32 = 1;

pub const USAGE: &str = "usage: ssh-gateway-helper version | sftp-server [-d start_dir] [-u umask] | scp <scp remote arguments> | relay-unix PATH | agent-listen";

/// Runs the helper with its arguments (after the program name).
pub fn run(args: &[OsString]) -> ExitCode {
    match args.first().and_then(|a| a.to_str()) {
        Some("version") => {
            println!(
                "ssh-gateway-helper {} {}",
                PROTOCOL,
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some("sftp-server") => sftp::main(&args[1..]),
        Some("scp") => scp::main(&args[1..]),
        Some("relay-unix") => relay::main(&args[1..]),
        Some("agent-listen") => agent::main(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
