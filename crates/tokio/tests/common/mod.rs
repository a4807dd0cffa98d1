//! Loopback servers and event helpers for the adapter's tests. Every wait is bounded.
#![allow(dead_code, clippy::result_large_err)]

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use wxsocket_tokio::{Event, Events};

/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The next event, or a test failure after [`WAIT`].
pub async fn next(events: &mut Events) -> Event {
    match tokio::time::timeout(WAIT, events.next()).await {
        Ok(Some(event)) => {
            if std::env::var_os("TEST_EVENTS").is_some() {
                eprintln!("event: {event:?}");
            }
            event
        }
        Ok(None) => panic!("event stream ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Events up to and including the first one `stop` accepts.
pub async fn until(events: &mut Events, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = next(events).await;
        let done = stop(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// Skips to the first `Open` (panics on an earlier `Close`).
pub async fn until_open(events: &mut Events) -> Event {
    loop {
        match next(events).await {
            e @ Event::Open { .. } => return e,
            e @ Event::Close { .. } => panic!("closed before open: {e:?}"),
            _ => {}
        }
    }
}

/// Skips to the first `Close`.
pub async fn until_close(events: &mut Events) -> Event {
    until(events, |e| matches!(e, Event::Close { .. }))
        .await
        .pop()
        .unwrap()
}

/// What a test server saw.
#[derive(Debug)]
pub enum Seen {
    /// A handshake, with the request headers.
    Connected(http::HeaderMap),
    /// A data message.
    Message(WsMessage),
    /// The client's close frame.
    Close(Option<CloseFrame>),
    /// The connection ended.
    Gone,
}

/// How a [`Server`] behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Echo data messages back.
    pub echo: bool,
    /// Select this sub-protocol in the handshake.
    pub protocol: Option<String>,
}

/// A tokio-tungstenite server on `127.0.0.1:0` that reports what it sees; stopped on drop.
pub struct Server {
    pub url: String,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(behaviour: Behaviour) -> Server {
        Self::start_with(behaviour, None).await
    }

    /// With `tls`, the server speaks `wss` with that acceptor.
    pub async fn start_with(
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("wss://127.0.0.1:{port}/ws"),
            None => format!("ws://127.0.0.1:{port}/ws"),
        };
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (tx, behaviour, tls) = (tx.clone(), behaviour.clone(), tls.clone());
                conns.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, behaviour, tx).await;
                            }
                        }
                        None => serve(tcp, behaviour, tx).await,
                    }
                });
            }
        });
        Server { url, seen, task }
    }

    /// The next thing the server saw.
    pub async fn next(&mut self) -> Seen {
        match tokio::time::timeout(WAIT, self.seen.recv()).await {
            Ok(Some(seen)) => seen,
            Ok(None) => panic!("server stopped"),
            Err(_) => panic!("server saw nothing within {WAIT:?}"),
        }
    }

    /// Skips to the client's close frame (or the end of the connection).
    pub async fn next_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.next().await {
                Seen::Close(frame) => return frame,
                Seen::Gone => panic!("connection ended without a close frame"),
                _ => {}
            }
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    behaviour: Behaviour,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let mut extra = vec![("x-server", "wxsocket-test".to_owned())];
    if let Some(p) = &behaviour.protocol {
        extra.push(("sec-websocket-protocol", p.clone()));
    }
    let mut stream = stream;
    let Ok(request) = read_request(&mut stream).await else {
        return;
    };
    let _ = tx.send(Seen::Connected(request.clone()));
    let Ok(mut ws) = answer(stream, &request, &extra).await else {
        return;
    };
    while let Some(message) = ws.next().await {
        match message {
            Ok(WsMessage::Close(frame)) => {
                let _ = tx.send(Seen::Close(frame));
            }
            Ok(m) if m.is_text() || m.is_binary() => {
                let _ = tx.send(Seen::Message(m.clone()));
                if behaviour.echo && ws.send(m).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Seen::Gone);
}

/// The server side of the opening handshake, by hand (the adapter's tests need no server
/// handshake from tokio-tungstenite, so its `handshake` feature stays out of this crate's
/// dependency tree): reads the request head and returns its headers.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<http::HeaderMap> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut headers = http::HeaderMap::new();
    for line in text.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    Ok(headers)
}

/// Answers the request [`read_request`] read with 101 and `extra` headers; returns the
/// server's WebSocket.
pub async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &http::HeaderMap,
    extra: &[(&str, String)],
) -> std::io::Result<WebSocketStream<S>> {
    use tokio::io::AsyncWriteExt;
    let key = request
        .get("sec-websocket-key")
        .ok_or_else(|| std::io::Error::other("no Sec-WebSocket-Key"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    for (name, value) in extra {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    Ok(WebSocketStream::from_raw_socket(stream, Role::Server, None).await)
}

/// The whole server handshake ([`read_request`], then [`answer`]) without extra headers.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
) -> std::io::Result<WebSocketStream<S>> {
    let request = read_request(&mut stream).await?;
    answer(stream, &request, &[]).await
}

/// A TCP listener that accepts and then never answers (a stalled handshake).
pub async fn silent_server() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (url, task)
}

/// Reads a raw HTTP request head from `tcp` and answers 101 for it.
pub async fn raw_accept(tcp: &mut TcpStream) -> Vec<u8> {
    raw_accept_then(tcp, &[]).await
}

/// Like [`raw_accept`], with `after` in the same write as the 101 answer.
pub async fn raw_accept_then(tcp: &mut TcpStream, after: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "client closed during the handshake");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .trim()
        .to_owned();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(after);
    tcp.write_all(&bytes).await.unwrap();
    head
}

/// A CA generated for the test, and a server certificate it signed for 127.0.0.1.
pub struct TestPki {
    pub ca: rustls::pki_types::CertificateDer<'static>,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

pub fn test_pki() -> TestPki {
    let ca = wxsocket_test_pki::TestCa::generate("tokio");
    TestPki {
        acceptor: tokio_rustls::TlsAcceptor::from(ca.server_config()),
        ca: ca.ca_der,
    }
}
