//! `ssh-gateway-helper sftp-server [-d start_dir] [-u umask]`: an SFTP v3 server on
//! stdin/stdout, compatible with OpenSSH's sftp-server.

pub mod attrs;
pub mod handles;
pub mod longname;
pub mod names;
pub mod packet;
pub mod realpath;
pub mod server;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::ExitCode;

use packet::{MAX_MSG_LENGTH, ParseError, split_frame};
use server::{Fatal, Server};

const USAGE: &str = "usage: ssh-gateway-helper sftp-server [-d start_directory] [-u umask]";

/// Input is read in chunks this large (clients pipeline many requests).
const READ_CHUNK: usize = 256 * 1024;
/// Pending output is written once it reaches this size, even if more requests wait,
/// so a long burst of reads does not buffer without bound.
const OUTPUT_HIGH_WATER: usize = 1024 * 1024;

#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    start_dir: Option<Vec<u8>>,
    umask: Option<u32>,
}

fn parse_umask(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let v = u32::from_str_radix(std::str::from_utf8(s).ok()?, 8).ok()?;
    (v <= 0o777).then_some(v)
}

fn parse_args(args: &[OsString]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let a = arg.as_bytes();
        i += 1;
        if a == b"--" {
            break;
        }
        let Some(flag) = a.strip_prefix(b"-").filter(|f| !f.is_empty()) else {
            return Err(format!("unexpected argument {:?}", arg));
        };
        let (opt, inline) = (flag[0], &flag[1..]);
        let value = if !inline.is_empty() {
            inline.to_vec()
        } else {
            let v = args
                .get(i)
                .ok_or_else(|| format!("option -{} needs a value", opt as char))?;
            i += 1;
            v.as_bytes().to_vec()
        };
        match opt {
            b'd' => opts.start_dir = Some(value),
            b'u' => {
                let m = parse_umask(&value).ok_or_else(|| {
                    format!("Invalid umask \"{}\"", String::from_utf8_lossy(&value))
                })?;
                opts.umask = Some(m);
            }
            _ => return Err(format!("unknown option -{}", opt as char)),
        }
    }
    if i < args.len() {
        return Err("unexpected arguments".into());
    }
    Ok(opts)
}

/// -d's expansions, as OpenSSH's sftp-server: a leading "~" or "~/", then %d (home),
/// %u (user name), %U (uid) and %%.
fn expand_start_dir(dir: &[u8]) -> Vec<u8> {
    let names = names::Names::load();
    let uid = sys::getuid();
    let user = names.user(uid);
    let home: Vec<u8> = user
        .map(|u| u.home.clone())
        .or_else(|| std::env::var_os("HOME").map(OsString::into_vec))
        .unwrap_or_else(|| b"/".to_vec());
    let uname: Vec<u8> = user.map_or_else(|| uid.to_string().into_bytes(), |u| u.name.clone());
    let dir = if dir == b"~" {
        home.clone()
    } else if let Some(rest) = dir.strip_prefix(b"~/") {
        [&home[..], b"/", rest].concat()
    } else {
        dir.to_vec()
    };
    let mut out = Vec::with_capacity(dir.len());
    let mut it = dir.iter();
    while let Some(&b) = it.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'd') => out.extend_from_slice(&home),
            Some(b'u') => out.extend_from_slice(&uname),
            Some(b'U') => out.extend_from_slice(uid.to_string().as_bytes()),
            Some(b'%') => out.push(b'%'),
            Some(&c) => out.extend_from_slice(&[b'%', c]),
            None => out.push(b'%'),
        }
    }
    out
}

use crate::sys;

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// The client closed its side (or stopped reading): a normal end.
    Eof,
    Fatal(Fatal),
    /// EOF in the middle of a packet.
    Truncated(usize),
    Io(io::Error),
}

impl End {
    fn exit_code(&self) -> u8 {
        match self {
            End::Eof => 0,
            // OpenSSH exits 11 for an oversized packet and 255 for other fatal errors.
            End::Fatal(Fatal::Parse(ParseError::TooLong(_))) => 11,
            End::Fatal(_) | End::Truncated(_) => 255,
            End::Io(_) => 1,
        }
    }
}

/// Serves requests from `input` until EOF, writing replies to `output`.
///
/// Requests are processed as soon as they are complete; replies are gathered and
/// written when no further complete request is waiting (before blocking on input,
/// so the client never waits for a reply we are holding) or when they reach
/// [`OUTPUT_HIGH_WATER`].
pub fn serve(input: &mut impl Read, output: &mut impl Write) -> End {
    let mut server = Server::new();
    // inbuf[start..end] is unconsumed input. After compaction the tail is at most one
    // incomplete frame, so a whole READ_CHUNK always fits behind it.
    let mut inbuf = vec![0u8; READ_CHUNK + MAX_MSG_LENGTH + 4];
    let (mut start, mut end) = (0, 0);
    let mut out: Vec<u8> = Vec::with_capacity(OUTPUT_HIGH_WATER + MAX_MSG_LENGTH);
    loop {
        // Serve every complete request already buffered.
        loop {
            match split_frame(&inbuf[start..end]) {
                Err(e) => {
                    let _ = output.write_all(&out);
                    return End::Fatal(Fatal::Parse(e));
                }
                Ok(None) => break,
                Ok(Some((payload, consumed))) => {
                    if let Err(e) = server.process(payload, &mut out) {
                        let _ = output.write_all(&out);
                        return End::Fatal(e);
                    }
                    start += consumed;
                    if out.len() >= OUTPUT_HIGH_WATER
                        && let Err(e) = write_out(output, &mut out)
                    {
                        return e;
                    }
                }
            }
        }
        if let Err(e) = write_out(output, &mut out) {
            return e;
        }
        inbuf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        let n = loop {
            match input.read(&mut inbuf[end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return End::Io(e),
            }
        };
        if n == 0 {
            return if end == 0 {
                End::Eof
            } else {
                End::Truncated(end)
            };
        }
        end += n;
    }
}

fn write_out(output: &mut impl Write, out: &mut Vec<u8>) -> Result<(), End> {
    if out.is_empty() {
        return Ok(());
    }
    let r = output.write_all(out).and_then(|()| output.flush());
    out.clear();
    match r {
        Ok(()) => Ok(()),
        // The client went away: like OpenSSH, that is a normal end.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(End::Eof),
        Err(e) => Err(End::Io(e)),
    }
}

pub fn main(args: &[OsString]) -> ExitCode {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ssh-gateway-helper sftp-server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(mask) = opts.umask {
        sys::umask(mask);
    }
    if let Some(dir) = &opts.start_dir {
        let dir = expand_start_dir(dir);
        // As OpenSSH: a start directory that cannot be entered is reported, not fatal.
        if let Err(e) = sys::chdir(&dir) {
            eprintln!(
                "ssh-gateway-helper sftp-server: chdir to \"{}\" failed: {}",
                String::from_utf8_lossy(&dir),
                sys::strerror(sys::errno(&e))
            );
        }
    }
    // Raw descriptors, unbuffered: serve() does its own buffering in large chunks.
    let end = serve(&mut sys::StdFd::stdin(), &mut sys::StdFd::stdout());
    match &end {
        End::Eof => {}
        End::Fatal(e) => eprintln!("ssh-gateway-helper sftp-server: {e}"),
        End::Truncated(n) => eprintln!(
            "ssh-gateway-helper sftp-server: bad message: input ended inside a packet ({n} bytes pending)"
        ),
        End::Io(e) => eprintln!("ssh-gateway-helper sftp-server: {e}"),
    }
    ExitCode::from(end.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_parse_like_getopt() {
        assert_eq!(parse_args(&[]), Ok(Options::default()));
        assert_eq!(
            parse_args(&os(&["-d", "/tmp", "-u022"])),
            Ok(Options {
                start_dir: Some(b"/tmp".to_vec()),
                umask: Some(0o22)
            })
        );
        assert!(parse_args(&os(&["-u", "999"])).is_err());
        assert!(parse_args(&os(&["-x"])).is_err());
        assert!(parse_args(&os(&["-d"])).is_err());
        assert!(parse_args(&os(&["stray"])).is_err());
    }

    #[test]
    fn start_dir_expansions() {
        let uid = sys::getuid().to_string();
        assert_eq!(
            expand_start_dir(b"/x/%U/%%/%q"),
            format!("/x/{uid}/%/%q").into_bytes()
        );
    }
}
