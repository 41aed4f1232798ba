//! Interactive `ssh -t` sessions, driven through a real pseudo-terminal the way a
//! person's terminal drives ssh: TERM, window resizes, Ctrl-C, and `exit N`.

mod support;

use std::time::Duration;

use support::Gateway;
use support::terminal::{Terminal, resize_reaches_the_shell};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread")]
async fn interactive_shell_honours_term_resize_ctrl_c_and_exit_code() {
    let gw = Gateway::start();
    let mut term = Terminal::open(
        &gw.client_opts(&gw.dev_key),
        gw.ssh_port,
        "demo@127.0.0.1",
        80,
        24,
    );

    term.type_line("echo \"term=$TERM size=$(stty size) tty=$(tty | cut -c1-8)\"")
        .await;
    term.wait_for("term=xterm-256color size=24 80 tty=/dev/pts")
        .await;

    // Resize the local terminal: ssh gets SIGWINCH and sends window-change.
    assert!(
        resize_reaches_the_shell(&mut term, 132, 43).await,
        "the window change never reached the shell"
    );

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

#[tokio::test(flavor = "multi_thread")]
async fn shell_starts_in_sandbox_home() {
    let gw = Gateway::start();
    let mut term = Terminal::open(
        &gw.client_opts(&gw.dev_key),
        gw.ssh_port,
        "demo@127.0.0.1",
        80,
        24,
    );
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
