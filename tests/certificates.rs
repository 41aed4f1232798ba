//! Short-lived user certificates with the real OpenSSH client: the gateway's CA issues
//! one for a new key over the API and it logs in; deleting the key ends it. A CA the
//! gateway is told to trust (signing with the real `ssh-keygen -s`) logs its users in,
//! and every way a certificate can be wrong is refused: expired, not yet valid, an
//! untrusted CA, an unknown or ambiguous principal, a `source-address` that excludes
//! the client, an unknown critical option, a host certificate. Extensions are honoured:
//! no PTY without `permit-pty`, no forward without `permit-port-forwarding`, no agent
//! without `permit-agent-forwarding`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::{
    KeyPair, Serve, admin_with_config, free_port, http, keygen, list_keys, run,
    static_gateway_toml, stderr, stdout, users_with_keys,
};

struct Gw {
    dir: tempfile::TempDir,
    ssh_port: u16,
    api: String,
    /// alice's API token.
    token: String,
    /// The CA `trusted_ca_files` names.
    trusted_ca: PathBuf,
    /// A CA nobody configured.
    rogue_ca: PathBuf,
    _server: Serve,
}

fn start() -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (ssh_port, api_port) = (free_port(), free_port());
    let trusted_ca = keygen(dir.path(), "trusted_ca", &["-t", "ed25519"]).private;
    let rogue_ca = keygen(dir.path(), "rogue_ca", &["-t", "ed25519"]).private;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        static_gateway_toml(
            dir.path(),
            ssh_port,
            api_port,
            "",
            &format!(
                "[admission]\npenalty_exempt = [\"127.0.0.0/8\"]\n\
                 [certificates]\nca_key_file = \"{d}/ca/user_ca\"\nmax_ttl_secs = 3600\n\
                 trusted_ca_files = [\"{d}/trusted_ca.pub\"]\n"
            ),
        ),
    )
    .unwrap();
    // bob has a registered key; alice has none yet (her keys come from certificates).
    users_with_keys(
        &config,
        &format!("sqlite://{d}/gw.db"),
        dir.path(),
        &["bob"],
    );
    admin_with_config(&config, &["user", "add", "alice"]);
    let token = admin_with_config(&config, &["token", "create", "alice"])
        .trim()
        .to_owned();
    admin_with_config(&config, &["sandbox", "add", "demo", "--owner", "alice"]);
    // At debug, where refusals that the client does not hear about are logged.
    let server = Serve::start_with_env(
        &config,
        &dir.path().join("gateway.log"),
        api_port,
        &[("RUST_LOG", "info,ssh_gateway=debug")],
    );
    Gw {
        dir,
        ssh_port,
        api: format!("http://127.0.0.1:{api_port}"),
        token,
        trusted_ca,
        rogue_ca,
        _server: server,
    }
}

impl Gw {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// `ssh` that may only authenticate with `cert` (no fallback to the bare key).
    /// The certificate goes where OpenSSH looks for `-i key`'s: `key-cert.pub`.
    fn ssh_with_cert(&self, key: &KeyPair, cert: &Path) -> Command {
        let beside = PathBuf::from(format!("{}-cert.pub", key.private.display()));
        if cert != beside {
            std::fs::copy(cert, &beside).unwrap();
        }
        let mut cmd = support::client("ssh", key, self.ssh_port);
        cmd.args([
            "-o",
            "PubkeyAcceptedAlgorithms=ssh-ed25519-cert-v01@openssh.com",
        ]);
        cmd
    }

    fn run_as(&self, key: &KeyPair, cert: &Path, command: &str) -> Output {
        let mut cmd = self.ssh_with_cert(key, cert);
        cmd.args(["demo@127.0.0.1", command]);
        run(cmd)
    }

    async fn issue(&self, body: Value) -> (u16, Value) {
        let resp = http()
            .post(format!("{}/users/me/ssh-certificates", self.api))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Signs `key` with `ca` (`ssh-keygen -s`) as `name`, with `args` (`-n`, `-V`, `-O`…).
    fn sign(&self, ca: &Path, key: &KeyPair, name: &str, args: &[&str]) -> PathBuf {
        let public = self.dir.path().join(format!("{name}.pub"));
        std::fs::write(&public, format!("{}\n", key.public_line)).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(ca)
            .args(["-I", name])
            .args(args)
            .arg(&public)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen -s: {}", stderr(&out));
        self.dir.path().join(format!("{name}-cert.pub"))
    }
}

fn assert_denied(out: &Output, what: &str) {
    assert!(
        !out.status.success() && stderr(out).contains("Permission denied (publickey)"),
        "{what}: expected a refused login, got {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issued_certificate_logs_in_until_its_key_is_deleted() {
    let gw = tokio::task::block_in_place(start);
    let laptop = keygen(gw.dir.path(), "laptop", &["-t", "ed25519"]);

    // The CA's public key is served, and is the key in the configured file.
    let ca_line = http()
        .get(format!("{}/api/v1/ssh/user-ca", gw.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let on_disk = std::fs::read_to_string(gw.dir.path().join("ca/user_ca.pub")).unwrap();
    assert_eq!(
        ca_line.split_whitespace().take(2).collect::<Vec<_>>(),
        on_disk.split_whitespace().take(2).collect::<Vec<_>>()
    );

    // A key nobody has registered: the request registers it to alice, then signs it.
    let (status, body) = gw
        .issue(json!({"public_key": laptop.public_line, "ttl_secs": 600}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["principals"], json!(["alice"]));
    let serial = body["serial"].as_u64().expect("numeric serial");
    let certificate = body["certificate"].as_str().unwrap();
    assert!(certificate.starts_with("ssh-ed25519-cert-v01@openssh.com "));
    let cert = gw.dir.path().join("laptop-cert.pub");
    std::fs::write(&cert, format!("{certificate}\n")).unwrap();

    // What OpenSSH itself reads in it.
    let listing = stdout(&run({
        let mut c = Command::new("ssh-keygen");
        c.arg("-L").arg("-f").arg(&cert);
        c
    }));
    assert!(listing.contains(&format!("Serial: {serial}")), "{listing}");
    assert!(listing.contains("permit-pty"), "{listing}");
    assert!(listing.contains("permit-port-forwarding"), "{listing}");

    let out = gw.run_as(&laptop, &cert, "echo certified");
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out).trim(), "certified");
    assert!(
        gw.log().contains(&format!("certificate={serial}")),
        "the login's log line names the certificate serial"
    );

    // Issuing again for the same (now registered) key works and registers nothing new.
    let (status, again) = gw.issue(json!({"public_key": laptop.public_line})).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["key_id"], body["key_id"]);
    let keys = list_keys(&gw.api, &gw.token).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");

    // A multiplexed connection (as VS Code keeps) that logged in with the certificate.
    let master = support::mux::Master::open(gw.ssh_port, &laptop.private, gw.dir.path(), "demo");
    assert_eq!(stdout(&master.run("echo first")).trim(), "first");

    // Deleting the key ends every certificate issued for it.
    let key_id = body["key_id"].as_str().unwrap();
    let resp = http()
        .delete(format!("{}/users/me/ssh-keys/{key_id}", gw.api))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_denied(
        &gw.run_as(&laptop, &cert, "true"),
        "certificate of a deleted key",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn issuing_refuses_what_it_should_not_sign() {
    let gw = tokio::task::block_in_place(start);
    let laptop = keygen(gw.dir.path(), "laptop", &["-t", "ed25519"]);
    let (status, body) = gw
        .issue(json!({"public_key": laptop.public_line, "ttl_secs": 7200}))
        .await;
    assert_eq!(status, 400, "over certificates.max_ttl_secs: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("3600"));

    let (status, body) = gw.issue(json!({"public_key": "ssh-ed25519 AAAA"})).await;
    assert_eq!(status, 400, "{body}");

    // bob's registered key cannot be certified for alice.
    let bobs = std::fs::read_to_string(gw.dir.path().join("bob.pub")).unwrap();
    let (status, body) = gw.issue(json!({"public_key": bobs.trim()})).await;
    assert_eq!(status, 409, "{body}");

    let (status, body) = gw
        .issue(json!({"public_key": laptop.public_line, "source_address": ["not-an-ip"]}))
        .await;
    assert_eq!(status, 400, "{body}");

    // Nothing was registered by the refused requests.
    let keys = list_keys(&gw.api, &gw.token).await;
    assert_eq!(keys, json!([]));

    let unauthenticated = http()
        .post(format!("{}/users/me/ssh-certificates", gw.api))
        .json(&json!({"public_key": laptop.public_line}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issued_certificate_pinned_to_another_network_is_refused() {
    let gw = tokio::task::block_in_place(start);
    let laptop = keygen(gw.dir.path(), "laptop", &["-t", "ed25519"]);
    let (status, body) = gw
        .issue(json!({"public_key": laptop.public_line, "source_address": ["192.0.2.0/24"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let cert = gw.dir.path().join("pinned-cert.pub");
    std::fs::write(
        &cert,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    assert_denied(
        &gw.run_as(&laptop, &cert, "true"),
        "source-address elsewhere",
    );
    assert!(gw.log().contains("source-address"), "{}", gw.log());

    let (_, body) = gw
        .issue(json!({"public_key": laptop.public_line, "source_address": ["127.0.0.0/8"]}))
        .await;
    std::fs::write(
        &cert,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    let out = gw.run_as(&laptop, &cert, "echo here");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_ca_logs_its_users_in_and_wrong_certificates_are_refused() {
    let gw = tokio::task::block_in_place(start);
    let key = keygen(gw.dir.path(), "contractor", &["-t", "ed25519"]);
    let ca = gw.trusted_ca.clone();

    let good = gw.sign(&ca, &key, "good", &["-n", "alice", "-V", "-5m:+1h"]);
    let out = gw.run_as(&key, &good, "echo trusted");
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert_eq!(stdout(&out).trim(), "trusted");

    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "expired",
            gw.sign(&ca, &key, "expired", &["-n", "alice", "-V", "-2h:-1h"]),
            "",
        ),
        (
            "not yet valid",
            gw.sign(&ca, &key, "future", &["-n", "alice", "-V", "+1h:+2h"]),
            "",
        ),
        (
            "untrusted CA",
            gw.sign(
                &gw.rogue_ca,
                &key,
                "rogue",
                &["-n", "alice", "-V", "-5m:+1h"],
            ),
            "does not trust",
        ),
        (
            "unknown principal",
            gw.sign(&ca, &key, "nobody", &["-n", "nosuchuser", "-V", "-5m:+1h"]),
            "",
        ),
        (
            // OpenSSH reads no principals as "any user": never here.
            "no principals",
            gw.sign(&ca, &key, "anyone", &["-V", "-5m:+1h"]),
            "names 0",
        ),
        (
            "two principals",
            gw.sign(&ca, &key, "two", &["-n", "alice,bob", "-V", "-5m:+1h"]),
            "exactly one principal",
        ),
        (
            "source-address elsewhere",
            gw.sign(
                &ca,
                &key,
                "elsewhere",
                &[
                    "-n",
                    "alice",
                    "-V",
                    "-5m:+1h",
                    "-O",
                    "source-address=10.9.9.9/32",
                ],
            ),
            "source-address",
        ),
        (
            "unknown critical option",
            gw.sign(
                &ca,
                &key,
                "forced",
                &[
                    "-n",
                    "alice",
                    "-V",
                    "-5m:+1h",
                    "-O",
                    "force-command=/bin/true",
                ],
            ),
            "unsupported critical option",
        ),
        (
            // The gateway's own CA key, used offline: not on record, so not accepted.
            "signed offline with the gateway's CA",
            gw.sign(
                &gw.dir.path().join("ca/user_ca"),
                &key,
                "offline",
                &["-n", "alice", "-V", "-5m:+1h"],
            ),
            "record is gone",
        ),
        (
            "host certificate",
            gw.sign(&ca, &key, "host", &["-h", "-n", "alice", "-V", "-5m:+1h"]),
            "",
        ),
    ];
    for (what, cert, logged) in &cases {
        assert_denied(&gw.run_as(&key, cert, "echo in"), what);
        if !logged.is_empty() {
            assert!(gw.log().contains(logged), "{what}: log lacks {logged:?}");
        }
    }
    let near = gw.sign(
        &ca,
        &key,
        "near",
        &[
            "-n",
            "alice",
            "-V",
            "-5m:+1h",
            "-O",
            "source-address=127.0.0.1/32,::1",
        ],
    );
    let out = gw.run_as(&key, &near, "echo near");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn extensions_decide_pty_and_forwarding() {
    let gw = tokio::task::block_in_place(start);
    let key = keygen(gw.dir.path(), "restricted", &["-t", "ed25519"]);
    let ca = gw.trusted_ca.clone();
    let restricted = gw.sign(
        &ca,
        &key,
        "restricted",
        &[
            "-n",
            "alice",
            "-V",
            "-5m:+1h",
            "-O",
            "no-pty",
            "-O",
            "no-port-forwarding",
            "-O",
            "no-agent-forwarding",
        ],
    );

    // No PTY: OpenSSH says so (and, as the terminal was asked for explicitly, gives
    // up, as it does against sshd); without -t the command runs.
    let mut cmd = gw.ssh_with_cert(&key, &restricted);
    cmd.args(["-tt", "demo@127.0.0.1", "echo with-tty"]);
    let out = run(cmd);
    assert!(
        stderr(&out).contains("PTY allocation request failed"),
        "{out:?}\n{}",
        gw.log()
    );
    assert!(!stdout(&out).contains("with-tty"), "{}", stdout(&out));
    let out = gw.run_as(&key, &restricted, "echo without-tty");
    assert_eq!(stdout(&out).trim(), "without-tty", "{}", stderr(&out));

    // No forwarding: a direct-tcpip channel is refused, saying which extension is missing.
    let mut cmd = gw.ssh_with_cert(&key, &restricted);
    cmd.args(["-v", "-W", "localhost:9", "demo@127.0.0.1"]);
    let out = run(cmd);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permit-port-forwarding"),
        "{}",
        stderr(&out)
    );

    // Nor a socket forward (direct-streamlocal).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("l.sock");
    let mut cmd = gw.ssh_with_cert(&key, &restricted);
    cmd.args(["-v", "-N", "-L"])
        .arg(format!("{}:/tmp/anything.sock", local.display()))
        .arg("demo@127.0.0.1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut ssh = cmd.spawn().unwrap();
    assert!(support::process::wait_until(
        std::time::Duration::from_secs(20),
        || local.exists()
    ));
    let got = support::forward::unix_exchange(&local, b"x\n");
    assert!(got.as_deref().unwrap_or_default().is_empty(), "{got:?}");
    let _ = ssh.kill();
    let out = ssh.wait_with_output().unwrap();
    assert!(
        stderr(&out).contains("permit-port-forwarding"),
        "{}",
        stderr(&out)
    );

    // No agent forwarding: `ssh -A` is refused silently (OpenSSH asks without
    // wanting a reply, as sshd would refuse it), and the session runs without
    // SSH_AUTH_SOCK.
    let agent = support::agent::Agent::start();
    let with_agent = |cert: &Path| {
        let mut cmd = agent.forwarding(&gw.ssh_with_cert(&key, cert));
        cmd.args([
            "demo@127.0.0.1",
            "echo \"[${SSH_AUTH_SOCK-unset}]\"; ssh-add -l",
        ]);
        run(cmd)
    };
    let out = with_agent(&restricted);
    assert!(stdout(&out).starts_with("[unset]\n"), "{}", stdout(&out));
    assert!(
        gw.log().contains("agent forwarding refused: the certificate you logged in with does not permit this (permit-agent-forwarding"),
        "{}",
        gw.log()
    );

    // The same key with a certificate that permits all of it gets a terminal, and
    // its agent.
    let full = gw.sign(&ca, &key, "full", &["-n", "alice", "-V", "-5m:+1h"]);
    let mut cmd = gw.ssh_with_cert(&key, &full);
    cmd.args(["-tt", "demo@127.0.0.1", "tty"]);
    let out = run(cmd);
    assert!(stdout(&out).contains("/dev/pts/"), "{}", stdout(&out));
    let out = with_agent(&full);
    assert!(out.status.success(), "{}\n{}", stderr(&out), gw.log());
    assert!(
        stdout(&out).contains(&agent.fingerprint),
        "{}",
        stdout(&out)
    );
}
