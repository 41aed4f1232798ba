//! The Helm chart rendered by real Helm (helm-python-sdk: Helm's Go library; .ci/run
//! installs it with kubernetes-validate in /opt/deploy-tools), `lint --strict`ed, every
//! object checked against the Kubernetes OpenAPI schema in strict mode
//! (tests/helm/render.py). Shared by tests/helm.rs and tests/helm_rbac.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use ssh_gateway::config::Config;

/// The Kubernetes version the objects are validated against (one kubernetes-validate
/// ships; the chart's kubeVersion allows 1.29 and later).
pub const KUBERNETES: &str = "1.35.0";
pub const FAKE_DATABASE_URL: &str = "postgres://gw:secret@db.internal/gw";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn tool(name: &str) -> PathBuf {
    let installed = Path::new("/opt/deploy-tools/bin").join(name);
    if installed.exists() {
        return installed;
    }
    PathBuf::from(name)
}

/// What `helm install RELEASE helm/ssh-gateway -n NAMESPACE --values …` renders.
pub struct Rendered {
    pub objects: Vec<Value>,
    pub lint: Value,
    pub unvalidated: Vec<String>,
    pub notes: String,
}

/// Renders as release `release` in `namespace` with `values`, or returns Helm's (or
/// the validator's) refusal.
pub fn try_render(values: Value, release: &str, namespace: &str) -> Result<Rendered, String> {
    let request = json!({
        "chart": root().join("helm/ssh-gateway"),
        "values": values,
        "release": release,
        "namespace": namespace,
        "kubernetes": KUBERNETES,
    });
    let mut child = Command::new(tool("python3"))
        .arg(root().join("tests/helm/render.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (.ci/run makes /opt/deploy-tools)");
    serde_json::to_writer(child.stdin.take().unwrap(), &request).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "render.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    if let Some(error) = answer["error"].as_str() {
        return Err(error.to_owned());
    }
    let notes = answer["manifests"]["ssh-gateway/templates/NOTES.txt"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Rendered {
        objects: serde_json::from_value(answer["objects"].take()).unwrap(),
        lint: answer["lint"].take(),
        unvalidated: serde_json::from_value(answer["unvalidated"].take()).unwrap(),
        notes,
    })
}

/// As `try_render`, and the chart must take the values and lint clean.
pub fn render(values: Value, release: &str, namespace: &str) -> Rendered {
    let r =
        try_render(values, release, namespace).unwrap_or_else(|e| panic!("the chart refused: {e}"));
    // lint --strict: nothing at warning level or above.
    let findings: Vec<&Value> = r.lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap() >= 2)
        .collect();
    assert!(findings.is_empty(), "helm lint --strict: {findings:?}");
    assert_eq!(r.lint["errors"], json!([]), "helm lint: {}", r.lint);
    r
}

impl Rendered {
    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<_> = self
            .all(kind)
            .into_iter()
            .filter(|o| o["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "{kind}/{name}: {found:?}");
        found[0]
    }

    /// The chart's objects are named `<release>-ssh-gateway…`; the tests' release is
    /// `gw`.
    pub fn deployment(&self) -> &Value {
        self.one("Deployment", "gw-ssh-gateway")
    }

    pub fn pod(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    pub fn gateway_container(&self) -> &Value {
        container(self.pod(), "ssh-gateway")
    }

    /// The gateway.toml the replicas mount.
    pub fn gateway_toml(&self) -> String {
        self.one("ConfigMap", "gw-ssh-gateway")["data"]["gateway.toml"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// That file as the gateway reads it, with the container's environment (the
    /// database URL comes from a Secret, here a stand-in).
    pub fn config(&self) -> Config {
        Config::from_toml(&self.gateway_toml(), "gateway.toml", self.env().into_iter())
            .unwrap_or_else(|e| panic!("{e}\n{}", self.gateway_toml()))
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let env = self.gateway_container()["env"].as_array().unwrap();
        env.iter()
            .map(|e| {
                let value = match e["value"].as_str() {
                    Some(v) => v.to_owned(),
                    None => {
                        assert!(e["valueFrom"]["secretKeyRef"].is_object(), "{e}");
                        FAKE_DATABASE_URL.to_owned()
                    }
                };
                (e["name"].as_str().unwrap().to_owned(), value)
            })
            .collect()
    }
}

pub fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod[k].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}
