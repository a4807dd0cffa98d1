//! The single-socket session: the one-WebSocket-at-a-time model of `wx.connectSocket`.
//!
//! [`Session`] holds the current state ([`Conn`]) and everything else ([`Context`]). Each
//! state is a struct in its own module ([`connecting`], [`open`], [`closing`], [`backoff`];
//! Idle and Closed hold nothing) that owns the handlers for input in that state: they take
//! the struct by value and `&mut Context`, and return the next state ([`Next`]), so data
//! that belongs to one state cannot leak into another. The session drops input for other
//! connections, picks the handler with one `match`, and changes state in one place,
//! [`Session::step`], which checks the edge against [`crate::TRANSITIONS`].

mod backoff;
mod closing;
mod connecting;
mod context;
mod held;
mod open;

use self::backoff::Backoff;
use self::closing::Closing;
use self::connecting::Connecting;
use self::context::{Context, Next};
use self::open::Open;
use crate::backlog::{Backlog, ReadCredit};
use crate::close::{CloseRequest, PeerClose};
use crate::config::SessionConfig;
use crate::error::{CloseError, ConfigError, ConnectError, FailedSend, PingError, SendError};
use crate::event::Event;
use crate::ids::{ConnId, SendId};
use crate::message::Message;
use crate::queue::SendQueue;
use crate::request::{ConnectOptions, HandshakeRequest};
use crate::state::{ReadyState, State, is_allowed};
use crate::transcript::{Input, Output, Recorder, Redaction};
use crate::transport::{Action, TransportError, TransportErrorKind, TransportEvent};
use bytes::Bytes;
use std::collections::VecDeque;
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
/// `poll_timeout`. Actions and events are separate queues, so either may be drained first,
/// but not once for all: taking events frees room under the receive bounds, which can
/// queue a `ResumeReading` for a paused connection, so repeat while
/// [`has_output`](Self::has_output) (a driver that sleeps until a socket is ready would
/// otherwise never read that connection again). Every input that takes `now` first runs
/// the timers that are due at `now`, so a deadline that has passed is honoured even if
/// `handle_timeout` was late; a `now` earlier than one seen before is treated as the latest
/// one (time never goes backwards). A timeout that waits for the peer (handshake, close,
/// keepalive, acknowledgement) whose timer runs more than a second late (or more than the
/// timeout, when shorter: the driver was not running) waits once more from `now` instead,
/// since the peer's answer may be the input behind it.
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
/// The transitions themselves are [`TRANSITIONS`](crate::TRANSITIONS). With a
/// [`crate::ReconnectPolicy`], a connection the application did not close that ends
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
    conn: Conn,
    /// Everything but the current state; a state's handlers get `&mut` to it.
    pub(crate) cx: Context,
    /// `Some` while recording a transcript ([`Session::start_recording`]).
    recorder: Option<Box<Recorder>>,
}

/// A send's outcome as a driver sees it ([`Session::poll_completion`]). A failure is boxed:
/// every connection of a pool keeps a queue of these, and failures are rare.
pub type Completion = (SendId, Result<(), Box<FailedSend>>);

/// Counters of input the session did not act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Transport input for a connection that is not the current one.
    pub stale_inputs: u64,
    /// Transport input for the current connection that makes no sense in its state
    /// (a message before open, an unknown `SendId`, …).
    pub unexpected_inputs: u64,
    /// How many times reading paused because the application had not taken the received
    /// messages (flow control, [`ReadCredit`]).
    pub read_pauses: u64,
    /// How long reading was paused in all, up to the last input after the latest resume.
    pub read_paused_for: Duration,
}

/// Most application pings waiting for their pong ([`Session::ping`]).
pub const MAX_PINGS: usize = 16;

/// The current state: what only exists in a state lives only in that state's struct, and a
/// transition consumes the old one. The structs are boxed, so handing a state to its
/// handler and taking the next one back moves a pointer, not the state's data.
#[derive(Debug)]
enum Conn {
    Idle,
    Connecting(Box<Connecting>),
    Open(Box<Open>),
    Closing(Box<Closing>),
    /// Waiting out a reconnect delay; the application sees `Connecting`.
    Backoff(Box<Backoff>),
    Closed,
}

impl Conn {
    /// The state in the graph's terms ([`State`]): the reconnect delay is a state of its own.
    fn state(&self) -> State {
        match self {
            Conn::Idle => State::Idle,
            Conn::Connecting(_) => State::Connecting,
            Conn::Backoff(_) => State::Backoff,
            Conn::Open(_) => State::Open,
            Conn::Closing(_) => State::Closing,
            Conn::Closed => State::Closed,
        }
    }
}

impl Session {
    /// A session in the Idle state. The configuration is checked first.
    pub fn new(config: SessionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            conn: Conn::Idle,
            cx: Context::new(config),
            recorder: None,
        })
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cx.config
    }

    /// The state (`readyState`).
    pub fn state(&self) -> ReadyState {
        self.conn.state().ready_state()
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

    /// Bytes accepted by `send` but not yet confirmed written (with delivery
    /// acknowledgement on: not yet acknowledged): queued while connecting, or handed to the
    /// driver while open or closing. At most `max_buffered_bytes`, or one message alone up
    /// to `max_message_size` when that is larger (see
    /// [`SessionConfig::max_buffered_bytes`](crate::SessionConfig::max_buffered_bytes)).
    pub fn buffered_amount(&self) -> usize {
        match &self.conn {
            Conn::Connecting(c) => c.queue.bytes(),
            Conn::Backoff(b) => b.queue.bytes(),
            Conn::Open(o) => o.in_flight.bytes(),
            Conn::Closing(c) => c.in_flight.bytes() + c.next.bytes(),
            Conn::Idle | Conn::Closed => 0,
        }
    }

    /// Messages queued or in flight for the current connection.
    pub fn pending_sends(&self) -> usize {
        match &self.conn {
            Conn::Connecting(c) => c.queue.len(),
            Conn::Backoff(b) => b.queue.len(),
            Conn::Open(o) => o.in_flight.len(),
            Conn::Closing(c) => c.in_flight.len() + c.next.len(),
            Conn::Idle | Conn::Closed => 0,
        }
    }

    /// Connections closed from the application's view whose transport is still being torn
    /// down (each is aborted when its close timeout passes).
    pub fn teardowns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.cx.teardowns.iter().map(|t| t.id)
    }

    /// Received messages and send completions waiting for the application.
    pub fn backlog(&self) -> Backlog {
        self.cx.backlog
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
        if self.cx.reading_paused {
            return ReadCredit::PAUSED;
        }
        self.cx.backlog.credit(
            self.cx.config.max_received_messages,
            self.cx.config.max_received_bytes,
        )
    }

    /// Whether reading is paused for the application (see [`read_credit`](Self::read_credit)).
    pub fn is_reading_paused(&self) -> bool {
        self.cx.reading_paused
    }

    /// Counters, and the time reading spent paused.
    pub fn stats(&self) -> Stats {
        self.cx.stats
    }

    /// Whether an action or event is waiting to be polled.
    pub fn has_output(&self) -> bool {
        !self.cx.actions.is_empty()
            || !self.cx.events.is_empty()
            || self.cx.completions.as_ref().is_some_and(|c| !c.is_empty())
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
    /// request again). What its public fields allow a caller to change after validation is
    /// checked again (scheme, timeout, headers, sub-protocols), with `connect`'s errors.
    /// After [`shutdown`](Self::shutdown): `ConnectError::ShutDown`.
    pub fn connect_request(
        &mut self,
        request: Arc<HandshakeRequest>,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        request.check()?;
        if self.recorder.is_some() {
            return self.connect_recorded(request, now);
        }
        // Like every call, a refused one still runs the timers due at `now`.
        self.advance(now);
        if self.cx.shut_down {
            return Err(ConnectError::ShutDown);
        }
        let id = self.cx.ids.conn();
        self.connect_as(id, request, now);
        Ok(id)
    }

    /// What the reconnect policy dials from its next attempt on: validates `options` as
    /// [`connect`](Self::connect) does (nothing changes on error) and keeps them for the
    /// next reconnection, which then goes on dialling them. The current connection is not
    /// touched: an open one stays open, a dial in progress goes on with what it sent.
    /// For what changes between attempts: a token in the URL or a header that expires (as
    /// Socket.IO's `auth` callback or SignalR's `accessTokenFactory` are asked again on
    /// every reconnection), or another server. Call it when a token is renewed, or on the
    /// [`Event::Reconnecting`] that says an attempt is coming (it dials when its delay is
    /// over). Without a reconnect policy nothing dials it. With no connection to
    /// reconnect (before the first `connect`, or once the last has ended for good):
    /// [`ConnectError::NoConnection`]; after [`shutdown`](Self::shutdown):
    /// [`ConnectError::ShutDown`]. A later `connect` drops it.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use wxsocket_core::*;
    /// let policy = ReconnectPolicy::default();
    /// let mut session = Session::new(SessionConfig::default().reconnect(policy)).unwrap();
    /// let now = Instant::now();
    /// let conn = session.connect(&ConnectOptions::new("wss://example.com/?token=old"), now).unwrap();
    /// while session.poll_action().is_some() {} // the driver dials the old token
    /// session.handle(conn, TransportEvent::Opened(Box::default()), now);
    /// // The token was renewed; the connection drops later.
    /// session.reconnect_with(&ConnectOptions::new("wss://example.com/?token=new"), now).unwrap();
    /// let lost = TransportError::new(TransportErrorKind::Io, "reset");
    /// session.handle(conn, TransportEvent::Error(lost), now);
    /// let later = now + Duration::from_secs(1);
    /// session.handle_timeout(later);
    /// let dialled = std::iter::from_fn(|| session.poll_action()).find_map(|a| match a {
    ///     Action::Dial { request, .. } => Some(request.url.to_string()),
    ///     _ => None,
    /// });
    /// assert_eq!(dialled.as_deref(), Some("wss://example.com/?token=new"));
    /// ```
    pub fn reconnect_with(
        &mut self,
        options: &ConnectOptions,
        now: Instant,
    ) -> Result<(), ConnectError> {
        let request = options.validate()?;
        self.reconnect_with_request(Arc::new(request), now)
    }

    /// [`reconnect_with`](Self::reconnect_with) with a request validated earlier, checked
    /// again as [`connect_request`](Self::connect_request) checks it.
    pub fn reconnect_with_request(
        &mut self,
        request: Arc<HandshakeRequest>,
        now: Instant,
    ) -> Result<(), ConnectError> {
        request.check()?;
        if self.recorder.is_some() {
            let input = Input::ReconnectWith(Arc::clone(&request));
            return self.recorded_with(input, |s| s.reconnect_with_request(request, now));
        }
        self.advance(now);
        if self.cx.shut_down {
            return Err(ConnectError::ShutDown);
        }
        if self.current().is_none() {
            return Err(ConnectError::NoConnection);
        }
        self.cx.next_request = Some(request);
        Ok(())
    }

    /// Single-socket replacement: the current connection's close event (1000, replaced)
    /// comes at once, its sends fail, and its transport is closed in the background under
    /// the close timeout; then connection `id` is dialled.
    pub(crate) fn connect_as(&mut self, id: ConnId, request: Arc<HandshakeRequest>, now: Instant) {
        let now = self.advance(now);
        self.cx.next_request = None;
        self.step(|conn, cx| {
            match conn {
                Conn::Idle | Conn::Closed => {}
                Conn::Connecting(c) => c.replace(cx),
                Conn::Backoff(b) => b.replace(cx),
                Conn::Open(o) => o.replace(cx),
                Conn::Closing(c) => c.replace(cx, now),
            }
            let queue = SendQueue::default();
            Conn::Connecting(Connecting::dial(cx, id, request, queue, 0, now)).into()
        });
    }

    /// `wx.sendSocketMessage`: queues the message while connecting, hands it to the driver
    /// when open. A refused message is handed back in the error.
    pub fn send(&mut self, message: Message, now: Instant) -> Result<SendId, SendError> {
        if self.recorder.is_some() {
            return self.send_recorded(message, now);
        }
        let now = self.advance(now);
        let cx = &mut self.cx;
        let max = cx.config.max_message_size;
        if message.len() > max {
            let len = message.len();
            return Err(SendError::TooLarge { message, len, max });
        }
        let completions_full = cx.completions_full();
        // Handed over, a send can start the acknowledgement's timers.
        cx.due = None;
        match &mut self.conn {
            Conn::Idle | Conn::Closed => Err(SendError::NotConnected(message)),
            Conn::Closing(c) if !c.will_reconnect(cx) => Err(SendError::Closing(message)),
            _ if completions_full => Err(SendError::CompletionsFull(message)),
            Conn::Closing(c) => c.queue_for_next(cx, message),
            Conn::Connecting(c) if c.close_after_open.is_some() => Err(SendError::Closing(message)),
            Conn::Connecting(c) => queue(cx, &mut c.queue, message),
            Conn::Backoff(b) => queue(cx, &mut b.queue, message),
            Conn::Open(o) => o.send(cx, message, now),
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
        let full = self.cx.backlog.completions >= self.cx.config.max_untaken_completions;
        let o = match &mut self.conn {
            Conn::Open(o) => o,
            Conn::Connecting(_) | Conn::Backoff(_) => return Err(PingError::NotOpenYet),
            _ => return Err(PingError::NotOpen),
        };
        // A ping can start the acknowledgement's barrier.
        self.cx.due = None;
        o.ping(&mut self.cx, payload, full, now)
    }

    /// `wx.closeSocket` / `SocketTask.close(code, reason)`: code 1000 (the default, `None`)
    /// or 3000–4999, reason at most 123 UTF-8 bytes; an invalid one changes nothing. During
    /// a reconnect delay it cancels the reconnection: the close event is then 1006
    /// ("reconnection cancelled"), there being no connection to close with the code given.
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
        self.step_with(|conn, cx| match conn {
            Conn::Idle | Conn::Closed => (conn.into(), Err(CloseError::NotConnected)),
            Conn::Connecting(c) => c.close(cx, request),
            Conn::Open(o) => (o.close(cx, request, now), Ok(())),
            Conn::Closing(c) => (c.close(), Ok(())),
            Conn::Backoff(b) => (b.cancelled(cx), Ok(())),
        })
    }

    /// Shuts the session down, as a driver does when its application lets go of every
    /// handle: an open connection is closed with 1000 (close frame, then the close
    /// timeout as for [`close`](Self::close)); a dial in progress is aborted whatever the
    /// [`crate::CloseBeforeOpen`] policy (its queued messages fail as cancelled, close event
    /// 1006); a reconnect delay is cancelled; a close under way goes on and is never
    /// retried. From then on `connect` fails with `ConnectError::ShutDown`. The driver
    /// keeps carrying out actions and feeding input until [`is_drained`](Self::is_drained).
    /// Calling it again does nothing.
    pub fn shutdown(&mut self, now: Instant) {
        if self.recorder.is_some() {
            return self.recorded(Input::Shutdown, |s| s.shutdown(now));
        }
        let now = self.advance(now);
        self.cx.shut_down = true;
        self.step(|conn, cx| match conn {
            Conn::Idle | Conn::Closed => conn.into(),
            Conn::Connecting(c) => c.shutdown(cx),
            Conn::Open(o) => o.shutdown(cx, now),
            Conn::Closing(c) => c.close(),
            Conn::Backoff(b) => b.cancelled(cx),
        });
    }

    /// After [`shutdown`](Self::shutdown): whether every transport is finished, i.e. the
    /// connection is closed, nothing is being torn down, and every action was polled (the
    /// last `Abort` included). The driver may then stop; events may still be waiting.
    pub fn is_drained(&self) -> bool {
        self.cx.shut_down
            && matches!(self.conn, Conn::Idle | Conn::Closed)
            && self.cx.teardowns.is_empty()
            && self.cx.actions.is_empty()
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
            // A message for the open connection leaves it open: handled in place, without
            // the state taken out and put back (what `step` does for any input).
            TransportEvent::Message(message) => match &mut self.conn {
                Conn::Open(o) if o.id == conn => return o.on_message(&mut self.cx, message, now),
                _ => TransportEvent::Message(message),
            },
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
        // One match: the current connection's state handles the input; anything else is
        // input the session does not act on.
        self.step(|state, cx| match state {
            Conn::Connecting(c) if c.id == conn => c.on_event(cx, event, now),
            Conn::Open(o) if o.id == conn => o.on_event(cx, event, now),
            Conn::Closing(c) if c.id == conn => c.on_event(cx, event, now),
            Conn::Backoff(ref b) if b.id == conn => {
                cx.stats.unexpected_inputs += 1; // nothing was dialled for it yet
                state.into()
            }
            _ => {
                cx.stale_input(conn, &event, now);
                state.into()
            }
        });
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
        self.cx.actions.pop_front()
    }

    /// The event [`Self::poll_event`] would return next, left in place: a driver that hands
    /// events over ahead of the application can leave a large message where the receive
    /// bounds still count it (taking it frees room, and the connection may read the next).
    pub fn peek_event(&self) -> Option<&Event> {
        self.cx.events.front()
    }

    /// The next event for the application. Taking a received message frees room under
    /// the receive bounds: once half of them is free, a paused connection gets
    /// [`Action::ResumeReading`].
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.recorder.is_some() {
            return self.poll_event_recorded();
        }
        let event = self.cx.events.pop_front()?;
        match &event {
            Event::Message { message, .. } => {
                self.cx.backlog.messages -= 1;
                self.cx.backlog.bytes -= message.len();
                if self.cx.reading_paused
                    && self.cx.backlog.is_low(
                        self.cx.config.max_received_messages,
                        self.cx.config.max_received_bytes,
                    )
                {
                    self.cx.reading_paused = false;
                    self.cx.resumed = true;
                    if let Some(conn) = self.reading_conn() {
                        self.cx.actions.push_back(Action::ResumeReading { conn });
                    }
                }
            }
            Event::SendCompleted { .. }
            | Event::SendDelivered { .. }
            | Event::SendFailed { .. }
            | Event::Pong { .. } => {
                self.cx.backlog.completions -= 1;
            }
            _ => {}
        }
        if !self.cx.held.is_empty() && self.cx.notices_untaken() < crate::RECONNECT_HOLD_NOTICES {
            self.cx.release_held();
        }
        Some(event)
    }

    /// Takes the waiting events, in order, onto the back of `into` for as long as `admit`
    /// accepts the next one (it sees each event before it is taken; the first it refuses
    /// stays, with those after it); returns how many it took. The same as taking each with
    /// [`poll_event`](Self::poll_event) after asking `admit` about it, in fewer steps: for a
    /// driver that hands events over in batches.
    ///
    /// ```
    /// # use std::collections::VecDeque;
    /// # use std::time::Instant;
    /// # use wxsocket_core::*;
    /// let mut session = Session::new(SessionConfig::default()).unwrap();
    /// let now = Instant::now();
    /// let conn = session.connect(&ConnectOptions::new("ws://127.0.0.1:9000"), now).unwrap();
    /// session.handle(conn, TransportEvent::Opened(Box::default()), now);
    /// for text in ["a", "b", "c"] {
    ///     session.handle(conn, TransportEvent::Message(Message::text(text)), now);
    /// }
    /// // `Connecting`, `Open` and the first message; the other two wait.
    /// let mut batch = VecDeque::new();
    /// let mut room = 3;
    /// let taken = session.poll_events_into(&mut batch, |_| {
    ///     room -= 1;
    ///     room >= 0
    /// });
    /// assert_eq!(taken, 3);
    /// assert!(matches!(&batch[2], Event::Message { message, .. } if message == &Message::text("a")));
    /// assert_eq!(session.backlog().messages, 2);
    /// ```
    pub fn poll_events_into(
        &mut self,
        into: &mut VecDeque<Event>,
        mut admit: impl FnMut(&Event) -> bool,
    ) -> usize {
        // Recorded, each poll is a line of the transcript; and taking events can release
        // a held attempt's notices part of the way (onto the back of the queue).
        if self.recorder.is_some() || !self.cx.held.is_empty() {
            let mut taken = 0;
            while self.cx.events.front().is_some_and(&mut admit) {
                into.extend(self.poll_event());
                taken += 1;
            }
            return taken;
        }
        let cx = &mut self.cx;
        let (mut taken, mut messages, mut bytes, mut completions) = (0, 0, 0, 0);
        for event in &cx.events {
            if !admit(event) {
                break;
            }
            taken += 1;
            match event {
                Event::Message { message, .. } => {
                    messages += 1;
                    bytes += message.len();
                }
                Event::SendCompleted { .. }
                | Event::SendDelivered { .. }
                | Event::SendFailed { .. }
                | Event::Pong { .. } => completions += 1,
                _ => {}
            }
        }
        let rest = cx.events.len() - taken;
        if rest == 0 && into.is_empty() {
            // All of them: the queues change places (the empty one is kept for the next).
            std::mem::swap(into, &mut cx.events);
        } else if rest == 0 {
            into.append(&mut cx.events);
        } else {
            into.extend(cx.events.drain(..taken));
        }
        cx.backlog.messages -= messages;
        cx.backlog.bytes -= bytes;
        cx.backlog.completions -= completions;
        // Taken one at a time, reading resumes after the message that brings the backlog
        // down to half its bounds; the backlog only goes down as events are taken, and
        // nothing else is queued meanwhile, so checking once after the last is the same.
        if messages > 0
            && cx.reading_paused
            && cx.backlog.is_low(
                cx.config.max_received_messages,
                cx.config.max_received_bytes,
            )
        {
            cx.reading_paused = false;
            cx.resumed = true;
            if let Some(conn) = self.reading_conn() {
                self.cx.actions.push_back(Action::ResumeReading { conn });
            }
        }
        taken
    }

    /// Makes the session keep every send's outcome for [`poll_completion`](Self::poll_completion)
    /// (whether or not `SendCompleted` events are queued): for a driver whose sends can be
    /// awaited. The driver must then drain them after every call.
    pub fn track_completions(&mut self, on: bool) {
        // Turned on again, it keeps the outcomes not yet polled (a driver waits for them).
        match (on, &self.cx.completions) {
            (true, Some(_)) => {}
            _ => self.cx.completions = on.then(VecDeque::new),
        }
        self.record(&Input::TrackCompletions(on), Output::None);
    }

    /// The next send outcome, with [`track_completions`](Self::track_completions) on.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        let completion = self.cx.completions.as_mut()?.pop_front();
        if let (true, Some(c)) = (self.recorder.is_some(), &completion) {
            self.record(&Input::PollCompletion, Output::Debug(c));
        }
        completion
    }

    // ----- recording -----

    /// Starts recording a transcript of this session (see [`transcript`](crate::transcript)):
    /// `sink` gets the header line (the configuration, the reconnect seed, the redacted header
    /// names) at once, then one line per input as the input is taken, each without its line
    /// break. Call it before the first input, right after [`new`](Self::new): a transcript
    /// replays from a fresh session. Header values named in `redaction` never reach the sink.
    /// Starting again replaces the sink (and writes a new header).
    ///
    /// The sink runs inside the call that took the input, so it should be quick (append
    /// to a buffer or a buffered file); the core itself does no IO.
    pub fn start_recording(
        &mut self,
        redaction: Redaction,
        sink: impl FnMut(&str) + Send + 'static,
    ) {
        self.recorder = Some(Box::new(Recorder::new(
            &self.cx.config,
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
        let action = self.cx.actions.pop_front();
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
        let now = self.cx.now;
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(now, input, output);
        }
    }

    /// Whether events wait for the application.
    pub fn has_events(&self) -> bool {
        !self.cx.events.is_empty()
    }

    /// Whether an action waits for the driver (the [`Pool`](crate::Pool) keeps a ready-queue).
    pub(crate) fn has_actions(&self) -> bool {
        !self.cx.actions.is_empty()
    }

    /// Whether a send outcome waits for [`poll_completion`](Self::poll_completion).
    pub(crate) fn has_completions(&self) -> bool {
        self.cx.completions.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: the earliest of
    /// the handshake, close, keepalive, reconnect and teardown deadlines. Never earlier than
    /// the latest `now` the session has seen.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.conn {
            Conn::Connecting(c) => Some(c.deadline),
            Conn::Backoff(b) => Some(b.deadline),
            Conn::Open(o) => o.deadline(),
            Conn::Closing(c) => Some(c.deadline),
            Conn::Idle | Conn::Closed => None,
        };
        self.cx
            .teardowns
            .iter()
            .map(|t| t.deadline)
            .chain(state)
            .min()
    }

    // ----- internals -----

    /// The connection whose messages reach the application, and so are flow-controlled:
    /// the open one, or one closing by our close frame under `receive_while_closing`.
    pub(crate) fn reading_conn(&self) -> Option<ConnId> {
        match &self.conn {
            Conn::Open(o) => Some(o.id),
            Conn::Closing(c) if c.is_reading(&self.cx.config) => Some(c.id),
            _ => None,
        }
    }

    /// The one place the state changes: `input` consumes the current state and returns
    /// the next; the edge (both edges, when the input went through another state) must be
    /// in [`TRANSITIONS`](crate::TRANSITIONS). Staying in a state is not a transition.
    fn step(&mut self, input: impl FnOnce(Conn, &mut Context) -> Next) {
        self.step_with(|conn, cx| (input(conn, cx), ()));
    }

    /// [`step`](Self::step) for an input that also returns a result to its caller.
    fn step_with<T>(&mut self, input: impl FnOnce(Conn, &mut Context) -> (Next, T)) -> T {
        let from = self.conn.state();
        // The handler may change any deadline.
        self.cx.due = None;
        // `Closed` stands in for the moment the handler owns the state.
        let current = std::mem::replace(&mut self.conn, Conn::Closed);
        let (Next { via, conn }, result) = input(current, &mut self.cx);
        let to = conn.state();
        debug_assert!(
            match via {
                Some(via) => is_allowed(from, via) && is_allowed(via, to),
                None => from == to || is_allowed(from, to),
            },
            "{from} -> {}{to} is not in TRANSITIONS",
            via.map_or(String::new(), |v| format!("{v} -> "))
        );
        // What it replaces is the `Closed` put there above (the handler cannot reach
        // `self.conn`): nothing to drop, and no drop glue on the per-message path.
        std::mem::forget(std::mem::replace(&mut self.conn, conn));
        result
    }

    /// Records `now`, runs every timer due, and returns the effective time.
    fn advance(&mut self, now: Instant) -> Instant {
        let cx = &mut self.cx;
        let now = match cx.now {
            Some(last) if now < last => last,
            _ => now,
        };
        cx.now = Some(now);
        if cx.resumed {
            cx.resumed = false;
            if let Some(since) = cx.paused_since.take() {
                cx.stats.read_paused_for += now.saturating_duration_since(since);
            }
        }
        let due = match self.cx.due {
            Some(due) => due,
            None => *self.cx.due.insert(self.poll_timeout()),
        };
        // Every debug build (the model and property tests, the adapters' tests over
        // loopback, the fuzz corpus replay) holds the kept deadline to a fresh one: a stale
        // one would leave a timer unrun.
        debug_assert_eq!(due, self.poll_timeout(), "the kept deadline is stale");
        if due.is_none_or(|t| t > now) {
            return now;
        }
        // Teardowns: abort transports that did not finish closing in time.
        let cx = &mut self.cx;
        let mut i = 0;
        while i < cx.teardowns.len() {
            if cx.teardowns[i].deadline <= now {
                let t = cx.teardowns.swap_remove(i);
                cx.actions.push_back(Action::Abort { conn: t.id });
            } else {
                i += 1;
            }
        }
        // Each state's timer handler does nothing when its own deadline is not due.
        self.step(|state, cx| match state {
            Conn::Connecting(c) => c.on_timeout(cx, now),
            Conn::Backoff(b) => b.on_timeout(cx, now),
            Conn::Open(o) => o.on_timeout(cx, now),
            Conn::Closing(c) => c.on_timeout(cx, now),
            Conn::Idle | Conn::Closed => state.into(),
        });
        now
    }
}

/// Queues a send while connecting or backing off, within the queue's bounds.
fn queue(
    cx: &mut Context,
    queue: &mut SendQueue<Message>,
    message: Message,
) -> Result<SendId, SendError> {
    if !queue.fits(
        message.len(),
        cx.config.max_queued_messages,
        cx.config.max_queued_bytes,
    ) {
        return Err(SendError::QueueFull(message));
    }
    let id = cx.accept_send();
    queue.push(id, message);
    Ok(id)
}

#[cfg(test)]
mod due_tests {
    //! The deadline `advance` keeps ([`Context::due`]) against `poll_timeout` computed
    //! afresh, after every input of random runs with keepalive and delivery
    //! acknowledgement on or off: every input that moves a deadline must clear it.
    use super::*;
    use crate::close::PeerClose;
    use crate::config::{Acknowledgement, ReconnectPolicy};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Connect,
        Opened,
        Message,
        Send,
        Written,
        Ping,
        /// The peer answers one of the pings the driver was asked to send (by index).
        Pong(usize),
        Close,
        PeerClosed,
        CloseWritten,
        Closed,
        Error,
        Replace,
        Shutdown,
        Take,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::Connect),
            3 => Just(Op::Opened),
            4 => Just(Op::Message),
            3 => Just(Op::Send),
            2 => Just(Op::Written),
            2 => Just(Op::Ping),
            3 => (0usize..4).prop_map(Op::Pong),
            1 => Just(Op::Close),
            1 => Just(Op::PeerClosed),
            1 => Just(Op::CloseWritten),
            1 => Just(Op::Closed),
            1 => Just(Op::Error),
            1 => Just(Op::Replace),
            1 => Just(Op::Shutdown),
            2 => Just(Op::Take),
            5 => (0u64..400).prop_map(Op::Advance),
        ]
    }

    struct Run {
        session: Session,
        now: Instant,
        sent: VecDeque<SendId>,
        pings: Vec<Bytes>,
        /// Inputs after which `advance` used the deadline it kept.
        hits: usize,
    }

    impl Run {
        fn apply(&mut self, op: &Op) {
            let s = &mut self.session;
            let now = self.now;
            let current = s.current();
            if s.cx.due.is_some() {
                self.hits += 1;
            }
            match op {
                Op::Connect => {
                    let _ = s.connect(&ConnectOptions::new("ws://127.0.0.1:9"), now);
                }
                Op::Replace => {
                    if current.is_some() {
                        let _ = s.connect(&ConnectOptions::new("ws://127.0.0.1:9/b"), now);
                    }
                }
                Op::Opened => {
                    if let Some(c) = current {
                        s.handle(c, TransportEvent::Opened(Box::default()), now);
                    }
                }
                Op::Message => {
                    if let Some(c) = current {
                        s.handle(c, TransportEvent::Message(Message::text("m")), now);
                    }
                }
                Op::Send => {
                    let _ = s.send(Message::text("s"), now);
                }
                Op::Written => {
                    if let (Some(c), Some(id)) = (current, self.sent.pop_front()) {
                        s.handle(c, TransportEvent::SendWritten(id), now);
                    }
                }
                Op::Ping => {
                    let _ = s.ping(Bytes::from_static(b"app"), now);
                }
                Op::Pong(back) => {
                    if let Some(c) = current
                        && !self.pings.is_empty()
                    {
                        let at = self.pings.len() - 1 - back % self.pings.len();
                        let payload = self.pings.remove(at);
                        s.handle(c, TransportEvent::Pong(payload), now);
                    }
                }
                Op::Close => {
                    let _ = s.close(None, "", now);
                }
                Op::PeerClosed => {
                    if let Some(c) = current {
                        let peer = PeerClose {
                            code: Some(1000),
                            reason: String::new(),
                        };
                        s.handle(c, TransportEvent::PeerClosed(peer), now);
                    }
                }
                Op::CloseWritten => {
                    for c in current.into_iter().chain(s.teardowns().collect::<Vec<_>>()) {
                        s.handle(c, TransportEvent::CloseWritten, now);
                    }
                }
                Op::Closed => {
                    let teardown = s.teardowns().next();
                    if let Some(c) = teardown.or(current) {
                        s.handle(c, TransportEvent::Closed, now);
                    }
                }
                Op::Error => {
                    if let Some(c) = current {
                        let e = TransportError::new(TransportErrorKind::Io, "reset");
                        s.handle(c, TransportEvent::Error(e), now);
                    }
                }
                Op::Shutdown => s.shutdown(now),
                Op::Take => while s.poll_event().is_some() {},
                Op::Advance(ms) => {
                    self.now += Duration::from_millis(*ms);
                    s.handle_timeout(self.now);
                }
            }
            while let Some(action) = s.poll_action() {
                match action {
                    Action::Send { id, .. } => self.sent.push_back(id),
                    Action::Ping { payload, .. } => self.pings.push(payload),
                    Action::Dial { .. } => self.sent.clear(),
                    _ => {}
                }
            }
            if let Some(due) = s.cx.due {
                assert_eq!(due, s.poll_timeout(), "after {op:?}");
            }
        }
    }

    fn run(config: SessionConfig) -> Run {
        Run {
            session: Session::new(config).unwrap(),
            now: Instant::now(),
            sent: VecDeque::new(),
            pings: Vec::new(),
            hits: 0,
        }
    }

    /// The one state in which an application's ping moves a deadline, which the random runs
    /// do not reach: a barrier still waits for its pong, every message it covers is
    /// acknowledged (so the acknowledgement timeout waits for nothing), and a message sent
    /// since waits for a barrier. The ping sends that barrier after it, and the timeout
    /// starts waiting for its pong.
    #[test]
    fn a_ping_that_starts_the_acknowledgement_wait_moves_the_deadline() {
        let mut run = run(SessionConfig::default().acknowledge(Acknowledgement::default()));
        // The barrier after the first message (its 1 ms delay), then the application's
        // ping with a second barrier behind it; the first barrier's pong acknowledges the
        // message, and another is sent.
        for op in [Op::Connect, Op::Opened, Op::Send, Op::Advance(5), Op::Ping] {
            run.apply(&op);
        }
        assert_eq!(run.pings.len(), 3, "a barrier, the ping, a barrier");
        for op in [Op::Pong(2), Op::Send] {
            run.apply(&op);
        }
        assert_eq!(run.session.poll_timeout(), None, "nothing waits yet");
        run.apply(&Op::Ping);
        assert!(
            run.session.poll_timeout().is_some(),
            "the ping started the wait"
        );
        run.apply(&Op::Message);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn the_deadline_kept_is_the_one_computed_afresh(
            ops in proptest::collection::vec(op(), 1..150),
            keepalive in any::<bool>(),
            acks in any::<bool>(),
            reconnect in any::<bool>(),
        ) {
            let mut config = SessionConfig::default()
                .close_timeout(Duration::from_millis(300))
                .receive_bounds(4, 1 << 10);
            if keepalive {
                config = config.keepalive(Duration::from_millis(200), Duration::from_millis(100));
            }
            if acks {
                config = config.acknowledge(Acknowledgement::default());
            }
            if reconnect {
                config = config.reconnect(ReconnectPolicy::default().seed(3));
            }
            let mut run = run(config);
            for op in &ops {
                run.apply(op);
            }
            // Not vacuous: the kept deadline is used between inputs (checked over a run
            // long enough to have some).
            prop_assert!(ops.len() < 100 || run.hits > 0);
        }
    }
}
