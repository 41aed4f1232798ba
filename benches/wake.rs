//! Wake-on-connect overhead: `ssh <paused sandbox> true` against a StatefulSet at 0
//! replicas whose pod the emulator makes Ready a fixed delay after the scale-up, and
//! against an HTTP control plane (in this process) that reports `running` the same
//! delay after the resume request, once long-polling (`?wait=`) and once answering at
//! once. The overhead is the time to the finished command minus that delay (the
//! control plane's own time to ready) minus an ordinary `ssh <running sandbox> true`
//! on the same path: what the gateway adds by resuming (its extra lookups, the resume
//! call, noticing that it is ready).
//!
//!     cargo bench --bench wake            # WAKE_RUNS=7 paused sandboxes
//!
//! Not run by CI.

mod common;

use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{
    Client, Server, client_key, env_usize, median, start_http_gateway, start_kube_gateway_with,
    timed,
};

const CIPHER: &str = "aes128-gcm@openssh.com";
/// The emulator's time from a pod's creation to Running and Ready.
const READY_AFTER: Duration = Duration::from_millis(1000);

fn main() {
    let runs = env_usize("WAKE_RUNS", 7);
    let dir = tempfile::Builder::new()
        .prefix("sgw-wake-bench")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let (client, pubkey) = client_key(dir);
    let gw = start_kube_gateway_with(
        dir,
        pubkey.trim(),
        "gateway (Kubernetes)",
        "wake",
        "",
        READY_AFTER,
    );
    let ready = ms(READY_AFTER);
    println!("\n{runs} paused sandboxes per row, ready {ready:.0} ms after the resume, medians\n");
    println!(
        "| control plane | `ssh running true` | `ssh paused true` | control plane's time to ready | wake overhead |"
    );
    println!("|---|---|---|---|---|");
    let (o, w) = measure(&client, &gw, runs, |id| gw.add_paused(id));
    row("Kubernetes (StatefulSet, pod watch)", o, w);
    drop(gw);
    for (long_poll, name) in [
        (true, "HTTP, long-poll (`?wait=`)"),
        (false, "HTTP, answering at once (polled)"),
    ] {
        let plane = Plane::start(long_poll);
        let tag = if long_poll { "http-lp" } else { "http-poll" };
        let gw = start_http_gateway(dir, pubkey.trim(), &plane.url(), tag);
        plane.add("bench", "running");
        let (o, w) = measure(&client, &gw, runs, |id| plane.add(id, "paused"));
        row(name, o, w);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(name: &str, ordinary: f64, woken: f64) {
    let ready = ms(READY_AFTER);
    println!(
        "| {name} | {ordinary:.1} ms | {woken:.1} ms | {ready:.0} ms | {:.1} ms |",
        woken - ready - ordinary
    );
}

/// Medians of an ordinary connection to `bench` and of connections that wake a fresh
/// paused sandbox each (added by `pause`).
fn measure(client: &Client, gw: &Server, runs: usize, pause: impl Fn(&str)) -> (f64, f64) {
    let ordinary: Vec<f64> = (0..runs * 3)
        .map(|_| ms(timed(client.ssh_as(gw, CIPHER, "bench", "true"), None)))
        .collect();
    let mut woken = Vec::new();
    for i in 0..runs {
        let id = format!("paused{i}");
        pause(&id);
        std::thread::sleep(Duration::from_millis(100));
        woken.push(ms(timed(client.ssh_as(gw, CIPHER, &id, "true"), None)));
    }
    (median(ordinary), median(woken))
}

/// A control plane after docs/control-plane.openapi.yaml: targets owned by `bench`,
/// `running` READY_AFTER after their resume request.
/// Per target: its state, and when a resume in progress turns it `running`.
type Targets = Arc<Mutex<HashMap<String, (&'static str, Option<Instant>)>>>;

struct Plane {
    port: u16,
    targets: Targets,
    _runtime: tokio::runtime::Runtime,
}

impl Plane {
    fn start(long_poll: bool) -> Self {
        use axum::extract::{Path, Query, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        fn state(targets: &Targets, id: &str) -> Option<&'static str> {
            let mut targets = targets.lock().unwrap();
            let entry = targets.get_mut(id)?;
            if entry.1.is_some_and(|t| Instant::now() >= t) {
                *entry = ("running", None);
            }
            Some(entry.0)
        }
        async fn get(
            State((targets, long_poll)): State<(Targets, bool)>,
            Path(id): Path<String>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            let wait = q.get("wait").and_then(|w| w.parse::<u64>().ok());
            if let (Some(wait), true) = (wait, long_poll) {
                let until = Instant::now() + Duration::from_secs(wait);
                while Instant::now() < until
                    && matches!(state(&targets, &id), Some("paused" | "starting"))
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            match state(&targets, &id) {
                Some(s) => axum::Json(serde_json::json!({
                    "id": id, "state": s, "owner": "bench", "members": [],
                }))
                .into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        async fn resume(
            State((targets, _)): State<(Targets, bool)>,
            Path(id): Path<String>,
        ) -> StatusCode {
            if let Some(e) = targets.lock().unwrap().get_mut(&id)
                && e.0 == "paused"
            {
                *e = ("starting", Some(Instant::now() + READY_AFTER));
            }
            StatusCode::ACCEPTED
        }
        let targets: Targets = Arc::default();
        let app = axum::Router::new()
            .route("/v1/sandboxes/{id}", axum::routing::get(get))
            .route("/v1/sandboxes/{id}/resume", axum::routing::post(resume))
            .route(
                "/v1/sandboxes/{id}/activity",
                axum::routing::post(|| async { StatusCode::NO_CONTENT }),
            )
            .with_state((targets.clone(), long_poll));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            targets,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn add(&self, id: &str, state: &'static str) {
        self.targets
            .lock()
            .unwrap()
            .insert(id.to_owned(), (state, None));
    }
}
