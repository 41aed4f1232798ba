//! The pods/portforward channel protocol, client side, one port per WebSocket: channel 0
//! carries data both ways and channel 1 error text; each first carries the port number
//! (two bytes). The protocol has no half-close, so the stream ends when the pod side
//! closes or errs.

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::ws::{self, Incoming};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio_util::sync::{CancellationToken, DropGuard};

const DATA: u8 = 0;
const ERROR: u8 = 1;
/// Bytes in flight inside the gateway per forwarded connection, each way.
const PIPE: usize = 256 * 1024;

/// A forwarded connection. Dropping it closes the WebSocket (the protocol has no
/// half-close, so a read EOF alone cannot tell "done sending" from "gone").
pub struct ForwardStream {
    inner: DuplexStream,
    _close: DropGuard,
}

impl AsyncRead for ForwardStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ForwardStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Opens a forward to `port` inside the pod; returns a stream whose other end is the
/// pod's socket.
pub async fn open(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<ForwardStream, kube::Error> {
    let request = kube::core::Request::new(Pod::url_path(&(), Some(namespace)))
        .portforward(pod, &[port])
        .map_err(kube::Error::BuildRequest)?;
    let connection = client.connect(request).await?;
    let (read_half, write_half) = tokio::io::split(ws::RawSocket(connection.into_stream()));
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (mut from_ssh, mut to_ssh) = tokio::io::split(theirs);
    let pod = pod.to_owned();
    let closed = CancellationToken::new();
    let abandoned = closed.clone();
    let (outbox, tx) = ws::Outbox::new();
    let writer = ws::run_writer(write_half, outbox.clone(), closed.clone(), None);
    tokio::spawn(async move {
        let upstream = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from_ssh.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut sent = 0;
                        while sent < n {
                            match std::future::poll_fn(|cx| tx.poll_append(cx, DATA, &buf[sent..n]))
                                .await
                            {
                                Ok(k) => sent += k,
                                Err(_) => return,
                            }
                        }
                    }
                }
            }
            // No half-close in this protocol: keep the socket open for the answer.
            std::future::pending::<()>().await
        };
        let downstream = async {
            let mut source = ws::FrameReader::new(read_half);
            let (mut data_prefix, mut error_prefix) = (true, true);
            loop {
                let frame = match source.next().await {
                    Ok(Some(Incoming::Binary(frame))) => frame,
                    Ok(Some(Incoming::Ping(payload))) => {
                        let _ = outbox.push(ws::pong(&payload));
                        continue;
                    }
                    Ok(Some(Incoming::Close(code))) => {
                        outbox.close(code.unwrap_or(1000));
                        break;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                };
                let Some((&channel, payload)) = frame.split_first() else {
                    continue;
                };
                match channel {
                    // The first frame on each channel is the port number.
                    DATA if data_prefix => data_prefix = false,
                    ERROR if error_prefix => error_prefix = false,
                    DATA if to_ssh.write_all(payload).await.is_err() => break,
                    DATA => {}
                    ERROR => {
                        tracing::info!(pod = %pod, port, error = %String::from_utf8_lossy(payload), "port forward refused by the pod");
                        break;
                    }
                    _ => {}
                }
            }
            let _ = to_ssh.shutdown().await;
        };
        tokio::pin!(writer);
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
            _ = &mut writer => {}
            _ = abandoned.cancelled() => {}
        }
        // Dropping both halves here closes the socket to the API server.
    });
    Ok(ForwardStream {
        inner: ours,
        _close: closed.drop_guard(),
    })
}
