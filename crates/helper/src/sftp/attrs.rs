//! SFTP v3 file attributes (ATTRS): decoding what clients send with OPEN, MKDIR and
//! SETSTAT, encoding what stat(2) says.

use super::packet::{ParseError, Reader, put_u32, put_u64};
use crate::sys::Stat;

pub const ATTR_SIZE: u32 = 0x1;
pub const ATTR_UIDGID: u32 = 0x2;
pub const ATTR_PERMISSIONS: u32 = 0x4;
pub const ATTR_ACMODTIME: u32 = 0x8;
pub const ATTR_EXTENDED: u32 = 0x8000_0000;

/// The attributes present in a request (`None` where the flag bit is clear).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    pub perm: Option<u32>,
    /// (atime, mtime), seconds; v3 carries them as uint32.
    pub times: Option<(u32, u32)>,
}

impl Attrs {
    pub fn decode(r: &mut Reader<'_>) -> Result<Attrs, ParseError> {
        let flags = r.u32("attribute flags")?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(r.u64("size")?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.uid_gid = Some((r.u32("uid")?, r.u32("gid")?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.perm = Some(r.u32("permissions")?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((r.u32("atime")?, r.u32("mtime")?));
        }
        // Vendor extensions are read past and ignored, as OpenSSH does; their count is
        // bounded by the packet (each pair takes at least 8 bytes).
        if flags & ATTR_EXTENDED != 0 {
            let count = r.u32("extended attribute count")?;
            for _ in 0..count {
                r.cstring("extended attribute type")?;
                r.string("extended attribute data")?;
            }
        }
        Ok(a)
    }

    /// What OpenSSH's stat_to_attrib reports: size, ids, mode and times, with the
    /// times truncated to v3's uint32.
    pub fn from_stat(st: &Stat) -> Attrs {
        Attrs {
            size: Some(st.size as u64),
            uid_gid: Some((st.uid, st.gid)),
            perm: Some(st.mode),
            times: Some((st.atime as u32, st.mtime as u32)),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if self.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if self.perm.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if self.times.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        put_u32(out, flags);
        if let Some(size) = self.size {
            put_u64(out, size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            put_u32(out, uid);
            put_u32(out, gid);
        }
        if let Some(perm) = self.perm {
            put_u32(out, perm);
        }
        if let Some((atime, mtime)) = self.times {
            put_u32(out, atime);
            put_u32(out, mtime);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_extended_pairs_are_skipped() {
        let a = Attrs {
            size: Some(1 << 40),
            uid_gid: Some((1, 2)),
            perm: Some(0o100644),
            times: Some((3, 4)),
        };
        let mut out = Vec::new();
        a.encode(&mut out);
        assert_eq!(Attrs::decode(&mut Reader::new(&out)), Ok(a));

        let mut out = Vec::new();
        put_u32(&mut out, ATTR_PERMISSIONS | ATTR_EXTENDED);
        put_u32(&mut out, 0o755);
        put_u32(&mut out, 1);
        super::super::packet::put_string(&mut out, b"x@y");
        super::super::packet::put_string(&mut out, b"data");
        let mut r = Reader::new(&out);
        assert_eq!(
            Attrs::decode(&mut r).unwrap(),
            Attrs {
                perm: Some(0o755),
                ..Attrs::default()
            }
        );
        assert!(r.is_empty());
    }

    #[test]
    fn a_huge_extended_count_fails_instead_of_looping() {
        let mut out = Vec::new();
        put_u32(&mut out, ATTR_EXTENDED);
        put_u32(&mut out, u32::MAX);
        assert!(Attrs::decode(&mut Reader::new(&out)).is_err());
    }
}
