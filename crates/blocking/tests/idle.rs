//! An application that waits in `recv` on an idle connection does not keep the driver
//! thread waking: no polling tick while nothing happens. Alone in its own test binary, so
//! the one driver thread (`wxsocket-client`) is this test's.

mod common;

use common::*;
use std::time::Duration;
use wxsocket_blocking::*;

/// The driver thread's voluntary context switches so far (each sleep in its poller that
/// ended counts one).
fn driver_wake_ups() -> u64 {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc (Linux)") {
        let path = task.expect("task entry").path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if name.trim() == "wxsocket-client" {
            found.push(voluntary_switches(&path));
        }
    }
    assert_eq!(found.len(), 1, "exactly one driver thread expected");
    found[0]
}

#[test]
fn waiting_in_recv_on_an_idle_connection_does_not_wake_the_driver() {
    let server = Server::start();
    let (client, events) = Client::new(Config::default()).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until(&events, is_open);
    // A round trip first, so the reads are with this thread (handed off) as in a receive
    // loop.
    client.try_send(Message::text("hello")).unwrap();
    until(&events, is_message);

    let before = driver_wake_ups();
    let idle = Duration::from_millis(1000);
    assert!(matches!(
        events.recv_timeout(idle),
        Err(RecvTimeoutError::Timeout)
    ));
    let woken = driver_wake_ups() - before;
    // A re-check while the watch was young, one wake-up when it ended and one to take the
    // reads back; a 20 ms polling tick would be about 50.
    assert!(
        woken <= 5,
        "the driver thread woke {woken} times during {idle:?} of idle recv"
    );

    // Still working afterwards.
    client.try_send(Message::text("again")).unwrap();
    let echoed = until(&events, is_message);
    assert!(
        matches!(echoed.last(), Some(Event::Message { message, .. }) if *message == Message::text("again"))
    );
}
