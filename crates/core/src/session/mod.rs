//! The single-socket session: the one-WebSocket-at-a-time model of `wx.connectSocket`.

use crate::ack::{AckTimer, Acks};
use crate::backlog::{Backlog, ReadCredit};
use crate::close::{ABNORMAL, CloseRequest, NORMAL, PeerClose};
use crate::config::{CloseBeforeOpen, ReconnectPolicy, SessionConfig};
use crate::error::{
    CloseError, ConfigError, ConnectError, ConnectionError, PingError, SendError, SendFailure,
};
use crate::event::Event;
use crate::ids::{ConnId, IdAllocator, SendId};
use crate::jitter::Jitter;
use crate::message::Message;
use crate::queue::{Entry, SendQueue};
use crate::request::{ConnectOptions, HandshakeRequest};
use crate::state::{ReadyState, State, is_allowed};
use crate::transcript::{Input, Output, Recorder, Redaction};
use crate::transport::{Action, Handshake, TransportError, TransportErrorKind, TransportEvent};
use bytes::Bytes;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reason text of the close event a replaced connection gets.
pub const REPLACED_REASON: &str = "replaced by a new connection";

/// One WebSocket session: at most one connection at a time, as `wx.connectSocket`.
///
/// The session does no IO and reads no clock. Its methods come in four kinds:
///
/// - **calls** from the application: [`connect`](Self::connect), [`send`](Self::send),
///   [`close`](Self::close);
/// - **inputs** from the IO driver: [`handle`](Self::handle) (a [`TransportEvent`] for a
///   [`ConnId`]) and [`handle_timeout`](Self::handle_timeout);
/// - **outputs**: [`poll_action`](Self::poll_action) (work for the driver),
///   [`poll_event`](Self::poll_event) (news for the application) and
///   [`poll_timeout`](Self::poll_timeout) (when to call `handle_timeout` next);
/// - **getters**: [`state`](Self::state), [`buffered_amount`](Self::buffered_amount), …
///
/// # Run loop
///
/// After every call or input: drain `poll_action` until `None` and carry each action out
/// (in order: a `Send` after a `Dial` of the same connection must wait for the handshake);
/// drain `poll_event` until `None` and deliver the events; then arm one timer for
/// `poll_timeout`. Actions and events are independent queues, so either may be drained
/// first. Every input that takes `now` first runs the timers that are due at `now`, so a
/// deadline that has passed is honoured even if `handle_timeout` was late; a `now` earlier
/// than one seen before is treated as the latest one (time never goes backwards).
///
/// # Calls in each state
///
/// | state | `send` | `close` | `connect` |
/// |---|---|---|---|
/// | Idle | `NotConnected` | `NotConnected` | → Connecting |
/// | Connecting | queued (bounded) | close-before-open policy | replaces it |
/// | Open | to the driver; completion later | → Closing | replaces it |
/// | Closing | `Closing` | no-op, `Ok` | replaces it |
/// | Closed | `NotConnected` | `NotConnected` | → Connecting |
///
/// The transitions themselves are [`crate::TRANSITIONS`]. With a
/// [`ReconnectPolicy`], a connection the application did not close that ends
/// is followed by a `Reconnecting` event and, after the backoff, a new dial; during the
/// backoff the state is `Connecting` (sends are queued, `close` cancels).
///
/// ```
/// use std::time::Instant;
/// use wxsocket_core::*;
///
/// let mut s = Session::new(SessionConfig::default()).unwrap();
/// let now = Instant::now();
/// let conn = s.connect(&ConnectOptions::new("ws://127.0.0.1:9000"), now).unwrap();
/// let queued = s.send(Message::text("hello"), now).unwrap(); // queued until open
/// assert!(matches!(s.poll_action(), Some(Action::Dial { .. })));
/// s.handle(conn, TransportEvent::Opened(Box::default()), now);
/// // On open the queue is flushed, in order.
/// assert!(matches!(s.poll_action(), Some(Action::Send { id, .. }) if id == queued));
/// s.handle(conn, TransportEvent::SendWritten(queued), now);
/// let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
/// assert!(matches!(events[1], Event::Open { .. }));
/// assert!(matches!(events[2], Event::SendCompleted { id, .. } if id == queued));
/// ```
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    pub(crate) ids: IdAllocator,
    conn: Conn,
    /// The state of the connection last taken out of `conn` ([`Self::take`]), the `from`
    /// of the transition that [`Self::end`] makes.
    taken_from: State,
    /// Connections whose close event is out but whose transport is still being closed.
    teardowns: Vec<Teardown>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    now: Option<Instant>,
    stats: Stats,
    jitter: Jitter,
    /// Set by [`Session::shutdown`]: no new connection, no reconnection.
    shut_down: bool,
    /// Received messages and completions waiting in `events`.
    backlog: Backlog,
    /// Reading is paused: the backlog reached its bound and has not yet come down to
    /// half of it.
    reading_paused: bool,
    /// When reading last paused, until the pause is accounted in `stats`.
    paused_since: Option<Instant>,
    /// Reading resumed; the pause's length is added at the next input (which has a time).
    resumed: bool,
    /// Reading is paused by the [`crate::Pool`] this session belongs to (its total bound):
    /// keepalive waits, and a close releases the reads, as for a pause of its own.
    pub(crate) pool_paused: bool,
    /// `Some` when a driver takes send outcomes with [`Session::poll_completion`].
    completions: Option<VecDeque<Completion>>,
    /// Sends resent after a drop (delivery acknowledgement), until their outcome.
    duplicates: BTreeSet<SendId>,
    /// `Some` while recording a transcript ([`Session::start_recording`]).
    recorder: Option<Box<Recorder>>,
}

/// A send's outcome as a driver sees it ([`Session::poll_completion`]).
pub type Completion = (SendId, Result<(), SendFailure>);

/// Counters of input the session did not act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transport input for a connection that is not the current one.
    pub stale_inputs: u64,
    /// Transport input for the current connection that makes no sense in its state
    /// (a message before open, an unknown `SendId`, …).
    pub unexpected_inputs: u64,
    /// How many times reading paused because the application had not taken the received
    /// messages (flow control, [`crate::ReadCredit`]).
    pub read_pauses: u64,
    /// How long reading was paused in all, up to the last input after the latest resume.
    pub read_paused_for: Duration,
}

/// Per-state data: what only exists in a state lives only in that state's struct, and a
/// transition consumes the old one.
#[derive(Debug)]
enum Conn {
    Idle,
    Connecting(Connecting),
    Open(Open),
    Closing(Closing),
    /// Waiting out a reconnect delay; the application sees `Connecting`.
    Backoff(Backoff),
    Closed,
}

#[derive(Debug)]
struct Connecting {
    id: ConnId,
    request: Arc<HandshakeRequest>,
    queue: SendQueue<Message>,
    timeout: Duration,
    deadline: Instant,
    /// `AfterOpen` policy: the close asked for before open.
    close_after_open: Option<CloseRequest>,
    /// Which consecutive reconnect attempt this dial is (0: the application's `connect`).
    attempt: u32,
}

#[derive(Debug)]
struct Open {
    id: ConnId,
    request: Arc<HandshakeRequest>,
    in_flight: SendQueue<usize>,
    liveness: Option<Liveness>,
    /// Payloads of the application's pings not yet answered, oldest first.
    pings: VecDeque<Bytes>,
    /// With delivery acknowledgement on: what the peer has not acknowledged yet.
    acks: Option<Acks>,
}

/// The bytes of `max_buffered_bytes` each message in flight counts for in the bound on their
/// number (the memory a message costs besides its payload: its id, its frame, the driver's
/// command); 262,144 messages under the default 16 MiB.
const IN_FLIGHT_WEIGHT: usize = 64;

/// Most application pings waiting for their pong ([`Session::ping`]).
pub const MAX_PINGS: usize = 16;

#[derive(Debug)]
struct Closing {
    id: ConnId,
    request: Arc<HandshakeRequest>,
    in_flight: SendQueue<usize>,
    deadline: Instant,
    /// The peer's close frame, once it arrived.
    peer: Option<PeerClose>,
    /// The application asked for this close (such a connection is never reconnected).
    local: bool,
    /// This side's close frame went first: the peer's answer acknowledges every message
    /// before it.
    began: bool,
    /// With delivery acknowledgement on: what the peer has not acknowledged yet.
    acks: Option<Acks>,
}

#[derive(Debug)]
struct Backoff {
    /// The connection the next dial will be.
    id: ConnId,
    request: Arc<HandshakeRequest>,
    queue: SendQueue<Message>,
    attempt: u32,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Liveness {
    /// When to ping, or, with a ping outstanding, when the peer is declared dead.
    deadline: Instant,
    awaiting_pong: bool,
}

#[derive(Debug, Clone, Copy)]
struct Teardown {
    id: ConnId,
    deadline: Instant,
}

/// The close event a connection ends with.
struct Ending<'a> {
    code: u16,
    reason: &'a str,
    clean: bool,
}

/// Why a connection ended, as the reconnect policy judges it.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// The application closed or replaced it: never retried.
    Application,
    /// The dial or handshake failed with this error.
    Dial(Option<TransportErrorKind>),
    /// The server chose a sub-protocol that was not offered: a configuration mismatch.
    Mismatch,
    /// The connection dropped, failed or went silent.
    Lost,
    /// The peer closed with this code.
    PeerClosed(u16),
}

impl Cause {
    fn retried_by(self, policy: &ReconnectPolicy) -> bool {
        match self {
            Cause::Application | Cause::Mismatch => false,
            Cause::Dial(Some(TransportErrorKind::Negotiation)) => false,
            Cause::Dial(Some(TransportErrorKind::HttpStatus(status)))
                if (400..500).contains(&status) =>
            {
                policy.retry_http_4xx
            }
            Cause::Dial(_) | Cause::Lost => true,
            Cause::PeerClosed(code) => policy.retry_close_codes.contains(&code),
        }
    }
}

impl Session {
    /// A session in the Idle state. The configuration is checked first.
    pub fn new(config: SessionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let seed = config.reconnect.as_ref().map_or(0, |r| r.seed);
        Ok(Self {
            config,
            ids: IdAllocator::default(),
            conn: Conn::Idle,
            taken_from: State::Idle,
            teardowns: Vec::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            now: None,
            stats: Stats::default(),
            jitter: Jitter::new(seed),
            shut_down: false,
            backlog: Backlog::default(),
            reading_paused: false,
            paused_since: None,
            resumed: false,
            pool_paused: false,
            completions: None,
            duplicates: BTreeSet::new(),
            recorder: None,
        })
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The state (`readyState`).
    pub fn state(&self) -> ReadyState {
        match self.conn {
            Conn::Idle => ReadyState::Idle,
            Conn::Connecting(_) | Conn::Backoff(_) => ReadyState::Connecting,
            Conn::Open(_) => ReadyState::Open,
            Conn::Closing(_) => ReadyState::Closing,
            Conn::Closed => ReadyState::Closed,
        }
    }

    /// The connection in progress (Connecting, Open or Closing; during a reconnect delay,
    /// the connection the next dial will be), if any.
    pub fn current(&self) -> Option<ConnId> {
        match &self.conn {
            Conn::Connecting(c) => Some(c.id),
            Conn::Backoff(b) => Some(b.id),
            Conn::Open(o) => Some(o.id),
            Conn::Closing(c) => Some(c.id),
            Conn::Idle | Conn::Closed => None,
        }
    }

    /// Whether a reconnect delay is running (no dial is outstanding).
    pub fn is_backing_off(&self) -> bool {
        matches!(self.conn, Conn::Backoff(_))
    }

    /// Bytes accepted by `send` but not yet confirmed written: queued while connecting, or
    /// handed to the driver while open or closing. At most `max_buffered_bytes`.
    pub fn buffered_amount(&self) -> usize {
        match &self.conn {
            Conn::Connecting(c) => c.queue.bytes(),
            Conn::Backoff(b) => b.queue.bytes(),
            Conn::Open(o) => o.in_flight.bytes(),
            Conn::Closing(c) => c.in_flight.bytes(),
            Conn::Idle | Conn::Closed => 0,
        }
    }

    /// Messages queued or in flight for the current connection.
    pub fn pending_sends(&self) -> usize {
        match &self.conn {
            Conn::Connecting(c) => c.queue.len(),
            Conn::Backoff(b) => b.queue.len(),
            Conn::Open(o) => o.in_flight.len(),
            Conn::Closing(c) => c.in_flight.len(),
            Conn::Idle | Conn::Closed => 0,
        }
    }

    /// Connections closed from the application's view whose transport is still being torn
    /// down (each is aborted when its close timeout passes).
    pub fn teardowns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.teardowns.iter().map(|t| t.id)
    }

    /// Received messages and send completions waiting for the application.
    pub fn backlog(&self) -> Backlog {
        self.backlog
    }

    /// How much the driver may read from `conn` now (see [`ReadCredit`]): for the
    /// connection whose messages reach the application, what is left under
    /// `max_received_messages` / `max_received_bytes`, and nothing while reading is paused;
    /// unlimited for any other (its data is discarded, and reading it lets its close
    /// handshake finish).
    pub fn read_credit(&self, conn: ConnId) -> ReadCredit {
        if self.reading_conn() != Some(conn) {
            return ReadCredit::UNLIMITED;
        }
        if self.reading_paused {
            return ReadCredit::PAUSED;
        }
        self.backlog.credit(
            self.config.max_received_messages,
            self.config.max_received_bytes,
        )
    }

    /// Whether reading is paused for the application (see [`read_credit`](Self::read_credit)).
    pub fn is_reading_paused(&self) -> bool {
        self.reading_paused
    }

    /// Counters, and the time reading spent paused.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether an action or event is waiting to be polled.
    pub fn has_output(&self) -> bool {
        !self.actions.is_empty()
            || !self.events.is_empty()
            || self.completions.as_ref().is_some_and(|c| !c.is_empty())
    }

    // ----- calls -----

    /// `wx.connectSocket`: validates `options` (nothing is dialled on error), ends the
    /// current connection if there is one (its close event comes first, code 1000), and
    /// starts a new one.
    pub fn connect(
        &mut self,
        options: &ConnectOptions,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        let request = options.validate()?;
        self.connect_request(Arc::new(request), now)
    }

    /// Like [`connect`](Self::connect) with a request validated earlier (to dial the same
    /// request again). After [`shutdown`](Self::shutdown): `ConnectError::ShutDown`.
    pub fn connect_request(
        &mut self,
        request: Arc<HandshakeRequest>,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        if self.recorder.is_some() {
            return self.connect_recorded(request, now);
        }
        // Like every call, a refused one still runs the timers due at `now`.
        self.advance(now);
        if self.shut_down {
            return Err(ConnectError::ShutDown);
        }
        let id = self.ids.conn();
        self.connect_as(id, request, now);
        Ok(id)
    }

    pub(crate) fn connect_as(&mut self, id: ConnId, request: Arc<HandshakeRequest>, now: Instant) {
        let now = self.advance(now);
        let from = self.graph_state();
        self.replace_current(now);
        self.dial(from, id, request, SendQueue::default(), 0, now);
    }

    /// Starts connection `id`: its `Connecting` event, the `Dial` action, the handshake timer.
    fn dial(
        &mut self,
        from: State,
        id: ConnId,
        request: Arc<HandshakeRequest>,
        queue: SendQueue<Message>,
        attempt: u32,
        now: Instant,
    ) {
        let timeout = request.timeout.unwrap_or(self.config.handshake_timeout);
        self.emit(Event::Connecting {
            conn: id,
            url: Box::new(request.url.clone()),
        });
        self.actions.push_back(Action::Dial {
            conn: id,
            request: Arc::clone(&request),
        });
        self.transition(
            from,
            Conn::Connecting(Connecting {
                id,
                request,
                queue,
                timeout,
                deadline: now + timeout,
                close_after_open: None,
                attempt,
            }),
        );
    }

    /// `wx.sendSocketMessage`: queues the message while connecting, hands it to the driver
    /// when open. A refused message is handed back in the error.
    pub fn send(&mut self, message: Message, now: Instant) -> Result<SendId, SendError> {
        if self.recorder.is_some() {
            return self.send_recorded(message, now);
        }
        let now = self.advance(now);
        let max = self.config.max_message_size;
        if message.len() > max {
            let len = message.len();
            return Err(SendError::TooLarge { message, len, max });
        }
        let completions_full = self.backlog.completions >= self.config.max_untaken_completions;
        match &mut self.conn {
            Conn::Idle | Conn::Closed => Err(SendError::NotConnected(message)),
            Conn::Closing(_) => Err(SendError::Closing(message)),
            _ if completions_full => Err(SendError::CompletionsFull(message)),
            Conn::Connecting(c) if c.close_after_open.is_some() => Err(SendError::Closing(message)),
            Conn::Connecting(Connecting { queue, .. }) | Conn::Backoff(Backoff { queue, .. }) => {
                if !queue.fits(
                    message.len(),
                    self.config.max_queued_messages,
                    self.config.max_queued_bytes,
                ) {
                    return Err(SendError::QueueFull(message));
                }
                let id = self.ids.send();
                queue.push(id, message);
                Ok(id)
            }
            Conn::Open(o) => {
                // Bytes bound the buffer, and so does the count: one message per
                // `IN_FLIGHT_WEIGHT` bytes of the bound (at least the queue's count, which
                // is flushed into it on open), so empty messages cannot grow memory without
                // limit either.
                let max_in_flight = (self.config.max_buffered_bytes / IN_FLIGHT_WEIGHT)
                    .max(self.config.max_queued_messages);
                if !o
                    .in_flight
                    .fits(message.len(), max_in_flight, self.config.max_buffered_bytes)
                {
                    return Err(SendError::BufferFull(message));
                }
                let id = self.ids.send();
                o.in_flight.push(id, message.len());
                if let Some(acks) = &mut o.acks {
                    acks.on_send(id, message.clone(), now);
                }
                self.actions.push_back(Action::Send {
                    conn: o.id,
                    id,
                    message,
                });
                Ok(id)
            }
        }
    }

    /// Sends a ping with `payload` (at most 125 bytes) on the open connection; the peer's
    /// pong comes back as [`Event::Pong`] with the same payload. At most [`MAX_PINGS`] may
    /// wait for their pong; a pong counts toward `max_untaken_completions` until taken.
    pub fn ping(&mut self, payload: impl Into<Bytes>, now: Instant) -> Result<(), PingError> {
        let payload = payload.into();
        if self.recorder.is_some() {
            return self.ping_recorded(payload, now);
        }
        let now = self.advance(now);
        if payload.len() > 125 {
            return Err(PingError::TooLong { len: payload.len() });
        }
        let full = self.backlog.completions >= self.config.max_untaken_completions;
        let Conn::Open(o) = &mut self.conn else {
            return Err(PingError::NotOpen);
        };
        if full || o.pings.len() >= MAX_PINGS {
            return Err(PingError::Full);
        }
        o.pings.push_back(payload.clone());
        if let Some(acks) = &mut o.acks {
            acks.on_ping(payload.clone(), now);
        }
        self.actions.push_back(Action::Ping {
            conn: o.id,
            payload,
        });
        Ok(())
    }

    /// `wx.closeSocket` / `SocketTask.close(code, reason)`: code 1000 (the default, `None`)
    /// or 3000–4999, reason at most 123 UTF-8 bytes; an invalid one changes nothing. During
    /// a reconnect delay it cancels the reconnection.
    pub fn close(
        &mut self,
        code: Option<u16>,
        reason: &str,
        now: Instant,
    ) -> Result<(), CloseError> {
        if self.recorder.is_some() {
            return self.close_recorded(code, reason, now);
        }
        let request = CloseRequest::new(code, reason)?;
        let now = self.advance(now);
        match &mut self.conn {
            Conn::Idle | Conn::Closed => Err(CloseError::NotConnected),
            Conn::Closing(c) => {
                // A close the peer began is now the application's too: it ends the session
                // rather than being retried by a reconnect policy.
                c.local = true;
                Ok(())
            }
            Conn::Connecting(c) => match self.config.close_before_open {
                CloseBeforeOpen::Ignore => Err(CloseError::NotOpenYet),
                CloseBeforeOpen::AfterOpen => {
                    c.close_after_open.get_or_insert(request);
                    Ok(())
                }
                CloseBeforeOpen::Abort => {
                    let Conn::Connecting(c) = self.take() else {
                        unreachable!()
                    };
                    self.actions.push_back(Action::Abort { conn: c.id });
                    let ending = Ending {
                        code: ABNORMAL,
                        reason: "closed before the connection opened",
                        clean: false,
                    };
                    self.end(c.id, c.queue, SendFailure::Cancelled, false, ending);
                    Ok(())
                }
            },
            Conn::Backoff(_) => {
                let Conn::Backoff(b) = self.take() else {
                    unreachable!()
                };
                let ending = Ending {
                    code: request.code(),
                    reason: "reconnection cancelled",
                    clean: false,
                };
                self.end(b.id, b.queue, SendFailure::Cancelled, false, ending);
                Ok(())
            }
            Conn::Open(_) => {
                let Conn::Open(o) = self.take() else {
                    unreachable!()
                };
                self.begin_close(o, request, now);
                Ok(())
            }
        }
    }

    /// Shuts the session down, as a driver does when its application lets go of every
    /// handle: an open connection is closed with 1000 (close frame, then the close
    /// timeout as for [`close`](Self::close)); a dial in progress is aborted whatever the
    /// [`CloseBeforeOpen`] policy (its queued messages fail as cancelled, close event
    /// 1006); a reconnect delay is cancelled; a close under way goes on and is never
    /// retried. From then on `connect` fails with `ConnectError::ShutDown`. The driver
    /// keeps carrying out actions and feeding input until [`is_drained`](Self::is_drained).
    /// Calling it again does nothing.
    pub fn shutdown(&mut self, now: Instant) {
        if self.recorder.is_some() {
            return self.recorded(Input::Shutdown, |s| s.shutdown(now));
        }
        let now = self.advance(now);
        self.shut_down = true;
        match self.take() {
            Conn::Open(o) => self.begin_close(o, CloseRequest::internal(NORMAL, ""), now),
            Conn::Closing(mut c) => {
                c.local = true;
                self.conn = Conn::Closing(c);
            }
            Conn::Connecting(c) => {
                self.actions.push_back(Action::Abort { conn: c.id });
                let ending = Ending {
                    code: ABNORMAL,
                    reason: "shut down before the connection opened",
                    clean: false,
                };
                self.end(c.id, c.queue, SendFailure::Cancelled, false, ending);
            }
            Conn::Backoff(b) => {
                let ending = Ending {
                    code: NORMAL,
                    reason: "reconnection cancelled",
                    clean: false,
                };
                self.end(b.id, b.queue, SendFailure::Cancelled, false, ending);
            }
            other @ (Conn::Idle | Conn::Closed) => self.conn = other,
        }
    }

    /// After [`shutdown`](Self::shutdown): whether every transport is finished, i.e. the
    /// connection is closed, nothing is being torn down, and every action was polled (the
    /// last `Abort` included). The driver may then stop; events may still be waiting.
    pub fn is_drained(&self) -> bool {
        self.shut_down
            && matches!(self.conn, Conn::Idle | Conn::Closed)
            && self.teardowns.is_empty()
            && self.actions.is_empty()
    }

    // ----- inputs -----

    /// Input from the IO driver for connection `conn`. Input for a connection that is not
    /// the current one never reaches the application; it is counted, and `Closed` (or an
    /// error) for a connection being torn down ends that teardown.
    pub fn handle(&mut self, conn: ConnId, event: TransportEvent, now: Instant) {
        if self.recorder.is_some() {
            return self.handle_recorded(conn, event, now);
        }
        let now = self.advance(now);
        // RFC 6455 §7.4: a close code the peer may not send is a protocol error.
        let event = match event {
            TransportEvent::PeerClosed(PeerClose {
                code: Some(code), ..
            }) if !crate::close::is_valid_from_peer(code) => {
                TransportEvent::Error(TransportError::new(
                    TransportErrorKind::Protocol,
                    format!("peer sent the invalid close code {code}"),
                ))
            }
            event => event,
        };
        // Hot path: traffic on the open connection, without moving the state out and back.
        let event = match (&mut self.conn, event) {
            (Conn::Open(o), TransportEvent::Message(message)) if o.id == conn => {
                o.touch(&self.config, now);
                if let Some(acks) = &mut o.acks {
                    acks.on_input(now);
                }
                self.emit(Event::Message { conn, message });
                return;
            }
            (Conn::Open(o), TransportEvent::SendWritten(id)) if o.id == conn => {
                let written = written(&mut o.in_flight, o.acks.as_mut(), id);
                self.on_written(conn, id, written);
                return;
            }
            (_, event) => event,
        };
        if self.current() != Some(conn) || self.is_backing_off() {
            if self.current() == Some(conn) {
                self.stats.unexpected_inputs += 1; // nothing was dialled for it yet
                return;
            }
            self.stats.stale_inputs += 1;
            if matches!(
                event,
                TransportEvent::Closed
                    | TransportEvent::ConnectFailed(_)
                    | TransportEvent::Error(_)
            ) {
                self.teardowns.retain(|t| t.id != conn);
            }
            return;
        }
        match (self.take(), event) {
            (Conn::Connecting(c), TransportEvent::Opened(handshake)) => {
                self.on_opened(c, handshake, now)
            }
            (
                Conn::Connecting(c),
                TransportEvent::ConnectFailed(error) | TransportEvent::Error(error),
            ) => {
                self.connect_failed(c, ConnectionError::ConnectFailed(error), now);
            }
            (Conn::Connecting(c), TransportEvent::Closed) => {
                let error = TransportError::new(
                    TransportErrorKind::Io,
                    "connection closed during the handshake",
                );
                self.connect_failed(c, ConnectionError::ConnectFailed(error), now);
            }
            (Conn::Open(mut o), TransportEvent::Pong(payload)) => {
                o.touch(&self.config, now);
                if let Some(acks) = &mut o.acks {
                    let acked = acks.on_pong(&payload, now);
                    self.deliver(conn, &mut o.in_flight, acked);
                }
                // The answer to one of the application's pings (and to every earlier one).
                if let Some(at) = o.pings.iter().position(|p| *p == payload) {
                    o.pings.drain(..=at);
                    self.conn = Conn::Open(o);
                    self.emit(Event::Pong { conn, payload });
                } else {
                    self.conn = Conn::Open(o);
                }
            }
            (Conn::Open(mut o), TransportEvent::Ping(_)) => {
                o.touch(&self.config, now);
                if let Some(acks) = &mut o.acks {
                    acks.on_input(now);
                }
                self.conn = Conn::Open(o);
            }
            (Conn::Closing(mut c), TransportEvent::SendWritten(id)) => {
                let written = written(&mut c.in_flight, c.acks.as_mut(), id);
                self.on_written(conn, id, written);
                self.conn = Conn::Closing(c);
            }
            (Conn::Closing(mut c), TransportEvent::Pong(payload)) if c.acks.is_some() => {
                // Control frames still count while closing: a pong acknowledges.
                if let Some(acks) = &mut c.acks {
                    let acked = acks.on_pong(&payload, now);
                    self.deliver(conn, &mut c.in_flight, acked);
                }
                self.conn = Conn::Closing(c);
            }
            (Conn::Open(o), TransportEvent::PeerClosed(peer)) => {
                // The driver answers the peer's close frame (RFC 6455 §5.5.1; tungstenite
                // does so itself); the close event waits for the transport to end.
                let closing = Closing {
                    id: o.id,
                    request: o.request,
                    in_flight: o.in_flight,
                    deadline: now + self.linger(),
                    peer: Some(peer),
                    local: false,
                    began: false,
                    acks: o.acks,
                };
                self.transition(State::Open, Conn::Closing(closing));
            }
            (Conn::Closing(mut c), TransportEvent::PeerClosed(peer)) => {
                if c.peer.is_none() {
                    // The answer to our close frame: both were exchanged, the server
                    // has a short while left to close TCP.
                    c.peer = Some(peer);
                    c.deadline = c.deadline.min(now + self.linger());
                }
                self.conn = Conn::Closing(c);
            }
            (Conn::Open(o), TransportEvent::Error(error)) => {
                self.fail_open(o, ConnectionError::Transport(error), now)
            }
            (Conn::Open(o), TransportEvent::Closed) => {
                let error = TransportError::new(
                    TransportErrorKind::Io,
                    "connection closed without a close frame",
                );
                self.fail_open(o, ConnectionError::Transport(error), now);
            }
            (Conn::Closing(c), TransportEvent::Closed) => self.finish_close(c, now),
            (Conn::Closing(c), TransportEvent::Error(error)) => {
                if c.peer.is_some() {
                    // Both close frames were exchanged; an error while the TCP connection
                    // winds down does not make the close unclean.
                    self.finish_close(c, now);
                } else {
                    self.emit(Event::Error {
                        conn,
                        error: ConnectionError::Transport(error.clone()),
                    });
                    let ending = Ending {
                        code: error.kind.close_code(),
                        reason: &error.message,
                        clean: false,
                    };
                    let (in_flight, _) = self.settle(c.id, c.in_flight, c.acks, false);
                    self.end(c.id, in_flight, SendFailure::ConnectionLost, false, ending);
                }
            }
            (Conn::Closing(c), TransportEvent::Message(message))
                if self.config.receive_while_closing && c.local && c.peer.is_none() =>
            {
                // Opted in: the peer may still send data after our close frame until it
                // sends its own (RFC 6455 §5.5.1).
                self.emit(Event::Message { conn, message });
                self.conn = Conn::Closing(c);
            }
            (
                Conn::Closing(c),
                TransportEvent::Ping(_) | TransportEvent::Pong(_) | TransportEvent::Message(_),
            ) => {
                // Data after our close frame is allowed by RFC 6455 §5.5.1 but, as in the
                // WHATWG standard, not delivered once the socket is closing (unless
                // `receive_while_closing`).
                self.conn = Conn::Closing(c);
            }
            (other, _) => {
                self.stats.unexpected_inputs += 1;
                self.conn = other;
            }
        }
    }

    /// Runs the timers due at `now`. Early, repeated or stale calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.recorder.is_some() {
            return self.recorded(Input::Timeout, |s| s.handle_timeout(now));
        }
        self.advance(now);
    }

    // ----- outputs -----

    /// The next action for the IO driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.recorder.is_some() {
            return self.poll_action_recorded();
        }
        self.actions.pop_front()
    }

    /// The next event for the application. Taking a received message frees room under
    /// the receive bounds: once half of them is free, a paused connection gets
    /// [`Action::ResumeReading`].
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.recorder.is_some() {
            return self.poll_event_recorded();
        }
        let event = self.events.pop_front()?;
        match &event {
            Event::Message { message, .. } => {
                self.backlog.messages -= 1;
                self.backlog.bytes -= message.len();
                if self.reading_paused
                    && self.backlog.is_low(
                        self.config.max_received_messages,
                        self.config.max_received_bytes,
                    )
                {
                    self.reading_paused = false;
                    self.resumed = true;
                    if let Some(conn) = self.reading_conn() {
                        self.actions.push_back(Action::ResumeReading { conn });
                    }
                }
            }
            Event::SendCompleted { .. }
            | Event::SendDelivered { .. }
            | Event::SendFailed { .. }
            | Event::Pong { .. } => {
                self.backlog.completions -= 1;
            }
            _ => {}
        }
        Some(event)
    }

    /// Makes the session keep every send's outcome for [`poll_completion`](Self::poll_completion)
    /// (whether or not `SendCompleted` events are queued): for a driver whose sends can be
    /// awaited. The driver must then drain them after every call.
    pub fn track_completions(&mut self, on: bool) {
        self.completions = on.then(VecDeque::new);
        self.record(&Input::TrackCompletions(on), Output::None);
    }

    /// The next send outcome, with [`track_completions`](Self::track_completions) on.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        let completion = self.completions.as_mut()?.pop_front();
        if let (true, Some(c)) = (self.recorder.is_some(), &completion) {
            self.record(&Input::PollCompletion, Output::Debug(c));
        }
        completion
    }

    // ----- recording -----

    /// Starts recording a transcript of this session (see [`crate::transcript`]): `sink`
    /// gets the header line (the configuration, the reconnect seed, the redacted header
    /// names) at once, then one line per input as the input is taken, each without its
    /// line break. Call it before the first input, right after [`new`](Self::new): a
    /// transcript replays from a fresh session. Header values named in `redaction` never
    /// reach the sink. Starting again replaces the sink (and writes a new header).
    ///
    /// The sink runs inside the call that took the input, so it should be quick (append
    /// to a buffer or a buffered file); the core itself does no IO.
    pub fn start_recording(
        &mut self,
        redaction: Redaction,
        sink: impl FnMut(&str) + Send + 'static,
    ) {
        self.recorder = Some(Box::new(Recorder::new(
            &self.config,
            redaction,
            Box::new(sink),
        )));
    }

    /// Stops recording; the sink is dropped.
    pub fn stop_recording(&mut self) {
        self.recorder = None;
    }

    /// Whether a transcript is being recorded.
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    // The recorded paths run the call itself with the recorder taken out (so the hot,
    // unrecorded body is the only copy of each call and pays one branch), then write the
    // input and what came out.

    /// Runs `call` unrecorded, then records `input` with `call`'s result as its output.
    #[cold]
    #[inline(never)]
    fn recorded_with<T: std::fmt::Debug>(
        &mut self,
        input: Input,
        call: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let recorder = self.recorder.take();
        let result = call(self);
        self.recorder = recorder;
        self.record(&input, Output::Debug(&result));
        result
    }

    /// Runs `call` unrecorded, then records `input` (no output).
    #[cold]
    #[inline(never)]
    fn recorded(&mut self, input: Input, call: impl FnOnce(&mut Self)) {
        let recorder = self.recorder.take();
        call(self);
        self.recorder = recorder;
        self.record(&input, Output::None);
    }

    fn connect_recorded(
        &mut self,
        request: Arc<HandshakeRequest>,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        let input = Input::Connect(Arc::clone(&request));
        self.recorded_with(input, |s| s.connect_request(request, now))
    }

    fn send_recorded(&mut self, message: Message, now: Instant) -> Result<SendId, SendError> {
        let input = Input::Send(message.clone());
        self.recorded_with(input, |s| s.send(message, now))
    }

    fn ping_recorded(&mut self, payload: Bytes, now: Instant) -> Result<(), PingError> {
        let input = Input::Ping(payload.clone());
        self.recorded_with(input, |s| s.ping(payload, now))
    }

    fn close_recorded(
        &mut self,
        code: Option<u16>,
        reason: &str,
        now: Instant,
    ) -> Result<(), CloseError> {
        let input = Input::Close(code, reason.to_owned());
        self.recorded_with(input, |s| s.close(code, reason, now))
    }

    fn handle_recorded(&mut self, conn: ConnId, event: TransportEvent, now: Instant) {
        let input = Input::Handle(conn, event.clone());
        self.recorded(input, |s| s.handle(conn, event, now));
    }

    /// `poll_action` while recording: a poll that took something is written.
    #[cold]
    #[inline(never)]
    fn poll_action_recorded(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if let Some(a) = &action {
            self.record(&Input::PollAction, Output::Action(a));
        }
        action
    }

    /// `poll_event` while recording: a poll that took something is written.
    #[cold]
    #[inline(never)]
    fn poll_event_recorded(&mut self) -> Option<Event> {
        let recorder = self.recorder.take();
        let event = self.poll_event();
        self.recorder = recorder;
        if let Some(e) = &event {
            self.record(&Input::PollEvent, Output::Event(e));
        }
        event
    }

    fn record(&mut self, input: &Input, output: Output<'_>) {
        let now = self.now;
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(now, input, output);
        }
    }

    /// Whether events wait for the application.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Whether an action waits for the driver (the [`crate::Pool`] keeps a ready-queue).
    pub(crate) fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Whether a send outcome waits for [`poll_completion`](Self::poll_completion).
    pub(crate) fn has_completions(&self) -> bool {
        self.completions.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: the earliest of
    /// the handshake, close, keepalive, reconnect and teardown deadlines. Never earlier than
    /// the latest `now` the session has seen.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.conn {
            Conn::Connecting(c) => Some(c.deadline),
            Conn::Backoff(b) => Some(b.deadline),
            Conn::Open(o) => {
                let ack = o.acks.as_ref().and_then(Acks::poll_timeout);
                match (o.liveness.map(|l| l.deadline), ack) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Conn::Closing(c) => Some(c.deadline),
            Conn::Idle | Conn::Closed => None,
        };
        self.teardowns.iter().map(|t| t.deadline).chain(state).min()
    }

    // ----- internals -----

    /// Queues an event for the application, counting it in the backlog; pauses reading
    /// when the received messages reach their bound.
    fn emit(&mut self, event: Event) {
        match &event {
            Event::Message { message, .. } => {
                self.backlog.messages += 1;
                self.backlog.bytes += message.len();
                if !self.reading_paused
                    && self.backlog.is_full(
                        self.config.max_received_messages,
                        self.config.max_received_bytes,
                    )
                {
                    self.reading_paused = true;
                    self.resumed = false;
                    self.stats.read_pauses += 1;
                    self.paused_since = self.paused_since.or(self.now);
                }
            }
            Event::SendCompleted { id, .. } | Event::SendDelivered { id, .. } => {
                if let Some(completions) = &mut self.completions {
                    completions.push_back((*id, Ok(())));
                }
                if !self.config.send_completions {
                    return;
                }
                self.backlog.completions += 1;
            }
            Event::SendFailed { id, reason, .. } => {
                if let Some(completions) = &mut self.completions {
                    completions.push_back((*id, Err(*reason)));
                }
                self.backlog.completions += 1;
            }
            Event::Pong { .. } => self.backlog.completions += 1,
            _ => {}
        }
        self.events.push_back(event);
    }

    /// The connection whose messages reach the application, and so are flow-controlled:
    /// the open one, or one closing by our close frame under `receive_while_closing`.
    fn reading_conn(&self) -> Option<ConnId> {
        match &self.conn {
            Conn::Open(o) => Some(o.id),
            Conn::Closing(c)
                if self.config.receive_while_closing && c.local && c.peer.is_none() =>
            {
                Some(c.id)
            }
            _ => None,
        }
    }

    /// `conn` stops being the reading connection (its data is discarded from now on): if
    /// reading was paused, the driver reads it again, so its close handshake can finish.
    fn release_reads(&mut self, conn: ConnId) {
        if (self.reading_paused || self.pool_paused) && self.reading_conn() != Some(conn) {
            self.actions.push_back(Action::ResumeReading { conn });
        }
    }

    fn take(&mut self) -> Conn {
        self.taken_from = self.graph_state();
        std::mem::replace(&mut self.conn, Conn::Closed)
    }

    /// Moves from `from` to `next`, checking the edge against the state table.
    fn transition(&mut self, from: State, next: Conn) {
        self.conn = next;
        debug_assert!(
            is_allowed(from, self.graph_state()),
            "{from} -> {} is not in TRANSITIONS",
            self.graph_state()
        );
    }

    /// The state in the graph's terms ([`State`]): like [`state`](Self::state), with the
    /// reconnect delay as a state of its own.
    fn graph_state(&self) -> State {
        match self.conn {
            Conn::Idle => State::Idle,
            Conn::Connecting(_) => State::Connecting,
            Conn::Backoff(_) => State::Backoff,
            Conn::Open(_) => State::Open,
            Conn::Closing(_) => State::Closing,
            Conn::Closed => State::Closed,
        }
    }

    /// Records `now`, runs every timer due, and returns the effective time.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = match self.now {
            Some(last) if now < last => last,
            _ => now,
        };
        self.now = Some(now);
        if self.resumed {
            self.resumed = false;
            if let Some(since) = self.paused_since.take() {
                self.stats.read_paused_for += now.saturating_duration_since(since);
            }
        }
        if self.poll_timeout().is_none_or(|t| t > now) {
            return now;
        }
        // Teardowns: abort transports that did not finish closing in time.
        let mut i = 0;
        while i < self.teardowns.len() {
            if self.teardowns[i].deadline <= now {
                let t = self.teardowns.swap_remove(i);
                self.actions.push_back(Action::Abort { conn: t.id });
            } else {
                i += 1;
            }
        }
        match self.take() {
            Conn::Connecting(c) if c.deadline <= now => {
                let timeout = c.timeout;
                self.connect_failed(c, ConnectionError::HandshakeTimeout(timeout), now);
            }
            Conn::Backoff(b) if b.deadline <= now => {
                self.dial(State::Backoff, b.id, b.request, b.queue, b.attempt, now);
            }
            Conn::Open(o) => self.open_timers(o, now),
            Conn::Closing(c) if c.deadline <= now => {
                self.actions.push_back(Action::Abort { conn: c.id });
                if c.peer.is_some() {
                    // Both close frames were exchanged and only the server's TCP close is
                    // missing: the close is clean (RFC 6455 §7.1.4); the
                    // client closes TCP itself (§7.1.1).
                    self.finish_close(c, now);
                } else {
                    self.emit(Event::Error {
                        conn: c.id,
                        error: ConnectionError::CloseTimeout(self.config.close_timeout),
                    });
                    let ending = Ending {
                        code: ABNORMAL,
                        reason: "close handshake timed out",
                        clean: false,
                    };
                    let (in_flight, _) = self.settle(c.id, c.in_flight, c.acks, false);
                    self.end(c.id, in_flight, SendFailure::ConnectionLost, false, ending);
                }
            }
            other => self.conn = other,
        }
        now
    }

    /// The open connection's timers due at `now`: keepalive, then the acknowledgement
    /// barrier and timeout.
    fn open_timers(&mut self, mut o: Open, now: Instant) {
        let paused = self.reading_paused || self.pool_paused;
        if let Some(l) = o.liveness
            && l.deadline <= now
        {
            let k = self.config.keepalive.expect("liveness implies keepalive");
            if paused {
                // Reading is paused for the application: a pong would wait behind the
                // backlog, which itself proves the peer alive.
                o.liveness = Some(Liveness {
                    deadline: now + k.interval,
                    awaiting_pong: false,
                });
            } else if l.awaiting_pong {
                self.fail_open(o, ConnectionError::KeepaliveTimeout(k.timeout), now);
                return;
            } else {
                self.actions.push_back(Action::Ping {
                    conn: o.id,
                    payload: Bytes::new(),
                });
                if let Some(acks) = &mut o.acks {
                    // Keepalive's ping is a barrier too.
                    acks.on_ping(Bytes::new(), now);
                }
                o.liveness = Some(Liveness {
                    deadline: now + k.timeout,
                    awaiting_pong: true,
                });
            }
        }
        let timer = o.acks.as_mut().and_then(|a| a.poll_timer(now, paused));
        match timer {
            Some(AckTimer::Ping(payload)) => {
                self.actions.push_back(Action::Ping {
                    conn: o.id,
                    payload,
                });
                self.conn = Conn::Open(o);
            }
            Some(AckTimer::TimedOut) => {
                let timeout = self
                    .config
                    .acknowledge
                    .map(|a| a.timeout)
                    .unwrap_or_default();
                self.fail_open(o, ConnectionError::AckTimeout(timeout), now);
            }
            None => self.conn = Conn::Open(o),
        }
    }

    /// Reports what [`written`] found.
    fn on_written(&mut self, conn: ConnId, id: SendId, written: Written) {
        match written {
            Written::Completed => self.emit(Event::SendCompleted { conn, id }),
            Written::Progress => {}
            Written::Unknown => self.stats.unexpected_inputs += 1,
        }
    }

    /// The peer acknowledged these sends: each completes as delivered.
    fn deliver(
        &mut self,
        conn: ConnId,
        in_flight: &mut SendQueue<usize>,
        acked: Vec<(SendId, Message)>,
    ) {
        for (id, _) in acked {
            in_flight.complete(id);
            let duplicate = self.duplicates.remove(&id);
            self.emit(Event::SendDelivered {
                conn,
                id,
                duplicate,
            });
        }
    }

    /// A connection ends with messages the peer has not acknowledged (delivery
    /// acknowledgement on): with `carry` they are returned, in order and marked as
    /// possible duplicates, to be sent first on the next connection; otherwise each fails
    /// as [`SendFailure::MaybeDelivered`], handed back. Returns what is left of
    /// `in_flight` for [`end`](Self::end) to fail (all of it when acknowledgement is off)
    /// and the carried messages.
    fn settle(
        &mut self,
        conn: ConnId,
        in_flight: SendQueue<usize>,
        acks: Option<Acks>,
        carry: bool,
    ) -> (SendQueue<usize>, SendQueue<Message>) {
        let Some(acks) = acks else {
            return (in_flight, SendQueue::default());
        };
        let mut carried = SendQueue::default();
        for (id, message) in acks.into_unacked() {
            if carry {
                self.duplicates.insert(id);
                carried.push(id, message);
            } else {
                self.duplicates.remove(&id);
                self.emit(Event::SendFailed {
                    conn,
                    id,
                    reason: SendFailure::MaybeDelivered,
                    message: Some(message),
                });
            }
        }
        (SendQueue::default(), carried)
    }

    /// Whether the reconnect policy carries queued messages to the next connection.
    fn carries_queue(&self) -> bool {
        self.config
            .reconnect
            .as_ref()
            .is_some_and(|r| r.carry_queue)
    }

    fn on_opened(&mut self, c: Connecting, handshake: Box<Handshake>, now: Instant) {
        if let Some(p) = &handshake.protocol
            && !c.request.protocols.contains(p)
        {
            self.connect_failed(c, ConnectionError::ProtocolNotOffered(p.clone()), now);
            return;
        }
        if handshake.deflate.is_some() && c.request.per_message_deflate.is_none() {
            self.connect_failed(c, ConnectionError::DeflateNotOffered, now);
            return;
        }
        let Connecting {
            id,
            request,
            mut queue,
            close_after_open,
            ..
        } = c;
        self.emit(Event::Open {
            conn: id,
            handshake,
        });
        let mut open = Open {
            id,
            request,
            in_flight: SendQueue::default(),
            liveness: None,
            pings: VecDeque::new(),
            acks: self.config.acknowledge.map(Acks::new),
        };
        open.touch(&self.config, now);
        // The queue is flushed, in order, before anything sent after open (messages resent
        // after a drop first). It fits the buffer because max_queued_bytes <=
        // max_buffered_bytes, and resent ones fitted the previous connection's buffer.
        for (send, message) in queue.drain() {
            open.in_flight.push(send, message.len());
            if let Some(acks) = &mut open.acks {
                acks.on_send(send, message.clone(), now);
            }
            self.actions.push_back(Action::Send {
                conn: id,
                id: send,
                message,
            });
        }
        self.transition(State::Connecting, Conn::Open(open));
        if let Some(request) = close_after_open {
            let Conn::Open(o) = self.take() else {
                unreachable!()
            };
            self.begin_close(o, request, now);
        }
    }

    fn begin_close(&mut self, o: Open, request: CloseRequest, now: Instant) {
        self.actions.push_back(Action::Close {
            conn: o.id,
            frame: request,
        });
        let closing = Closing {
            id: o.id,
            request: o.request,
            in_flight: o.in_flight,
            deadline: now + self.config.close_timeout,
            peer: None,
            local: true,
            began: true,
            acks: o.acks,
        };
        let conn = closing.id;
        self.transition(State::Open, Conn::Closing(closing));
        self.release_reads(conn);
    }

    /// A connection that never opened failed: error event, queue failed (or kept for the
    /// next attempt), close 1006, then a reconnect if the policy says so.
    fn connect_failed(&mut self, c: Connecting, error: ConnectionError, now: Instant) {
        let cause = match &error {
            // `AfterOpen`: the application already asked to close this socket.
            _ if c.close_after_open.is_some() => Cause::Application,
            ConnectionError::ConnectFailed(e) => Cause::Dial(Some(e.kind)),
            ConnectionError::ProtocolNotOffered(_) | ConnectionError::DeflateNotOffered => {
                Cause::Mismatch
            }
            _ => Cause::Dial(None),
        };
        let reason = error.to_string();
        self.emit(Event::Error { conn: c.id, error });
        self.actions.push_back(Action::Abort { conn: c.id });
        let retry = self.retry(cause, c.attempt + 1);
        let carry = retry
            && self
                .config
                .reconnect
                .as_ref()
                .is_some_and(|r| r.carry_queue);
        let (failed, carried) = if carry {
            (SendQueue::default(), c.queue)
        } else {
            (c.queue, SendQueue::default())
        };
        let ending = Ending {
            code: ABNORMAL,
            reason: &reason,
            clean: false,
        };
        self.end(c.id, failed, SendFailure::ConnectFailed, false, ending);
        if retry {
            self.back_off(c.request, carried, c.attempt + 1, reason, now);
        }
    }

    /// An open connection failed: error event, in-flight sends failed, close event with the
    /// failure's code (a close frame is still attempted for protocol-level failures), then
    /// a reconnect if the policy says so.
    fn fail_open(&mut self, o: Open, error: ConnectionError, now: Instant) {
        let code = match &error {
            ConnectionError::Transport(e) => e.kind.close_code(),
            _ => ABNORMAL,
        };
        let reason = error.to_string();
        let teardown = code != ABNORMAL;
        if teardown {
            self.actions.push_back(Action::Close {
                conn: o.id,
                frame: CloseRequest::internal(code, &reason),
            });
        } else {
            self.actions.push_back(Action::Abort { conn: o.id });
        }
        self.emit(Event::Error { conn: o.id, error });
        let ending = Ending {
            code,
            reason: &reason,
            clean: false,
        };
        let retry = self.retry(Cause::Lost, 1);
        let carry = retry && self.carries_queue();
        let (in_flight, carried) = self.settle(o.id, o.in_flight, o.acks, carry);
        self.end(
            o.id,
            in_flight,
            SendFailure::ConnectionLost,
            teardown,
            ending,
        );
        if retry {
            self.back_off(o.request, carried, 1, reason, now);
        }
    }

    /// The transport of a closing connection ended, or was aborted once both close frames
    /// were exchanged: the close event carries the peer's code, clean (RFC 6455 §7.1.4);
    /// without the peer's close frame, 1006 and not clean.
    fn finish_close(&mut self, mut c: Closing, now: Instant) {
        let Some(peer) = c.peer else {
            let ending = Ending {
                code: ABNORMAL,
                reason: "connection closed without a close frame",
                clean: false,
            };
            let (in_flight, _) = self.settle(c.id, c.in_flight, c.acks, false);
            self.end(c.id, in_flight, SendFailure::ConnectionLost, false, ending);
            return;
        };
        if c.began
            && let Some(acks) = &mut c.acks
        {
            // The peer answered our close frame: it read every message before it.
            let acked = acks.ack_all();
            self.deliver(c.id, &mut c.in_flight, acked);
        }
        let code = peer.reported_code();
        let ending = Ending {
            code,
            reason: &peer.reason,
            clean: true,
        };
        let cause = if c.local {
            Cause::Application
        } else {
            Cause::PeerClosed(code)
        };
        let retry = self.retry(cause, 1);
        let carry = retry && self.carries_queue();
        let (in_flight, carried) = self.settle(c.id, c.in_flight, c.acks, carry);
        self.end(c.id, in_flight, SendFailure::ConnectionLost, false, ending);
        if retry {
            let reason = format!("peer closed the connection with code {code}");
            self.back_off(c.request, carried, 1, reason, now);
        }
    }

    /// How long a connection whose close frames were both exchanged waits for the server
    /// to close TCP: [`crate::close::CLOSE_LINGER`], at most the close timeout.
    fn linger(&self) -> Duration {
        crate::close::CLOSE_LINGER.min(self.config.close_timeout)
    }

    /// Whether the reconnect policy dials again for `attempt` after an end of this cause.
    fn retry(&self, cause: Cause, attempt: u32) -> bool {
        !self.shut_down
            && self.config.reconnect.as_ref().is_some_and(|policy| {
                cause.retried_by(policy) && policy.max_attempts.is_none_or(|max| attempt <= max)
            })
    }

    /// Reconnection: the `Reconnecting` event, then a delay with full jitter.
    fn back_off(
        &mut self,
        request: Arc<HandshakeRequest>,
        queue: SendQueue<Message>,
        attempt: u32,
        last_error: String,
        now: Instant,
    ) {
        let policy = self
            .config
            .reconnect
            .as_ref()
            .expect("back_off only with a policy");
        // Never zero: like every other deadline, a backoff ends after the time it began
        // (the dial then comes from the next timer), even when the jitter draws 0.
        let delay = self
            .jitter
            .up_to(policy.ceiling(attempt))
            .max(Duration::from_nanos(1));
        let id = self.ids.conn();
        self.emit(Event::Reconnecting {
            conn: id,
            attempt,
            delay,
            last_error,
        });
        let backoff = Backoff {
            id,
            request,
            queue,
            attempt,
            deadline: now + delay,
        };
        self.transition(State::Closed, Conn::Backoff(backoff));
    }

    /// Ends the current connection from the application's view: fails every pending send,
    /// emits the one close event, moves to Closed and, with `teardown`, keeps timing the
    /// transport's shutdown. Every caller has just taken the connection out of Connecting,
    /// Open, Closing or a backoff, each of which has an edge to Closed in the state table.
    fn end<T: Entry>(
        &mut self,
        conn: ConnId,
        mut pending: SendQueue<T>,
        failure: SendFailure,
        teardown: bool,
        ending: Ending<'_>,
    ) {
        for (id, entry) in pending.drain() {
            self.duplicates.remove(&id);
            self.emit(Event::SendFailed {
                conn,
                id,
                reason: failure,
                message: entry.into_message(),
            });
        }
        self.emit(Event::Close {
            conn,
            code: ending.code,
            reason: ending.reason.to_owned(),
            clean: ending.clean,
        });
        if teardown {
            let deadline = self.now.expect("time is set before any connection exists")
                + self.config.close_timeout;
            self.teardowns.push(Teardown { id: conn, deadline });
        }
        self.transition(self.taken_from, Conn::Closed);
    }

    /// Single-socket replacement: the current connection's close event (1000,
    /// replaced) comes at once, its sends fail, and its transport is closed in the
    /// background under the close timeout.
    fn replace_current(&mut self, now: Instant) {
        let replaced = Ending {
            code: NORMAL,
            reason: REPLACED_REASON,
            clean: false,
        };
        match self.take() {
            Conn::Idle => self.conn = Conn::Idle,
            Conn::Closed => self.conn = Conn::Closed,
            Conn::Connecting(c) => {
                self.actions.push_back(Action::Abort { conn: c.id });
                self.end(c.id, c.queue, SendFailure::Replaced, false, replaced);
            }
            Conn::Backoff(b) => self.end(b.id, b.queue, SendFailure::Replaced, false, replaced),
            Conn::Open(o) => {
                self.actions.push_back(Action::Close {
                    conn: o.id,
                    frame: CloseRequest::internal(NORMAL, REPLACED_REASON),
                });
                let conn = o.id;
                let (in_flight, _) = self.settle(o.id, o.in_flight, o.acks, false);
                self.end(o.id, in_flight, SendFailure::Replaced, true, replaced);
                self.release_reads(conn);
            }
            Conn::Closing(c) => {
                // Its close handshake is already under way: keep its own deadline.
                let conn = c.id;
                let (in_flight, _) = self.settle(c.id, c.in_flight, c.acks, false);
                self.end(c.id, in_flight, SendFailure::Replaced, false, replaced);
                self.release_reads(conn);
                self.teardowns.push(Teardown {
                    id: c.id,
                    deadline: c.deadline.max(now),
                });
            }
        }
    }
}

/// What the driver's report that it wrote a send means.
enum Written {
    /// The send is complete (delivery acknowledgement off).
    Completed,
    /// Progress only: with acknowledgement on, the send completes when acknowledged.
    Progress,
    /// No send of the connection waits for it.
    Unknown,
}

/// The driver wrote send `id` of a connection with these sends in flight.
fn written(in_flight: &mut SendQueue<usize>, acks: Option<&mut Acks>, id: SendId) -> Written {
    let known = match acks {
        // Written is progress; the send completes when it is acknowledged.
        Some(acks) => {
            if acks.on_written(id) {
                return Written::Progress;
            }
            false
        }
        None => in_flight.complete(id),
    };
    if known {
        Written::Completed
    } else {
        Written::Unknown
    }
}

impl Open {
    /// Something arrived: the peer is alive; restart the idle interval.
    fn touch(&mut self, config: &SessionConfig, now: Instant) {
        self.liveness = config.keepalive.map(|k| Liveness {
            deadline: now + k.interval,
            awaiting_pong: false,
        });
    }
}
