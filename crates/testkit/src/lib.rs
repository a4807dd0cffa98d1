//! # wxsocket-testkit
//!
//! Conformance scenarios for a driver of [`wxsocket_core`], and the scriptable peer they run
//! against. Whoever drives the sans-IO core over their own runtime (a game loop, an engine,
//! a simulator) implements [`Driver`] for it, and gets the scenarios of the session model
//! that the two published adapters also pass ([`SCENARIOS`]), over real loopback sockets,
//! against a peer that also misbehaves on purpose (protocol violations, close codes it may
//! and may not send, a refused upgrade, a close it never answers, a flood, a dropped
//! connection). They need nothing but `ws://`; what the adapters' own suite checks beyond
//! them needs TLS, proxies, compression or pools, which a driver may not have.
//!
//! One test per scenario, with the scenario's name:
//!
//! ```
//! # use std::time::Duration;
//! # use wxsocket_core::*;
//! # struct MyDriver;
//! # impl wxsocket_testkit::Driver for MyDriver {
//! #     fn start(_: SessionConfig) -> Result<Self, ConfigError> { Ok(MyDriver) }
//! #     fn connect(&mut self, _: &ConnectOptions) -> Result<ConnId, ConnectError> { unimplemented!() }
//! #     fn send(&mut self, _: Message) -> Result<SendId, SendError> { unimplemented!() }
//! #     fn close(&mut self, _: Option<u16>, _: &str) -> Result<(), CloseError> { unimplemented!() }
//! #     fn state(&mut self) -> ReadyState { unimplemented!() }
//! #     fn backlog(&mut self) -> Backlog { unimplemented!() }
//! #     fn next_event(&mut self, _: Duration) -> Option<Event> { unimplemented!() }
//! # }
//! // In `tests/conformance.rs` of the driver's crate:
//! wxsocket_testkit::scenarios!(MyDriver);
//! ```
//!
//! or every scenario in one test: `wxsocket_testkit::run_all::<MyDriver>()`.
//!
//! The peer ([`peer::Peer`]) is usable on its own, for scenarios of your own.

#![forbid(unsafe_code)]

pub mod peer;

use peer::{Mode, Peer, Step, Violation};
use std::time::{Duration, Instant};
use wxsocket_core::{
    Backlog, CloseBeforeOpen, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions,
    ConnectionError, Event, Message, REPLACED_REASON, ReadyState, ReconnectPolicy, SendError,
    SendFailure, SendId, SessionConfig,
};

/// A driver under test: a session of [`wxsocket_core`] driven over real sockets. The
/// methods are the session's calls as the driver's application makes them; the kit calls
/// them from one thread.
pub trait Driver: Sized {
    /// A driver for a session with this configuration (`ws://` is enough: the scenarios
    /// use no TLS, no compression and no proxy).
    fn start(config: SessionConfig) -> Result<Self, ConfigError>;
    /// Dials (the session's `connect`).
    fn connect(&mut self, options: &ConnectOptions) -> Result<ConnId, ConnectError>;
    /// Sends without waiting (the session's `send`; a full queue refuses at once).
    fn send(&mut self, message: Message) -> Result<SendId, SendError>;
    /// Closes (the session's `close`).
    fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), CloseError>;
    /// The session's `readyState`.
    fn state(&mut self) -> ReadyState;
    /// What the application has not taken yet (the session's `backlog`). The scenarios
    /// also call it in a loop while they wait for the peer without taking events, so a
    /// driver that is turned by its caller must turn itself here too.
    fn backlog(&mut self) -> Backlog;
    /// The next event, waiting at most `timeout` for it while the driver works (a driver
    /// that is turned by its caller turns itself meanwhile). `None` when none came.
    fn next_event(&mut self, timeout: Duration) -> Option<Event>;
}

/// How long a scenario waits for what it expects before it fails (a loaded machine meets
/// it by far).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Every scenario, by name, in the order [`run_all`] runs them.
pub const SCENARIOS: &[&str] = &[
    "echoes_in_order_and_closes_cleanly",
    "reports_the_peers_close_code_and_reason",
    "ends_a_close_the_peer_began_when_it_keeps_tcp_open",
    "closes_behind_messages_the_peer_has_not_read_yet",
    "fails_the_connection_on_protocol_violations",
    "reports_a_refused_upgrade_as_a_connect_failure",
    "times_out_a_handshake_that_never_completes",
    "drops_a_peer_that_never_answers_the_close",
    "delivers_frames_that_come_with_the_handshake_response",
    "pauses_reading_at_the_receive_bound_and_loses_nothing",
    "dials_again_after_a_drop_and_sends_what_was_queued",
    "refuses_invalid_options_before_any_io",
    "detects_a_silent_peer_by_keepalive",
    "cancels_queued_sends_when_closed_before_open",
    "replaces_the_connection_on_a_second_connect",
    "hands_back_a_message_sent_before_connect",
    "keeps_a_connection_whose_peer_answers_keepalive",
    "reports_close_code_1014_as_the_peer_sent_it",
    "fails_on_close_codes_the_peer_may_not_send",
    "reports_an_abrupt_disconnect_as_1006",
    "closes_after_open_when_closed_while_connecting",
    "refuses_a_close_while_connecting_when_told_to_ignore_it",
    "keeps_a_connection_whose_peer_sends_a_large_message_slowly",
    "reports_delivery_when_acknowledgement_is_on",
];

/// Runs every scenario against `D`, panicking with the scenario's name at the first that
/// fails.
pub fn run_all<D: Driver>() {
    for name in SCENARIOS {
        eprintln!("wxsocket-testkit: {name}");
        run::<D>(name);
    }
}

/// Runs the scenario called `name` (one of [`SCENARIOS`]) against `D`.
///
/// # Panics
/// When the scenario fails, or the name is unknown.
pub fn run<D: Driver>(name: &str) {
    match name {
        "echoes_in_order_and_closes_cleanly" => echoes_in_order_and_closes_cleanly::<D>(),
        "reports_the_peers_close_code_and_reason" => reports_the_peers_close_code_and_reason::<D>(),
        "ends_a_close_the_peer_began_when_it_keeps_tcp_open" => {
            ends_a_close_the_peer_began_when_it_keeps_tcp_open::<D>()
        }
        "closes_behind_messages_the_peer_has_not_read_yet" => {
            closes_behind_messages_the_peer_has_not_read_yet::<D>()
        }
        "fails_the_connection_on_protocol_violations" => {
            fails_the_connection_on_protocol_violations::<D>()
        }
        "reports_a_refused_upgrade_as_a_connect_failure" => {
            reports_a_refused_upgrade_as_a_connect_failure::<D>()
        }
        "times_out_a_handshake_that_never_completes" => {
            times_out_a_handshake_that_never_completes::<D>()
        }
        "drops_a_peer_that_never_answers_the_close" => {
            drops_a_peer_that_never_answers_the_close::<D>()
        }
        "delivers_frames_that_come_with_the_handshake_response" => {
            delivers_frames_that_come_with_the_handshake_response::<D>()
        }
        "pauses_reading_at_the_receive_bound_and_loses_nothing" => {
            pauses_reading_at_the_receive_bound_and_loses_nothing::<D>()
        }
        "dials_again_after_a_drop_and_sends_what_was_queued" => {
            dials_again_after_a_drop_and_sends_what_was_queued::<D>()
        }
        "refuses_invalid_options_before_any_io" => refuses_invalid_options_before_any_io::<D>(),
        "detects_a_silent_peer_by_keepalive" => detects_a_silent_peer_by_keepalive::<D>(),
        "cancels_queued_sends_when_closed_before_open" => {
            cancels_queued_sends_when_closed_before_open::<D>()
        }
        "replaces_the_connection_on_a_second_connect" => {
            replaces_the_connection_on_a_second_connect::<D>()
        }
        "hands_back_a_message_sent_before_connect" => {
            hands_back_a_message_sent_before_connect::<D>()
        }
        "keeps_a_connection_whose_peer_answers_keepalive" => {
            keeps_a_connection_whose_peer_answers_keepalive::<D>()
        }
        "reports_close_code_1014_as_the_peer_sent_it" => {
            reports_close_code_1014_as_the_peer_sent_it::<D>()
        }
        "fails_on_close_codes_the_peer_may_not_send" => {
            fails_on_close_codes_the_peer_may_not_send::<D>()
        }
        "reports_an_abrupt_disconnect_as_1006" => reports_an_abrupt_disconnect_as_1006::<D>(),
        "closes_after_open_when_closed_while_connecting" => {
            closes_after_open_when_closed_while_connecting::<D>()
        }
        "refuses_a_close_while_connecting_when_told_to_ignore_it" => {
            refuses_a_close_while_connecting_when_told_to_ignore_it::<D>()
        }
        "keeps_a_connection_whose_peer_sends_a_large_message_slowly" => {
            keeps_a_connection_whose_peer_sends_a_large_message_slowly::<D>()
        }
        "reports_delivery_when_acknowledgement_is_on" => {
            reports_delivery_when_acknowledgement_is_on::<D>()
        }

        other => panic!("wxsocket-testkit: no scenario {other:?}"),
    }
}

/// One `#[test]` per scenario for the driver type given, named after the scenario.
#[macro_export]
macro_rules! scenarios {
    ($driver:ty) => {
        $crate::scenarios!(@each $driver;
            echoes_in_order_and_closes_cleanly,
            reports_the_peers_close_code_and_reason,
            ends_a_close_the_peer_began_when_it_keeps_tcp_open,
            closes_behind_messages_the_peer_has_not_read_yet,
            fails_the_connection_on_protocol_violations,
            reports_a_refused_upgrade_as_a_connect_failure,
            times_out_a_handshake_that_never_completes,
            drops_a_peer_that_never_answers_the_close,
            delivers_frames_that_come_with_the_handshake_response,
            pauses_reading_at_the_receive_bound_and_loses_nothing,
            dials_again_after_a_drop_and_sends_what_was_queued,
            refuses_invalid_options_before_any_io,
            detects_a_silent_peer_by_keepalive,
            cancels_queued_sends_when_closed_before_open,
            replaces_the_connection_on_a_second_connect,
            hands_back_a_message_sent_before_connect,
            keeps_a_connection_whose_peer_answers_keepalive,
            reports_close_code_1014_as_the_peer_sent_it,
            fails_on_close_codes_the_peer_may_not_send,
            reports_an_abrupt_disconnect_as_1006,
            closes_after_open_when_closed_while_connecting,
            refuses_a_close_while_connecting_when_told_to_ignore_it,
            keeps_a_connection_whose_peer_sends_a_large_message_slowly,
            reports_delivery_when_acknowledgement_is_on,
        );
    };
    (@each $driver:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run::<$driver>(stringify!($name));
            }
        )*
    };
}

// ----- helpers -----

/// Takes events until `done` holds for what was taken; fails at [`DEADLINE`].
fn until<D: Driver>(driver: &mut D, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let start = Instant::now();
    let mut events = Vec::new();
    while !done(&events) {
        let left = DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() {
            // What the session says may point at the driver's fault: a backlog that stays
            // at the receive bound (reading never resumed), a state whose timer never ran.
            let (state, backlog) = (driver.state(), driver.backlog());
            panic!(
                "not there in {DEADLINE:?}; the session is {state:?} with {backlog:?} untaken; \
                 events: {events:#?}"
            );
        }
        if let Some(event) = driver.next_event(left.min(Duration::from_millis(50))) {
            events.push(event);
        }
    }
    events
}

fn closed(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Close { .. }))
}

fn opened(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Open { .. }))
}

fn messages(events: &[Event]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn last_close(events: &[Event]) -> (u16, bool) {
    match events
        .iter()
        .rev()
        .find(|e| matches!(e, Event::Close { .. }))
    {
        Some(Event::Close { code, clean, .. }) => (*code, *clean),
        _ => panic!("no close event in {events:#?}"),
    }
}

fn connected<D: Driver>(config: SessionConfig, peer: &Peer) -> (D, ConnId) {
    let mut driver = D::start(config).expect("a valid configuration");
    let conn = driver
        .connect(&ConnectOptions::new(peer.url()))
        .expect("a valid request");
    (driver, conn)
}

/// Asserts the connection ended with an `Error` of its own, then `Close { code, clean:
/// false }` with a reason.
fn failed_with(events: &[Event], conn: ConnId, code: u16, what: &str) {
    let error = events
        .iter()
        .position(|e| matches!(e, Event::Error { conn: c, .. } if *c == conn));
    let close = events
        .iter()
        .position(|e| matches!(e, Event::Close { conn: c, .. } if *c == conn));
    match (error, close) {
        (Some(e), Some(c)) if e < c => {}
        _ => panic!("{what}: expected Error then Close: {events:#?}"),
    }
    let Some(Event::Close {
        code: got,
        clean,
        reason,
        ..
    }) = close.map(|c| &events[c])
    else {
        unreachable!()
    };
    assert_eq!((*got, *clean), (code, false), "{what}: {events:#?}");
    assert!(!reason.is_empty(), "{what}: the close should say why");
}

// ----- scenarios -----

/// Messages sent while connecting are queued and flushed in order on open; each is
/// echoed once, in order, each send completes once; `close` ends with a clean 1000, and
/// the peer saw the close frame. The open carries the dial's timing (a driver that never
/// set it reports every phase as zero).
fn echoes_in_order_and_closes_cleanly<D: Driver>() {
    let peer = Peer::start(Mode::Echo);
    let (mut driver, conn) = connected::<D>(SessionConfig::default(), &peer);
    let texts = ["one", "two", "three"];
    let ids: Vec<SendId> = texts
        .iter()
        .map(|t| {
            driver
                .send(Message::text(*t))
                .expect("queued while connecting")
        })
        .collect();
    let mut events = until(&mut driver, |e| messages(e).len() == texts.len());
    let [Event::Connecting { .. }, Event::Open { handshake, .. }] = &events[..2] else {
        panic!("connecting, then open: {events:#?}");
    };
    let profile = &handshake.profile;
    let ends = [
        profile.resolved,
        profile.connected,
        profile.request_written,
        profile.response_received,
    ];
    assert!(
        ends.is_sorted() && profile.response_received > Duration::ZERO && profile.tls.is_none(),
        "the dial's timing, in order, ending when the response came: {profile:?}"
    );
    assert_eq!(messages(&events), texts.map(Message::text).to_vec());
    assert_eq!(driver.state(), ReadyState::Open);
    driver.close(None, "done").expect("close while open");
    events.extend(until(&mut driver, closed));
    let completed: Vec<SendId> = events
        .iter()
        .filter_map(|e| match e {
            Event::SendCompleted { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(completed, ids, "every send completes once, in order");
    assert_eq!(last_close(&events), (1000, true));
    assert_eq!(driver.state(), ReadyState::Closed);
    let seen = peer.wait_conn(0, "the close frame", DEADLINE, |c| !c.closes.is_empty());
    assert_eq!(seen.closes[0].code, Some(1000));
    assert_eq!(seen.messages, texts.map(Message::text).to_vec());
    let _ = conn;
}

/// The peer closes with 4001 "bye": the close event carries them, clean.
fn reports_the_peers_close_code_and_reason<D: Driver>() {
    let peer = Peer::start(Mode::CloseWith(4001, "bye".into()));
    let (mut driver, conn) = connected::<D>(SessionConfig::default(), &peer);
    let events = until(&mut driver, closed);
    assert!(opened(&events), "{events:#?}");
    assert_eq!(events.last(), Some(&Event::close(conn, 4001, "bye", true)));
}

/// The peer closes with 4001 "bye" and keeps TCP open: once the driver has written the
/// answer and reported it (`TransportEvent::CloseWritten`), the session ends the connection
/// after the close linger, clean, long before the close timeout (a driver that never
/// reports the answer written gets the close timeout and an unclean close).
fn ends_a_close_the_peer_began_when_it_keeps_tcp_open<D: Driver>() {
    let peer = Peer::builder(Mode::CloseWith(4001, "bye".into()))
        .keep_tcp_after_close()
        .start();
    let close_timeout = Duration::from_secs(10);
    let config = SessionConfig::default().close_timeout(close_timeout);
    let (mut driver, conn) = connected::<D>(config, &peer);
    let started = Instant::now();
    let events = until(&mut driver, closed);
    let elapsed = started.elapsed();
    assert!(opened(&events), "{events:#?}");
    assert_eq!(events.last(), Some(&Event::close(conn, 4001, "bye", true)));
    assert!(
        elapsed < close_timeout - Duration::from_secs(2),
        "ended after {elapsed:?}, not after the linger"
    );
}

/// Messages and a close sent while the peer reads nothing fill the socket: a write that
/// would block is no failure. Once the peer reads again, every message arrives whole, the
/// close frame follows them, and the close is clean. (A driver that takes a non-blocking
/// socket's `WouldBlock` for an error ends the connection as 1006 instead: the example
/// poll loop did, a review found.)
fn closes_behind_messages_the_peer_has_not_read_yet<D: Driver>() {
    const SIZE: usize = 4 << 20;
    let peer = Peer::start(Mode::Echo);
    let (mut driver, conn) = connected::<D>(SessionConfig::default(), &peer);
    until(&mut driver, opened);
    // The peer reads one more frame, then holds.
    peer.hold_reads();
    driver
        .send(Message::text("first"))
        .expect("send while open");
    for _ in 0..3 {
        // More than the sockets hold while the peer does not read.
        driver
            .send(Message::binary(vec![7; SIZE]))
            .expect("send while open");
    }
    driver.close(Some(4000), "bye").expect("close while open");
    // The driver turns with the socket full.
    let mut events = Vec::new();
    let turned = Instant::now() + Duration::from_millis(200);
    while let Some(left) = turned.checked_duration_since(Instant::now()) {
        events.extend(driver.next_event(left));
    }
    peer.release_reads();
    if !closed(&events) {
        events.extend(until(&mut driver, closed));
    }
    assert!(
        !events.iter().any(|e| matches!(e, Event::Error { .. })),
        "{events:#?}"
    );
    assert_eq!(events.last(), Some(&Event::close(conn, 4000, "bye", true)));
    let seen = peer.wait_conn(0, "the close frame", DEADLINE, |c| !c.closes.is_empty());
    let sizes: Vec<usize> = seen.messages.iter().map(Message::len).collect();
    assert_eq!(sizes, [5, SIZE, SIZE, SIZE]);
    assert_eq!(seen.closes[0].code, Some(4000));
}

/// A reserved opcode or a masked server frame fails the connection with 1002, invalid
/// UTF-8 with 1007, a message over `max_message_size` with 1009: an `Error`, then an
/// unclean `Close` with that code.
fn fails_the_connection_on_protocol_violations<D: Driver>() {
    for (mode, code) in [
        (Mode::Violation(Violation::ReservedOpcode), 1002),
        (Mode::Violation(Violation::MaskedFrame), 1002),
        (Mode::InvalidUtf8, 1007),
        (Mode::Oversized(64 << 10), 1009),
    ] {
        let peer = Peer::start(mode.clone());
        let config = SessionConfig::default().max_message_size(16 << 10);
        let (mut driver, conn) = connected::<D>(config, &peer);
        let events = until(&mut driver, closed);
        failed_with(&events, conn, code, &format!("{mode:?}"));
    }
}

/// HTTP 403 instead of 101: the connection never opens; `Error` then `Close` 1006.
fn reports_a_refused_upgrade_as_a_connect_failure<D: Driver>() {
    let peer = Peer::start(Mode::HttpStatus(403));
    let (mut driver, conn) = connected::<D>(SessionConfig::default(), &peer);
    let events = until(&mut driver, closed);
    assert!(!opened(&events), "{events:#?}");
    failed_with(&events, conn, 1006, "HTTP 403");
    match events.iter().find(|e| matches!(e, Event::Error { .. })) {
        Some(Event::Error {
            error: ConnectionError::ConnectFailed(e),
            ..
        }) => assert_eq!(e.kind, wxsocket_core::TransportErrorKind::HttpStatus(403)),
        other => panic!("expected ConnectFailed(403): {other:?}"),
    }
}

/// A peer that reads the upgrade request and never answers: the handshake timeout ends
/// the dial (not earlier than it), `Error` then `Close` 1006.
fn times_out_a_handshake_that_never_completes<D: Driver>() {
    let peer = Peer::start(Mode::StallHandshake);
    let timeout = Duration::from_millis(300);
    let config = SessionConfig::default().handshake_timeout(timeout);
    let started = Instant::now();
    let (mut driver, conn) = connected::<D>(config, &peer);
    let events = until(&mut driver, closed);
    assert!(started.elapsed() >= timeout, "ended before the timeout");
    assert!(!opened(&events));
    failed_with(&events, conn, 1006, "a stalled handshake");
}

/// A peer that never answers our close frame: the close timeout drops the connection,
/// unclean 1006, not earlier than the timeout; the peer sees the TCP connection go.
fn drops_a_peer_that_never_answers_the_close<D: Driver>() {
    let peer = Peer::start(Mode::IgnoreClose);
    let timeout = Duration::from_millis(300);
    let (mut driver, _) = connected::<D>(SessionConfig::default().close_timeout(timeout), &peer);
    until(&mut driver, opened);
    let asked = Instant::now();
    driver.close(None, "").expect("close while open");
    let events = until(&mut driver, closed);
    assert!(
        asked.elapsed() >= timeout,
        "closed before the close timeout"
    );
    assert_eq!(last_close(&events), (1006, false));
    peer.wait_conn(0, "the client to drop the TCP connection", DEADLINE, |c| {
        c.client_went_away
    });
}

/// Frames written in the same write as the 101 response (read together with its head) are
/// delivered, in order, after `Open`.
fn delivers_frames_that_come_with_the_handshake_response<D: Driver>() {
    let frame = |text: &str| Step::Frame {
        fin: true,
        rsv: 0,
        opcode: peer::opcode::TEXT,
        payload: text.as_bytes().to_vec(),
    };
    let peer = Peer::start(Mode::Script(vec![Step::WithResponse(vec![
        frame("early"),
        frame("bird"),
    ])]));
    let (mut driver, _) = connected::<D>(SessionConfig::default(), &peer);
    let events = until(&mut driver, |e| messages(e).len() == 2);
    let open = events.iter().position(|e| matches!(e, Event::Open { .. }));
    let first = events
        .iter()
        .position(|e| matches!(e, Event::Message { .. }));
    assert!(open < first, "a message before Open: {events:#?}");
    assert_eq!(
        messages(&events),
        ["early", "bird"].map(Message::text).to_vec()
    );
}

/// 200 messages against a receive bound of 10 while the application takes nothing: the
/// backlog stops at the bound; then every message arrives once, in order.
fn pauses_reading_at_the_receive_bound_and_loses_nothing<D: Driver>() {
    const COUNT: usize = 200;
    let script = (0..COUNT)
        .map(|i| Step::Message(Message::text(i.to_string())))
        .collect();
    let peer = Peer::start(Mode::Script(script));
    let config = SessionConfig::default().receive_bounds(10, 1 << 20);
    let (mut driver, _) = connected::<D>(config, &peer);
    // Take the lifecycle events up to Open, then nothing for a while.
    let mut events = until(&mut driver, opened);
    // Waiting for an event would take one: let the driver work by asking for its backlog
    // instead (a driver turned by its caller turns itself here). First until messages
    // arrive (bounded by the deadline, not by a guess at a loaded machine's speed), then
    // for 300 ms more, in which a driver without a bound would read far past it.
    let mut most = 0;
    let start = Instant::now();
    while most == 0 && start.elapsed() < DEADLINE {
        most = driver.backlog().messages;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        most >= 1,
        "nothing arrived while the application did not read"
    );
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_millis(300) {
        most = most.max(driver.backlog().messages);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        most <= 10,
        "the backlog reached {most} messages, past the bound of 10"
    );
    events.extend(until(&mut driver, |e| messages(e).len() == COUNT));
    let expected: Vec<Message> = (0..COUNT).map(|i| Message::text(i.to_string())).collect();
    assert_eq!(messages(&events), expected);
}

/// With a reconnect policy, a dropped connection reports `Close` 1006 and `Reconnecting`,
/// is dialled again, and a message sent meanwhile is delivered on the new connection.
fn dials_again_after_a_drop_and_sends_what_was_queued<D: Driver>() {
    let peer = Peer::start(Mode::Echo);
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .seed(7);
    let config = SessionConfig::default().reconnect(policy);
    let (mut driver, _) = connected::<D>(config, &peer);
    until(&mut driver, opened);
    peer.drop_all();
    let events = until(&mut driver, |e| {
        e.iter().any(|e| matches!(e, Event::Reconnecting { .. }))
    });
    assert_eq!(last_close(&events), (1006, false));
    driver
        .send(Message::text("after"))
        .expect("queued while reconnecting");
    let events = until(&mut driver, |e| messages(e).len() == 1);
    assert!(opened(&events), "{events:#?}");
    assert_eq!(messages(&events), vec![Message::text("after")]);
    assert_eq!(peer.snapshot().accepted, 2);
}

/// An invalid URL is refused by `connect` with an error naming it, and nothing is dialled.
fn refuses_invalid_options_before_any_io<D: Driver>() {
    let peer = Peer::start(Mode::Echo);
    let mut driver = D::start(SessionConfig::default()).expect("a valid configuration");
    let bad = format!("{}#fragment", peer.url());
    assert!(matches!(
        driver.connect(&ConnectOptions::new(bad)),
        Err(ConnectError::FragmentInUrl)
    ));
    assert!(matches!(
        driver.connect(&ConnectOptions::new("ftp://127.0.0.1/")),
        Err(ConnectError::UnsupportedScheme { .. })
    ));
    assert_eq!(driver.state(), ReadyState::Idle);
    assert!(driver.next_event(Duration::from_millis(50)).is_none());
    assert_eq!(peer.snapshot().accepted, 0, "a refused request was dialled");
}

/// A peer that answers nothing (no pong): keepalive (100 ms, 200 ms) declares it dead, not
/// earlier than interval + timeout: `Error(KeepaliveTimeout)` then `Close` 1006; the peer
/// was pinged and saw the TCP connection go.
fn detects_a_silent_peer_by_keepalive<D: Driver>() {
    let peer = Peer::start(Mode::Silent);
    let timeout = Duration::from_millis(200);
    let config = SessionConfig::default().keepalive(Duration::from_millis(100), timeout);
    let started = Instant::now();
    let (mut driver, conn) = connected::<D>(config, &peer);
    let events = until(&mut driver, closed);
    assert!(opened(&events), "{events:#?}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "declared dead too early"
    );
    failed_with(&events, conn, 1006, "a silent peer");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error { error: ConnectionError::KeepaliveTimeout(t), .. } if *t == timeout
        )),
        "{events:#?}"
    );
    let seen = peer.wait_conn(0, "the client to drop the connection", DEADLINE, |c| {
        c.ended
    });
    assert!(seen.pings >= 1 && seen.client_went_away, "{seen:#?}");
}

/// `close()` while the handshake is held, under `CloseBeforeOpen::Abort` (the default):
/// Closed at once; the queued send fails as `Cancelled` with its message handed back;
/// `Close` 1006; the peer never upgraded and saw the client go.
fn cancels_queued_sends_when_closed_before_open<D: Driver>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let config = SessionConfig::default().close_before_open(CloseBeforeOpen::Abort);
    let (mut driver, _) = connected::<D>(config, &peer);
    let queued = driver
        .send(Message::text("q"))
        .expect("queued while connecting");
    until_the_upgrade_request_is_held(&mut driver, &peer);
    driver.close(None, "").expect("close while connecting");
    assert_eq!(driver.state(), ReadyState::Closed);
    let events = until(&mut driver, closed);
    match events.as_slice() {
        [
            Event::Connecting { .. },
            Event::SendFailed {
                id,
                reason: SendFailure::Cancelled,
                message,
                ..
            },
            Event::Close {
                code: 1006,
                clean: false,
                ..
            },
        ] => {
            assert_eq!(*id, queued);
            assert_eq!(message, &Some(Message::text("q")));
        }
        _ => panic!("unexpected events {events:#?}"),
    }
    let start = Instant::now();
    while !peer.snapshot().connections[0].ended {
        assert!(start.elapsed() < DEADLINE, "the dial was never aborted");
        driver.backlog();
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = peer.snapshot().connections[0].clone();
    assert!(seen.client_went_away && !seen.upgraded, "{seen:#?}");
}

/// A second `connect` while open replaces the first: the old connection's `Close` (1000,
/// [`REPLACED_REASON`], not clean) comes before the new one's `Connecting` and `Open`, and
/// the old peer receives the close frame.
fn replaces_the_connection_on_a_second_connect<D: Driver>() {
    let old_peer = Peer::start(Mode::Echo);
    let new_peer = Peer::start(Mode::Echo);
    let (mut driver, old) = connected::<D>(SessionConfig::default(), &old_peer);
    until(&mut driver, opened);
    let new = driver
        .connect(&ConnectOptions::new(new_peer.url()))
        .expect("a valid request");
    let events = until(&mut driver, opened);
    match events.as_slice() {
        [
            first,
            Event::Connecting { conn: c, .. },
            Event::Open { conn: o, .. },
        ] if *c == new && *o == new => {
            assert_eq!(first, &Event::close(old, 1000, REPLACED_REASON, false));
        }
        _ => panic!("unexpected events {events:#?}"),
    }
    let start = Instant::now();
    while !old_peer.snapshot().connections[0].ended {
        assert!(start.elapsed() < DEADLINE, "the old transport never closed");
        driver.backlog();
        std::thread::sleep(Duration::from_millis(5));
    }
    let closes = &old_peer.snapshot().connections[0].closes;
    assert_eq!(
        closes.first().and_then(|c| c.code),
        Some(1000),
        "{closes:?}"
    );
}

/// A send before any `connect` is refused with the message handed back, and nothing
/// changes.
fn hands_back_a_message_sent_before_connect<D: Driver>() {
    let mut driver = D::start(SessionConfig::default()).expect("a valid configuration");
    let m = Message::text("too early");
    assert_eq!(driver.send(m.clone()), Err(SendError::NotConnected(m)));
    assert_eq!(driver.state(), ReadyState::Idle);
    assert_eq!(driver.backlog(), Backlog::default());
    assert!(driver.next_event(Duration::from_millis(50)).is_none());
}

/// A peer that answers every ping (an echo server): keepalive (40 ms, 400 ms) keeps the
/// connection open through many intervals, and messages still flow. (A driver that drops
/// the peer's pongs fails here: keepalive then ends every healthy connection.)
fn keeps_a_connection_whose_peer_answers_keepalive<D: Driver>() {
    let peer = Peer::start(Mode::Echo);
    let config =
        SessionConfig::default().keepalive(Duration::from_millis(40), Duration::from_millis(400));
    let (mut driver, _) = connected::<D>(config, &peer);
    until(&mut driver, opened);
    // Wait for six pings while the driver works (taking no event, in case one came).
    let start = Instant::now();
    while peer
        .snapshot()
        .connections
        .first()
        .is_none_or(|c| c.pings < 6)
    {
        assert!(start.elapsed() < DEADLINE, "fewer than six pings came");
        driver.backlog();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(driver.state(), ReadyState::Open, "pongs keep it open");
    driver.send(Message::text("still here")).expect("open");
    let events = until(&mut driver, |e| !messages(e).is_empty() || closed(e));
    assert_eq!(
        messages(&events),
        [Message::text("still here")],
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Error { .. })),
        "{events:#?}"
    );
}

/// The peer sends a 60 KB message in 20 parts over 2 s, twice keepalive's interval plus
/// its timeout, and answers no ping meanwhile (its pong could not overtake the frame
/// anyway): the bytes still arriving are a sign of life, so the message is delivered whole
/// and the connection stays open. A driver that does not report
/// `TransportEvent::Receiving` for a read that completed nothing fails this.
fn keeps_a_connection_whose_peer_sends_a_large_message_slowly<D: Driver>() {
    const SIZE: usize = 60_000;
    let message = Message::binary(vec![7u8; SIZE]);
    let peer = Peer::start(Mode::Script(vec![Step::Trickle {
        message: message.clone(),
        pieces: 20,
        pause: Duration::from_millis(100),
    }]));
    // A second of silence ends it: ten times the pause between the parts, so a peer thread
    // held up on a loaded machine is not taken for silence.
    let keepalive = Duration::from_millis(500);
    let config = SessionConfig::default().keepalive(keepalive, keepalive);
    let (mut driver, _) = connected::<D>(config, &peer);
    let events = until(&mut driver, |e| !messages(e).is_empty() || closed(e));
    assert_eq!(messages(&events), [message], "{events:#?}");
    assert_eq!(driver.state(), ReadyState::Open);
    driver.close(None, "").expect("open");
    let events = until(&mut driver, closed);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Error { .. })),
        "{events:#?}"
    );
}

/// Delivery acknowledgement (SPEC §8): each message the echoing peer read is reported
/// `SendDelivered` once, after a pong proves it (the peer answers pings), and never
/// `SendCompleted`. A driver that does not carry out `Ping` actions or report pongs
/// leaves the messages unacknowledged.
fn reports_delivery_when_acknowledgement_is_on<D: Driver>() {
    let peer = Peer::start(Mode::Echo);
    let ack = wxsocket_core::Acknowledgement::new().timeout(Duration::from_secs(10));
    let config = SessionConfig::default().acknowledge(ack);
    let (mut driver, _) = connected::<D>(config, &peer);
    let sent: Vec<SendId> = (0..5)
        .map(|i| driver.send(Message::text(format!("m{i}"))).expect("queued"))
        .collect();
    let delivered = |events: &[Event]| -> Vec<SendId> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::SendDelivered { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    };
    let events = until(&mut driver, |e| {
        (delivered(e).len() == sent.len() && messages(e).len() == sent.len()) || closed(e)
    });
    assert_eq!(delivered(&events), sent, "{events:#?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SendCompleted { .. } | Event::SendFailed { .. })),
        "{events:#?}"
    );
    driver.close(None, "").expect("open");
    until(&mut driver, closed);
}

/// The peer closes with 1014 (Bad Gateway, which a server may send): the close event
/// carries 1014 and the reason, clean, and the client answers with 1000, not a protocol
/// error (tungstenite 0.30 turns 1014 into 1002 unless the driver reads the code as sent,
/// as `wxsocket_wire::incoming::Incoming` does).
fn reports_close_code_1014_as_the_peer_sent_it<D: Driver>() {
    let peer = Peer::start(Mode::CloseWith(1014, "bad gateway".into()));
    let (mut driver, conn) = connected::<D>(SessionConfig::default(), &peer);
    let events = until(&mut driver, closed);
    assert_eq!(
        events.last(),
        Some(&Event::close(conn, 1014, "bad gateway", true)),
        "{events:#?}"
    );
    assert_client_closed_with(&peer, 1000);
}

/// Waits for the client to end the peer's first connection; asserts its close frame's code.
fn assert_client_closed_with(peer: &Peer, code: u16) {
    let seen = peer.wait_conn(0, "the client's close frame", DEADLINE, |c| c.ended);
    assert_eq!(
        seen.closes.first().and_then(|c| c.code),
        Some(code),
        "{seen:#?}"
    );
}

/// A close code no peer may send (RFC 6455 §7.4: 0–999, 1004–1006, 1015, 5000 and up)
/// fails the connection as a protocol error: `Error`, then `Close` 1002 not clean, and the
/// client's close frame says 1002.
fn fails_on_close_codes_the_peer_may_not_send<D: Driver>() {
    for code in [999, 1005, 1006, 1015, 5000] {
        let peer = Peer::start(Mode::CloseWith(code, "odd".into()));
        let (mut driver, conn) = connected::<D>(SessionConfig::default(), &peer);
        let events = until(&mut driver, closed);
        failed_with(&events, conn, 1002, &format!("close code {code}"));
        assert_client_closed_with(&peer, 1002);
    }
}

/// The peer drops the TCP connection in the middle of a message: `Error`, then `Close`
/// 1006 not clean.
fn reports_an_abrupt_disconnect_as_1006<D: Driver>() {
    let peer = Peer::start(Mode::DropMidMessage);
    let (mut driver, conn) = connected::<D>(SessionConfig::default(), &peer);
    let events = until(&mut driver, closed);
    assert!(opened(&events), "{events:#?}");
    failed_with(&events, conn, 1006, "a dropped connection");
    assert_eq!(driver.state(), ReadyState::Closed);
}

/// Lets the driver dial until the peer holds the upgrade request.
fn until_the_upgrade_request_is_held<D: Driver>(driver: &mut D, peer: &Peer) {
    let start = Instant::now();
    while peer
        .snapshot()
        .connections
        .first()
        .is_none_or(|c| c.request.is_none())
    {
        assert!(start.elapsed() < DEADLINE, "the upgrade request never came");
        driver.backlog();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `close(4001, "later")` while connecting under `CloseBeforeOpen::AfterOpen`: still
/// Connecting; once the peer answers, `Open`, the queued message is written, then the close
/// handshake with 4001: `Close` 4001 clean, and the peer read the message before the close.
fn closes_after_open_when_closed_while_connecting<D: Driver>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let config = SessionConfig::default().close_before_open(CloseBeforeOpen::AfterOpen);
    let (mut driver, conn) = connected::<D>(config, &peer);
    let queued = driver
        .send(Message::text("q"))
        .expect("queued while connecting");
    until_the_upgrade_request_is_held(&mut driver, &peer);
    driver
        .close(Some(4001), "later")
        .expect("close while connecting");
    assert_eq!(
        driver.state(),
        ReadyState::Connecting,
        "the close waits for open"
    );
    peer.release_handshakes();
    let events = until(&mut driver, closed);
    match events.as_slice() {
        [
            Event::Connecting { .. },
            Event::Open { .. },
            Event::SendCompleted { id, .. },
            Event::Close { .. },
        ] => assert_eq!(*id, queued),
        _ => panic!("unexpected events {events:#?}"),
    }
    assert_eq!(
        events.last(),
        Some(&Event::close(conn, 4001, "later", true))
    );
    let seen = peer.wait_conn(0, "the close frame", DEADLINE, |c| !c.closes.is_empty());
    assert_eq!(seen.messages, [Message::text("q")], "the queue goes first");
    assert_eq!(seen.closes[0].code, Some(4001));
}

/// `close()` while connecting under `CloseBeforeOpen::Ignore`: refused with `NotOpenYet`,
/// nothing changes, and the connection opens when the peer answers.
fn refuses_a_close_while_connecting_when_told_to_ignore_it<D: Driver>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let config = SessionConfig::default().close_before_open(CloseBeforeOpen::Ignore);
    let (mut driver, conn) = connected::<D>(config, &peer);
    until_the_upgrade_request_is_held(&mut driver, &peer);
    assert_eq!(driver.close(None, ""), Err(CloseError::NotOpenYet));
    assert_eq!(driver.state(), ReadyState::Connecting);
    peer.release_handshakes();
    let events = until(&mut driver, opened);
    assert!(
        matches!(events.last(), Some(Event::Open { conn: c, .. }) if *c == conn),
        "{events:#?}"
    );
    driver.close(None, "").expect("close while open");
    let events = until(&mut driver, closed);
    assert_eq!(events.last(), Some(&Event::close(conn, 1000, "", true)));
}
