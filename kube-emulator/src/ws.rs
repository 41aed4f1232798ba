//! WebSocket plumbing shared by exec and port-forward: channel frames, one writer task
//! per socket, and reading client frames the way the API server does.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use bytes::Bytes;
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::http::ApiError;

/// The subprotocol the API server would pick: the first the client offered (in its
/// order, across repeated headers) that the server supports. axum's own choice follows
/// the server's order instead, which real clients can tell apart.
pub fn choose_protocol(
    headers: &axum::http::HeaderMap,
    supported: &[&'static str],
) -> Option<&'static str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|offered| supported.iter().copied().find(|s| *s == offered))
}

/// Completes the upgrade checks both streaming subresources share: a WebSocket upgrade
/// was asked for, and the client offered a subprotocol we speak. Returns the upgrade
/// set to that protocol, and the protocol. `kind` names the stream in the refusal.
pub fn negotiate(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: &axum::http::HeaderMap,
    supported: &[&'static str],
    kind: &str,
) -> Result<(WebSocketUpgrade, &'static str), ApiError> {
    let ws = ws.map_err(|_| ApiError::bad_request("Upgrade request required"))?;
    let protocol = choose_protocol(headers, supported)
        .ok_or_else(|| ApiError::bad_request(format!("no supported {kind} subprotocol offered")))?;
    Ok((
        ws.protocols([protocol]).max_message_size(16 << 20),
        protocol,
    ))
}

/// `[channel, data…]` as one binary message.
pub fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// A task that owns the sending half; messages queue in order. It closes the socket
/// after sending a Close, or when every sender is gone.
pub fn writer(mut sink: SplitSink<WebSocket, Message>) -> (mpsc::Sender<Message>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (tx, task)
}

pub fn close_frame() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// What a client frame carries. The API server reads text frames on the channel
/// protocols exactly like binary ones (python-kubernetes sends stdin as text).
pub enum Payload {
    Data(Bytes),
    Closed,
    Other,
}

pub fn binary_payload(msg: Message) -> Payload {
    match msg {
        Message::Binary(b) => Payload::Data(b),
        Message::Text(t) => Payload::Data(Bytes::copy_from_slice(t.as_str().as_bytes())),
        Message::Close(_) => Payload::Closed,
        _ => Payload::Other,
    }
}
