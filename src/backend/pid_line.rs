//! The Kubernetes exec API has no signal channel, so a `signal` request is delivered
//! by a second exec running `kill` on the program's pid. The wrapper that starts
//! every program without a terminal writes its pid (`$$`, which `exec` keeps for the
//! program) as the first line on stderr; this reader takes that line off the stream
//! before anyone sees it and passes everything after it through unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

/// A pid is a few digits; a first line longer than this is not one.
const MAX_LINE: usize = 24;

pub struct PidLine<R> {
    inner: R,
    pid: Option<oneshot::Sender<u32>>,
    /// What was read while looking for the line; after it, what is still to pass on.
    held: Vec<u8>,
    /// Where in `held` the bytes to pass on start, once the line is gone.
    from: usize,
    found: bool,
}

impl<R> PidLine<R> {
    pub fn new(inner: R) -> (Self, oneshot::Receiver<u32>) {
        let (tx, rx) = oneshot::channel();
        let reader = Self {
            inner,
            pid: Some(tx),
            held: Vec::new(),
            from: 0,
            found: false,
        };
        (reader, rx)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for PidLine<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while !this.found {
            let mut chunk = [0u8; 256];
            let mut read = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let got = read.filled();
            if got.is_empty() {
                // Ended before a whole line: pass on what there was.
                this.found = true;
                break;
            }
            this.held.extend_from_slice(got);
            if let Some(end) = this.held.iter().position(|&b| b == b'\n') {
                let pid = std::str::from_utf8(&this.held[..end])
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .filter(|&p| p > 1);
                if let (Some(pid), Some(tx)) = (pid, this.pid.take()) {
                    let _ = tx.send(pid);
                    this.from = end + 1;
                }
                this.found = true;
            } else if this.held.len() > MAX_LINE {
                this.found = true;
            }
        }
        if this.from < this.held.len() {
            let n = (this.held.len() - this.from).min(buf.remaining());
            buf.put_slice(&this.held[this.from..this.from + n]);
            this.from += n;
            if this.from == this.held.len() {
                this.held = Vec::new();
                this.from = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read(input: &[u8]) -> (Vec<u8>, Option<u32>) {
        let (mut reader, pid) = PidLine::new(input);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        drop(reader);
        (out, pid.await.ok())
    }

    #[tokio::test]
    async fn the_first_line_is_taken_and_the_rest_passes() {
        assert_eq!(
            read(b"4242\nwarning: x\n").await,
            (b"warning: x\n".to_vec(), Some(4242))
        );
        assert_eq!(read(b"7\n").await, (Vec::new(), Some(7)));
    }

    #[tokio::test]
    async fn anything_else_passes_untouched() {
        // Not a pid, too long, or cut short: nothing is taken and no pid is known.
        for input in [
            &b"oops\nmore"[..],
            b"123456789012345678901234567890\n",
            b"12",
            b"",
        ] {
            assert_eq!(read(input).await, (input.to_vec(), None), "{input:?}");
        }
        // pid 1 would be the container's init: never a session's program.
        assert_eq!(read(b"1\nrest").await, (b"1\nrest".to_vec(), None));
    }
}
