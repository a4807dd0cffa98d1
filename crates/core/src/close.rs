//! Close codes and reasons: what an application may send (RFC 6455 §7.4) and what
//! a close event reports.

use crate::error::CloseError;
use std::time::Duration;

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The peer is going away (server shutdown, page navigated away).
pub const GOING_AWAY: u16 = 1001;
/// The peer violated the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Reported when the peer's close frame carried no code; never sent.
pub const NO_STATUS: u16 = 1005;
/// Reported when the connection ended without a close handshake; never sent.
pub const ABNORMAL: u16 = 1006;
/// A text message was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A message exceeded the maximum size.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// How long the client waits, once both close frames were exchanged (the peer's read, ours
/// written: [`TransportEvent::CloseWritten`](crate::TransportEvent::CloseWritten)), for the
/// server to close the TCP connection before it closes it itself (RFC 6455 §7.1.1 lets the client
/// do so "if it has not received a TCP Close from the server in a reasonable time
/// period"; browsers wait 2 s as well). Capped by the session's close timeout. The close
/// is clean either way (RFC 6455 §7.1.4).
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Longest close reason in UTF-8 bytes (a control frame holds 125 bytes, 2 are the code).
pub const MAX_REASON_BYTES: usize = 123;

/// A validated close request from the application: code 1000 or 3000–4999, reason at most
/// [`MAX_REASON_BYTES`] UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    code: u16,
    reason: String,
}

impl CloseRequest {
    /// Checks a code and reason; `None` for the code means 1000.
    pub fn new(code: Option<u16>, reason: impl Into<String>) -> Result<Self, CloseError> {
        let code = code.unwrap_or(NORMAL);
        if code != NORMAL && !(3000..=4999).contains(&code) {
            return Err(CloseError::InvalidCode(code));
        }
        let reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            return Err(CloseError::ReasonTooLong(reason.len()));
        }
        Ok(Self { code, reason })
    }

    /// A normal close (1000) with no reason.
    pub fn normal() -> Self {
        Self {
            code: NORMAL,
            reason: String::new(),
        }
    }

    /// Built by the core itself for codes the application may not send (1002, 1007, …).
    pub(crate) fn internal(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code,
            reason: reason[..end].to_owned(),
        }
    }

    /// The close code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The close reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4): the defined codes
/// except the ones reserved for reporting (1004, 1005, 1006, 1015), and 3000–4999.
pub fn is_valid_from_peer(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close frame as the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClose {
    /// The code, `None` when the frame had no body (reported as 1005).
    pub code: Option<u16>,
    /// The reason, empty when none.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    //! The close rules that live in the session, on a simulated clock.

    use super::*;
    use crate::{
        Action, ConnId, ConnectOptions, ConnectionError, Event, ReconnectPolicy, Session,
        SessionConfig, TransportError, TransportErrorKind, TransportEvent,
    };
    use std::time::Instant;

    struct Sim {
        s: Session,
        now: Instant,
        conn: ConnId,
    }

    impl Sim {
        /// A session with one open connection, its outputs drained.
        fn open(config: SessionConfig) -> Self {
            let now = Instant::now();
            let mut s = Session::new(config).unwrap();
            let conn = s
                .connect(&ConnectOptions::new("ws://127.0.0.1:9/"), now)
                .unwrap();
            s.handle(conn, TransportEvent::Opened(Box::default()), now);
            let mut sim = Self { s, now, conn };
            sim.actions();
            sim.events();
            sim
        }

        fn input(&mut self, event: TransportEvent) {
            self.s.handle(self.conn, event, self.now);
        }

        fn peer_close(&mut self, code: Option<u16>, reason: &str) {
            self.input(TransportEvent::PeerClosed(PeerClose {
                code,
                reason: reason.to_owned(),
            }));
        }

        /// An open connection, then the peer's close frame: beginning the close, or
        /// (`ours_first`) crossing our close frame (4000 "bye"), which was not written.
        fn peers_close_frame(ours_first: bool, code: Option<u16>, reason: &str) -> Self {
            let mut t = Self::open(SessionConfig::default());
            if ours_first {
                t.s.close(Some(4000), "bye", t.now).unwrap();
                t.actions();
            }
            t.peer_close(code, reason);
            t
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.s.handle_timeout(self.now);
        }

        fn actions(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.s.poll_action()).collect()
        }

        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.s.poll_event()).collect()
        }
    }

    fn close_of(events: &[Event]) -> Option<(u16, String, bool)> {
        events.iter().find_map(|e| match e {
            Event::Close {
                code,
                reason,
                clean,
                ..
            } => Some((*code, reason.clone(), *clean)),
            _ => None,
        })
    }

    /// RFC 6455 §7.1.4: once both close frames were exchanged the close is clean,
    /// even when the server keeps TCP open; the client closes TCP itself after
    /// [`CLOSE_LINGER`] instead of waiting out the close timeout.
    #[test]
    fn both_close_frames_exchanged_is_clean_when_the_server_keeps_tcp_open() {
        let mut t = Sim::open(SessionConfig::default());
        t.s.close(Some(4000), "bye", t.now).unwrap();
        assert!(matches!(&t.actions()[..], [Action::Close { .. }]));
        t.input(TransportEvent::CloseWritten);
        t.advance(Duration::from_millis(300));
        t.peer_close(Some(4000), "ok");
        assert_eq!(t.s.poll_timeout(), Some(t.now + CLOSE_LINGER));
        t.advance(CLOSE_LINGER - Duration::from_millis(1));
        assert!(t.actions().is_empty() && t.events().is_empty());
        t.advance(Duration::from_millis(1));
        assert_eq!(t.actions(), [Action::Abort { conn: t.conn }]);
        let events = t.events();
        assert!(!events.iter().any(|e| matches!(e, Event::Error { .. })));
        assert_eq!(close_of(&events), Some((4000, "ok".into(), true)));
    }

    /// The linger starts once the answer is written: a message ahead of it may take longer
    /// than the linger to go out (a slow link), and the close is clean only once the
    /// answer went.
    #[test]
    fn a_close_the_peer_began_is_clean_after_the_linger_from_the_answers_write() {
        let mut t = Sim::open(SessionConfig::default());
        t.peer_close(Some(1001), "going");
        assert!(t.actions().is_empty(), "the driver answers the close frame");
        t.advance(Duration::from_secs(5));
        assert!(t.actions().is_empty() && t.events().is_empty());
        t.input(TransportEvent::CloseWritten);
        assert_eq!(t.s.poll_timeout(), Some(t.now + CLOSE_LINGER));
        t.advance(CLOSE_LINGER);
        assert_eq!(t.actions(), [Action::Abort { conn: t.conn }]);
        assert_eq!(close_of(&t.events()), Some((1001, "going".into(), true)));
    }

    /// A connection replaced while it closes goes on closing in the background, and ends
    /// like a current one: once both close frames went, the server has the linger, not the
    /// rest of the close timeout, to close TCP.
    #[test]
    fn a_replaced_connection_closing_in_the_background_gets_the_linger() {
        // Replaced while open (our close frame, 1000 "replaced", then the answer), or while
        // the peer's close frame waited for our answer.
        for peer_first in [false, true] {
            let mut t = Sim::open(SessionConfig::default());
            let old = t.conn;
            if peer_first {
                t.peer_close(Some(1001), "going");
            }
            t.s.connect(&ConnectOptions::new("ws://127.0.0.1:9/"), t.now)
                .unwrap();
            t.actions();
            t.events();
            t.advance(Duration::from_secs(1));
            t.s.handle(old, TransportEvent::CloseWritten, t.now);
            if !peer_first {
                let answer = PeerClose {
                    code: Some(1000),
                    reason: String::new(),
                };
                t.s.handle(old, TransportEvent::PeerClosed(answer), t.now);
            }
            let aborted = |actions: Vec<Action>| actions.contains(&Action::Abort { conn: old });
            t.advance(CLOSE_LINGER - Duration::from_millis(1));
            assert!(!aborted(t.actions()), "peer first: {peer_first}");
            t.advance(Duration::from_millis(1));
            assert!(aborted(t.actions()), "peer first: {peer_first}");
        }
    }

    /// The peer's close frame came and our answer (or our own close frame) never got out
    /// by the close timeout: the peer's code, not clean, after the timeout's error. It used
    /// to end clean after the linger whatever became of the answer.
    #[test]
    fn an_answer_never_written_ends_unclean_at_the_close_timeout() {
        for ours_first in [false, true] {
            let mut t = Sim::peers_close_frame(ours_first, Some(1001), "going");
            t.advance(Duration::from_secs(10) - Duration::from_millis(1));
            assert!(t.actions().is_empty() && t.events().is_empty());
            t.advance(Duration::from_millis(1));
            assert_eq!(t.actions(), [Action::Abort { conn: t.conn }]);
            let events = t.events();
            assert!(
                matches!(
                    &events[..],
                    [
                        Event::Error {
                            error: ConnectionError::CloseTimeout(_),
                            ..
                        },
                        Event::Close { .. }
                    ]
                ),
                "{events:?}"
            );
            assert_eq!(close_of(&events), Some((1001, "going".into(), false)));
        }
    }

    /// A transport failure after the peer's close frame: a driver reports `Closed` once both
    /// close frames went, so a failure means ours did not go out (the answer to the peer's,
    /// or ours, which the peer's crossed): the peer's code, not clean (RFC 6455 §7.1.4),
    /// after the error. A differential probe saw a close reported clean whose answer the
    /// socket had refused (ECONNRESET); a review, one whose own close frame waited behind
    /// a message when the peer's close and reset came.
    #[test]
    fn a_failure_before_our_answer_is_out_leaves_the_peers_close_unclean() {
        let failure =
            || TransportEvent::Error(TransportError::new(TransportErrorKind::Io, "reset"));
        // The peer began the close, or its close frame crossed ours.
        for ours_first in [false, true] {
            let mut t = Sim::peers_close_frame(ours_first, Some(1009), "too big");
            t.input(failure());
            let events = t.events();
            assert!(
                matches!(&events[..], [Event::Error { .. }, Event::Close { .. }]),
                "{events:?}"
            );
            assert_eq!(close_of(&events), Some((1009, "too big".into(), false)));
        }

        // Both went: the driver reports the end.
        let mut t = Sim::open(SessionConfig::default());
        t.s.close(Some(4000), "bye", t.now).unwrap();
        t.actions();
        t.peer_close(Some(4000), "ok");
        t.input(TransportEvent::Closed);
        assert_eq!(close_of(&t.events()), Some((4000, "ok".into(), true)));
    }

    #[test]
    fn the_linger_is_capped_by_the_close_timeout_and_a_missing_answer_is_unclean() {
        let short = Duration::from_millis(500);
        let mut t = Sim::open(SessionConfig::default().close_timeout(short));
        t.peer_close(None, "");
        t.input(TransportEvent::CloseWritten);
        t.advance(short);
        assert_eq!(t.actions(), [Action::Abort { conn: t.conn }]);
        assert_eq!(
            close_of(&t.events()),
            Some((NO_STATUS, String::new(), true))
        );

        // Without the peer's close frame the close timeout still reports an unclean close.
        let mut t = Sim::open(SessionConfig::default());
        t.s.close(None, "", t.now).unwrap();
        t.actions();
        t.advance(CLOSE_LINGER);
        assert!(t.events().is_empty(), "no linger before the answer");
        t.advance(Duration::from_secs(8));
        let events = t.events();
        assert!(matches!(
            events[0],
            Event::Error {
                error: ConnectionError::CloseTimeout(_),
                ..
            }
        ));
        assert_eq!(close_of(&events).map(|c| c.2), Some(false));
    }

    /// Item 5 of the edge cases: an invalid code from the peer ends like every other
    /// protocol failure: an error event, a close frame 1002 sent, close 1002 not clean.
    #[test]
    fn an_invalid_peer_close_code_is_a_protocol_failure() {
        for code in [
            0,
            1,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            2999,
            5000,
            u16::MAX,
        ] {
            let mut t = Sim::open(SessionConfig::default());
            t.peer_close(Some(code), "x");
            let actions = t.actions();
            assert!(
                matches!(&actions[..], [Action::Close { frame, .. }] if frame.code() == PROTOCOL_ERROR),
                "{code}: {actions:?}"
            );
            let events = t.events();
            assert!(
                matches!(&events[0], Event::Error { error: ConnectionError::Transport(e), .. }
                    if e.kind == TransportErrorKind::Protocol && e.message.contains(&code.to_string())),
                "{code}: {events:?}"
            );
            let (got, _, clean) = close_of(&events).unwrap();
            assert_eq!((got, clean), (PROTOCOL_ERROR, false), "{code}");
        }
    }

    /// Item 1: 1014 (Bad Gateway, RFC 6455 §7.4.2, IANA-registered) is reported as received
    /// and retried when the reconnect policy lists it.
    #[test]
    fn close_code_1014_is_reported_and_retried_when_configured() {
        assert!(is_valid_from_peer(1014));
        for (codes, retried) in [(vec![1014], true), (vec![1001], false)] {
            let policy = ReconnectPolicy::default().retry_close_codes(codes);
            let mut t = Sim::open(SessionConfig::default().reconnect(policy));
            t.peer_close(Some(1014), "bad gateway");
            t.input(TransportEvent::Closed);
            let events = t.events();
            assert_eq!(close_of(&events), Some((1014, "bad gateway".into(), true)));
            assert_eq!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::Reconnecting { .. })),
                retried
            );
        }
    }
}
