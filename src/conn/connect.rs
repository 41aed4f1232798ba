//! The HTTP CONNECT front: `CONNECT <host>:<port> HTTP/1.1` and headers, answered
//! `200 Connection established`, then the socket carries SSH with `<host>` as the
//! route hint. Read under the connection's login deadline, at most `MAX_PRELUDE`
//! bytes, byte by byte so nothing of the SSH stream that may follow is taken.
//! A prelude that is not one gets `400` (or `431`) and a closed socket. The same
//! prelude is read inside the TLS front when its stream does not start with SSH
//! (`conn::tls::sniff`).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::route::{Routing, host_target};

/// Request line plus headers.
pub const MAX_PRELUDE: usize = 8 * 1024;

/// What a prelude asked for, or the answer that refuses it.
#[derive(Debug, PartialEq, Eq)]
pub enum Prelude {
    /// Tunnel to this host name (lower case, no port).
    Tunnel(String),
    Refuse(u16, String),
}

/// Reads the prelude from `stream`, whose first bytes (`start`) were read already;
/// on success the stream is positioned at the first byte after it. I/O errors (the
/// client went away) are `Err`.
pub async fn read_prelude<S: AsyncRead + Unpin>(
    stream: &mut S,
    start: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut prelude = start;
    prelude.reserve(256);
    let mut byte = [0u8; 1];
    while !prelude.ends_with(b"\r\n\r\n") && !prelude.ends_with(b"\n\n") {
        if prelude.len() >= MAX_PRELUDE {
            break;
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        prelude.push(byte[0]);
    }
    Ok(prelude)
}

/// Judges a prelude. The host must route (its form only; whether the target exists
/// is decided after authentication, in the one message for unknown and forbidden).
pub fn parse(prelude: &[u8], routing: &Routing) -> Prelude {
    if prelude.len() >= MAX_PRELUDE
        && !prelude.ends_with(b"\n\n")
        && !prelude.ends_with(b"\r\n\r\n")
    {
        return Prelude::Refuse(431, format!("request headers over {MAX_PRELUDE} bytes"));
    }
    let Ok(text) = std::str::from_utf8(prelude) else {
        return Prelude::Refuse(400, "the request is not text".into());
    };
    let line = text.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    let (Some(method), Some(authority), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Prelude::Refuse(400, "expected `CONNECT <host>:<port> HTTP/1.1`".into());
    };
    if method != "CONNECT" {
        return Prelude::Refuse(
            400,
            format!(
                "this port only tunnels SSH: expected CONNECT, got {:.16}",
                method
            ),
        );
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Prelude::Refuse(400, "expected HTTP/1.1".into());
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Prelude::Refuse(400, "CONNECT needs <host>:<port>".into());
    };
    if port.parse::<u16>().is_err() {
        return Prelude::Refuse(400, "CONNECT needs a numeric port".into());
    }
    // A host that names a target, or the bare domain (then the SSH user name
    // routes), passes; anything else is refused here with what is wrong with it.
    match host_target(host, routing) {
        Err(e) => Prelude::Refuse(400, e.to_string()),
        Ok(_) => Prelude::Tunnel(host.trim_end_matches('.').to_ascii_lowercase()),
    }
}

/// Writes the answer to a prelude.
pub async fn answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    prelude: &Prelude,
) -> std::io::Result<()> {
    match prelude {
        Prelude::Tunnel(_) => {
            stream
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            // Inside TLS the answer may sit in a record until flushed.
            stream.flush().await
        }
        Prelude::Refuse(status, why) => {
            let reason = if *status == 431 {
                "Request Header Fields Too Large"
            } else {
                "Bad Request"
            };
            let body = format!("{why}\n");
            let text = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(text.as_bytes()).await?;
            stream.shutdown().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing::new(Some("ssh.example.com"))
    }

    #[test]
    fn preludes() {
        let ok = parse(
            b"CONNECT Training-Job-abc-0.ssh.example.com:22 HTTP/1.1\r\nHost: x\r\n\r\n",
            &routing(),
        );
        assert_eq!(
            ok,
            Prelude::Tunnel("training-job-abc-0.ssh.example.com".into())
        );
        assert_eq!(
            parse(b"CONNECT ssh.example.com:22 HTTP/1.0\r\n\r\n", &routing()),
            Prelude::Tunnel("ssh.example.com".into())
        );
        for (input, status, part) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], 400, "expected CONNECT"),
            (
                b"CONNECT demo.ssh.example.com HTTP/1.1\r\n\r\n",
                400,
                "<host>:<port>",
            ),
            (
                b"CONNECT demo.ssh.example.com:x HTTP/1.1\r\n\r\n",
                400,
                "numeric port",
            ),
            (
                b"CONNECT demo.evil.org:22 HTTP/1.1\r\n\r\n",
                400,
                "not under",
            ),
            (
                b"CONNECT a.b.ssh.example.com:22 HTTP/1.1\r\n\r\n",
                400,
                "one label",
            ),
            (b"CONNECT x:22 SPDY/3\r\n\r\n", 400, "HTTP/1.1"),
            (b"\xff\xfe\r\n\r\n", 400, "not text"),
        ] {
            match parse(input, &routing()) {
                Prelude::Refuse(s, why) => {
                    assert_eq!(s, status, "{input:?}");
                    assert!(why.contains(part), "{input:?}: {why}");
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        let huge = vec![b'a'; MAX_PRELUDE];
        assert!(matches!(parse(&huge, &routing()), Prelude::Refuse(431, _)));
    }
}
