//! A private PKI for TLS front tests, made with the real `openssl`: a CA and a leaf for
//! `*.<domain>` it signed, as clients that verify (rustls) need.

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `ca.pem` (the CA), `cert.pem` and `key.pem` (the leaf for `*.{domain}`) in
/// `dir`.
pub fn ca_and_leaf(dir: &Path, domain: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=test CA",
    ]);
    openssl(dir, &ca);
    let mut req = vec!["req"];
    req.extend(ec);
    let subject = format!("/CN=*.{domain}");
    req.extend(["-keyout", "key.pem", "-out", "leaf.csr", "-subj", &subject]);
    openssl(dir, &req);
    std::fs::write(
        dir.join("leaf.ext"),
        format!("basicConstraints=CA:FALSE\nsubjectAltName=DNS:*.{domain}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "cert.pem",
            "-extfile",
            "leaf.ext",
        ],
    );
}
