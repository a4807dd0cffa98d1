//! Busy-polling in `recv` over real sockets: a reply that comes within the budget is
//! picked up without the receiving thread going to sleep; messages that come farther apart
//! than the budget make it back off, so it does not burn a budget per message; the budget
//! is validated and can be turned off. Linux only (the evidence is the thread's own
//! counters in `/proc`). The tests run one at a time (a polling thread takes a CPU).

#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::sync::Mutex;
use std::time::Duration;
use wxsocket_blocking::*;

/// One test at a time: a test that polls must not take the CPU another one measures on.
static SERIAL: Mutex<()> = Mutex::new(());

/// One round trip as the receiving thread saw it.
#[derive(Debug, Clone, Copy)]
struct Trip {
    /// From the send to the echo's event.
    rtt: Duration,
    /// Whether this thread went to sleep meanwhile.
    slept: bool,
}

/// Runs `n` round trips of a small message; returns each one's time and whether this (the
/// receiving) thread went to sleep during it.
fn round_trips(client: &Client, events: &Events, n: usize) -> Vec<Trip> {
    let me = this_thread();
    (0..n)
        .map(|i| {
            let text = format!("ping {i}");
            let before = voluntary_switches(&me);
            let sent = std::time::Instant::now();
            client.try_send(Message::text(text.clone())).unwrap();
            let got = until(events, is_message);
            let rtt = sent.elapsed();
            let slept = voluntary_switches(&me) > before;
            assert!(
                matches!(got.last(), Some(Event::Message { message, .. }) if *message == Message::text(text)),
                "echo {i} out of order"
            );
            Trip { rtt, slept }
        })
        .collect()
}

/// A server on a connection accepted by `silent` that echoes each message after `delay`
/// (busy-waited, so the reply's timing does not depend on a timer's wake-up), until the
/// client closes.
fn delayed_echo(stream: std::net::TcpStream, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut ws = tungstenite::accept(stream).expect("handshake");
        while let Ok(message) = ws.read() {
            if message.is_text() {
                let until = std::time::Instant::now() + delay;
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                if ws.send(message).is_err() {
                    break;
                }
            }
        }
        // `Silent` keeps a clone of the socket: end the connection explicitly.
        let _ = ws.get_ref().shutdown(std::net::Shutdown::Both);
    })
}

/// Round trips against a server that answers `delay` after each message.
fn trips_with(budget: Duration, trips: usize, delay: Duration) -> Vec<Trip> {
    let mut silent = Silent::start();
    let (client, events) = Client::new(Config::default()).unwrap();
    events.set_busy_poll(budget).unwrap();
    client
        .connect(&ConnectOptions::new(silent.url()).tcp_no_delay(true))
        .unwrap();
    let server = delayed_echo(silent.accept(), delay);
    until(&events, is_open);
    round_trips(&client, &events, 20);
    let measured = round_trips(&client, &events, trips);
    client.close(None, "").unwrap();
    until(&events, is_close);
    server.join().unwrap();
    measured
}

/// Whether the reply could have been caught by polling: it came back within half the
/// budget. On a loaded machine the server thread may not run within the budget; such
/// trips say nothing about polling and are left out (not the sleeping ones: a thread that
/// slept on a reply that came in time shows a short trip too).
fn in_time(trip: &Trip) -> bool {
    trip.rtt <= MAX_BUSY_POLL / 2
}

/// Round trips with `budget` until `want` of them came in time (a loaded machine delays
/// the threads; batches are added, at most ten); returns those that did.
fn timely_trips(budget: Duration, want: usize) -> Vec<Trip> {
    let mut timely = Vec::new();
    for _ in 0..10 {
        // 100 µs: well within the budget, far longer than the thread takes from `send` to
        // `recv`.
        let fast = Duration::from_micros(100);
        timely.extend(trips_with(budget, 300, fast).into_iter().filter(in_time));
        if timely.len() >= want {
            break;
        }
    }
    timely
}

#[test]
fn a_reply_within_the_budget_is_caught_without_sleeping() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const WANT: usize = 200;
    // Control: without polling, a thread that waits for a slow reply (50 ms: longer than
    // any spinning or yielding before a wait, even on a loaded machine) sleeps, so the
    // counter measures what it should.
    const SLOW: usize = 20;
    let slow = trips_with(Duration::ZERO, SLOW, Duration::from_millis(50));
    let slept_slow = slow.iter().filter(|t| t.slept).count();
    assert!(
        slept_slow >= SLOW * 3 / 4,
        "without busy-polling the receiving thread slept on only {slept_slow} of {SLOW} replies 50 ms away"
    );
    // With the largest budget, a reply that comes in time is caught while the thread
    // polls.
    let with = timely_trips(MAX_BUSY_POLL, WANT);
    assert!(
        with.len() >= WANT / 4,
        "only {} replies came within half the budget with polling",
        with.len()
    );
    let slept_with = with.iter().filter(|t| t.slept).count();
    assert!(
        slept_with <= with.len() / 4,
        "with busy-polling the receiving thread still slept on {slept_with} of {} replies that came in time",
        with.len()
    );
}

#[test]
fn messages_slower_than_the_budget_make_polling_back_off() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const MESSAGES: usize = 300;
    const GAP: Duration = Duration::from_millis(3);
    // A server that sends a message every 3 ms, three times the largest budget.
    let mut silent = Silent::start();
    let url = silent.url();
    let (client, events) = Client::new(Config::default()).unwrap();
    events.set_busy_poll(MAX_BUSY_POLL).unwrap();
    client.connect(&ConnectOptions::new(url)).unwrap();
    let stream = silent.accept();
    let ticker = std::thread::spawn(move || {
        let mut ws = tungstenite::accept(stream).expect("handshake");
        for i in 0..MESSAGES {
            std::thread::sleep(GAP);
            if ws
                .send(tungstenite::Message::text(format!("tick {i}")))
                .is_err()
            {
                return;
            }
        }
        let _ = ws.close(None);
        while ws.read().is_ok() {}
        // `Silent` keeps a clone of the socket: end the connection explicitly.
        let _ = ws.get_ref().shutdown(std::net::Shutdown::Both);
    });
    until(&events, is_open);

    let cpu_before = cpu_time(&this_thread());
    for i in 0..MESSAGES {
        let got = until(&events, is_message);
        assert!(
            matches!(got.last(), Some(Event::Message { message, .. }) if *message == Message::text(format!("tick {i}"))),
            "tick {i} missing or out of order"
        );
    }
    let cpu = cpu_time(&this_thread()) - cpu_before;
    // Polling a full budget before every wait would use at least 300 ms here; backing off
    // after a few misses leaves one probe per 32 waits (about 20 ms) and the reads.
    assert!(
        cpu < Duration::from_millis(100),
        "the receiving thread used {cpu:?} of CPU for {MESSAGES} messages 3 ms apart"
    );
    until(&events, is_close);
    ticker.join().unwrap();
}

#[test]
fn the_budget_is_validated_and_can_be_turned_off() {
    let (_client, events) = Client::new(Config::default()).unwrap();
    let expected = if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        DEFAULT_BUSY_POLL
    } else {
        Duration::ZERO
    };
    assert_eq!(events.busy_poll(), expected);
    let err = events
        .set_busy_poll(MAX_BUSY_POLL + Duration::from_micros(1))
        .unwrap_err();
    assert_eq!(err.field, "busy_poll");
    assert_eq!(
        events.busy_poll(),
        expected,
        "a refused budget changes nothing"
    );
    events.set_busy_poll(Duration::ZERO).unwrap();
    assert_eq!(events.busy_poll(), Duration::ZERO);
    events.set_busy_poll(MAX_BUSY_POLL).unwrap();
    assert_eq!(events.busy_poll(), MAX_BUSY_POLL);
}
