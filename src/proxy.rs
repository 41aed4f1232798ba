//! `ssh-gateway proxy HOST PORT`: the client side of the CONNECT front, for
//! `ProxyCommand ssh-gateway proxy --connect gw:8022 %h %p`. It asks the front to
//! tunnel to HOST (which routes), then relays stdin and stdout until either side ends.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer header read from the front.
const MAX_ANSWER: usize = 8 * 1024;
/// Each direction's relay buffer.
const RELAY_BUFFER: usize = 256 * 1024;
/// Bound on reaching the front and hearing its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Tunnels to `host:port` through the CONNECT front at `front`, relaying stdio.
pub async fn run(front: &str, host: &str, port: u16) -> anyhow::Result<()> {
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        bail!("host {host:?} is not a host name");
    }
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, open(front, host, port))
        .await
        .with_context(|| format!("the gateway at {front} did not answer in time"))??;
    let _ = stream.set_nodelay(true);
    let (from_gw, mut to_gw) = stream.split();
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
