//! `/users/me/ssh-keys`: list, add, delete the caller's SSH public keys.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, ApiState};
use crate::keys::{Escaped, check_key_name, parse_public_key};
use crate::store::{NewKey, SshKey, StoreError};

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/users/me/ssh-keys", get(list).post(create))
        .route("/users/me/ssh-keys/{id}", delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    public_key: String,
}

#[derive(Serialize)]
pub struct KeyView {
    id: String,
    name: String,
    public_key: String,
    key_type: String,
    fingerprint_sha256: String,
    comment: String,
    created_at: String,
    updated_at: String,
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<SshKey> for KeyView {
    fn from(k: SshKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            public_key: k.public_key,
            key_type: k.key_type,
            fingerprint_sha256: k.fingerprint_sha256,
            comment: k.comment,
            created_at: rfc3339(k.created_at),
            updated_at: rfc3339(k.updated_at),
        }
    }
}

async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let keys = state
        .store
        .list_keys(&caller.0.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let Json(body) = body?;
    let name = check_key_name(&body.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let parsed =
        parse_public_key(&body.public_key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let new = NewKey {
        user_id: &caller.0.id,
        name,
        key: &parsed,
    };
    match state.store.add_key(new).await {
        Ok(key) => {
            tracing::info!(user = %caller.0.name, key = %key.id, name = %Escaped(&key.name), fingerprint = %key.fingerprint_sha256, "SSH key added");
            Ok((StatusCode::CREATED, Json(key.into())))
        }
        Err(StoreError::Conflict(message)) => Err(ApiError::new(StatusCode::CONFLICT, message)),
        Err(e) => Err(ApiError::internal(e)),
    }
}

async fn remove(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // Only ids this API hands out reach the store (PostgreSQL refuses a NUL in text,
    // which would read as a 500).
    let plausible = id
        .strip_prefix("key_")
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if !plausible {
        return Err(ApiError::not_found(format!(
            "no SSH key {:?} on your account",
            crate::keys::escape(&id)
        )));
    }
    match state.store.delete_key(&caller.0.id, &id).await {
        Ok(()) => {
            tracing::info!(user = %caller.0.name, key = %id, "SSH key deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(ApiError::not_found(format!(
            "no SSH key {id:?} on your account"
        ))),
        Err(e) => Err(ApiError::internal(e)),
    }
}
