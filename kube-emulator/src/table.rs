//! Server-side printing (`Table`) for `kubectl get`.

use serde_json::{Value, json};

use crate::objects::Kind;

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
pub fn table(kind: Kind, items: &[Value], rv: u64) -> Value {
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
