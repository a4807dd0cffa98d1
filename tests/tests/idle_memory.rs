//! A connection that received a long message keeps nothing of it once idle: letting go of
//! the message gives its memory back to the system, on both adapters. Measured as the
//! process's resident memory (`VmRSS` of `/proc/self/status`); alone in its test binary,
//! with one test that runs the adapters one after the other, so that the process's memory
//! is this test's.
//!
//! tungstenite reads a frame into a buffer reserved for the whole frame, hands the payload
//! out as a slice of it, and keeps the buffer for its next reads: a connection that once
//! received a 40 MiB message held 40 MiB until it closed, even after the application let go
//! of the message.
//!
//! The same holds over `wss://`, where tungstenite reads what rustls decrypted, and with
//! permessage-deflate, where the inflater hands tungstenite the message as fragments of its
//! own, which tungstenite joins in a buffer of the message's (so the read buffer is not what
//! keeps it there; the check is that nothing else does).

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use tungstenite::protocol::Role;
use wxsocket_core::{ConnectOptions, DeflateOptions, Event, Message, SessionConfig};
use wxsocket_test_pki::TestCa;
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::memory::resident;
use wxsocket_tests::scenario::{open, raw_upgrade, round_trip};
use wxsocket_wire::tls::TlsRoots;

/// The long message: past glibc's largest mmap threshold (32 MiB), so that its allocation
/// is mapped on its own and freeing it returns it to the system at once.
const LONG: usize = 40 << 20;
/// How much of it may stay resident once the application let go of it.
const KEPT_BOUND: u64 = 8 << 20;

/// How the long message comes.
enum Over {
    /// A plain frame straight off the socket.
    Plain,
    /// The same frame over TLS.
    Tls(Box<TestCa>),
    /// One compressed frame (no context takeover either way), about 40 KiB on the wire.
    Deflate,
}

impl Over {
    fn name(&self) -> &'static str {
        match self {
            Over::Plain => "plain",
            Over::Tls(_) => "tls",
            Over::Deflate => "deflate",
        }
    }

    /// What the client is told to trust, and how it connects to `addr`.
    fn client(&self, addr: std::net::SocketAddr) -> (TlsRoots, ConnectOptions) {
        match self {
            Over::Plain => (
                TlsRoots::default(),
                ConnectOptions::new(format!("ws://{addr}/")),
            ),
            Over::Tls(ca) => (
                TlsRoots::only(vec![ca.ca_der.clone()]),
                ConnectOptions::new(format!("wss://localhost:{}/", addr.port())),
            ),
            Over::Deflate => (
                TlsRoots::default(),
                ConnectOptions::new(format!("ws://{addr}/")).deflate(DeflateOptions::default()),
            ),
        }
    }
}

/// A server's socket, plain or TLS.
trait Stream: Read + Write + Send {}
impl<S: Read + Write + Send> Stream for S {}

/// A server that answers the upgrade and, once the client sends a text, writes one binary
/// message of [`LONG`] bytes (from one small buffer, or compressed, so that its own memory
/// stays out of the count), then echoes text messages until the client closes. Returns the
/// client's settings and connect options.
fn long_message_server(over: &Over) -> (TlsRoots, ConnectOptions, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (roots, options) = over.client(listener.local_addr().unwrap());
    let tls = match over {
        Over::Tls(ca) => Some(ca.server_config()),
        _ => None,
    };
    let compressed = matches!(over, Over::Deflate).then(compressed_long_message);
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut stream: Box<dyn Stream> = match tls {
            Some(config) => Box::new(rustls::StreamOwned::new(
                rustls::ServerConnection::new(config).unwrap(),
                tcp,
            )),
            None => Box::new(tcp),
        };
        let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        raw_upgrade(&mut stream, compressed.is_some().then_some(agreed)).unwrap();
        // The client's texts are short enough to go out uncompressed (under the
        // compression threshold), so a plain server reads and echoes them.
        let mut ws = tungstenite::WebSocket::from_raw_socket(stream, Role::Server, None);
        // The message goes once the client asks, so that the client's memory is measured
        // open before it: a compressed one, a few dozen KiB, came with the handshake.
        match ws.read() {
            Ok(message) if message.is_text() => {}
            other => panic!("expected the client's go-ahead, got {other:?}"),
        }
        let stream = ws.get_mut();
        match compressed {
            // The header goes with the start of the payload, as a server's one write (over
            // TLS, one record): tungstenite's buffer then holds part of the frame when it
            // reserves room for the rest, and keeps room to spare after it.
            None => {
                let chunk = vec![7u8; 64 << 10];
                let mut first = frame_header(0x82, LONG);
                first.extend_from_slice(&chunk);
                stream.write_all(&first).unwrap();
                for _ in 1..LONG / chunk.len() {
                    stream.write_all(&chunk).unwrap();
                }
            }
            Some(payload) => {
                // FIN, RSV1 (compressed), binary.
                let mut frame = frame_header(0xc2, payload.len());
                frame.extend_from_slice(&payload);
                stream.write_all(&frame).unwrap();
            }
        }
        stream.flush().unwrap();
        while let Ok(message) = ws.read() {
            if message.is_text() && ws.send(message).is_err() {
                return;
            }
        }
    });
    (roots, options, server)
}

/// A server frame's header: the first byte, then the 64-bit length.
fn frame_header(first: u8, len: usize) -> Vec<u8> {
    let mut header = vec![first, 127];
    header.extend_from_slice(&(len as u64).to_be_bytes());
    header
}

/// The long message compressed as RFC 7692 sends it: raw DEFLATE ended by a sync flush,
/// without the flush's trailing `00 00 ff ff`.
fn compressed_long_message() -> Vec<u8> {
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![7u8; 64 << 10];
    for _ in 0..LONG / chunk.len() {
        deflate.write_all(&chunk).unwrap();
    }
    deflate.flush().unwrap();
    let mut payload = std::mem::take(deflate.get_mut());
    assert!(payload.ends_with(&[0, 0, 0xff, 0xff]));
    payload.truncate(payload.len() - 4);
    payload
}

/// Resident memory (bytes) of a client of `A`: once open, holding the long message, and
/// after letting go of it.
fn resident_around_a_long_message<A: Adapter>(over: &Over) -> [u64; 3] {
    let name = format!("{} {}", A::NAME, over.name());
    let (roots, options, server) = long_message_server(over);
    let mut a = A::new(SessionConfig::default(), roots)
        .unwrap_or_else(|e| panic!("[{name}] config rejected: {e}"));
    let (conn, handshake) = open(&mut a, &options);
    assert_eq!(
        handshake.deflate.is_some(),
        matches!(over, Over::Deflate),
        "[{name}] {handshake:?}"
    );
    let (opened, _) = resident();
    a.try_send(Message::text("go"))
        .unwrap_or_else(|e| panic!("[{name}] send refused: {e}"));
    let events = a.events_until("the long message", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Message { .. }))
    });
    let Some(Event::Message {
        message: Message::Binary(payload),
        ..
    }) = events.into_iter().last()
    else {
        panic!("[{name}] expected the long binary message");
    };
    assert_eq!(payload.len(), LONG, "[{name}]");
    assert!(payload.iter().all(|&b| b == 7), "[{name}]");
    round_trip(&mut a, "after");
    assert!(
        payload.is_unique(),
        "[{name}] the connection still shares the long message's allocation"
    );
    let (holding, _) = resident();
    drop(payload);
    round_trip(&mut a, "dropped");
    let (after, _) = resident();
    a.close(None, "")
        .unwrap_or_else(|e| panic!("[{name}] close refused: {e}"));
    a.events_until_close(conn, EVENT_TIMEOUT);
    server.join().unwrap();
    [opened, holding, after]
}

#[test]
fn an_idle_connection_gives_back_a_long_messages_memory() {
    let mut report = Vec::new();
    let ways = [
        Over::Plain,
        Over::Tls(Box::new(TestCa::generate("idle memory"))),
        Over::Deflate,
    ];
    for (adapter, over) in ["tokio", "blocking"]
        .into_iter()
        .flat_map(|adapter| ways.iter().map(move |over| (adapter, over)))
    {
        let [opened, holding, after] = match adapter {
            "tokio" => resident_around_a_long_message::<TokioAdapter>(over),
            _ => resident_around_a_long_message::<BlockingAdapter>(over),
        };
        report.push(format!(
            "{adapter} {}: {} KiB open, {} KiB holding the message, {} KiB after letting go",
            over.name(),
            opened >> 10,
            holding >> 10,
            after >> 10
        ));
        assert!(holding >= opened + LONG as u64 * 3 / 4, "{report:?}");
        assert!(after < opened + KEPT_BOUND, "{report:?}");
    }
    eprintln!("{report:?}");
}
