//! The browser terminal's session: the page's WebSocket on one side, an SSH client on
//! the other, over the gateway's in-memory loopback (`ssh::loopback`), so a browser
//! session is authorized, woken, bridged, recorded, audited and ended exactly as an
//! `ssh` session is. This module only translates.
//!
//! The wire, after the API has checked the page's login (`api::terminal`):
//! - page → gateway: binary frames are keystrokes; text frames are JSON
//!   [`FromPage`] (`{"type":"resize","cols":…,"rows":…}`).
//! - gateway → page: binary frames are terminal output (stdout and stderr, as a
//!   terminal shows both); text frames are JSON [`ToPage`]: how the program ended,
//!   and why the connection closed.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use russh::ChannelMsg;
use russh::client::{DisconnectReason, Handler};
use serde::{Deserialize, Serialize};
use tokio::io::DuplexStream;
use tokio::sync::oneshot;

/// What the page sends as text.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromPage {
    /// The first message: who is asking, and the terminal's size.
    Auth {
        token: String,
        cols: u16,
        rows: u16,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
}

/// What the gateway sends as text.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToPage {
    /// The login was refused; the page asks for a token again.
    Unauthorized { message: String },
    /// The program ended with this status (or signal).
    Exit {
        status: Option<u32>,
        signal: Option<String>,
    },
    /// The connection ended; `reason` is what an `ssh` client would print.
    Closed { reason: String },
}

impl ToPage {
    pub fn message(&self) -> Message {
        // Serializing these plain enums cannot fail.
        Message::Text(serde_json::to_string(self).unwrap_or_default().into())
    }
}

/// A page that has not taken its output for this long is gone: the session ends
/// rather than holding the program's output (SSH's window already stopped it).
const PAGE_STALL: Duration = Duration::from_secs(60);
/// Pings keep proxies and load balancers from closing a quiet terminal.
const PING_EVERY: Duration = Duration::from_secs(30);

/// The SSH client side of the loopback.
struct Client {
    disconnect: Option<oneshot::Sender<String>>,
}

impl Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // The pipe leads only into this process: there is no one to impersonate it.
        Ok(true)
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                if let Some(tx) = self.disconnect.take() {
                    let _ = tx.send(info.message);
                }
                Ok(())
            }
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// Runs a PTY shell on `sandbox` over `pipe` (a loopback connection admitted for the
/// page's user) and bridges it to `socket` until either ends.
pub async fn run(mut socket: WebSocket, pipe: DuplexStream, sandbox: String, cols: u16, rows: u16) {
    let (disconnect_tx, mut disconnect_rx) = oneshot::channel();
    let client = Client {
        disconnect: Some(disconnect_tx),
    };
    let config = std::sync::Arc::new(russh::client::Config::default());
    let session = async {
        let mut handle = russh::client::connect_stream(config, pipe, client).await?;
        if !handle.authenticate_none(&sandbox).await?.success() {
            return Err(russh::Error::NotAuthenticated);
        }
        let channel = handle.channel_open_session().await?;
        channel
            .request_pty(
                false,
                "xterm-256color",
                u32::from(cols),
                u32::from(rows),
                0,
                0,
                &[],
            )
            .await?;
        channel.request_shell(false).await?;
        Ok::<_, russh::Error>((handle, channel))
    };
    let (handle, channel) = match session.await {
        Ok(opened) => opened,
        Err(e) => {
            let reason = disconnect_rx
                .try_recv()
                .unwrap_or_else(|_| format!("the gateway could not open the session ({e})"));
            let _ = socket.send(ToPage::Closed { reason }.message()).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let (mut from_ssh, to_ssh) = channel.split();
    let (mut to_page, mut from_page) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut exit = None;
    loop {
        tokio::select! {
            msg = from_ssh.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let sent = tokio::time::timeout(
                        PAGE_STALL,
                        to_page.send(Message::Binary(data.to_vec().into())),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    exit = Some(ToPage::Exit { status: Some(exit_status), signal: None });
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit = Some(ToPage::Exit { status: None, signal: Some(format!("{signal_name:?}")) });
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            msg = from_page.next() => match msg {
                Some(Ok(Message::Binary(keys))) => {
                    if to_ssh.data_bytes(keys).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(FromPage::Resize { cols, rows }) => {
                        let _ = to_ssh.window_change(u32::from(cols), u32::from(rows), 0, 0).await;
                    }
                    // A second login, or something this page never sends: ignored
                    // rather than trusted.
                    Ok(FromPage::Auth { .. }) | Err(_) => {}
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // The page went away: hanging up ends the program, as closing an
                // ssh client does.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "page closed", "en").await;
                    return;
                }
            },
            _ = ping.tick() => {
                if to_page.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(exit) = exit {
        let _ = to_page.send(exit.message()).await;
    }
    // A drain, a revoked key or an idle limit says why in its disconnect.
    let reason = tokio::time::timeout(Duration::from_millis(500), &mut disconnect_rx)
        .await
        .ok()
        .and_then(Result::ok);
    if let Some(reason) = reason {
        let _ = to_page.send(ToPage::Closed { reason }.message()).await;
    }
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    let _ = to_page.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_messages_parse_strictly() {
        assert_eq!(
            serde_json::from_str::<FromPage>(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap(),
            FromPage::Resize {
                cols: 120,
                rows: 40
            }
        );
        // Out of range, unknown fields and unknown kinds are refused, never wrapped.
        for bad in [
            r#"{"type":"resize","cols":70000,"rows":40}"#,
            r#"{"type":"resize","cols":80,"rows":24,"x":1}"#,
            r#"{"type":"exec","command":"id"}"#,
            r#"{"cols":80}"#,
        ] {
            assert!(serde_json::from_str::<FromPage>(bad).is_err(), "{bad}");
        }
    }
}
