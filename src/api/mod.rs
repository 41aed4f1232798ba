//! REST API stage: the key API users upload their SSH keys through, sandbox details
//! with connection info, and health. Handlers call the store and control plane; every
//! error is JSON that says what is wrong and nothing about internals.

mod auth;
mod certificates;
mod error;
mod keys;
mod sandboxes;
mod serve;
mod sessions;
mod terminal;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use error::ApiError;
pub use serve::serve;

use crate::certs::Authority;
use crate::config::ApiConfig;
use crate::control::ControlPlane;
use crate::store::Store;

/// Shared by all handlers.
pub struct ApiState {
    pub store: Store,
    /// This process's audit queue, which the trail's readers wait on (`None`: off).
    pub audit: Option<Arc<crate::audit::AuditSubscriber>>,
    pub control: Arc<dyn ControlPlane>,
    /// The address users type, for `ssh.host`/`ssh.port` in sandbox details.
    pub public_host: String,
    pub public_port: u16,
    /// The user CA, when the gateway issues certificates.
    pub authority: Option<Arc<Authority>>,
    /// `[routing] domain`, for clients that set themselves up (`ssh-gateway setup`).
    pub domain: Option<String>,
    /// The SSH host keys' public halves, for clients' known_hosts.
    pub host_keys: Vec<russh::keys::PublicKey>,
    /// The fronts' public addresses (`fronts.*.public_address`), for clients.
    pub fronts: AdvertisedFronts,
    /// Set when the gateway starts draining: `/readyz` answers 503 from then on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Where session recordings are (`[recording] dir`), when recording is on.
    pub recordings: Option<std::path::PathBuf>,
    /// The way into SSH for the browser terminal (`api.terminal`); `None`: off.
    pub terminal: Option<Arc<crate::ssh::loopback::Loopback>>,
    /// How long the terminal's page has to send its login once its socket is open
    /// (`api.header_timeout_secs`: the login is its headers).
    pub terminal_login: Duration,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AdvertisedFronts {
    pub tls: Option<String>,
    pub connect: Option<String>,
}

pub fn router(state: Arc<ApiState>, limits: &ApiConfig) -> Router {
    Router::new()
        .merge(keys::router())
        .merge(certificates::router())
        .merge(sandboxes::router())
        .merge(sessions::router())
        .merge(terminal::router())
        .route("/healthz", get(health))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/control-plane.openapi.yaml", get(control_plane_contract))
        .route("/openapi.json", get(api_contract))
        .fallback(no_such_path)
        .method_not_allowed_fallback(no_such_method)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout(),
            request_deadline,
        ))
        .with_state(state)
}

/// Bounds a request from its headers to its response. The header timeout alone
/// cannot stop a client that sends `Content-Length: 60000` and then one byte every
/// few seconds: each read makes progress, so only a deadline on the whole ends it.
async fn request_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request took longer than {} s (api.request_timeout_secs); send the whole body at once",
                    limit.as_secs()
                ),
            )
            .into_response();
            // The rest of the body may still be on its way: the connection cannot be
            // reused, so say it is closing.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// The contract an HTTP control plane implements (`[control] kind = "http"`).
const CONTROL_PLANE_OPENAPI: &str = include_str!("../../docs/control-plane.openapi.yaml");

/// This API's own contract, checked against the running server in CI (schemathesis).
const API_OPENAPI: &str = include_str!("../../docs/api.openapi.json");

async fn api_contract() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], API_OPENAPI)
}

/// Errors are JSON everywhere, unknown paths and methods included.
async fn no_such_path() -> ApiError {
    ApiError::not_found("no such API path (see /openapi.json)")
}

async fn no_such_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take that method (see /openapi.json)",
    )
}

async fn control_plane_contract() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        CONTROL_PLANE_OPENAPI,
    )
}

/// Prometheus text format. Unauthenticated, like most exporters: every label is a
/// reason or a kind, never a user, key or target; keep the API listener private, or
/// scrape it from inside the cluster.
async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::global().render(),
    )
}

/// The process is up and serving HTTP (a liveness probe: never the database's fault).
async fn live() -> &'static str {
    "ok\n"
}

/// Whether new connections should come here: not once draining has begun (a
/// readiness probe; the load balancer stops sending SSH connections).
async fn ready(State(state): State<Arc<ApiState>>) -> Result<&'static str, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: this gateway is shutting down",
        ));
    }
    Ok("ok\n")
}

async fn health(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
) -> Result<&'static str, ApiError> {
    // Unavailable, not an internal error: the probe's answer while the database is down.
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "health check: the database does not answer");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer",
        ));
    }
    Ok("ok\n")
}
