//! rustls client configuration: webpki roots, custom CA certificates, or both.
//!
//! [`TlsRoots`] exists with or without the `tls` feature, so a [`crate::client::Config`] is
//! the same type either way; [`TlsRoots::client_config`] needs the feature.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::Arc;

/// Which certificate authorities a `wss` connection trusts.
#[derive(Debug, Clone)]
pub struct TlsRoots {
    /// Trust the Mozilla root set shipped by `webpki-roots`. Default on.
    pub webpki: bool,
    /// Extra CA certificates (DER), e.g. a private or test CA.
    pub custom: Vec<CertificateDer<'static>>,
}

impl Default for TlsRoots {
    fn default() -> Self {
        Self {
            webpki: true,
            custom: Vec::new(),
        }
    }
}

/// A certificate file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("ca_file: {path}: {problem}")]
pub struct CaFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

impl TlsRoots {
    /// Trusts only the given CA certificates (no webpki roots).
    pub fn only(custom: Vec<CertificateDer<'static>>) -> Self {
        Self {
            webpki: false,
            custom,
        }
    }

    /// Adds a CA certificate (DER).
    pub fn with_ca(mut self, cert: CertificateDer<'static>) -> Self {
        self.custom.push(cert);
        self
    }

    /// Adds every certificate of a PEM file.
    pub fn add_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, CaFileError> {
        let path = path.as_ref();
        let fail = |problem: String| CaFileError {
            path: path.display().to_string(),
            problem,
        };
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(pem_problem(&e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| fail(pem_problem(&e)))?;
        if certs.is_empty() {
            return Err(fail("no certificate in the file".into()));
        }
        self.custom.extend(certs);
        Ok(self)
    }

    /// The rustls client configuration (ring provider, TLS 1.2 and 1.3).
    #[cfg(feature = "tls")]
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        if self.webpki {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.custom {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// A PEM file's problem in words: the markers and lines the parser names are bytes, shown
/// as text (rustls-pki-types prints them as lists of numbers).
fn pem_problem(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { end_marker } => format!(
            "a {} section has no END line: the file is cut short",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "a section starts with an invalid line: {:?}",
            String::from_utf8_lossy(line)
        ),
        other => other.to_string(),
    }
}
