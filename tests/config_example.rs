//! The shipped example config must load, and `serve` must reject bad ones by name.

mod support;

use ssh_gateway::config::Config;

#[test]
fn example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.example.toml");
    let config = Config::load(&path, std::iter::empty()).unwrap();
    assert_eq!(config.ssh.public_port, 22);
    assert!(config.database.url.starts_with("postgres://"));
}

#[test]
fn kubernetes_example_config_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes.example.toml");
    let config = Config::load(&path, std::iter::empty()).unwrap();
    let k = config.kubernetes.expect("a [kubernetes] section");
    assert_eq!(k.namespaces, vec!["default".to_string()]);
    assert_eq!(k.sandbox_label, "ssh-gateway.io/sandbox");
}

#[test]
fn http_control_example_config_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/http-control.example.toml");
    let config = Config::load(&path, std::iter::empty()).unwrap();
    let ssh_gateway::config::ControlConfig::Http(http) = config.control else {
        panic!("expected [control] kind = \"http\"");
    };
    assert_eq!(http.resume_timeout_secs, 120);
    assert!(http.token_file.is_some());
}

#[test]
fn serve_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[ssh]\nhost_key_dir = \"/tmp/x\"\npublic_host = \"gw\"\nmax_auth_attempts = 0\n[database]\nurl = \"sqlite://x.db\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ssh.max_auth_attempts"), "{err}");
}
