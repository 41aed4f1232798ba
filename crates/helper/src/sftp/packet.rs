//! The SFTP v3 wire format (draft-ietf-secsh-filexfer-02 plus OpenSSH's extensions):
//! framing, request parsing and response encoding.
//!
//! Parsing is a pure function over bytes ([`split_frame`], [`parse`]) so it can be
//! fuzzed and tested without a server. Requests borrow from the input buffer: a WRITE's
//! data goes from the buffer read off stdin straight to pwrite(2).

use super::attrs::Attrs;

/// OpenSSH's SFTP_MAX_MSG_LENGTH: longer packets end the session.
pub const MAX_MSG_LENGTH: usize = 256 * 1024;
/// The largest READ we serve (OpenSSH's SFTP_MAX_READ_LENGTH); longer ones are cut.
pub const MAX_READ_LENGTH: u32 = (MAX_MSG_LENGTH - 1024) as u32;
/// The largest WRITE we advertise in limits@openssh.com (as OpenSSH does).
pub const MAX_WRITE_LENGTH: u64 = (MAX_MSG_LENGTH - 1024) as u64;

pub const FILEXFER_VERSION: u32 = 3;

pub const FXP_INIT: u8 = 1;
pub const FXP_VERSION: u8 = 2;
pub const FXP_OPEN: u8 = 3;
pub const FXP_CLOSE: u8 = 4;
pub const FXP_READ: u8 = 5;
pub const FXP_WRITE: u8 = 6;
pub const FXP_LSTAT: u8 = 7;
pub const FXP_FSTAT: u8 = 8;
pub const FXP_SETSTAT: u8 = 9;
pub const FXP_FSETSTAT: u8 = 10;
pub const FXP_OPENDIR: u8 = 11;
pub const FXP_READDIR: u8 = 12;
pub const FXP_REMOVE: u8 = 13;
pub const FXP_MKDIR: u8 = 14;
pub const FXP_RMDIR: u8 = 15;
pub const FXP_REALPATH: u8 = 16;
pub const FXP_STAT: u8 = 17;
pub const FXP_RENAME: u8 = 18;
pub const FXP_READLINK: u8 = 19;
pub const FXP_SYMLINK: u8 = 20;
pub const FXP_STATUS: u8 = 101;
pub const FXP_HANDLE: u8 = 102;
pub const FXP_DATA: u8 = 103;
pub const FXP_NAME: u8 = 104;
pub const FXP_ATTRS: u8 = 105;
pub const FXP_EXTENDED: u8 = 200;
pub const FXP_EXTENDED_REPLY: u8 = 201;

pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_FAILURE: u32 = 4;
pub const FX_BAD_MESSAGE: u32 = 5;
pub const FX_OP_UNSUPPORTED: u32 = 8;

pub const FXF_READ: u32 = 0x01;
pub const FXF_WRITE: u32 = 0x02;
pub const FXF_APPEND: u32 = 0x04;
pub const FXF_CREAT: u32 = 0x08;
pub const FXF_TRUNC: u32 = 0x10;
pub const FXF_EXCL: u32 = 0x20;

/// Why input cannot be served. Every one ends the session, as OpenSSH's fatal() does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A frame's length exceeds [`MAX_MSG_LENGTH`].
    TooLong(u32),
    /// A frame of length zero has no type byte.
    Empty,
    /// A field runs past the end of its packet.
    Truncated { what: &'static str },
    /// A field is present but not acceptable (e.g. a NUL inside a path).
    Invalid { what: &'static str },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::TooLong(n) => write!(
                f,
                "bad message: packet length {n} exceeds the maximum {MAX_MSG_LENGTH}"
            ),
            ParseError::Empty => write!(f, "bad message: empty packet"),
            ParseError::Truncated { what } => write!(f, "bad message: truncated {what}"),
            ParseError::Invalid { what } => write!(f, "bad message: invalid {what}"),
        }
    }
}

/// Splits the first frame off `buf`: `Ok(Some((payload, consumed)))` when a whole
/// frame is there, `Ok(None)` when more input is needed.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ParseError> {
    let Some(len) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*len);
    if len as usize > MAX_MSG_LENGTH {
        return Err(ParseError::TooLong(len));
    }
    if len == 0 {
        return Err(ParseError::Empty);
    }
    let end = 4 + len as usize;
    match buf.get(4..end) {
        Some(payload) => Ok(Some((payload, end))),
        None => Ok(None),
    }
}

/// A cursor over one packet's payload; every getter fails cleanly at the end.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        if self.buf.len() < n {
            return Err(ParseError::Truncated { what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        let hi = self.u32(what)? as u64;
        let lo = self.u32(what)? as u64;
        Ok(hi << 32 | lo)
    }

    /// An SSH string: binary data (handles, WRITE payloads).
    pub fn string(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// An SSH string used as a C string (paths, names): a NUL inside it is refused,
    /// as OpenSSH's sshbuf_get_cstring refuses it.
    pub fn cstring(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let s = self.string(what)?;
        if s.contains(&0) {
            return Err(ParseError::Invalid { what });
        }
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One client request. Field names follow the draft; `Symlink` keeps OpenSSH's wire
/// order (see the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Init {
        version: u32,
    },
    Open {
        id: u32,
        path: &'a [u8],
        pflags: u32,
        attrs: Attrs,
    },
    Close {
        id: u32,
        handle: &'a [u8],
    },
    Read {
        id: u32,
        handle: &'a [u8],
        offset: u64,
        len: u32,
    },
    Write {
        id: u32,
        handle: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    Lstat {
        id: u32,
        path: &'a [u8],
    },
    Fstat {
        id: u32,
        handle: &'a [u8],
    },
    Setstat {
        id: u32,
        path: &'a [u8],
        attrs: Attrs,
    },
    Fsetstat {
        id: u32,
        handle: &'a [u8],
        attrs: Attrs,
    },
    Opendir {
        id: u32,
        path: &'a [u8],
    },
    Readdir {
        id: u32,
        handle: &'a [u8],
    },
    Remove {
        id: u32,
        path: &'a [u8],
    },
    Mkdir {
        id: u32,
        path: &'a [u8],
        attrs: Attrs,
    },
    Rmdir {
        id: u32,
        path: &'a [u8],
    },
    Realpath {
        id: u32,
        path: &'a [u8],
    },
    Stat {
        id: u32,
        path: &'a [u8],
    },
    Rename {
        id: u32,
        old: &'a [u8],
        new: &'a [u8],
    },
    Readlink {
        id: u32,
        path: &'a [u8],
    },
    /// OpenSSH sends (and serves) the link target first, then the link's own path —
    /// the reverse of the draft (OpenSSH's PROTOCOL, 4.1).
    Symlink {
        id: u32,
        target: &'a [u8],
        link: &'a [u8],
    },
    Extended {
        id: u32,
        request: Extended<'a>,
    },
    /// A packet type we do not know; `id` when the packet carries one.
    Unknown {
        kind: u8,
        id: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended<'a> {
    PosixRename {
        old: &'a [u8],
        new: &'a [u8],
    },
    Statvfs {
        path: &'a [u8],
    },
    Fstatvfs {
        handle: &'a [u8],
    },
    Hardlink {
        old: &'a [u8],
        new: &'a [u8],
    },
    Fsync {
        handle: &'a [u8],
    },
    Lsetstat {
        path: &'a [u8],
        attrs: Attrs,
    },
    Limits,
    ExpandPath {
        path: &'a [u8],
    },
    CopyData {
        read_handle: &'a [u8],
        read_offset: u64,
        read_len: u64,
        write_handle: &'a [u8],
        write_offset: u64,
    },
    HomeDirectory {
        username: &'a [u8],
    },
    /// The ids as the client sent them (each string a run of uint32s).
    UsersGroupsById {
        uids: Vec<u32>,
        gids: Vec<u32>,
    },
    Unknown {
        name: &'a [u8],
    },
}

/// The extensions advertised in VERSION, with their versions (as OpenSSH 9 does).
pub const EXTENSIONS: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("lsetstat@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
    ("copy-data", "1"),
    ("home-directory", "1"),
    ("users-groups-by-id@openssh.com", "1"),
];

fn id_list(bytes: &[u8]) -> Result<Vec<u32>, ParseError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(ParseError::Truncated { what: "id list" });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn parse_extended<'a>(r: &mut Reader<'a>) -> Result<Extended<'a>, ParseError> {
    let name = r.cstring("extended request name")?;
    Ok(match name {
        b"posix-rename@openssh.com" => Extended::PosixRename {
            old: r.cstring("old path")?,
            new: r.cstring("new path")?,
        },
        b"statvfs@openssh.com" => Extended::Statvfs {
            path: r.cstring("path")?,
        },
        b"fstatvfs@openssh.com" => Extended::Fstatvfs {
            handle: r.string("handle")?,
        },
        b"hardlink@openssh.com" => Extended::Hardlink {
            old: r.cstring("old path")?,
            new: r.cstring("new path")?,
        },
        b"fsync@openssh.com" => Extended::Fsync {
            handle: r.string("handle")?,
        },
        b"lsetstat@openssh.com" => Extended::Lsetstat {
            path: r.cstring("path")?,
            attrs: Attrs::decode(r)?,
        },
        b"limits@openssh.com" => Extended::Limits,
        b"expand-path@openssh.com" => Extended::ExpandPath {
            path: r.cstring("path")?,
        },
        b"copy-data" => Extended::CopyData {
            read_handle: r.string("read handle")?,
            read_offset: r.u64("read offset")?,
            read_len: r.u64("read length")?,
            write_handle: r.string("write handle")?,
            write_offset: r.u64("write offset")?,
        },
        b"home-directory" => Extended::HomeDirectory {
            username: r.cstring("username")?,
        },
        b"users-groups-by-id@openssh.com" => Extended::UsersGroupsById {
            uids: id_list(r.string("uids")?)?,
            gids: id_list(r.string("gids")?)?,
        },
        _ => Extended::Unknown { name },
    })
}

/// Parses one packet payload (type byte onwards). Bytes after the fields a request
/// needs are ignored, as OpenSSH discards them.
pub fn parse(payload: &[u8]) -> Result<Request<'_>, ParseError> {
    let mut r = Reader::new(payload);
    let kind = r.u8("packet type")?;
    if kind == FXP_INIT {
        return Ok(Request::Init {
            version: r.u32("version")?,
        });
    }
    if !(FXP_OPEN..=FXP_SYMLINK).contains(&kind) && kind != FXP_EXTENDED {
        let id = r.u32("request id").ok();
        return Ok(Request::Unknown { kind, id });
    }
    let id = r.u32("request id")?;
    let r = &mut r;
    Ok(match kind {
        FXP_OPEN => Request::Open {
            id,
            path: r.cstring("path")?,
            pflags: r.u32("open flags")?,
            attrs: Attrs::decode(r)?,
        },
        FXP_CLOSE => Request::Close {
            id,
            handle: r.string("handle")?,
        },
        FXP_READ => Request::Read {
            id,
            handle: r.string("handle")?,
            offset: r.u64("offset")?,
            len: r.u32("length")?,
        },
        FXP_WRITE => Request::Write {
            id,
            handle: r.string("handle")?,
            offset: r.u64("offset")?,
            data: r.string("data")?,
        },
        FXP_LSTAT => Request::Lstat {
            id,
            path: r.cstring("path")?,
        },
        FXP_FSTAT => Request::Fstat {
            id,
            handle: r.string("handle")?,
        },
        FXP_SETSTAT => Request::Setstat {
            id,
            path: r.cstring("path")?,
            attrs: Attrs::decode(r)?,
        },
        FXP_FSETSTAT => Request::Fsetstat {
            id,
            handle: r.string("handle")?,
            attrs: Attrs::decode(r)?,
        },
        FXP_OPENDIR => Request::Opendir {
            id,
            path: r.cstring("path")?,
        },
        FXP_READDIR => Request::Readdir {
            id,
            handle: r.string("handle")?,
        },
        FXP_REMOVE => Request::Remove {
            id,
            path: r.cstring("path")?,
        },
        FXP_MKDIR => Request::Mkdir {
            id,
            path: r.cstring("path")?,
            attrs: Attrs::decode(r)?,
        },
        FXP_RMDIR => Request::Rmdir {
            id,
            path: r.cstring("path")?,
        },
        FXP_REALPATH => Request::Realpath {
            id,
            path: r.cstring("path")?,
        },
        FXP_STAT => Request::Stat {
            id,
            path: r.cstring("path")?,
        },
        FXP_RENAME => Request::Rename {
            id,
            old: r.cstring("old path")?,
            new: r.cstring("new path")?,
        },
        FXP_READLINK => Request::Readlink {
            id,
            path: r.cstring("path")?,
        },
        FXP_SYMLINK => Request::Symlink {
            id,
            target: r.cstring("link target")?,
            link: r.cstring("link path")?,
        },
        _ => Request::Extended {
            id,
            request: parse_extended(r)?,
        },
    })
}

// ---- encoding -------------------------------------------------------------------

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    // Every string we send is far below 4 GiB (packets are capped at 256 KiB).
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

/// Appends one framed message: the length is patched in after `body` wrote the rest.
pub fn message(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    body(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The length of the message that starts at `start` of `out` (for bounding replies).
pub fn message_len(out: &[u8], start: usize) -> usize {
    out.len().saturating_sub(start + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_split_only_when_complete() {
        let f = frame(&[FXP_INIT, 0, 0, 0, 3]);
        assert_eq!(split_frame(&f[..3]), Ok(None));
        assert_eq!(split_frame(&f[..8]), Ok(None));
        assert_eq!(split_frame(&f), Ok(Some((&f[4..], 9))));
        assert_eq!(
            split_frame(&[0, 4, 0, 1]),
            Err(ParseError::TooLong(0x40001))
        );
        assert_eq!(split_frame(&[0, 0, 0, 0]), Err(ParseError::Empty));
    }

    #[test]
    fn requests_parse_and_truncation_is_an_error() {
        let mut p = vec![FXP_READ, 0, 0, 0, 7];
        put_string(&mut p, b"hh");
        put_u64(&mut p, 1 << 33);
        put_u32(&mut p, 32768);
        assert_eq!(
            parse(&p),
            Ok(Request::Read {
                id: 7,
                handle: b"hh",
                offset: 1 << 33,
                len: 32768
            })
        );
        for cut in 0..p.len() {
            assert!(parse(&p[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn paths_with_nul_are_refused_but_handles_may_hold_any_byte() {
        let mut p = vec![FXP_STAT, 0, 0, 0, 1];
        put_string(&mut p, b"a\0b");
        assert!(matches!(parse(&p), Err(ParseError::Invalid { .. })));
        let mut p = vec![FXP_CLOSE, 0, 0, 0, 1];
        put_string(&mut p, &[0, 0, 0, 0]);
        assert!(parse(&p).is_ok());
    }

    #[test]
    fn unknown_types_keep_their_id() {
        assert_eq!(
            parse(&[99, 0, 0, 0, 5]),
            Ok(Request::Unknown {
                kind: 99,
                id: Some(5)
            })
        );
    }

    #[test]
    fn encoded_messages_are_framed() {
        let mut out = Vec::new();
        message(&mut out, FXP_STATUS, |o| {
            put_u32(o, 9);
            put_u32(o, FX_OK);
        });
        assert_eq!(out, [0, 0, 0, 9, FXP_STATUS, 0, 0, 0, 9, 0, 0, 0, 0]);
        assert_eq!(split_frame(&out).unwrap().unwrap().1, out.len());
    }

    /// No input, however malformed, makes the parser panic (the fuzz target checks
    /// this more thoroughly; this keeps a cheap check in the normal suite).
    #[test]
    fn pseudo_random_input_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            let len = (next() % 96) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias towards valid types and small lengths so parsing gets deep.
            if let Some(b) = buf.first_mut() {
                *b = match next() % 4 {
                    0 => FXP_EXTENDED,
                    1 => (next() % 21) as u8,
                    _ => *b,
                };
            }
            for i in (5..buf.len()).step_by(9) {
                if next() % 2 == 0 {
                    buf[i - 3] = 0;
                    buf[i - 2] = 0;
                    buf[i - 1] = 0;
                    buf[i] %= 24;
                }
            }
            // And sometimes a well-formed extended request header with a random tail.
            if next() % 4 == 0 {
                let (name, _) = EXTENSIONS[(next() as usize) % EXTENSIONS.len()];
                let mut p = vec![FXP_EXTENDED, 0, 0, 0, 1];
                put_string(&mut p, name.as_bytes());
                p.extend_from_slice(&buf);
                let _ = parse(&p);
            }
            let _ = parse(&buf);
            let _ = split_frame(&buf);
        }
    }
}
