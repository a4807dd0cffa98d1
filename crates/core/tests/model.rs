//! Model-based property test: a small reference model and the real session are fed the same
//! generated calls, transport inputs (current, stale and unknown `ConnId`s, any kind in any
//! state) and time jumps (forwards and backwards). After every step the states and call
//! results must agree and the session's invariants must hold.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use wxsocket_core::*;

const MAX_MSGS: usize = 4;
const MAX_QUEUED: usize = 40;
const MAX_BUFFERED: usize = 60;
const HS: Duration = Duration::from_millis(500);
const CT: Duration = Duration::from_millis(300);
const KA: Duration = Duration::from_millis(200);
const KT: Duration = Duration::from_millis(100);
const RECONNECT_BASE: Duration = Duration::from_millis(50);
const RECONNECT_CAP: Duration = Duration::from_millis(400);

/// Whether one step may take the session from `before` to `after`: no change, an edge of
/// the state table, or two edges (a step can end a connection and start the next one, or
/// open and begin the close asked for before open).
fn step_allowed(before: ReadyState, after: ReadyState) -> bool {
    use wxsocket_core::graph::is_allowed;
    before == after
        || is_allowed(before, after)
        || ReadyState::ALL
            .iter()
            .any(|&mid| is_allowed(before, mid) && is_allowed(mid, after))
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Current,
    Stale,
    Unknown,
}

#[derive(Debug, Clone)]
enum Input {
    Opened {
        offered: bool,
    },
    ConnectFailed(TransportErrorKind),
    Message,
    Pong,
    PeerClosed(Option<u16>),
    /// Write-confirm the oldest in-flight send (`true`) or a random id.
    Written(bool, u64),
    Error(TransportErrorKind),
    Closed,
}

#[derive(Debug, Clone)]
enum Op {
    Connect {
        valid: bool,
    },
    Send {
        len: usize,
    },
    Close {
        code: u16,
    },
    Transport(Target, Input),
    Advance(u64),
    /// A call made with a `now` earlier than one already seen.
    StaleSend {
        back: u64,
        len: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(TransportErrorKind::Io),
        Just(TransportErrorKind::Protocol),
        Just(TransportErrorKind::InvalidUtf8),
        Just(TransportErrorKind::MessageTooBig),
    ];
    let input = prop_oneof![
        4 => any::<bool>().prop_map(|offered| Input::Opened { offered }),
        1 => prop_oneof![
            Just(TransportErrorKind::Connect),
            Just(TransportErrorKind::HttpStatus(403)),
            Just(TransportErrorKind::HttpStatus(503)),
            Just(TransportErrorKind::Negotiation),
        ].prop_map(Input::ConnectFailed),
        3 => Just(Input::Message),
        1 => Just(Input::Pong),
        // 1001 and 1012 are retried by the default reconnect policy; 1000 and 4001 not.
        2 => prop::option::of(prop_oneof![Just(1000u16), Just(4001), Just(1001), Just(1012)])
            .prop_map(Input::PeerClosed),
        6 => (any::<bool>(), 0..40u64).prop_map(|(o, id)| Input::Written(o, id)),
        1 => kind.prop_map(Input::Error),
        2 => Just(Input::Closed),
    ];
    let target = prop_oneof![8 => Just(Target::Current), 1 => Just(Target::Stale), 1 => Just(Target::Unknown)];
    prop_oneof![
        3 => Just(Op::Connect { valid: true }).boxed(),
        1 => Just(Op::Connect { valid: false }).boxed(),
        8 => (0..25usize).prop_map(|len| Op::Send { len }).boxed(),
        2 => prop_oneof![Just(1000u16), Just(4000), Just(1001)].prop_map(|code| Op::Close { code }).boxed(),
        10 => (target, input).prop_map(|(t, i)| Op::Transport(t, i)).boxed(),
        4 => (0..700u64).prop_map(Op::Advance).boxed(),
        1 => (1..500u64, 0..10usize).prop_map(|(back, len)| Op::StaleSend { back, len }).boxed(),
    ]
}

/// The reference model: what state the session must be in and what each call must return.
#[derive(Debug)]
struct Model {
    policy: CloseBeforeOpen,
    keepalive: bool,
    state: ReadyState,
    conn: u64,
    /// Deadline of the current state's timer (handshake, keepalive or close).
    deadline: Option<Instant>,
    awaiting_pong: bool,
    close_pending: bool,
    queued: Vec<(SendId, usize)>,
    in_flight: Vec<(SendId, usize)>,
    now: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum SendOutcome {
    Ok,
    NotConnected,
    Closing,
    QueueFull,
    BufferFull,
}

impl Model {
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let Some(d) = self.deadline else { return };
        if d > self.now {
            return;
        }
        match self.state {
            ReadyState::Connecting | ReadyState::Closing => self.end(),
            ReadyState::Open if self.awaiting_pong => self.end(),
            ReadyState::Open => {
                self.awaiting_pong = true;
                self.deadline = Some(self.now + KT);
            }
            _ => unreachable!(),
        }
    }

    fn end(&mut self) {
        self.state = ReadyState::Closed;
        self.deadline = None;
        self.queued.clear();
        self.in_flight.clear();
        self.close_pending = false;
    }

    fn touch(&mut self) {
        if self.keepalive {
            self.deadline = Some(self.now + KA);
            self.awaiting_pong = false;
        }
    }

    fn connect(&mut self, conn: u64) {
        self.end();
        self.conn = conn;
        self.state = ReadyState::Connecting;
        self.deadline = Some(self.now + HS);
    }

    fn send(&self, len: usize) -> SendOutcome {
        let bytes = |q: &[(SendId, usize)]| q.iter().map(|x| x.1).sum::<usize>();
        match self.state {
            ReadyState::Idle | ReadyState::Closed => SendOutcome::NotConnected,
            ReadyState::Closing => SendOutcome::Closing,
            ReadyState::Connecting if self.close_pending => SendOutcome::Closing,
            ReadyState::Connecting
                if self.queued.len() >= MAX_MSGS || bytes(&self.queued) + len > MAX_QUEUED =>
            {
                SendOutcome::QueueFull
            }
            ReadyState::Open if bytes(&self.in_flight) + len > MAX_BUFFERED => {
                SendOutcome::BufferFull
            }
            _ => SendOutcome::Ok,
        }
    }

    fn begin_close(&mut self) {
        self.state = ReadyState::Closing;
        self.deadline = Some(self.now + CT);
    }

    fn close(&mut self) -> Result<(), CloseError> {
        match self.state {
            ReadyState::Idle | ReadyState::Closed => Err(CloseError::NotConnected),
            ReadyState::Closing => Ok(()),
            ReadyState::Connecting => match self.policy {
                CloseBeforeOpen::Ignore => Err(CloseError::NotOpenYet),
                CloseBeforeOpen::AfterOpen => {
                    self.close_pending = true;
                    Ok(())
                }
                _ => {
                    self.end();
                    Ok(())
                }
            },
            ReadyState::Open => {
                self.begin_close();
                Ok(())
            }
            _ => unreachable!(),
        }
    }

    fn input(&mut self, input: &Input, written: Option<SendId>) {
        use ReadyState::*;
        match (self.state, input) {
            (Connecting, Input::Opened { offered: true }) => {
                self.state = Open;
                self.awaiting_pong = false;
                self.deadline = None;
                self.touch();
                self.in_flight = std::mem::take(&mut self.queued);
                if self.close_pending {
                    self.close_pending = false;
                    self.begin_close();
                }
            }
            (
                Connecting,
                Input::Opened { offered: false }
                | Input::ConnectFailed(_)
                | Input::Error(_)
                | Input::Closed,
            ) => self.end(),
            (Open, Input::Message | Input::Pong) => self.touch(),
            (Open | Closing, Input::Written(..)) => {
                if let Some(id) = written {
                    self.in_flight.retain(|x| x.0 != id);
                }
            }
            (Open, Input::PeerClosed(_)) => self.begin_close(),
            (Open | Closing, Input::Error(_) | Input::Closed) => self.end(),
            _ => {}
        }
    }

    fn buffered(&self) -> usize {
        match self.state {
            ReadyState::Connecting => self.queued.iter().map(|x| x.1).sum(),
            ReadyState::Open | ReadyState::Closing => self.in_flight.iter().map(|x| x.1).sum(),
            _ => 0,
        }
    }
}

/// What the real session has told the world so far, checked as it goes.
#[derive(Default)]
struct Observed {
    /// With reconnection on, queued sends carry over to later connections.
    carry: bool,
    policy: Option<ReconnectPolicy>,
    /// Connections announced by `Reconnecting`: (attempt, earliest dial time).
    backoffs: BTreeMap<ConnId, (u32, Instant)>,
    issued: BTreeMap<SendId, ConnId>,
    completed: BTreeSet<SendId>,
    /// Per connection: saw Connecting, saw Open, saw Close.
    conns: BTreeMap<ConnId, (bool, bool, bool)>,
    last_event_conn: Option<ConnId>,
    last_send_action: BTreeMap<ConnId, SendId>,
    /// Send actions carried out and not yet confirmed, per connection, in order.
    written_queue: BTreeMap<ConnId, Vec<SendId>>,
    /// The number of the last message delivered (messages are fed numbered, in order).
    last_message: Option<u64>,
}

impl Observed {
    fn drain(&mut self, s: &mut Session, now: Instant) -> Result<(), TestCaseError> {
        while let Some(a) = s.poll_action() {
            if let Action::Dial { conn, .. } = &a {
                prop_assert!(
                    !(s.is_backing_off() && s.current() == Some(*conn)),
                    "dial during a backoff"
                );
                if let Some((_, earliest)) = self.backoffs.get(conn) {
                    prop_assert!(
                        now >= *earliest,
                        "{conn} dialled before its backoff was over"
                    );
                }
            }
            if let Action::Send { conn, id, .. } = a {
                if let Some(prev) = self.last_send_action.insert(conn, id) {
                    prop_assert!(prev < id, "sends of {conn} out of order: {prev} then {id}");
                }
                let issued = *self.issued.get(&id).expect("an issued id");
                prop_assert!(issued == conn || (self.carry && issued < conn));
                self.written_queue.entry(conn).or_default().push(id);
            }
        }
        while let Some(e) = s.poll_event() {
            let conn = e.conn();
            if let Some(last) = self.last_event_conn {
                prop_assert!(last <= conn, "event of {conn} after an event of {last}");
            }
            self.last_event_conn = Some(conn);
            let entry = self.conns.entry(conn).or_default();
            prop_assert!(!entry.2, "event after close for {conn}: {e:?}");
            match &e {
                Event::Reconnecting { attempt, delay, .. } => {
                    prop_assert!(!entry.0, "reconnecting after connecting");
                    let policy = self.policy.as_ref().expect("reconnecting without a policy");
                    // min(cap, base · 2^(attempt-1)), computed here rather than trusted.
                    let doubling = 1u32 << (attempt - 1).min(16);
                    let ceiling = (RECONNECT_BASE * doubling).min(RECONNECT_CAP);
                    prop_assert!(*delay <= ceiling, "delay {delay:?} over {ceiling:?}");
                    prop_assert_eq!(policy.ceiling(*attempt), ceiling);
                    prop_assert!(policy.max_attempts.is_none_or(|m| *attempt <= m));
                    prop_assert!(
                        self.backoffs
                            .insert(conn, (*attempt, now + *delay))
                            .is_none()
                    );
                }
                Event::Connecting { .. } => {
                    prop_assert!(!entry.0);
                    entry.0 = true;
                }
                Event::Open { .. } => {
                    prop_assert!(entry.0 && !entry.1);
                    entry.1 = true;
                }
                Event::Message { message, .. } => {
                    prop_assert!(entry.1);
                    let n: u64 = std::str::from_utf8(message.as_bytes())
                        .expect("text")
                        .parse()
                        .expect("numbered");
                    prop_assert!(
                        self.last_message.is_none_or(|last| last < n),
                        "message {n} delivered after {:?}",
                        self.last_message
                    );
                    self.last_message = Some(n);
                }
                Event::Close { .. } => entry.2 = true,
                Event::SendCompleted { id, .. } | Event::SendFailed { id, .. } => {
                    let issued = *self.issued.get(id).expect("an issued id");
                    prop_assert!(
                        issued == conn || (self.carry && issued < conn),
                        "completion on the wrong connection"
                    );
                    prop_assert!(self.completed.insert(*id), "{id} completed twice");
                }
                _ if self.backoffs.contains_key(&conn) && !entry.0 => {
                    prop_assert!(false, "{e:?} before connecting")
                }
                _ => prop_assert!(entry.0),
            }
        }
        Ok(())
    }
}

fn config(
    policy: CloseBeforeOpen,
    keepalive: bool,
    reconnect: Option<ReconnectPolicy>,
) -> SessionConfig {
    let mut c = SessionConfig::default()
        .close_before_open(policy)
        .queue_bounds(MAX_MSGS, MAX_QUEUED)
        .max_buffered_bytes(MAX_BUFFERED)
        .handshake_timeout(HS)
        .close_timeout(CT);
    if keepalive {
        c = c.keepalive(KA, KT);
    }
    if let Some(r) = reconnect {
        c = c.reconnect(r);
    }
    c
}

/// Runs `ops`. Without a reconnect policy the model predicts every state and call result;
/// with one, the invariants are checked (the model does not know reconnection).
fn run(
    policy: CloseBeforeOpen,
    keepalive: bool,
    reconnect: Option<ReconnectPolicy>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let modelled = reconnect.is_none();
    let start = Instant::now();
    let mut s = Session::new(config(policy, keepalive, reconnect.clone())).unwrap();
    let mut m = Model {
        policy,
        keepalive,
        state: ReadyState::Idle,
        conn: 0,
        deadline: None,
        awaiting_pong: false,
        close_pending: false,
        queued: Vec::new(),
        in_flight: Vec::new(),
        now: start,
    };
    let mut obs = Observed {
        carry: reconnect.as_ref().is_some_and(|r| r.carry_queue),
        policy: reconnect,
        ..Observed::default()
    };
    let mut now = start;
    let mut conns: Vec<ConnId> = Vec::new();
    let mut fed = 0u64;
    for op in ops {
        let before = s.state();
        match op {
            Op::Connect { valid } => {
                let url = if valid {
                    "ws://127.0.0.1:1/p"
                } else {
                    "ftp://nope"
                };
                let r = s.connect(&ConnectOptions::new(url).protocol("p"), now);
                prop_assert_eq!(r.is_ok(), valid);
                if let Ok(c) = r {
                    m.advance(now);
                    m.connect(c.get());
                    conns.push(c);
                }
            }
            Op::Send { len } | Op::StaleSend { len, .. } => {
                let at = match op {
                    Op::StaleSend { back, .. } => now
                        .checked_sub(Duration::from_millis(back))
                        .unwrap_or(now)
                        .max(start),
                    _ => now,
                };
                m.advance(at);
                let expected = m.send(len);
                let r = s.send(Message::binary(vec![7u8; len]), at);
                if !modelled {
                    if let Ok(id) = r {
                        obs.issued.insert(id, s.current().unwrap());
                    }
                } else {
                    let got = match &r {
                        Ok(_) => SendOutcome::Ok,
                        Err(SendError::NotConnected(_)) => SendOutcome::NotConnected,
                        Err(SendError::Closing(_)) => SendOutcome::Closing,
                        Err(SendError::QueueFull(_)) => SendOutcome::QueueFull,
                        Err(SendError::BufferFull(_)) => SendOutcome::BufferFull,
                        Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
                    };
                    prop_assert_eq!(&got, &expected);
                    match r {
                        Ok(id) => {
                            obs.issued.insert(id, s.current().unwrap());
                            if m.state == ReadyState::Connecting {
                                m.queued.push((id, len));
                            } else {
                                m.in_flight.push((id, len));
                            }
                        }
                        Err(e) => {
                            prop_assert_eq!(e.into_message().len(), len, "message handed back")
                        }
                    }
                }
            }
            Op::Close { code } => {
                let r = s.close(Some(code), "", now);
                if code == 1001 {
                    prop_assert_eq!(r, Err(CloseError::InvalidCode(1001)));
                } else if modelled {
                    m.advance(now);
                    prop_assert_eq!(r, m.close());
                }
            }
            Op::Transport(target, input) => {
                let conn = match target {
                    Target::Current => s.current().or(conns.last().copied()),
                    Target::Stale => conns.iter().rev().nth(1).copied(),
                    Target::Unknown => Some(ConnId::from_raw(1_000_000)),
                };
                let Some(conn) = conn else { continue };
                m.advance(now);
                let current = s.current() == Some(conn) && m.state != ReadyState::Closed;
                let mut written = None;
                let event = match &input {
                    Input::Opened { offered } => TransportEvent::Opened(Box::new(Handshake {
                        protocol: Some(if *offered { "p" } else { "q" }.into()),
                        ..Handshake::default()
                    })),
                    Input::ConnectFailed(kind) => {
                        TransportEvent::ConnectFailed(TransportError::new(*kind, "no"))
                    }
                    Input::Message => {
                        fed += 1;
                        TransportEvent::Message(Message::text(fed.to_string()))
                    }
                    Input::Pong => TransportEvent::Pong(Default::default()),
                    Input::PeerClosed(code) => TransportEvent::PeerClosed(PeerClose {
                        code: *code,
                        reason: String::new(),
                    }),
                    Input::Written(oldest, raw) => {
                        let q = obs.written_queue.entry(conn).or_default();
                        let id = if *oldest && !q.is_empty() {
                            q.remove(0)
                        } else {
                            SendId::from_raw(*raw)
                        };
                        if current && m.in_flight.iter().any(|x| x.0 == id) {
                            written = Some(id);
                        }
                        TransportEvent::SendWritten(id)
                    }
                    Input::Error(k) => TransportEvent::Error(TransportError::new(*k, "e")),
                    Input::Closed => TransportEvent::Closed,
                };
                s.handle(conn, event, now);
                if current {
                    m.input(&input, written);
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(ms);
                s.handle_timeout(now);
                m.advance(now);
            }
        }
        obs.drain(&mut s, now)?;
        // Invariants after every step.
        prop_assert!(
            step_allowed(before, s.state()),
            "{before} -> {} in one step is not in the state table",
            s.state()
        );
        if modelled {
            prop_assert_eq!(s.state(), m.state, "state after step");
            prop_assert_eq!(s.buffered_amount(), m.buffered());
        }
        prop_assert!(s.buffered_amount() <= MAX_BUFFERED);
        if s.state() == ReadyState::Connecting {
            prop_assert!(s.pending_sends() <= MAX_MSGS && s.buffered_amount() <= MAX_QUEUED);
        }
        if let Some(t) = s.poll_timeout() {
            prop_assert!(t > m.now, "deadline {t:?} not after the last now");
        }
    }
    // Wind down: close (cancels a backoff; refused while connecting under `Ignore`), fail
    // any dial for good (HTTP 404 is not retried), end the transport, let timers run out.
    let refused = TransportError::new(TransportErrorKind::HttpStatus(404), "gone");
    for _ in 0..4 {
        let _ = s.close(None, "", now);
        if let Some(c) = s.current() {
            s.handle(c, TransportEvent::ConnectFailed(refused.clone()), now);
            s.handle(c, TransportEvent::Closed, now);
        }
        now += Duration::from_secs(60);
        s.handle_timeout(now);
        obs.drain(&mut s, now)?;
    }
    prop_assert_eq!(s.poll_timeout(), None, "no timer left");
    let missing: Vec<_> = obs
        .issued
        .keys()
        .filter(|id| !obs.completed.contains(id))
        .collect();
    prop_assert!(missing.is_empty(), "sends never completed: {missing:?}");
    for (conn, (connecting, _, closed)) in &obs.conns {
        prop_assert!(*closed, "{conn} lacks its close event");
        prop_assert!(
            *connecting || obs.backoffs.contains_key(conn),
            "{conn} lacks its connecting event"
        );
    }
    Ok(())
}

fn policy() -> impl Strategy<Value = CloseBeforeOpen> {
    prop_oneof![
        Just(CloseBeforeOpen::Abort),
        Just(CloseBeforeOpen::AfterOpen),
        Just(CloseBeforeOpen::Ignore)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn session_matches_the_model(policy in policy(), keepalive in any::<bool>(), ops in prop::collection::vec(op(), 1..80)) {
        run(policy, keepalive, None, ops)?;
    }

    #[test]
    fn reconnection_keeps_the_invariants(
        policy in policy(),
        keepalive in any::<bool>(),
        carry in any::<bool>(),
        max_attempts in prop::option::of(1..4u32),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let reconnect = ReconnectPolicy::default()
            .backoff(RECONNECT_BASE, RECONNECT_CAP)
            .max_attempts(max_attempts)
            .carry_queue(carry)
            .seed(seed);
        run(policy, keepalive, Some(reconnect), ops)?;
    }
}
