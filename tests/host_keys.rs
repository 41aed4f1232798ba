//! Host keys for a fleet: ECDSA and RSA keys from the key directory (a Secret every
//! replica mounts) are presented beside the Ed25519 one, and a host certificate
//! beside a key lets clients trust the CA (`@cert-authority`) instead of pinning keys.
//! Every check runs a real `ssh` with strict host key checking.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{KeyPair, Serve, keygen, run, stderr};

struct Gw {
    _serve: Serve,
    port: u16,
    user: KeyPair,
    dir: tempfile::TempDir,
}

/// A key directory prepared by `prepare`, then a gateway on it, with user ana and
/// her sandbox `box`.
fn start(prepare: impl FnOnce(&Path)) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    prepare(&keys);
    let config = support::StaticConfig::write(d, "", "");
    let user = config.users_with_keys(&["ana"]).remove(0);
    config.admin(&["sandbox", "add", "box", "--owner", "ana"]);
    Gw {
        _serve: config.serve(),
        port: config.ssh_port,
        user,
        dir,
    }
}

fn host_key(keys: &Path, name: &str, args: &[&str]) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", name, "-f"])
        .arg(keys.join(name))
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen {name}");
}

fn public(path: &Path) -> String {
    let line = std::fs::read_to_string(path).unwrap();
    let mut words = line.split_whitespace();
    format!("{} {}", words.next().unwrap(), words.next().unwrap())
}

impl Gw {
    /// `ssh box true` that trusts only what `known_hosts` says, offering only
    /// `host_key_algorithms`.
    fn strict(&self, known_hosts: &str, host_key_algorithms: &str) -> Output {
        let file = self.dir.path().join("known_hosts");
        std::fs::write(&file, known_hosts).unwrap();
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", file.display()))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                &format!("HostKeyAlgorithms={host_key_algorithms}"),
                "-i",
            ])
            .arg(&self.user.private)
            .args(["-p", &self.port.to_string(), "box@127.0.0.1", "echo in"]);
        run(cmd)
    }

    fn host(&self) -> String {
        format!("[127.0.0.1]:{}", self.port)
    }
}

#[test]
fn ecdsa_and_rsa_keys_beside_the_ed25519_one_are_presented_and_verified() {
    let gw = start(|keys| {
        host_key(keys, "ssh_host_ecdsa_key", &["-t", "ecdsa", "-b", "256"]);
        host_key(keys, "ssh_host_rsa_key", &["-t", "rsa", "-b", "3072"]);
    });
    let keys = gw.dir.path().join("keys");
    for (file, algorithm) in [
        ("ssh_host_ed25519_key.pub", "ssh-ed25519"),
        ("ssh_host_ecdsa_key.pub", "ecdsa-sha2-nistp256"),
        ("ssh_host_rsa_key.pub", "rsa-sha2-512"),
        ("ssh_host_rsa_key.pub", "rsa-sha2-256"),
    ] {
        let line = format!("{} {}\n", gw.host(), public(&keys.join(file)));
        let out = gw.strict(&line, algorithm);
        assert!(out.status.success(), "{algorithm}: {}", stderr(&out));
        assert_eq!(support::stdout(&out), "in\n");
    }
    // Pinned to the ECDSA key, a client that insists on it is not fooled by another.
    let other = keygen(gw.dir.path(), "other", &["-t", "ecdsa"]);
    let wrong = format!("{} {}\n", gw.host(), other.public_line);
    let out = gw.strict(&wrong, "ecdsa-sha2-nistp256");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_host_certificate_lets_clients_trust_the_ca_instead_of_a_key() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = keygen(ca_dir.path(), "host_ca", &["-t", "ed25519"]);
    let ca_private = ca.private.clone();
    let gw = start(move |keys| {
        host_key(keys, "ssh_host_ed25519_key", &["-t", "ed25519"]);
        // Signed with the gateway's own CLI.
        let out = Command::new(support::BIN)
            .arg("sign-host-key")
            .arg(keys.join("ssh_host_ed25519_key.pub"))
            .arg("--ca")
            .arg(&ca_private)
            .args(["--principal", "127.0.0.1", "--days", "30"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(keys.join("ssh_host_ed25519_key-cert.pub").exists());
    });
    let cert_algorithm = "ssh-ed25519-cert-v01@openssh.com";
    let trust = format!("@cert-authority {} {}\n", gw.host(), ca.public_line);
    let out = gw.strict(&trust, &format!("{cert_algorithm},ssh-ed25519"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(support::stdout(&out), "in\n");
    // The trust came from the CA: without it, or with another CA, no entry.
    let out = gw.strict("", cert_algorithm);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );
    let stranger = keygen(ca_dir.path(), "other_ca", &["-t", "ed25519"]);
    let wrong = format!("@cert-authority {} {}\n", gw.host(), stranger.public_line);
    let out = gw.strict(&wrong, cert_algorithm);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
}

#[test]
fn a_certificate_that_is_not_a_host_certificate_for_its_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    host_key(&keys, "ssh_host_ed25519_key", &["-t", "ed25519"]);
    let ca = keygen(d, "ca", &["-t", "ed25519"]);
    // A user certificate (no -h) in the host certificate's place.
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca.private)
        .args(["-I", "oops", "-n", "127.0.0.1"])
        .arg(keys.join("ssh_host_ed25519_key.pub"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let config = support::StaticConfig::write(d, "", "").path;
    let out = Command::new(support::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ssh_host_ed25519_key-cert.pub") && err.contains("user certificate"),
        "{err}"
    );
}
