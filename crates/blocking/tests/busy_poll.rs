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

/// Runs `n` round trips of a small message; returns how many times this (the receiving)
/// thread went to sleep meanwhile.
fn round_trips(client: &Client, events: &Events, n: usize) -> u64 {
    let before = voluntary_switches(&this_thread());
    for i in 0..n {
        let text = format!("ping {i}");
        client.send(Message::text(text.clone())).unwrap();
        let got = until(events, is_message);
        assert!(
            matches!(got.last(), Some(Event::Message { message, .. }) if *message == Message::text(text)),
            "echo {i} out of order"
        );
    }
    voluntary_switches(&this_thread()) - before
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

/// Round trips against a server that answers 100 µs after each message (well within
/// the budget, far longer than the thread takes from `send` to `recv`); returns how
/// many times the receiving thread went to sleep.
fn slept_in_round_trips(budget: Duration, trips: usize) -> u64 {
    let mut silent = Silent::start();
    let (client, events) = Client::new(Config::default()).unwrap();
    events.set_busy_poll(budget).unwrap();
    client
        .connect(&ConnectOptions::new(silent.url()).tcp_no_delay(true))
        .unwrap();
    let server = delayed_echo(silent.accept(), Duration::from_micros(100));
    until(&events, is_open);
    round_trips(&client, &events, 20);
    let slept = round_trips(&client, &events, trips);
    client.close(None, "").unwrap();
    until(&events, is_close);
    server.join().unwrap();
    slept
}

#[test]
fn a_reply_within_the_budget_is_caught_without_sleeping() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const TRIPS: usize = 300;
    // Control: without polling, the thread sleeps for (nearly) every reply, so the
    // counter measures what it should.
    let slept_without = slept_in_round_trips(Duration::ZERO, TRIPS);
    assert!(
        slept_without >= TRIPS as u64 / 2,
        "without busy-polling the receiving thread slept only {slept_without} times in {TRIPS} round trips"
    );
    // With the largest budget, the reply comes while the thread polls.
    let slept_with = slept_in_round_trips(MAX_BUSY_POLL, TRIPS);
    assert!(
        slept_with <= TRIPS as u64 / 4,
        "with busy-polling the receiving thread still slept {slept_with} times in {TRIPS} round trips"
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
