//! A real pseudo-terminal with `ssh -t` running in it, read and typed into the way a
//! person's terminal would.

use std::process::Stdio;
use std::time::Duration;

use ssh_gateway::backend::WindowSize;
use ssh_gateway::backend::pty::{self, PtyMaster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A terminal with ssh running in it; collects everything ssh prints.
pub struct Terminal {
    pub master: PtyMaster,
    pub seen: String,
    pub child: tokio::process::Child,
}

impl Terminal {
    pub fn open(opts: &[String], port: u16, target: &str, cols: u16, rows: u16) -> Terminal {
        let pair = pty::open(WindowSize {
            cols,
            rows,
            ..Default::default()
        })
        .unwrap();
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(opts)
            .args(["-p", &port.to_string(), "-t", target])
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(pair.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pair.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pair.slave.try_clone().unwrap()))
            .kill_on_drop(true);
        pty::make_controlling_terminal(&mut cmd);
        let child = cmd.spawn().unwrap();
        drop(pair.slave);
        Terminal {
            master: pair.master,
            seen: String::new(),
            child,
        }
    }

    pub async fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).await.unwrap();
        self.master.write_all(b"\r").await.unwrap();
    }

    /// Reads until `needle` appears (consuming output up to it), or panics after 20 s.
    pub async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(pos) = self.seen.find(needle) {
                return self.seen.drain(..pos + needle.len()).collect();
            }
            match tokio::time::timeout_at(deadline, self.master.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    panic!("terminal closed before {needle:?}; saw {:?}", self.seen)
                }
                Ok(Ok(n)) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => panic!("timed out waiting for {needle:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Runs `cmd` in the remote shell and waits for its output marker.
    /// The marker is computed remotely so the echoed command line never matches.
    /// Returns everything the terminal showed up to the marker.
    pub async fn run(&mut self, cmd: &str, tag: &str) -> String {
        self.type_line(&format!("{cmd}; echo \"<{tag}$((1+1))>\""))
            .await;
        self.wait_for(&format!("<{tag}2>")).await
    }
}

/// Asks the remote shell whether its terminal is `want` ("rows cols").
pub async fn size_is(term: &mut Terminal, attempt: usize, want: &str) -> bool {
    term.type_line(&format!(
        "[ \"$(stty size)\" = \"{want}\" ] && echo \"ok{attempt}$((1+1))\" || echo \"no{attempt}$((1+1))\""
    ))
    .await;
    let ok = format!("ok{attempt}2");
    let no = format!("no{attempt}2");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        if term.seen.contains(&ok) {
            term.seen.clear();
            return true;
        }
        if term.seen.contains(&no) {
            term.seen.clear();
            return false;
        }
        match tokio::time::timeout_at(deadline, term.master.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => term.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => panic!("no answer to the size check; saw {:?}", term.seen),
        }
    }
}

/// Resizes the local terminal and asks the remote shell until it reports the new size
/// (ssh's SIGWINCH handling races the next keystrokes). False if it never arrives.
pub async fn resize_reaches_the_shell(term: &mut Terminal, cols: u16, rows: u16) -> bool {
    term.master
        .resize(WindowSize {
            cols,
            rows,
            ..Default::default()
        })
        .unwrap();
    let want = format!("{rows} {cols}");
    for attempt in 0..50 {
        if size_is(term, attempt, &want).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// What a person does in a terminal, checked end to end against `target`: TERM and the
/// size arrive, a resize reaches the shell, ^C interrupts the foreground program (not
/// the session) and is echoed, and `exit 7` becomes ssh's exit status.
pub async fn check_interactive_session(opts: &[String], port: u16, target: &str) {
    let mut term = Terminal::open(opts, port, target, 80, 24);
    term.type_line("echo \"term=$TERM size=$(stty size) tty=$(tty | cut -c1-8)\"")
        .await;
    term.wait_for("term=xterm-256color size=24 80 tty=/dev/pts")
        .await;

    // Resize the local terminal: ssh gets SIGWINCH and sends window-change.
    assert!(
        resize_reaches_the_shell(&mut term, 132, 43).await,
        "the window change never reached the shell"
    );

    // (If ^C were lost, the marker could not arrive before wait_for's 20 s limit.)
    // ^C only once the foreground job runs (its output cannot be the echo of what was
    // typed): the job announces itself and becomes the sleep, so the interrupt can
    // neither flush the still-queued line nor land between two commands of a list.
    term.type_line("sh -c 'echo \"run$((1+1))ning\"; exec sleep 30'; echo \"slept-$((40+2))\"")
        .await;
    term.wait_for("run2ning").await;
    term.master.write_all(&[0x03]).await.unwrap();
    let shown = term.run("echo still-here", "alive").await;
    assert!(
        !shown.contains("slept-42"),
        "sleep was not interrupted: {shown:?}"
    );
    assert!(
        shown.contains("^C"),
        "the terminal should echo ^C: {shown:?}"
    );

    term.type_line("exit 7").await;
    let status = tokio::time::timeout(Duration::from_secs(20), term.child.wait())
        .await
        .expect("ssh exits after `exit 7`")
        .unwrap();
    assert_eq!(status.code(), Some(7));
}
