//! A reference HTTP control plane (docs/control-plane.openapi.yaml) for tests: targets
//! with a state, an owner and members; `resume` turns a paused one `starting` and, a
//! configurable delay later, `running`. It records every call, and can be told to
//! answer the next calls with an error status.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    /// The path after `/v1/sandboxes/`.
    pub path: String,
    pub authorized: bool,
}

struct Entry {
    state: &'static str,
    owner: String,
    members: Vec<String>,
    /// How long a resume takes; `None`: it never finishes.
    resume_delay: Option<Duration>,
    running_at: Option<Instant>,
    /// The id its answers name (a confused or hostile plane answers about another).
    answer_id: Option<String>,
    /// Hold every GET about it this long before answering (a stalled plane).
    stall: Option<Duration>,
}

#[derive(Default)]
struct Plane {
    token: String,
    targets: HashMap<String, Entry>,
    calls: Vec<Call>,
    /// Statuses the next calls of a method on a path answer with instead.
    fail_next: VecDeque<(&'static str, String, u16)>,
    activity: Vec<(String, Value)>,
    /// Whether `?wait=` is honoured.
    long_poll: bool,
}

type Shared = Arc<Mutex<Plane>>;

pub struct ControlPlaneServer {
    pub port: u16,
    plane: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl ControlPlaneServer {
    pub fn start(token: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let plane: Shared = Arc::new(Mutex::new(Plane {
            token: token.to_owned(),
            ..Plane::default()
        }));
        let app = Router::new()
            .route("/v1/sandboxes/{id}", get(get_target))
            .route("/v1/sandboxes/{id}/resume", post(resume))
            .route("/v1/sandboxes/{id}/activity", post(activity))
            .route("/v1/sandboxes/{id}/pause", post(pause))
            .with_state(plane.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            plane,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn plane(&self) -> std::sync::MutexGuard<'_, Plane> {
        self.plane.lock().unwrap()
    }

    pub fn add(&self, id: &str, state: &'static str, owner: &str, members: &[&str]) {
        self.plane().targets.insert(
            id.to_owned(),
            Entry {
                state,
                owner: owner.to_owned(),
                members: members.iter().map(|m| (*m).to_owned()).collect(),
                resume_delay: Some(Duration::from_millis(800)),
                running_at: None,
                answer_id: None,
                stall: None,
            },
        );
    }

    /// How long a resume of `id` takes (`None`: forever).
    pub fn set_resume_delay(&self, id: &str, delay: Option<Duration>) {
        self.plane().targets.get_mut(id).unwrap().resume_delay = delay;
    }

    /// Answers about `id` name `other` instead.
    pub fn set_answer_id(&self, id: &str, other: &str) {
        self.plane().targets.get_mut(id).unwrap().answer_id = Some(other.to_owned());
    }

    /// GETs about `id` are answered only after `delay`.
    pub fn set_stall(&self, id: &str, delay: Duration) {
        self.plane().targets.get_mut(id).unwrap().stall = Some(delay);
    }

    pub fn set_members(&self, id: &str, members: &[&str]) {
        self.plane().targets.get_mut(id).unwrap().members =
            members.iter().map(|m| (*m).to_owned()).collect();
    }

    pub fn state(&self, id: &str) -> &'static str {
        let mut plane = self.plane();
        let entry = plane.targets.get_mut(id).unwrap();
        advance(entry);
        entry.state
    }

    /// Honour `?wait=` (hold a GET while the target is waking).
    pub fn set_long_poll(&self, on: bool) {
        self.plane().long_poll = on;
    }

    /// The next calls of `method` on `path` (after `/v1/sandboxes/`) answer these
    /// statuses, in order; other calls are unaffected.
    pub fn fail_next(&self, method: &'static str, path: &str, statuses: &[u16]) {
        self.plane()
            .fail_next
            .extend(statuses.iter().map(|s| (method, path.to_owned(), *s)));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.plane().calls.clone()
    }

    /// Calls of `method` on exactly `path` (after `/v1/sandboxes/`).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.plane()
            .calls
            .iter()
            .filter(|c| c.method == method && c.path == path)
            .count()
    }

    /// The activity reports about `id`, oldest first.
    pub fn activity(&self, id: &str) -> Vec<Value> {
        self.plane()
            .activity
            .iter()
            .filter(|(t, _)| t == id)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn advance(entry: &mut Entry) {
    if entry.state == "starting" && entry.running_at.is_some_and(|t| Instant::now() >= t) {
        entry.state = "running";
        entry.running_at = None;
    }
}

/// Records the call; answers a queued failure or a bad token, if any.
fn admit(
    plane: &mut Plane,
    method: &'static str,
    path: String,
    headers: &HeaderMap,
) -> Option<Response> {
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", plane.token).as_str());
    let failure = plane
        .fail_next
        .iter()
        .position(|(m, p, _)| *m == method && *p == path);
    plane.calls.push(Call {
        method,
        path,
        authorized,
    });
    if let Some((_, _, status)) = failure.and_then(|i| plane.fail_next.remove(i)) {
        return Some(
            (
                StatusCode::from_u16(status).unwrap(),
                "injected failure".to_owned(),
            )
                .into_response(),
        );
    }
    if !authorized {
        return Some((StatusCode::UNAUTHORIZED, "bad token").into_response());
    }
    None
}

async fn get_target(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    {
        let mut plane = shared.lock().unwrap();
        if let Some(r) = admit(&mut plane, "GET", id.clone(), &headers) {
            return r;
        }
    }
    // `?wait=`: held while the target is waking, if this plane long-polls.
    let wait = query.get("wait").and_then(|w| w.parse::<u64>().ok());
    if let Some(wait) = wait.filter(|_| shared.lock().unwrap().long_poll) {
        let until = Instant::now() + Duration::from_secs(wait);
        while Instant::now() < until {
            {
                let mut plane = shared.lock().unwrap();
                let Some(entry) = plane.targets.get_mut(&id) else {
                    break;
                };
                advance(entry);
                if !matches!(entry.state, "paused" | "starting") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let stall = shared
        .lock()
        .unwrap()
        .targets
        .get(&id)
        .and_then(|e| e.stall);
    if let Some(stall) = stall {
        tokio::time::sleep(stall).await;
    }
    let mut plane = shared.lock().unwrap();
    let Some(entry) = plane.targets.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    advance(entry);
    let named = entry.answer_id.clone().unwrap_or(id);
    axum::Json(json!({
        "id": named, "state": entry.state, "owner": entry.owner, "members": entry.members,
    }))
    .into_response()
}

async fn resume(
    State(plane): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut plane = plane.lock().unwrap();
    if let Some(r) = admit(&mut plane, "POST", format!("{id}/resume"), &headers) {
        return r;
    }
    let Some(entry) = plane.targets.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if entry.state == "paused" {
        entry.state = "starting";
        entry.running_at = entry.resume_delay.map(|d| Instant::now() + d);
    }
    StatusCode::ACCEPTED.into_response()
}

async fn pause(
    State(plane): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut plane = plane.lock().unwrap();
    if let Some(r) = admit(&mut plane, "POST", format!("{id}/pause"), &headers) {
        return r;
    }
    let Some(entry) = plane.targets.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    entry.state = "paused";
    entry.running_at = None;
    StatusCode::ACCEPTED.into_response()
}

async fn activity(
    State(plane): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut plane = plane.lock().unwrap();
    if let Some(r) = admit(&mut plane, "POST", format!("{id}/activity"), &headers) {
        return r;
    }
    plane.activity.push((id, body));
    StatusCode::NO_CONTENT.into_response()
}

/// `ssh-gateway serve` on the local backend with `[control] kind = "http"` pointed at a
/// fresh reference control plane; users alice and bob, each with a key.
pub struct HttpGateway {
    pub plane: ControlPlaneServer,
    pub ssh_port: u16,
    pub api_port: u16,
    pub alice: super::KeyPair,
    pub bob: super::KeyPair,
    pub dir: tempfile::TempDir,
    _server: super::Serve,
}

pub const TOKEN: &str = "cp-token-3f9a";

impl HttpGateway {
    /// `control` is added to `[control]`, `extra` after everything.
    pub fn start(control: &str, extra: &str) -> Self {
        Self::start_with_token(TOKEN, control, extra)
    }

    /// The gateway sends `token`; the plane expects `TOKEN`.
    pub fn start_with_token(token: &str, control: &str, extra: &str) -> Self {
        let plane = ControlPlaneServer::start(TOKEN);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        let (ssh_port, api_port) = (super::free_port(), super::free_port());
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\nhost_key_dir = \"{d}/keys\"\npublic_host = \"gw\"\n\
                 [api]\nlisten = \"127.0.0.1:{api_port}\"\n[database]\nurl = \"sqlite://{d}/gw.db\"\n\
                 [backend]\nkind = \"local\"\n\
                 [control]\nkind = \"http\"\nurl = \"{url}\"\ntoken_file = \"{d}/token\"\nsandbox_root = \"{d}/sandboxes\"\n{control}\n\
                 {extra}\n",
                url = plane.url(),
            ),
        )
        .unwrap();
        let db = format!("sqlite://{d}/gw.db");
        let mut keys = super::users_with_keys(&config, &db, dir.path(), &["alice", "bob"]);
        let server = super::Serve::start(&config, &dir.path().join("gateway.log"), api_port);
        let bob = keys.pop().unwrap();
        let alice = keys.pop().unwrap();
        Self {
            plane,
            ssh_port,
            api_port,
            alice,
            bob,
            dir,
            _server: server,
        }
    }

    pub fn ssh(&self, key: &super::KeyPair) -> std::process::Command {
        super::client("ssh", key, self.ssh_port)
    }

    pub fn sftp(&self, key: &super::KeyPair) -> std::process::Command {
        super::client("sftp", key, self.ssh_port)
    }

    pub fn sandbox_dir(&self, id: &str) -> std::path::PathBuf {
        self.dir.path().join("sandboxes").join(id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}
