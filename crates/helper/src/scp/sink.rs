//! `scp -t`: receiving files (and with -r, trees) from the peer, as OpenSSH's sink():
//! read a control record (`T`, `C`, `D`, `E`, or an error line), act, acknowledge.
//!
//! Control lines are read into a bounded buffer (2048 bytes, as OpenSSH) and names in
//! `C`/`D` records must be a single component: no "/", not "." or "..", not empty —
//! the peer cannot write outside the target.

use std::io::{self, Write};

use super::wire::MAX_LINE;
use super::{Options, Stop, Wire};
use crate::sys;

const COPY_BUFLEN: usize = 16384;

fn errtext(name: &[u8], e: &io::Error) -> Vec<u8> {
    [name, b": ", sys::strerror(sys::errno(e)).as_bytes()].concat()
}

/// strtoull after a leading digit was checked: saturates at u64::MAX on overflow.
fn parse_ull(s: &[u8], pos: &mut usize) -> u64 {
    let mut v: u64 = 0;
    let mut overflow = false;
    while let Some(&c) = s.get(*pos).filter(|c| c.is_ascii_digit()) {
        match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
        {
            Some(n) => v = n,
            None => overflow = true,
        }
        *pos += 1;
    }
    if overflow { u64::MAX } else { v }
}

/// strtol(3): optional whitespace and sign, digits; no digits leaves `pos` unchanged.
fn parse_long(s: &[u8], pos: &mut usize) -> i64 {
    let mut p = *pos;
    while s
        .get(p)
        .is_some_and(|&c| c == b' ' || (b'\t'..=b'\r').contains(&c))
    {
        p += 1;
    }
    let neg = match s.get(p) {
        Some(b'-') => {
            p += 1;
            true
        }
        Some(b'+') => {
            p += 1;
            false
        }
        _ => false,
    };
    let digits_start = p;
    let mut v: i64 = 0;
    while let Some(&c) = s.get(p).filter(|c| c.is_ascii_digit()) {
        let d = i64::from(c - b'0');
        v = v
            .saturating_mul(10)
            .saturating_add(if neg { -d } else { d });
        p += 1;
    }
    if p == digits_start {
        return 0;
    }
    *pos = p;
    v
}

struct Sink<'a> {
    wire: &'a mut Wire,
    recursive: bool,
    preserve: bool,
    target_should_be_dir: bool,
    /// The umask in force (cleared for the process with -p, as OpenSSH does).
    mask: u32,
    buf: Vec<u8>,
}

pub fn sink_main(wire: &mut Wire, opts: &Options) -> Result<(), Stop> {
    let mask = sys::umask(0);
    if !opts.preserve {
        sys::umask(mask);
    }
    if opts.paths.len() != 1 {
        wire.run_err(b"ambiguous target")?;
        return Err(Stop::Exit(1));
    }
    let mut s = Sink {
        wire,
        recursive: opts.recursive,
        preserve: opts.preserve,
        target_should_be_dir: opts.target_should_be_dir,
        mask,
        buf: Vec::new(),
    };
    s.sink(&opts.paths[0])
}

/// The times of a `T` record: ((atime sec, usec), (mtime sec, usec)).
type Times = ((i64, i64), (i64, i64));

impl Sink<'_> {
    /// A protocol error: tell the peer and stop (OpenSSH's SCREWUP).
    fn screwup(&mut self, why: &str) -> Stop {
        let _ = self
            .wire
            .run_err(format!("protocol error: {why}").as_bytes());
        Stop::Exit(1)
    }

    /// One control line without its newline, None at a clean EOF (before a record).
    fn read_line(&mut self) -> Result<Option<(Vec<u8>, bool)>, Stop> {
        let Some(first) = self.wire.read_byte()? else {
            return Ok(None);
        };
        let mut line = vec![first];
        if first == b'\n' {
            return Err(self.screwup("unexpected <newline>"));
        }
        let mut newline = false;
        while line.len() < MAX_LINE - 1 {
            let Some(c) = self.wire.read_byte()? else {
                return Err(self.screwup("lost connection"));
            };
            if c == b'\n' {
                newline = true;
                break;
            }
            line.push(c);
        }
        Ok(Some((line, newline)))
    }

    fn sink(&mut self, targ: &[u8]) -> Result<(), Stop> {
        if self.target_should_be_dir {
            let err = match sys::stat(targ) {
                Ok(st) if st.is_dir() => None,
                Ok(_) => Some(io::Error::from_raw_os_error(libc::ENOTDIR)),
                Err(e) => Some(e),
            };
            if let Some(e) = err {
                self.wire.run_err(&errtext(targ, &e))?;
                return Err(Stop::Exit(1));
            }
        }
        self.wire.ack()?;
        let targisdir = sys::stat(targ).is_ok_and(|st| st.is_dir());
        let mut times: Option<Times> = None;
        let mut first = true;
        loop {
            let Some((line, _)) = self.read_line()? else {
                return Ok(());
            };
            let was_first = first;
            first = false;
            match line[0] {
                1 | 2 => {
                    // An error from the peer; on the remote side it is not printed.
                    if line[0] == 2 {
                        return Err(Stop::Exit(1));
                    }
                    self.wire.errs += 1;
                    continue;
                }
                b'E' => {
                    self.wire.ack()?;
                    return Ok(());
                }
                b'T' => {
                    times = self.parse_times(&line)?;
                    self.wire.ack()?;
                    continue;
                }
                b'C' | b'D' => {}
                _ => {
                    // e.g. a shell's "No match." before scp even ran.
                    if was_first {
                        self.wire.run_err(&line)?;
                        return Err(Stop::Exit(1));
                    }
                    return Err(self.screwup("expected control record"));
                }
            }
            let (mut mode, size, name) = self.parse_record(&line)?;
            if !self.preserve {
                mode &= !self.mask;
            }
            let np = if targisdir {
                let mut p = targ.to_vec();
                if targ != b"/" {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            } else {
                targ.to_vec()
            };
            let existing = sys::stat(&np).ok();
            if line[0] == b'D' {
                if !self.recursive {
                    return Err(self.screwup("received directory without -r"));
                }
                let mut mod_flag = self.preserve;
                match existing {
                    Some(st) if !st.is_dir() => {
                        let e = io::Error::from_raw_os_error(libc::ENOTDIR);
                        self.wire.run_err(&errtext(&np, &e))?;
                        continue;
                    }
                    Some(_) => {
                        if self.preserve {
                            let _ = sys::chmod(&np, mode);
                        }
                    }
                    None => {
                        // Even from a read-only source directory we must be able to
                        // write into the copy; the real mode is set afterwards.
                        mod_flag = true;
                        if let Err(e) = sys::mkdir(&np, mode | 0o700) {
                            self.wire.run_err(&errtext(&np, &e))?;
                            continue;
                        }
                    }
                }
                self.sink(&np)?;
                if let Some((atime, mtime)) = times.take() {
                    let _ = sys::utimes(&np, atime, mtime);
                }
                if mod_flag {
                    let _ = sys::chmod(&np, mode);
                }
                continue;
            }
            self.receive_file(&np, mode, size, existing, &mut times)?;
        }
    }

    /// A `T` record: "Tmtime 0 atime 0". Out-of-range seconds disable setting times.
    fn parse_times(&mut self, line: &[u8]) -> Result<Option<Times>, Stop> {
        let mut pos = 1;
        let mut ok = true;
        if !line.get(pos).is_some_and(u8::is_ascii_digit) {
            return Err(self.screwup("mtime.sec not present"));
        }
        let msec = parse_ull(line, &mut pos);
        if line.get(pos) != Some(&b' ') {
            return Err(self.screwup("mtime.sec not delimited"));
        }
        pos += 1;
        ok &= msec <= i64::MAX as u64;
        let musec = parse_long(line, &mut pos);
        if line.get(pos) != Some(&b' ') || !(0..=999_999).contains(&musec) {
            return Err(self.screwup("mtime.usec not delimited"));
        }
        pos += 1;
        if !line.get(pos).is_some_and(u8::is_ascii_digit) {
            return Err(self.screwup("atime.sec not present"));
        }
        let asec = parse_ull(line, &mut pos);
        if line.get(pos) != Some(&b' ') {
            return Err(self.screwup("atime.sec not delimited"));
        }
        pos += 1;
        ok &= asec <= i64::MAX as u64;
        let ausec = parse_long(line, &mut pos);
        if pos != line.len() || !(0..=999_999).contains(&ausec) {
            return Err(self.screwup("atime.usec not delimited"));
        }
        Ok(ok.then_some(((asec as i64, ausec), (msec as i64, musec))))
    }

    /// A `C`/`D` record: "Cmmmm size name" → (mode, size, name).
    fn parse_record<'l>(&mut self, line: &'l [u8]) -> Result<(u32, u64, &'l [u8]), Stop> {
        let mut mode = 0u32;
        for i in 1..5 {
            match line.get(i) {
                Some(&c @ b'0'..=b'7') => mode = mode << 3 | u32::from(c - b'0'),
                _ => {
                    return Err(self.screwup("bad mode"));
                }
            }
        }
        let mut pos = 5;
        if line.get(pos) != Some(&b' ') {
            return Err(self.screwup("mode not delimited"));
        }
        pos += 1;
        if !line.get(pos).is_some_and(u8::is_ascii_digit) {
            return Err(self.screwup("size not present"));
        }
        let size = parse_ull(line, &mut pos);
        if line.get(pos) != Some(&b' ') {
            return Err(self.screwup("size not delimited"));
        }
        pos += 1;
        if size > i64::MAX as u64 {
            return Err(self.screwup("size out of range"));
        }
        let name = &line[pos..];
        // A NUL ends the name for OpenSSH's C string handling.
        let name = match name.iter().position(|&b| b == 0) {
            Some(i) => &name[..i],
            None => name,
        };
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            let msg = [b"error: unexpected filename: ", name].concat();
            self.wire.run_err(&msg)?;
            return Err(Stop::Exit(1));
        }
        Ok((mode, size, name))
    }

    fn receive_file(
        &mut self,
        np: &[u8],
        mode: u32,
        size: u64,
        existing: Option<sys::Stat>,
        times: &mut Option<Times>,
    ) -> Result<(), Stop> {
        let omode = mode;
        let mode = mode | 0o200;
        let file = match sys::open(np, libc::O_WRONLY | libc::O_CREAT, mode) {
            Ok(f) => f,
            Err(e) => return self.wire.run_err(&errtext(np, &e)),
        };
        self.wire.ack()?;
        let unit = sys::fstat(&file)
            .map_or(COPY_BUFLEN, |st| st.blksize.max(0) as usize)
            .div_ceil(COPY_BUFLEN)
            .max(1)
            * COPY_BUFLEN;
        let unit = unit.max(128 * 1024);
        self.buf.resize(unit, 0);
        // The first error is reported after the data (reporting earlier would
        // desynchronise the peer, which is still sending); reading goes on.
        let mut noted: Option<Vec<u8>> = None;
        let mut wrerr = false;
        let mut off = 0u64;
        while off < size {
            let want = (size - off).min(unit as u64) as usize;
            let mut got = 0;
            while got < want {
                let n = self.wire.read_some(&mut self.buf[got..want]);
                if n == 0 {
                    // The peer went away mid-file; OpenSSH reports EPIPE's text.
                    let msg = sys::strerror(libc::EPIPE);
                    self.wire.run_err(msg.as_bytes())?;
                    return Err(Stop::Exit(1));
                }
                got += n;
            }
            if !wrerr {
                // Sequential writes, not pwrite: the target may be a FIFO or a device.
                if let Err(e) = (&file).write_all(&self.buf[..want]) {
                    noted.get_or_insert_with(|| errtext(np, &e));
                    wrerr = true;
                }
            }
            off += want as u64;
        }
        let mut note = |msg: Vec<u8>, errs: &mut u32| {
            *errs += 1;
            noted.get_or_insert(msg);
        };
        if wrerr {
            self.wire.errs += 1;
        }
        let exists = existing.is_some();
        if !wrerr
            && existing.is_none_or(|st| st.is_reg())
            && let Err(e) = sys::ftruncate(&file, size as i64)
        {
            let e = sys::strerror(sys::errno(&e));
            note(
                [np, b": truncate: ", e.as_bytes()].concat(),
                &mut self.wire.errs,
            );
        }
        let set_mode = if self.preserve {
            (exists || omode != mode).then_some(omode)
        } else {
            (!exists && omode != mode).then_some(omode & !self.mask)
        };
        if let Some(m) = set_mode
            && let Err(e) = sys::fchmod(&file, m)
        {
            let e = sys::strerror(sys::errno(&e));
            note(
                [np, b": set mode: ", e.as_bytes()].concat(),
                &mut self.wire.errs,
            );
        }
        if let Err(e) = sys::close(file) {
            let e = sys::strerror(sys::errno(&e));
            note(
                [np, b": close: ", e.as_bytes()].concat(),
                &mut self.wire.errs,
            );
        }
        self.wire.response()?;
        // As OpenSSH: times are applied (and used up) only if the data was written.
        if !wrerr
            && let Some((atime, mtime)) = times.take()
            && let Err(e) = sys::utimes(np, atime, mtime)
        {
            let e = sys::strerror(sys::errno(&e));
            note(
                [np, b": set times: ", e.as_bytes()].concat(),
                &mut self.wire.errs,
            );
        }
        match noted {
            None => self.wire.ack(),
            Some(msg) => self.wire.run_err(&msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_like_strtoull_and_strtol() {
        let mut p = 0;
        assert_eq!(parse_ull(b"123 x", &mut p), 123);
        assert_eq!(p, 3);
        let mut p = 0;
        assert_eq!(parse_ull(b"99999999999999999999999", &mut p), u64::MAX);
        let mut p = 0;
        assert_eq!(parse_long(b"  -5 ", &mut p), -5);
        assert_eq!(p, 4);
        let mut p = 0;
        assert_eq!(parse_long(b" x", &mut p), 0);
        assert_eq!(p, 0);
    }
}
