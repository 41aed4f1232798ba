//! The accepted TCP socket, tuned for interactive latency: TCP_NODELAY, and
//! TCP_QUICKACK re-armed after every read (Linux clears it), which removes the
//! client's Nagle wait for our delayed ACK (~40 ms per round trip on loopback).

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A duplicate of the connection's socket, to end it from outside the session.
pub struct Killer(socket2::Socket);

impl Killer {
    pub fn new(stream: &TcpStream) -> io::Result<Self> {
        use std::os::fd::AsFd;
        Ok(Self(socket2::Socket::from(
            stream.as_fd().try_clone_to_owned()?,
        )))
    }

    /// Shuts the socket down both ways: the session's next read sees EOF.
    pub fn kill(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

pub struct TunedStream {
    inner: TcpStream,
}

impl TunedStream {
    pub fn new(inner: TcpStream) -> Self {
        let _ = inner.set_nodelay(true);
        quickack(&inner);
        Self { inner }
    }
}

fn quickack(stream: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a valid pointer; the fd is open.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl AsyncRead for TunedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            quickack(&self.inner);
        }
        polled
    }
}

impl AsyncWrite for TunedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
