//! Short-lived certificates: `POST /users/me/ssh-certificates` signs the caller's key
//! (registering it first if it is new), `GET /api/v1/ssh/user-ca` serves the CA's
//! public key, and `GET /api/v1/ssh/gateway` what a client needs to set itself up.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, ApiState};
use crate::certs::{Authority, CertRequest, IssueError, parse_source_address};
use crate::keys::{Escaped, ParsedKey, check_key_name, parse_public_key};
use crate::store::{IssuedCertificate, NewKey, StoreError, User};

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/users/me/ssh-certificates", post(create))
        .route("/api/v1/ssh/user-ca", get(user_ca))
        .route("/api/v1/ssh/gateway", get(gateway_info))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCertificate {
    /// An authorized_keys line: a key of the caller's, or a new one to register.
    public_key: String,
    /// Default: `certificates.max_ttl_secs`.
    ttl_secs: Option<u64>,
    /// The name a new key is registered under (default: its comment, else
    /// "certificate key").
    name: Option<String>,
    /// Networks the certificate may be used from (`source-address`), e.g.
    /// `["203.0.113.0/24"]`.
    #[serde(default)]
    source_address: Vec<String>,
}

#[derive(Serialize)]
struct CertificateView {
    /// The `…-cert-v01@openssh.com` line, for `CertificateFile`.
    certificate: String,
    serial: u64,
    principals: Vec<String>,
    valid_after: String,
    valid_before: String,
    /// The registered key the certificate is for.
    key_id: String,
}

fn not_issuing() -> ApiError {
    ApiError::not_found("this gateway does not issue certificates (no [certificates] ca_key_file)")
}

/// Serials are random and below 2^53, so JSON clients read them exactly.
fn new_serial() -> u64 {
    rand::random::<u64>() % ((1 << 53) - 1) + 1
}

fn rfc3339_secs(secs: u64) -> String {
    super::keys::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
}

async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Result<Json<CreateCertificate>, JsonRejection>,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let Json(body) = body?;
    let authority = state.authority.as_ref().ok_or_else(not_issuing)?;
    let parsed =
        parse_public_key(&body.public_key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ttl = Duration::from_secs(body.ttl_secs.unwrap_or(authority.max_ttl().as_secs()));
    authority
        .check_ttl(ttl)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let source_address = if body.source_address.is_empty() {
        Vec::new()
    } else {
        parse_source_address(&body.source_address.join(","))
            .map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let public_key = russh::keys::PublicKey::from_openssh(&parsed.normalized)
        .map_err(|e| ApiError::bad_request(format!("public_key: {e}")))?;
    let key_id = key_of_caller(&state, &caller.0, &parsed, body.name.as_deref()).await?;
    issue(
        &state,
        authority,
        &caller,
        &key_id,
        public_key.key_data(),
        ttl,
        &source_address,
    )
    .await
    .map(|view| (StatusCode::CREATED, Json(view)))
}

/// The id of the caller's key with this fingerprint, registering it if nobody has it.
async fn key_of_caller(
    state: &ApiState,
    caller: &User,
    parsed: &ParsedKey,
    name: Option<&str>,
) -> Result<String, ApiError> {
    let others = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "this key is registered to another account; a key can identify only one user",
        )
    };
    // A name is checked whether or not it is used: a bad one is refused the same way
    // for a new key and for one already registered.
    let name = match name {
        Some(n) => check_key_name(n).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => check_key_name(&parsed.comment).unwrap_or("certificate key"),
    };
    match state.store.key_by_fingerprint(&parsed.fingerprint).await {
        Ok(Some(key)) if key.user_id == caller.id => return Ok(key.id),
        Ok(Some(_)) => return Err(others()),
        Ok(None) => {}
        Err(e) => return Err(ApiError::internal(e)),
    }
    let new = NewKey {
        user_id: &caller.id,
        name,
        key: parsed,
    };
    match state.store.add_key(new).await {
        Ok(key) => {
            tracing::info!(user = %caller.name, key = %key.id, name = %Escaped(&key.name), fingerprint = %key.fingerprint_sha256, "SSH key added (for a certificate)");
            Ok(key.id)
        }
        // Registered meanwhile by a concurrent request: whose is it now?
        Err(StoreError::Conflict(_)) => {
            match state.store.key_by_fingerprint(&parsed.fingerprint).await {
                Ok(Some(key)) if key.user_id == caller.id => Ok(key.id),
                Ok(_) => Err(others()),
                Err(e) => Err(ApiError::internal(e)),
            }
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

async fn issue(
    state: &ApiState,
    authority: &Authority,
    Caller(caller, token_id): &Caller,
    key_id: &str,
    public_key: &russh::keys::ssh_key::public::KeyData,
    ttl: Duration,
    source_address: &[crate::conn::admission::IpNet],
) -> Result<CertificateView, ApiError> {
    // A serial collision (one in millions at 2^53) is retried with another.
    for _ in 0..3 {
        let serial = new_serial();
        let cert = authority
            .issue(&CertRequest {
                public_key,
                user_name: &caller.name,
                key_id,
                serial,
                ttl,
                source_address,
                now: crate::certs::unix_now(),
            })
            .map_err(|e| match e {
                IssueError::Ttl { .. } => ApiError::bad_request(e.to_string()),
                IssueError::Sign(_) => ApiError::internal(e),
            })?;
        let record = IssuedCertificate {
            serial,
            user_id: caller.id.clone(),
            key_id: key_id.to_owned(),
            principal: caller.name.clone(),
            valid_after: cert.valid_after(),
            valid_before: cert.valid_before(),
            token_id: Some(token_id.clone()),
        };
        match state.store.record_certificate(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => continue,
            // The key was deleted between lookup and record: the foreign key refused it.
            Err(StoreError::Db(e)) if is_foreign_key_violation(&e) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "the key was deleted while its certificate was being issued; try again",
                ));
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
        let line = cert.to_openssh().map_err(ApiError::internal)?;
        tracing::info!(user = %caller.name, key = %key_id, serial, valid_before = cert.valid_before(), "certificate issued");
        return Ok(CertificateView {
            certificate: line,
            serial,
            principals: cert.valid_principals().to_vec(),
            valid_after: rfc3339_secs(cert.valid_after()),
            valid_before: rfc3339_secs(cert.valid_before()),
            key_id: key_id.to_owned(),
        });
    }
    Err(ApiError::internal(
        "three certificate serial collisions in a row",
    ))
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

async fn user_ca(State(state): State<Arc<ApiState>>) -> Result<impl IntoResponse, ApiError> {
    let authority = state.authority.as_ref().ok_or_else(not_issuing)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", authority.public_line()),
    ))
}

#[derive(Serialize)]
struct GatewayInfo {
    /// `[routing] domain`: `<target>.<domain>` host names route.
    domain: Option<String>,
    /// The SSH host keys, as known_hosts key fields (`ssh-ed25519 AAAA…`).
    host_keys: Vec<String>,
    /// The user CA's public key line, when the gateway issues certificates.
    user_ca: Option<String>,
    /// Longest certificate lifetime, when it issues them.
    certificate_max_ttl_secs: Option<u64>,
    /// Where clients reach the TLS and CONNECT fronts, where advertised.
    fronts: super::AdvertisedFronts,
}

/// Public: a client needs it before it has anything to authenticate with, and it holds
/// only public keys and the domain.
async fn gateway_info(State(state): State<Arc<ApiState>>) -> Json<GatewayInfo> {
    Json(GatewayInfo {
        domain: state.domain.clone(),
        host_keys: state
            .host_keys
            .iter()
            .filter_map(|k| {
                let mut k = k.clone();
                k.set_comment("");
                k.to_openssh().ok()
            })
            .collect(),
        user_ca: state.authority.as_ref().map(|a| a.public_line().to_owned()),
        certificate_max_ttl_secs: state.authority.as_ref().map(|a| a.max_ttl().as_secs()),
        fronts: state.fronts.clone(),
    })
}
