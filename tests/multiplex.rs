//! One connection, many channels, for a long time: what OpenSSH ControlMaster and
//! VS Code do. Channels are reusable for ever, and each new one is authorized afresh.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use support::mux::Master;
use support::{Gateway, free_port, stderr, stdout};

#[test]
fn a_thousand_commands_over_one_connection() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let master = Master::open(gw.ssh_port, &gw.dev_key, dir.path(), "demo");
    for i in 0..1000 {
        let out = master.run(&format!("echo {i}"));
        assert_eq!(
            stdout(&out),
            format!("{i}\n"),
            "command {i}: {}\n{}",
            stderr(&out),
            gw.log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // It was one connection all along.
    assert_eq!(gw.log().matches("authenticated conn=").count(), 1);
}

#[test]
fn two_hundred_forwards_over_one_connection() {
    let gw = Gateway::start();
    // A service in the sandbox that answers each connection with one line.
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in service.incoming() {
            let Ok(mut conn) = conn else { break };
            let _ = conn.write_all(b"hello\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let master = Master::open(gw.ssh_port, &gw.dev_key, dir.path(), "demo");
    let local = free_port();
    master.forward(local, remote);
    for i in 0..200 {
        let mut conn = TcpStream::connect(("127.0.0.1", local)).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut got = String::new();
        let _ = conn.read_to_string(&mut got);
        assert_eq!(got, "hello\n", "forward {i}");
    }
}

/// Deleting the key ends the whole multiplexed connection (every channel of it, the
/// master included), and it cannot come back. (A channel opened on a connection the
/// store announced no change for is re-checked by itself: the test below.)
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_key_ends_the_open_multiplexed_connection() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let master = Master::open(gw.ssh_port, &gw.dev_key, dir.path(), "demo");
    let out = master.run("echo before");
    assert_eq!(stdout(&out), "before\n", "{}", stderr(&out));

    let client = support::http();
    let keys: serde_json::Value = client
        .get(format!("{}/users/me/ssh-keys", gw.api))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in keys.as_array().unwrap() {
        let id = key["id"].as_str().unwrap();
        let resp = client
            .delete(format!("{}/users/me/ssh-keys/{id}", gw.api))
            .bearer_auth(&gw.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
    assert!(
        support::process::wait_until(std::time::Duration::from_secs(20), || !master.is_up()),
        "the master connection outlived its key"
    );
    let out = master.run("echo after");
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_member_removed_from_a_sandbox_cannot_open_another_channel() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", gw.data_dir().join("gateway.db").display());
    gw.admin(&["user", "add", "carol"]);
    let carol = support::keygen(dir.path(), "carol", &["-t", "ed25519"]);
    support::register_key(&db, "carol", &carol);
    gw.admin(&[
        "sandbox", "add", "team", "--owner", "dev", "--member", "carol",
    ]);
    let master = Master::open(gw.ssh_port, &carol.private, dir.path(), "team");
    assert_eq!(stdout(&master.run("echo in")), "in\n");

    gw.admin(&["sandbox", "remove-member", "team", "carol"]);
    let out = master.run("echo still");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("\"team\" does not exist or you have no access to it"),
        "{}",
        stderr(&out)
    );
    // Nothing announced the CLI's change to the SQLite file: the connection stays
    // until the periodic re-check, only its new channels are refused.
    assert!(master.is_up());
}
