//! Interactive `ssh -t` sessions, driven through a real pseudo-terminal the way a
//! person's terminal drives ssh: TERM, window resizes, Ctrl-C, and `exit N`.

mod support;

use std::process::Stdio;
use std::time::Duration;

use ssh_gateway::backend::WindowSize;
use ssh_gateway::backend::pty::{self, PtyMaster};
use support::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A terminal with ssh running in it; collects everything ssh prints.
struct Terminal {
    master: PtyMaster,
    seen: String,
    child: tokio::process::Child,
}

impl Terminal {
    fn open(gw: &Gateway, cols: u16, rows: u16) -> Terminal {
        let pair = pty::open(WindowSize {
            cols,
            rows,
            ..Default::default()
        })
        .unwrap();
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(gw.client_opts(&gw.dev_key))
            .args(["-p", &gw.ssh_port.to_string(), "-t", "demo@127.0.0.1"])
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

    async fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).await.unwrap();
        self.master.write_all(b"\r").await.unwrap();
    }

    /// Reads until `needle` appears (consuming output up to it), or panics after 20 s.
    async fn wait_for(&mut self, needle: &str) -> String {
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
    async fn run(&mut self, cmd: &str, tag: &str) -> String {
        self.type_line(&format!("{cmd}; echo \"<{tag}$((1+1))>\""))
            .await;
        self.wait_for(&format!("<{tag}2>")).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_shell_honours_term_resize_ctrl_c_and_exit_code() {
    let gw = Gateway::start();
    let mut term = Terminal::open(&gw, 80, 24);

    term.type_line("echo \"term=$TERM size=$(stty size) tty=$(tty | cut -c1-8)\"")
        .await;
    term.wait_for("term=xterm-256color size=24 80 tty=/dev/pts")
        .await;

    // Resize the local terminal: ssh gets SIGWINCH and sends window-change.
    term.master
        .resize(WindowSize {
            cols: 132,
            rows: 43,
            ..Default::default()
        })
        .unwrap();
    // SIGWINCH handling in ssh races the next keystrokes, so ask until it lands.
    let mut resized = false;
    for attempt in 0..50 {
        if size_is(&mut term, attempt, "43 132").await {
            resized = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resized, "window change never reached the shell");

    // Ctrl-C interrupts the foreground program, not the session.
    // (If ^C were lost, the marker could not arrive before wait_for's 20 s limit.)
    term.type_line("sleep 30; echo \"slept-$((40+2))\"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
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

/// Asks the remote shell whether its terminal is `want` ("rows cols").
async fn size_is(term: &mut Terminal, attempt: usize, want: &str) -> bool {
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

#[tokio::test(flavor = "multi_thread")]
async fn shell_starts_in_sandbox_home() {
    let gw = Gateway::start();
    let mut term = Terminal::open(&gw, 80, 24);
    let home = gw
        .sandbox_dir("demo")
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    term.type_line("echo \"cwd=$(pwd)=\"").await;
    term.wait_for(&format!("cwd={home}=")).await;
    term.type_line("exit").await;
    let status = tokio::time::timeout(Duration::from_secs(20), term.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
