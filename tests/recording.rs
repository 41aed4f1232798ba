//! Session recording (`[recording] enabled`): a PTY session is told it is recorded
//! and lands as an asciicast v2 file (output, timing, resizes; no input unless
//! configured) that its owner fetches through the API and `asciinema` plays; nobody
//! else gets it, and sessions without a terminal are not recorded.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::terminal::{Terminal, resize_reaches_the_shell};
use support::{Gateway, StaticConfig, run, stderr, stdout};

async fn get(api: &str, token: &str, path: &str) -> (u16, String, String) {
    let resp = support::http()
        .get(format!("{api}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, kind, resp.text().await.unwrap())
}

#[test]
fn a_terminal_session_is_recorded_for_its_owner_and_plays_back() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let config = StaticConfig::write(
        dir.path(),
        "",
        &format!(
            "[recording]\nenabled = true\ndir = \"{}\"\n",
            recordings.display()
        ),
    );
    let mut keys = config.users_with_keys(&["ana", "bob"]);
    config.admin(&["sandbox", "add", "box", "--owner", "ana", "--member", "bob"]);
    let (ana_token, bob_token) = (config.token("ana"), config.token("bob"));
    let _serve = config.serve();
    let bob = keys.remove(1);
    let ana = keys.remove(0);
    let api = config.api();

    // A command without a terminal is not recorded, and not told so.
    let mut plain = support::client("ssh", &bob, config.ssh_port);
    plain.args(["box@127.0.0.1", "echo plain"]);
    let out = run(plain);
    assert_eq!(stdout(&out), "plain\n");
    assert!(!stderr(&out).contains("recorded"), "{}", stderr(&out));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = Gateway::client_opts_for(&ana.private);
        let mut term = Terminal::open(&opts, config.ssh_port, "box@127.0.0.1", 100, 30);
        term.wait_for("ssh-gateway: this session is recorded").await;
        term.run("echo recorded-$((6*7))", "first").await;
        assert!(resize_reaches_the_shell(&mut term, 120, 40).await);
        term.type_line("exit").await;
        let _ = tokio::time::timeout(Duration::from_secs(20), term.child.wait()).await;
    });

    // The audit trail says which channel is recorded, once the connection is written
    // (up to a minute: a full suite on two cores keeps SQLite's disk busy).
    let session = rt.block_on(async {
        for _ in 0..600 {
            let (_, _, body) = get(&api, &ana_token, "/users/me/sessions").await;
            let list: Value = serde_json::from_str(&body).unwrap();
            if let Some(s) = list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["channels"].get(0).is_some_and(|c| c["recorded"] == true))
            {
                return s.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no recorded session in the trail");
    });
    let id = session["id"].as_str().unwrap();

    let (status, kind, cast) = rt.block_on(get(
        &api,
        &ana_token,
        &format!("/users/me/sessions/{id}/recording"),
    ));
    assert_eq!(status, 200, "{cast}");
    assert_eq!(kind, "application/x-asciicast");
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(100), Some(30))
    );
    assert_eq!(header["env"]["TERM"], "xterm-256color");
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let output: String = events
        .iter()
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert!(output.contains("recorded-42"), "{output}");
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "120x40"),
        "{cast}"
    );
    assert!(
        !events.iter().any(|e| e[1] == "i"),
        "input is not recorded by default"
    );
    let times: Vec<f64> = events.iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Nobody else reads it: another user, an unknown id, a channel not recorded.
    for (token, path) in [
        (&bob_token, format!("/users/me/sessions/{id}/recording")),
        (
            &ana_token,
            "/users/me/sessions/ses_000000000000000000000000/recording".to_owned(),
        ),
        (
            &ana_token,
            format!("/users/me/sessions/{id}/recording?channel=99"),
        ),
        (
            &ana_token,
            "/users/me/sessions/..%2F..%2Fetc%2Fpasswd/recording".to_owned(),
        ),
    ] {
        let (status, _, body) = rt.block_on(get(&api, token, &path));
        assert_eq!(status, 404, "{path}: {body}");
    }

    // Kept private on disk, and played by asciinema.
    let files: Vec<_> = std::fs::read_dir(&recordings).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "only the terminal session: {files:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&recordings), 0o700);
    assert_eq!(mode(&files[0].path()), 0o600);
    let saved = dir.path().join("session.cast");
    std::fs::write(&saved, &cast).unwrap();
    let played = Command::new("asciinema")
        .args(["play", "--idle-time-limit", "0.1", "--speed", "10"])
        .arg(&saved)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("asciinema is installed (.ci/run)");
    assert!(
        played.status.success(),
        "{}",
        String::from_utf8_lossy(&played.stderr)
    );
    assert!(String::from_utf8_lossy(&played.stdout).contains("recorded-42"));
}

/// With `enabled = false`, `users` and `targets` still record theirs (and only
/// theirs); the browser terminal's sessions follow the same policy.
#[test]
fn a_policy_records_only_the_users_and_targets_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let config = StaticConfig::write(
        dir.path(),
        "",
        &format!(
            "[recording]\nusers = [\"bob\"]\ntargets = [\"lab-*\"]\ndir = \"{}\"\n",
            recordings.display()
        ),
    );
    let mut keys = config.users_with_keys(&["ana", "bob"]);
    config.admin(&["sandbox", "add", "box", "--owner", "ana", "--member", "bob"]);
    config.admin(&["sandbox", "add", "lab-1", "--owner", "ana"]);
    let ana = config.token("ana");
    let _serve = config.serve();
    let bob = keys.remove(1);
    const TOLD: &str = "this session is recorded";

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // ana on box: neither she nor box is named.
        let mut term = support::browser::open(config.api_port, "box").await;
        support::browser::login(&mut term, &ana).await;
        support::browser::typed(&mut term, "echo plain-$((1+1))\r").await;
        let shown = support::browser::read_until(&mut term, "plain-2").await;
        assert!(!shown.contains(TOLD), "{shown}");
        drop(term);

        // ana on lab-1: the target is named.
        let mut term = support::browser::open(config.api_port, "lab-1").await;
        support::browser::login(&mut term, &ana).await;
        support::browser::typed(&mut term, "echo lab-$((2+2))\r").await;
        let shown = support::browser::read_until(&mut term, "lab-4").await;
        assert!(shown.contains(TOLD), "{shown}");
        drop(term);

        // bob on box, over ssh: the user is named.
        let opts = Gateway::client_opts_for(&bob.private);
        let mut term = Terminal::open(&opts, config.ssh_port, "box@127.0.0.1", 80, 24);
        term.wait_for(TOLD).await;
        term.type_line("exit").await;
        let _ = tokio::time::timeout(Duration::from_secs(20), term.child.wait()).await;
    });
    let count = || std::fs::read_dir(&recordings).unwrap().count();
    for _ in 0..100 {
        if count() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(), 2, "lab-1's and bob's, not ana's on box");
}

/// Recordings past `retention_days` are deleted at start (and hourly); newer ones,
/// and files that are not recordings, stay.
#[test]
fn recordings_past_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).unwrap();
    let touch = |name: &str, when: &str| {
        let path = recordings.join(name);
        std::fs::write(&path, "{}\n").unwrap();
        let ok = Command::new("touch")
            .args(["-d", when])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    touch("rec_old.cast", "3 days ago");
    touch("rec_new.cast", "1 hour ago");
    touch("notes.txt", "3 days ago");
    let config = StaticConfig::write(
        dir.path(),
        "",
        &format!(
            "[recording]\nenabled = true\nretention_days = 2\ndir = \"{}\"\n",
            recordings.display()
        ),
    );
    let _serve = config.serve();
    let gone = || !recordings.join("rec_old.cast").exists();
    for _ in 0..100 {
        if gone() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone(), "the old recording is still there");
    assert!(recordings.join("rec_new.cast").exists());
    assert!(recordings.join("notes.txt").exists());
}
