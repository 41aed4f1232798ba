//! Patched for ssh-gateway (see ../../PATCHES.md): buffers are no longer `mlock`ed.
//!
//! Upstream locked every CryptoVec allocation (packet buffers included) and unlocked
//! it when freed. For a server holding thousands of connections that protects little
//! and costs much: locks are page-granular, so a buffer's `munlock` also unlocks the
//! pages it shares with other live buffers; past RLIMIT_MEMLOCK (8 MiB by default)
//! every further `mlock` fails and is ignored; and each locked range splits the heap's
//! mapping, which left the gateway with ~3,800 mappings at 3,000 connections and made
//! every later `mprotect` and page fault walk them. Zeroing on clear, resize and drop
//! (in cryptovec.rs) is unchanged; keep secrets out of swap by running without swap,
//! as Kubernetes nodes do by default.

use super::MemoryLockError;

/// Does nothing (see the module comment).
pub fn munlock(_ptr: *const u8, _len: usize) -> Result<(), MemoryLockError> {
    Ok(())
}

/// Does nothing (see the module comment).
pub fn mlock(_ptr: *const u8, _len: usize) -> Result<(), MemoryLockError> {
    Ok(())
}
