//! The patched russh (vendor/russh, PATCHES.md) lets the gateway end a session from
//! outside without a duplicate of its socket: `RunningSession::abort`, checked here with
//! a real OpenSSH client against a bare russh server whose session loop is stuck
//! inside a handler callback, the case a socket shutdown cannot always reach.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// Kills and reaps on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A russh handler that accepts anyone and then hangs in the first exec request, so
/// the session loop is stuck inside a callback.
struct Stuck {
    channels: Vec<russh::Channel<russh::server::Msg>>,
    stuck: Option<tokio::sync::oneshot::Sender<()>>,
}

impl russh::server::Handler for Stuck {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.channels.push(channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        _channel: russh::ChannelId,
        _data: &[u8],
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        if let Some(stuck) = self.stuck.take() {
            let _ = stuck.send(());
        }
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stuck_in_a_callback_can_be_aborted() {
    use russh::keys::ssh_key::private::Ed25519Keypair;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = Command::new("ssh");
    client
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "LogLevel=ERROR", "-p", &port.to_string()])
        .args(["anyone@127.0.0.1", "echo never"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut client = Reaped(client.spawn().unwrap());
    let (stream, _) = listener.accept().await.unwrap();
    let config = std::sync::Arc::new(russh::server::Config {
        keys: vec![russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(
            &[7; 32],
        ))],
        auth_rejection_time_initial: Some(Duration::ZERO),
        ..Default::default()
    });
    let (stuck_tx, stuck_rx) = tokio::sync::oneshot::channel();
    let handler = Stuck {
        channels: Vec::new(),
        stuck: Some(stuck_tx),
    };
    let session = russh::server::run_stream(config, stream, handler)
        .await
        .unwrap();
    tokio::time::timeout(LIMIT, stuck_rx)
        .await
        .expect("the client never got to its exec request")
        .unwrap();

    session.abort();
    let ended = tokio::time::timeout(LIMIT, session)
        .await
        .expect("the aborted session did not end");
    assert!(matches!(ended, Err(russh::Error::Disconnect)), "{ended:?}");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = client.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < LIMIT, "the client did not notice");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(255), "ssh's exit for a lost connection");
}
