//! The scp connection: buffered stdin/stdout with the protocol's small vocabulary —
//! the "\0" acknowledgement, `\x01scp: message\n` errors, reading the peer's reply.

use std::io::{self, BufReader, BufWriter, Read, Write};

use crate::sys::StdFd;

/// How far scp's buffers go: control lines are read into 2048 bytes, as OpenSSH does.
pub const MAX_LINE: usize = 2048;

/// An early end of the program with this exit status (OpenSSH's exit() calls).
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Exit(u8),
}

pub struct Wire<R: Read = StdFd, W: Write = StdFd> {
    r: BufReader<R>,
    w: BufWriter<W>,
    /// Errors reported so far; the exit status is 1 when any.
    pub errs: u32,
}

impl Wire {
    pub fn stdio() -> Wire {
        Wire::new(StdFd::stdin(), StdFd::stdout())
    }
}

impl<R: Read, W: Write> Wire<R, W> {
    pub fn new(r: R, w: W) -> Self {
        Wire {
            r: BufReader::with_capacity(128 * 1024, r),
            w: BufWriter::with_capacity(128 * 1024, w),
            errs: 0,
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Writes and flushes (the peer waits for every record before answering).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.w
            .write_all(bytes)
            .and_then(|()| self.w.flush())
            .map_err(|_| Stop::Exit(1))
    }

    /// Writes without flushing (file data, flushed before the next read).
    pub fn send_data(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.w.write_all(bytes).map_err(|_| Stop::Exit(1))
    }

    pub fn ack(&mut self) -> Result<(), Stop> {
        self.send(b"\0")
    }

    /// OpenSSH's run_err on the remote side: count it and tell the peer.
    pub fn run_err(&mut self, msg: &[u8]) -> Result<(), Stop> {
        self.errs += 1;
        let mut m = Vec::with_capacity(msg.len() + 8);
        m.extend_from_slice(b"\x01scp: ");
        m.extend_from_slice(msg);
        m.push(b'\n');
        self.send(&m)
    }

    /// One byte, or None at EOF.
    pub fn read_byte(&mut self) -> Result<Option<u8>, Stop> {
        self.w.flush().map_err(|_| Stop::Exit(1))?;
        let mut b = [0u8];
        loop {
            match self.r.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(None),
            }
        }
    }

    /// Up to `buf.len()` bytes of file data (0 only at EOF).
    pub fn read_some(&mut self, buf: &mut [u8]) -> usize {
        loop {
            match self.r.read(buf) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return 0,
            }
        }
    }

    /// The peer's reply to a record: Ok(true) for "\0", Ok(false) after an error
    /// message (\x01), exit for a fatal one (\x02), anything else, or EOF — as
    /// OpenSSH's response(). The remote side prints nothing.
    pub fn response(&mut self) -> Result<bool, Stop> {
        let Some(resp) = self.read_byte()? else {
            return Err(Stop::Exit(1));
        };
        if resp == 0 {
            return Ok(true);
        }
        let mut n = 1;
        loop {
            let Some(c) = self.read_byte()? else {
                return Err(Stop::Exit(1));
            };
            n += 1;
            if c == b'\n' || n >= MAX_LINE - 1 {
                break;
            }
        }
        self.errs += 1;
        if resp == 1 {
            Ok(false)
        } else {
            Err(Stop::Exit(1))
        }
    }
}
