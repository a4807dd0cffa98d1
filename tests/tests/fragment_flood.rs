//! A server that opens a fragmented message and then sends empty continuation frames as fast
//! as it can, never finishing it: frames that complete no message take no read credit, and
//! a read pass went on for as long as they came. The command ignored Ctrl-C, and the
//! blocking adapter's application calls and other connections waited for the flood to end.
//! Now each pass takes at most `READ_PASS` bytes: the client closes on time, while the
//! flood goes on, on both adapters.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wxsocket_core::{ConnectOptions, Event, ReadyState, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, TokioAdapter};
use wxsocket_tests::scenario::{open, raw_upgrade};
use wxsocket_wire::tls::TlsRoots;

/// The client's close timeout: the server never answers the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the server floods at most (the client should be gone long before).
const FLOOD: Duration = Duration::from_secs(20);

/// Accepts one client, completes its upgrade, sends the first fragment of a text message,
/// then empty continuation frames until the client goes or [`FLOOD`] ends (or `stop`).
fn flooding_server() -> (String, Arc<AtomicBool>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        raw_upgrade(&mut tcp, None).unwrap();
        // A text message's first fragment (not final), one byte.
        tcp.write_all(&[0x01, 0x01, b'a']).unwrap();
        let empties = [0x00u8, 0x00].repeat(32 << 10);
        let end = Instant::now() + FLOOD;
        while Instant::now() < end && !stopped.load(Ordering::Acquire) {
            if tcp.write_all(&empties).is_err() {
                return;
            }
        }
    });
    (url, stop, server)
}

/// Opens a connection to the flooding server on adapter `A`, lets the flood run, closes,
/// and returns how long the close took to end in a close event.
fn close_while_flooded<A: Adapter>() -> Duration {
    let (url, stop, server) = flooding_server();
    let session = SessionConfig::default().close_timeout(CLOSE_TIMEOUT);
    let mut client = A::new(session, TlsRoots::default()).unwrap();
    let (conn, _) = open(&mut client, &ConnectOptions::new(url));
    // The flood is on; the client still answers its application.
    let quiet = client.next_event(Duration::from_millis(300));
    assert!(quiet.is_none(), "[{}] {quiet:?}", A::NAME);
    assert_eq!(client.state(), ReadyState::Open);
    let start = Instant::now();
    client.close(None, "").unwrap();
    let closed = loop {
        let left = Duration::from_secs(10).saturating_sub(start.elapsed());
        match client.next_event(left) {
            Some(Event::Close { conn: c, .. }) if c == conn => break start.elapsed(),
            Some(_) => {}
            None => panic!("[{}] no close event within 10 s of close()", A::NAME),
        }
    };
    stop.store(true, Ordering::Release);
    drop(client);
    server.join().unwrap();
    closed
}

#[test]
fn a_flood_of_fragments_completing_nothing_does_not_stop_the_client() {
    for took in [
        close_while_flooded::<TokioAdapter>(),
        close_while_flooded::<BlockingAdapter>(),
    ] {
        // The close timeout, and some room for a loaded machine.
        assert!(took < CLOSE_TIMEOUT + Duration::from_secs(2), "{took:?}");
    }
}
