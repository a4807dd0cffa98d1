//! rustls client configuration: webpki roots, custom CA certificates, or both, and the
//! certificate a client presents to a server that asks for one (mutual TLS).
//!
//! [`TlsRoots`] and [`ClientIdentity`] exist with or without the `tls` feature, so a
//! [`crate::client::Config`] is the same type either way; [`TlsRoots::client_config`] needs
//! the feature.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Which certificate authorities a `wss` connection trusts.
#[derive(Debug, Clone)]
#[non_exhaustive]
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

/// A PEM file (of CA certificates, a client certificate or its key) could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {path}: {problem}")]
#[non_exhaustive]
pub struct PemFileError {
    /// What the file was for: `ca_file`, `client_cert` or `client_key`.
    pub field: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

impl PemFileError {
    fn new(field: &'static str, path: &Path, problem: String) -> Self {
        Self {
            field,
            path: path.display().to_string(),
            problem,
        }
    }
}

/// The certificate chain and private key a client presents when a `wss` server asks for
/// one (mutual TLS). A server that does not ask never sees it.
///
/// Set it with [`crate::client::Config::client_identity`]. The key is checked against the
/// certificate when the client is created: a key that does not match, or that rustls cannot
/// use, is a configuration error of the field `client_identity`, before any connection.
///
/// ```
/// use wxsocket_wire::tls::ClientIdentity;
/// let ca = wxsocket_test_pki::TestCa::generate("doc");
/// let dir = std::env::temp_dir().join(format!("wxsocket-identity-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// std::fs::write(dir.join("client.pem"), &ca.client_cert_pem)?;
/// std::fs::write(dir.join("client.key"), &ca.client_key_pem)?;
/// let identity = ClientIdentity::from_pem_files(dir.join("client.pem"), dir.join("client.key"))?;
/// assert_eq!(identity.chain().len(), 1);
/// // Its Debug form never shows the key.
/// assert!(!format!("{identity:?}").contains("PRIVATE"));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl ClientIdentity {
    /// The certificate chain (the client's own certificate first, then any intermediates)
    /// and its private key, DER.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            chain,
            key: Arc::new(key),
        }
    }

    /// Reads the chain from every certificate of the PEM file `cert` (the client's own
    /// first) and the private key (PKCS#8, PKCS#1 or SEC1) from the PEM file `key`, which
    /// may be the same file. The error names the file and what is wrong with it.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, PemFileError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read_pem_file(cert, "client_cert")?;
        let chain = certificates(&cert_pem, cert, "client_cert")?;
        // The same file is read once: it may be a pipe (`--client-cert <(...)`).
        let key_pem = if key == cert {
            cert_pem
        } else {
            read_pem_file(key, "client_key")?
        };
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let problem = match e {
                _ if is_encrypted(&key_pem) => "the private key is encrypted (protected by a \
                                                passphrase), which wxsocket cannot read: \
                                                decrypt it first, e.g. `openssl pkey -in KEY \
                                                -out PLAIN.key`"
                    .into(),
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no private key in the file (a PKCS#8, PKCS#1 or SEC1 PEM section)".into()
                }
                other => pem_problem(&other),
            };
            PemFileError::new("client_key", key, problem)
        })?;
        // The first key would be taken without a word, and if it is not the certificate's
        // the refusal would not say that another sits behind it.
        if PrivateKeyDer::pem_slice_iter(&key_pem).count() > 1 {
            return Err(PemFileError::new(
                "client_key",
                key,
                "more than one private key in the file: keep only the certificate's".into(),
            ));
        }
        Ok(Self::new(chain, key_der))
    }

    /// The certificate chain, the client's own certificate first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key (DER).
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }
}

/// The chain's length only: a private key is not for logs.
impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .field("key", &"<not shown>")
            .finish()
    }
}

/// What a server's request for a client certificate met during a TLS handshake.
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    /// None is configured: the client sent none.
    NoneConfigured,
    /// The configured one was sent.
    Sent,
    /// One is configured, but its key can make none of the signatures the server accepts,
    /// so rustls sent none.
    Unusable,
}

#[cfg(feature = "tls")]
thread_local! {
    /// What [`ClientCertificate::resolve`] saw during the rustls call [`asked_for`] runs.
    static ASKED: std::cell::Cell<Option<ClientAuth>> = const { std::cell::Cell::new(None) };
}

/// Runs `f`, a call into one connection's rustls state, and says whether the server asked
/// for a client certificate during it. rustls asks the configuration's resolver, which all
/// of a client's connections share, on the thread that processes the server's records,
/// inside the call: so a thread-local flag set there belongs to this connection.
#[cfg(feature = "tls")]
pub(crate) fn asked_for<R>(f: impl FnOnce() -> R) -> (R, Option<ClientAuth>) {
    ASKED.set(None);
    let result = f();
    (result, ASKED.take())
}

/// The client certificate a connection presents when the server asks: the configured one, or
/// none. Either way the request is noted ([`asked_for`]), so that a server that then closes
/// without a word (as Python's asyncio TLS does when it refuses a client) can be explained.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct ClientCertificate {
    key: Option<Arc<rustls::sign::CertifiedKey>>,
}

#[cfg(feature = "tls")]
impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        // rustls sends the certificate only if its key can sign with one of `sigschemes`
        // (the server's): otherwise none, as if none were configured.
        let auth = match &self.key {
            None => ClientAuth::NoneConfigured,
            Some(key) if key.key.choose_scheme(sigschemes).is_some() => ClientAuth::Sent,
            Some(_) => ClientAuth::Unusable,
        };
        ASKED.set(Some(auth));
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// What rustls's refusal of a client identity ([`TlsRoots::client_config_with`]) is about:
/// the file at fault (`client_cert` or `client_key`) and the problem in words.
#[cfg(feature = "tls")]
pub fn identity_refusal(error: &rustls::Error) -> (&'static str, &'static str) {
    match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => (
            "client_key",
            "the key is not the certificate's (their public keys differ)",
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => (
            "client_cert",
            "rustls cannot read the client certificate (not a valid X.509 certificate)",
        ),
        _ => (
            "client_key",
            "rustls cannot sign with this kind of key (RSA of 2048 bits or more, ECDSA P-256 \
             or P-384, and Ed25519 work)",
        ),
    }
}

/// The most a PEM file of certificates or a key is read of: far more than any CA bundle, and
/// a bound on what a wrong path (`/dev/zero`) costs.
const MAX_PEM_FILE: u64 = 16 << 20;

/// The bytes of a PEM file (at most [`MAX_PEM_FILE`]).
fn read_pem_file(path: &Path, field: &'static str) -> Result<Vec<u8>, PemFileError> {
    use std::io::Read;
    let fail = |problem: String| PemFileError::new(field, path, problem);
    let io = |e: std::io::Error| fail(pem_problem(&rustls_pki_types::pem::Error::Io(e)));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(fail(format!(
            "larger than {} MiB: not a PEM file of certificates or a key",
            MAX_PEM_FILE >> 20
        )));
    }
    Ok(bytes)
}

/// Whether a PEM file holds an encrypted private key (PKCS#8's `ENCRYPTED PRIVATE KEY`, or
/// OpenSSL's traditional `Proc-Type: 4,ENCRYPTED` header).
fn is_encrypted(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// Every certificate of a PEM file, at least one.
fn read_certificates(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    certificates(&read_pem_file(path, field)?, path, field)
}

/// Every certificate of `pem`, the contents of `path`, at least one.
fn certificates(
    pem: &[u8],
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let fail = |problem: String| PemFileError::new(field, path, problem);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| fail(pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    Ok(certs)
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

    /// Adds every certificate of a PEM file (the error's field is `ca_file`; a file over
    /// 16 MiB is refused).
    pub fn add_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, PemFileError> {
        self.custom
            .extend(read_certificates(path.as_ref(), "ca_file")?);
        Ok(self)
    }

    /// The rustls client configuration (aws-lc-rs provider, TLS 1.2 and 1.3, key exchange
    /// X25519MLKEM768 first, then the classical groups), presenting no client certificate.
    #[cfg(feature = "tls")]
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        self.client_config_with(None)
    }

    /// [`Self::client_config`], presenting `identity` to a server that asks for a client
    /// certificate. rustls refuses a key that does not match the certificate.
    #[cfg(feature = "tls")]
    pub fn client_config_with(
        &self,
        identity: Option<&ClientIdentity>,
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        if self.webpki {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.custom {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = match identity {
            None => None,
            Some(identity) => Some(Arc::new(rustls::sign::CertifiedKey::from_der(
                identity.chain.clone(),
                identity.key.clone_key(),
                &provider,
            )?)),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(ClientCertificate { key }));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of PEM files for one test, removed on drop.
    struct Files(std::path::PathBuf);

    impl Files {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("wxsocket-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Each file a client identity is read from is named in its error, with what is wrong:
    /// a missing file, a certificate file without a certificate, a key file without a key.
    #[test]
    fn an_unusable_identity_file_names_its_field_and_problem() {
        let ca = wxsocket_test_pki::TestCa::generate("files");
        let files = Files::new("identity");
        let cert = files.write("client.pem", &ca.client_cert_pem);
        let key = files.write("client.key", &ca.client_key_pem);
        let both = files.write(
            "both.pem",
            &(ca.client_cert_pem.clone() + &ca.client_key_pem),
        );
        let missing = files.0.join("missing.pem");

        let identity = ClientIdentity::from_pem_files(&cert, &key).unwrap();
        assert_eq!(identity.chain(), &ca.client_chain[..]);
        // One file may hold both, as curl's `--cert` allows.
        let identity = ClientIdentity::from_pem_files(&both, &both).unwrap();
        assert_eq!(identity.chain(), &ca.client_chain[..]);

        let error = ClientIdentity::from_pem_files(&missing, &key).unwrap_err();
        assert_eq!(error.field, "client_cert", "{error}");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let error = ClientIdentity::from_pem_files(&key, &key).unwrap_err();
        assert_eq!(error.field, "client_cert", "{error}");
        assert!(error.problem.contains("no certificate"), "{error}");
        let error = ClientIdentity::from_pem_files(&cert, &cert).unwrap_err();
        assert_eq!(error.field, "client_key", "{error}");
        assert!(error.problem.contains("no private key"), "{error}");
        let error = ClientIdentity::from_pem_files(&cert, &missing).unwrap_err();
        assert_eq!(error.field, "client_key", "{error}");
    }

    /// An encrypted key, PKCS#8's or OpenSSL's traditional one, is named as such (it was "no
    /// private key in the file", or a base64 error), with what to do about it.
    #[test]
    fn an_encrypted_key_is_named_as_such() {
        let ca = wxsocket_test_pki::TestCa::generate("encrypted");
        let files = Files::new("encrypted");
        let cert = files.write("client.pem", &ca.client_cert_pem);
        let pkcs8 = files.write(
            "pkcs8.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQww\n\
             -----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let traditional = files.write(
            "traditional.key",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
             DEK-Info: AES-256-CBC,2AD839064E6E3E699E31B5430665F424\n\n\
             MIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
        );
        for key in [pkcs8, traditional] {
            let error = ClientIdentity::from_pem_files(&cert, &key).unwrap_err();
            assert_eq!(error.field, "client_key", "{error}");
            assert!(error.problem.contains("is encrypted"), "{error}");
            assert!(error.problem.contains("decrypt it first"), "{error}");
        }
    }

    /// One file for both the certificate and the key is read once: a pipe (a shell's
    /// `<(...)`) gives its bytes only once, and the key was then looked for in nothing.
    #[cfg(unix)]
    #[test]
    fn one_pipe_for_the_certificate_and_the_key_is_read_once() {
        let ca = wxsocket_test_pki::TestCa::generate("pipe");
        let files = Files::new("pipe");
        let fifo = files.0.join("both.pem");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let both = ca.client_cert_pem.clone() + &ca.client_key_pem;
        let writer = {
            let fifo = fifo.clone();
            // Writes once; a second open of the pipe would wait for a writer forever.
            std::thread::spawn(move || std::fs::write(fifo, both).unwrap())
        };
        let identity = ClientIdentity::from_pem_files(&fifo, &fifo).unwrap();
        assert_eq!(identity.chain(), &ca.client_chain[..]);
        writer.join().unwrap();
    }

    /// A file that never ends (a wrong path such as `/dev/zero`) is refused once it is past
    /// any PEM file's size, instead of being read until memory runs out.
    #[cfg(unix)]
    #[test]
    fn an_endless_file_is_refused_at_a_bound() {
        let error = TlsRoots::default().add_pem_file("/dev/zero").unwrap_err();
        assert_eq!(error.field, "ca_file", "{error}");
        assert!(error.problem.contains("larger than"), "{error}");
        let error = ClientIdentity::from_pem_files("/dev/zero", "/dev/zero").unwrap_err();
        assert_eq!(error.field, "client_cert", "{error}");
        assert!(error.problem.contains("larger than"), "{error}");
    }

    /// A file with two keys is refused rather than its first key taken without a word.
    #[test]
    fn a_key_file_with_two_keys_is_refused() {
        let ca = wxsocket_test_pki::TestCa::generate("two");
        let other = wxsocket_test_pki::TestCa::generate("other");
        let files = Files::new("two-keys");
        let cert = files.write("client.pem", &ca.client_cert_pem);
        let keys = files.write("keys.pem", &(other.client_key_pem + &ca.client_key_pem));
        let error = ClientIdentity::from_pem_files(&cert, &keys).unwrap_err();
        assert_eq!(error.field, "client_key", "{error}");
        assert!(
            error.problem.contains("more than one private key"),
            "{error}"
        );
    }

    /// rustls's refusals of an identity name the file at fault: a key that is not the
    /// certificate's, a key rustls cannot sign with, a certificate it cannot read.
    #[cfg(feature = "tls")]
    #[test]
    fn identity_refusals_name_the_file_at_fault() {
        let ca = wxsocket_test_pki::TestCa::generate("refusals");
        let other = wxsocket_test_pki::TestCa::generate("other");
        let key =
            |ca: &wxsocket_test_pki::TestCa| PrivateKeyDer::Pkcs8(ca.client_key.clone().into());
        let roots = TlsRoots::only(vec![ca.ca_der.clone()]);
        let refusal = |identity: ClientIdentity| {
            let error = roots.client_config_with(Some(&identity)).unwrap_err();
            identity_refusal(&error)
        };
        let (file, problem) = refusal(ClientIdentity::new(ca.client_chain.clone(), key(&other)));
        assert_eq!(file, "client_key");
        assert!(problem.contains("not the certificate's"), "{problem}");
        // A PKCS#8 envelope around nothing rustls knows.
        let junk_key = PrivateKeyDer::Pkcs8(vec![0x30, 0x03, 0x02, 0x01, 0x00].into());
        let (file, problem) = refusal(ClientIdentity::new(ca.client_chain.clone(), junk_key));
        assert_eq!(file, "client_key");
        assert!(
            problem.contains("cannot sign with this kind of key"),
            "{problem}"
        );
        let junk_cert = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let (file, problem) = refusal(ClientIdentity::new(vec![junk_cert], key(&ca)));
        assert_eq!(file, "client_cert");
        assert!(
            problem.contains("cannot read the client certificate"),
            "{problem}"
        );
    }

    /// A key that is not the certificate's is refused when the configuration is built.
    #[cfg(feature = "tls")]
    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let ca = wxsocket_test_pki::TestCa::generate("mine");
        let other = wxsocket_test_pki::TestCa::generate("other");
        let key =
            |ca: &wxsocket_test_pki::TestCa| PrivateKeyDer::Pkcs8(ca.client_key.clone().into());
        let roots = TlsRoots::only(vec![ca.ca_der.clone()]);
        let matching = ClientIdentity::new(ca.client_chain.clone(), key(&ca));
        assert!(roots.client_config_with(Some(&matching)).is_ok());
        let mismatched = ClientIdentity::new(ca.client_chain.clone(), key(&other));
        assert!(roots.client_config_with(Some(&mismatched)).is_err());
    }
}
