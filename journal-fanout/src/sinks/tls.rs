//! Certificate verification for every `https://` and `tls://` destination: the system's trusted
//! roots, plus the private CAs of `--ca-file`. There is deliberately no way to turn it off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// TLS settings shared by all destinations (from the command line).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with extra CA certificates to trust (`--ca-file`).
    pub ca_file: Option<PathBuf>,
}

impl TlsOptions {
    /// A rustls client configuration that verifies servers against the system roots and the
    /// `--ca-file` certificates.
    pub fn client_config(&self) -> Result<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = &self.ca_file {
            for cert in read_pem_certs(path)? {
                roots.add(cert).with_context(|| {
                    format!(
                        "--ca-file {}: a certificate in it is not a usable CA",
                        path.display()
                    )
                })?;
            }
        } else if added == 0 {
            // A minimal container image may have no CA bundle; Mozilla's list (webpki-roots)
            // is the same set Debian's ca-certificates ships, so verification stays on.
            tracing::warn!(
                "no system CA certificates found (install ca-certificates); using the built-in Mozilla roots"
            );
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS set-up failed: no usable protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(config)
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open --ca-file {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--ca-file {} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!(
            "--ca-file {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// Whether an error chain says the server's certificate was not trusted: retrying cannot fix
/// that, the operator must (`--ca-file`).
pub fn is_certificate_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if is_certificate_error(inner) {
                    return true;
                }
            }
        }
        cur = e.source();
    }
    false
}
