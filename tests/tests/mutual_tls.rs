//! Mutual TLS on both adapters: the certificate a client presents when a `wss` server asks
//! for one (`Config::client_identity`). Presented and accepted; not shown to a server that
//! does not ask; refused by the server; missing where the server requires one; and a key
//! that does not match its certificate, refused when the client is made, before any dial.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;
use wxsocket_core::{ConnectOptions, ConnectionError, Message, SessionConfig, TransportErrorKind};
use wxsocket_test_pki::TestCa;
use wxsocket_testkit::peer::{Mode, Peer, Tls};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::scenario::{
    close_cleanly, expect_connecting, expect_error_then_close, messages, open,
};
use wxsocket_wire::client::Config;
use wxsocket_wire::tls::{ClientIdentity, TlsRoots};

/// The client certificate `ca` signed, with its key.
fn identity(ca: &TestCa) -> ClientIdentity {
    ClientIdentity::new(
        ca.client_chain.clone(),
        PrivateKeyDer::Pkcs8(ca.client_key.clone().into()),
    )
}

/// A client trusting only `root`, presenting `identity` when asked.
fn config(root: CertificateDer<'static>, identity: Option<ClientIdentity>) -> Config {
    let session = SessionConfig::default().handshake_timeout(Duration::from_secs(10));
    let config = Config::new()
        .session(session)
        .tls(TlsRoots::only(vec![root]));
    match identity {
        Some(identity) => config.client_identity(identity),
        None => config,
    }
}

/// A server that asks for a client certificate sees the configured one, and the connection
/// carries messages; a server that does not ask sees none.
fn presents_its_certificate_when_asked<A: Adapter>() {
    for (tls, asks) in [(Tls::ClientCertificate, true), (Tls::Trusted, false)] {
        let peer = Peer::builder(Mode::Echo).tls(tls).start();
        let pki = peer.client_pki().expect("a TLS peer has its CA");
        let mut a = A::with_config(config(pki.ca_der.clone(), Some(identity(pki))))
            .unwrap_or_else(|e| panic!("[{}] config rejected: {e}", A::NAME));
        let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()).no_proxy());
        a.try_send(Message::text("over mutual TLS")).unwrap();
        let events = a.events_until("the echo", EVENT_TIMEOUT, |e| !messages(e).is_empty());
        assert_eq!(
            messages(&events),
            [Message::text("over mutual TLS")],
            "[{}] {tls:?}",
            A::NAME
        );
        let seen = peer.wait_conn(0, "the upgrade request", EVENT_TIMEOUT, |c| {
            c.request.is_some()
        });
        let expected = asks.then(|| pki.client_chain[0].to_vec());
        assert_eq!(seen.client_certificate, expected, "[{}] {tls:?}", A::NAME);
        close_cleanly(&mut a, conn);
    }
}

#[test]
fn a_client_certificate_is_presented_when_the_server_asks_tokio() {
    presents_its_certificate_when_asked::<TokioAdapter>();
}

#[test]
fn a_client_certificate_is_presented_when_the_server_asks_blocking() {
    presents_its_certificate_when_asked::<BlockingAdapter>();
}

/// The transport error of a dial `config` makes to `url` on adapter `A`, as (kind, text);
/// the dial must fail, then close 1006.
fn dial_error<A: Adapter>(config: Config, url: &str) -> (TransportErrorKind, String) {
    let mut a = A::with_config(config).expect("a valid configuration");
    let conn = a
        .connect(&ConnectOptions::new(url).no_proxy())
        .expect("valid options");
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, EVENT_TIMEOUT);
    match expect_error_then_close(A::NAME, conn, &events, 1006) {
        ConnectionError::ConnectFailed(e) => (e.kind, e.message),
        other => panic!("expected a failed dial, got {other:?}"),
    }
}

/// A TLS server with `config` on TLS 1.2 and 1.3 that takes two connections and reads
/// until the handshake fails; returns its `wss://localhost:PORT/` URL and its thread.
fn refusing_server(
    config: std::sync::Arc<rustls::ServerConfig>,
) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = rustls::ServerConnection::new(std::sync::Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            // Fails at the client's certificate; rustls sends the alert.
            let mut buf = [0u8; 1024];
            let _ = tls.read(&mut buf);
        }
    });
    (format!("wss://localhost:{port}/"), server)
}

/// Both adapters' errors for a dial of `url` with `config`: equal, and returned.
fn both(config: &Config, url: &str) -> (TransportErrorKind, String) {
    let tokio = dial_error::<TokioAdapter>(config.clone(), url);
    let blocking = dial_error::<BlockingAdapter>(config.clone(), url);
    assert_eq!(tokio, blocking, "the two adapters report it alike");
    tokio
}

/// A `wss` server that requires a client certificate, and the client has none configured:
/// the dial fails as TLS, and its text says why in words rather than as the alert's name
/// alone. Both adapters, TLS 1.3 (the server's refusal comes after the client finished its
/// side of the handshake) and TLS 1.2.
#[test]
fn a_server_that_requires_a_client_certificate_is_named() {
    let ca = TestCa::generate("mtls");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (url, server) = refusing_server(ca.server_config_requiring_clients_on(&[version]));
        let (kind, text) = both(&config(ca.ca_der.clone(), None), &url);
        server.join().unwrap();
        eprintln!("{version:?}: {text}");
        assert_eq!(kind, TransportErrorKind::Tls, "{version:?}: {text}");
        assert!(
            text.contains("requires a client certificate"),
            "{version:?}: {text}"
        );
        assert!(text.contains("none is configured"), "{version:?}: {text}");
    }
}

/// A client certificate the server does not accept (signed by a CA it does not trust): the
/// dial fails as TLS, and the text says the server refused the client's certificate and
/// why. Both adapters, TLS 1.3 and 1.2.
#[test]
fn a_client_certificate_the_server_refuses_is_named() {
    let ca = TestCa::generate("mtls");
    let stranger = TestCa::generate("stranger");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (url, server) = refusing_server(ca.server_config_requiring_clients_on(&[version]));
        let (kind, text) = both(&config(ca.ca_der.clone(), Some(identity(&stranger))), &url);
        server.join().unwrap();
        eprintln!("{version:?}: {text}");
        assert_eq!(kind, TransportErrorKind::Tls, "{version:?}: {text}");
        assert!(
            text.contains("the server refused the client certificate"),
            "{version:?}: {text}"
        );
        assert!(
            text.contains("does not trust its issuer"),
            "{version:?}: {text}"
        );
    }
}

/// A key that is not the certificate's is refused when the client is made, naming the
/// field, on both adapters: no connection is tried with it.
#[test]
fn a_key_that_does_not_match_its_certificate_is_refused_before_any_dial() {
    let ca = TestCa::generate("mtls");
    let other = TestCa::generate("other");
    let mismatched = ClientIdentity::new(
        ca.client_chain.clone(),
        PrivateKeyDer::Pkcs8(other.client_key.clone().into()),
    );
    let config = config(ca.ca_der.clone(), Some(mismatched));
    for error in [
        TokioAdapter::with_config(config.clone()).err(),
        BlockingAdapter::with_config(config).err(),
    ] {
        let error = error.expect("the mismatched key is refused");
        assert_eq!(error.field(), Some("client_identity"), "{error}");
        assert!(
            error
                .to_string()
                .contains("the key is not the certificate's"),
            "{error}"
        );
    }
}

/// A server that asks for a client certificate and then closes without a word (no TLS
/// alert, no answer to the upgrade), as Python's asyncio TLS does when it refuses one: the
/// dial's error says the server had asked, and whether a certificate was sent; a server
/// that did not ask gets no such words. Both adapters, TLS 1.3 and 1.2.
#[test]
fn a_server_that_asked_for_a_certificate_then_closed_is_explained() {
    use rustls::server::WebPkiClientVerifier;
    use std::sync::Arc;
    let ca = TestCa::generate("mtls");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // Asks, but lets a client without a certificate in: the refusal is the close.
    let asks = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for (ask, identity, said) in [
            (true, None, Some("and none is configured")),
            (
                true,
                Some(identity(&ca)),
                Some("was sent the configured one"),
            ),
            (false, Some(identity(&ca)), None),
        ] {
            let key = PrivateKeyDer::Pkcs8(ca.server_key.clone().into());
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])
                .unwrap();
            let builder = if ask {
                builder.with_client_cert_verifier(asks.clone())
            } else {
                builder.with_no_client_auth()
            };
            let server_config = Arc::new(
                builder
                    .with_single_cert(ca.server_chain.clone(), key)
                    .unwrap(),
            );
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("wss://localhost:{}/", listener.local_addr().unwrap().port());
            let server = std::thread::spawn(move || {
                for _ in 0..2 {
                    let (sock, _) = listener.accept().unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let conn = rustls::ServerConnection::new(Arc::clone(&server_config)).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    // The handshake and the upgrade request, then a close without a word.
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf);
                }
            });
            let (kind, text) = both(&config(ca.ca_der.clone(), identity), &url);
            server.join().unwrap();
            eprintln!("{version:?} asks {ask}: {text}");
            assert_eq!(kind, TransportErrorKind::Connect, "{version:?}: {text}");
            assert!(
                text.starts_with("handshake: the server closed the connection before answering"),
                "{version:?}: {text}"
            );
            match said {
                Some(said) => assert!(
                    text.contains("it had asked for a client certificate") && text.contains(said),
                    "{version:?}: {text}"
                ),
                None => assert!(!text.contains("client certificate"), "{version:?}: {text}"),
            }
        }
    }
}

/// A relay in front of `upstream` (a TLS 1.2 server) that rewrites the server's plaintext
/// fatal `certificate_required` alert into `alert` (a TLS 1.2 alert is plaintext until the
/// server's `ChangeCipherSpec`), as OpenSSL (`handshake_failure`) and Go (`bad_certificate`)
/// word the refusal of a client that sent no certificate. Returns its URL.
fn rewriting_alert(upstream: String, alert: u8) -> String {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://localhost:{}/", listener.local_addr().unwrap().port());
    let upstream = upstream["wss://".len()..].trim_end_matches('/').to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut server = std::net::TcpStream::connect(&upstream).unwrap();
            let (mut client_in, mut server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut server_out);
                let _ = server_out.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let required = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 116];
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = server.read(&mut buf) {
                    let data = &mut buf[..n];
                    if let Some(at) = data.windows(7).position(|w| w == required) {
                        data[at + 6] = alert;
                    }
                    if client.write_all(data).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    url
}

/// TLS 1.2 servers that refuse a client without a certificate with an alert that does not
/// name it (OpenSSL: `handshake_failure`; Go: `bad_certificate`): the error still says the
/// server requires a client certificate and none is configured, rather than the bare alert
/// or a refusal of a certificate that was never sent. Both adapters.
#[test]
fn a_tls12_refusal_for_want_of_a_certificate_is_named_whatever_the_alert() {
    let ca = TestCa::generate("mtls");
    // handshake_failure (40), bad_certificate (42)
    for alert in [40, 42] {
        let (upstream, server) =
            refusing_server(ca.server_config_requiring_clients_on(&[&rustls::version::TLS12]));
        let url = rewriting_alert(upstream, alert);
        let (kind, text) = both(&config(ca.ca_der.clone(), None), &url);
        server.join().unwrap();
        eprintln!("alert {alert}: {text}");
        assert_eq!(kind, TransportErrorKind::Tls, "{text}");
        assert!(
            text.contains("the server requires a client certificate, and none is configured"),
            "alert {alert}: {text}"
        );
        assert!(!text.contains("refused the client certificate"), "{text}");
    }
}

/// A client verifier that accepts only RSA-PSS signatures: a client certificate with an
/// ECDSA key (the test PKI's) cannot prove itself to it.
#[derive(Debug)]
struct RsaOnly(std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for RsaOnly {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::RSA_PSS_SHA256]
    }
}

/// A configured certificate whose key can make none of the signatures the server accepts is
/// not sent (rustls sends none): the error says so, not that none is configured. Both
/// adapters, TLS 1.3 and 1.2.
#[test]
fn a_certificate_whose_key_the_server_cannot_verify_is_not_called_missing() {
    use std::sync::Arc;
    let ca = TestCa::generate("mtls");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_client_cert_verifier(Arc::new(RsaOnly(webpki.clone())))
            .with_single_cert(
                ca.server_chain.clone(),
                PrivateKeyDer::Pkcs8(ca.server_key.clone().into()),
            )
            .unwrap();
        let (url, server) = refusing_server(Arc::new(server_config));
        let (kind, text) = both(&config(ca.ca_der.clone(), Some(identity(&ca))), &url);
        server.join().unwrap();
        eprintln!("{version:?}: {text}");
        assert_eq!(kind, TransportErrorKind::Tls, "{version:?}: {text}");
        assert!(!text.contains("none is configured"), "{version:?}: {text}");
        assert!(
            text.contains(
                "was not sent: its key can make none of the signatures the server accepts"
            ),
            "{version:?}: {text}"
        );
    }
}
