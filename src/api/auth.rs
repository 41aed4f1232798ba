//! `Authorization: Bearer <token>` → the calling user.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::{ApiError, ApiState};
use crate::control::{Credential, Principal};
use crate::store::{StoreError, User};

/// The authenticated caller of an API request, and the id of the token it came with.
pub struct Caller(pub User, pub String);

impl Caller {
    /// API callers act with the same identity rules as SSH users.
    pub fn principal(&self) -> Principal {
        Principal::new(
            self.0.id.clone(),
            self.0.name.clone(),
            Credential::ApiToken { id: self.1.clone() },
        )
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <token> header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        match state.store.token_login(token).await {
            Ok((user, token_id)) => Ok(Caller(user, token_id)),
            Err(StoreError::NotFound) => Err(unauthorized("invalid or revoked token")),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}

/// A caller whose user holds the admin right (`ssh-gateway admin user admin NAME`),
/// checked on every request so taking the right back works at once.
pub struct Admin(pub Caller);

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match state.store.is_admin(&caller.0.id).await {
            Ok(true) => Ok(Admin(caller)),
            Ok(false) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this endpoint needs a token of an admin user",
            )),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}
