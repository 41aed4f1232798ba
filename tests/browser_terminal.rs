//! The browser terminal in a real headless Chromium (Debian's `chromium`, driven by
//! npm's `playwright-core`; `.ci/run` installs both): a user signs in with a token,
//! types `echo $((6*7))` and reads 42, resizes the window and `stty size` follows,
//! interrupts a program with Ctrl-C, exits with a status the page shows, and
//! reconnects with Enter. A user without access reads exactly what `ssh` tells them;
//! a wrong token is asked for again. The script is tests/browser/terminal.mjs; a
//! screenshot lands in the test's output directory.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::{StaticConfig, run, stderr};

/// Where `npm install playwright-core` put its node_modules (`.ci/run`: /opt/playwright).
fn playwright_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("PLAYWRIGHT_DIR").unwrap_or_else(|_| "/opt/playwright".to_owned()),
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run `npm install --prefix {0} playwright-core` \
         and `apt-get install chromium` (as .ci/run does)",
        dir.display()
    );
    dir
}

#[test]
fn a_browser_terminal_works_as_ssh_does() {
    let playwright = playwright_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = StaticConfig::write(dir.path(), "", "");
    let mut keys = config.users_with_keys(&["ana", "bob"]);
    config.admin(&["sandbox", "add", "box", "--owner", "ana"]);
    let (ana, bob) = (config.token("ana"), config.token("bob"));
    let _serve = config.serve();

    // What `ssh` tells someone without access.
    let mut ssh = support::client("ssh", &keys.remove(1), config.ssh_port);
    ssh.args(["box@127.0.0.1", "true"]);
    let refusal = stderr(&run(ssh)).trim().to_owned();
    assert!(
        refusal.contains("does not exist or you have no access"),
        "{refusal}"
    );

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-terminal.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/terminal.mjs"
        ))
        .env("PLAYWRIGHT_DIR", &playwright)
        .env("BASE", config.api())
        .env("SANDBOX", "box")
        .env("TOKEN", &ana)
        .env("OUTSIDER", &bob)
        .env("REFUSAL", &refusal)
        .env("SCREENSHOT", &screenshot)
        .output()
        .expect("node runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("screenshot: {}", screenshot.display());
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["answer"], 42, "{seen}");
    let (before, after) = (&seen["size_before"], &seen["size_after"]);
    assert!(
        after[0].as_u64() > before[0].as_u64() && after[1].as_u64() > before[1].as_u64(),
        "a larger window did not reach the shell: {seen}"
    );
    assert_eq!(seen["interrupted"], true, "{seen}");
    assert_eq!(seen["exit"], 3, "{seen}");
    assert_eq!(seen["reconnected"], true, "{seen}");
    assert_eq!(seen["refused"], true, "{seen}");
    assert_eq!(seen["bad_token"], "invalid or revoked token", "{seen}");
    assert!(screenshot.is_file(), "no screenshot");

    // Both sittings are in the owner's audit trail, each a shell.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sessions: Value = rt.block_on(async {
        support::http()
            .get(format!("{}/users/me/sessions", config.api()))
            .bearer_auth(&ana)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let shells = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["target"] == "box" && s["channels"][0]["program"] == "shell")
        .count();
    assert!(shells >= 2, "{sessions}");
}
