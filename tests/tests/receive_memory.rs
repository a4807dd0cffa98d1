//! What large received messages cost in memory while the application takes none, measured
//! as the process's resident memory (`VmRSS`, `VmHWM` of `/proc/self/status`). Alone in its
//! test binary, with one test that runs the adapters one after the other, so that the
//! process's memory is this test's.
//!
//! A message that crosses the receive bounds pauses reading: the client holds that one
//! message, and the server's next ones wait in TCP. The blocking adapter used to hand the
//! message to its events' batch ahead of the application, out of the session's count, so
//! the connection read the next one as well: two messages held.

#![cfg(target_os = "linux")]

use std::io::Write;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use wxsocket_core::{ConnectOptions, Event, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::memory::{reset_peak, resident};
use wxsocket_tests::scenario::{open, raw_upgrade};
use wxsocket_wire::tls::TlsRoots;

/// Each message: larger than the default receive bound's bytes (16 MiB), so one pauses
/// reading, and large enough to stand out of the process's other memory.
const SIZE: usize = 24 << 20;
/// Messages the server sends.
const MESSAGES: usize = 3;

/// A server that answers the upgrade, waits for `go`, then writes [`MESSAGES`] binary
/// messages of [`SIZE`] bytes from one small buffer (so that its own memory stays out of
/// the count). It says `stalled` once a write has made no progress for 300 ms (the client
/// stopped reading), and keeps writing until the client takes the rest.
fn sending_server() -> (String, mpsc::Sender<()>, mpsc::Receiver<()>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (go, start) = mpsc::channel();
    let (stalled, is_stalled) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        raw_upgrade(&mut tcp, None).unwrap();
        start.recv().unwrap();
        tcp.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let chunk = vec![7u8; 64 << 10];
        let mut said = false;
        let mut write = |mut bytes: &[u8]| {
            while !bytes.is_empty() {
                match tcp.write(bytes) {
                    Ok(n) => bytes = &bytes[n..],
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if !said {
                            said = true;
                            let _ = stalled.send(());
                        }
                    }
                    Err(e) => panic!("the server's write: {e}"),
                }
            }
        };
        for _ in 0..MESSAGES {
            let mut header = vec![0x82, 127];
            header.extend_from_slice(&(SIZE as u64).to_be_bytes());
            write(&header);
            for _ in 0..SIZE / chunk.len() {
                write(&chunk);
            }
        }
    });
    (url, go, is_stalled, server)
}

/// How much the process's peak memory grew while a client of `A` held what it read of
/// [`MESSAGES`] messages of [`SIZE`] bytes, its application taking none; then checks that
/// every message still arrives whole once it takes them.
fn held<A: Adapter>() -> u64 {
    let (url, go, stalled, server) = sending_server();
    let mut client = A::new(SessionConfig::default(), TlsRoots::default()).unwrap();
    let (conn, _) = open(&mut client, &ConnectOptions::new(url));
    let (before, _) = resident();
    reset_peak();
    go.send(()).unwrap();
    stalled
        .recv_timeout(EVENT_TIMEOUT)
        .unwrap_or_else(|_| panic!("[{}] the client never stopped reading", A::NAME));
    let (_, peak) = resident();
    for n in 0..MESSAGES {
        match client.next_event(EVENT_TIMEOUT) {
            Some(Event::Message { message, .. }) => {
                assert_eq!(message.len(), SIZE, "[{}] message {n}", A::NAME)
            }
            other => panic!("[{}] message {n}: {other:?}", A::NAME),
        }
    }
    server.join().unwrap();
    client.close(None, "").unwrap();
    client.events_until_close(conn, EVENT_TIMEOUT);
    peak.saturating_sub(before)
}

#[test]
fn a_paused_connection_holds_one_large_message_not_two() {
    let mut report = Vec::new();
    for adapter in ["tokio", "blocking"] {
        let peak = match adapter {
            "tokio" => held::<TokioAdapter>(),
            _ => held::<BlockingAdapter>(),
        };
        report.push(format!(
            "{adapter}: peak +{:.1} MiB while paused, messages of {} MiB",
            peak as f64 / (1 << 20) as f64,
            SIZE >> 20
        ));
        // One message and what its reading needed; two would be twice the size.
        assert!(peak < SIZE as u64 * 3 / 2, "{report:?}");
    }
    eprintln!("{report:?}");
}
