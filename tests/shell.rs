//! Interactive `ssh -t` sessions, driven through a real pseudo-terminal the way a
//! person's terminal drives ssh: TERM, window resizes, Ctrl-C, and `exit N`.

mod support;

use std::time::Duration;

use support::Gateway;
use support::terminal::{Terminal, check_interactive_session};

#[tokio::test(flavor = "multi_thread")]
async fn interactive_shell_honours_term_resize_ctrl_c_and_exit_code() {
    let gw = Gateway::start();
    check_interactive_session(&gw.client_opts(&gw.dev_key), gw.ssh_port, "demo@127.0.0.1").await;
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
