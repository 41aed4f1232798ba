//! `ssh-gateway proxy HOST PORT`: the client side of the fronts, for
//! `ProxyCommand ssh-gateway proxy %h %p`. Through the TLS front it connects with HOST
//! as the SNI name (which routes); through the CONNECT front it asks for a tunnel to
//! HOST. Then it relays stdin and stdout until either side ends. Which front: `--tls`
//! or `--connect`, or else the profile `ssh-gateway setup` wrote for HOST's domain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::FrontAddr;

/// Largest answer header read from the front.
const MAX_ANSWER: usize = 8 * 1024;
/// Each direction's relay buffer.
const RELAY_BUFFER: usize = 256 * 1024;
/// Bound on reaching the front and hearing its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Reaches `host:port` through `front`, relaying stdio. `tls_ca`: a CA file the TLS
/// front's certificate must chain to, instead of the system's roots.
pub async fn run(
    front: &FrontAddr,
    tls_ca: Option<&Path>,
    host: &str,
    port: u16,
) -> anyhow::Result<()> {
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        bail!("host {host:?} is not a host name");
    }
    match front {
        FrontAddr::Connect(addr) => {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, open(addr, host, port))
                .await
                .with_context(|| format!("the gateway at {addr} did not answer in time"))??;
            let _ = stream.set_nodelay(true);
            relay(stream).await
        }
        FrontAddr::Tls(addr) => {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, open_tls(addr, tls_ca, host))
                .await
                .with_context(|| format!("the gateway at {addr} did not answer in time"))??;
            relay(stream).await
        }
    }
}

/// TLS to the front at `addr`, naming (and verifying the certificate for) `host`.
async fn open_tls(
    addr: &str,
    tls_ca: Option<&Path>,
    host: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} cannot be a TLS server name"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(crate::tls_client::config(tls_ca)?));
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the gateway's TLS front at {addr}"))?;
    let _ = tcp.set_nodelay(true);
    connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with the gateway's front at {addr} as {host}"))
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> anyhow::Result<()> {
    let (from_gw, mut to_gw) = tokio::io::split(stream);
    // tokio's stdin and stdout go through its blocking pool, one hop per read or
    // write: large buffers make those hops few (8 KiB ones moved a sixth as much,
    // measured with benches/fronts.rs).
    let mut stdin = tokio::io::BufReader::with_capacity(RELAY_BUFFER, tokio::io::stdin());
    let mut from_gw = tokio::io::BufReader::with_capacity(RELAY_BUFFER, from_gw);
    let mut stdout = tokio::io::stdout();
    let up = async {
        let r = tokio::io::copy_buf(&mut stdin, &mut to_gw).await;
        let _ = to_gw.shutdown().await;
        r
    };
    let down = async {
        let r = tokio::io::copy_buf(&mut from_gw, &mut stdout).await;
        let _ = stdout.flush().await;
        r
    };
    // SSH ends when the gateway closes; stdin closing only half-closes.
    tokio::pin!(up, down);
    tokio::select! {
        r = &mut down => {
            r.context("reading from the gateway")?;
        }
        _ = &mut up => {
            (&mut down).await.context("reading from the gateway")?;
        }
    }
    Ok(())
}

async fn open(front: &str, host: &str, port: u16) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(front)
        .await
        .with_context(|| format!("connecting to the gateway's CONNECT front at {front}"))?;
    stream
        .write_all(
            format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut answer = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_ANSWER || stream.read(&mut byte).await? == 0 {
            break;
        }
        answer.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    if status_line.split(' ').nth(1) == Some("200") {
        return Ok(stream);
    }
    // A refusal says why in its body.
    let mut body = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut body))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let why = String::from_utf8_lossy(&body[..n]).trim().to_owned();
    if status_line.is_empty() {
        bail!("the gateway at {front} closed the connection without answering");
    }
    bail!("the gateway refused the tunnel ({status_line}): {why}")
}
