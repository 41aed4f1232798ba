//! PROXY protocol v1 and v2 (HAProxy's spec), read before SSH on the SSH listener when
//! `[ssh] proxy_protocol` is on: a load balancer that hides client addresses says
//! whose connection this is, and that address is what logs, admission limits and
//! penalties see. Read exactly (nothing of the SSH stream behind it is consumed),
//! bounded in size, under the login deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1's whole line, CRLF included.
const V1_MAX: usize = 107;
/// v2 address block plus TLVs; more is refused.
const V2_MAX: usize = 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("connection closed before the PROXY protocol header ended")]
    Eof,
}

/// Reads one header from `stream`. `Ok(None)`: a header that names no client (v1
/// `UNKNOWN`, v2 `LOCAL` such as a balancer's health check): the peer itself is the
/// source.
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Option<SocketAddr>, HeaderError> {
    let mut start = [0u8; 12];
    read_exact(stream, &mut start[..5]).await?;
    if &start[..5] == b"PROXY" {
        let mut line = start[..5].to_vec();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(HeaderError::Malformed("v1 line longer than 107 bytes"));
            }
            read_exact(stream, &mut byte).await?;
            line.push(byte[0]);
        }
        return parse_v1(&line);
    }
    if start[..5] != V2_SIGNATURE[..5] {
        return Err(HeaderError::Missing);
    }
    read_exact(stream, &mut start[5..]).await?;
    if &start != V2_SIGNATURE {
        return Err(HeaderError::Missing);
    }
    let mut fixed = [0u8; 4];
    read_exact(stream, &mut fixed).await?;
    let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if len > V2_MAX {
        return Err(HeaderError::Malformed("v2 header longer than 1024 bytes"));
    }
    let mut body = vec![0u8; len];
    read_exact(stream, &mut body).await?;
    parse_v2(fixed[0], fixed[1], &body)
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), HeaderError> {
    r.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| HeaderError::Eof)
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| HeaderError::Malformed("v1 line is not ASCII"))?
        .strip_suffix("\r\n")
        .ok_or(HeaderError::Malformed("v1 line must end in CRLF"))?;
    let words: Vec<&str> = text.split(' ').collect();
    match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            sport,
            _dport,
        ] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| HeaderError::Malformed("v1 source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(HeaderError::Malformed(
                    "v1 address does not match its family",
                ));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| HeaderError::Malformed("v1 source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(HeaderError::Malformed(
            "v1 line is not PROXY TCP4|TCP6|UNKNOWN …",
        )),
    }
}

fn parse_v2(ver_cmd: u8, family: u8, body: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Malformed("v2 version is not 2"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(None), // LOCAL
        1 => {}
        _ => {
            return Err(HeaderError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ));
        }
    }
    match family >> 4 {
        1 => {
            let a: [u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(HeaderError::Malformed("v2 IPv4 address block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        2 => {
            let a: [u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(HeaderError::Malformed("v2 IPv6 address block too short"))?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(ip);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        // AF_UNSPEC or AF_UNIX: no client address to take.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let mut r = bytes;
        let header = read_header(&mut r).await;
        (header, r.to_vec())
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x20 | cmd, fam]);
        h.extend((body.len() as u16).to_be_bytes());
        h.extend(body);
        h
    }

    #[tokio::test]
    async fn v1_and_v2_name_the_client_and_leave_ssh_untouched() {
        let (h, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 22\r\nSSH-2.0-x\r\n").await;
        assert_eq!(h, Ok(Some("203.0.113.7:5555".parse().unwrap())));
        assert_eq!(rest, b"SSH-2.0-x\r\n");
        let (h, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 6000 22\r\n").await;
        assert_eq!(h, Ok(Some("[2001:db8::7]:6000".parse().unwrap())));
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0, Ok(None));

        let mut body = vec![203, 0, 113, 9, 10, 0, 0, 1];
        body.extend(4444u16.to_be_bytes());
        body.extend(22u16.to_be_bytes());
        body.extend([0x04, 0, 1, 0]); // a TLV, skipped
        let mut input = v2(1, 0x11, &body);
        input.extend(b"SSH-2.0-y\r\n");
        let (h, rest) = read(&input).await;
        assert_eq!(h, Ok(Some("203.0.113.9:4444".parse().unwrap())));
        assert_eq!(rest, b"SSH-2.0-y\r\n");
        assert_eq!(read(&v2(0, 0x00, &[])).await.0, Ok(None));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert_eq!(
            read(b"SSH-2.0-OpenSSH_9.2\r\n").await.0,
            Err(HeaderError::Missing)
        );
        assert!(matches!(
            read(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555\r\n").await.0,
            Err(HeaderError::Malformed(_))
        ));
        assert!(matches!(
            read(b"PROXY TCP4 2001:db8::1 10.0.0.1 5555 22\r\n").await.0,
            Err(HeaderError::Malformed(_))
        ));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            read(long.as_bytes()).await.0,
            Err(HeaderError::Malformed(_))
        ));
        assert_eq!(read(b"PROXY TCP4 1.2").await.0, Err(HeaderError::Eof));
        assert!(matches!(
            read(&v2(1, 0x11, &[1, 2, 3])).await.0,
            Err(HeaderError::Malformed(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read(&huge).await.0,
            Err(HeaderError::Malformed(_))
        ));
    }
}
