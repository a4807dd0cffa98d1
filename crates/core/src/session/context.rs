//! What every state reads or writes besides its own data: the configuration, the output
//! queues, the counters, the receive backlog, the teardowns. A state's handler takes
//! `&mut Context` and its own struct by value, and returns the next state.

use super::held::HeldAttempt;
use super::{Completion, Conn, Stats, backoff::Backoff};
use crate::ack::Acks;
use crate::backlog::Backlog;
use crate::config::{ReconnectPolicy, SessionConfig};
use crate::error::{FailedSend, SendFailure};
use crate::event::Event;
use crate::ids::{ConnId, IdAllocator, SendId};
use crate::jitter::Jitter;
use crate::message::Message;
use crate::queue::{Entry, SendQueue};
use crate::request::HandshakeRequest;
use crate::state::State;
use crate::transport::{Action, TransportErrorKind, TransportEvent};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The session minus its current state (see the module doc).
#[derive(Debug)]
pub(crate) struct Context {
    pub(super) config: SessionConfig,
    pub(crate) ids: IdAllocator,
    /// Connections whose close event is out but whose transport is still being closed.
    pub(super) teardowns: Vec<Teardown>,
    pub(super) actions: VecDeque<Action>,
    pub(super) events: VecDeque<Event>,
    pub(super) now: Option<Instant>,
    pub(super) stats: Stats,
    pub(super) jitter: Jitter,
    /// Set by [`super::Session::shutdown`]: no new connection, no reconnection.
    pub(super) shut_down: bool,
    /// Received messages and completions waiting in `events`.
    pub(super) backlog: Backlog,
    /// Sends accepted whose outcome is not queued yet (queued, in flight, or written and
    /// waiting for acknowledgement): each will queue one completion, so they count toward
    /// `max_untaken_completions` with those waiting.
    pub(super) sends_pending: usize,
    /// Reading is paused: the backlog reached its bound and has not yet come down to
    /// half of it.
    pub(super) reading_paused: bool,
    /// When reading last paused, until the pause is accounted in `stats`.
    pub(super) paused_since: Option<Instant>,
    /// Reading resumed; the pause's length is added at the next input (which has a time).
    pub(super) resumed: bool,
    /// Reading is paused by the [`Pool`](crate::Pool) this session belongs to (its total bound):
    /// keepalive waits, and a close releases the reads, as for a pause of its own.
    pub(crate) pool_paused: bool,
    /// `Some` when a driver takes send outcomes with [`super::Session::poll_completion`].
    pub(super) completions: Option<VecDeque<Completion>>,
    /// Sends resent after a drop (delivery acknowledgement), until their outcome.
    pub(super) duplicates: BTreeSet<SendId>,
    /// The URL dialled last as `Connecting` events carry it, shared by every attempt to it.
    pub(super) dialled: Option<Arc<url::Url>>,
    /// The notices of a reconnection attempt held back while
    /// [`RECONNECT_HOLD_NOTICES`](crate::RECONNECT_HOLD_NOTICES) wait untaken. Never
    /// holds anything unless that many wait in `events`, so a driver that sees no event
    /// waiting is not missing one.
    pub(super) held: HeldAttempt,
    /// What the reconnect policy's next attempt dials instead of the current request
    /// ([`super::Session::reconnect_with`]); taken when it dials, dropped by `connect`.
    pub(super) next_request: Option<Arc<HandshakeRequest>>,
    /// [`super::Session::poll_timeout`] as `advance` last computed it, while no deadline
    /// has changed since (`None`: to be computed again). Whatever can change a deadline
    /// clears it: every step (a state's handler or a change of state), and the calls that
    /// act on the open connection in place (`send`, `ping`, a message received with
    /// keepalive or acknowledgement on).
    pub(super) due: Option<Option<Instant>>,
}

/// Where an open connection stands in the run of reconnect attempts
/// ([`Context::attempt_after`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    /// The attempt whose dial opened it (0: the application's `connect`).
    pub(super) attempt: u32,
    /// When it opened.
    pub(super) opened: Instant,
    /// When it stopped being open (its close began), once it did: how long it was up.
    pub(super) closing_since: Option<Instant>,
}

impl Run {
    /// The connection's close began at `now` (the close handshake's time is not uptime).
    pub(super) fn closing(self, now: Instant) -> Run {
        Run {
            closing_since: Some(self.closing_since.unwrap_or(now)),
            ..self
        }
    }
}

/// A connection no longer current whose transport is still closing (replaced, or failed
/// with a close frame to send): aborted at its deadline unless it ends first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Teardown {
    pub(super) id: ConnId,
    pub(super) deadline: Instant,
    /// The peer's close frame was read.
    pub(super) peer_closed: bool,
    /// Our close frame (or the answer to the peer's) was written.
    pub(super) written: bool,
}

impl Teardown {
    /// A teardown with neither close frame seen yet.
    pub(super) fn new(id: ConnId, deadline: Instant) -> Self {
        Self {
            id,
            deadline,
            peer_closed: false,
            written: false,
        }
    }
}

/// What a state's handler returns: the state the session is in after the input.
#[derive(Debug)]
pub(super) struct Next {
    /// A state the input went through on the way, whose two edges are checked too: Open,
    /// when a close asked for before open goes out as soon as it opens; Closed, before a
    /// reconnect delay.
    pub(super) via: Option<State>,
    pub(super) conn: Conn,
}

impl From<Conn> for Next {
    fn from(conn: Conn) -> Self {
        Next { via: None, conn }
    }
}

/// The close event a connection ends with.
pub(super) struct Ending<'a> {
    pub(super) code: u16,
    pub(super) reason: &'a str,
    pub(super) clean: bool,
}

/// Why a connection ended, as the reconnect policy judges it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cause {
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
            // A permanent redirect (301, 308) is not followed, and the same request meets
            // it again: final, as a refusal is (`retry_http_4xx` is about 4xx only).
            Cause::Dial(Some(TransportErrorKind::HttpStatus(301 | 308))) => false,
            // 429 Too Many Requests asks the client to come back later, as 503 does.
            Cause::Dial(Some(TransportErrorKind::HttpStatus(status)))
                if (400..500).contains(&status) && status != 429 =>
            {
                policy.retry_http_4xx
            }
            // A SOCKS5 proxy's refusal of this client, as an HTTP proxy's 407 or 403.
            Cause::Dial(Some(TransportErrorKind::ProxyRefused)) => policy.retry_http_4xx,
            Cause::Dial(_) | Cause::Lost => true,
            Cause::PeerClosed(code) => policy.retry_close_codes.contains(&code),
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

impl Context {
    pub(super) fn new(config: SessionConfig) -> Self {
        let seed = config.reconnect.as_ref().map_or(0, |r| r.seed);
        Self {
            config,
            ids: IdAllocator::default(),
            teardowns: Vec::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            now: None,
            stats: Stats::default(),
            jitter: Jitter::new(seed),
            shut_down: false,
            backlog: Backlog::default(),
            sends_pending: 0,
            reading_paused: false,
            paused_since: None,
            resumed: false,
            pool_paused: false,
            completions: None,
            duplicates: BTreeSet::new(),
            dialled: None,
            held: HeldAttempt::default(),
            next_request: None,
            due: None,
        }
    }

    /// The URL of `request` as its `Connecting` events carry it: one copy for all the
    /// attempts to it.
    pub(super) fn url_of(&mut self, request: &HandshakeRequest) -> Arc<url::Url> {
        match &self.dialled {
            Some(url) if **url == request.url => Arc::clone(url),
            _ => Arc::clone(self.dialled.insert(Arc::new(request.url.clone()))),
        }
    }

    /// A send accepted: its id, and one more outcome to come.
    pub(super) fn accept_send(&mut self) -> SendId {
        self.sends_pending += 1;
        self.ids.send()
    }

    /// Whether a new send would take the send completions past their bound: those waiting
    /// for the application, and one to come for every send accepted and not yet settled.
    pub(super) fn completions_full(&self) -> bool {
        self.backlog.completions + self.sends_pending >= self.config.max_untaken_completions
    }

    /// Events waiting for the application that are neither messages nor send outcomes:
    /// the connection's notices (`Connecting`, `Open`, `Error`, `Reconnecting`, …).
    pub(super) fn notices_untaken(&self) -> usize {
        self.events
            .len()
            .saturating_sub(self.backlog.messages + self.backlog.completions)
    }

    /// Queues an event for the application, unless it is a notice of a reconnection
    /// attempt held back for the notices untaken ([`HeldAttempt`]).
    pub(super) fn emit(&mut self, event: Event) {
        // A send settled without an event (`send_completions` off) tells the application
        // nothing: it leaves the attempt held as it is.
        if !self.config.send_completions
            && matches!(
                event,
                Event::SendCompleted { .. } | Event::SendDelivered { .. }
            )
        {
            return self.queue(event);
        }
        let Some(mut event) = self.held.keep(event) else {
            return;
        };
        let crowded = self.notices_untaken() >= crate::RECONNECT_HOLD_NOTICES;
        if !self.held.is_empty() {
            if crowded && self.held.ended() && matches!(event, Event::Reconnecting { .. }) {
                self.held.fold_into(&mut event);
            } else {
                self.release_held();
            }
        }
        if crowded && matches!(event, Event::Reconnecting { .. }) {
            self.held.start(event);
            return;
        }
        self.queue(event);
    }

    /// [`Self::emit`] for a message received on `conn`: a message is never a notice held
    /// back, so with nothing held it is queued at once (it would release what is held).
    pub(super) fn emit_message(&mut self, conn: ConnId, message: Message) {
        if !self.held.is_empty() {
            return self.emit(Event::Message { conn, message });
        }
        self.count_message(message.len());
        self.events.push_back(Event::Message { conn, message });
    }

    /// Queues the notices held back, in order.
    pub(super) fn release_held(&mut self) {
        for event in std::mem::take(&mut self.held).into_events() {
            self.queue(event);
        }
    }

    /// Queues an event for the application, counting it in the backlog; pauses reading
    /// when the received messages reach their bound.
    fn queue(&mut self, event: Event) {
        match &event {
            Event::Message { message, .. } => self.count_message(message.len()),
            Event::SendCompleted { id, .. } | Event::SendDelivered { id, .. } => {
                self.sends_pending -= 1;
                if let Some(completions) = &mut self.completions {
                    completions.push_back((*id, Ok(())));
                }
                if !self.config.send_completions {
                    return;
                }
                self.backlog.completions += 1;
            }
            Event::SendFailed {
                id,
                reason,
                message,
                ..
            } => {
                self.sends_pending -= 1;
                if let Some(completions) = &mut self.completions {
                    let failed = Box::new(FailedSend::new(*reason, message.clone()).with_id(*id));
                    completions.push_back((*id, Err(failed)));
                }
                self.backlog.completions += 1;
            }
            Event::Pong { .. } => self.backlog.completions += 1,
            _ => {}
        }
        self.events.push_back(event);
    }

    /// Counts a message of `len` bytes queued in the backlog; pauses reading when the
    /// received messages reach their bound.
    fn count_message(&mut self, len: usize) {
        self.backlog.messages += 1;
        self.backlog.bytes += len;
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

    /// Transport input for `conn`, which is not the current connection: counted, and
    /// `Closed` (or an error) for a connection being torn down ends that teardown; once
    /// both its close frames went, it gets the linger, as a current connection does.
    pub(super) fn stale_input(&mut self, conn: ConnId, event: &TransportEvent, now: Instant) {
        self.stats.stale_inputs += 1;
        match event {
            TransportEvent::Closed
            | TransportEvent::ConnectFailed(_)
            | TransportEvent::Error(_) => {
                self.teardowns.retain(|t| t.id != conn);
            }
            TransportEvent::PeerClosed(_) | TransportEvent::CloseWritten => {
                let linger = crate::deadline::after(now, self.linger());
                if let Some(t) = self.teardowns.iter_mut().find(|t| t.id == conn) {
                    t.peer_closed |= matches!(event, TransportEvent::PeerClosed(_));
                    t.written |= matches!(event, TransportEvent::CloseWritten);
                    if t.peer_closed && t.written {
                        t.deadline = t.deadline.min(linger);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether reading is paused, for the application or by the pool.
    pub(super) fn is_paused(&self) -> bool {
        self.reading_paused || self.pool_paused
    }

    /// `conn` stops being the reading connection (`still_reading`: unless the state it
    /// enters still delivers its messages): if reading was paused, the driver reads it
    /// again, so its close handshake can finish.
    pub(super) fn release_reads(&mut self, conn: ConnId, still_reading: bool) {
        if self.is_paused() && !still_reading {
            self.actions.push_back(Action::ResumeReading { conn });
        }
    }

    /// The driver wrote send `id` of connection `conn`: a completion, progress (delivery
    /// acknowledgement on), or an unexpected input.
    pub(super) fn on_written(
        &mut self,
        conn: ConnId,
        in_flight: &mut SendQueue<usize>,
        acks: Option<&mut Acks>,
        id: SendId,
    ) {
        match written(in_flight, acks, id) {
            Written::Completed => self.emit(Event::SendCompleted { conn, id }),
            Written::Progress => {}
            Written::Unknown => self.stats.unexpected_inputs += 1,
        }
    }

    /// The peer acknowledged these sends: each completes as delivered.
    pub(super) fn deliver(
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
    pub(super) fn settle(
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
    pub(super) fn carries_queue(&self) -> bool {
        self.config
            .reconnect
            .as_ref()
            .is_some_and(|r| r.carry_queue)
    }

    /// How long a connection whose close frames were both exchanged waits for the server to
    /// close TCP: [`close::CLOSE_LINGER`](crate::close::CLOSE_LINGER), at most the close
    /// timeout.
    pub(super) fn linger(&self) -> Duration {
        crate::close::CLOSE_LINGER.min(self.config.close_timeout)
    }

    /// The reconnect attempt after the end, now, of a connection in `run`: the first again
    /// when it stayed open the policy's `min_uptime`; otherwise it continues the count (a
    /// server that accepts and at once drops or closes is dialled with growing delays, and
    /// `max_attempts` ends it), and so does, with delivery acknowledgement on, a connection
    /// that was handed messages and acknowledged none (the unacknowledged messages are
    /// resent to each one).
    pub(super) fn attempt_after(&self, run: Run, acks: Option<&Acks>) -> u32 {
        let ended = run.closing_since.or(self.now).unwrap_or(run.opened);
        let brief = self
            .config
            .reconnect
            .as_ref()
            .is_some_and(|p| ended.saturating_duration_since(run.opened) < p.min_uptime);
        if brief || acks.is_some_and(Acks::acknowledged_none) {
            run.attempt.saturating_add(1)
        } else {
            1
        }
    }

    /// Whether the reconnect policy dials again for `attempt` after an end of this cause.
    /// A dial refused for good (a 4xx, a sub-protocol not offered, …) is final because the
    /// same request would meet it again; not when the application has given the next
    /// attempts another ([`super::Session::reconnect_with`] while the refused dial was
    /// under way, say on the `Reconnecting` event of an attempt whose delay was already
    /// over): that one is dialled, and its own refusal is final.
    pub(super) fn retry(&self, cause: Cause, attempt: u32) -> bool {
        let replaced =
            self.next_request.is_some() && matches!(cause, Cause::Dial(_) | Cause::Mismatch);
        !self.shut_down
            && self.config.reconnect.as_ref().is_some_and(|policy| {
                (cause.retried_by(policy) || replaced)
                    && policy.max_attempts.is_none_or(|max| attempt <= max)
            })
    }

    /// Ends the current connection from the application's view: fails every pending send,
    /// emits the one close event and, with `teardown`, keeps timing the transport's
    /// shutdown. The caller's state is over: it returns Closed (or a reconnect delay by way
    /// of Closed), and every state that ends has an edge to Closed in the state table.
    pub(super) fn end<T: Entry>(
        &mut self,
        conn: ConnId,
        pending: SendQueue<T>,
        failure: SendFailure,
        teardown: bool,
        ending: Ending<'_>,
    ) {
        self.fail(conn, pending, failure);
        self.emit(Event::Close {
            conn,
            code: ending.code,
            reason: ending.reason.to_owned(),
            clean: ending.clean,
        });
        if teardown {
            let now = self.now.expect("time is set before any connection exists");
            let deadline = crate::deadline::after(now, self.config.close_timeout);
            self.teardowns.push(Teardown::new(conn, deadline));
        }
    }

    /// Fails every send of `pending` with `failure` (a resent one as maybe delivered), in
    /// order.
    pub(super) fn fail<T: Entry>(
        &mut self,
        conn: ConnId,
        mut pending: SendQueue<T>,
        failure: SendFailure,
    ) {
        for (id, entry) in pending.drain() {
            // A message carried to this connection after an earlier one ended without
            // acknowledging it may have arrived there: whatever ends this one, it is not
            // "never sent".
            let reason = if self.duplicates.remove(&id) {
                SendFailure::MaybeDelivered
            } else {
                failure
            };
            self.emit(Event::SendFailed {
                conn,
                id,
                reason,
                message: entry.into_message(),
            });
        }
    }

    /// What follows [`end`](Self::end): Closed, or with `retry`, the reconnect delay for
    /// `attempt` by way of Closed, at least `not_before` (the server's `Retry-After`) up to
    /// the policy's cap.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reconnect(
        &mut self,
        retry: bool,
        request: Arc<HandshakeRequest>,
        queue: SendQueue<Message>,
        attempt: u32,
        last_error: impl FnOnce() -> String,
        not_before: Option<Duration>,
        now: Instant,
    ) -> Next {
        if !retry {
            return Conn::Closed.into();
        }
        let backoff = Backoff::start(self, request, queue, attempt, last_error(), not_before, now);
        Next {
            via: Some(State::Closed),
            conn: Conn::Backoff(backoff),
        }
    }
}
