//! `wss://` against a rustls server whose certificate a CA generated at test time signed.

mod common;

use common::*;
use wxsocket_tokio::{Client, Config, ConnectOptions, ConnectionError, Event, Message, TlsRoots};

fn echo() -> Behaviour {
    Behaviour {
        echo: true,
        ..Behaviour::default()
    }
}

#[tokio::test]
async fn wss_with_a_custom_ca_echoes() {
    let pki = test_pki();
    let server = Server::start_with(echo(), Some(pki.acceptor.clone())).await;
    assert!(server.url.starts_with("wss://"));
    let config = Config::default().tls(TlsRoots::default().with_ca(pki.ca.clone()));
    let (client, mut events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(&server.url)).unwrap();
    until_open(&mut events).await;
    assert!(client.socket_info().unwrap().tls);
    for i in 0..10 {
        client.try_send(format!("secure {i}")).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        if let Event::Message { message, .. } = next(&mut events).await {
            got.push(message);
        }
    }
    let expected: Vec<_> = (0..10)
        .map(|i| Message::text(format!("secure {i}")))
        .collect();
    assert_eq!(got, expected);
    client.close(None, "").unwrap();
    assert!(matches!(
        until_close(&mut events).await,
        Event::Close {
            code: 1000,
            clean: true,
            ..
        }
    ));
}

/// A certificate no trusted CA signed: an error event naming TLS, then close 1006 — not a
/// hang.
#[tokio::test]
async fn wss_with_an_untrusted_certificate_fails_clearly() {
    let pki = test_pki();
    let server = Server::start_with(echo(), Some(pki.acceptor.clone())).await;
    // Trust the webpki roots and a different test CA, but not the server's.
    let other = test_pki();
    let config = Config::default().tls(TlsRoots::default().with_ca(other.ca));
    let (client, mut events) = Client::new(config).unwrap();
    let conn = client.connect(&ConnectOptions::new(&server.url)).unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    let error = seen
        .iter()
        .find_map(|e| match e {
            Event::Error {
                error: ConnectionError::ConnectFailed(error),
                ..
            } => Some(error.clone()),
            _ => None,
        })
        .expect("an error event");
    assert_eq!(
        error.kind,
        wxsocket_core::TransportErrorKind::Tls,
        "{error}"
    );
    assert!(
        error.message.to_lowercase().contains("certificate"),
        "{error}"
    );
    assert!(matches!(
        seen.last(),
        Some(Event::Close { conn: c, code: 1006, clean: false, .. }) if *c == conn
    ));
}

/// The same server is reachable by name (`localhost` is in the certificate).
#[tokio::test]
async fn wss_by_host_name() {
    let pki = test_pki();
    let server = Server::start_with(echo(), Some(pki.acceptor.clone())).await;
    let url = server.url.replace("127.0.0.1", "localhost");
    let config = Config::default().tls(TlsRoots::only(vec![pki.ca.clone()]));
    let (client, mut events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    until_open(&mut events).await;
    tokio::time::timeout(WAIT, client.send("by name"))
        .await
        .unwrap()
        .unwrap();
}
