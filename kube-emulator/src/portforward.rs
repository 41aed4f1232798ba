//! pods/portforward over WebSocket (v4.channel.k8s.io): for the i-th requested port,
//! channel 2i carries data both ways and 2i+1 carries error text. Each channel first
//! carries the port number, two bytes little-endian. In emulation a pod's ports are
//! the host's loopback ports.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::exec::running_pod;
use crate::http::{Shared, status_response};
use crate::ws::{self, Payload, binary_payload, close_frame, frame};

const PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];

fn ports(raw: Option<&str>) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k == "ports" {
            for p in v.split(',') {
                let port: u16 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid port {p:?}"))?;
                if port == 0 {
                    return Err("port 0 is not valid".into());
                }
                out.push(port);
            }
        }
    }
    if out.is_empty() {
        return Err("at least one port must be specified".into());
    }
    Ok(out)
}

pub async fn handle(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = running_pod(&state.store, &ns, &name) {
        return e.into_response();
    }
    let ports = match ports(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e, None),
    };
    let (ws, _) = match ws::negotiate(ws, &headers, &PROTOCOLS, "port-forward") {
        Ok(negotiated) => negotiated,
        Err(e) => return e.into_response(),
    };
    ws.on_upgrade(move |socket| run(socket, ports))
}

async fn run(socket: WebSocket, ports: Vec<u16>) {
    let (sink, mut stream) = socket.split();
    let (out_tx, writer) = ws::writer(sink);
    let mut inputs: Vec<mpsc::Sender<Bytes>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let le = port.to_le_bytes();
        let _ = out_tx.send(frame(data_ch, &le)).await;
        let _ = out_tx.send(frame(err_ch, &le)).await;
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
        inputs.push(in_tx);
        tasks.push(tokio::spawn(forward(
            *port,
            data_ch,
            err_ch,
            in_rx,
            out_tx.clone(),
        )));
    }
    let mut all_done = futures::future::join_all(tasks);
    loop {
        tokio::select! {
            _ = &mut all_done => break,
            msg = stream.next() => match msg.map(|m| m.map(binary_payload)) {
                Some(Ok(Payload::Data(data))) if !data.is_empty() => {
                    let ch = data[0] as usize;
                    if ch.is_multiple_of(2) && let Some(tx) = inputs.get(ch / 2) {
                        let _ = tx.send(data.slice(1..)).await;
                    }
                }
                Some(Ok(Payload::Closed)) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(inputs);
    // Drain until the client's Close so unread input does not turn our close into RST.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let _ = out_tx.send(close_frame()).await;
    drop(out_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

/// One TCP connection to 127.0.0.1:port for the life of the stream.
async fn forward(
    port: u16,
    data_ch: u8,
    err_ch: u8,
    mut input: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Message>,
) {
    let tcp = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let text = format!(
                "error forwarding port {port} to pod: dial tcp4 127.0.0.1:{port}: connect: {e}"
            );
            let _ = out.send(frame(err_ch, text.as_bytes())).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let upstream = async {
        while let Some(chunk) = input.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.send(frame(data_ch, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    // The protocol has no half-close: when the pod side ends, the stream ends.
    tokio::select! {
        _ = downstream => {}
        _ = async { upstream.await; std::future::pending::<()>().await } => {}
    }
}
