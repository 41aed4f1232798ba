//! `GET /users/me/sessions`: the caller's own audit trail, newest first, a page at a
//! time (`?limit=` up to 100, `?after=` the previous page's `next`).
//! `GET /admin/sessions`: everyone's, or one user's (`?user=NAME`), for admins.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Caller};
use super::keys::rfc3339;
use super::{ApiError, ApiState};
use crate::store::{AuditChannel, AuditConnection, AuditCursor, AuditFilter};

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/users/me/sessions", get(own))
        .route("/users/me/sessions/{id}/recording", get(recording))
        .route("/admin/sessions", get(everyone))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<u32>,
    after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhichChannel {
    /// The channel number; without it, the connection's first recorded channel.
    channel: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPage {
    limit: Option<u32>,
    after: Option<String>,
    /// A user name as recorded (deleted users included).
    user: Option<String>,
}

#[derive(Serialize)]
pub struct SessionsView {
    pub sessions: Vec<SessionView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Serialize)]
pub struct SessionView {
    id: String,
    user: String,
    key_id: String,
    key_fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_serial: Option<i64>,
    source_address: String,
    target: String,
    started_at: String,
    /// Absent while the connection is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
    bytes_in: i64,
    bytes_out: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_reason: Option<String>,
    channels: Vec<ChannelView>,
}

#[derive(Serialize)]
pub struct ChannelView {
    channel: i64,
    kind: String,
    program: String,
    started_at: String,
    ended_at: String,
    bytes_in: i64,
    bytes_out: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_status: Option<i64>,
    outcome: String,
    /// Whether `GET /users/me/sessions/{id}/recording?channel=N` has it.
    recorded: bool,
}

impl From<AuditChannel> for ChannelView {
    fn from(c: AuditChannel) -> Self {
        Self {
            channel: c.channel,
            kind: c.kind,
            program: c.program,
            started_at: rfc3339(c.started_at),
            ended_at: rfc3339(c.ended_at),
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            exit_status: c.exit_status,
            outcome: c.outcome,
            recorded: c.recording.is_some(),
        }
    }
}

impl From<AuditConnection> for SessionView {
    fn from(c: AuditConnection) -> Self {
        Self {
            id: c.id,
            user: c.user_name,
            key_id: c.key_id,
            key_fingerprint: c.key_fingerprint,
            certificate_serial: c.certificate_serial,
            source_address: c.source_address,
            target: c.target,
            started_at: rfc3339(c.started_at),
            ended_at: c.ended_at.map(rfc3339),
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            close_reason: c.close_reason,
            channels: c.channels.into_iter().map(ChannelView::from).collect(),
        }
    }
}

async fn own(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<SessionsView>, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = AuditFilter::UserId(&caller.0.id);
    list(&state, filter, page.limit, page.after.as_deref()).await
}

/// The owner's recording of one of their sessions' PTY channels, as asciicast v2.
/// Someone else's session and one that does not exist read the same.
async fn recording(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    which: Result<Query<WhichChannel>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Query(which) = which.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let none = || ApiError::not_found("no such recording");
    if !(id.starts_with("ses_")
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(none());
    }
    let dir = state.recordings.as_ref().ok_or_else(none)?;
    caught_up(&state).await;
    let sessions = state
        .store
        .audit_sessions(AuditFilter::Session(&id), None, 1)
        .await
        .map_err(ApiError::internal)?;
    let session = sessions
        .into_iter()
        .find(|s| s.id == id && s.user_id == caller.0.id)
        .ok_or_else(none)?;
    let file = session
        .channels
        .iter()
        .filter(|c| which.channel.is_none_or(|n| c.channel == n))
        .find_map(|c| c.recording.clone())
        .ok_or_else(none)?;
    // The name is the gateway's own (rec_….cast); checked anyway before it is a path.
    if !(file.starts_with("rec_")
        && file.ends_with(".cast")
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
    {
        return Err(none());
    }
    let opened = tokio::fs::File::open(dir.join(&file)).await;
    let file = match opened {
        Ok(f) => f,
        // Recorded on another replica, or pruned.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(none()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-asciicast")],
        body,
    )
        .into_response())
}

async fn everyone(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    page: Result<Query<AdminPage>, QueryRejection>,
) -> Result<Json<SessionsView>, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = match page.user.as_deref() {
        None => AuditFilter::Everyone,
        Some(name) if crate::store::valid_user_name(name) => AuditFilter::UserName(name),
        Some(_) => return Err(ApiError::bad_request("user: not a valid user name")),
    };
    // Reading other people's trails is itself worth a line in the log (the name is
    // valid by now: plain characters only).
    tracing::info!(
        admin = %admin.0.0.name,
        user = page.user.as_deref().unwrap_or("*"),
        "admin API: audit trail read"
    );
    list(&state, filter, page.limit, page.after.as_deref()).await
}

/// Longest a reader waits for this process's queued audit records to be stored.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Lets what this gateway has queued reach the table first: the session a user just
/// opened is in the list they ask for next.
async fn caught_up(state: &ApiState) {
    if let Some(audit) = &state.audit {
        audit.flushed(CATCH_UP).await;
    }
}

async fn list(
    state: &ApiState,
    filter: AuditFilter<'_>,
    limit: Option<u32>,
    after: Option<&str>,
) -> Result<Json<SessionsView>, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = match after {
        None => None,
        Some(s) => Some(AuditCursor::decode(s).ok_or_else(|| {
            ApiError::bad_request("after: not a cursor this API returned as `next`")
        })?),
    };
    caught_up(state).await;
    // One more than asked tells whether there is a next page.
    let mut rows = state
        .store
        .audit_sessions(filter, after.as_ref(), limit + 1)
        .await
        .map_err(ApiError::internal)?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| {
            AuditCursor {
                started_at: last.started_at,
                id: last.id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(SessionsView {
        sessions: rows.into_iter().map(SessionView::from).collect(),
        next,
    }))
}
