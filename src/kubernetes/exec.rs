//! The pods/exec channel protocol, client side: frames `[channel, bytes…]` over a
//! WebSocket — 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize, and on v5 `[255, 0]`
//! to close stdin. Framing is the gateway's own (`ws`): output frames reach the
//! bridge as `Bytes` slices of the read buffer (no copy); stdin is masked as it is
//! copied into its frame, and writes coalesce into one frame while the socket is busy.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::core::subresource::AttachParams;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ws::{self, Incoming};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::backend::WindowSize;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
/// Output frames buffered toward the bridge before the WebSocket stops being read
/// (and TCP pushes back on the API server).
const OUTPUT_QUEUE: usize = 32;
const PING_EVERY: Duration = Duration::from_secs(30);

pub struct ExecRequest<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub command: Vec<String>,
    pub tty: bool,
}

/// How the remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    /// A Failure status that is not an exit code (the runtime could not run it).
    Failed(String),
    /// The stream ended without a status: the pod, node or API server went away.
    Lost,
}

/// Delivered when the stream has ended. The output senders come back so the caller
/// can add a last word (why the session ended) before the readers see EOF.
pub struct Ended {
    pub outcome: Outcome,
    pub stdout: mpsc::Sender<Bytes>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
}

pub struct ExecStream {
    pub stdin: FrameWriter,
    pub stdout: ChunkReader,
    pub stderr: Option<ChunkReader>,
    pub resize: mpsc::Sender<WindowSize>,
    pub ended: oneshot::Receiver<Ended>,
    /// Cancel (or drop the guard made from it) when nobody wants the stream any more:
    /// the WebSocket is closed, which makes the API server end the remote process,
    /// and both of the stream's tasks finish.
    pub abandon: CancellationToken,
}

/// Opens the exec stream. Errors are the API server's (404 pod, 400 not running, …).
pub async fn start(client: &kube::Client, req: ExecRequest<'_>) -> Result<ExecStream, kube::Error> {
    let params = AttachParams {
        container: Some(req.container.to_owned()),
        stdin: true,
        stdout: true,
        stderr: !req.tty,
        tty: req.tty,
        ..Default::default()
    };
    let request = kube::core::Request::new(Pod::url_path(&(), Some(req.namespace)))
        .exec(req.pod, req.command, &params)
        .map_err(kube::Error::BuildRequest)?;
    let connection = client.connect(request).await?;
    let v5 = connection.supports_stream_close();
    let (read_half, write_half) = tokio::io::split(ws::RawSocket(connection.into_stream()));

    let abandon = CancellationToken::new();
    let (outbox, stdin_tx) = ws::Outbox::new();
    tokio::spawn(ws::run_writer(
        write_half,
        outbox.clone(),
        abandon.clone(),
        Some(PING_EVERY),
    ));

    let (resize_tx, mut resize_rx) = mpsc::channel::<WindowSize>(8);
    let resize_out = outbox.handle();
    tokio::spawn(async move {
        while let Some(size) = resize_rx.recv().await {
            let body = serde_json::json!({"Width": size.cols, "Height": size.rows}).to_string();
            if resize_out
                .push(ws::binary(RESIZE, body.as_bytes()))
                .is_err()
            {
                break;
            }
        }
    });

    let (stdout_tx, stdout_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let (stderr_tx, stderr_rx) = if req.tty {
        (None, None)
    } else {
        let (tx, rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
        (Some(tx), Some(rx))
    };
    let (ended_tx, ended_rx) = oneshot::channel();
    let abandoned = abandon.clone();
    let replies = outbox.clone();
    tokio::spawn(async move {
        let mut source = ws::FrameReader::new(read_half);
        let mut outcome = Outcome::Lost;
        loop {
            let msg = tokio::select! {
                msg = source.next() => msg,
                // Give the server a moment to answer our Close, then let go.
                _ = async {
                    abandoned.cancelled().await;
                    tokio::time::sleep(ws::CLOSE_WAIT).await;
                } => break,
            };
            let data = match msg {
                Ok(Some(Incoming::Binary(data))) => data,
                Ok(Some(Incoming::Ping(payload))) => {
                    let _ = replies.push(ws::pong(&payload));
                    continue;
                }
                Ok(Some(Incoming::Close(code))) => {
                    // Answer the close handshake (after anything already queued).
                    replies.close(code.unwrap_or(1000));
                    break;
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            };
            let Some((&channel, _)) = data.split_first() else {
                continue;
            };
            let payload = data.slice(1..);
            match channel {
                STDOUT if !payload.is_empty() => {
                    let _ = stdout_tx.send(payload).await;
                }
                STDERR if !payload.is_empty() => {
                    if let Some(tx) = &stderr_tx {
                        let _ = tx.send(payload).await;
                    }
                }
                STATUS => {
                    outcome = parse_status(&payload);
                    break;
                }
                _ => {}
            }
        }
        let _ = ended_tx.send(Ended {
            outcome,
            stdout: stdout_tx,
            stderr: stderr_tx,
        });
    });

    Ok(ExecStream {
        stdin: FrameWriter {
            tx: stdin_tx,
            v5,
            closed: false,
        },
        stdout: ChunkReader::new(stdout_rx),
        stderr: stderr_rx.map(ChunkReader::new),
        resize: resize_tx,
        ended: ended_rx,
        abandon,
    })
}

/// Reads the status frame: Success, a non-zero exit code, or another failure.
pub fn parse_status(body: &[u8]) -> Outcome {
    let Ok(status) = serde_json::from_slice::<Value>(body) else {
        return Outcome::Failed("unreadable status from the API server".into());
    };
    if status["status"] == "Success" {
        return Outcome::Exited(0);
    }
    if status["reason"] == "NonZeroExitCode"
        && let Some(causes) = status["details"]["causes"].as_array()
        && let Some(code) = causes
            .iter()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse::<i32>().ok())
    {
        return Outcome::Exited(code);
    }
    Outcome::Failed(
        status["message"]
            .as_str()
            .unwrap_or("the command failed")
            .to_owned(),
    )
}

/// The process's stdin: writes are appended to the stream's open stdin frame (see
/// `ws`: one frame per write while the socket keeps up, larger ones while it is busy);
/// shutdown sends the v5 close frame (on v4 there is no way to signal EOF, so nothing
/// is sent).
pub struct FrameWriter {
    tx: ws::Sender,
    v5: bool,
    closed: bool,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "exec stream closed")
}

impl AsyncWrite for FrameWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(gone()));
        }
        self.tx.poll_append(cx, STDIN, data).map_err(|_| gone())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closed && self.v5 {
            self.tx
                .push(ws::binary(CLOSE, &[STDIN]))
                .map_err(|_| gone())?;
        }
        self.closed = true;
        Poll::Ready(Ok(()))
    }
}

/// An `AsyncRead` over a queue of byte chunks; EOF when the queue's senders are gone.
pub struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.current = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            parse_status(br#"{"metadata":{},"status":"Success"}"#),
            Outcome::Exited(0)
        );
        let nonzero = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(parse_status(nonzero), Outcome::Exited(7));
        let other = br#"{"metadata":{},"status":"Failure","message":"exec: \"nope\": not found","reason":"InternalError"}"#;
        assert_eq!(
            parse_status(other),
            Outcome::Failed("exec: \"nope\": not found".into())
        );
        assert!(matches!(parse_status(b"garbage"), Outcome::Failed(_)));
    }
}
