//! The helper binaries built into this gateway (see build.rs).

/// One static helper binary for one architecture.
#[derive(Debug)]
pub struct Embedded {
    /// As `uname -m` prints it (`x86_64`, `aarch64`).
    pub arch: &'static str,
    /// Hex SHA-256 of `bytes`.
    pub sha256: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/helpers.rs"));

impl Embedded {
    /// The directory a copy lives in, under a placement root: named by content, so
    /// copies from different gateway builds never mix and a copy found there is the
    /// one this gateway would write.
    pub fn dir_name(&self) -> &'static str {
        &self.sha256[..16]
    }
}

/// What `ssh-gateway-helper version` prints.
pub fn version_line() -> &'static str {
    VERSION_LINE
}

pub fn for_arch(arch: &str) -> Option<&'static Embedded> {
    EMBEDDED.iter().find(|e| e.arch == arch)
}

/// The architectures carried, for messages (`x86_64`, `x86_64 and aarch64`).
pub fn arches() -> String {
    let names: Vec<&str> = EMBEDDED.iter().map(|e| e.arch).collect();
    names.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_hosts_helper_is_embedded_and_static() {
        let host = std::env::consts::ARCH;
        let helper = for_arch(host).expect("a helper for the build host");
        assert!(helper.bytes.starts_with(b"\x7fELF"));
        assert_eq!(helper.sha256.len(), 64);
        assert!(version_line().starts_with("ssh-gateway-helper "));
        // A static binary names no program interpreter (PT_INTERP = 3 in the program
        // headers): it runs in images with no libc at all.
        assert!(!has_interpreter(helper.bytes), "the helper must be static");
    }

    fn has_interpreter(elf: &[u8]) -> bool {
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&elf[o..o + 8]);
            u64::from_le_bytes(b) as usize
        };
        let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
        (0..phnum).any(|i| {
            let h = phoff + i * phentsize;
            u32::from_le_bytes([elf[h], elf[h + 1], elf[h + 2], elf[h + 3]]) == 3
        })
    }
}
