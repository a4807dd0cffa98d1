//! The third driver, `crates/wire/examples/poll_loop.rs` (a single-threaded loop over the
//! standard library's non-blocking sockets, written as the example an engine author would
//! copy), against the scriptable peer over loopback, reached through nothing but the public
//! API of the core and the wire crate.
//!
//! Every scenario of the published test kit (`wxsocket-testkit`), which both adapters pass
//! too (`kit.rs`), plus what this driver refuses before any IO.

#[allow(dead_code)]
#[path = "../../crates/wire/examples/poll_loop.rs"]
mod poll_loop;

use poll_loop::PollLoop;
use std::time::{Duration, Instant};
use wxsocket_core::{
    Backlog, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions, Event, Message,
    ReadyState, SendError, SendId, SessionConfig,
};

/// The poll loop as a driver of the test kit: every call turns the loop first, as a game
/// would every frame, and waiting for an event turns it once per millisecond.
struct Turned(PollLoop);

impl wxsocket_testkit::Driver for Turned {
    fn start(config: SessionConfig) -> Result<Self, ConfigError> {
        PollLoop::new(config).map(Turned)
    }
    fn connect(&mut self, options: &ConnectOptions) -> Result<ConnId, ConnectError> {
        self.0.connect(options, Instant::now())
    }
    fn send(&mut self, message: Message) -> Result<SendId, SendError> {
        self.0.session().send(message, Instant::now())
    }
    fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        self.0.session().close(code, reason, Instant::now())
    }
    fn state(&mut self) -> ReadyState {
        self.0.session().state()
    }
    fn backlog(&mut self) -> Backlog {
        self.0.turn(Instant::now());
        self.0.session().backlog()
    }
    fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            self.0.turn(Instant::now());
            if let Some(event) = self.0.poll_event() {
                return Some(event);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1)); // the rest of the frame
        }
    }
}

wxsocket_testkit::scenarios!(Turned);

#[test]
fn what_the_driver_leaves_out_is_refused_before_any_io() {
    let mut driver = PollLoop::new(SessionConfig::default()).unwrap();
    let now = Instant::now();
    let plain = ConnectOptions::new("ws://127.0.0.1:9/");
    for (options, option) in [
        (ConnectOptions::new("wss://127.0.0.1:9/"), "url"),
        (plain.clone().per_message_deflate(true), "perMessageDeflate"),
        // A proxy it would not use: refused, not dialled past.
        (plain.proxy("http://127.0.0.1:1"), "proxy"),
    ] {
        let refused = driver.connect(&options, now);
        assert!(
            matches!(&refused, Err(ConnectError::Unsupported { option: o, .. }) if *o == option),
            "{option}: {refused:?}"
        );
    }
    assert!(
        driver.session().poll_action().is_none(),
        "no dial was asked for"
    );
}

/// The blocking dial is bounded by the session's handshake timeout: a user's probe with
/// `handshake_timeout(1 s)` against an address that drops connects waited 60 s (the dial
/// used only the per-connect timeout, or 60 s).
#[test]
fn a_dial_nobody_answers_ends_at_the_sessions_handshake_timeout() {
    let hole = wxsocket_test_server::Blackhole::start().unwrap();
    let timeout = Duration::from_millis(300);
    let config = SessionConfig::default().handshake_timeout(timeout);
    let mut driver = <Turned as wxsocket_testkit::Driver>::start(config).unwrap();
    let started = Instant::now();
    let url = format!("ws://{}/", hole.addr());
    let conn = wxsocket_testkit::Driver::connect(&mut driver, &ConnectOptions::new(url)).unwrap();
    let mut events = Vec::new();
    while let Some(event) =
        wxsocket_testkit::Driver::next_event(&mut driver, Duration::from_secs(10))
    {
        let closed = matches!(event, Event::Close { .. });
        events.push(event);
        if closed {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?} {events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Error { conn: c, .. } if *c == conn)),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(Event::Close { code: 1006, .. })),
        "{events:?}"
    );
}
