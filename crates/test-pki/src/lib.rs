//! A throwaway public-key infrastructure for wxsocket's TLS tests: a CA generated for the
//! test, a server certificate it signed for `127.0.0.1` and `localhost`, and a client
//! certificate it signed for mutual TLS. Every suite that runs a `wss` server (the
//! adapters', the CLI's, the interop peers') uses this one.
//!
//! ```
//! let ca = wxsocket_test_pki::TestCa::generate("doc");
//! let server = ca.server_config(); // for the test's TLS server
//! let mutual = ca.server_config_requiring_clients(); // one that asks for `client_chain`
//! assert!(ca.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! assert_eq!(ca.server_chain.len(), 1);
//! assert!(ca.client_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
//! # let _ = (server, mutual);
//! ```
#![forbid(unsafe_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// The common name of [`TestCa::client_chain`]'s certificate.
pub const CLIENT_NAME: &str = "wxsocket test client";

/// A CA, one server certificate and one client certificate it signed.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate, DER: the one root a client under test trusts.
    pub ca_der: CertificateDer<'static>,
    /// The CA certificate, PEM (for a `--ca-file`).
    pub ca_pem: String,
    /// The server's chain (its certificate alone).
    pub server_chain: Vec<CertificateDer<'static>>,
    /// The server's private key (PKCS#8 DER).
    pub server_key: Vec<u8>,
    /// The server certificate, PEM (for a peer in another language).
    pub cert_pem: String,
    /// The server's private key, PEM.
    pub key_pem: String,
    /// A client's chain (its certificate alone, named `wxsocket test client`, for client
    /// authentication only), which [`Self::server_config_requiring_clients`] accepts.
    pub client_chain: Vec<CertificateDer<'static>>,
    /// The client's private key (PKCS#8 DER).
    pub client_key: Vec<u8>,
    /// The client certificate, PEM.
    pub client_cert_pem: String,
    /// The client's private key, PEM.
    pub client_key_pem: String,
}

impl TestCa {
    /// Generates a CA named after `name` and a server certificate signed by it, valid for
    /// `127.0.0.1` and `localhost`.
    pub fn generate(name: &str) -> TestCa {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("wxsocket test CA {name}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign the CA");
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "wxsocket test server");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("generate the server key");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .expect("sign the server certificate");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client");
        client_params
            .distinguished_name
            .push(DnType::CommonName, CLIENT_NAME);
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("generate the client key");
        let client = client_params
            .signed_by(&client_key, &ca)
            .expect("sign the client certificate");
        TestCa {
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            server_chain: vec![leaf.der().clone()],
            server_key: leaf_key.serialize_der(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            client_chain: vec![client.der().clone()],
            client_key: client_key.serialize_der(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// A rustls server configuration presenting the server certificate and requiring a
    /// client certificate signed by this CA (mutual TLS), on the given TLS versions.
    pub fn server_config_requiring_clients_on(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("the CA is a valid root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .expect("a client verifier");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server certificate");
        Arc::new(config)
    }

    /// [`Self::server_config_requiring_clients_on`] TLS 1.2 and 1.3.
    pub fn server_config_requiring_clients(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_requiring_clients_on(rustls::DEFAULT_VERSIONS)
    }

    /// A rustls server configuration presenting the server certificate (aws-lc-rs provider,
    /// its default key exchange groups, post-quantum X25519MLKEM768 first).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_with_groups(&[])
    }

    /// [`Self::server_config`] agreeing only to the key exchange `groups`, in that order of
    /// preference (all of the provider's defaults when empty): a server without post-quantum
    /// groups, or one that makes a client retry its hello with another group.
    ///
    /// # Panics
    /// On a group the aws-lc-rs provider does not implement.
    pub fn server_config_with_groups(
        &self,
        groups: &[rustls::NamedGroup],
    ) -> Arc<rustls::ServerConfig> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if !groups.is_empty() {
            provider.kx_groups = groups
                .iter()
                .map(|&name| {
                    *rustls::crypto::aws_lc_rs::ALL_KX_GROUPS
                        .iter()
                        .find(|group| group.name() == name)
                        .unwrap_or_else(|| panic!("no key exchange group {name:?}"))
                })
                .collect();
        }
        let provider = Arc::new(provider);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server certificate");
        Arc::new(config)
    }
}
