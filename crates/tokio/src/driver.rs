//! The IO driver, written once for every [`Driven`](wxsocket_core::Driven) machine
//! (`Session`, `Pool`, `WxSocket`).
//!
//! Whoever touches the core carries out what it asks for, under the same lock: an
//! application call, a connection task reporting transport input, or the driver task when
//! a deadline passes. Carrying out an action never blocks (spawn a task, push a command to a
//! connection's channel, abort a task), so the lock is only held for core calls. The driver
//! task owns the one timer, runs the wx-style callbacks outside the lock, and shuts
//! everything down when the last handle is dropped.

use crate::conn::{self, Command, SharedIo};
use crate::{Config, SocketInfo};
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::Instrument;
use tungstenite::protocol::WebSocketConfig;
use wxsocket_core::{
    Action, ConfigError, ConnId, FailedSend, ReadCredit, SendFailure, SendId, TransportEvent,
};
use wxsocket_wire::connection::Connection;
use wxsocket_wire::handle::DriverHandle;
pub(crate) use wxsocket_wire::machine::{Lifecycle, Machine};

/// The time the core is told: tokio's clock, the one the driver's timer sleeps on, so that
/// a runtime whose clock is paused (`tokio::time::pause`, `start_paused` in tests) sees its
/// deadlines pass when its timers fire (the std clock made the driver wake for a deadline
/// the core did not see as due, over and over). Without tokio's `test-util` it is std's.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Completion of an awaitable send.
pub(crate) type SendResult = Result<(), FailedSend>;

/// Who waits for the outcome of a send the core accepted.
pub(crate) enum Waiter {
    /// An awaited `send`.
    Send(oneshot::Sender<SendResult>),
    /// A `Client`'s `Sink`, which counts its sends instead of holding a channel for each.
    Sink(Arc<SinkSends>),
}

impl Waiter {
    fn settle(self, result: SendResult) {
        match self {
            Waiter::Send(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Sink(sends) => sends.settle(result),
        }
    }
}

/// The sends a `Client`'s `Sink` handed to the core and has not yet seen settled, and the
/// failures among the settled ones not reported yet. Its memory does not grow with the
/// sends: each costs one entry in the outbox's waiters while it is in flight.
#[derive(Default)]
pub(crate) struct SinkSends(Mutex<SinkTally>);

#[derive(Default)]
struct SinkTally {
    unsettled: usize,
    /// The first failure settled since the sink last handed a message over.
    failed: Option<SendFailure>,
    /// The first failure seen when the sink last handed a message over (what `poll_ready`
    /// reports), not reported yet.
    seen: Option<SendFailure>,
    /// The task in `poll_flush`, woken when the last send settles or one fails.
    flusher: Option<Waker>,
}

impl SinkSends {
    fn tally(&self) -> MutexGuard<'_, SinkTally> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A send of this sink was accepted: its waiter. The failures settled before it are
    /// seen now.
    pub(crate) fn waiter(self: &Arc<Self>) -> Waiter {
        let mut tally = self.tally();
        tally.unsettled += 1;
        if let Some(reason) = tally.failed.take() {
            tally.seen.get_or_insert(reason);
        }
        Waiter::Sink(Arc::clone(self))
    }

    fn settle(&self, result: SendResult) {
        let mut tally = self.tally();
        tally.unsettled -= 1;
        let failed = result.is_err();
        if let Err(failed) = result {
            tally.failed.get_or_insert(failed.reason);
        }
        if tally.unsettled == 0 || failed {
            let flusher = tally.flusher.take();
            drop(tally);
            if let Some(waker) = flusher {
                waker.wake();
            }
        }
    }

    /// The failure seen when the sink last handed a message over, not reported yet (later
    /// ones until then are folded into it).
    pub(crate) fn take_seen(&self) -> Option<SendFailure> {
        self.tally().seen.take()
    }

    /// Ready once every send settled, or with the first failure not reported yet.
    pub(crate) fn poll_settled(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), SendFailure>> {
        let mut tally = self.tally();
        if let Some(reason) = tally.seen.take().or_else(|| tally.failed.take()) {
            return std::task::Poll::Ready(Err(reason));
        }
        if tally.unsettled == 0 {
            return std::task::Poll::Ready(Ok(()));
        }
        tally.flusher = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}

/// Who waits for what the core produces: the [`crate::Events`] stream, awaitable sends,
/// and sends waiting for room.
pub(crate) struct Outbox {
    /// An [`crate::Events`] exists; without one, events are taken and dropped at once.
    pub(crate) events_alive: bool,
    /// The task waiting in [`crate::Events`] for an event.
    pub(crate) event_waker: Option<Waker>,
    pub(crate) waiters: HashMap<SendId, Waiter>,
    /// Sends waiting for room in the core's bounds (queue, buffer, untaken completions), by
    /// their ticket. A waiting send that is dropped takes its entry out ([`RoomTicket`]), so
    /// cancelled sends leave nothing behind.
    room_wakers: HashMap<u64, Waker>,
    /// The last ticket handed out.
    last_ticket: u64,
    /// Room may have been freed in this turn, or the answer to a waiting send changed (a
    /// send finished, events were taken, the transport reported something, an action was
    /// carried out): wake the sends waiting for it.
    pub(crate) room_freed: bool,
}

impl Outbox {
    /// How many sends wait for room now.
    #[cfg(test)]
    pub(crate) fn waiting_for_room(&self) -> usize {
        self.room_wakers.len()
    }

    /// Registers a send that found no room under its `ticket` (given one the first time);
    /// it is woken when room may have been freed.
    pub(crate) fn wait_for_room(&mut self, ticket: &mut RoomTicket, waker: &Waker) {
        let id = *ticket.0.get_or_insert_with(|| {
            self.last_ticket += 1;
            self.last_ticket
        });
        match self.room_wakers.get_mut(&id) {
            Some(w) => w.clone_from(waker),
            None => {
                self.room_wakers.insert(id, waker.clone());
            }
        }
    }
}

/// A send's place among those waiting for room. Whoever holds one gives it back with
/// [`Shared::forget_room`] when the send is accepted, refused, or dropped while waiting.
#[derive(Debug, Default)]
pub(crate) struct RoomTicket(Option<u64>);

impl RoomTicket {
    /// Takes the ticket out, to give back.
    pub(crate) fn take(&mut self) -> Option<u64> {
        self.0.take()
    }
}

/// What the core and a connection's task share about its reading.
#[derive(Default)]
pub(crate) struct Reading {
    /// Woken when reading may resume after a pause (flow control), or the reads come back
    /// to the task ([`Reads::Tasks`]).
    pub(crate) resume: AtomicWaker,
    /// Input waits to be read: the last read pass stopped at its limit, the task left the
    /// input to the task taking events ([`Reads::Taker`]), or reading resumed while that
    /// one reads. Changed under the core's lock ([`Core::mark_unread`]); whoever holds the
    /// connection's state reads it to know whether its report would change it.
    pub(crate) unread: AtomicBool,
}

/// One live connection task.
struct ConnEntry {
    commands: mpsc::UnboundedSender<Command>,
    reading: Arc<Reading>,
    task: AbortHandle,
    socket: Option<SocketInfo>,
    /// Once open: the connection's state, for writes in place.
    io: Option<SharedIo>,
    /// Its place in the core's list of connections marked unread ([`Core::unread`]).
    listed: Option<usize>,
}

/// Who reads the open connections' input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// Each connection's task, when its socket has input.
    Tasks,
    /// The task taking events, while they flow (it last read, or first took events, at
    /// `since`): a connection's task woken for input leaves it to the taker (marks the
    /// connection `unread`), who reads it when it finds no event waiting. A flood is then
    /// read and taken on one thread, without a wake-up across threads for every read pass.
    /// The reads go back to the tasks when the taker finds nothing, lets go of its events,
    /// the client shuts down, or input waits [`HANDBACK`] after the taker last read (an
    /// application that stopped taking events, or works through a backlog: pings, pongs
    /// and close frames are still read).
    Taker { since: Instant },
}

/// What a take of events found.
pub(crate) enum Taken {
    Some,
    /// Nothing now; the waker (if any) is registered.
    Empty,
    /// Nothing, ever again.
    Ended,
}

/// How long after the task taking events last read a connection's input waits for it
/// before the connection's task reads it ([`Reads::Taker`]).
const HANDBACK: Duration = Duration::from_millis(20);

/// Everything behind the lock.
pub(crate) struct Core<M> {
    pub(crate) machine: M,
    pub(crate) out: Outbox,
    conns: HashMap<ConnId, ConnEntry>,
    /// The deadline the driver task sleeps until, and whether the machine was shut down.
    lifecycle: Lifecycle,
    /// Connections with frames started in place during this turn, to flush at its end.
    in_place: Vec<ConnId>,
    reads: Reads,
    /// The live connections marked `unread`, each once, each entry's place kept in its
    /// [`ConnEntry::listed`].
    unread: Vec<ConnId>,
}

/// Who a turn of the core found waiting: woken after the lock is let go, so that the
/// [`crate::Events`] stream's thread, woken for a batch, does not find the lock still held
/// (a flood of small messages spent a tenth of its time in the two threads' lock waits).
#[must_use]
pub(crate) struct Turned {
    /// The stream's waker, when events wait for it.
    events: Option<Waker>,
    /// The driver task must look.
    driver: bool,
}

impl Turned {
    /// Wakes the stream (as the turn is dropped); says whether the driver task must look.
    fn wake_events(self) -> bool {
        self.driver
    }
}

impl Drop for Turned {
    /// The one place the stream is woken: also when a panic unwinds past the turn, since
    /// the waker is no longer in the core for a later turn to find, and the stream would
    /// wait for ever with events queued.
    fn drop(&mut self) {
        if let Some(waker) = self.events.take() {
            waker.wake();
        }
    }
}

/// Runs `work` on a connection's state, held in place by the thread that called into the
/// machine. A panic in it ends that state there and then, while this thread still holds it
/// (the connection's task could take it the moment it is let go: a check made after that
/// lost the sends already written, now and then): the panic, with the sends the socket had
/// taken by then ([`conn::Io::end_after_panic`]).
fn in_place<T>(
    io: &mut conn::Io,
    work: impl FnOnce(&mut conn::Io) -> T,
) -> Result<T, (Box<dyn std::any::Any + Send>, Vec<SendId>)> {
    std::panic::catch_unwind(AssertUnwindSafe(|| work(io)))
        .map_err(|panic| (panic, io.end_after_panic()))
}

impl<M: Machine> Core<M> {
    /// Carries out every action, settles awaited sends and wakes the sends waiting for
    /// room. Returns who else must be woken once the lock is let go: the [`crate::Events`]
    /// stream if events wait for it, and the driver task if it must look (earlier
    /// deadline, callbacks to run, shutdown progress).
    pub(crate) fn turn(&mut self, shared: &Arc<Shared<M>>, now: Instant) -> Turned {
        let mut wake = false;
        loop {
            let mut acted = false;
            while let Some(action) = self.machine.poll_action() {
                acted = true;
                self.execute(shared, action, now);
            }
            if !self.in_place.is_empty() {
                acted = true;
                self.flush_in_place(now);
            }
            while let Some((id, result)) = self.machine.poll_completion() {
                self.out.room_freed = true;
                if let Some(waiter) = self.out.waiters.remove(&id) {
                    waiter.settle(result.map_err(|failed| *failed));
                }
            }
            self.machine.dispatch();
            wake |= self.machine.has_callbacks();
            if !self.out.events_alive {
                // Nobody takes the events: drop them, which frees room in the core for
                // sends waiting on untaken completions (and may resume reading: the
                // actions of that come round the loop).
                while self.machine.next_event().is_some() {
                    acted = true;
                    self.out.room_freed = true;
                }
            }
            // Events a callback machine dispatched (or dropped, with no listener) may have
            // resumed reading: carry that out in this turn too.
            if let Some(action) = self.machine.poll_action() {
                acted = true;
                self.execute(shared, action, now);
            }
            if !acted {
                break;
            }
        }
        // Taken before the room wakers run: should one of them panic, dropping `turned`
        // still wakes the stream.
        let turned = Turned {
            events: if self.machine.has_events() {
                self.out.event_waker.take()
            } else {
                None
            },
            driver: wake
                | self.lifecycle.timer_late(&self.machine)
                | self
                    .handback_due()
                    .is_some_and(|due| self.lifecycle.armed().is_none_or(|armed| due < armed))
                | self.lifecycle.finished(&self.machine),
        };
        if std::mem::take(&mut self.out.room_freed) {
            for (_, waker) in self.out.room_wakers.drain() {
                waker.wake();
            }
        }
        turned
    }

    /// Flushes the frames started in place this turn, one flush per connection (so a
    /// batch of sends, e.g. the queue flushed on open, goes out in one write), and reports
    /// the sends written; what the socket did not take, the connection's task finishes.
    fn flush_in_place(&mut self, now: Instant) {
        for conn in std::mem::take(&mut self.in_place) {
            let Some(entry) = self.conns.get(&conn) else {
                continue;
            };
            let flushed = entry.io.as_ref().and_then(|io| {
                let mut io = io.try_lock().ok()?;
                Some(in_place(&mut io, conn::Io::flush_in_place))
            });
            match flushed {
                Some(Ok(Some(written))) => {
                    for id in written {
                        self.machine
                            .handle(conn, TransportEvent::SendWritten(id), now);
                    }
                }
                Some(Err((panic, written))) => self.lose_to_panic(conn, &*panic, written, now),
                // Not taken at once, or the task holds the state: the task finishes.
                _ => {
                    let _ = entry.commands.send(Command::Wake);
                }
            }
        }
    }

    fn execute(&mut self, shared: &Arc<Shared<M>>, action: Action, now: Instant) {
        // What the machine asks for may change what it answers a send waiting for room
        // (a close refuses it, as `Closing`): that send tries again.
        self.out.room_freed = true;
        let conn = action.conn();
        wxsocket_wire::trace::action(&action);
        let command = match action {
            Action::Dial { conn, request } => {
                let connection =
                    Connection::new(conn, request, &shared.proxy_env, shared.ws_config);
                let dialing = match connection {
                    Ok(dialing) => Box::new(dialing),
                    Err(failed) => return self.machine.handle(conn, failed, now),
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let reading = Arc::new(Reading::default());
                let span = dialing.0.span().clone();
                let task = shared.runtime.spawn(
                    conn::run(Arc::clone(shared), dialing, rx, Arc::clone(&reading))
                        .instrument(span),
                );
                self.conns.insert(
                    conn,
                    ConnEntry {
                        commands: tx,
                        reading,
                        task: task.abort_handle(),
                        socket: None,
                        io: None,
                        listed: None,
                    },
                );
                return;
            }
            Action::Abort { conn } => {
                if let Some(entry) = self.remove_conn(conn) {
                    entry.task.abort();
                }
                return;
            }
            Action::Send { id, message, .. } => {
                let entry = self.conns.get(&conn);
                let io = entry.and_then(|e| e.io.as_ref());
                // The task may hold the state (it is reading or writing): then it gets the
                // message as a command, after whatever it is doing.
                let started = match io.map(|io| io.try_lock()) {
                    Some(Ok(mut io)) => in_place(&mut io, |io| io.start_in_place(id, message)),
                    _ => Ok(Some(message)),
                };
                let message = match started {
                    Ok(message) => message,
                    Err((panic, written)) => {
                        return self.lose_to_panic(conn, &*panic, written, now);
                    }
                };
                match message {
                    None => {
                        if !self.in_place.contains(&conn) {
                            self.in_place.push(conn);
                        }
                        return;
                    }
                    Some(message) => Command::Send(id, message),
                }
            }
            Action::ResumeReading { conn } => {
                if let Reads::Taker { .. } = self.reads {
                    // The taker reads it when it next finds no event waiting.
                    self.mark_unread(conn, true);
                } else if let Some(entry) = self.conns.get(&conn) {
                    entry.reading.resume.wake();
                }
                return;
            }
            Action::Ping { payload, .. } => Command::Ping(payload),
            Action::Close { frame, .. } => Command::Close(frame),
            // Logged above; a newer core may add actions, carrying out none is safe.
            _ => return,
        };
        match self.conns.get(&conn) {
            Some(entry) => {
                let _ = entry.commands.send(command);
            }
            // The transport already ended and said so; the core knows.
            None => tracing::debug!(%conn, "action for a finished connection"),
        }
    }

    /// Work on `conn` done in place, on the thread that called into the machine, panicked
    /// (a frame's mask is drawn from the OS's random source, which can fail): its task is
    /// aborted and the connection ends as lost, naming the panic, as a panic in its task
    /// ends it, instead of unwinding into the application's `try_send` with the send
    /// accepted and never settled.
    /// `written`: the sends the socket had taken before the panic ([`in_place`]), reported
    /// written first.
    fn lose_to_panic(
        &mut self,
        conn: ConnId,
        panic: &(dyn std::any::Any + Send),
        written: Vec<SendId>,
        now: Instant,
    ) {
        if let Some(entry) = self.remove_conn(conn) {
            entry.task.abort();
        }
        for id in written {
            self.machine
                .handle(conn, TransportEvent::SendWritten(id), now);
        }
        for event in wxsocket_wire::connection::panicked("work", panic) {
            self.machine.handle(conn, event, now);
        }
    }

    /// Hands a connection's transport input to the machine; returns how much the connection
    /// may read next.
    fn take_input(
        &mut self,
        conn: ConnId,
        events: impl IntoIterator<Item = TransportEvent>,
        now: Instant,
    ) -> ReadCredit {
        for event in events {
            self.machine.handle(conn, event, now);
        }
        self.out.room_freed = true;
        self.machine.concurrent_read_credit(conn)
    }

    /// Moves up to one batch of events into `into`; returns whether any came.
    fn take_batch(&mut self, into: &mut wxsocket_wire::events::EventBatch) -> bool {
        let taken = into.fill(&mut self.machine);
        // Completions taken leave room for sends that wait for it.
        self.out.room_freed |= taken;
        taken
    }

    /// Marks whether input waits to be read on `conn` (see [`Reading::unread`]), listing it
    /// in [`Self::unread`] or taking it out, in constant time: the list holds only what the
    /// task taking events must read (with 10,000 connections, a search of it for each one
    /// read to the end, or a list full of those read already, cost twice the CPU per event).
    pub(crate) fn mark_unread(&mut self, conn: ConnId, unread: bool) {
        let Some(entry) = self.conns.get_mut(&conn).filter(|e| e.io.is_some()) else {
            return;
        };
        if entry.reading.unread.swap(unread, Ordering::Relaxed) == unread {
            return;
        }
        if unread {
            entry.listed = Some(self.unread.len());
            self.unread.push(conn);
        } else if let Some(at) = entry.listed.take() {
            self.unlist(at);
        }
    }

    /// Moves `conn`, if listed, to the end of [`Self::unread`], so that a take that stops
    /// after it reads the others first next time.
    pub(crate) fn relist_unread(&mut self, conn: ConnId) {
        let Some(at) = self.conns.get_mut(&conn).and_then(|e| e.listed.take()) else {
            return;
        };
        self.unlist(at);
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.listed = Some(self.unread.len());
            self.unread.push(conn);
        }
    }

    /// Takes the entry at `at` out of [`Self::unread`], in constant time.
    fn unlist(&mut self, at: usize) {
        self.unread.swap_remove(at);
        if let Some(moved) = self.unread.get(at)
            && let Some(entry) = self.conns.get_mut(moved)
        {
            entry.listed = Some(at);
        }
    }

    /// A connection's task is gone (it finished, or was aborted): its entry goes, and its
    /// place in [`Self::unread`] with it (left there, a connection ended right after a pass
    /// stopped at its limit stayed until a take found no event, which an application that
    /// only `try_recv`s never makes: the list grew with the connections ended, and kept the
    /// hand-back timer going).
    fn remove_conn(&mut self, conn: ConnId) -> Option<ConnEntry> {
        let entry = self.conns.remove(&conn)?;
        if let Some(at) = entry.listed {
            self.unlist(at);
        }
        Some(entry)
    }

    /// The open connections marked `unread`, with their state.
    fn take_unread(&self) -> Vec<(ConnId, SharedIo)> {
        let conns = &self.conns;
        self.unread
            .iter()
            .filter_map(|conn| Some((*conn, conns.get(conn)?.io.clone()?)))
            .collect()
    }

    /// When the reads go back to the connections' tasks, if input waits for a taker that
    /// does not come ([`HANDBACK`]).
    fn handback_due(&self) -> Option<Instant> {
        match self.reads {
            Reads::Taker { since } if !self.unread.is_empty() => Some(since + HANDBACK),
            _ => None,
        }
    }

    /// Sets who reads; back with the tasks, each connection with input waiting is woken to
    /// read it.
    fn set_reads(&mut self, shared: &Shared<M>, reads: Reads) {
        let was = std::mem::replace(&mut self.reads, reads);
        let taker = matches!(reads, Reads::Taker { .. });
        shared.taker_reads.store(taker, Ordering::Relaxed);
        if !taker && was != Reads::Tasks {
            for conn in &self.unread {
                if let Some(entry) = self.conns.get(conn) {
                    entry.reading.resume.wake();
                }
            }
        }
    }

    /// A take of events found none: the reads go back to the connections' tasks, and
    /// `waker` waits for the next event.
    fn nothing_taken(&mut self, shared: &Shared<M>, waker: Option<&Waker>) -> Taken {
        self.set_reads(shared, Reads::Tasks);
        if shared.has_ended() {
            return Taken::Ended;
        }
        if let Some(waker) = waker {
            self.out.event_waker = Some(waker.clone());
        }
        Taken::Empty
    }

    /// The connections marked unread, in the order a take reads them.
    #[cfg(test)]
    pub(crate) fn unread(&self) -> &[ConnId] {
        &self.unread
    }

    /// How many connections the list of those marked unread holds.
    #[cfg(test)]
    pub(crate) fn unread_listed(&self) -> usize {
        self.unread.len()
    }

    /// An open connection's state.
    #[cfg(test)]
    pub(crate) fn io_of(&self, conn: ConnId) -> Option<SharedIo> {
        self.conns.get(&conn)?.io.clone()
    }

    /// The socket details of a connection, once it is dialled.
    pub(crate) fn socket_info(&self, conn: ConnId) -> Option<SocketInfo> {
        self.conns.get(&conn).and_then(|e| e.socket)
    }
}

/// What the handles, the connection tasks and the driver task share.
pub(crate) struct Shared<M> {
    core: Mutex<Core<M>>,
    wake: Notify,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) tls: Arc<wxsocket_wire::upgrade::ClientConfig>,
    /// The proxy variables, read when the client was created (`conn::dial`).
    pub(crate) proxy_env: wxsocket_wire::proxy::ProxyEnv,
    pub(crate) ws_config: WebSocketConfig,
    /// The connections' name lookups in flight.
    pub(crate) lookups: conn::SharedLookups,
    /// Set by the driver task when it has ended; `exited` is notified then.
    ended: AtomicBool,
    exited: Notify,
    /// Whether the task taking events reads ([`Reads::Taker`]); the connections' tasks look
    /// here without the lock, and [`Shared::report_pass`] confirms under it.
    taker_reads: AtomicBool,
    /// When the driver task's timer falls due, in nanoseconds after `epoch` (`u64::MAX`:
    /// not armed, or the driver was woken for it already), for the tasks that read to look
    /// at without the lock ([`Self::wake_overdue_timer`]).
    pub(crate) timer_due: AtomicU64,
    /// When the driver started, by the clock its timer runs on ([`now`]).
    pub(crate) epoch: Instant,
    /// What the tests count.
    #[cfg(test)]
    pub(crate) hooks: Hooks,
}

/// Counts kept for the tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Hooks {
    /// Takes of events that found more than one connection's input left to them.
    pub(crate) takes_of_many: std::sync::atomic::AtomicUsize,
    /// Read passes a take made after a pass that found events waiting.
    pub(crate) passes_behind_events: std::sync::atomic::AtomicUsize,
}

impl<M: Machine> Shared<M> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core<M>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether some thread holds the core's lock now.
    #[cfg(test)]
    pub(crate) fn is_locked(&self) -> bool {
        matches!(
            self.core.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        )
    }

    /// Runs `f` on the core with the current time, then carries out what it produced.
    pub(crate) fn call<R>(self: &Arc<Self>, f: impl FnOnce(&mut Core<M>, Instant) -> R) -> R {
        let now = now();
        let (result, turned) = {
            let mut core = self.lock();
            let result = f(&mut core, now);
            let turned = core.turn(self, now);
            (result, turned)
        };
        if turned.wake_events() {
            self.wake.notify_one();
        }
        result
    }

    /// Transport input from a connection task. `finished`: the task ends after this, so
    /// its entry goes (and actions still aimed at it are dropped).
    /// Returns how much the task may read next (flow control).
    pub(crate) fn report(
        self: &Arc<Self>,
        conn: ConnId,
        events: impl IntoIterator<Item = wxsocket_core::TransportEvent>,
        finished: bool,
    ) -> ReadCredit {
        self.call(|core, now| {
            if finished {
                core.remove_conn(conn);
            }
            core.take_input(conn, events, now)
        })
    }

    /// Input from an open connection's read pass. `unread`: input waits to be read (the
    /// pass stopped at its limit, or the task left it to the task taking events). Returns
    /// how much the connection may read next, and whether the task taking events still
    /// reads (a task that left input to it reads it itself otherwise).
    pub(crate) fn report_pass(
        self: &Arc<Self>,
        conn: ConnId,
        events: impl IntoIterator<Item = wxsocket_core::TransportEvent>,
        unread: bool,
    ) -> (ReadCredit, bool) {
        self.call(|core, now| {
            core.mark_unread(conn, unread);
            let credit = core.take_input(conn, events, now);
            (credit, matches!(core.reads, Reads::Taker { .. }))
        })
    }

    /// Records when the driver task's timer falls due ([`Self::wake_overdue_timer`]).
    pub(crate) fn set_timer_due(&self, due: Option<Instant>) {
        let after = due.map(|due| due.saturating_duration_since(self.epoch).as_nanos());
        let nanos = after.map_or(u64::MAX, |n| u64::try_from(n).unwrap_or(u64::MAX - 1));
        self.timer_due.store(nanos, Ordering::Relaxed);
    }

    /// Wakes the driver task if its timer fell due and it was not woken for it yet; returns
    /// whether it was due, so that the caller, a connection's task reading, yields to the
    /// driver.
    ///
    /// A worker busy with long polls (read passes of frames that complete nothing, from a
    /// peer flooding them) looks at the runtime's timers only every so many polls, and the
    /// driver task then waits behind the others: with 8 connections flooding, a close
    /// timeout of 100 ms reached the application up to 1.4 s late. Woken from a task, the
    /// driver runs next on the same worker.
    pub(crate) fn wake_overdue_timer(&self) -> bool {
        let due = self.timer_due.load(Ordering::Relaxed);
        let elapsed = now().saturating_duration_since(self.epoch);
        if due == u64::MAX || elapsed.as_nanos() < u128::from(due) {
            return false;
        }
        let woken =
            self.timer_due
                .compare_exchange(due, u64::MAX, Ordering::Relaxed, Ordering::Relaxed);
        if woken.is_ok() {
            self.wake.notify_one();
        }
        true
    }

    /// Whether the task taking events reads the connections' input ([`Reads::Taker`]), as
    /// last seen (confirmed under the lock by [`Self::report_pass`]).
    pub(crate) fn taker_reads(&self) -> bool {
        self.taker_reads.load(Ordering::Relaxed)
    }

    /// Takes events for the [`crate::Events`] stream: up to one batch into `into`. With none
    /// waiting, a take that waits (`waker`) reads the input the connections left to it (or
    /// that their last pass left) and takes what that gave; the reads are its own while it
    /// finds events, and go back to the connections' tasks when it finds none. A take that
    /// does not wait (`try_recv`) never reads: a loop taking events until none is ready
    /// would otherwise go on for as long as a flood lasts.
    pub(crate) fn take_events(
        self: &Arc<Self>,
        waker: Option<&Waker>,
        into: &mut wxsocket_wire::events::EventBatch,
    ) -> Taken {
        let unread = self.call(|core, now| {
            if core.take_batch(into) {
                if core.reads == Reads::Tasks && waker.is_some() {
                    core.set_reads(self, Reads::Taker { since: now });
                }
                return Err(Taken::Some);
            }
            let unread = if waker.is_some() {
                core.take_unread()
            } else {
                Vec::new()
            };
            if unread.is_empty() {
                return Err(core.nothing_taken(self, waker));
            }
            core.set_reads(self, Reads::Taker { since: now });
            Ok(unread)
        });
        let unread = match unread {
            Ok(unread) => unread,
            Err(taken) => return taken,
        };
        #[cfg(test)]
        if unread.len() > 1 {
            self.hooks.takes_of_many.fetch_add(1, Ordering::Relaxed);
        }
        // Whether the last pass found events waiting (for the tests).
        #[cfg(test)]
        let mut behind_events = false;
        for (conn, io) in unread {
            #[cfg(test)]
            if behind_events {
                self.hooks
                    .passes_behind_events
                    .fetch_add(1, Ordering::Relaxed);
            }
            // The connection's task holds its state at most for its own poll (a few read
            // passes, or only leaving the input here): waiting for it beats handing the
            // reads back and being woken across threads for what it reads.
            conn::read_for_task(self, conn, &io);
            // Once a pass gave events, the application takes them: the rest wait for the
            // next take (they stay listed, this one behind them). With many connections
            // flooding, a take read each of them once before it looked.
            let mut core = self.lock();
            let events = core.machine.has_events();
            #[cfg(test)]
            {
                behind_events = events;
            }
            if events {
                core.relist_unread(conn);
                break;
            }
        }
        self.call(|core, _| {
            if core.take_batch(into) {
                return Taken::Some;
            }
            core.nothing_taken(self, waker)
        })
    }

    /// The application let go of its events: from now on they are dropped as they come,
    /// and the connections' tasks read.
    pub(crate) fn detach_events(self: &Arc<Self>) {
        self.call(|core, _| {
            core.out.events_alive = false;
            core.set_reads(self, Reads::Tasks);
        });
    }

    /// How much connection `conn` may read now.
    pub(crate) fn read_credit(&self, conn: ConnId) -> ReadCredit {
        self.lock().machine.concurrent_read_credit(conn)
    }

    /// The dial succeeded: record the socket details (`None` if the OS would not say), then
    /// report the handshake (`events`, the connection's `Opened`).
    pub(crate) fn opened(
        self: &Arc<Self>,
        conn: ConnId,
        socket: Option<SocketInfo>,
        events: Vec<TransportEvent>,
        io: SharedIo,
    ) {
        self.call(|core, now| {
            if let Some(entry) = core.conns.get_mut(&conn) {
                entry.socket = socket;
                entry.io = Some(io);
            }
            for event in events {
                core.machine.handle(conn, event, now);
            }
            core.out.room_freed = true;
        });
    }

    /// Shuts the machine down (once): the core closes every connection and says when it
    /// is drained; the driver task then ends.
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        self.call(|core, now| {
            core.lifecycle.shut_down(&mut core.machine, now);
            // The application may no longer take events; the close frames are read.
            core.set_reads(self, Reads::Tasks);
        });
        self.wake.notify_one();
    }

    /// Whether the driver task has ended (no event will be produced any more).
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Tries to send `message` (taken from the slot): accepted, with `waiter()` registered
    /// for its outcome; refused for good; or, when the core has no room, handed back into
    /// the slot with the task registered to be woken when room may have been freed.
    pub(crate) fn poll_send(
        self: &Arc<Self>,
        cx: &mut std::task::Context<'_>,
        ticket: &mut RoomTicket,
        slot: &mut Option<wxsocket_core::Message>,
        waiter: impl FnOnce() -> Waiter,
        send: impl FnOnce(
            &mut M,
            wxsocket_core::Message,
            Instant,
        ) -> Result<SendId, wxsocket_core::SendError>,
    ) -> std::task::Poll<Result<SendId, wxsocket_core::SendError>> {
        use std::task::Poll;
        self.call(|core, now| {
            let message = slot.take().expect("a message to send");
            let result = match send(&mut core.machine, message, now) {
                Ok(id) => {
                    core.out.waiters.insert(id, waiter());
                    Ok(id)
                }
                Err(refused) if refused.is_full() => {
                    *slot = Some(refused.into_message());
                    core.out.wait_for_room(ticket, cx.waker());
                    return Poll::Pending;
                }
                Err(refused) => Err(refused),
            };
            if let Some(id) = ticket.take() {
                core.out.room_wakers.remove(&id);
            }
            Poll::Ready(result)
        })
    }

    /// Gives a send's ticket back: it no longer waits for room (accepted, refused, or its
    /// future dropped).
    pub(crate) fn forget_room(&self, ticket: &mut RoomTicket) {
        if let Some(id) = ticket.take() {
            self.lock().out.room_wakers.remove(&id);
        }
    }

    /// Shuts down and waits until the driver task has ended.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.begin_shutdown();
        loop {
            let exited = self.exited.notified();
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            exited.await;
        }
    }
}

/// Keeps the driver alive: every handle (`Client` clones, `TaskPool`, `SocketTask`s,
/// `WxSocket` clones) holds one `Arc` of it; when the last goes, the driver closes every
/// connection and ends (the event stream then ends too).
pub(crate) struct Handle<M: Machine> {
    pub(crate) shared: Arc<Shared<M>>,
}

impl<M: Machine> Drop for Handle<M> {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

impl<M: Machine> DriverHandle<M> for Handle<M> {
    fn call<R>(&self, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        self.shared.call(|core, now| f(&mut core.machine, now))
    }

    fn read<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        f(&self.shared.lock().machine)
    }

    fn socket_info(&self, conn: ConnId) -> Option<SocketInfo> {
        self.shared.lock().socket_info(conn)
    }

    fn has_ended(&self) -> bool {
        self.shared.has_ended()
    }

    fn proxy_env(&self) -> &wxsocket_wire::proxy::ProxyEnv {
        &self.shared.proxy_env
    }
}

/// Starts the driver task for `machine` on the current tokio runtime.
/// `events`: the application takes the machine's events through [`crate::Events`].
pub(crate) fn start<M: Machine>(
    mut machine: M,
    config: &Config,
    events: bool,
) -> Result<Arc<Handle<M>>, ConfigError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| ConfigError::new("runtime", "must be called from inside a tokio runtime"))?;
    let tls = wxsocket_wire::upgrade::client_config(config)?;
    // The driver's one timer, made here so that a runtime without its time driver is
    // refused now (tokio panics on the first timer; its panic hook still prints that)
    // rather than ending every connection later.
    let sleep = std::panic::catch_unwind(|| tokio::time::sleep(Duration::from_secs(3600)))
        .map_err(|_| {
            ConfigError::new(
                "runtime",
                "the tokio runtime has no timers: build it with enable_time() or enable_all()",
            )
        })?;
    // Likewise the IO driver, which the first socket would need: registering one without it
    // panics in the connection's task, and every dial failed as a network error that a
    // reconnect policy retried for ever. (A socket that cannot be made leaves it to the
    // dial to say.)
    let io = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|sock| sock.set_nonblocking(true).map(|()| sock));
    if let Ok(sock) = io
        && std::panic::catch_unwind(|| tokio::net::UdpSocket::from_std(sock)).is_err()
    {
        return Err(ConfigError::new(
            "runtime",
            "the tokio runtime has no IO driver: build it with enable_io() or enable_all()",
        ));
    }
    machine.track_completions();
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            machine,
            out: Outbox {
                events_alive: events,
                event_waker: None,
                waiters: HashMap::new(),
                room_wakers: HashMap::new(),
                last_ticket: 0,
                room_freed: false,
            },
            conns: HashMap::new(),
            lifecycle: Lifecycle::default(),
            in_place: Vec::new(),
            reads: Reads::Tasks,
            unread: Vec::new(),
        }),
        wake: Notify::new(),
        runtime: runtime.clone(),
        tls,
        proxy_env: config.resolve_proxy_env(),
        ws_config: wxsocket_wire::websocket_config(&config.session),
        lookups: conn::SharedLookups::default(),
        ended: AtomicBool::new(false),
        #[cfg(test)]
        hooks: Hooks::default(),
        exited: Notify::new(),
        taker_reads: AtomicBool::new(false),
        timer_due: AtomicU64::new(u64::MAX),
        epoch: now(),
    });
    // The guard is the task's argument, not a local, so that it is dropped with a task
    // that was never polled too.
    let exit = Exit {
        shared: Arc::clone(&shared),
        finished: false,
        why: None,
    };
    runtime.spawn(drive(exit, sleep));
    Ok(Arc::new(Handle { shared }))
}

/// Marks the driver ended when its task ends, and wakes whoever waits for it. A task
/// dropped unfinished means its runtime was shut down (a client made on one runtime and
/// used from another): the connection tasks went with it, so every connection ends as
/// lost ([`Lifecycle::driver_lost`]) and its last events and send outcomes are handed
/// over, instead of leaving `send` and [`crate::Events`] waiting for ever.
struct Exit<M: Machine> {
    shared: Arc<Shared<M>>,
    finished: bool,
    /// Why the task ended unfinished, when it knows (it panicked); otherwise its runtime
    /// was shut down.
    why: Option<String>,
}

impl<M: Machine> Drop for Exit<M> {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut waiting = Vec::new();
        if !self.finished {
            let mut guard = shared.lock();
            let core = &mut *guard;
            let mut open = Vec::new();
            core.unread.clear();
            for (conn, entry) in core.conns.drain() {
                entry.task.abort();
                if entry.io.is_some() {
                    open.push(conn);
                }
            }
            let why = self
                .why
                .as_deref()
                .unwrap_or("the tokio runtime driving the connection was shut down");
            core.lifecycle
                .driver_lost(&mut core.machine, open, why, now());
            while let Some((id, result)) = core.machine.poll_completion() {
                if let Some(waiter) = core.out.waiters.remove(&id) {
                    waiter.settle(result.map_err(|failed| *failed));
                }
            }
            // Nothing else will settle the rest.
            for (id, waiter) in core.out.waiters.drain() {
                let lost = FailedSend::new(SendFailure::ConnectionLost, None).with_id(id);
                waiter.settle(Err(lost));
            }
            waiting.extend(core.out.room_wakers.drain().map(|(_, waker)| waker));
            drop(guard);
            wxsocket_wire::machine::run_last_callbacks(|| shared.lock().machine.due_callbacks());
        }
        shared.ended.store(true, Ordering::Release);
        shared.exited.notify_waiters();
        // The stream ends once its last events are taken ([`Shared::has_ended`] under the
        // lock); a send waiting for room finds the core shut down.
        waiting.extend(shared.lock().out.event_waker.take());
        for waker in waiting {
            waker.wake();
        }
    }
}

/// The driver task: the one timer, the wx-style callbacks, and shutdown.
async fn drive<M: Machine>(mut exit: Exit<M>, sleep: tokio::time::Sleep) {
    let shared = Arc::clone(&exit.shared);
    let turns = std::panic::AssertUnwindSafe(turn_until_finished(shared, sleep));
    match futures_util::FutureExt::catch_unwind(turns).await {
        Ok(()) => exit.finished = true,
        // A runtime without its time driver panics at the first timer: every connection
        // then ends as lost, saying so ([`Exit`]).
        Err(panic) => {
            exit.why = Some(format!(
                "the driver task panicked: {}",
                wxsocket_wire::connection::panic_message(&*panic)
            ))
        }
    }
}

/// The driver task's work, until the core has shut down and is drained.
async fn turn_until_finished<M: Machine>(shared: Arc<Shared<M>>, sleep: tokio::time::Sleep) {
    tokio::pin!(sleep);
    loop {
        let (armed, callbacks, finished, turned) = {
            let mut core = shared.lock();
            let now = now();
            if core.machine.poll_timeout().is_some_and(|t| t <= now) {
                core.machine.handle_timeout(now);
            }
            if core.handback_due().is_some_and(|due| due <= now) {
                core.set_reads(&shared, Reads::Tasks);
            }
            let turned = core.turn(&shared, now);
            let callbacks = core.machine.take_callbacks();
            let finished = core.lifecycle.finished(&core.machine);
            if finished {
                // The core has ended every connection and asked for every abort it wants;
                // a task still here has nothing left to report.
                core.unread.clear();
                for (conn, entry) in core.conns.drain() {
                    tracing::debug!(%conn, "shutdown: connection task ended");
                    entry.task.abort();
                }
            }
            let next = match (core.machine.poll_timeout(), core.handback_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            core.lifecycle.arm(next);
            shared.set_timer_due(next);
            (next, callbacks, finished, turned)
        };
        // This is the driver task: it looks again below anyway.
        let _ = turned.wake_events();
        let ran = !callbacks.is_empty();
        wxsocket_wire::machine::run_callbacks(callbacks);
        if finished {
            break;
        }
        if ran {
            // The callbacks may have freed room (more events to dispatch) or called into
            // the socket: look again before sleeping.
            continue;
        }
        if let Some(deadline) = armed {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
        tokio::select! {
            biased;
            _ = shared.wake.notified() => {}
            _ = &mut sleep, if armed.is_some() => {}
        }
    }
    wxsocket_wire::machine::run_last_callbacks(|| shared.lock().machine.due_callbacks());
    tracing::debug!("driver finished");
}
