//! The Helm chart (helm/ssh-gateway) and the image (docker/Dockerfile) as an operator
//! meets them. The chart is rendered by real Helm (helm-python-sdk: Helm's Go library;
//! .ci/run installs it with kubernetes-validate and hadolint in /opt/deploy-tools),
//! `lint --strict`ed, and every object checked against the Kubernetes OpenAPI schema
//! in strict mode (tests/helm/render.py); then what an install would do is asserted:
//! the gateway.toml it mounts is one the gateway accepts and says what the values
//! said, the RBAC is exactly what the gateway calls, migrations are a hook, host keys
//! are real OpenSSH keys kept across upgrades, and bad values fail with a message.

mod support;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};
use support::helm::{FAKE_DATABASE_URL, Rendered, container, root, tool};

/// `helm install gw helm/ssh-gateway -n ssh --values …`, or Helm's refusal.
fn try_render(values: Value) -> Result<Rendered, String> {
    support::helm::try_render(values, "gw", "ssh")
}

fn render(values: Value) -> Rendered {
    support::helm::render(values, "gw", "ssh")
}

fn port_named(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> &'a str {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume)
        .unwrap_or_else(|| panic!("no mount of {volume}"))["mountPath"]
        .as_str()
        .unwrap()
}

fn b64(s: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn default_install_is_valid_and_runs_hardened_replicas_the_gateway_accepts() {
    let r = render(json!({}));
    assert!(r.unvalidated.is_empty(), "{:?}", r.unvalidated);
    let d = r.deployment();
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = r.pod();
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );

    // Non-root, read-only root, no capabilities, in every container.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    for c in ["ssh-gateway", "copy-keys"] {
        let sc = &container(pod, c)["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}), "{c}");
    }

    // The gateway listens where the pod spec says, on unprivileged ports.
    let config = r.config();
    let gw = r.gateway_container();
    assert_eq!(
        u64::from(config.ssh.listen.port()),
        port_named(gw, "ssh"),
        "ssh"
    );
    assert_eq!(u64::from(config.api.listen.port()), port_named(gw, "api"));
    assert!(config.ssh.listen.port() >= 1024 && config.ssh.listen.ip().is_unspecified());
    assert!(
        config.api.listen.ip().is_unspecified(),
        "probes reach the API"
    );
    assert_eq!(config.database.url, FAKE_DATABASE_URL);
    assert!(
        !r.gateway_toml().contains("url ="),
        "the database URL stays out of the ConfigMap"
    );
    assert!(matches!(
        config.backend,
        ssh_gateway::config::BackendConfig::Kubernetes
    ));
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        assert_eq!(gw[probe]["httpGet"]["path"], path);
        assert_eq!(gw[probe]["httpGet"]["port"], "api");
    }
    // Draining sessions get their time before the kubelet's SIGKILL.
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > config.ssh.drain_timeout_secs);
    let db = &gw["env"].as_array().unwrap()[0];
    assert_eq!(db["name"], "SSH_GATEWAY__DATABASE__URL");
    assert_eq!(
        db["valueFrom"]["secretKeyRef"],
        json!({"name": "ssh-gateway-database", "key": "url"})
    );

    // SSH from outside: 22 on the balancer, onto the container's port, client
    // addresses kept.
    let svc = r.one("Service", "gw-ssh-gateway");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP"}])
    );
    let api = r.one("Service", "gw-ssh-gateway-api");
    assert_eq!(api["spec"]["type"], "ClusterIP");
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        port_named(gw, "api").to_string()
    );
    let pdb = r.one("PodDisruptionBudget", "gw-ssh-gateway");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(
        r.notes
            .contains("kubectl -n ssh get service gw-ssh-gateway")
    );
}

#[test]
fn the_generated_host_key_is_an_openssh_key_the_chart_keeps() {
    let r = render(json!({}));
    let secret = r.one("Secret", "gw-ssh-gateway-host-keys");
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let private = b64(&secret["data"]["ssh_host_ed25519_key"]);
    let public = b64(&secret["data"]["ssh_host_ed25519_key.pub"]);
    // The format the gateway's host key loader reads, and its public half is the .pub.
    let key = russh::keys::PrivateKey::from_openssh(&private).expect("an OpenSSH private key");
    assert_eq!(key.algorithm(), russh::keys::Algorithm::Ed25519);
    let derived = key.public_key().to_openssh().unwrap();
    assert!(public.starts_with(&derived), "{public} vs {derived}");

    // The seed and the public key belong together: OpenSSH signs with the private
    // file and verifies against the .pub.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key_file = d.join("ssh_host_ed25519_key");
    std::fs::write(&key_file, &private).unwrap();
    std::fs::set_permissions(
        &key_file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(d.join("message"), "hello\n").unwrap();
    let sign = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(&key_file)
        .arg(d.join("message"))
        .output()
        .unwrap();
    assert!(sign.status.success(), "{sign:?}");
    std::fs::write(d.join("allowed"), format!("gw {public}\n")).unwrap();
    let verify = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "file", "-I", "gw", "-f"])
        .arg(d.join("allowed"))
        .arg("-s")
        .arg(d.join("message.sig"))
        .stdin(std::fs::File::open(d.join("message")).unwrap())
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // Mounted read-only from that Secret and copied, 0600, to where the config says.
    let pod = r.pod();
    let keys = volume(pod, "host-keys-secret");
    assert_eq!(keys["secret"]["secretName"], "gw-ssh-gateway-host-keys");
    let copy = container(pod, "copy-keys");
    let script = copy["command"][2].as_str().unwrap();
    let dir = r.config().ssh.host_key_dir;
    assert!(
        script.contains(&format!(
            "install -m 0600 {}/* {}/",
            mount_path(copy, "host-keys-secret"),
            dir.display()
        )),
        "{script}"
    );
    assert_eq!(
        Path::new(mount_path(r.gateway_container(), "host-keys")),
        dir
    );

    // Two renders, two keys: nothing fixed is baked into the chart.
    let again = render(json!({}));
    assert_ne!(
        again.one("Secret", "gw-ssh-gateway-host-keys")["data"],
        secret["data"]
    );
}

fn rules(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                let mut verbs: Vec<String> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                verbs.sort();
                out.push((
                    group.as_str().unwrap().to_owned(),
                    resource.as_str().unwrap().to_owned(),
                    verbs,
                ));
            }
        }
    }
    out.sort();
    out
}

/// What src/control/kubernetes.rs and src/backend/kubernetes.rs call, and no more.
fn expected_rules() -> Vec<(String, String, Vec<String>)> {
    let r = |g: &str, res: &str, verbs: &[&str]| {
        (
            g.to_owned(),
            res.to_owned(),
            verbs.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        )
    };
    let mut v = vec![
        r("", "pods", &["get", "list", "watch"]),
        r("", "pods/exec", &["create", "get"]),
        r("", "pods/portforward", &["create", "get"]),
        r("apps", "statefulsets", &["get", "list", "patch", "watch"]),
        r("apps", "statefulsets/scale", &["patch"]),
    ];
    v.sort();
    v
}

#[test]
fn rbac_is_a_role_per_watched_namespace_or_cluster_wide_for_all() {
    let r = render(json!({"config": {"kubernetes": {"namespaces": ["team-a", "team-b"]}}}));
    assert_eq!(
        r.config().kubernetes.unwrap().namespaces,
        ["team-a", "team-b"]
    );
    assert!(r.all("ClusterRole").is_empty() && r.all("ClusterRoleBinding").is_empty());
    for ns in ["team-a", "team-b"] {
        let roles: Vec<_> = r
            .all("Role")
            .into_iter()
            .filter(|o| o["metadata"]["namespace"] == ns)
            .collect();
        assert_eq!(roles.len(), 1, "{ns}");
        assert_eq!(rules(roles[0]), expected_rules(), "{ns}");
        let binding = r
            .all("RoleBinding")
            .into_iter()
            .find(|o| o["metadata"]["namespace"] == ns)
            .unwrap();
        assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "gw-ssh-gateway", "namespace": "ssh"}])
        );
    }
    assert_eq!(r.all("Role").len(), 2);
    assert_eq!(r.pod()["serviceAccountName"], "gw-ssh-gateway");

    // No namespaces: the gateway searches all of them, so the grant is cluster-wide.
    let all = render(json!({"config": {"kubernetes": {"namespaces": []}}}));
    assert!(all.config().kubernetes.unwrap().namespaces.is_empty());
    assert!(all.all("Role").is_empty() && all.all("RoleBinding").is_empty());
    assert_eq!(
        rules(all.one("ClusterRole", "gw-ssh-gateway")),
        expected_rules()
    );
    let binding = all.one("ClusterRoleBinding", "gw-ssh-gateway");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["subjects"][0]["namespace"], "ssh");
}

#[test]
fn the_proxy_protocol_switch_reaches_the_gateway() {
    let off = render(json!({}));
    assert!(!off.config().ssh.proxy_protocol);
    let on =
        render(json!({"proxyProtocol": {"enabled": true, "from": ["10.0.0.0/8", "fd00::/8"]}}));
    let config = on.config();
    assert!(config.ssh.proxy_protocol);
    assert_eq!(config.ssh.proxy_protocol_from, ["10.0.0.0/8", "fd00::/8"]);
    assert_eq!(config.ssh.proxy_sources().unwrap().len(), 2);
    // Any balancer, when no list is given.
    let any = render(json!({"proxyProtocol": {"enabled": true}}));
    assert!(any.config().ssh.proxy_protocol && any.config().ssh.proxy_protocol_from.is_empty());
}

#[test]
fn migrations_run_once_in_a_pre_install_pre_upgrade_hook() {
    let r = render(json!({}));
    let job = r.one("Job", "gw-ssh-gateway-migrate");
    let annotations = &job["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/hook"], "pre-install,pre-upgrade");
    let pod = &job["spec"]["template"]["spec"];
    let migrate = container(pod, "migrate");
    assert_eq!(
        migrate["args"],
        json!(["migrate", "--config", "/etc/ssh-gateway/gateway.toml"])
    );
    assert_eq!(migrate["env"][0], r.gateway_container()["env"][0]);
    assert_eq!(migrate["securityContext"]["readOnlyRootFilesystem"], true);
    // Its config exists before it (a hook of lower weight) and is the replicas' own.
    let hook_config = r.one("ConfigMap", "gw-ssh-gateway-migrate");
    assert_eq!(
        hook_config["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let weight = |o: &Value| {
        o["metadata"]["annotations"]["helm.sh/hook-weight"]
            .as_str()
            .unwrap()
            .parse::<i32>()
            .unwrap()
    };
    assert!(weight(hook_config) < weight(job));
    assert_eq!(hook_config["data"]["gateway.toml"], r.gateway_toml());
    assert_eq!(
        volume(pod, "config")["configMap"]["name"],
        "gw-ssh-gateway-migrate"
    );
    // The replicas are not hooks: they start after the Job succeeded.
    assert!(
        r.deployment()["metadata"]["annotations"]
            .get("helm.sh/hook")
            .is_none()
    );
    // Replicas only check the schema, and refuse to start on one behind.
    assert!(!r.config().database.migrate_on_start);
    // Without the hook, they migrate at start themselves.
    let off = render(json!({"migrations": {"enabled": false}}));
    assert!(off.all("Job").is_empty());
    assert!(off.config().database.migrate_on_start);
}

#[test]
fn existing_secrets_are_used_and_nothing_is_generated() {
    let r = render(json!({
        "hostKeys": {"existingSecret": "region-host-keys"},
        "database": {"existingSecret": "pg", "key": "dsn"},
        "userCA": {"existingSecret": "region-user-ca"},
        "config": {"certificates": {"trusted_ca_files": ["/etc/ssh-gateway/trusted.pub"]}},
    }));
    assert!(r.all("Secret").is_empty(), "no Secret rendered");
    let pod = r.pod();
    assert_eq!(
        volume(pod, "host-keys-secret")["secret"]["secretName"],
        "region-host-keys"
    );
    assert_eq!(
        r.gateway_container()["env"][0]["valueFrom"]["secretKeyRef"],
        json!({"name": "pg", "key": "dsn"})
    );
    let certs = r.config().certificates.unwrap();
    let ca = certs.ca_key_file.unwrap();
    assert_eq!(certs.trusted_ca_files.len(), 1);
    assert_eq!(
        volume(pod, "user-ca-secret")["secret"]["secretName"],
        "region-user-ca"
    );
    let copy = container(pod, "copy-keys");
    assert!(
        copy["command"][2]
            .as_str()
            .unwrap()
            .contains(&format!("{}/", ca.parent().unwrap().display())),
        "the user CA is copied to where the config points"
    );
    assert_eq!(
        Path::new(mount_path(r.gateway_container(), "user-ca")),
        ca.parent().unwrap()
    );
}

#[test]
fn fronts_and_the_api_ingress_are_published_where_the_config_listens() {
    let r = render(json!({
        "config": {"routing": {"domain": "ssh.example.com"}},
        "fronts": {
            "tls": {"enabled": true, "secretName": "wildcard-tls", "publicAddress": "gw.example.com:443"},
            "connect": {"enabled": true},
        },
        "ingress": {"enabled": true, "className": "nginx", "host": "api.ssh.example.com", "tlsSecretName": "api-tls"},
        "metrics": {"serviceMonitor": {"enabled": true}},
    }));
    let config = r.config();
    let gw = r.gateway_container();
    let tls = config.fronts.tls.as_ref().unwrap();
    let connect = config.fronts.connect.as_ref().unwrap();
    assert_eq!(u64::from(tls.listen.port()), port_named(gw, "tls"));
    assert_eq!(u64::from(connect.listen.port()), port_named(gw, "connect"));
    assert_eq!(tls.public_address.as_deref(), Some("gw.example.com:443"));
    let tls_dir = Path::new(mount_path(gw, "tls"));
    assert_eq!(tls.cert_file, tls_dir.join("tls.crt"));
    assert_eq!(tls.key_file, tls_dir.join("tls.key"));
    assert_eq!(
        volume(r.pod(), "tls")["secret"]["secretName"],
        "wildcard-tls"
    );
    let ports = r.one("Service", "gw-ssh-gateway")["spec"]["ports"].clone();
    let public: Vec<(u64, &str)> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(public, [(22, "ssh"), (443, "tls"), (8022, "connect")]);

    let ingress = r.one("Ingress", "gw-ssh-gateway");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "api-tls");
    let paths = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap();
    assert!(paths.iter().any(|p| p["path"] == "/users"));
    assert!(
        paths
            .iter()
            .all(|p| p["path"] != "/metrics" && p["path"] != "/"),
        "/metrics takes no token and stays inside the cluster"
    );
    assert!(
        paths
            .iter()
            .all(|p| p["backend"]["service"]["name"] == "gw-ssh-gateway-api")
    );
    // The one object kubernetes-validate has no schema for is the CRD's.
    assert_eq!(r.unvalidated, ["ServiceMonitor/gw-ssh-gateway"]);
}

/// Leaves of a TOML table as (dotted path, value).
fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaves(&path, t, out),
            v => out.push((path, v.clone())),
        }
    }
}

#[test]
fn every_field_of_the_example_configs_is_reachable_through_values() {
    // The fields the chart sets itself (its values say them instead).
    let owned = [
        "ssh.listen",
        "ssh.host_key_dir",
        "ssh.proxy_protocol",
        "api.listen",
        "database.url",
        "database.migrate_on_start",
    ];
    for (file, extra) in [
        ("config/gateway.example.toml", ""),
        // With the remotes its comments describe.
        (
            "config/kubernetes.example.toml",
            "[routing]\ndomain = \"ssh.example.com\"\nremotes = [\"gpu-b\"]\n[remotes.gpu-b]\nkubeconfig = \"gpu-b.kubeconfig\"\ncontext = \"gpu-b\"\nnamespaces = [\"default\"]\n",
        ),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap() + extra;
        let mut example: toml::Table = text.parse().unwrap();
        for path in owned {
            let (section, field) = path.split_once('.').unwrap();
            example[section].as_table_mut().unwrap().remove(field);
        }
        let values = json!({"config": serde_json::to_value(&example).unwrap()});
        let r = render(values);
        r.config();
        let rendered: toml::Table = r.gateway_toml().parse().unwrap();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        leaves("", &example, &mut want);
        leaves("", &rendered, &mut got);
        for (path, value) in &want {
            assert!(
                got.contains(&(path.clone(), value.clone())),
                "{file}: {path} = {value} did not reach gateway.toml:\n{}",
                r.gateway_toml()
            );
        }
    }
    // And raw TOML for anything else.
    let r = render(json!({"extraConfig": "[sftp]\nhelper_dir = \"/scratch/helper\"\n"}));
    assert_eq!(
        r.config().sftp.helper_dir.as_deref(),
        Some("/scratch/helper")
    );
}

#[test]
fn bad_values_fail_at_install_with_a_message_that_names_them() {
    for (values, message) in [
        (json!({"replicaCount": 0}), "/replicaCount"),
        (
            json!({"ports": {"ssh": 22, "api": 8080, "tls": 8443, "connect": 8022}}),
            "/ports/ssh",
        ),
        (
            json!({"config": {"ssh": {"public_host": ""}}}),
            "/config/ssh/public_host",
        ),
        (
            json!({"proxyProtocol": {"enabled": true, "from": ["anywhere"]}}),
            "/proxyProtocol/from/0",
        ),
        (
            json!({"service": {"externalTrafficPolicy": "local"}}),
            "/service/externalTrafficPolicy",
        ),
        (
            json!({"config": {"kubernetes": {"namespaces": ["Team_A"]}}}),
            "/config/kubernetes/namespaces/0",
        ),
        (json!({"replicas": 3}), "replicas"),
        (
            json!({"terminationGracePeriodSeconds": 20}),
            "terminationGracePeriodSeconds (20) must be longer than config.ssh.drain_timeout_secs (25)",
        ),
        (
            json!({"config": {"ssh": {"public_host": "gw", "listen": "0.0.0.0:22"}}}),
            "config.ssh.listen is set by the chart",
        ),
        (
            json!({"proxyProtocol": {"enabled": false, "from": ["10.0.0.0/8"]}}),
            "proxyProtocol.enabled is false",
        ),
        (
            json!({"fronts": {"connect": {"enabled": true}}}),
            "need config.routing.domain",
        ),
        (
            json!({"config": {"routing": {"domain": "ssh.example.com"}}, "fronts": {"tls": {"enabled": true}}}),
            "needs fronts.tls.secretName",
        ),
    ] {
        let err = match try_render(values.clone()) {
            Ok(_) => panic!("{values} was accepted"),
            Err(e) => e,
        };
        assert!(err.contains(message), "{values}: {err}");
    }
}

#[test]
fn the_dockerfile_is_lint_clean_and_starts_what_the_chart_expects() {
    let dockerfile = root().join("docker/Dockerfile");
    let out = Command::new(tool("hadolint"))
        .arg("--no-color")
        .arg(&dockerfile)
        .output()
        .expect("hadolint is installed (.ci/run puts it in /opt/deploy-tools)");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // hadolint does lint: an untagged base and unpinned packages are findings.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN apt-get install -y curl\n").unwrap();
    let out = Command::new(tool("hadolint"))
        .arg("--no-color")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("DL3006"));

    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let last = |instruction: &str| {
        *lines
            .iter()
            .rev()
            .find(|l| l.starts_with(instruction))
            .unwrap_or_else(|| panic!("no {instruction}"))
    };
    assert_eq!(last("ENTRYPOINT"), r#"ENTRYPOINT ["ssh-gateway"]"#);
    assert_eq!(
        last("CMD"),
        r#"CMD ["serve", "--config", "/etc/ssh-gateway/gateway.toml"]"#
    );
    assert_eq!(last("USER"), "USER 10001:10001");
    assert!(text.contains("cargo build --release --locked"));
    // The chart runs the same command with the config where it mounts it.
    let r = render(json!({}));
    let gw = r.gateway_container();
    assert_eq!(
        gw["args"],
        json!(["serve", "--config", "/etc/ssh-gateway/gateway.toml"])
    );
    assert_eq!(mount_path(gw, "config"), "/etc/ssh-gateway/gateway.toml");
    assert_eq!(r.pod()["securityContext"]["runAsUser"], 10001);
    // The build context leaves the target directories out.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"));
    assert!(ignore.lines().any(|l| l == "**/target/"));
}
