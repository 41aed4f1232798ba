//! Watches: the current objects as ADDED, then every change, one JSON object per line.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::http::{ListQuery, selected};
use crate::objects::{Kind, Store};

/// A watch: current objects as ADDED (unless resuming from a resourceVersion), then
/// every change, one JSON object per line, until the timeout.
pub fn watch(store: Store, kind: Kind, ns: Option<String>, q: ListQuery) -> Response {
    let mut events = store.subscribe();
    let since: Option<u64> = q
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let (initial, _) = store.list(kind, ns.as_deref());
    let initial: Vec<Value> = if since.is_some() {
        Vec::new()
    } else {
        initial.into_iter().filter(|o| selected(&q, o)).collect()
    };
    let timeout = std::time::Duration::from_secs(q.timeout.unwrap_or(1800).min(3600));
    // A task feeds the response body through a bounded queue.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        for object in initial {
            if tx.send(line("ADDED", &object)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(e)) => e,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                _ => return,
            };
            if event.kind != kind || ns.as_deref().is_some_and(|n| n != event.namespace) {
                continue;
            }
            if !selected(&q, &event.object) {
                continue;
            }
            if tx.send(line(event.action, &event.object)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn line(action: &str, object: &Value) -> Result<Bytes, std::io::Error> {
    let mut text = json!({"type": action, "object": object}).to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}
