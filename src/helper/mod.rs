//! The in-workload helper, gateway side. Images without OpenSSH (most training images)
//! still get `scp` and `sftp`: the gateway carries a small static program
//! (crates/helper, embedded by build.rs) and copies it into the container over the
//! same exec path and authorization as the channel that needs it.
//!
//! - `embedded`: the binaries this gateway carries, per architecture.
//! - `scripts`: the POSIX sh that learns what a workload has, and places a copy.
//! - `placement`: does that once per container instance, one placement at a time.
//! - `programs`: per channel, whether a program runs as asked or through the helper.

pub mod embedded;
pub mod placement;
pub mod programs;
pub mod scripts;

pub use placement::Placer;
pub use programs::resolve;
