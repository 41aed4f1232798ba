//! TLS for the gateway's own outgoing connections (the HTTP control plane, and the
//! client side: `setup`'s API calls and `proxy`'s TLS front): rustls with the ring
//! provider, and either the system's roots or, like curl's `--cacert`, a CA file
//! instead (a private PKI, or a test's CA).
//!
//! ring, not the aws-lc-rs provider the server side uses: aws-lc seeds its random
//! generator with CPU jitter entropy on first use, 58 ms of CPU measured (perf:
//! `jent_read_entropy`), which `ssh-gateway proxy`, a fresh process per connection,
//! paid on every `ssh` before its ClientHello. ring reads the kernel's getrandom.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub fn config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let roots = match ca_file {
        Some(path) => roots_from(path)?,
        None => system_roots(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

fn roots_from(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading CA file {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("CA file {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("CA file {}", path.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "CA file {} holds no certificate",
        path.display()
    );
    Ok(roots)
}

/// The distributions' one-file bundles: reading one is about half the work of
/// `load_native_certs`, which also parses every file of the certificate directory
/// (the same certificates again); `ssh-gateway proxy` pays it on every connection.
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn system_roots() -> rustls::RootCertStore {
    let explicit =
        std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some();
    if !explicit {
        for bundle in BUNDLES {
            if let Ok(roots) = roots_from(Path::new(bundle)) {
                return roots;
            }
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}
