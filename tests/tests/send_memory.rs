//! What sending a large message costs in memory, measured as the process's resident memory
//! (`VmRSS`, `VmHWM` of `/proc/self/status`). Alone in its test binary, with one test that
//! runs the adapters one after the other, so that the process's memory is this test's.
//!
//! The application holds the message; the library should hold little more while it goes
//! out (it masks it a piece at a time), and nothing of it afterwards. It used to copy it
//! whole into tungstenite's buffer, which keeps its largest size for the connection's life,
//! and the rest the socket did not take at once whole again (three copies at the peak).

use std::io::Read;
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;
use wxsocket_core::{ConnectOptions, Message, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, TokioAdapter};
use wxsocket_tests::memory::{reset_peak, resident};
use wxsocket_tests::scenario::{open, raw_upgrade};
use wxsocket_wire::tls::TlsRoots;

/// The message: large enough to stand out of the process's other memory, within the
/// default send buffer (16 MiB).
const SIZE: usize = 12 << 20;

/// A server that accepts one connection, answers the upgrade, then reads and discards
/// `frame` bytes (the client's frame) a small buffer at a time, slowly enough that the
/// client's socket is full most of the time, and closes.
fn discarding_server(frame: usize) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        raw_upgrade(&mut tcp, None).unwrap();
        let mut buf = vec![0u8; 16 << 10];
        let mut read = 0;
        while read < frame {
            let n = tcp.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed after {read} bytes");
            read += n;
            if read % (1 << 20) < n {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    (url, server)
}

/// Sends one message of [`SIZE`] bytes on a client of `A` and returns how much the
/// process's peak and resident memory grew over what it was with the message built.
fn growth<A: Adapter>() -> (u64, u64) {
    let (url, server) = discarding_server(SIZE + 14);
    let mut client = A::new(SessionConfig::default(), TlsRoots::default()).unwrap();
    open(&mut client, &ConnectOptions::new(url));
    let payload = bytes::Bytes::from(vec![7u8; SIZE]);
    let (before, _) = resident();
    reset_peak();
    client
        .send(Message::binary(payload.clone()))
        .unwrap_or_else(|e| panic!("[{}] {e}", A::NAME));
    server.join().unwrap();
    let (after, peak) = resident();
    drop(client);
    drop(payload);
    (peak.saturating_sub(before), after.saturating_sub(before))
}

#[test]
fn a_large_message_is_not_copied_whole_while_it_goes_out_nor_kept_after() {
    let mut report = Vec::new();
    for adapter in ["tokio", "blocking"] {
        let (peak, kept) = match adapter {
            "tokio" => growth::<TokioAdapter>(),
            _ => growth::<BlockingAdapter>(),
        };
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        report.push(format!(
            "{adapter}: peak +{:.1} MiB, kept +{:.1} MiB for a {} MiB message",
            mib(peak),
            mib(kept),
            SIZE >> 20
        ));
        assert!(
            peak < SIZE as u64 / 4 && kept < SIZE as u64 / 8,
            "{report:?}"
        );
    }
    eprintln!("{report:?}");
}
