//! `/api/v1/sandboxes/{id}`: a sandbox and how to reach it over SSH. Unknown and
//! forbidden sandboxes are the same 404.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::auth::Caller;
use super::keys::rfc3339;
use super::{ApiError, ApiState};
use crate::control::ControlError;
use crate::route;

pub fn router() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/sandboxes/{id}", get(detail))
}

async fn detail(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let target = route::route(&id).map_err(|e| ApiError::not_found(e.to_string()))?;
    let info = match state.control.describe(&caller.principal(), &target).await {
        Ok(info) => info,
        Err(e @ ControlError::NoAccess(_)) => return Err(ApiError::not_found(e.to_string())),
        Err(e @ (ControlError::NotReady(_) | ControlError::Paused(_))) => {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ));
        }
        Err(e @ (ControlError::Unavailable(_) | ControlError::Denied(_))) => {
            tracing::warn!(error = %e.detail(), "control plane unavailable");
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ));
        }
    };
    Ok(Json(json!({
        "id": info.id,
        "status": info.status,
        "owner": info.owner,
        "created_at": rfc3339(info.created_at),
        "ssh": {
            "host": state.public_host,
            "port": state.public_port,
            "username": info.id,
        },
    })))
}
