//! The frames `agent-listen` and the gateway exchange over the helper's stdin and
//! stdout, after the first line (the socket's path) on stdout. One definition for both
//! ends: the gateway links this module too.
//!
//! A frame is a 9-byte header and its payload:
//!
//! ```text
//! u32 connection id (big-endian) | u8 kind | u32 payload length (big-endian) | payload
//! ```
//!
//! - `OPEN` (helper → gateway): a client connected to the socket; the id is new (ids
//!   are never reused within one listener). No payload.
//! - `DATA` (both ways): bytes of that connection, at most [`MAX_PAYLOAD`].
//! - `EOF` (both ways): the sender's side of the connection sends nothing more (a
//!   half-close, as `shutdown(SHUT_WR)`). No payload.
//! - `CLOSE` (both ways): the sender is done with the connection; the receiver lets it
//!   go without answering. No payload.
//!
//! Frames for an id the receiver does not know (already closed by it) are ignored:
//! the two ends close concurrently. Anything else — an unknown kind, a payload over
//! the cap or on a kind that has none, `OPEN` towards the helper, a stream that ends
//! inside a frame — is a protocol error that ends the whole listener.

use std::io::{self, Read};

/// Header bytes before each payload.
pub const HEADER_LEN: usize = 9;
/// The largest payload a frame may carry (an SSH packet's data fits in one).
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open = 1,
    Data = 2,
    Eof = 3,
    Close = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u32,
    pub kind: Kind,
    /// Payload bytes that follow, already checked against the kind and the cap.
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    UnknownKind(u8),
    TooLong(u32),
    /// A payload on a kind that carries none.
    UnexpectedPayload(Kind, u32),
    /// The stream ended inside a frame.
    Truncated,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            WireError::TooLong(n) => {
                write!(f, "frame payload of {n} bytes (at most {MAX_PAYLOAD})")
            }
            WireError::UnexpectedPayload(k, n) => write!(f, "{k:?} frame with a {n}-byte payload"),
            WireError::Truncated => write!(f, "stream ended inside a frame"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl Header {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let id = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        let kind = match bytes[4] {
            1 => Kind::Open,
            2 => Kind::Data,
            3 => Kind::Eof,
            4 => Kind::Close,
            other => return Err(WireError::UnknownKind(other)),
        };
        if kind != Kind::Data && len != 0 {
            return Err(WireError::UnexpectedPayload(kind, len));
        }
        if len as usize > MAX_PAYLOAD {
            return Err(WireError::TooLong(len));
        }
        Ok(Header {
            id,
            kind,
            len: len as usize,
        })
    }
}

/// One whole frame, ready to write in a single call (so frames from several threads
/// never interleave, and an exec stream carries each as one message). `payload` longer
/// than [`MAX_PAYLOAD`] is the caller's bug: callers split what they read.
pub fn encode(id: u32, kind: Kind, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_PAYLOAD, "frame payload over the cap");
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.push(kind as u8);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads one frame; `None` at a clean end of the stream (between frames).
pub fn read_frame(from: &mut impl Read) -> io::Result<Option<(Header, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match from.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(WireError::Truncated.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let header = Header::parse(&header)?;
    let mut payload = vec![0u8; header.len];
    from.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => WireError::Truncated.into(),
        _ => e,
    })?;
    Ok(Some((header, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(mut bytes: &[u8]) -> Result<Vec<(Header, Vec<u8>)>, WireError> {
        let mut frames = Vec::new();
        loop {
            match read_frame(&mut bytes) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return Ok(frames),
                Err(e) => {
                    let inner = e.into_inner().expect("a wire error");
                    return Err(*inner.downcast::<WireError>().expect("a wire error"));
                }
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut stream = encode(7, Kind::Open, b"");
        stream.extend(encode(7, Kind::Data, b"hello"));
        stream.extend(encode(u32::MAX, Kind::Data, &vec![0xa5; MAX_PAYLOAD]));
        stream.extend(encode(7, Kind::Eof, b""));
        stream.extend(encode(7, Kind::Close, b""));
        let frames = parse_all(&stream).unwrap();
        let kinds: Vec<(u32, Kind, usize)> = frames
            .iter()
            .map(|(h, p)| (h.id, h.kind, p.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                (7, Kind::Open, 0),
                (7, Kind::Data, 5),
                (u32::MAX, Kind::Data, MAX_PAYLOAD),
                (7, Kind::Eof, 0),
                (7, Kind::Close, 0)
            ]
        );
        assert_eq!(frames[1].1, b"hello");
    }

    #[test]
    fn garbage_is_a_clean_error() {
        // An oversized length is refused from the header, before anything is allocated.
        let mut oversized = encode(1, Kind::Data, b"");
        oversized[5..9].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert_eq!(
            parse_all(&oversized),
            Err(WireError::TooLong(MAX_PAYLOAD as u32 + 1))
        );
        let mut huge = encode(1, Kind::Data, b"");
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_all(&huge), Err(WireError::TooLong(u32::MAX)));

        for kind in [0u8, 5, 255] {
            let mut unknown = encode(1, Kind::Eof, b"");
            unknown[4] = kind;
            assert_eq!(parse_all(&unknown), Err(WireError::UnknownKind(kind)));
        }

        let mut eof_with_payload = encode(1, Kind::Data, b"x");
        eof_with_payload[4] = Kind::Eof as u8;
        assert_eq!(
            parse_all(&eof_with_payload),
            Err(WireError::UnexpectedPayload(Kind::Eof, 1))
        );

        // Cut inside the header and inside the payload.
        let whole = encode(3, Kind::Data, b"abcdef");
        for cut in [1, HEADER_LEN - 1, HEADER_LEN, whole.len() - 1] {
            assert_eq!(
                parse_all(&whole[..cut]),
                Err(WireError::Truncated),
                "cut at {cut}"
            );
        }
        // A clean end between frames is not an error.
        assert_eq!(parse_all(&[]).unwrap().len(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep over short streams of small values, so that
        // headers of every kind, valid and not, come up.
        let mut state: u32 = 0x1234_5678;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    // Mostly small kinds and lengths, so some frames parse.
                    (state % 7) as u8
                })
                .collect();
            let _ = parse_all(&bytes);
        }
    }
}
