//! # wxsocket-fuzz
//!
//! What the cargo-fuzz targets check, as plain functions over `&[u8]` so the committed
//! corpus is replayed by `cargo test` (`tests/replay.rs`) and the targets
//! (`fuzz_targets/*.rs`, built by `cargo fuzz` with the `libfuzzer` feature) stay one line.
//!
//! - [`session`]: arbitrary sequences of application calls, transport inputs (any
//!   `ConnId`, any order, any state) and time jumps into a [`Session`], with reconnection
//!   on or off; after every step the session's invariants are checked.
//! - [`connect_options`]: arbitrary URLs, headers, protocols, data and permessage-deflate
//!   offers into option validation; every input is accepted or rejected with an error
//!   naming its option, an accepted request never carries CR/LF or a forbidden header, and
//!   an accepted deflate offer is one our server-side acceptance and the client agree on.
//! - [`pool`]: several connections at once in a [`Pool`].
//! - [`inflate()`]: the permessage-deflate read path under tungstenite, on well-formed
//!   compressed conversations followed by arbitrary bytes (see [`mod@inflate`]).
//!
//! ```
//! // Any bytes are a valid input; a violated invariant panics.
//! wxsocket_fuzz::session(b"any bytes at all");
//! wxsocket_fuzz::connect_options(&[0xff; 64]);
//! wxsocket_fuzz::pool(&[]);
//! wxsocket_fuzz::inflate(b"\x01\x02compressed or not");
//! ```
#![forbid(unsafe_code)]

pub mod inflate;
pub use inflate::inflate;

use arbitrary::{Arbitrary, Unstructured};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use wxsocket_core::*;

/// One step of a session or pool run.
#[derive(Debug, Arbitrary)]
enum Op {
    Connect {
        valid: bool,
    },
    Send {
        len: u8,
        text: bool,
        conn: u8,
    },
    Close {
        code: u16,
        reason_len: u8,
        conn: u8,
    },
    Transport {
        target: u8,
        input: Input,
    },
    Advance {
        ms: u16,
    },
    /// A call whose `now` is earlier than one already seen.
    StaleSend {
        back_ms: u16,
        len: u8,
    },
}

#[derive(Debug, Arbitrary)]
enum Input {
    Opened { protocol: u8 },
    ConnectFailed { kind: u8 },
    Message { len: u8 },
    Ping,
    Pong,
    PeerClosed { code: Option<u16> },
    Written { oldest: bool, raw: u8 },
    Error { kind: u8 },
    Closed,
}

#[derive(Debug, Arbitrary)]
struct Setup {
    policy: u8,
    keepalive: bool,
    reconnect: Option<(bool, Option<u8>, u64)>,
    queue_messages: u8,
    queue_bytes: u8,
    extra_buffer: u8,
}

impl Setup {
    fn config(&self) -> SessionConfig {
        let policy = match self.policy % 3 {
            0 => CloseBeforeOpen::Abort,
            1 => CloseBeforeOpen::AfterOpen,
            _ => CloseBeforeOpen::Ignore,
        };
        let queued = usize::from(self.queue_bytes).max(1);
        let mut c = SessionConfig::default()
            .close_before_open(policy)
            .queue_bounds(usize::from(self.queue_messages % 8).max(1), queued)
            .max_buffered_bytes(queued + usize::from(self.extra_buffer))
            .max_message_size(200)
            .handshake_timeout(Duration::from_millis(500))
            .close_timeout(Duration::from_millis(300))
            .pool_limit(3);
        if self.keepalive {
            c = c.keepalive(Duration::from_millis(200), Duration::from_millis(100));
        }
        if let Some((carry, max, seed)) = self.reconnect {
            c = c.reconnect(
                ReconnectPolicy::default()
                    .backoff(Duration::from_millis(20), Duration::from_millis(300))
                    .max_attempts(max.map(|m| u32::from(m % 5) + 1))
                    .carry_queue(carry)
                    .seed(seed),
            );
        }
        c
    }
}

fn kind(k: u8) -> TransportErrorKind {
    match k % 8 {
        0 => TransportErrorKind::Connect,
        1 => TransportErrorKind::Tls,
        2 => TransportErrorKind::HttpStatus(if k & 0x80 == 0 { 403 } else { 503 }),
        3 => TransportErrorKind::Protocol,
        4 => TransportErrorKind::InvalidUtf8,
        5 => TransportErrorKind::MessageTooBig,
        6 => TransportErrorKind::Negotiation,
        _ => TransportErrorKind::Io,
    }
}

/// The session's invariants, checked on everything a session or pool emits.
#[derive(Default)]
struct Invariants {
    config: SessionConfig,
    issued: BTreeMap<SendId, ConnId>,
    completed: BTreeSet<SendId>,
    /// Per connection: (saw Connecting, saw Open, saw Close, announced by Reconnecting).
    conns: BTreeMap<ConnId, [bool; 4]>,
    /// For a single session: the last connection an event was about.
    last_conn: Option<ConnId>,
    /// Send actions carried out but not confirmed, per connection (for `Written`).
    unconfirmed: BTreeMap<ConnId, Vec<SendId>>,
    earliest_dial: BTreeMap<ConnId, Instant>,
    dials: BTreeSet<ConnId>,
}

impl Invariants {
    fn action(&mut self, action: Action, now: Instant) {
        match action {
            Action::Dial { conn, request } => {
                assert!(self.dials.insert(conn), "{conn} dialled twice");
                if let Some(t) = self.earliest_dial.get(&conn) {
                    assert!(now >= *t, "{conn} dialled during its backoff");
                }
                assert!(matches!(request.url.scheme(), "ws" | "wss"));
            }
            Action::Send { conn, id, message } => {
                let issued = self.issued[&id];
                assert!(
                    self.carried(issued, conn),
                    "send {id} of {issued} written on {conn}"
                );
                assert!(message.len() <= self.config.max_message_size);
                let list = self.unconfirmed.entry(conn).or_default();
                if let Some(last) = list.last() {
                    assert!(*last < id, "sends out of order on {conn}");
                }
                list.push(id);
            }
            Action::Close { frame, .. } => {
                assert!(frame.reason().len() <= close::MAX_REASON_BYTES);
            }
            _ => {}
        }
    }

    fn event(&mut self, event: Event, now: Instant, single: bool) {
        let conn = event.conn();
        if single {
            if let Some(last) = self.last_conn {
                assert!(last <= conn, "an event of {conn} after one of {last}");
            }
            self.last_conn = Some(conn);
        }
        let seen = self.conns.entry(conn).or_default();
        assert!(!seen[2], "{event:?} after the close of {conn}");
        match &event {
            Event::Reconnecting { attempt, delay, .. } => {
                assert!(!seen[0] && !seen[3]);
                seen[3] = true;
                let policy = self.config.reconnect.as_ref().expect("a policy");
                assert!(*delay <= policy.ceiling(*attempt));
                assert!(policy.max_attempts.is_none_or(|m| *attempt <= m));
                self.earliest_dial.insert(conn, now + *delay);
            }
            Event::Connecting { .. } => {
                assert!(!seen[0]);
                seen[0] = true;
            }
            Event::Open { .. } => {
                assert!(seen[0] && !seen[1]);
                seen[1] = true;
            }
            Event::Message { message, .. } => {
                assert!(seen[1]);
                if let Message::Text(t) = message {
                    assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                }
            }
            Event::Error { .. } => assert!(seen[0]),
            Event::SendCompleted { id, .. } | Event::SendFailed { id, .. } => {
                let issued = *self
                    .issued
                    .get(id)
                    .expect("completion of an id never issued");
                assert!(
                    self.carried(issued, conn),
                    "{id} of {issued} completed on {conn}"
                );
                assert!(self.completed.insert(*id), "{id} completed twice");
            }
            Event::Close { code, reason, .. } => {
                assert!(*code >= 1000 && *code < 5000, "close code {code}");
                assert!(reason.len() <= 200);
                seen[2] = true;
            }
            _ => {}
        }
    }

    fn finish(&self) {
        let missing: Vec<_> = self
            .issued
            .keys()
            .filter(|id| !self.completed.contains(id))
            .collect();
        assert!(missing.is_empty(), "sends never completed: {missing:?}");
        for (conn, seen) in &self.conns {
            assert!(seen[2], "{conn} never got its close event");
            assert!(seen[0] || seen[3], "{conn} lacks its connecting event");
        }
    }

    /// Whether a send accepted on `issued` may be written or completed on `conn`: the
    /// same connection, or a later attempt it was carried to (`carry_queue`).
    fn carried(&self, issued: ConnId, conn: ConnId) -> bool {
        let carry = self
            .config
            .reconnect
            .as_ref()
            .is_some_and(|r| r.carry_queue);
        issued == conn || (carry && issued < conn)
    }
}

/// Feeds one transport input; returns the event fed.
fn transport_event(input: &Input, conn: ConnId, inv: &mut Invariants) -> TransportEvent {
    match input {
        Input::Opened { protocol } => TransportEvent::Opened(Box::new(Handshake {
            protocol: match protocol % 3 {
                0 => None,
                1 => Some("p".into()),
                _ => Some("other".into()),
            },
            ..Handshake::default()
        })),
        Input::ConnectFailed { kind: k } => {
            TransportEvent::ConnectFailed(TransportError::new(kind(*k), "fuzz"))
        }
        Input::Message { len } => TransportEvent::Message(Message::binary(bytes_of(*len))),
        Input::Ping => TransportEvent::Ping(Default::default()),
        Input::Pong => TransportEvent::Pong(Default::default()),
        Input::PeerClosed { code } => TransportEvent::PeerClosed(PeerClose {
            code: *code,
            reason: "fuzz".into(),
        }),
        Input::Written { oldest, raw } => {
            let list = inv.unconfirmed.entry(conn).or_default();
            let id = if *oldest && !list.is_empty() {
                list.remove(0)
            } else {
                SendId::from_raw(u64::from(*raw))
            };
            TransportEvent::SendWritten(id)
        }
        Input::Error { kind: k } => TransportEvent::Error(TransportError::new(kind(*k), "fuzz")),
        Input::Closed => TransportEvent::Closed,
    }
}

fn bytes_of(len: u8) -> Vec<u8> {
    vec![b'x'; usize::from(len)]
}

fn message(len: u8, text: bool) -> Message {
    if text {
        Message::text("é".repeat(usize::from(len / 2)))
    } else {
        Message::binary(bytes_of(len))
    }
}

fn close_args(code: u16, reason_len: u8) -> (Option<u16>, String) {
    let code = if code.is_multiple_of(4) {
        None
    } else {
        Some(code)
    };
    (code, "r".repeat(usize::from(reason_len)))
}

/// Winds a run down: closes, fails outstanding dials for good, lets every timer run out.
fn wind_down(
    now: &mut Instant,
    conns: impl Fn() -> Vec<ConnId>,
    mut step: impl FnMut(ConnId, Option<TransportEvent>, Instant),
    mut tick: impl FnMut(Instant),
) {
    let gone = TransportError::new(TransportErrorKind::HttpStatus(404), "gone");
    for _ in 0..4 {
        for conn in conns() {
            step(conn, None, *now);
            step(
                conn,
                Some(TransportEvent::ConnectFailed(gone.clone())),
                *now,
            );
            step(conn, Some(TransportEvent::Closed), *now);
        }
        *now += Duration::from_secs(60);
        tick(*now);
    }
}

/// The `session` target. Panics when an invariant breaks.
pub fn session(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let config = setup.config();
    let mut s = Session::new(config.clone()).expect("a valid config");
    let mut inv = Invariants {
        config: config.clone(),
        ..Invariants::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut last_now = start;
    let mut dialled: Vec<ConnId> = Vec::new();
    let drain = |s: &mut Session, inv: &mut Invariants, now: Instant, dialled: &mut Vec<ConnId>| {
        while let Some(a) = s.poll_action() {
            if let Action::Dial { conn, .. } = &a {
                dialled.push(*conn);
            }
            inv.action(a, now);
        }
        while let Some(e) = s.poll_event() {
            inv.event(e, now, true);
        }
        assert!(s.buffered_amount() <= config.max_buffered_bytes);
        if s.state() == ReadyState::Connecting {
            assert!(s.pending_sends() <= config.max_queued_messages);
            assert!(s.buffered_amount() <= config.max_queued_bytes);
        }
        if let Some(t) = s.poll_timeout() {
            assert!(t > now, "a deadline not after the latest now");
        }
    };
    while let (false, Ok(op)) = (u.is_empty(), Op::arbitrary(&mut u)) {
        match op {
            Op::Connect { valid } => {
                let url = if valid {
                    "ws://127.0.0.1:1/p"
                } else {
                    "ftp://x"
                };
                let r = s.connect(&ConnectOptions::new(url).protocol("p"), now);
                assert_eq!(r.is_ok(), valid);
            }
            Op::Send { len, text, .. } => {
                let m = message(len, text);
                let n = m.len();
                match s.send(m, now) {
                    Ok(id) => {
                        inv.issued.insert(id, s.current().expect("a connection"));
                    }
                    Err(e) => assert_eq!(e.into_message().len(), n, "message handed back"),
                }
            }
            Op::StaleSend { back_ms, len } => {
                let at = now
                    .checked_sub(Duration::from_millis(u64::from(back_ms)))
                    .unwrap_or(start)
                    .max(start);
                if let Ok(id) = s.send(message(len, false), at) {
                    inv.issued.insert(id, s.current().expect("a connection"));
                }
            }
            Op::Close {
                code, reason_len, ..
            } => {
                let (code, reason) = close_args(code, reason_len);
                let before = s.state();
                if s.close(code, &reason, now).is_err() {
                    assert_eq!(s.state(), before, "a refused close changes nothing");
                }
            }
            Op::Transport { target, input } => {
                let conn = match target % 4 {
                    0 | 1 => s.current().or(dialled.last().copied()),
                    2 => dialled.iter().rev().nth(1).copied(),
                    _ => Some(ConnId::from_raw(u64::from(target))),
                };
                let Some(conn) = conn else { continue };
                let event = transport_event(&input, conn, &mut inv);
                s.handle(conn, event, now);
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms));
                s.handle_timeout(now);
            }
        }
        last_now = last_now.max(now);
        drain(&mut s, &mut inv, last_now, &mut dialled);
    }
    let s = std::cell::RefCell::new(s);
    wind_down(
        &mut now,
        || s.borrow().current().into_iter().collect(),
        |conn, e, t| match e {
            None => {
                let _ = s.borrow_mut().close(None, "", t);
            }
            Some(e) => s.borrow_mut().handle(conn, e, t),
        },
        |t| s.borrow_mut().handle_timeout(t),
    );
    let mut s = s.into_inner();
    drain(&mut s, &mut inv, now, &mut dialled);
    assert_eq!(s.poll_timeout(), None, "a timer left after winding down");
    inv.finish();
}

/// The `pool` target: several connections at once. Panics when an invariant breaks.
pub fn pool(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let config = setup.config();
    let mut p = Pool::new(config.clone()).expect("a valid config");
    let mut inv = Invariants {
        config: config.clone(),
        ..Invariants::default()
    };
    let mut now = Instant::now();
    let mut conns: Vec<ConnId> = Vec::new();
    let pick =
        |conns: &[ConnId], i: u8| (!conns.is_empty()).then(|| conns[usize::from(i) % conns.len()]);
    let drain = |p: &mut Pool, inv: &mut Invariants, now: Instant| {
        while let Some(a) = p.poll_action() {
            inv.action(a, now);
        }
        while let Some(e) = p.poll_event() {
            inv.event(e, now, false);
        }
        assert!(
            p.live() <= config.pool_limit,
            "more live connections than the limit"
        );
        if let Some(t) = p.poll_timeout() {
            assert!(t > now);
        }
    };
    while let (false, Ok(op)) = (u.is_empty(), Op::arbitrary(&mut u)) {
        match op {
            Op::Connect { valid } => {
                let url = if valid {
                    "ws://127.0.0.1:1/p"
                } else {
                    "ftp://x"
                };
                let live = p.live();
                match p.connect(&ConnectOptions::new(url).protocol("p"), now) {
                    Ok(c) => conns.push(c),
                    Err(ConnectError::TooManyConnections { limit }) => {
                        assert!(valid && live >= limit);
                    }
                    Err(_) => assert!(!valid),
                }
            }
            Op::Send { len, text, conn } => {
                if let Some(c) = pick(&conns, conn)
                    && let Ok(id) = p.send(c, message(len, text), now)
                {
                    let on = p.current(c).expect("a task that accepted a send");
                    inv.issued.insert(id, on);
                }
            }
            Op::Close {
                code,
                reason_len,
                conn,
            } => {
                if let Some(c) = pick(&conns, conn) {
                    let (code, reason) = close_args(code, reason_len);
                    let _ = p.close(c, code, &reason, now);
                }
            }
            Op::Transport { target, input } => {
                let c = pick(&conns, target).unwrap_or(ConnId::from_raw(99));
                let event = transport_event(&input, c, &mut inv);
                p.handle(c, event, now);
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms));
                p.handle_timeout(now);
            }
            Op::StaleSend { .. } => {}
        }
        drain(&mut p, &mut inv, now);
    }
    let p = std::cell::RefCell::new(p);
    let all = conns.clone();
    wind_down(
        &mut now,
        || all.clone(),
        |conn, e, t| match e {
            None => {
                let _ = p.borrow_mut().close(conn, None, "", t);
            }
            Some(e) => p.borrow_mut().handle(conn, e, t),
        },
        |t| p.borrow_mut().handle_timeout(t),
    );
    let mut p = p.into_inner();
    drain(&mut p, &mut inv, now);
    assert_eq!(p.poll_timeout(), None);
    assert_eq!(p.live(), 0);
    inv.finish();
}

#[derive(Debug, Arbitrary)]
struct OptionsCase {
    scheme: u8,
    host: String,
    rest: String,
    raw_url: Option<String>,
    data: Vec<(String, String)>,
    header: Vec<(String, String)>,
    protocols: Vec<String>,
    method: Option<String>,
    timeout_ms: Option<u16>,
    require_tls: bool,
    allowed_hosts: Vec<String>,
    /// perMessageDeflate: server / client no context takeover, server and client window
    /// bits, level.
    deflate: Option<(bool, bool, Option<u8>, u8, u32)>,
}

/// Headers an accepted request may never carry (the handshake's own, and `Referer`).
const FORBIDDEN: &[&str] = &[
    "referer",
    "host",
    "upgrade",
    "connection",
    "content-length",
    "transfer-encoding",
];

/// The `connect_options` target: validation never panics; an accepted request is clean.
pub fn connect_options(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(case) = OptionsCase::arbitrary(&mut u) else {
        return;
    };
    let url = case.raw_url.clone().unwrap_or_else(|| {
        let scheme = ["ws", "wss", "http", "https", "ftp"][usize::from(case.scheme % 5)];
        format!("{scheme}://{}/{}", case.host, case.rest)
    });
    let mut opts = ConnectOptions::new(url);
    opts.data = case.data;
    opts.header = case.header;
    opts.protocols = case.protocols;
    opts.method = case.method;
    opts.timeout = case
        .timeout_ms
        .map(|ms| Duration::from_millis(u64::from(ms)));
    opts.require_tls = case.require_tls;
    opts.allowed_hosts = case.allowed_hosts;
    if let Some((server_reset, client_reset, server_bits, client_bits, level)) = case.deflate {
        opts = opts.deflate(
            DeflateOptions::default()
                .server_no_context_takeover(server_reset)
                .client_no_context_takeover(client_reset)
                .server_max_window_bits(server_bits)
                .client_max_window_bits(client_bits)
                .level(level % 16),
        );
    }
    match opts.validate() {
        Err(e) => {
            // Every rejection names its option first.
            let text = e.to_string();
            let field = text.split(':').next().unwrap_or_default();
            assert!(
                [
                    "url",
                    "header",
                    "protocols",
                    "method",
                    "timeout",
                    "perMessageDeflate"
                ]
                .contains(&field),
                "error without an option name: {text}"
            );
        }
        Ok(request) => {
            assert!(matches!(request.url.scheme(), "ws" | "wss"));
            assert!(!request.url.as_str().contains(['\r', '\n', ' ']));
            assert!(request.url.fragment().is_none());
            if opts.require_tls {
                assert!(request.is_tls());
            }
            for (name, value) in &request.headers {
                let n = name.as_str();
                assert!(
                    !FORBIDDEN.contains(&n) && !n.starts_with("sec-websocket-"),
                    "forbidden header {n}"
                );
                assert!(
                    !value
                        .as_bytes()
                        .iter()
                        .any(|b| matches!(b, b'\r' | b'\n' | 0)),
                    "CR/LF in {n}"
                );
            }
            for (i, p) in request.protocols.iter().enumerate() {
                assert!(
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
                );
                assert!(!request.protocols[..i].contains(p));
            }
            assert!(request.timeout.is_none_or(|t| !t.is_zero()));
            if let Some(offer) = &request.per_message_deflate {
                // A valid offer: a clean header, and whatever a server accepts of it, the
                // client agrees to.
                assert!((8..=15).contains(&offer.client_max_window_bits));
                assert!(
                    offer
                        .server_max_window_bits
                        .is_none_or(|b| (8..=15).contains(&b))
                );
                assert!(offer.level <= 9);
                let header = offer.offer_header();
                assert!(header.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
                let (server, answer) =
                    deflate::accept_offer(&header).expect("a server accepts our own offer");
                assert_eq!(offer.negotiate(&answer), Ok(server), "{header} / {answer}");
            }
        }
    }
}
