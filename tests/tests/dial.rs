//! A dial that fails is reported in the same words by both adapters, since both follow one
//! dial plan (`wxsocket_wire::dial`): the same error kind and the same text for a refused
//! connection, a refused connection to the proxy, and a server that closes before it
//! answers the upgrade.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;
use wxsocket_core::{ConnectOptions, ConnectionError, SessionConfig, TransportErrorKind};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::scenario::{closed_port, expect_connecting, expect_error_then_close};
use wxsocket_wire::tls::TlsRoots;

/// The error a dial of `options` ends with on adapter `A` (then a close 1006).
fn dial_error<A: Adapter>(options: &ConnectOptions) -> ConnectionError {
    dial_error_with::<A>(options, TlsRoots::default())
}

/// [`dial_error`], trusting `tls`.
fn dial_error_with<A: Adapter>(options: &ConnectOptions, tls: TlsRoots) -> ConnectionError {
    let config = SessionConfig::default().handshake_timeout(Duration::from_secs(10));
    let mut a = A::new(config, tls).expect("a valid configuration");
    let conn = a.connect(options).expect("valid options");
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, EVENT_TIMEOUT);
    expect_error_then_close(A::NAME, conn, &events, 1006)
}

/// The transport error inside a dial's error, as (kind, text).
fn transport(error: ConnectionError) -> (TransportErrorKind, String) {
    match error {
        ConnectionError::ConnectFailed(e) => (e.kind, e.message),
        other => panic!("expected a failed dial, got {other:?}"),
    }
}

/// Both adapters' errors for `options`: equal, and returned for the caller's checks.
fn both(options: &ConnectOptions) -> (TransportErrorKind, String) {
    let tokio = transport(dial_error::<TokioAdapter>(options));
    let blocking = transport(dial_error::<BlockingAdapter>(options));
    assert_eq!(
        tokio, blocking,
        "the two adapters report the dial's failure alike"
    );
    tokio
}

#[test]
fn a_refused_connection_reads_the_same_on_both_adapters() {
    let port = closed_port();
    let (kind, text) = both(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")).no_proxy());
    assert_eq!(kind, TransportErrorKind::Connect);
    assert!(
        text.starts_with(&format!("connect to 127.0.0.1 (127.0.0.1:{port}): ")),
        "{text}"
    );
}

#[test]
fn a_refused_proxy_reads_the_same_on_both_adapters() {
    let port = closed_port();
    let options =
        ConnectOptions::new("ws://example.invalid/").proxy(format!("http://127.0.0.1:{port}"));
    let (kind, text) = both(&options);
    assert_eq!(kind, TransportErrorKind::Connect);
    assert!(
        text.starts_with(&format!("connect to proxy http://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(text.contains(&format!("(127.0.0.1:{port}): ")), "{text}");
}

/// Reads an upgrade request to its end: its head.
fn read_request(sock: &mut std::net::TcpStream) -> Vec<u8> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed first");
        request.extend_from_slice(&buf[..n]);
    }
    request
}

/// A server on 127.0.0.1 that answers two upgrade requests (one per adapter) with
/// `answer(accept)`, `accept` the right `Sec-WebSocket-Accept` for the request, then
/// closes: its URL and thread.
fn answering(
    answer: impl Fn(&str) -> String + Send + 'static,
) -> (String, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().unwrap();
            let head = read_request(&mut sock);
            let key = String::from_utf8_lossy(&head)
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_owned())
                })
                .expect("a Sec-WebSocket-Key");
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            sock.write_all(answer(&accept).as_bytes()).unwrap();
        }
    });
    (url, server)
}

/// RFC 6455 §4.1: an `Upgrade` other than "websocket" alone fails the dial on both adapters
/// (a list holding it, or two `Upgrade` headers, opened).
#[test]
fn an_upgrade_other_than_websocket_alone_fails_on_both_adapters() {
    for (upgrades, received) in [
        ("Upgrade: websocket, h2c\r\n", "\"websocket, h2c\""),
        (
            "Upgrade: h2c\r\nUpgrade: websocket\r\n",
            "\"h2c\", \"websocket\"",
        ),
    ] {
        let (url, server) = answering(move |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\n{upgrades}Connection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            )
        });
        let (kind, text) = both(&ConnectOptions::new(url).no_proxy());
        server.join().unwrap();
        assert_eq!(kind, TransportErrorKind::Protocol, "{text}");
        assert_eq!(
            text,
            format!("handshake response has Upgrade {received}, not \"websocket\" alone")
        );
    }
}

/// An answer with more headers than the client reads fails the dial on both adapters, the
/// error naming the limit (it said "too many headers").
#[test]
fn too_many_headers_name_the_limit_on_both_adapters() {
    let (url, server) = answering(|accept| {
        let extra: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    });
    let (kind, text) = both(&ConnectOptions::new(url).no_proxy());
    server.join().unwrap();
    assert_eq!(kind, TransportErrorKind::Protocol);
    assert_eq!(text, "invalid handshake response: more than 128 headers");
}

/// A server that closes in the middle of its answer: both adapters say so, with the status
/// line, and a refusal's status line reads as that refusal (it read "the server closed the
/// connection before answering", a network failure).
#[test]
fn an_answer_cut_short_reads_the_same_on_both_adapters() {
    let (url, server) = answering(|_| "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n".into());
    let (kind, text) = both(&ConnectOptions::new(url).no_proxy());
    server.join().unwrap();
    assert_eq!(kind, TransportErrorKind::HttpStatus(403));
    assert_eq!(
        text,
        "handshake: the server closed the connection in the middle of its answer \
         (43 bytes in): `HTTP/1.1 403 Forbidden`"
    );
    // A 101 cut short: still a network failure, in the same words.
    let (url, server) = answering(|_| "HTTP/1.1 101 Switching Protocols\r\nUpg".into());
    let (kind, text) = both(&ConnectOptions::new(url).no_proxy());
    server.join().unwrap();
    assert_eq!(kind, TransportErrorKind::Connect);
    assert_eq!(
        text,
        "handshake: the server closed the connection in the middle of its answer \
         (37 bytes in): `HTTP/1.1 101 Switching Protocols`"
    );
}

/// A server that resets the connection in the middle of its answer: a refusal whose status
/// line came is that refusal, as when it closes there (it was a connect error, and a
/// reconnect policy dialled the 403 again).
#[test]
fn an_answer_reset_midway_reads_as_the_refusal_on_both_adapters() {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().unwrap();
            // Part of the request read, the rest left unread: closing the socket then
            // sends a reset, after the bytes written before it (which Linux still hands to
            // the reader before the reset's error).
            let mut start = [0u8; 16];
            sock.read_exact(&mut start).unwrap();
            sock.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Le")
                .unwrap();
        }
    });
    let (kind, text) = both(&ConnectOptions::new(url).no_proxy());
    server.join().unwrap();
    assert_eq!(kind, TransportErrorKind::HttpStatus(403), "{text}");
    assert_eq!(
        text,
        "handshake: the server reset the connection in the middle of its answer \
         (34 bytes in): `HTTP/1.1 403 Forbidden`"
    );
}

/// A proxy that refuses with `407` and closes, its answer cut short: with the CONNECT
/// request read (a close, FIN) and with most of it unread (a reset, RST, which Linux hands
/// the reader after the bytes written before it), the dial fails alike, as that refusal
/// (final for a reconnect policy): a reset was an IO error, dialled again.
#[test]
fn a_proxy_answer_cut_short_reads_as_the_refusal_on_both_adapters() {
    use std::io::Write;
    for (reset, how) in [(false, "closed"), (true, "reset")] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut sock, _) = listener.accept().unwrap();
                if reset {
                    let mut start = [0u8; 16];
                    sock.read_exact(&mut start).unwrap();
                } else {
                    read_request(&mut sock);
                }
                sock.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Au")
                    .unwrap();
            }
        });
        let options = ConnectOptions::new("ws://example.invalid/").proxy(proxy.clone());
        let (kind, text) = both(&options);
        server.join().unwrap();
        assert_eq!(kind, TransportErrorKind::HttpStatus(407), "{text}");
        assert_eq!(
            text,
            format!(
                "proxy {proxy} {how} the connection in the middle of its answer to CONNECT \
                 example.invalid:80 (52 bytes in): `HTTP/1.1 407 Proxy Authentication Required`"
            )
        );
    }
}

#[test]
fn a_server_that_closes_before_answering_reads_the_same_on_both_adapters() {
    // Reads each upgrade request to its end, then closes without a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().unwrap();
            read_request(&mut sock);
        }
    });
    let (kind, text) = both(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")).no_proxy());
    server.join().unwrap();
    // A dial that failed on the network, as a reset before the answer is.
    assert_eq!(kind, TransportErrorKind::Connect);
    assert_eq!(
        text,
        "handshake: the server closed the connection before answering"
    );
}

/// The simple path on both adapters: a server that answers the upgrade with 404 (or 403) is
/// a refusal, its own error kind, whose message does not say to connect again (the same
/// request meets the same answer; a reconnect policy does not retry a 4xx either). A 503 is
/// a connection error, which connecting again may mend.
#[test]
fn a_4xx_answer_on_the_simple_path_is_a_refusal_on_both_adapters() {
    use wxsocket_testkit::peer::{Mode, Peer};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // A permanent redirect, not followed, is met again: a refusal too; a temporary one not.
    for (status, refused) in [
        (404, true),
        (403, true),
        (503, false),
        (308, true),
        (301, true),
        (307, false),
    ] {
        let peer = Peer::start(Mode::HttpStatus(status));
        let blocking = wxsocket_blocking::connect(peer.url()).unwrap_err();
        let tokio = runtime
            .block_on(wxsocket_tokio::connect(peer.url()))
            .unwrap_err();
        for (kind, message) in [
            (
                blocking.kind() == wxsocket_blocking::ErrorKind::Refused,
                blocking.to_string(),
            ),
            (
                tokio.kind() == wxsocket_tokio::ErrorKind::Refused,
                tokio.to_string(),
            ),
        ] {
            assert_eq!(kind, refused, "HTTP {status}: {message}");
            assert_eq!(message.contains("connect again"), !refused, "{message}");
        }
    }
}

/// A server that answers the upgrade with interim answers (`100 Continue`) without end:
/// the dial fails once [`MAX_INTERIM_ANSWERS`](wxsocket_wire::handshake::MAX_INTERIM_ANSWERS)
/// were passed over, on both adapters alike (the blocking adapter kept reading them past
/// its handshake timeout: 9 s for 4).
#[test]
fn interim_answers_without_end_fail_the_dial_on_both_adapters() {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().unwrap();
            read_request(&mut sock);
            // Until the client gives up (its dial failed): far more than it takes.
            for _ in 0..100_000 {
                if sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                    break;
                }
            }
        }
    });
    let (kind, text) = both(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")).no_proxy());
    server.join().unwrap();
    assert_eq!(kind, TransportErrorKind::Protocol);
    assert!(
        text.contains("more than 16 interim (1xx) answers"),
        "{text}"
    );
}
