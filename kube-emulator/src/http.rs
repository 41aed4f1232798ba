//! REST surface: discovery, pods and statefulsets (get, list, watch, create, patch,
//! delete, scale), with Status errors and Table output the way kubectl expects them.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::objects::{Kind, Store, StoreError};
use crate::selector::{Selector, field_matches};
use crate::{exec, portforward};

pub struct AppState {
    pub store: Store,
    pub token: Option<String>,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(core_resources))
        .route("/apis/apps", get(apps_group))
        .route("/apis/apps/v1", get(apps_resources))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/api/v1", get(openapi_core))
        .route("/openapi/v3/apis/apps/v1", get(openapi_apps))
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

/// Bearer-token check, when the emulator was started with one.
async fn authenticate(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return status_response(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
                None,
            );
        }
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

fn json_response(code: StatusCode, value: &Value) -> Response {
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

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1", "minor": "31", "gitVersion": "v1.31.0-kube-emulator",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0", "compiler": "gc",
            "platform": "linux/amd64",
        }),
    )
}

async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
    )
}

fn apps_group_value() -> Value {
    json!({"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
           "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}})
}

async fn api_groups() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps_group_value()]}),
    )
}

async fn apps_group() -> Response {
    let mut group = apps_group_value();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    json_response(StatusCode::OK, &group)
}

fn resource(name: &str, kind: &str, verbs: &[&str], short: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs, "shortNames": short})
}

async fn core_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource("pods", "Pod", &["create", "delete", "get", "list", "patch", "update", "watch"], &["po"]),
            resource("pods/exec", "PodExecOptions", &["create", "get"], &[]),
            resource("pods/portforward", "PodPortForwardOptions", &["create", "get"], &[]),
            resource("pods/status", "Pod", &["get", "patch", "update"], &[]),
        ]}),
    )
}

async fn apps_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            resource("statefulsets", "StatefulSet", &["create", "delete", "get", "list", "patch", "update", "watch"], &["sts"]),
            resource("statefulsets/scale", "Scale", &["get", "patch", "update"], &[]),
            resource("statefulsets/status", "StatefulSet", &["get", "patch", "update"], &[]),
        ]}),
    )
}

/// OpenAPI v3 discovery. kubectl reads it to learn that the server validates fields
/// itself (`fieldValidation`), which spares it the full client-side schema download.
async fn openapi_root() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"paths": {
            "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=emulator1"},
            "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=emulator1"},
        }}),
    )
}

fn openapi_doc(collection: &str, group: &str, version: &str, kind: &str) -> Value {
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let op = |action: &str| {
        json!({"parameters": [param("fieldValidation"), param("dryRun"), param("fieldManager")],
               "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "responses": {}})
    };
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.31.0"},
        "paths": {
            collection: {"post": op("post")},
            format!("{collection}/{{name}}"): {"patch": op("patch"), "put": op("put")},
        },
        "components": {"schemas": {}},
    })
}

async fn openapi_core() -> Response {
    json_response(
        StatusCode::OK,
        &openapi_doc("/api/v1/namespaces/{namespace}/pods", "", "v1", "Pod"),
    )
}

async fn openapi_apps() -> Response {
    json_response(
        StatusCode::OK,
        &openapi_doc(
            "/apis/apps/v1/namespaces/{namespace}/statefulsets",
            "apps",
            "v1",
            "StatefulSet",
        ),
    )
}

/// List query parameters the emulator honours.
#[derive(Default)]
struct ListQuery {
    labels: Selector,
    fields: Option<String>,
    watch: bool,
    resource_version: Option<String>,
    timeout: Option<u64>,
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

fn selected(q: &ListQuery, object: &Value) -> bool {
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
        return watch(store.clone(), kind, ns.map(str::to_owned), q);
    }
    let (items, rv) = store.list(kind, ns);
    let items: Vec<Value> = items.into_iter().filter(|o| selected(&q, o)).collect();
    if wants_table(headers) {
        return json_response(StatusCode::OK, &table(kind, &items, rv));
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

fn age(object: &Value) -> String {
    let created = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match created {
        Some(t) => format!(
            "{}s",
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .num_seconds()
                .max(0)
        ),
        None => "<unknown>".into(),
    }
}

/// Server-side printing for `kubectl get`.
fn table(kind: Kind, items: &[Value], rv: u64) -> Value {
    let col = |name: &str, ty: &str| json!({"name": name, "type": ty, "format": if name == "Name" {"name"} else {""}, "description": "", "priority": 0});
    let (columns, rows): (Vec<Value>, Vec<Value>) = match kind {
        Kind::Pod => (
            vec![col("Name", "string"), col("Ready", "string"), col("Status", "string"), col("Restarts", "string"), col("Age", "string")],
            items
                .iter()
                .map(|p| {
                    let statuses = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
                    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                    json!({"cells": [p["metadata"]["name"], format!("{ready}/{}", statuses.len()), p["status"]["phase"], "0", age(p)],
                           "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]}})
                })
                .collect(),
        ),
        Kind::StatefulSet => (
            vec![col("Name", "string"), col("Ready", "string"), col("Age", "string")],
            items
                .iter()
                .map(|s| {
                    let ready = format!("{}/{}", s["status"]["readyReplicas"].as_u64().unwrap_or(0), s["spec"]["replicas"].as_u64().unwrap_or(0));
                    json!({"cells": [s["metadata"]["name"], ready, age(s)],
                           "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": s["metadata"]}})
                })
                .collect(),
        ),
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()},
           "columnDefinitions": columns, "rows": rows})
}

/// A watch: current objects as ADDED (unless resuming from a resourceVersion), then
/// every change, one JSON object per line, until the timeout.
fn watch(store: Store, kind: Kind, ns: Option<String>, q: ListQuery) -> Response {
    let mut events = store.subscribe();
    let since: Option<u64> = q
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let (initial, _) = store.list(kind, ns.as_deref());
    let initial: Vec<Value> = if since.is_some() {
        Vec::new()
    } else {
        initial.into_iter().filter(|o| selected(&q, o)).collect()
    };
    let timeout = std::time::Duration::from_secs(q.timeout.unwrap_or(1800).min(3600));
    let stream = async_stream(move |tx| async move {
        for object in initial {
            if tx.send(line("ADDED", &object)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(e)) => e,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                _ => return,
            };
            if event.kind != kind || ns.as_deref().is_some_and(|n| n != event.namespace) {
                continue;
            }
            if !selected(&q, &event.object) {
                continue;
            }
            if tx.send(line(event.action, &event.object)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn line(action: &str, object: &Value) -> Result<Bytes, std::io::Error> {
    let mut text = json!({"type": action, "object": object}).to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
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
        Ok(v) if wants_table(h) => {
            json_response(StatusCode::OK, &table(kind, &[v], store.resource_version()))
        }
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
