//! What an auditor sees: Debian's ssh-audit reports no failure, no warning and no
//! recommendation about the gateway's algorithms. Its version 2.5 predates ML-KEM and
//! strict key exchange and calls those two "unknown"; that is not a finding.

mod support;

use std::process::Command;

/// Algorithms newer than ssh-audit 2.5, which it can only call unknown.
const NEWER_THAN_THE_AUDITOR: &[&str] = &["mlkem768x25519-sha256", "kex-strict-s-v00@openssh.com"];

#[test]
fn ssh_audit_finds_nothing_to_warn_about() {
    let gw = support::Gateway::start();
    let out = Command::new("ssh-audit")
        .args(["-n", "-p", &gw.ssh_port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-audit is installed (.ci/run)");
    let report = String::from_utf8_lossy(&out.stdout);
    // It did audit: the key exchange and the host key are listed.
    assert!(report.contains("(kex) curve25519-sha256"), "{report}");
    assert!(report.contains("(key) ssh-ed25519"), "{report}");
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("[fail]") || l.contains("[warn]") || l.starts_with("(rec)"))
        .filter(|l| {
            !(l.contains("unknown algorithm")
                && NEWER_THAN_THE_AUDITOR.iter().any(|a| l.contains(a)))
        })
        .collect();
    assert!(findings.is_empty(), "{findings:#?}\n{report}");
}

/// Every key exchange the gateway offers logs in and runs a command: each one OpenSSH
/// 9.2 knows through the real `ssh` (it verifies the gateway's host-key signature
/// over the exchange), and ML-KEM, which that `ssh` predates, through russh's client,
/// whose ML-KEM and X25519 are the `ml-kem` and curve25519-dalek crates while the
/// gateway's side of both is aws-lc-rs (vendor/russh patch 0007): two implementations
/// must agree on the shared secret for the login to get anywhere.
#[test]
fn every_key_exchange_offered_completes_a_login() {
    let gw = support::Gateway::start();
    for kex in [
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "diffie-hellman-group-exchange-sha256",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group16-sha512",
    ] {
        let mut cmd = gw.ssh(&gw.dev_key);
        cmd.args(["-o", &format!("KexAlgorithms={kex}"), "-v"])
            .args(["demo@127.0.0.1", "echo logged-in"]);
        let out = support::run(cmd);
        let err = support::stderr(&out);
        assert_eq!(support::stdout(&out), "logged-in\n", "{kex}: {err}");
        assert!(
            err.contains(&format!("kex: algorithm: {kex}")),
            "{kex}: {err}"
        );
    }
    let out = tokio::runtime::Runtime::new().unwrap().block_on(russh_exec(
        &gw,
        russh::kex::MLKEM768X25519_SHA256,
        "echo $((6*7))",
    ));
    assert_eq!(out, "42\n");
}

/// Logs in as `demo` with the dev key through russh's client offering only `kex`, runs
/// `command`, and returns its stdout.
async fn russh_exec(gw: &support::Gateway, kex: russh::kex::Name, command: &str) -> String {
    use russh::keys::PrivateKeyWithHashAlg;
    struct AnyHost;
    impl russh::client::Handler for AnyHost {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            _: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }
    let config = russh::client::Config {
        preferred: russh::Preferred {
            kex: std::borrow::Cow::Owned(vec![kex]),
            ..russh::Preferred::default()
        },
        ..Default::default()
    };
    let mut session = russh::client::connect(
        std::sync::Arc::new(config),
        ("127.0.0.1", gw.ssh_port),
        AnyHost,
    )
    .await
    .expect("key exchange");
    let key = russh::keys::load_secret_key(&gw.dev_key, None).unwrap();
    let auth = session
        .authenticate_publickey(
            "demo",
            PrivateKeyWithHashAlg::new(std::sync::Arc::new(key), None),
        )
        .await
        .unwrap();
    assert!(auth.success(), "{auth:?}");
    let mut channel = session.channel_open_session().await.unwrap();
    channel.exec(true, command).await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = channel.wait().await {
        if let russh::ChannelMsg::Data { data } = msg {
            out.extend_from_slice(&data);
        }
    }
    String::from_utf8(out).unwrap()
}
