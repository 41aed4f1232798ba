//! `ssh-gateway-helper scp <args>`: the remote side of the legacy (rcp-style) scp
//! protocol that OpenSSH's `scp -O` speaks, as OpenSSH's scp runs it with `-t` (sink,
//! receiving) or `-f` (source, sending).
//!
//! The gateway rewrites a remote command `scp …` into `<helper> scp …`, so the
//! arguments are whatever an OpenSSH client sends: `-t -- /dest`, `-r -p -t -- dir`,
//! `-f -- file`, `-d -t -- dir`, with `-v` accepted and ignored. Errors travel in the
//! protocol (`\x01scp: <message>\n`) with OpenSSH's texts; nothing is printed locally.

mod sink;
mod source;
mod vis;
mod wire;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

pub use wire::{Stop, Wire};

const USAGE: &str = "usage: ssh-gateway-helper scp [-dprv] -f|-t [--] path ...";

#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    from: bool,
    to: bool,
    recursive: bool,
    preserve: bool,
    target_should_be_dir: bool,
    paths: Vec<Vec<u8>>,
}

/// Parses like getopt(3) with scp's option string: clustered flags, "--", and the
/// client-only options that take a value (accepted and ignored).
fn parse_args(args: &[OsString]) -> Result<Options, String> {
    const WITH_VALUE: &[u8] = b"DFJMPScilloX";
    const IGNORED: &[u8] = b"12346ABCOqRsTv";
    let mut o = Options::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let a = arg.as_bytes();
        if a == b"--" {
            i += 1;
            break;
        }
        if a.len() < 2 || a[0] != b'-' {
            break;
        }
        i += 1;
        let mut j = 1;
        while let Some(&c) = a.get(j) {
            j += 1;
            match c {
                b'f' => o.from = true,
                b't' => o.to = true,
                b'r' => o.recursive = true,
                b'p' => o.preserve = true,
                b'd' => o.target_should_be_dir = true,
                c if IGNORED.contains(&c) => {}
                c if WITH_VALUE.contains(&c) => {
                    if j >= a.len() {
                        if args.get(i).is_none() {
                            return Err(format!("option requires an argument -- '{}'", c as char));
                        }
                        i += 1;
                    }
                    break;
                }
                c => return Err(format!("invalid option -- '{}'", c as char)),
            }
        }
    }
    o.paths = args[i.min(args.len())..]
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    Ok(o)
}

pub fn main(args: &[OsString]) -> ExitCode {
    let opts = match parse_args(args) {
        Ok(o) if o.from || o.to => o,
        Ok(_) => {
            eprintln!("{USAGE}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("ssh-gateway-helper scp: {e}\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    let mut wire = Wire::stdio();
    let result = if opts.from {
        // The client speaks first (a "\0" saying it is ready).
        wire.response()
            .and_then(|_| source::Source::new(&mut wire, &opts).send(&opts.paths))
    } else {
        sink::sink_main(&mut wire, &opts)
    };
    let _ = wire.flush();
    match result {
        Ok(()) => ExitCode::from(u8::from(wire.errs != 0)),
        Err(Stop::Exit(code)) => ExitCode::from(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn client_argument_shapes_parse() {
        let o = parse_args(&os(&["-r", "-p", "-t", "--", "dir"])).unwrap();
        assert!(o.to && o.recursive && o.preserve && !o.from);
        assert_eq!(o.paths, vec![b"dir".to_vec()]);
        let o = parse_args(&os(&["-vdt", "--", "-odd name"])).unwrap();
        assert!(o.to && o.target_should_be_dir);
        assert_eq!(o.paths, vec![b"-odd name".to_vec()]);
        let o = parse_args(&os(&["-f", "a", "b"])).unwrap();
        assert!(o.from);
        assert_eq!(o.paths.len(), 2);
        let o = parse_args(&os(&["-l", "100", "-t", "x"])).unwrap();
        assert_eq!(o.paths, vec![b"x".to_vec()]);
        assert!(parse_args(&os(&["-Z"])).is_err());
        assert!(parse_args(&os(&["-t", "-l"])).is_err());
    }
}
