//! No socket or thread outlives a client: many connect / close / drop cycles against both
//! adapters, then the process's open file descriptors and threads must return to where
//! they started (Linux: `/proc/self/fd`, `/proc/self/task`).
//!
//! This file holds a single test so that nothing else runs in the process while it counts.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};
use wxsocket_core::{ConnectOptions, Event, Message, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::peer::{Mode, Peer};
use wxsocket_wire::tls::TlsRoots;

const CYCLES: usize = 15;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn config() -> SessionConfig {
    SessionConfig::default()
        .handshake_timeout(Duration::from_secs(3))
        .close_timeout(Duration::from_millis(500))
}

fn open<A: Adapter>(a: &mut A, url: &str) -> wxsocket_core::ConnId {
    let conn = a.connect(&ConnectOptions::new(url)).unwrap();
    a.events_until("open", EVENT_TIMEOUT, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Open { conn: c, .. } if *c == conn))
    });
    conn
}

fn cycles<A: Adapter>(url: &str) {
    for i in 0..CYCLES {
        let mut a = A::new(config(), TlsRoots::default()).unwrap();
        let conn = open(&mut a, url);
        a.try_send(Message::text(format!("cycle {i}"))).unwrap();
        a.events_until("the echo", EVENT_TIMEOUT, |e| {
            e.iter().any(|e| matches!(e, Event::Message { .. }))
        });
        match i % 3 {
            // Close and wait for the close event, then drop.
            0 => {
                a.close(None, "").unwrap();
                a.events_until_close(conn, EVENT_TIMEOUT);
            }
            // Replace the connection, then drop while the new one is open.
            1 => {
                open(&mut a, url);
            }
            // Drop while open.
            _ => a.drop_handles(),
        }
        drop(a);
    }
}

/// Waits (bounded) until the counts return to the baseline; there is no signal for "the
/// background teardown released its descriptors", so this polls /proc.
fn settle(name: &str, fds: usize, threads: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (f, t) = (count("/proc/self/fd"), count("/proc/self/task"));
        if f <= fds && t <= threads {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "[{name}] after {CYCLES} cycles: {f} open fds (baseline {fds}), {t} threads (baseline {threads})"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn no_leaks<A: Adapter>() {
    // Warm up once-initialised state (crypto provider, runtimes' globals) before counting.
    {
        let peer = Peer::start(Mode::Echo);
        cycles_once::<A>(&peer.url());
    }
    let fds = count("/proc/self/fd");
    let threads = count("/proc/self/task");
    {
        let peer = Peer::start(Mode::Echo);
        cycles::<A>(&peer.url());
        // The peer's sockets and threads go with it, before counting.
    }
    settle(A::NAME, fds, threads);
}

fn cycles_once<A: Adapter>(url: &str) {
    let mut a = A::new(config(), TlsRoots::default()).unwrap();
    let conn = open(&mut a, url);
    a.close(None, "").unwrap();
    a.events_until_close(conn, EVENT_TIMEOUT);
}

#[test]
fn connect_close_cycles_leak_no_socket_or_thread() {
    no_leaks::<TokioAdapter>();
    no_leaks::<BlockingAdapter>();
}
