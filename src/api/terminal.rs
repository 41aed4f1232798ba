//! The browser terminal over HTTP: `GET /terminal/{sandbox}` serves the page (xterm.js,
//! vendored and built into the binary), `GET /terminal/{sandbox}/session` is its
//! WebSocket. Browsers cannot put a bearer token on a WebSocket, and a token in a URL
//! ends up in logs and history, so the page sends it as the first message; this
//! module checks it as the REST API does and hands the socket to `crate::terminal`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::auth::Caller;
use super::{ApiError, ApiState};
use crate::store::StoreError;
use crate::terminal::{FromPage, ToPage};

/// Keystrokes, resizes and the login are small; nothing from a page is larger.
const MAX_MESSAGE: usize = 64 * 1024;

const PAGE: &str = include_str!("../../assets/terminal/index.html");
const SCRIPT: &str = include_str!("../../assets/terminal/terminal.js");
const STYLE: &str = include_str!("../../assets/terminal/terminal.css");
const XTERM_JS: &str = include_str!("../../assets/terminal/vendor/xterm.js");
const XTERM_CSS: &str = include_str!("../../assets/terminal/vendor/xterm.css");
const FIT_JS: &str = include_str!("../../assets/terminal/vendor/addon-fit.js");

/// Only this origin's scripts and sockets; no framing (clickjacking a terminal
/// would be typing for someone). xterm.js sets styles from script, hence
/// 'unsafe-inline' for styles only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; font-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/terminal/{sandbox}", get(page))
        .route("/terminal/{sandbox}/session", get(session))
        .route("/assets/terminal/{file}", get(asset))
}

fn enabled(state: &ApiState) -> Result<&crate::ssh::loopback::Loopback, ApiError> {
    state
        .terminal
        .as_deref()
        .ok_or_else(|| ApiError::not_found("the browser terminal is off (api.terminal)"))
}

async fn page(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    enabled(&state)?;
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

async fn asset(
    State(state): State<Arc<ApiState>>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let (kind, body) = match file.as_str() {
        "terminal.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "terminal.css" => ("text/css; charset=utf-8", STYLE),
        "xterm.js" => ("text/javascript; charset=utf-8", XTERM_JS),
        "xterm.css" => ("text/css; charset=utf-8", XTERM_CSS),
        "addon-fit.js" => ("text/javascript; charset=utf-8", FIT_JS),
        _ => return Err(ApiError::not_found("no such terminal asset")),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Built into this binary: a new release may change them.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// A page on another site must not drive a user's terminal through their browser.
/// Logins are by token, not cookie, so it could not anyway; refusing foreign
/// origins keeps it so if that ever changes. Clients that are not browsers send no
/// Origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    matches!((origin, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn session(
    State(state): State<Arc<ApiState>>,
    Path(sandbox): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(slot): Extension<super::serve::Slot>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    if !same_origin(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the terminal's socket only takes connections from its own page",
        ));
    }
    let upgrade = upgrade.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "this path is the browser terminal's WebSocket; open /terminal/{sandbox} instead",
        )
    })?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            // The socket counts against `api.max_connections` until it closes, so
            // terminals cannot take the descriptors SSH needs.
            let _slot = slot;
            serve(socket, state, sandbox, peer).await
        }))
}

async fn serve(mut socket: WebSocket, state: Arc<ApiState>, sandbox: String, peer: SocketAddr) {
    let Ok(loopback) = enabled(&state) else {
        return;
    };
    let (caller, cols, rows) = match login(&mut socket, &state).await {
        Ok(login) => login,
        Err(message) => {
            let _ = socket
                .send(ToPage::Unauthorized { message }.message())
                .await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    tracing::info!(account = %caller.0.name, %peer, "browser terminal opened");
    let pipe = match loopback.dial(caller.principal(), peer) {
        Ok(pipe) => pipe,
        Err(rejection) => {
            let reason = format!(
                "the gateway is not taking new connections right now ({}); try again in a moment",
                rejection.as_str()
            );
            let _ = socket.send(ToPage::Closed { reason }.message()).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    crate::terminal::run(socket, pipe, sandbox, cols, rows).await;
}

/// The page's first message: its token, checked as the REST API checks one, and the
/// terminal's size. The error is what the page shows.
async fn login(socket: &mut WebSocket, state: &ApiState) -> Result<(Caller, u16, u16), String> {
    let deadline = state.terminal_login;
    let first = tokio::time::timeout(deadline, socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Err(_) => return Err(format!("no login within {} s", deadline.as_secs())),
        _ => return Err("the first message must be the login".into()),
    };
    let (token, cols, rows) = match serde_json::from_str(&text) {
        Ok(FromPage::Auth { token, cols, rows }) => (token, cols, rows),
        _ => return Err("the first message must be the login".into()),
    };
    if token.is_empty() || token.len() > 256 {
        return Err("invalid or revoked token".into());
    }
    match state.store.token_login(&token).await {
        Ok((user, token_id)) => Ok((Caller(user, token_id), cols.max(1), rows.max(1))),
        Err(StoreError::NotFound) => Err("invalid or revoked token".into()),
        Err(e) => {
            tracing::warn!(error = %e, "token check failed for a browser terminal");
            Err("the gateway cannot check tokens right now; try again in a moment".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn only_the_pages_own_origin_may_open_the_socket() {
        assert!(same_origin(&headers(None, "gw:8080")));
        assert!(same_origin(&headers(Some("http://gw:8080"), "gw:8080")));
        assert!(same_origin(&headers(
            Some("https://GW.example"),
            "gw.example"
        )));
        assert!(!same_origin(&headers(
            Some("https://evil.example"),
            "gw:8080"
        )));
        assert!(!same_origin(&headers(Some("http://gw:8081"), "gw:8080")));
        assert!(!same_origin(&headers(Some("null"), "gw:8080")));
    }
}
