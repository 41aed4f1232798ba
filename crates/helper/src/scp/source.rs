//! `scp -f`: sending files (and with -r, trees) to the peer, as OpenSSH's source()
//! and rsource(): optional `T` (times) record, then `C`/`D` records, data, `E`.

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;

use super::vis::strnvis;
use super::{Options, Stop, Wire};
use crate::sys;

/// OpenSSH's COPY_BUFLEN: the I/O unit is st_blksize rounded up to a multiple of it.
const COPY_BUFLEN: usize = 16384;
const PATH_MAX: usize = 4096;
/// S_ISUID|S_ISGID|S_IRWXU|S_IRWXG|S_IRWXO: the sticky bit is not sent.
const FILEMODEMASK: u32 = 0o6777;

fn errtext(name: &[u8], e: &io::Error) -> Vec<u8> {
    [name, b": ", sys::strerror(sys::errno(e)).as_bytes()].concat()
}

fn last_component(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

pub struct Source<'a> {
    wire: &'a mut Wire,
    recursive: bool,
    preserve: bool,
    buf: Vec<u8>,
}

impl<'a> Source<'a> {
    pub fn new(wire: &'a mut Wire, opts: &Options) -> Self {
        Source {
            wire,
            recursive: opts.recursive,
            preserve: opts.preserve,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, names: &[Vec<u8>]) -> Result<(), Stop> {
        for name in names {
            self.one(name)?;
        }
        Ok(())
    }

    fn times(&mut self, mtime: i64, atime: i64) -> Result<bool, Stop> {
        let rec = format!("T{} 0 {} 0\n", mtime.max(0), atime.max(0));
        self.wire.send(rec.as_bytes())?;
        self.wire.response()
    }

    fn one(&mut self, name: &[u8]) -> Result<(), Stop> {
        let mut name = name;
        while name.len() > 1 && name.last() == Some(&b'/') {
            name = &name[..name.len() - 1];
        }
        // O_NONBLOCK so a FIFO does not hang the open; cleared below for the reads.
        let file = match sys::open(name, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(f) => f,
            Err(e) => return self.wire.run_err(&errtext(name, &e)),
        };
        let encoded;
        let name: &[u8] = if name.contains(&b'\n') {
            encoded = strnvis(name);
            &encoded
        } else {
            name
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.wire.run_err(&errtext(name, &e)),
        };
        if meta.size() > i64::MAX as u64 {
            return self.wire.run_err(&[name, b": Negative file size"].concat());
        }
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl != -1 {
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        let ft = meta.file_type();
        if ft.is_dir() && self.recursive {
            drop(file);
            return self.directory(name, &meta);
        }
        if !ft.is_file() {
            return self.wire.run_err(&[name, b": not a regular file"].concat());
        }
        let last = last_component(name);
        if self.preserve && !self.times(meta.mtime(), meta.atime())? {
            return Ok(());
        }
        let mut rec = format!("C{:04o} {} ", meta.mode() & FILEMODEMASK, meta.size()).into_bytes();
        rec.extend_from_slice(last);
        rec.push(b'\n');
        self.wire.send(&rec)?;
        if !self.wire.response()? {
            return Ok(());
        }
        let unit = (meta.blksize() as usize).div_ceil(COPY_BUFLEN).max(1) * COPY_BUFLEN;
        self.buf.resize(unit, 0);
        let size = meta.size();
        let mut file = file;
        let mut sent = 0u64;
        let mut haderr: Option<io::Error> = None;
        while sent < size {
            let amt = (size - sent).min(unit as u64) as usize;
            let chunk = &mut self.buf[..amt];
            if haderr.is_none() {
                // Fill the chunk; a file that shrank reads short, which OpenSSH's
                // atomicio reports as EPIPE.
                let mut got = 0;
                while got < amt {
                    match file.read(&mut chunk[got..]) {
                        Ok(0) => {
                            haderr = Some(io::Error::from_raw_os_error(libc::EPIPE));
                            break;
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            haderr = Some(e);
                            break;
                        }
                    }
                }
                chunk[got..].fill(0);
            } else {
                // Keep sending (zeros) after an error, so the peer stays in sync.
                chunk.fill(0);
            }
            self.wire.send_data(chunk)?;
            sent += amt as u64;
        }
        let closed = sys::close(file);
        if haderr.is_none()
            && let Err(e) = closed
        {
            haderr = Some(e);
        }
        match haderr {
            None => self.wire.send(b"\0")?,
            Some(e) => self.wire.run_err(&errtext(name, &e))?,
        }
        self.wire.response()?;
        Ok(())
    }

    fn directory(&mut self, name: &[u8], meta: &std::fs::Metadata) -> Result<(), Stop> {
        let mut dir = match sys::Dir::open(name) {
            Ok(d) => d,
            Err(e) => return self.wire.run_err(&errtext(name, &e)),
        };
        if self.preserve && !self.times(meta.mtime(), meta.atime())? {
            return Ok(());
        }
        let last = last_component(name);
        let mut rec = format!("D{:04o} 0 ", meta.mode() & FILEMODEMASK).into_bytes();
        rec.extend_from_slice(&last[..last.len().min(1024)]);
        rec.push(b'\n');
        self.wire.send(&rec)?;
        if !self.wire.response()? {
            return Ok(());
        }
        while let Some((entry, ino)) = dir.next_entry() {
            if ino == 0 || entry == b"." || entry == b".." {
                continue;
            }
            if name.len() + 1 + entry.len() >= PATH_MAX - 1 {
                let msg = [name, b"/", &entry, b": name too long"].concat();
                self.wire.run_err(&msg)?;
                continue;
            }
            let path = [name, b"/", &entry].concat();
            self.one(&path)?;
        }
        drop(dir);
        self.wire.send(b"E\n")?;
        self.wire.response()?;
        Ok(())
    }
}
