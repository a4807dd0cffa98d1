//! A runtime whose clock is paused (`start_paused`, common in `#[tokio::test]`): the driver
//! sees its deadlines pass on tokio's clock, the one its timer sleeps on. On the std clock
//! it woke for a deadline the core did not see as due, again and again: a 2 s handshake
//! timeout cost 2 s of CPU, an idle connection with keepalive a whole CPU.
//!
//! One test in its own binary, so the process's CPU time is this test's.

#![cfg(target_os = "linux")]

use std::time::Duration;
use wxsocket_tokio::{Client, Config, ConnectOptions, Event, SessionConfig};

/// CPU time this process has used (user and system), from `/proc/self/stat`.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's clock ticks for these fields are 100 a second on Linux.
    Duration::from_millis(ticks * 10)
}

/// A handshake timeout of 5 s on a paused clock: the server never answers the upgrade;
/// the timeout fires once tokio's clock reaches it (at once, the runtime being idle), and
/// the wait costs next to no CPU.
#[tokio::test(start_paused = true)]
async fn a_handshake_timeout_fires_on_a_paused_clock_without_spinning() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let session = SessionConfig::default().handshake_timeout(Duration::from_secs(5));
    let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
    let before = cpu();
    let real = std::time::Instant::now();
    let virtual_start = tokio::time::Instant::now();
    client.connect(&ConnectOptions::new(url)).unwrap();
    let mut error = None;
    while let Some(event) = events.next().await {
        match event {
            Event::Error { error: e, .. } => error = Some(e.to_string()),
            Event::Close { .. } => break,
            _ => {}
        }
    }
    let error = error.expect("an error before the close");
    assert!(error.contains("timed out"), "{error}");
    assert!(
        virtual_start.elapsed() >= Duration::from_secs(5),
        "the timeout fired early on tokio's clock"
    );
    let used = cpu() - before;
    assert!(
        used < Duration::from_secs(1),
        "{used:?} of CPU in {:?} waiting for a paused clock's timeout",
        real.elapsed()
    );
    drop(listener);
}
