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
