//! A minimal SFTP client speaking raw packets to a server process, for what the
//! `sftp` program cannot express (offsets past 4 GiB, longnames, malformed input).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use sgw_helper::sftp::packet::{self, put_string, put_u32, put_u64};

pub struct Raw {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    next_id: u32,
}

/// A decoded reply, with handles kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(u32, String),
    Handle(Vec<u8>),
    Data(Vec<u8>),
    /// (name, longname, attrs bytes)
    Name(Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>),
    Attrs(Vec<u8>),
    Extended(Vec<u8>),
    Other(u8, Vec<u8>),
}

struct Cur<'a>(&'a [u8]);
impl Cur<'_> {
    fn u32(&mut self) -> u32 {
        let (a, b) = self.0.split_at(4);
        self.0 = b;
        u32::from_be_bytes(a.try_into().unwrap())
    }
    fn string(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    /// The raw bytes of an ATTRS structure.
    fn attrs(&mut self) -> Vec<u8> {
        let start = self.0;
        let flags = self.u32();
        let mut n = 4;
        for (bit, len) in [(1, 8), (2, 8), (4, 4), (8, 8)] {
            if flags & bit != 0 {
                n += len;
            }
        }
        self.0 = &start[n..];
        start[..n].to_vec()
    }
}

impl Raw {
    pub fn spawn(argv: &[&str], cwd: &Path) -> Raw {
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        Raw {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stdin.as_mut().unwrap().write_all(bytes);
    }

    pub fn send(&mut self, kind: u8, body: &[u8]) {
        let mut m = Vec::new();
        packet::message(&mut m, kind, |o| o.extend_from_slice(body));
        self.send_raw(&m);
    }

    /// The next reply packet: (type, payload after the type), None at EOF.
    pub fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stdout.read_exact(&mut body).ok()?;
        let kind = body.remove(0);
        Some((kind, body))
    }

    pub fn init(&mut self) -> Vec<(String, String)> {
        self.send(packet::FXP_INIT, &3u32.to_be_bytes());
        let (kind, body) = self.recv().expect("VERSION");
        assert_eq!(kind, packet::FXP_VERSION);
        let mut c = Cur(&body);
        assert_eq!(c.u32(), 3);
        let mut ext = Vec::new();
        while !c.0.is_empty() {
            let n = String::from_utf8(c.string()).unwrap();
            let v = String::from_utf8(c.string()).unwrap();
            ext.push((n, v));
        }
        ext
    }

    /// Sends a request (the id is prepended to `body`) and decodes its reply.
    pub fn call(&mut self, kind: u8, body: &[u8]) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let mut b = id.to_be_bytes().to_vec();
        b.extend_from_slice(body);
        self.send(kind, &b);
        let (rk, payload) = self.recv().expect("reply");
        let mut c = Cur(&payload);
        assert_eq!(c.u32(), id, "reply id");
        match rk {
            packet::FXP_STATUS => {
                let code = c.u32();
                let msg = String::from_utf8(c.string()).unwrap();
                Reply::Status(code, msg)
            }
            packet::FXP_HANDLE => Reply::Handle(c.string()),
            packet::FXP_DATA => Reply::Data(c.string()),
            packet::FXP_ATTRS => Reply::Attrs(c.attrs()),
            packet::FXP_NAME => {
                let n = c.u32();
                let mut v = Vec::new();
                for _ in 0..n {
                    let name = c.string();
                    let long = c.string();
                    let attrs = c.attrs();
                    v.push((name, long, attrs));
                }
                Reply::Name(v)
            }
            packet::FXP_EXTENDED_REPLY => Reply::Extended(c.0.to_vec()),
            k => Reply::Other(k, c.0.to_vec()),
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Closes our side and collects (exit code, stderr).
    pub fn finish(mut self) -> (Option<i32>, String) {
        self.close_stdin();
        let mut rest = Vec::new();
        let _ = self.stdout.read_to_end(&mut rest);
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub fn path_body(p: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_string(&mut b, p);
    b
}

pub fn open_body(p: &[u8], pflags: u32) -> Vec<u8> {
    let mut b = path_body(p);
    put_u32(&mut b, pflags);
    put_u32(&mut b, 0);
    b
}

pub fn read_body(h: &[u8], off: u64, len: u32) -> Vec<u8> {
    let mut b = path_body(h);
    put_u64(&mut b, off);
    put_u32(&mut b, len);
    b
}

pub fn write_body(h: &[u8], off: u64, data: &[u8]) -> Vec<u8> {
    let mut b = path_body(h);
    put_u64(&mut b, off);
    put_string(&mut b, data);
    b
}

pub fn extended_body(name: &str, rest: &[u8]) -> Vec<u8> {
    let mut b = path_body(name.as_bytes());
    b.extend_from_slice(rest);
    b
}
