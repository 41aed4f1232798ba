//! The browser terminal's WebSocket (`/terminal/{sandbox}/session`) as a test client
//! speaks it: the page's protocol without the page.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn request(
    api_port: u16,
    sandbox: &str,
    origin: Option<&str>,
) -> tungstenite::handshake::client::Request {
    let url = format!("ws://127.0.0.1:{api_port}/terminal/{sandbox}/session");
    let mut req = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    req
}

pub async fn open(api_port: u16, sandbox: &str) -> Socket {
    let origin = format!("http://127.0.0.1:{api_port}");
    let (socket, _) = tokio_tungstenite::connect_async(request(api_port, sandbox, Some(&origin)))
        .await
        .unwrap();
    socket
}

pub async fn login(socket: &mut Socket, token: &str) {
    let auth = json!({"type": "auth", "token": token, "cols": 80, "rows": 24});
    socket
        .send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
}

/// What the gateway sends until it closes (or `limit` passes): the terminal's
/// output as text, and the control messages.
pub async fn read_all(socket: &mut Socket, limit: Duration) -> (String, Vec<Value>) {
    let (mut output, mut control) = (Vec::new(), Vec::new());
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(msg)) = socket.next().await {
            match msg {
                Message::Binary(bytes) => output.extend_from_slice(&bytes),
                Message::Text(text) => control.push(serde_json::from_str(&text).unwrap()),
                Message::Close(_) => break,
                _ => {}
            }
        }
    })
    .await;
    (String::from_utf8_lossy(&output).into_owned(), control)
}

/// Reads output until it contains `needle`.
pub async fn read_until(socket: &mut Socket, needle: &str) -> String {
    let mut output = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(msg)) = socket.next().await {
            if let Message::Binary(bytes) = msg {
                output.extend_from_slice(&bytes);
                if String::from_utf8_lossy(&output).contains(needle) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    let text = String::from_utf8_lossy(&output).into_owned();
    assert!(matches!(found, Ok(true)), "no {needle:?} in {text:?}");
    text
}

/// A short header timeout is also the page's login deadline.
/// Sends keystrokes.
pub async fn typed(socket: &mut Socket, keys: &str) {
    socket
        .send(Message::Binary(keys.as_bytes().to_vec().into()))
        .await
        .unwrap();
}
