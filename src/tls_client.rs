//! TLS for the gateway's own outgoing connections (the HTTP control plane, and the
//! client side: `setup`'s API calls and `proxy`'s TLS front): rustls with the aws-lc-rs
//! provider kube already brings, the system's roots, and optionally a CA file of the
//! operator's (a private PKI, or a test's self-signed certificate).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub fn config(extra_roots: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_roots {
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading CA file {}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.with_context(|| format!("CA file {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("CA file {}", path.display()))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "CA file {} holds no certificate", path.display());
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
