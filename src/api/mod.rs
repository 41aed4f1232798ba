//! REST API stage: the key API users upload their SSH keys through, sandbox details
//! with connection info, and health. Handlers call the store and control plane; every
//! error is JSON that says what is wrong and nothing about internals.

mod auth;
mod error;
mod keys;
mod sandboxes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

pub use error::ApiError;

use crate::control::ControlPlane;
use crate::store::Store;

/// Shared by all handlers.
pub struct ApiState {
    pub store: Store,
    pub control: Arc<dyn ControlPlane>,
    /// The address users type, for `ssh.host`/`ssh.port` in sandbox details.
    pub public_host: String,
    pub public_port: u16,
}

pub fn router(state: Arc<ApiState>, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(keys::router())
        .merge(sandboxes::router())
        .route("/healthz", get(health))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn health(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
) -> Result<&'static str, ApiError> {
    state.store.ping().await.map_err(ApiError::internal)?;
    Ok("ok\n")
}
