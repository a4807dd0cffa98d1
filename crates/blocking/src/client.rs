//! The single-socket handle ([`Client`]) and the event receiver ([`Events`]).

use crate::driver::{Machine, Shared, lock};
use crate::{Config, SendFailed};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};
use wxsocket_core::{
    ConfigError, ConnId, Event, FailedSend, Message, SendError, SendFailure, SendId, Session,
};
use wxsocket_wire::handle::DriverHandle;

/// Keeps the driver running; the last one dropped starts a clean shutdown.
pub(crate) struct Handle<M: Machine> {
    pub shared: Arc<Shared<M>>,
}

impl<M: Machine> Deref for Handle<M> {
    type Target = Shared<M>;
    fn deref(&self) -> &Shared<M> {
        &self.shared
    }
}

impl<M: Machine> Drop for Handle<M> {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

impl<M: Machine> DriverHandle<M> for Handle<M> {
    fn call<R>(&self, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        self.shared.call(f)
    }

    fn read<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        self.shared.read(f)
    }

    fn socket_info(&self, conn: ConnId) -> Option<crate::SocketInfo> {
        self.shared.socket_info(|_| Some(conn))
    }

    fn has_ended(&self) -> bool {
        lock(&self.shared.outbox).finished
    }

    fn proxy_env(&self) -> &wxsocket_wire::proxy::ProxyEnv {
        &self.shared.proxy_env
    }
}

/// The longest a send refused for lack of room sleeps before it tries again, whatever
/// the driver reported meanwhile ([`Shared::send_and_wait`]).
const ROOM_RECHECK: Duration = Duration::from_millis(100);

impl<M: Machine> Shared<M> {
    /// Sends `message` through `send`: at once (`wait` unset; a refusal hands the message
    /// back), or waiting for room and then for the completion ([`Self::send_and_wait`]
    /// without a deadline).
    pub(crate) fn send_with(
        &self,
        wait: bool,
        message: Message,
        send: impl FnMut(&mut M, Message, Instant) -> Result<SendId, SendError>,
        conn: impl Fn(&M) -> Option<ConnId>,
    ) -> Result<SendId, SendFailed> {
        if !wait {
            let mut send = send;
            return Ok(self.call_with(|machine, now, _| send(machine, message, now))?);
        }
        match self.send_and_wait(None, message, send, conn) {
            Ok(result) => result,
            Err(_) => unreachable!("no deadline, no timeout"),
        }
    }

    /// Sends `message` through `send`, waiting first for room while the machine refuses it
    /// for lack of room ([`SendError::is_full`]: queue, buffer or untaken completions
    /// full), then for its completion, all within `timeout` (`None`, or one too long to
    /// add to now: for as long as it takes).
    ///
    /// - Still refused for lack of room when the time is up, or refused for any other
    ///   reason: `Ok(Err(SendFailed::Refused(_)))`, the message handed back in the error
    ///   and nothing sent.
    /// - Accepted, and the time is up before its completion: the waiter is removed and the
    ///   send stays pending ([`SendPending`]); its completion is still delivered as an
    ///   event.
    ///
    /// A refused send is retried only after something happened that may have freed room
    /// (a send written or acknowledged, a connection opened or ended, an action carried out,
    /// events other than messages taken by the application: see [`Shared::room_waiters`]),
    /// and at least every [`ROOM_RECHECK`]; the thread sleeps in between.
    pub(crate) fn send_and_wait(
        &self,
        timeout: Option<Duration>,
        mut message: Message,
        mut send: impl FnMut(&mut M, Message, Instant) -> Result<SendId, SendError>,
        conn: impl Fn(&M) -> Option<ConnId>,
    ) -> Result<Result<SendId, SendFailed>, SendPending> {
        let deadline = timeout.and_then(|t| Some((Instant::now().checked_add(t)?, t)));
        // Whether the send was tried again after the driver stopped while it waited.
        let mut tried_after_end = false;
        let (id, mut written_on) = loop {
            let attempt =
                self.call_with(|machine, now, shared| match send(machine, message, now) {
                    Ok(id) => {
                        // Registered before the pump runs the write, so the completion is seen.
                        lock(&shared.outbox).waiting.insert(id, None);
                        Ok((id, conn(machine)))
                    }
                    Err(refused) if refused.is_full() => {
                        // Counted under the machine's lock, before anything can free room,
                        // with the connection whose room it waits for.
                        shared.room_waiters.fetch_add(1, Ordering::SeqCst);
                        let conn = conn(machine);
                        let mut outbox = lock(&shared.outbox);
                        *outbox.room_waiting.entry(conn).or_default() += 1;
                        Err((refused, Some((outbox.room_epoch, conn))))
                    }
                    Err(refused) => Err((refused, None)),
                });
            match attempt {
                Ok(id) => break id,
                Err((refused, None)) => return Ok(Err(SendFailed::Refused(refused))),
                Err((refused, Some((epoch, conn)))) => {
                    let room = self.wait_for_room(epoch, deadline.map(|(d, _)| d));
                    {
                        let mut outbox = lock(&self.outbox);
                        if let Some(n) = outbox.room_waiting.get_mut(&conn) {
                            *n -= 1;
                            if *n == 0 {
                                outbox.room_waiting.remove(&conn);
                            }
                        }
                    }
                    self.room_waiters.fetch_sub(1, Ordering::SeqCst);
                    if !room {
                        // The driver stopped (a shutdown): tried once more, so that the
                        // refusal says why now (not connected), not the lack of room.
                        let ended = lock(&self.outbox).finished;
                        if !ended || std::mem::replace(&mut tried_after_end, true) {
                            return Ok(Err(SendFailed::Refused(refused)));
                        }
                    }
                    message = refused.into_message();
                }
            }
        };
        let mut outbox = lock(&self.outbox);
        loop {
            match outbox.waiting.get(&id) {
                Some(Some(_)) => {
                    let result = outbox.waiting.remove(&id).flatten().expect("settled");
                    return Ok(result.map(|()| id).map_err(SendFailed::Failed));
                }
                _ if outbox.finished => {
                    outbox.waiting.remove(&id);
                    let lost = FailedSend::new(SendFailure::ConnectionLost, None).with_id(id);
                    return Ok(Err(SendFailed::Failed(lost)));
                }
                _ => {}
            }
            // A large message goes out a pass at a time: this thread, which waits anyway,
            // writes the next one itself rather than wake the driver thread for it (a
            // thread that must be scheduled, and lock the state, for each pass).
            // Once there is no pass to write (written, or the socket is full: the driver
            // thread goes on when it drains), it waits for the completion.
            if let Some(conn) = written_on
                && deadline.is_none_or(|(d, _)| Instant::now() < d)
            {
                drop(outbox);
                if !self.write_on(conn) {
                    written_on = None;
                }
                outbox = lock(&self.outbox);
                continue;
            }
            outbox = match deadline {
                None => self
                    .completion_ready
                    .wait(outbox)
                    .unwrap_or_else(|e| e.into_inner()),
                Some((deadline, timeout)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        // Checked above under this same lock: no completion yet.
                        outbox.waiting.remove(&id);
                        return Err(SendPending { id, timeout });
                    }
                    self.completion_ready
                        .wait_timeout(outbox, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Sleeps until the room epoch moves on from `epoch` (room may have freed: retry),
    /// [`ROOM_RECHECK`] has passed (retry: should a change that frees room not move the
    /// epoch, the send still goes on), or `deadline` passes; returns whether to retry. Once
    /// the driver has stopped nothing will free room: no retry.
    fn wait_for_room(&self, epoch: u64, deadline: Option<Instant>) -> bool {
        let recheck = Instant::now() + ROOM_RECHECK;
        let mut outbox = lock(&self.outbox);
        loop {
            if outbox.finished {
                return false;
            }
            if outbox.room_epoch != epoch {
                return true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            if now >= recheck {
                return true;
            }
            let until = deadline.map_or(recheck, |d| d.min(recheck));
            outbox = self
                .room_ready
                .wait_timeout(outbox, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// [`Client::send_timeout`] ran out of time: the message was accepted and is still
/// pending (queued while connecting, or not yet fully written). It is not cancelled: its
/// completion — [`Event::SendCompleted`] or [`Event::SendFailed`] with this [`SendId`] —
/// still arrives on [`Events`], exactly once, as for any send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "send {id} is still pending after {timeout:?} (not cancelled: it is still written, or fails)"
)]
#[non_exhaustive]
pub struct SendPending {
    /// The pending send, as its completion event will name it.
    pub id: SendId,
    /// How long the call waited.
    pub timeout: Duration,
}

/// The handle of one WebSocket session (the single-socket model of WeChat's
/// `wx.connectSocket`): connect, send, close and query it from any thread. Cheap to clone;
/// all clones drive the same session.
///
/// Every call runs the session core under a lock with the current time and carries out
/// what it decided at once, on the calling thread: a message sent while open is written
/// to the socket before `send` returns.
///
/// Dropping the last clone closes the connection cleanly (close frame 1000, bounded by the
/// close timeout) on the driver thread; the [`Events`] receiver then yields the remaining
/// events and ends. A process that exits right after dropping it cuts that short (the
/// driver thread ends with the process, the server sees the TCP connection reset): call
/// [`shutdown`](Self::shutdown) first, which returns once it is over.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle<Session>>,
}

wxsocket_wire::client_debug!();

impl Client {
    /// A session with `config`, its driver thread started, and the receiver of its events.
    ///
    /// An invalid configuration is [`StartError::Config`](crate::StartError::Config),
    /// naming the field. The driver needs OS pollers (six file descriptors, as the crate's
    /// "Lifetime" section says) and a thread: when the OS refuses them (the process is out
    /// of open files or threads) it is [`StartError::Os`](crate::StartError::Os), with the
    /// OS's error, and the same call may succeed once some are freed.
    pub fn new(config: Config) -> Result<(Client, Events), crate::StartError> {
        let mut session = config.client_session()?;
        // Threads waiting in `send` learn the outcome from the session directly, whether
        // or not the application has taken the events yet.
        session.track_completions(true);
        let shared = Shared::start(session, &config, "client")?;
        let events = Events::new(Arc::clone(&shared));
        Ok((
            Client {
                handle: Arc::new(Handle { shared }),
            },
            events,
        ))
    }

    /// `wx.sendSocketMessage` without waiting: queued while connecting, handed to the
    /// socket while open. Returns as soon as the message was accepted, its completion
    /// arriving later as an event, or refused: then nothing was sent and the error hands
    /// the message back, also when the refusal is only for lack of room
    /// ([`SendError::is_full`]: the send buffer, the queue before open, or
    /// `max_untaken_completions` completions not yet taken from [`Events`]).
    /// [`send`](Self::send) waits for room instead, and for the write, as `send(..).await`
    /// does in `wxsocket-tokio`.
    ///
    /// It never waits for room or for the peer, but it is not free of IO: on an open, idle
    /// connection it writes the frame on the calling thread before it returns (as much as
    /// the socket takes; the driver thread writes the rest), so its cost grows with the
    /// message (a frame loop that sends megabytes per frame pays for the copy and the
    /// write there).
    pub fn try_send(&self, message: impl Into<Message>) -> Result<SendId, SendError> {
        self.handle
            .send_with(
                false,
                message.into(),
                |s, message, now| s.send(message, now),
                Session::current,
            )
            .map_err(|e| match e {
                SendFailed::Refused(e) => e,
                _ => unreachable!("no completion is awaited"),
            })
    }

    /// Sends, waiting as long as it takes: first for room while the session refuses the
    /// message for lack of it (a full send buffer, a full queue before open, or too many
    /// send completions not yet taken from [`Events`] — then only the application taking
    /// its events makes room, so a thread that both sends and receives must not wait here
    /// for that; see [`SessionConfig::send_completions`](wxsocket_core::SessionConfig::send_completions)),
    /// then until the message was written to the socket (`Ok`)
    /// or will never be (`Err(SendFailed::Failed)`, e.g. the connection was lost). A
    /// refusal for any other reason (not connected, closing, too large) returns at once as
    /// `Err(SendFailed::Refused(_))`, the message handed back and nothing sent. The
    /// completion event is still delivered to [`Events`] as well. With delivery
    /// acknowledgement on (`SessionConfig::acknowledge`), `Ok` means the peer acknowledged
    /// the message (`Event::SendDelivered`), not only that it was written.
    ///
    /// A message accepted but not yet written when another thread closes the connection
    /// (a peer that reads nothing, say) is settled when the connection ends: after the
    /// close handshake, or at the close timeout, as `Err(SendFailed::Failed)`.
    pub fn send(&self, message: impl Into<Message>) -> Result<SendId, SendFailed> {
        self.handle.send_with(
            true,
            message.into(),
            |s, message, now| s.send(message, now),
            Session::current,
        )
    }

    /// [`send`](Self::send) whose whole wait — for room, then for the write — lasts at most
    /// `timeout`.
    ///
    /// - `Ok(Ok(id))`: the message was written to the socket within `timeout`;
    /// - `Ok(Err(SendFailed::Refused(_)))`: not accepted — refused for good (not
    ///   connected, closing, too large), or still no room when `timeout` ran out (e.g.
    ///   `SendError::BufferFull`). Nothing was sent; the message is handed back in the
    ///   error ([`SendError::into_message`]);
    /// - `Ok(Err(SendFailed::Failed(_)))`: accepted, but it will never be written;
    /// - `Err(SendPending { id, .. })`: accepted, and neither written nor failed within
    ///   `timeout` (e.g. queued while the handshake is still in progress, or the peer
    ///   does not read and the socket buffer is full). The send goes on: its
    ///   [`Event::SendCompleted`] or [`Event::SendFailed`] with that `id` still arrives on
    ///   [`Events`].
    ///
    /// The shape mirrors wrapping an awaited send in a timeout in an async runtime: the
    /// outer error is the wait's, the inner result the send's.
    pub fn send_timeout(
        &self,
        message: impl Into<Message>,
        timeout: Duration,
    ) -> Result<Result<SendId, SendFailed>, SendPending> {
        self.handle.send_and_wait(
            Some(timeout),
            message.into(),
            |s, message, now| s.send(message, now),
            Session::current,
        )
    }

    /// Shuts the whole driver down (every clone's, not only this one's) and blocks until
    /// its thread has ended: an open connection is closed with 1000 and its close
    /// handshake finished (bounded by the close timeout), a dial in progress is aborted
    /// whatever the close-before-open policy (queued messages fail as cancelled, close
    /// 1006), a reconnect delay is cancelled. The events of that ending stay receivable on
    /// [`Events`], which then ends. Afterwards `connect` fails with
    /// [`ConnectError::ShutDown`](crate::ConnectError::ShutDown). Dropping every handle does the same without waiting.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    wxsocket_wire::client_calls!();
}

/// The receiving end of a [`Client`]'s (or [`crate::TaskPool`]'s) events: every
/// [`Event`] in order. `recv` returns `None` once the driver has stopped (after the last
/// handle was dropped and its connections closed) and every event was taken.
///
/// Events wait in the session core, which bounds the received messages
/// ([`SessionConfig::receive_bounds`](wxsocket_core::SessionConfig::receive_bounds)):
/// while the application does not take them, the client stops reading the socket, and
/// taking them lets it read again. This receiver holds only a small batch itself (64
/// events, 256 KiB of messages, or one larger message) and takes the next one from the
/// core when it has handed those out; `recv` never waits while events sit in the core.
///
/// Dropping it is allowed at any time; waiting and later events are then discarded (and
/// reading never pauses for them).
///
/// Several threads may receive at once (it is `Sync`; each event goes to one of them). A
/// connection's `Close` goes to one thread; the others go on waiting for the next event (a
/// reconnection, a new `connect`) until the driver stops: after the last handle is dropped,
/// or [`Client::shutdown`]. Threads that must end with the connection use `recv_timeout`, or
/// the one that sees `Close` calls `shutdown`.
pub struct Events {
    source: Arc<dyn EventSource>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

/// The outbox of a driver, whatever its machine.
trait EventSource: Send + Sync {
    /// The next event, waiting at most `timeout` (`None`: without a limit).
    fn recv_within(&self, timeout: Option<Duration>) -> Result<Event, RecvTimeoutError>;
    fn try_recv(&self) -> Result<Event, TryRecvError>;
    fn close(&self);
    fn busy_poll(&self) -> &AtomicU64;
}

impl<M: Machine> Shared<M> {
    /// The next event of the outbox. A delivery wakes one parked thread however many
    /// events it moved: while more wait, the next parked thread is woken too, so no thread
    /// sleeps in `recv` while an event waits for it.
    fn take_event(&self, outbox: &mut crate::driver::Outbox) -> Option<Event> {
        let event = outbox.events.pop()?;
        if outbox.receivers > 0 && (!outbox.events.is_empty() || outbox.more) {
            self.event_ready.notify_one();
        }
        Some(event)
    }
}

impl<M: Machine> EventSource for Shared<M> {
    fn recv_within(&self, timeout: Option<Duration>) -> Result<Event, RecvTimeoutError> {
        let mut outbox = lock(&self.outbox);
        // The deadline is fixed when the call first has to wait, so taking an event that
        // is already queued (most calls, when messages stream in) reads no clock.
        let mut limit: Option<Option<Instant>> = None;
        loop {
            if let Some(event) = self.take_event(&mut outbox) {
                return Ok(event);
            }
            if outbox.more {
                // The next batch waits in the machine: take it, never wait for it.
                drop(outbox);
                self.refill(false);
                outbox = lock(&self.outbox);
                continue;
            }
            if outbox.finished {
                return Err(RecvTimeoutError::Disconnected);
            }
            let deadline =
                *limit.get_or_insert_with(|| timeout.and_then(|t| Instant::now().checked_add(t)));
            // One waiting thread sleeps on the sockets themselves and reads on its own
            // thread (no hand-over from the driver thread); any others park below.
            if let Some(mut receiver) = self.receiver_poll.as_ref().and_then(|m| m.try_lock().ok())
            {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(RecvTimeoutError::Timeout);
                }
                outbox.receiver_polling = true;
                outbox = self.receive_io(&mut receiver, outbox, deadline);
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(RecvTimeoutError::Timeout);
            }
            outbox.receivers += 1;
            outbox = match deadline {
                None => self
                    .event_ready
                    .wait(outbox)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    self.event_ready
                        .wait_timeout(outbox, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            outbox.receivers -= 1;
        }
    }

    fn try_recv(&self) -> Result<Event, TryRecvError> {
        let mut outbox = lock(&self.outbox);
        if outbox.events.is_empty() && (outbox.more || !outbox.finished) {
            // The next batch from the machine, with what arrived while the reads were with
            // a receiving thread that has left.
            drop(outbox);
            self.refill(true);
            outbox = lock(&self.outbox);
        }
        match self.take_event(&mut outbox) {
            Some(event) => Ok(event),
            None if outbox.finished && !outbox.more => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    fn close(&self) {
        self.events_alive.store(false, Ordering::Release);
        self.discard_events();
    }

    fn busy_poll(&self) -> &AtomicU64 {
        &self.busy_poll
    }
}

impl Events {
    pub(crate) fn new<M: Machine>(shared: Arc<Shared<M>>) -> Self {
        Self { source: shared }
    }

    /// Waits for the next event; `None` once the driver has stopped and all events were
    /// taken.
    pub fn recv(&self) -> Option<Event> {
        self.source.recv_within(None).ok()
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        self.source.recv_within(Some(timeout))
    }

    /// The next event if one is waiting. It never waits for one, but while the sockets'
    /// reads are with the application (see the crate docs, "How it runs": up to 250 ms
    /// after a `recv` while the application keeps calling in), it reads what the
    /// connections that have input hold, on the calling thread, so that the event is there
    /// without a trip through the driver thread, at a cost that grows with the connections
    /// that have input. A loop that must never spend that on its own thread (a game's
    /// frame) takes events with `try_recv` only, never `recv`: the driver thread then does
    /// every read.
    pub fn try_recv(&self) -> Result<Event, TryRecvError> {
        self.source.try_recv()
    }

    /// A blocking iterator over the events; it ends when [`recv`](Self::recv) returns
    /// `None`.
    pub fn iter(&self) -> Iter<'_> {
        Iter { events: self }
    }

    /// A non-blocking iterator over the events waiting now.
    pub fn try_iter(&self) -> TryIter<'_> {
        TryIter { events: self }
    }

    /// Sets how long a thread in [`recv`](Self::recv) / [`recv_timeout`](Self::recv_timeout)
    /// that finds no event polls the sockets before it sleeps: zero turns busy-polling
    /// off; at most [`MAX_BUSY_POLL`](crate::MAX_BUSY_POLL) (else an error naming
    /// `busy_poll`, and nothing changes). The default is
    /// [`DEFAULT_BUSY_POLL`](crate::DEFAULT_BUSY_POLL) on a machine with more than one
    /// CPU and zero on one. Polling stops by itself while it does not pay (see the crate
    /// docs, "Busy-polling"); it never makes a message wait. It applies where `recv`
    /// waits on the sockets themselves (Unix); elsewhere `recv` waits on a condition
    /// variable and the budget is kept but unused.
    pub fn set_busy_poll(&self, budget: Duration) -> Result<(), ConfigError> {
        let budget = crate::busy_poll::validate(budget)?;
        self.source
            .busy_poll()
            .store(budget.as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The busy-poll budget in force (see [`set_busy_poll`](Self::set_busy_poll)).
    pub fn busy_poll(&self) -> Duration {
        Duration::from_nanos(self.source.busy_poll().load(Ordering::Relaxed))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.source.close();
    }
}

/// Blocking iterator over [`Events`], from [`Events::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    events: &'a Events,
}

impl Iterator for Iter<'_> {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.events.recv()
    }
}

/// Non-blocking iterator over [`Events`], from [`Events::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a> {
    events: &'a Events,
}

impl Iterator for TryIter<'_> {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

/// Owning blocking iterator, from `Events::into_iter`.
#[derive(Debug)]
pub struct IntoIter {
    events: Events,
}

impl Iterator for IntoIter {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.events.recv()
    }
}

impl IntoIterator for Events {
    type Item = Event;
    type IntoIter = IntoIter;
    fn into_iter(self) -> IntoIter {
        IntoIter { events: self }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = Event;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}
