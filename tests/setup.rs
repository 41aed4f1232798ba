//! `ssh-gateway setup` on a user's machine (a throwaway HOME), then the real OpenSSH
//! client reading the ~/.ssh/config it wrote, as VS Code Remote-SSH would: `ssh
//! demo.<domain>` reaches the sandbox through the TLS front with a certificate the
//! setup fetched, renewed by the block before OpenSSH reads it; the CONNECT front with
//! a registered key; setup twice leaves one block; `--remove` restores the file
//! byte-exactly.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{BIN, Serve, admin_with_config, free_port, run, static_gateway_toml, stderr, stdout};

const DOMAIN: &str = "ssh.test.example";
/// What the user's ~/.ssh/config held before (no newline at the end, on purpose).
const ORIGINAL: &str = "Host old-box\n    User someone\n    Port 2200";

struct Machine {
    dir: tempfile::TempDir,
    home: PathBuf,
    api: String,
    token: String,
    connect_port: u16,
    _server: Serve,
}

fn start() -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (ssh_port, api_port, tls_port, connect_port) =
        (free_port(), free_port(), free_port(), free_port());
    support::pki::ca_and_leaf(dir.path(), DOMAIN);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        static_gateway_toml(
            dir.path(),
            ssh_port,
            api_port,
            "",
            &format!(
                "[routing]\ndomain = \"{DOMAIN}\"\n\
             [certificates]\nca_key_file = \"{d}/ca/user_ca\"\n\
             [fronts.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n\
             public_address = \"127.0.0.1:{tls_port}\"\n\
             [fronts.connect]\nlisten = \"127.0.0.1:{connect_port}\"\n"
            ),
        ),
    )
    .unwrap();
    admin_with_config(&config, &["user", "add", "alice"]);
    let token = admin_with_config(&config, &["token", "create", "alice"])
        .trim()
        .to_owned();
    admin_with_config(&config, &["sandbox", "add", "demo", "--owner", "alice"]);
    let server = Serve::start(&config, &dir.path().join("gateway.log"), api_port);
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/config"), ORIGINAL).unwrap();
    Machine {
        dir,
        home,
        api: format!("http://127.0.0.1:{api_port}"),
        token,
        connect_port,
        _server: server,
    }
}

impl Machine {
    fn ssh_config(&self) -> PathBuf {
        self.home.join(".ssh/config")
    }

    /// `ssh-gateway ARGS…` as the user (HOME is theirs; the token in the environment,
    /// as a user would pass it).
    fn gateway(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("HOME", &self.home)
            .env("SSH_GATEWAY_TOKEN", &self.token);
        run(cmd)
    }

    fn setup(&self, extra: &[&str]) -> Output {
        let ca = self.dir.path().join("ca.pem");
        let mut args = vec!["setup", "--api", &self.api, "--tls-ca"];
        let ca = ca.to_str().unwrap().to_owned();
        args.push(&ca);
        args.extend(extra);
        let out = self.gateway(&args);
        assert!(out.status.success(), "setup {extra:?}: {}", stderr(&out));
        out
    }

    /// The real `ssh` with nothing but the config file setup wrote (and HOME, for the
    /// `ssh-gateway` commands that config runs).
    fn ssh(&self, config: &Path, host: &str, command: &str) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(config)
            .args(["-o", "BatchMode=yes", "-o", "IdentityAgent=none"])
            .args([host, command])
            .env("HOME", &self.home);
        run(cmd)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn setup_writes_one_block_that_ssh_uses_and_remove_restores_the_file() {
    let m = start();
    m.setup(&[]);
    let keys = m.home.join(".ssh/ssh-gateway");
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&keys.join("id_ed25519")), 0o600);
    assert_eq!(mode(&keys.join(format!("{DOMAIN}.token"))), 0o600);
    let cert = keys.join("id_ed25519-cert.pub");
    assert!(cert.exists(), "setup fetched a certificate");

    let written = std::fs::read_to_string(m.ssh_config()).unwrap();
    assert!(written.starts_with(ORIGINAL), "{written}");
    assert_eq!(written.matches(&format!("Host *.{DOMAIN}")).count(), 1);
    assert!(written.contains("CertificateFile"), "{written}");

    // The certificate logs in through the TLS front, host-key checked against what
    // setup wrote; the SSH user name (the local one) does not matter.
    let out = m.ssh(
        &m.ssh_config(),
        &format!("demo.{DOMAIN}"),
        "echo through-tls",
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), m.log());
    assert_eq!(stdout(&out).trim(), "through-tls");
    assert!(
        m.log().contains("certificate="),
        "logged in with the certificate"
    );

    // The block renews a missing (or expiring) certificate before OpenSSH reads it.
    std::fs::remove_file(&cert).unwrap();
    let out = m.ssh(&m.ssh_config(), &format!("demo.{DOMAIN}"), "echo renewed");
    assert_eq!(stdout(&out).trim(), "renewed", "{}", stderr(&out));
    assert!(cert.exists());

    // Twice: still one block, and the same file.
    m.setup(&[]);
    assert_eq!(std::fs::read_to_string(m.ssh_config()).unwrap(), written);

    // --remove: the file as it was, to the byte; again: nothing to do.
    let out = m.gateway(&["setup", "--remove", "--domain", DOMAIN]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(m.ssh_config()).unwrap(), ORIGINAL);
    let out = m.gateway(&["setup", "--remove", "--domain", DOMAIN]);
    assert!(
        stderr(&out).contains("no ssh-gateway block"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(m.ssh_config()).unwrap(), ORIGINAL);
}

#[test]
fn setup_with_a_registered_key_through_the_connect_front() {
    let m = start();
    let other = m.home.join("other-config");
    let front = format!("connect://127.0.0.1:{}", m.connect_port);
    let args = [
        "--no-certificate",
        "--front",
        &front,
        "--ssh-config",
        other.to_str().unwrap(),
    ];
    m.setup(&args);
    assert!(
        !m.home.join(".ssh/ssh-gateway/id_ed25519-cert.pub").exists(),
        "no certificate when told not to"
    );
    // A file setup created is 0600, like OpenSSH wants it.
    assert_eq!(mode(&other), 0o600);
    let out = m.ssh(&other, &format!("demo.{DOMAIN}"), "echo through-connect");
    assert!(out.status.success(), "{}\n{}", stderr(&out), m.log());
    assert_eq!(stdout(&out).trim(), "through-connect");

    // Setting up twice registers the key once.
    m.setup(&args);
    let keys = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::list_keys(&m.api, &m.token));
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");

    // The file did not exist before: --remove deletes it again.
    let out = m.gateway(&[
        "setup",
        "--remove",
        "--domain",
        DOMAIN,
        "--ssh-config",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!other.exists());
}

#[test]
fn setup_says_what_is_wrong() {
    let m = start();
    let out = {
        let mut cmd = Command::new(BIN);
        cmd.args(["setup", "--api", &m.api, "--token", "not-a-token"])
            .env("HOME", &m.home)
            .env_remove("SSH_GATEWAY_TOKEN");
        run(cmd)
    };
    assert!(!out.status.success());
    // The domain and front come from the gateway; the token is what fails.
    assert!(
        stderr(&out).contains("401") || stderr(&out).contains("invalid or revoked token"),
        "{}",
        stderr(&out)
    );
    // Nothing was written to the user's config.
    assert_eq!(std::fs::read_to_string(m.ssh_config()).unwrap(), ORIGINAL);

    let out = m.gateway(&["setup", "--api", "http://127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("reaching the gateway"),
        "{}",
        stderr(&out)
    );
}
