//! The client side of RFC 6455 framing, as the channel protocols need it, spoken on the
//! socket kube-rs upgraded (kube-rs does the HTTP part: authentication, API errors,
//! subprotocol; its tungstenite stream is created with `from_raw_socket`, which
//! reads and buffers nothing, and is never read or written after that).
//!
//! Why not tungstenite for the frames (perf, 2026-12-01, Kubernetes upload and
//! download): each output frame was a copy into a fresh `Vec` to prepend the channel
//! byte and a second copy into tungstenite's write buffer to mask it; on the read side
//! tungstenite zero-fills its 128 KiB read window before every read and, because the
//! frames it hands out share its buffer, re-allocates and copies the unread rest at
//! every frame header. Here:
//! - **Out**: data is masked as it is copied into the frame (one copy, no allocation
//!   per write), and while the socket is busy, successive writes are appended to the
//!   same open frame (up to [`MAX_DATA_FRAME`]), so a busy upload goes out in large
//!   frames and the API server parses and wakes once per frame, not per SSH packet.
//!   Nothing ever waits to fill a frame: an idle writer takes what is there at once.
//!   Queued frames leave in one vectored write.
//! - **In**: reads go into uninitialised spare capacity ([`READ_AHEAD`] at a time),
//!   frames are handed out as `Bytes` slices of the read buffer, and only the part of
//!   a frame already read is copied when a new buffer is needed.
//!
//! Client frames are always masked, with a fresh random key per frame (RFC 6455 §5.3).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const FIN: u8 = 0x80;
const MASKED: u8 = 0x80;

/// Largest data frame the gateway sends. Writes are appended to the open frame until
/// it is this large or the socket takes it. kubectl's frames are smaller; the API
/// server accepts far larger messages (the emulator 16 MiB).
pub const MAX_DATA_FRAME: usize = 1 << 20;
/// Data waiting in the outbox (not yet taken by the socket's writer) beyond which
/// writers wait: the bound that keeps the SSH window shut while the API server is slow.
const OUTBOX_LIMIT: usize = MAX_DATA_FRAME;
/// Largest frame and message accepted from the server (tungstenite's limits).
const MAX_FRAME_IN: usize = 16 << 20;
const MAX_MESSAGE_IN: usize = 64 << 20;
/// Spare capacity to read into when the read buffer must grow.
const READ_AHEAD: usize = 256 * 1024;
/// Below this much spare capacity, a read first makes room for [`READ_AHEAD`].
const MIN_READ: usize = 16 * 1024;
/// Room kept in front of an open frame for its header (2 + 8 + 4 mask bytes).
const HEADER_ROOM: usize = 14;
/// Frames per vectored write.
const MAX_IOVECS: usize = 64;

/// XORs `data` with `key`, `offset` bytes into the masked payload.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let r = offset % 4;
    let k = [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]];
    let word = u32::from_ne_bytes(k) as u64;
    let word = word | (word << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key is in phase.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// The header of a masked client frame: FIN, opcode, length, key.
fn header(opcode: u8, len: usize, key: [u8; 4]) -> ([u8; HEADER_ROOM], usize) {
    let mut h = [0u8; HEADER_ROOM];
    h[0] = FIN | opcode;
    let mut n = 2;
    if len < 126 {
        h[1] = MASKED | len as u8;
    } else if len <= u16::MAX as usize {
        h[1] = MASKED | 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        n = 4;
    } else {
        h[1] = MASKED | 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        n = 10;
    }
    h[n..n + 4].copy_from_slice(&key);
    (h, n + 4)
}

/// One complete masked frame.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let key: [u8; 4] = rand::random();
    let (h, n) = header(opcode, payload.len(), key);
    let mut frame = BytesMut::with_capacity(n + payload.len());
    frame.put_slice(&h[..n]);
    frame.put_slice(payload);
    apply_mask(&mut frame[n..], key, 0);
    frame.freeze()
}

/// A binary frame `[channel, data…]`.
pub fn binary(channel: u8, data: &[u8]) -> Bytes {
    let mut payload = Vec::with_capacity(1 + data.len());
    payload.push(channel);
    payload.extend_from_slice(data);
    encode(OP_BINARY, &payload)
}

pub fn ping() -> Bytes {
    encode(OP_PING, &[])
}

/// The answer to a ping, echoing its payload.
pub fn pong(payload: &[u8]) -> Bytes {
    encode(OP_PONG, payload)
}

fn close(code: u16) -> Bytes {
    encode(OP_CLOSE, &code.to_be_bytes())
}

/// A binary frame being filled: `[room for the header][channel][masked data…]`.
struct OpenFrame {
    buf: BytesMut,
    key: [u8; 4],
}

impl OpenFrame {
    fn new(channel: u8) -> Self {
        let key: [u8; 4] = rand::random();
        let mut buf = BytesMut::with_capacity(HEADER_ROOM + 1 + 64 * 1024);
        buf.put_bytes(0, HEADER_ROOM);
        buf.put_u8(channel ^ key[0]);
        OpenFrame { buf, key }
    }

    fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_ROOM
    }

    fn append(&mut self, data: &[u8]) {
        let offset = self.payload_len();
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        apply_mask(&mut self.buf[start..], self.key, offset);
    }

    fn seal(mut self) -> Bytes {
        let (h, n) = header(OP_BINARY, self.payload_len(), self.key);
        self.buf[HEADER_ROOM - n..HEADER_ROOM].copy_from_slice(&h[..n]);
        self.buf.advance(HEADER_ROOM - n);
        self.buf.freeze()
    }
}

#[derive(Default)]
struct State {
    /// Complete frames, in the order they were queued.
    frames: VecDeque<Bytes>,
    /// The data frame being filled; it goes after `frames`.
    open: Option<(u8, OpenFrame)>,
    /// Data bytes queued (open frame included), for [`OUTBOX_LIMIT`].
    data_bytes: usize,
    /// Counted handles alive; at zero, with nothing queued, the writer ends.
    handles: usize,
    /// A Close was queued: nothing may follow it.
    closing: bool,
    /// The writer is gone: writes fail.
    dead: bool,
    /// A writer waiting for room.
    waiting: Option<Waker>,
}

impl State {
    fn seal(&mut self) {
        if let Some((_, frame)) = self.open.take() {
            self.frames.push_back(frame.seal());
        }
    }
}

/// Frames on their way to one socket, shared by its writers and its writer task.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stream closed")
}

impl Outbox {
    /// A new outbox and its first counted handle. They are made together because the
    /// writer task ends once no handle is left: a writer spawned before the first
    /// handle existed could see zero handles, end, and drop every later write (a
    /// channel whose input never arrived, seen under load).
    pub fn new() -> (Arc<Self>, Sender) {
        let outbox = Arc::new(Self::default());
        let first = outbox.handle();
        (outbox, first)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A counted handle: the writer task runs until every handle is gone.
    pub fn handle(self: &Arc<Self>) -> Sender {
        self.lock().handles += 1;
        Sender(self.clone())
    }

    /// Queues a complete frame after everything queued so far.
    pub fn push(&self, frame: Bytes) -> io::Result<()> {
        let mut s = self.lock();
        if s.dead || s.closing {
            return Err(gone());
        }
        s.seal();
        s.frames.push_back(frame);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a Close; later frames are refused.
    pub fn close(&self, code: u16) {
        let mut s = self.lock();
        if s.dead || s.closing {
            return;
        }
        s.seal();
        s.frames.push_back(close(code));
        s.closing = true;
        drop(s);
        self.ready.notify_one();
    }

    /// Appends `data` to the open frame on `channel` (starting one if needed), as much
    /// as fits; pending while the outbox is full.
    pub fn poll_append(
        &self,
        cx: &mut Context<'_>,
        channel: u8,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.lock();
        if s.dead || s.closing {
            return Poll::Ready(Err(gone()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if s.data_bytes >= OUTBOX_LIMIT {
            s.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if matches!(&s.open, Some((c, f)) if *c != channel || f.payload_len() >= MAX_DATA_FRAME) {
            s.seal();
        }
        let open = &mut s
            .open
            .get_or_insert_with(|| (channel, OpenFrame::new(channel)))
            .1;
        let room = MAX_DATA_FRAME - open.payload_len();
        let n = data.len().min(room).min(OUTBOX_LIMIT);
        open.append(&data[..n]);
        s.data_bytes += n;
        drop(s);
        self.ready.notify_one();
        Poll::Ready(Ok(n))
    }

    /// Everything queued, in order; `None` once every handle is gone and nothing is left.
    async fn take(&self) -> Option<VecDeque<Bytes>> {
        loop {
            {
                let mut s = self.lock();
                s.seal();
                if !s.frames.is_empty() {
                    s.data_bytes = 0;
                    if let Some(w) = s.waiting.take() {
                        w.wake();
                    }
                    return Some(std::mem::take(&mut s.frames));
                }
                if s.handles == 0 {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    fn is_closing(&self) -> bool {
        self.lock().closing
    }

    fn kill(&self) {
        let mut s = self.lock();
        s.dead = true;
        if let Some(w) = s.waiting.take() {
            w.wake();
        }
    }
}

/// A counted handle on an [`Outbox`].
pub struct Sender(Arc<Outbox>);

impl std::ops::Deref for Sender {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        &self.0
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.lock().handles -= 1;
        self.0.ready.notify_one();
    }
}

/// After a Close is sent, how long to wait for the server's Close before dropping the
/// connection anyway.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Writes the outbox's frames to `io` until every handle is gone (then just stops) or
/// `abandon` fires (then sends a Close first, so the server ends the process instead of
/// leaving it behind a half-dead socket). Pings every `ping_every` if set.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    mut io: W,
    outbox: Arc<Outbox>,
    abandon: CancellationToken,
    ping_every: Option<Duration>,
) {
    struct Kill<'a>(&'a Outbox);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            self.0.kill();
        }
    }
    let _kill = Kill(&outbox);
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.reset();
    loop {
        let frames = tokio::select! {
            frames = outbox.take() => match frames {
                Some(frames) => frames,
                None => break,
            },
            _ = ping.tick(), if ping_every.is_some() => VecDeque::from([self::ping()]),
            _ = abandon.cancelled() => break,
        };
        if write_frames(&mut io, frames).await.is_err() {
            return;
        }
    }
    if abandon.is_cancelled() && !outbox.is_closing() {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            io.write_all(&close(1000)).await?;
            io.flush().await
        })
        .await;
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut frames: VecDeque<Bytes>,
) -> io::Result<()> {
    while !frames.is_empty() {
        let mut n = {
            let slices: Vec<IoSlice<'_>> = frames
                .iter()
                .take(MAX_IOVECS)
                .map(|f| IoSlice::new(f))
                .collect();
            io.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let front = frames.front_mut().expect("written bytes belong to frames");
            if n >= front.len() {
                n -= front.len();
                frames.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    io.flush().await
}

/// A message or control frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    Text(Bytes),
    Ping(Bytes),
    Pong,
    /// The status code, if the server gave one.
    Close(Option<u16>),
}

fn protocol(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {msg}"))
}

/// Reads frames from the server; data messages come out as slices of the read buffer.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    /// The bytes the next frame needs in `buf` (at least a header's 2).
    want: usize,
    /// A fragmented message being put together: its opcode and data so far.
    message: Option<(u8, BytesMut)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::new(),
            want: 2,
            message: None,
        }
    }

    /// The next message or control frame; `None` at end of stream.
    pub async fn next(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            if let Some(incoming) = self.parse()? {
                return Ok(Some(incoming));
            }
            if self.buf.len() >= self.want {
                continue; // a continuation frame was absorbed
            }
            let missing = self.want - self.buf.len();
            if self.buf.capacity() - self.buf.len() < missing.max(MIN_READ) {
                self.buf.reserve(missing.max(READ_AHEAD));
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// One frame out of `buf` if it is all there; sets `want` otherwise.
    fn parse(&mut self) -> io::Result<Option<Incoming>> {
        let b = &self.buf[..];
        if b.len() < 2 {
            self.want = 2;
            return Ok(None);
        }
        let (fin, opcode) = (b[0] & FIN != 0, b[0] & 0x0F);
        if b[0] & 0x70 != 0 {
            return Err(protocol("reserved bits set without an extension"));
        }
        if b[1] & MASKED != 0 {
            return Err(protocol("masked frame from the server"));
        }
        let (header, len) = match b[1] & 0x7F {
            126 if b.len() < 4 => {
                self.want = 4;
                return Ok(None);
            }
            126 => (4, u16::from_be_bytes([b[2], b[3]]) as u64),
            127 if b.len() < 10 => {
                self.want = 10;
                return Ok(None);
            }
            127 => (
                10,
                u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
            ),
            n => (2, n as u64),
        };
        if len > MAX_FRAME_IN as u64 {
            return Err(protocol("frame too large"));
        }
        let len = len as usize;
        if b.len() < header + len {
            self.want = header + len;
            return Ok(None);
        }
        self.want = 2;
        self.buf.advance(header);
        let payload = self.buf.split_to(len);
        if opcode >= 0x8 && (!fin || len > 125) {
            return Err(protocol("fragmented or oversized control frame"));
        }
        match opcode {
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => Ok(Some(Incoming::Close(
                (len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ))),
            OP_TEXT | OP_BINARY if self.message.is_some() => {
                Err(protocol("new message inside a fragmented one"))
            }
            OP_TEXT | OP_BINARY if fin => Ok(Some(data(opcode, payload.freeze()))),
            OP_TEXT | OP_BINARY => {
                self.message = Some((opcode, payload));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some((op, mut message)) = self.message.take() else {
                    return Err(protocol("continuation without a message"));
                };
                if message.len() + payload.len() > MAX_MESSAGE_IN {
                    return Err(protocol("message too large"));
                }
                message.extend_from_slice(&payload);
                if fin {
                    Ok(Some(data(op, message.freeze())))
                } else {
                    self.message = Some((op, message));
                    Ok(None)
                }
            }
            _ => Err(protocol("reserved opcode")),
        }
    }
}

fn data(opcode: u8, payload: Bytes) -> Incoming {
    if opcode == OP_TEXT {
        Incoming::Text(payload)
    } else {
        Incoming::Binary(payload)
    }
}

/// The upgraded socket under kube-rs's WebSocket stream, used directly. Valid because
/// the stream was made by `from_raw_socket` (nothing read ahead) and is not used as a
/// WebSocket afterwards.
pub struct RawSocket<S>(pub tokio_tungstenite::WebSocketStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RawSocket<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.0.get_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RawSocket<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.0.get_mut()).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.0.get_mut()).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.get_ref().is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.0.get_mut()).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.0.get_mut()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const STDIN_CHANNEL: u8 = 0;

    fn naive_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn mask_matches_the_definition() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 3, 7, 8, 9, 31, 64, 1000] {
            for offset in 0..5 {
                let src: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
                let (mut a, mut b) = (src.clone(), src.clone());
                apply_mask(&mut a, key, offset);
                naive_mask(&mut b, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
            }
        }
    }

    /// Decodes one masked client frame: (fin, opcode, unmasked payload, bytes used).
    fn decode_client(frame: &[u8]) -> (bool, u8, Vec<u8>, usize) {
        assert_eq!(frame[1] & MASKED, MASKED, "client frames are masked");
        let (mut n, len) = match frame[1] & 0x7F {
            126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
            127 => (
                10,
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            ),
            l => (2, l as usize),
        };
        let key: [u8; 4] = frame[n..n + 4].try_into().unwrap();
        n += 4;
        let mut payload = frame[n..n + len].to_vec();
        naive_mask(&mut payload, key, 0);
        (frame[0] & FIN != 0, frame[0] & 0x0F, payload, n + len)
    }

    #[test]
    fn encoded_frames_decode_at_every_length_form() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = binary(3, &data);
            let (fin, op, payload, used) = decode_client(&frame);
            assert!(fin);
            assert_eq!(op, OP_BINARY);
            assert_eq!(payload[0], 3);
            assert_eq!(&payload[1..], &data[..]);
            assert_eq!(used, frame.len());
        }
    }

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// The writer may run before anyone writes (another worker picks it up at once):
    /// it must wait for the first write, not conclude that nobody will ever write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_starts_first_still_delivers_the_first_write() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (outbox, tx) = Outbox::new();
        let writer = tokio::spawn(run_writer(ours, outbox, CancellationToken::new(), None));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !writer.is_finished(),
            "the writer gave up before the first write"
        );
        std::future::poll_fn(|cx| tx.poll_append(cx, STDIN_CHANNEL, b"\0"))
            .await
            .unwrap();
        let mut frame = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(10), theirs.read(&mut frame))
            .await
            .expect("the first write never reached the socket")
            .unwrap();
        assert_eq!(decode_client(&frame[..n]).2, vec![STDIN_CHANNEL, 0]);
        drop(tx);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn appends_coalesce_into_one_frame_and_keep_order() {
        let (outbox, tx) = Outbox::new();
        let mut cx = noop_cx();
        assert!(matches!(
            tx.poll_append(&mut cx, 0, b"hello "),
            Poll::Ready(Ok(6))
        ));
        assert!(matches!(
            tx.poll_append(&mut cx, 0, b"world"),
            Poll::Ready(Ok(5))
        ));
        tx.push(binary(255, &[0])).unwrap();
        assert!(matches!(
            tx.poll_append(&mut cx, 0, b"!"),
            Poll::Ready(Ok(1))
        ));
        let frames: Vec<_> = outbox.take().await.unwrap().into_iter().collect();
        let decoded: Vec<Vec<u8>> = frames.iter().map(|f| decode_client(f).2).collect();
        assert_eq!(
            decoded,
            vec![b"\0hello world".to_vec(), vec![255, 0], b"\0!".to_vec()]
        );
        drop(tx);
        assert!(outbox.take().await.is_none());
    }

    #[tokio::test]
    async fn a_full_outbox_holds_writers_back() {
        let (outbox, tx) = Outbox::new();
        let mut cx = noop_cx();
        let big = vec![7u8; 300_000];
        let mut accepted = 0;
        while let Poll::Ready(Ok(n)) = tx.poll_append(&mut cx, 0, &big) {
            assert!(n > 0);
            accepted += n;
        }
        assert!((OUTBOX_LIMIT..OUTBOX_LIMIT + MAX_DATA_FRAME).contains(&accepted));
        let frames = outbox.take().await.unwrap();
        let sizes: Vec<usize> = frames.iter().map(|f| decode_client(f).2.len()).collect();
        assert!(sizes.iter().all(|&n| n <= MAX_DATA_FRAME), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), accepted + sizes.len());
        assert!(matches!(
            tx.poll_append(&mut cx, 0, b"more"),
            Poll::Ready(Ok(4))
        ));
        tx.close(1000);
        assert!(matches!(
            tx.poll_append(&mut cx, 0, b"x"),
            Poll::Ready(Err(_))
        ));
    }

    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { FIN } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 65535 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn reads_messages_fragments_and_control_frames() {
        let big: Vec<u8> = (0..300_000).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        wire.extend(server_frame(true, OP_BINARY, &[1]));
        wire.extend(server_frame(true, OP_BINARY, &big));
        wire.extend(server_frame(false, OP_BINARY, b"ab"));
        wire.extend(server_frame(true, OP_PING, b"p"));
        wire.extend(server_frame(true, OP_CONTINUATION, b"cd"));
        wire.extend(server_frame(true, OP_TEXT, b"t"));
        wire.extend(server_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        // Delivered in awkward pieces.
        let (mut w, r) = tokio::io::duplex(1000);
        tokio::spawn(async move {
            for piece in wire.chunks(777) {
                w.write_all(piece).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(r);
        let mut got = Vec::new();
        while let Some(m) = reader.next().await.unwrap() {
            got.push(m);
        }
        assert_eq!(
            got,
            vec![
                Incoming::Binary(Bytes::from_static(&[1])),
                Incoming::Binary(Bytes::from(big)),
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Binary(Bytes::from_static(b"abcd")),
                Incoming::Text(Bytes::from_static(b"t")),
                Incoming::Close(Some(1000)),
            ]
        );
    }

    #[tokio::test]
    async fn refuses_masked_server_frames() {
        let mut f = server_frame(true, OP_BINARY, b"x");
        f[1] |= MASKED;
        let mut reader = FrameReader::new(&f[..]);
        assert!(reader.next().await.is_err());
    }
}
