//! The third driver, `crates/wire/examples/poll_loop.rs` (a single-threaded loop over the
//! standard library's non-blocking sockets, written as the example an engine author would
//! copy), against the scriptable peer over loopback: the same outcomes the two adapters'
//! conformance scenarios check, reached through nothing but the public API of the core and
//! the wire crate.
//!
//! The loop is turned the way a game turns it, once per "frame" (1 ms here), until the
//! awaited events have come or a deadline passes.

#[allow(dead_code)]
#[path = "../../crates/wire/examples/poll_loop.rs"]
mod poll_loop;

use poll_loop::PollLoop;
use std::time::{Duration, Instant};
use wxsocket_core::{
    ConnId, ConnectError, ConnectOptions, Event, Message, ReadyState, ReconnectPolicy,
    SessionConfig,
};
use wxsocket_tests::peer::{Mode, Peer, Step, Violation};
use wxsocket_tests::scenario::{completions, expect_error_then_close, messages};

/// How long any scenario may take at most (a loaded machine meets it by far).
const DEADLINE: Duration = Duration::from_secs(20);
const FRAME: Duration = Duration::from_millis(1);

/// Turns the loop, collecting events, until `done` holds for what has been collected.
fn turn_until(driver: &mut PollLoop, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let start = Instant::now();
    let mut events = Vec::new();
    while !done(&events) {
        assert!(
            start.elapsed() < DEADLINE,
            "the loop did not get there; events so far: {events:#?}"
        );
        driver.turn(Instant::now());
        while let Some(event) = driver.poll_event() {
            events.push(event);
        }
        std::thread::sleep(FRAME);
    }
    events
}

fn closed(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Close { .. }))
}

fn opened(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Open { .. }))
}

fn connect(config: SessionConfig, peer: &Peer) -> (PollLoop, ConnId) {
    let mut driver = PollLoop::new(config).unwrap();
    let conn = driver
        .connect(&ConnectOptions::new(peer.url()), Instant::now())
        .unwrap();
    (driver, conn)
}

fn close_of(events: &[Event]) -> (u16, bool) {
    match events.last() {
        Some(Event::Close { code, clean, .. }) => (*code, *clean),
        other => panic!("the last event is not a close: {other:?} in {events:#?}"),
    }
}

#[test]
fn echoes_every_message_in_order_and_closes_cleanly() {
    let peer = Peer::start(Mode::Echo);
    let (mut driver, conn) = connect(SessionConfig::default(), &peer);
    // Sent while connecting: queued by the core, flushed in order on open.
    let now = Instant::now();
    let ids: Vec<_> = ["one", "two", "three"]
        .map(|t| driver.session().send(Message::text(t), now).unwrap())
        .into();
    let events = turn_until(&mut driver, |e| messages(e).len() == 3);
    assert!(
        matches!(&events[..2], [Event::Connecting { .. }, Event::Open { handshake, .. }]
        if handshake.profile.response_received >= handshake.profile.request_written)
    );
    assert_eq!(
        messages(&events),
        ["one", "two", "three"].map(Message::text).to_vec()
    );
    driver
        .session()
        .close(None, "done", Instant::now())
        .unwrap();
    let mut rest = turn_until(&mut driver, closed);
    let mut all = events;
    all.append(&mut rest);
    assert_eq!(completions(&all), ids);
    assert_eq!(close_of(&all), (1000, true));
    assert_eq!(driver.session().state(), ReadyState::Closed);
    let snapshot = peer.wait_conn(0, "the close handshake", DEADLINE, |c| c.ended);
    assert_eq!(snapshot.closes.len(), 1);
    assert_eq!(snapshot.closes[0].code, Some(1000));
    let _ = conn;
}

#[test]
fn the_peers_close_code_and_reason_are_reported() {
    let peer = Peer::start(Mode::CloseWith(4001, "bye".into()));
    let (mut driver, conn) = connect(SessionConfig::default(), &peer);
    let events = turn_until(&mut driver, closed);
    assert!(opened(&events));
    assert_eq!(events.last(), Some(&Event::close(conn, 4001, "bye", true)));
}

#[test]
fn protocol_violations_fail_the_connection() {
    for (mode, code) in [
        (Mode::Violation(Violation::ReservedOpcode), 1002),
        (Mode::Violation(Violation::MaskedFrame), 1002),
        (Mode::InvalidUtf8, 1007),
        (Mode::Oversized(64 << 10), 1009),
    ] {
        let peer = Peer::start(mode.clone());
        let config = SessionConfig::default().max_message_size(16 << 10);
        let (mut driver, conn) = connect(config, &peer);
        let events = turn_until(&mut driver, closed);
        let tail = &events[events.len() - 2..];
        expect_error_then_close(&format!("poll loop, {mode:?}"), conn, tail, code);
    }
}

#[test]
fn a_refused_upgrade_is_a_connect_failure() {
    let peer = Peer::start(Mode::HttpStatus(403));
    let (mut driver, conn) = connect(SessionConfig::default(), &peer);
    let events = turn_until(&mut driver, closed);
    assert!(!opened(&events));
    let tail = &events[events.len() - 2..];
    expect_error_then_close("poll loop, 403", conn, tail, 1006);
}

#[test]
fn a_peer_that_never_answers_the_close_is_dropped_at_the_close_timeout() {
    let peer = Peer::start(Mode::IgnoreClose);
    let timeout = Duration::from_millis(300);
    let config = SessionConfig::default().close_timeout(timeout);
    let (mut driver, _) = connect(config, &peer);
    turn_until(&mut driver, opened);
    let asked = Instant::now();
    driver.session().close(None, "", asked).unwrap();
    let events = turn_until(&mut driver, closed);
    assert!(
        asked.elapsed() >= timeout,
        "closed before the close timeout"
    );
    assert_eq!(close_of(&events), (1006, false));
    peer.wait_conn(0, "the client to drop the TCP connection", DEADLINE, |c| {
        c.client_went_away
    });
}

#[test]
fn frames_that_come_with_the_handshake_response_are_delivered() {
    let frame = |text: &str| Step::Frame {
        fin: true,
        rsv: 0,
        opcode: 0x1,
        payload: text.as_bytes().to_vec(),
    };
    let peer = Peer::start(Mode::Script(vec![Step::WithResponse(vec![
        frame("early"),
        frame("bird"),
    ])]));
    let (mut driver, _) = connect(SessionConfig::default(), &peer);
    let events = turn_until(&mut driver, |e| messages(e).len() == 2);
    assert_eq!(
        messages(&events),
        ["early", "bird"].map(Message::text).to_vec()
    );
}

#[test]
fn reading_pauses_at_the_receive_bound_and_nothing_is_lost() {
    let count = 200;
    let script = (0..count)
        .map(|i| Step::Message(Message::text(format!("{i}"))))
        .collect();
    let peer = Peer::start(Mode::Script(script));
    let config = SessionConfig::default().receive_bounds(10, 1 << 20);
    let (mut driver, _) = connect(config, &peer);
    // Turn for a while without taking events: the backlog stops at the bound.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        driver.turn(Instant::now());
        std::thread::sleep(FRAME);
        assert!(driver.session().backlog().messages <= 10);
    }
    assert!(driver.session().is_reading_paused(), "reading never paused");
    // Then take everything: every message once, in order.
    let events = turn_until(&mut driver, |e| messages(e).len() == count);
    let expected: Vec<_> = (0..count).map(|i| Message::text(format!("{i}"))).collect();
    assert_eq!(messages(&events), expected);
}

#[test]
fn a_dropped_connection_is_dialled_again_and_queued_sends_follow() {
    let peer = Peer::start(Mode::Echo);
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .seed(7);
    let (mut driver, _) = connect(SessionConfig::default().reconnect(policy), &peer);
    turn_until(&mut driver, opened);
    peer.drop_all();
    let events = turn_until(&mut driver, |e| {
        e.iter().any(|e| matches!(e, Event::Reconnecting { .. }))
    });
    assert_eq!(close_of(&events[..events.len() - 1]).0, 1006);
    driver
        .session()
        .send(Message::text("after"), Instant::now())
        .unwrap();
    let events = turn_until(&mut driver, |e| messages(e).len() == 1);
    assert!(opened(&events));
    assert_eq!(messages(&events), vec![Message::text("after")]);
    assert_eq!(peer.snapshot().accepted, 2);
}

#[test]
fn what_the_driver_leaves_out_is_refused_before_any_io() {
    let mut driver = PollLoop::new(SessionConfig::default()).unwrap();
    let now = Instant::now();
    let refused = driver.connect(&ConnectOptions::new("wss://127.0.0.1:9/"), now);
    assert!(
        matches!(
            refused,
            Err(ConnectError::Unsupported { option: "url", .. })
        ),
        "{refused:?}"
    );
    let deflate = ConnectOptions::new("ws://127.0.0.1:9/").per_message_deflate(true);
    let refused = driver.connect(&deflate, now);
    assert!(
        matches!(
            refused,
            Err(ConnectError::Unsupported {
                option: "perMessageDeflate",
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(
        driver.session().poll_action().is_none(),
        "no dial was asked for"
    );
}
