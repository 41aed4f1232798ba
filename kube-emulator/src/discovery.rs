//! Discovery: version, API groups and resource lists, and the minimal OpenAPI v3 that
//! kubectl consults before `create -f`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::http::json_response;

pub async fn version() -> Response {
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

pub async fn api_versions() -> Response {
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

pub async fn api_groups() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps_group_value()]}),
    )
}

pub async fn apps_group() -> Response {
    let mut group = apps_group_value();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    json_response(StatusCode::OK, &group)
}

fn resource(name: &str, kind: &str, verbs: &[&str], short: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs, "shortNames": short})
}

pub async fn core_resources() -> Response {
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

pub async fn apps_resources() -> Response {
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
pub async fn openapi_root() -> Response {
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

pub async fn openapi_core() -> Response {
    json_response(
        StatusCode::OK,
        &openapi_doc("/api/v1/namespaces/{namespace}/pods", "", "v1", "Pod"),
    )
}

pub async fn openapi_apps() -> Response {
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
