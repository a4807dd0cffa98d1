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

#![cfg(target_os = "linux")]

use std::io::Write;
use std::net::TcpListener;
use std::thread::JoinHandle;
use tungstenite::protocol::Role;
use wxsocket_core::{ConnectOptions, Event, Message, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::memory::resident;
use wxsocket_tests::scenario::{open, raw_upgrade, round_trip};
use wxsocket_wire::tls::TlsRoots;

/// The long message: past glibc's largest mmap threshold (32 MiB), so that its allocation
/// is mapped on its own and freeing it returns it to the system at once.
const LONG: usize = 40 << 20;
/// How much of it may stay resident once the application let go of it.
const KEPT_BOUND: u64 = 8 << 20;

/// A server that answers the upgrade, writes one binary message of [`LONG`] bytes from one
/// small buffer (so that its own memory stays out of the count), then echoes text messages
/// until the client closes.
fn long_message_server() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        raw_upgrade(&mut tcp, None).unwrap();
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(LONG as u64).to_be_bytes());
        tcp.write_all(&header).unwrap();
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..LONG / chunk.len() {
            tcp.write_all(&chunk).unwrap();
        }
        let mut ws = tungstenite::WebSocket::from_raw_socket(tcp, Role::Server, None);
        while let Ok(message) = ws.read() {
            if message.is_text() && ws.send(message).is_err() {
                return;
            }
        }
    });
    (url, server)
}

/// Resident memory (bytes) of a client of `A`: once open, holding the long message, and
/// after letting go of it.
fn resident_around_a_long_message<A: Adapter>() -> [u64; 3] {
    let name = A::NAME;
    let (url, server) = long_message_server();
    let mut a = A::new(SessionConfig::default(), TlsRoots::default())
        .unwrap_or_else(|e| panic!("[{name}] config rejected: {e}"));
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let (opened, _) = resident();
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
    for adapter in ["tokio", "blocking"] {
        let [opened, holding, after] = match adapter {
            "tokio" => resident_around_a_long_message::<TokioAdapter>(),
            _ => resident_around_a_long_message::<BlockingAdapter>(),
        };
        report.push(format!(
            "{adapter}: {} KiB open, {} KiB holding the message, {} KiB after letting go",
            opened >> 10,
            holding >> 10,
            after >> 10
        ));
        assert!(holding >= opened + LONG as u64 * 3 / 4, "{report:?}");
        assert!(after < opened + KEPT_BOUND, "{report:?}");
    }
    eprintln!("{report:?}");
}
