//! REST surface: discovery, pods and statefulsets (get, list, watch, create, patch,
//! delete, scale), with Status errors and Table output the way kubectl expects them.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::objects::{Kind, Store, StoreError};
use crate::rbac::{Attributes, Rbac};
use crate::selector::{Selector, field_matches};
use crate::{discovery, exec, portforward, table, watch};

pub struct AppState {
    pub store: Store,
    pub token: Option<String>,
    pub rbac: std::sync::RwLock<Option<Arc<Rbac>>>,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis/apps", get(discovery::apps_group))
        .route("/apis/apps/v1", get(discovery::apps_resources))
        .route("/openapi/v3", get(discovery::openapi_root))
        .route("/openapi/v3/api/v1", get(discovery::openapi_core))
        .route("/openapi/v3/apis/apps/v1", get(discovery::openapi_apps))
        .route("/api/v1/pods", get(list_all_pods))
        .route(
            "/api/v1/namespaces/{ns}/pods",
            get(list_pods).post(create_pod),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(get_pod).delete(delete_pod).patch(patch_pod),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            get(exec::handle).post(exec::handle),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            get(portforward::handle).post(portforward::handle),
        )
        .route("/apis/apps/v1/statefulsets", get(list_all_sets))
        .route(
            "/apis/apps/v1/namespaces/{ns}/statefulsets",
            get(list_sets).post(create_set),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
            get(get_set).delete(delete_set).patch(patch_set),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale",
            get(get_scale).patch(patch_scale).put(put_scale),
        )
        .fallback(not_found_route)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Authentication and authorization. A ServiceAccount's token (one the RBAC policy
/// knows) is authorized by that policy; the admin token, or any request when the
/// emulator has none, is not restricted; anything else is 401.
async fn authenticate(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let rbac = state.rbac.read().unwrap_or_else(|e| e.into_inner()).clone();
    let account = given
        .as_deref()
        .and_then(|t| rbac.as_ref()?.account(t).cloned());
    if let (Some(rbac), Some(account)) = (&rbac, account) {
        let user = account.user();
        let attributes =
            Attributes::of_request(req.method().as_str(), req.uri().path(), req.uri().query());
        if let Err(denied) = rbac.admit(&user, &attributes) {
            tracing::info!(user = %user.name, method = %req.method(), uri = %req.uri(), message = %denied.message, "forbidden");
            let mut response = ApiError {
                details: Some(denied.details),
                ..ApiError::new(StatusCode::FORBIDDEN, "Forbidden", denied.message)
            }
            .into_response();
            response.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            );
            return response;
        }
        return next.run(req).await;
    }
    if let Some(token) = &state.token
        && given.as_deref() != Some(token.as_str())
    {
        return status_response(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
    }
    next.run(req).await
}

/// An API error; it renders as the `Status` object every API error is.
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        if let Some(d) = self.details {
            body["details"] = d;
        }
        (
            self.code,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

pub fn status_response(
    code: StatusCode,
    reason: &'static str,
    message: &str,
    details: Option<Value>,
) -> Response {
    ApiError {
        code,
        reason,
        message: message.to_owned(),
        details,
    }
    .into_response()
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, name } => ApiError {
                details: Some(json!({"name": name, "kind": kind.plural()})),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{} \"{name}\" not found", kind.plural()),
                )
            },
            StoreError::AlreadyExists { kind, name } => ApiError {
                details: Some(json!({"name": name, "kind": kind.plural()})),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", kind.plural()),
                )
            },
            StoreError::Invalid(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            }
        }
    }
}

pub fn store_error(e: StoreError) -> Response {
    ApiError::from(e).into_response()
}

pub fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn not_found_route() -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        None,
    )
}

/// List query parameters the emulator honours.
#[derive(Default)]
pub struct ListQuery {
    labels: Selector,
    fields: Option<String>,
    watch: bool,
    pub resource_version: Option<String>,
    pub timeout: Option<u64>,
}

fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::default();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "labelSelector" => q.labels = Selector::parse(&v).map_err(ApiError::bad_request)?,
            "fieldSelector" => q.fields = Some(v.into_owned()),
            "watch" => q.watch = !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"),
            "resourceVersion" => q.resource_version = Some(v.into_owned()),
            "timeoutSeconds" => q.timeout = v.parse().ok(),
            _ => {}
        }
    }
    Ok(q)
}

pub fn selected(q: &ListQuery, object: &Value) -> bool {
    q.labels.matches(object) && q.fields.as_deref().is_none_or(|f| field_matches(f, object))
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

async fn list(
    store: &Store,
    kind: Kind,
    ns: Option<&str>,
    raw: Option<String>,
    headers: &HeaderMap,
) -> Response {
    let q = match parse_list_query(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if q.watch {
        return watch::watch(store.clone(), kind, ns.map(str::to_owned), q);
    }
    let (items, rv) = store.list(kind, ns);
    let items: Vec<Value> = items.into_iter().filter(|o| selected(&q, o)).collect();
    if wants_table(headers) {
        return json_response(StatusCode::OK, &table::table(kind, &items, rv));
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })
}

async fn create(store: &Store, kind: Kind, ns: &str, body: &[u8]) -> Response {
    let object = match body_json(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match store.create(kind, ns, object) {
        Ok(v) => json_response(StatusCode::CREATED, &v),
        Err(e) => store_error(e),
    }
}

/// JSON merge patch (RFC 7386); strategic merge patches are applied the same way,
/// which is right for the fields clients here patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

async fn patch(store: &Store, kind: Kind, ns: &str, name: &str, body: &[u8]) -> Response {
    let patch = match body_json(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match store.update(kind, ns, name, |o| merge_patch(o, &patch)) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => store_error(e),
    }
}

async fn delete(store: &Store, kind: Kind, ns: &str, name: &str) -> Response {
    match store.delete(kind, ns, name) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => store_error(e),
    }
}

async fn list_all_pods(State(s): State<Shared>, RawQuery(q): RawQuery, h: HeaderMap) -> Response {
    list(&s.store, Kind::Pod, None, q, &h).await
}
async fn list_pods(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Response {
    list(&s.store, Kind::Pod, Some(&ns), q, &h).await
}
async fn create_pod(State(s): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Response {
    create(&s.store, Kind::Pod, &ns, &body).await
}
async fn get_pod(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    get_one(&s.store, Kind::Pod, &ns, &name, &h)
}
async fn delete_pod(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    delete(&s.store, Kind::Pod, &ns, &name).await
}
async fn patch_pod(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    patch(&s.store, Kind::Pod, &ns, &name, &body).await
}
async fn list_all_sets(State(s): State<Shared>, RawQuery(q): RawQuery, h: HeaderMap) -> Response {
    list(&s.store, Kind::StatefulSet, None, q, &h).await
}
async fn list_sets(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Response {
    list(&s.store, Kind::StatefulSet, Some(&ns), q, &h).await
}
async fn create_set(State(s): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Response {
    create(&s.store, Kind::StatefulSet, &ns, &body).await
}
async fn get_set(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    get_one(&s.store, Kind::StatefulSet, &ns, &name, &h)
}
async fn delete_set(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    delete(&s.store, Kind::StatefulSet, &ns, &name).await
}
async fn patch_set(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    patch(&s.store, Kind::StatefulSet, &ns, &name, &body).await
}

fn get_one(store: &Store, kind: Kind, ns: &str, name: &str, h: &HeaderMap) -> Response {
    match store.get(kind, ns, name) {
        Ok(v) if wants_table(h) => json_response(
            StatusCode::OK,
            &table::table(kind, &[v], store.resource_version()),
        ),
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => store_error(e),
    }
}

fn scale_of(set: &Value) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": set["metadata"]["name"], "namespace": set["metadata"]["namespace"],
                     "uid": set["metadata"]["uid"], "resourceVersion": set["metadata"]["resourceVersion"],
                     "creationTimestamp": set["metadata"]["creationTimestamp"]},
        "spec": {"replicas": set["spec"]["replicas"]},
        "status": {"replicas": set["status"]["replicas"], "selector": ""},
    })
}

async fn get_scale(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    match s.store.get(Kind::StatefulSet, &ns, &name) {
        Ok(v) => json_response(StatusCode::OK, &scale_of(&v)),
        Err(e) => store_error(e),
    }
}

fn set_replicas(store: &Store, ns: &str, name: &str, replicas: Option<u64>) -> Response {
    let Some(replicas) = replicas else {
        return status_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.replicas: Required value",
            None,
        );
    };
    match store.update(Kind::StatefulSet, ns, name, |o| {
        o["spec"]["replicas"] = json!(replicas);
        let generation = o["metadata"]["generation"].as_u64().unwrap_or(1) + 1;
        o["metadata"]["generation"] = json!(generation);
    }) {
        Ok(v) => json_response(StatusCode::OK, &scale_of(&v)),
        Err(e) => store_error(e),
    }
}

async fn patch_scale(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let patch = match body_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    set_replicas(&s.store, &ns, &name, patch["spec"]["replicas"].as_u64())
}

async fn put_scale(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    patch_scale(State(s), Path((ns, name)), body).await
}
