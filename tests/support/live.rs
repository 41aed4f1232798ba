//! A client session held open while the test acts on the gateway: started, seen past
//! login (its remote command printed `started`), then waited for.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Live {
    child: Option<Child>,
    /// Everything after the `started` line, read as it comes.
    rest: Option<mpsc::Receiver<Vec<u8>>>,
    what: &'static str,
}

/// Runs `cmd` (an ssh command line up to the destination) with `script` as its remote
/// command, which must print `started` first, and returns once it has.
pub fn live(mut cmd: Command, script: &str, what: &'static str) -> Live {
    cmd.arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = mpsc::channel();
    let (rest_tx, rest_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = first_tx.send(line);
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        let _ = rest_tx.send(rest);
    });
    let line = first_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_default();
    if line != "started\n" {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "{what} did not start: {line:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Live {
        child: Some(child),
        rest: Some(rest_rx),
        what,
    }
}

impl Live {
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Waits up to `limit` for the session to end; its output (stdout after `started`).
    pub fn ended(mut self, limit: Duration) -> Output {
        let (child, what) = (self.child.take().unwrap(), self.what);
        let rest = self.rest.take().unwrap();
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(limit) {
            Ok(out) => {
                let mut out = out.unwrap();
                out.stdout = rest
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_default();
                out
            }
            Err(_) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                panic!("{what} did not end within {limit:?}");
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
