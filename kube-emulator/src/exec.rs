//! pods/exec over WebSocket (v5.channel.k8s.io and v4.channel.k8s.io), running a real
//! local process in the pod's directory: channel 0 stdin, 1 stdout, 2 stderr, 3 status,
//! 4 resize, 255 close (v5). Exit is one status frame and then a Close 1000.

use std::process::Stdio;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use sgw_pty::WindowSize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use axum::response::IntoResponse;

use crate::http::{ApiError, Shared, status_response};
use crate::objects::{Kind, Store};
use crate::rootfs::Rootfs;
use crate::ws::{self, Payload, binary_payload, close_frame, frame};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Default)]
struct ExecQuery {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    container: Option<String>,
}

/// Absent is false; `0` and `false` (any case) are false; anything else is true.
fn flag(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

fn parse_query(raw: Option<&str>) -> ExecQuery {
    let mut q = ExecQuery::default();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "command" => q.command.push(v.into_owned()),
            "stdin" => q.stdin = flag(&v),
            "stdout" => q.stdout = flag(&v),
            "stderr" => q.stderr = flag(&v),
            "tty" => q.tty = flag(&v),
            "container" => q.container = Some(v.into_owned()),
            _ => {}
        }
    }
    q
}

/// Picks the container the way the API server does, or explains why not.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let bad = ApiError::bad_request;
    match requested {
        Some(c) if names.contains(&c) => Ok(c.to_owned()),
        Some(c) => Err(bad(format!("container {c} is not valid for pod {name}"))),
        None if names.len() == 1 => Ok(names[0].to_owned()),
        None => Err(bad(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// Refuses pods that are gone or not running, before any upgrade.
pub fn running_pod(store: &Store, ns: &str, name: &str) -> Result<Value, ApiError> {
    store.replace_if_armed(ns, name);
    let pod = store.get(Kind::Pod, ns, name)?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("Unknown");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "pod {name} is not running (phase {phase}); cannot exec into it"
        )));
    }
    Ok(pod)
}

pub async fn handle(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let q = parse_query(raw.as_deref());
    let pod = match running_pod(&state.store, &ns, &name) {
        Ok(pod) => pod,
        Err(e) => return e.into_response(),
    };
    let container = match pick_container(&pod, q.container.as_deref()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let rootfs = Rootfs::of(&pod, &container);
    if q.command.is_empty() {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command",
            None,
        );
    }
    if !(q.stdin || q.stdout || q.stderr) {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one of stdin, stdout, stderr",
            None,
        );
    }
    let (ws, protocol) = match ws::negotiate(ws, &headers, &PROTOCOLS, "channel") {
        Ok(negotiated) => negotiated,
        Err(e) => return e.into_response(),
    };
    let v5 = protocol == PROTOCOLS[0];
    let dir = state.store.root.join(&ns).join(&name);
    let store = state.store.clone();
    ws.on_upgrade(move |socket| async move {
        run(socket, q, v5, Place { dir, rootfs }, store, ns, name).await;
    })
}

fn status_frame(exit: Result<i32, String>) -> Vec<u8> {
    let body = match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => {
            json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
        }
    };
    let mut frame = vec![STATUS];
    frame.extend_from_slice(body.to_string().as_bytes());
    frame
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

struct Started {
    child: tokio::process::Child,
    stdin: Option<BoxWrite>,
    stdout: Option<BoxRead>,
    stderr: Option<BoxRead>,
    pty: Option<sgw_pty::PtyMaster>,
}

/// Where a pod's processes run: its directory, and the image root if it has one.
struct Place {
    dir: std::path::PathBuf,
    rootfs: Option<Rootfs>,
}

fn spawn(q: &ExecQuery, place: &Place, pod: &str) -> std::io::Result<Started> {
    let mut cmd = tokio::process::Command::new(&q.command[0]);
    cmd.args(&q.command[1..])
        .current_dir(&place.dir)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOSTNAME", pod)
        .kill_on_drop(true);
    match &place.rootfs {
        Some(rootfs) => {
            let setup = rootfs.prepare(&place.dir)?;
            cmd.env("HOME", rootfs.home());
            // SAFETY: `enter` only makes system calls on memory prepared before fork.
            unsafe {
                cmd.pre_exec(move || setup.enter());
            }
        }
        None => {
            cmd.env("HOME", &place.dir);
        }
    }
    if q.tty {
        let pair = sgw_pty::open(WindowSize {
            cols: 80,
            rows: 24,
            ..Default::default()
        })?;
        cmd.stdin(Stdio::from(pair.slave.try_clone()?))
            .stdout(Stdio::from(pair.slave.try_clone()?))
            .stderr(Stdio::from(pair.slave.try_clone()?))
            .env("TERM", "xterm");
        sgw_pty::make_controlling_terminal(&mut cmd);
        let child = cmd.spawn()?;
        drop(pair.slave);
        return Ok(Started {
            child,
            stdin: q.stdin.then(|| Box::new(pair.master.clone()) as BoxWrite),
            stdout: Some(Box::new(pair.master.clone())),
            stderr: None,
            pty: Some(pair.master),
        });
    }
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(pipe(q.stdin))
        .stdout(pipe(q.stdout))
        .stderr(pipe(q.stderr))
        .process_group(0);
    let mut child = cmd.spawn()?;
    Ok(Started {
        stdin: child.stdin.take().map(|s| Box::new(s) as BoxWrite),
        stdout: child.stdout.take().map(|s| Box::new(s) as BoxRead),
        stderr: child.stderr.take().map(|s| Box::new(s) as BoxRead),
        child,
        pty: None,
    })
}

async fn pump(mut from: BoxRead, channel: u8, to: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn feed(mut to: BoxWrite, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = rx.recv().await {
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

async fn run(
    socket: WebSocket,
    q: ExecQuery,
    v5: bool,
    place: Place,
    store: Store,
    ns: String,
    name: String,
) {
    let (sink, mut stream) = socket.split();
    let (out_tx, writer) = ws::writer(sink);
    // The handshake frame: one empty frame on the lowest writable channel.
    let first = if q.stdout {
        STDOUT
    } else if q.stderr {
        STDERR
    } else {
        STATUS
    };
    let _ = out_tx.send(Message::Binary(Bytes::from(vec![first]))).await;

    let mut started = match spawn(&q, &place, &name) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("exec: {:?}: {e}", q.command[0]);
            let _ = out_tx
                .send(Message::Binary(Bytes::from(status_frame(Err(message)))))
                .await;
            let _ = out_tx.send(close_frame()).await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    let pgid = started.child.id().map(|p| Pid::from_raw(p as i32));
    let mut pumps = Vec::new();
    if let Some(out) = started.stdout.take() {
        pumps.push(tokio::spawn(pump(out, STDOUT, out_tx.clone())));
    }
    if let Some(err) = started.stderr.take() {
        pumps.push(tokio::spawn(pump(err, STDERR, out_tx.clone())));
    }
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let mut stdin_tx = Some(stdin_tx);
    if let Some(stdin) = started.stdin.take() {
        tokio::spawn(feed(stdin, stdin_rx));
    }
    let mut events = store.subscribe();
    let kill = |sig: Signal| {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, sig);
        }
    };

    let status = loop {
        tokio::select! {
            status = started.child.wait() => break status,
            msg = stream.next() => match msg.map(|m| m.map(binary_payload)) {
                Some(Ok(Payload::Data(data))) => match data.first() {
                    Some(&STDIN) => {
                        if let Some(tx) = &stdin_tx && tx.send(data.slice(1..)).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                    Some(&RESIZE) => {
                        if let (Some(pty), Ok(size)) = (&started.pty, serde_json::from_slice::<Value>(&data[1..])) {
                            let dim = |k: &str| size[k].as_u64().unwrap_or(0).min(u16::MAX as u64) as u16;
                            let _ = pty.resize(WindowSize { cols: dim("Width"), rows: dim("Height"), ..Default::default() });
                        }
                    }
                    Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin_tx = None,
                    _ => {}
                },
                Some(Ok(Payload::Closed)) | None | Some(Err(_)) => {
                    // The client is gone: hang up, then insist.
                    kill(Signal::SIGHUP);
                    match tokio::time::timeout(Duration::from_secs(2), started.child.wait()).await {
                        Ok(s) => break s,
                        Err(_) => {
                            kill(Signal::SIGKILL);
                            break started.child.wait().await;
                        }
                    }
                }
                Some(Ok(Payload::Other)) => {}
            },
            event = events.recv() => {
                if let Ok(e) = event && e.kind == Kind::Pod && e.action == "DELETED" && e.namespace == ns && e.name == name {
                    // The container is going away: its processes die with it.
                    kill(Signal::SIGKILL);
                }
            }
        }
    };
    let tty = started.pty.is_some();
    drop(started);
    // Keep reading until the client's Close: closing a socket with unread input makes
    // the kernel send RST, and a client may then lose the status frame it had not
    // read yet. The real API server completes the close handshake too.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    for p in pumps {
        if tty {
            // Background jobs may hold the terminal open; do not wait on them forever.
            let _ = tokio::time::timeout(Duration::from_millis(500), p).await;
        } else {
            let _ = p.await;
        }
    }
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
        }
        Err(_) => 137,
    };
    let _ = out_tx
        .send(Message::Binary(Bytes::from(status_frame(Ok(code)))))
        .await;
    let _ = out_tx.send(close_frame()).await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}
