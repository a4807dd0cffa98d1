//! Cost of the core per message: send → action → written → completion, and per received
//! message. `cargo bench -p wxsocket-core`. Plain timing loop (no IO to compare against:
//! this is the overhead the core adds to every message an adapter moves). The last two rows
//! repeat the first two with a transcript being recorded (`Session::start_recording`) into
//! an in-memory buffer: the send row is 4 inputs per message (send, poll_action, handle,
//! poll_event), the receive row 2.

use bytes::Bytes;
use std::hint::black_box;
use std::time::{Duration, Instant};
use wxsocket_core::*;

/// An open session with its actions and events drained; with `record`, recording its
/// transcript into a buffer that is emptied every 1 MiB (as a driver writing it out would).
fn open_session(record: bool) -> (Session, ConnId, Instant) {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::default()).unwrap();
    if record {
        let mut buffer = String::new();
        s.start_recording(transcript::Redaction::default(), move |line| {
            if buffer.len() > 1 << 20 {
                black_box(&buffer);
                buffer.clear();
            }
            buffer.push_str(line);
            buffer.push('\n');
        });
    }
    let conn = s
        .connect(&ConnectOptions::new("ws://127.0.0.1:1"), now)
        .unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), now);
    while s.poll_action().is_some() {}
    while s.poll_event().is_some() {}
    (s, conn, now)
}

/// The two per-message rows (a send to its completion; a received message to its event),
/// named with `prefix`.
fn message_rows(prefix: &str, record: bool, iters: u64, payload: &Message) {
    let (mut s, conn, now) = open_session(record);
    measure(
        &format!("{prefix}send -> action -> written -> completion"),
        iters,
        || {
            let id = s.send(black_box(payload.clone()), now).unwrap();
            let action = s.poll_action();
            black_box(&action);
            s.handle(conn, TransportEvent::SendWritten(id), now);
            black_box(s.poll_event());
        },
    );
    let (mut s, conn, now) = open_session(record);
    measure(&format!("{prefix}received message -> event"), iters, || {
        s.handle(
            conn,
            TransportEvent::Message(black_box(payload.clone())),
            now,
        );
        black_box(s.poll_event());
    });
}

fn measure(name: &str, iters: u64, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let per = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name:<44} {per:>8.1} ns/msg  {:>12.0} msg/s", 1e9 / per);
}

fn main() {
    let iters = if std::env::args().any(|a| a == "--quick") {
        200_000
    } else {
        2_000_000
    };
    let payload = Message::Binary(Bytes::from(vec![0u8; 64]));

    message_rows("", false, iters, &payload);

    let cfg = SessionConfig::default().keepalive(Duration::from_secs(30), Duration::from_secs(10));
    let now = Instant::now();
    let mut s = Session::new(cfg).unwrap();
    let conn = s
        .connect(&ConnectOptions::new("ws://127.0.0.1:1"), now)
        .unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), now);
    while s.poll_event().is_some() {}
    let mut t = now;
    measure(
        "received message, keepalive on, clock moving",
        iters,
        || {
            t += Duration::from_micros(1);
            s.handle(conn, TransportEvent::Message(black_box(payload.clone())), t);
            black_box(s.poll_event());
        },
    );

    message_rows("recording: ", true, iters / 10, &payload);
}
