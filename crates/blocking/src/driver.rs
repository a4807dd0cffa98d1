//! The IO driver, written once for every [`Driven`](wxsocket_core::Driven) machine (Session,
//! Pool, WxSocket).
//!
//! State shared by the handles and the driver thread: the machine and the connections
//! behind one mutex ([`Inner`]), the application's events behind another ([`Outbox`]).
//! Whoever changes the machine — an application thread in `send`/`close`/`connect`, or
//! the driver thread on a readiness event or a timer — calls [`Inner::pump`] before
//! unlocking, which carries out every queued action right there (writes go straight to
//! the non-blocking socket), then hands the events to the application.
//!
//! Flow control (SPEC §7): the driver reads a connection only within the read credit the
//! machine gives it ([`Driven::read_credit`](wxsocket_core::Driven::read_credit)); when the
//! credit is used up the socket is taken out of both pollers for reads until the machine
//! says `ResumeReading`, so the peer meets TCP's backpressure. The outbox holds a small
//! batch of events ([`EventBatch`]); the rest stay in the machine, which bounds them,
//! and [`crate::Events`] takes the next batch when it has handed out the last one.

use crate::busy_poll::{self, BusyPoll};
use crate::conn::{Conn, Ctx, ReadPass, key};
use crate::{Config, StartError};
use mio::{Events as MioEvents, Poll, Registry, Token, Waker};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocketConfig;
use wxsocket_core::{Action, ConnId, Event, FailedSend, SendId, TransportEvent};
use wxsocket_wire::connection::{Connection, DialTarget};
use wxsocket_wire::dial::Lookups;
use wxsocket_wire::events::EventBatch;
pub(crate) use wxsocket_wire::machine::{Lifecycle, Machine};

/// The poller token of the cross-thread waker.
const WAKER: Token = Token(usize::MAX);

/// How long the sockets' reads stay with the application's receiving thread after it
/// returned from `recv`, in case it comes back (see [`Inner::reads`]); each call the
/// application makes into the machine meanwhile (a send, say) extends it, up to
/// [`HANDBACK_LIMIT`].
const HANDBACK_GRACE: Duration = Duration::from_millis(20);

/// The longest the reads stay with a receiving thread that has left `recv` while the
/// application keeps calling into the machine: what an owed reply (a pong, the close
/// handshake) waits at most while nobody receives.
const HANDBACK_LIMIT: Duration = Duration::from_millis(250);

/// Locks a mutex, ignoring poisoning (no invariant of ours spans a panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Events on their way to the application (a bounded batch), and the completions `send`
/// waits for.
#[derive(Default)]
pub(crate) struct Outbox {
    /// The batch taken from the machine ([`EventBatch`]'s bounds).
    pub events: EventBatch,
    /// More events wait in the machine: whoever empties `events` takes the next batch
    /// ([`Shared::refill`]) instead of waiting.
    pub more: bool,
    /// Sends someone waits for; `Some` once completed.
    pub waiting: HashMap<SendId, Option<Result<(), FailedSend>>>,
    /// Counts the moments when room for a refused send may have freed (see
    /// [`Shared::room_waiters`]); a sender waits for it to change.
    pub room_epoch: u64,
    /// The senders waiting for room, by the connection that refused them (`None`: none
    /// was current): a send written on another connection does not wake them.
    pub room_waiting: HashMap<Option<ConnId>, usize>,
    /// The driver has stopped; no event will come any more.
    pub finished: bool,
    /// Threads parked in `recv` on the condition variable (notified only when there are).
    pub receivers: usize,
    /// A thread in `recv` sleeps in the receivers' poller (woken through its waker).
    pub receiver_polling: bool,
}

/// The receivers' poller: the sockets again (readable only), so a thread waiting in
/// `recv` is woken by the socket itself and reads the message on its own thread.
pub(crate) struct ReceiverPoll {
    poll: Poll,
    events: MioEvents,
    busy: BusyPoll,
    /// Every wait fails, for the tests (as when other code closed the poller's descriptor).
    #[cfg(test)]
    broken: bool,
}

/// Who reads the sockets (see [`Inner::reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// The driver thread: its poller watches every open socket for reads (unless reading
    /// is paused), and nothing is disarmed.
    Driver,
    /// Handed off to a thread in `recv` that sleeps on the receivers' poller, `since` then.
    /// Input on a socket the driver still watches disarms it (the driver stops watching it
    /// for reads and leaves the input to the receiving thread).
    Watched { since: Instant },
    /// Handed off, and the receiving thread has left `recv` (at `left`), probably to come
    /// back: input still disarms a socket and waits for it, until `due`, when the driver
    /// takes the reads back (or catches up earlier, before a due timer or for `try_recv`).
    Unwatched { left: Instant, due: Instant },
}

impl Reads {
    /// The receiving thread left `recv` at `now`.
    fn left(now: Instant) -> Self {
        Reads::Unwatched {
            left: now,
            due: now + HANDBACK_GRACE,
        }
    }

    /// The application called into the machine at `now`: it is busy (sending, say), not
    /// gone, and the reads stay with it one more grace period, but at most
    /// [`HANDBACK_LIMIT`] after it left `recv`. An application that sends a burst longer
    /// than the grace before it receives again (one message to each of 10,000
    /// connections) then reads the replies on its own thread, as one with a shorter burst
    /// does, instead of having the driver take the reads back in every round and hand
    /// each reply over between two threads.
    fn busy(&mut self, now: Instant) {
        if let Reads::Unwatched { left, due } = self {
            let extended = (now + HANDBACK_GRACE).min(*left + HANDBACK_LIMIT);
            *due = (*due).max(extended);
        }
    }
}

/// Threads waiting for the lock of one kind, and how many times one of them has had it
/// ([`Shared::defer_to`]). The count is of turns, not of threads: a thread that has its
/// turn and comes straight back may take the lock again before another that waited (std's
/// mutex is not fair), and so use up that one's turn; the deferring thread then goes on
/// with that one still waiting, which waits one more pass.
#[derive(Default)]
struct Turns {
    waiting: AtomicUsize,
    served: AtomicU64,
}

impl Turns {
    /// Locks `m`, counted as waiting meanwhile, and as served once it has it (which wakes
    /// the threads deferring at `gate`).
    fn lock<'a, T>(&self, m: &'a Mutex<T>, gate: &Gate) -> MutexGuard<'a, T> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let guard = lock(m);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::SeqCst);
        gate.served();
        guard
    }

    /// The turns owed now: (served so far, waiting now).
    fn owed(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::SeqCst),
            self.waiting.load(Ordering::Acquire) as u64,
        )
    }

    /// Whether fewer threads have had the lock since `owed` was taken than waited then.
    fn unserved(&self, &(served, waiting): &(u64, u64)) -> bool {
        self.served.load(Ordering::SeqCst).wrapping_sub(served) < waiting
    }
}

/// Where a thread deferring to others ([`Shared::defer_to`]) sleeps until they have had
/// their turns; each thread that has its turn wakes it. (It yielded in a loop: under a
/// flood of small messages on two cores, the driver thread spent a fifth of the client's
/// CPU in `sched_yield` while the receiving thread it let go first was being woken.)
#[derive(Default)]
struct Gate {
    /// Threads sleeping here (or about to).
    deferring: AtomicUsize,
    lock: Mutex<()>,
    turn_taken: Condvar,
}

impl Gate {
    /// A thread had its turn: wakes the deferring threads, if any. (Its count of turns
    /// went up before, and a deferring thread counts itself before it looks at the turns:
    /// one of the two sees the other, both sequentially consistent.)
    fn served(&self) {
        if self.deferring.load(Ordering::SeqCst) > 0 {
            // Taken so that a thread between its look at the turns and its wait is not
            // woken in that gap (and missed).
            drop(lock(&self.lock));
            self.turn_taken.notify_all();
        }
    }

    /// Sleeps while `unserved`, at most `limit`.
    fn wait_while(&self, unserved: impl Fn() -> bool, limit: Duration) {
        self.deferring.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        let mut guard = lock(&self.lock);
        while unserved() {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            guard = (self.turn_taken.wait_timeout(guard, left))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(guard);
        self.deferring.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a thread about to read the sockets lets the threads it defers to take the state
/// first ([`Shared::defer_to`]).
const WAITING_FIRST: Duration = Duration::from_millis(10);

/// State shared by every handle and the driver thread.
pub(crate) struct Shared<M> {
    pub inner: Mutex<Inner<M>>,
    pub outbox: Mutex<Outbox>,
    pub event_ready: Condvar,
    pub completion_ready: Condvar,
    /// Notified (with [`Outbox::room_epoch`] moved on) when a refused send may fit now.
    pub room_ready: Condvar,
    /// Threads waiting for room to send. A waiter counts itself under the `inner` lock, in
    /// the same call whose send was refused, so that any later change to the machine
    /// sees it and moves `room_epoch` on.
    pub room_waiters: AtomicUsize,
    /// Application calls waiting for `inner` ([`Shared::lock_for_caller`]): the threads that
    /// read the sockets let them have it first.
    callers: Arc<Turns>,
    /// Threads in `recv` waiting for `inner` to read the sockets
    /// ([`Shared::lock_for_receiver`]): the driver thread lets them have it first.
    receivers: Arc<Turns>,
    /// Where a thread deferring to `callers` or `receivers` waits for them.
    gate: Gate,
    /// The last thread to work on the sockets stopped with more to read or write (a read
    /// or write pass at its limit) and comes straight back for it: only then do the
    /// reading threads let the others have `inner` first ([`Shared::defer_to`]).
    passes_pending: AtomicBool,
    /// How many times a thread deferred to others ([`Shared::defer_to`]).
    #[cfg(test)]
    deferred: AtomicUsize,
    pub events_alive: AtomicBool,
    /// The proxy variables read when the client was created (the dials' copy is in
    /// [`Inner`]), for the connect calls' check.
    pub proxy_env: wxsocket_wire::proxy::ProxyEnv,
    /// Taken by the one thread in `recv` that waits on the sockets directly.
    pub receiver_poll: Option<Mutex<ReceiverPoll>>,
    /// How long a thread in `recv` polls the sockets before it sleeps, in nanoseconds
    /// (see [`crate::busy_poll`]).
    pub busy_poll: AtomicU64,
    receiver_waker: Option<Waker>,
    waker: Arc<Waker>,
    /// The driver thread, set when it starts (callbacks run on it).
    driver_thread: std::sync::OnceLock<std::thread::ThreadId>,
    /// The driver thread's handle, taken by the first [`Shared::shutdown`] to join it.
    joiner: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Marks the driver finished when the driver thread ends, also by a panic
/// ([`Shared::finish`]).
struct Finished<'a, M: Machine>(&'a Shared<M>);

impl<M: Machine> Drop for Finished<'_, M> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// A resolver thread's answer.
type Resolved = (DialTarget, io::Result<Vec<SocketAddr>>);

/// The machine and the transports, behind [`Shared::inner`].
pub(crate) struct Inner<M> {
    pub machine: M,
    conns: BTreeMap<u64, Conn>,
    /// The connections whose `dirty` flag was set (written to, not yet flushed), so a
    /// `pump` finds them without scanning every connection.
    dirty: BTreeSet<u64>,
    /// The open connections whose socket the driver thread's poller does not watch for
    /// reads (`Conn::set_driver_reads`): those that had input while the reads were handed
    /// off (see [`Self::reads`]). Empty while the driver thread owns the reads.
    disarmed: BTreeSet<u64>,
    registry: Registry,
    tls: Arc<wxsocket_wire::upgrade::ClientConfig>,
    /// The proxy variables, read when the client was created (`Action::Dial`).
    proxy_env: wxsocket_wire::proxy::ProxyEnv,
    ws_config: WebSocketConfig,
    receivers: Option<Registry>,
    resolved_tx: Sender<Resolved>,
    /// The name lookups on resolver threads, each with the dials waiting for it (one
    /// thread per host and port, however often a dial is retried while the resolver is
    /// slow).
    lookups: Lookups<u64>,
    /// What the resolver threads call (the OS resolver; in tests, a slow one).
    resolver: wxsocket_wire::dial::Resolver,
    waker: Arc<Waker>,
    /// The deadline the driver thread sleeps until, and whether the machine was shut down.
    lifecycle: Lifecycle,
    /// Whether the driver thread is (about to be) asleep in `poll`.
    sleeping: bool,
    /// When the dials' next connection attempts are due ([`Conn::next_attempt`]), by
    /// connection; an entry for a connection that has connected since does nothing.
    attempts_due: BTreeSet<(Instant, u64)>,
    /// Connections with data on the socket that a read pass left for later (or that have
    /// just opened): whoever owns the reads ([`Self::reads`]) makes a pass over exactly
    /// these, from [`Self::read_from`] round, so that this costs what the traffic costs, not
    /// a scan of every connection. Read passes left while the reads are handed off are the
    /// receiving thread's, made when it next comes to watch (at once if it sleeps there: the
    /// sockets, read up to the pass limit or to the read credit, may say nothing more).
    read_ready: BTreeSet<u64>,
    /// One past the connection last read: the next passes over `read_ready` start there, so
    /// that holds cut short ([`Self::leave_reads`]) go round every connection in turn.
    read_from: u64,
    /// The connections read while the lock has been held this time: a thread makes at most
    /// one read pass ([`READ_PASS`](wxsocket_wire::link::READ_PASS) bytes) of a connection
    /// per hold, and leaves the next in `read_ready`, so that the timers run, and the other
    /// threads have the lock, between passes. A driver turn made up to three (an event's,
    /// catching up, the passes left), and under a flood of frames completing nothing a
    /// close timeout of 500 ms fired 300 ms late in a debug build, 2–3 s late with two
    /// CPU burners running (tokio's: on time).
    passed: BTreeSet<u64>,
    /// The threads that wait for this lock ([`Shared::callers`], [`Shared::receivers`]): while
    /// one does, the holder leaves the read passes after its first for the next hold
    /// ([`Self::leave_reads`]).
    queued: [Arc<Turns>; 2],
    /// Connections whose last flush stopped at its pass limit
    /// ([`Connection::has_more_to_write`]): the driver thread flushes exactly these again,
    /// a pass each, between its other work, as it reads `read_ready`.
    write_ready: BTreeSet<u64>,
    /// Who reads the sockets. A thread in `recv` hands the reads off to itself before it
    /// sleeps on the receivers' poller ([`Reads::Watched`]), so that an arriving message
    /// wakes only the thread that waits for it and is read on that thread. After it
    /// returns the reads stay with it for [`HANDBACK_GRACE`] ([`Reads::Unwatched`]), longer
    /// while the application keeps calling into the machine ([`Reads::busy`]), so that an
    /// application that receives in a loop (the usual case) neither pays for giving them
    /// back and taking them again nor has the driver thread read messages it is about to
    /// read itself; then the driver takes them back: replies the protocol owes the peer
    /// (pong, the close handshake) wait at most [`HANDBACK_LIMIT`] while nobody receives.
    ///
    /// Neither the hand-off nor taking the reads back visits every connection: the
    /// driver's poller keeps watching every socket, and the first input on one while the
    /// reads are handed off wakes the driver once, which then stops watching that socket
    /// for reads (`disarmed`) and leaves the input to the receiving thread (the receivers'
    /// poller has it too). Taking the reads back watches and reads the disarmed sockets
    /// only. So what the hand-off costs is proportional to the connections with input, not
    /// to the connections held. Before the driver runs a due timer with the reads handed
    /// off and nobody watching, it catches up the same way, so a timer never judges a
    /// connection on stale input.
    ///
    /// The read passes a connection's input needs after the first (`read_ready`) stay
    /// with the reads: under a flood of small messages the read credit runs out as the
    /// backlog fills, and each time the application takes events a pass is left for later;
    /// with those passes the driver thread's, it made nine passes in ten and handed the
    /// messages over to the receiving thread, the two threads waking each other and
    /// waiting for this lock (a quarter of the client's CPU, half the throughput).
    reads: Reads,
    /// Open connections whose reading stopped with no close frame of ours queued
    /// ([`Connection::is_unanswered`]): once the pump has carried out the machine's actions
    /// (a close frame, if it answers the error), those still unanswered end.
    unanswered: BTreeSet<u64>,
    /// Something happened since the last delivery that may have freed room for any refused
    /// send: a connection opened or ended, an action carried out, events taken.
    progress: bool,
    /// Connections whose own room may have freed since the last delivery (a send written
    /// or acknowledged): only a send waiting for one of them is told.
    room_conns: Vec<ConnId>,
    /// The outbox's `more` as last set (so a delivery with nothing to do need not lock it).
    more: bool,
    /// A thread in `recv` or `try_recv` asked for the next batch ([`Shared::refill`]): it
    /// is filled for it, not ahead of it.
    asked: bool,
    scratch: Vec<TransportEvent>,
    /// Every connection worked on ([`Inner::with_conn`]), in order (for the tests that
    /// count them).
    #[cfg(test)]
    visited: Vec<u64>,
    /// The next work on this connection panics, for the tests (as a frame's mask drawn
    /// from a failing OS random source does).
    #[cfg(test)]
    panic_in: Option<u64>,
    /// The driver thread's next turn panics, for the tests.
    #[cfg(test)]
    panic_next_turn: bool,
    /// The thread of every read pass, in order (for the tests that say who reads).
    #[cfg(test)]
    readers: Vec<std::thread::ThreadId>,
    /// Read passes in this hold of the lock, and the most in any hold (for the tests).
    #[cfg(test)]
    passes_in_hold: (usize, usize),
}

impl<M: Machine> Shared<M> {
    /// Creates the shared state and starts the driver thread. The OS's refusal (out of open
    /// files or threads) is [`StartError::Os`], not the configuration's fault.
    pub fn start(machine: M, config: &Config, name: &str) -> Result<Arc<Self>, StartError> {
        let tls = wxsocket_wire::upgrade::client_config(config)?;
        let refused = |e| StartError::os("create the OS poller", &e);
        let poll = Poll::new().map_err(refused)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(refused)?);
        let registry = poll.registry().try_clone().map_err(refused)?;
        let (resolved_tx, resolved_rx) = mpsc::channel();
        // The receivers' poller is an optimisation (Unix only); without it `recv` waits on
        // the condition variable alone.
        let receiver = if cfg!(unix) {
            Poll::new().ok().and_then(|poll| {
                let waker = Waker::new(poll.registry(), WAKER).ok()?;
                let registry = poll.registry().try_clone().ok()?;
                let events = MioEvents::with_capacity(64);
                let busy = BusyPoll::default();
                let receiver = ReceiverPoll {
                    poll,
                    events,
                    busy,
                    #[cfg(test)]
                    broken: false,
                };
                Some((receiver, waker, registry))
            })
        } else {
            None
        };
        let (receiver_poll, receiver_waker, receivers) = match receiver {
            Some((p, w, r)) => (Some(Mutex::new(p)), Some(w), Some(r)),
            None => (None, None, None),
        };
        let proxy_env = config.resolve_proxy_env();
        let (caller_turns, receiver_turns) = (Arc::<Turns>::default(), Arc::<Turns>::default());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                machine,
                conns: BTreeMap::new(),
                dirty: BTreeSet::new(),
                disarmed: BTreeSet::new(),
                registry,
                receivers,
                tls,
                proxy_env: proxy_env.clone(),
                ws_config: wxsocket_wire::websocket_config(&config.session),
                resolved_tx,
                lookups: Lookups::default(),
                resolver: wxsocket_wire::dial::resolve,
                waker: Arc::clone(&waker),
                lifecycle: Lifecycle::default(),
                sleeping: false,
                read_ready: BTreeSet::new(),
                read_from: 0,
                passed: BTreeSet::new(),
                queued: [Arc::clone(&caller_turns), Arc::clone(&receiver_turns)],
                write_ready: BTreeSet::new(),
                attempts_due: BTreeSet::new(),
                unanswered: BTreeSet::new(),
                reads: Reads::Driver,
                progress: false,
                room_conns: Vec::new(),
                more: false,
                asked: false,
                scratch: Vec::new(),
                #[cfg(test)]
                visited: Vec::new(),
                #[cfg(test)]
                panic_in: None,
                #[cfg(test)]
                panic_next_turn: false,
                #[cfg(test)]
                readers: Vec::new(),
                #[cfg(test)]
                passes_in_hold: (0, 0),
            }),
            outbox: Mutex::new(Outbox::default()),
            event_ready: Condvar::new(),
            completion_ready: Condvar::new(),
            room_ready: Condvar::new(),
            room_waiters: AtomicUsize::new(0),
            callers: caller_turns,
            receivers: receiver_turns,
            gate: Gate::default(),
            passes_pending: AtomicBool::new(false),
            #[cfg(test)]
            deferred: AtomicUsize::new(0),
            events_alive: AtomicBool::new(true),
            proxy_env,
            receiver_poll,
            busy_poll: AtomicU64::new(busy_poll::default_budget().as_nanos() as u64),
            receiver_waker,
            waker,
            driver_thread: std::sync::OnceLock::new(),
            joiner: Mutex::new(None),
        });
        let driver = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("wxsocket-{name}"))
            .spawn(move || driver.run(poll, resolved_rx))
            .map_err(|e| StartError::os("start the driver thread", &e))?;
        *lock(&shared.joiner) = Some(thread);
        Ok(shared)
    }

    /// Runs `f` on the machine with the current time, carries out what it asked for, and
    /// wakes the driver thread only if its timer must be re-armed earlier.
    pub fn call<T>(&self, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        self.call_with(|m, now, _| f(m, now))
    }

    /// Like [`Self::call`], with access to the outbox before the actions run (to register
    /// a completion waiter that the pump may already fulfil).
    pub fn call_with<T>(&self, f: impl FnOnce(&mut M, Instant, &Self) -> T) -> T {
        let mut inner = self.lock_for_caller();
        let now = Instant::now();
        // The machine runs its due timers in any call (a send): as before the driver
        // thread runs them, first read what came while the reads were with a receiving
        // thread that has left `recv`, so no timer judges a connection on stale input (a
        // prober's keepalive of 100 ms ended a connection whose pong had come, the
        // application sending without receiving).
        if inner.machine.poll_timeout().is_some_and(|t| t <= now) {
            inner.catch_up_reads(false, now);
        }
        let out = f(&mut inner.machine, now, self);
        inner.reads.busy(now);
        inner.pump(self, now);
        self.release(inner);
        out
    }

    /// Unlocks `inner` after this thread worked on it: says whether passes wait (see
    /// [`Self::defer_to`]), and wakes the driver thread if it must look
    /// ([`Inner::driver_must_look`]).
    fn release(&self, inner: MutexGuard<'_, Inner<M>>) {
        self.passes_pending
            .store(inner.passes_pending(), Ordering::Release);
        let wake = inner.driver_must_look();
        let wake_receiver = inner.receiver_passes_pending();
        drop(inner);
        if wake {
            self.wake();
        }
        if wake_receiver {
            self.wake_receiver();
        }
    }

    /// `inner` for an application's call: counted while it waits, so that the threads that
    /// read the sockets let it go first ([`Self::lock_for_receiver`],
    /// [`Self::lock_for_driver`]).
    fn lock_for_caller(&self) -> MutexGuard<'_, Inner<M>> {
        Inner::held(self.callers.lock(&self.inner, &self.gate))
    }

    /// `inner` for a thread in `recv` about to read the sockets: it lets a waiting
    /// application call go first, and is counted while it waits, so that the driver thread
    /// lets it go first too.
    fn lock_for_receiver(&self) -> MutexGuard<'_, Inner<M>> {
        self.defer_to([&self.callers]);
        Inner::held(self.receivers.lock(&self.inner, &self.gate))
    }

    /// `inner` for the driver thread's round: any thread waiting goes first.
    fn lock_for_driver(&self) -> MutexGuard<'_, Inner<M>> {
        self.defer_to([&self.callers, &self.receivers]);
        Inner::held(lock(&self.inner))
    }

    /// While the passes come back to back ([`Self::passes_pending`]), lets the threads
    /// waiting for `inner` in `turns` at this moment take it first, each once, waiting at
    /// most [`WAITING_FIRST`]. A peer that keeps the reads busy (a flood of frames
    /// completing nothing) makes the read passes come back to back, as a large write to a
    /// fast reader makes the write passes, and a thread taking the lock again the moment
    /// it let it go kept it from the others (`std`'s mutex is not fair): the command's
    /// Ctrl-C never got to close (20 s and more), and a thread in `recv` waited for the
    /// flood to end. Otherwise nobody defers: a thread that yields whenever another waits
    /// made a `recv_timeout` of 10 ms return 25 ms late, and the driver thread, starved,
    /// flush large sends at half speed, while other threads kept calling in (a prober).
    /// As many turns as threads were waiting, not the lock for as long as any thread waits:
    /// three threads calling `buffered_amount` in a loop always had one waiting, and a
    /// driver thread writing a large message a pass at a time waited the whole
    /// [`WAITING_FIRST`] before each pass (45 MB/s instead of 2 GB/s).
    fn defer_to<const N: usize>(&self, turns: [&Turns; N]) {
        if !self.passes_pending.load(Ordering::Acquire) {
            return;
        }
        let owed = turns.map(Turns::owed);
        let unserved = || turns.iter().zip(&owed).any(|(t, owed)| t.unserved(owed));
        if !unserved() {
            return;
        }
        #[cfg(test)]
        self.deferred.fetch_add(1, Ordering::Relaxed);
        self.gate.wait_while(unserved, WAITING_FIRST);
    }

    /// Writes the next pass of connection `conn` if its last flush stopped at the pass
    /// limit (see [`Inner::write_ready`]), as the driver thread would; returns whether it
    /// did.
    pub fn write_on(&self, conn: ConnId) -> bool {
        let mut inner = self.lock_for_driver();
        let (k, now) = (key(conn), Instant::now());
        if !inner.write_ready.remove(&k) || !inner.write_pass(k, now) {
            return false;
        }
        inner.pump(self, now);
        self.release(inner);
        true
    }

    /// The socket of connection `conn` (`None`: the current one of a session).
    pub fn socket_info(
        &self,
        conn: impl FnOnce(&M) -> Option<ConnId>,
    ) -> Option<crate::SocketInfo> {
        let mut inner = self.lock_for_caller();
        let conn = conn(&inner.machine)?;
        inner.socket_info(conn)
    }

    /// Reads the machine without running anything.
    pub fn read<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(&self.lock_for_caller().machine)
    }

    pub fn wake(&self) {
        // Only fails if the eventfd is broken; the driver then still wakes on its timer.
        let _ = self.waker.wake();
    }

    /// Shuts the machine down (once): the core closes every connection and says when it
    /// is drained; the driver thread then ends.
    pub fn begin_shutdown(&self) {
        {
            let mut guard = self.lock_for_caller();
            let inner = &mut *guard;
            let now = Instant::now();
            if inner.lifecycle.shut_down(&mut inner.machine, now) {
                // Reads still with a thread that has left `recv` come back to the driver
                // now: the peers' close frames must not wait for the hand-back.
                inner.catch_up_reads(true, now);
                inner.pump(self, now);
            }
        }
        self.wake();
    }

    /// Shuts down and waits until the driver thread has ended; called from a callback
    /// (which runs on the driver thread) it only starts the shutdown, as the driver
    /// cannot wait for itself.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        if self.driver_thread.get() == Some(&std::thread::current().id()) {
            return;
        }
        let mut outbox = lock(&self.outbox);
        while !outbox.finished {
            outbox = self
                .completion_ready
                .wait(outbox)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(outbox);
        // The driver says it finished before the thread has quite ended (its poller is
        // dropped after): join it, so no thread of this client is left when this returns.
        // Held while joining, so a second `shutdown` returns no earlier.
        let mut joiner = lock(&self.joiner);
        if let Some(thread) = joiner.take() {
            let _ = thread.join();
        }
    }

    /// The driver thread.
    fn run(self: Arc<Self>, mut poll: Poll, resolved_rx: Receiver<Resolved>) {
        let _ = self.driver_thread.set(std::thread::current().id());
        // Whatever ends this thread, a panic included, every waiting thread learns it.
        let _finished = Finished(&self);
        let mut events = MioEvents::with_capacity(256);
        // A panic here (a bug: per connection work has its own guard, in `with_conn`) ends
        // every connection as lost, naming it, as the poller's failure does, instead of
        // leaving them without events or outcomes.
        let driven = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.turn_until_finished(&mut poll, &mut events, &resolved_rx)
        }));
        if let Err(panic) = driven {
            let why = format!(
                "the driver thread panicked: {}",
                wxsocket_wire::connection::panic_message(&*panic)
            );
            lock(&self.inner).driver_lost(&self, &why);
        }
        wxsocket_wire::machine::run_last_callbacks(|| lock(&self.inner).machine.due_callbacks());
    }

    /// The driver thread's turns, until the machine has finished or the poller failed.
    fn turn_until_finished(
        &self,
        poll: &mut Poll,
        events: &mut MioEvents,
        resolved_rx: &Receiver<Resolved>,
    ) {
        loop {
            let (timeout, callbacks, finished, dispatch_more) = {
                let mut inner = self.lock_for_driver();
                #[cfg(test)]
                assert!(!std::mem::take(&mut inner.panic_next_turn), "injected");
                let now = Instant::now();
                // The passes left for later first, so that a hold cut short reads them in
                // turn; an event's connection read here already is left for the next hold.
                if inner.reads == Reads::Driver {
                    inner.read_passes(now);
                }
                for event in events.iter() {
                    if event.token() != WAKER {
                        inner.on_event(event, now);
                    }
                }
                while let Ok((target, addrs)) = resolved_rx.try_recv() {
                    inner.on_resolved(&target, addrs, now);
                }
                while let Some(&(at, conn)) = inner.attempts_due.first()
                    && at <= now
                {
                    inner.attempts_due.pop_first();
                    inner.with_conn(conn, now, |c, ctx, out| c.start_attempts(ctx, now, out));
                }
                let due = matches!(inner.reads, Reads::Unwatched { due, .. } if now >= due);
                if due || inner.machine.poll_timeout().is_some_and(|t| t <= now) {
                    inner.catch_up_reads(due, now);
                }
                for conn in std::mem::take(&mut inner.write_ready) {
                    inner.write_pass(conn, now);
                }
                // A deadline that passed during the passes is due now, not next turn.
                let now = Instant::now();
                inner.machine.handle_timeout(now);
                inner.pump(self, now);
                let callbacks = inner.machine.take_callbacks();
                // A callback machine turns a bounded number of events into callbacks at
                // a time; once these have run, the next ones are dispatched.
                let dispatch_more = inner.machine.needs_dispatch();
                let finished = inner.lifecycle.finished(&inner.machine);
                if finished {
                    // The core has ended every connection and asked for every abort it
                    // wants; a transport still here has nothing left to report.
                    let all: Vec<u64> = inner.conns.keys().copied().collect();
                    for conn in all {
                        inner.abort(conn);
                    }
                }
                let mut deadline = inner.machine.poll_timeout();
                let attempt = inner.attempts_due.first().map(|&(at, _)| at);
                for due in [inner.handback_pending(now), attempt].into_iter().flatten() {
                    deadline = Some(deadline.map_or(due, |d| d.min(due)));
                }
                inner.lifecycle.arm(deadline);
                let passes_pending = inner.driver_passes_pending();
                inner.sleeping = !passes_pending;
                self.passes_pending
                    .store(inner.passes_pending(), Ordering::Release);
                if inner.receiver_passes_pending() {
                    self.wake_receiver();
                }
                let timeout = if passes_pending {
                    Some(Duration::ZERO)
                } else {
                    deadline.map(|d| d.saturating_duration_since(now))
                };
                (timeout, callbacks, finished, dispatch_more)
            };
            let ran = !callbacks.is_empty();
            wxsocket_wire::machine::run_callbacks(callbacks);
            if finished {
                break;
            }
            if ran || dispatch_more {
                // Callbacks may have called into the machine, and more events may wait
                // to be dispatched; look again at once.
                lock(&self.inner).sleeping = false;
                events.clear();
                continue;
            }
            if let Err(e) = poll.poll(events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // The poller itself failed: nothing can be driven any more.
                    lock(&self.inner).driver_lost(self, &format!("the OS poller failed: {e}"));
                    break;
                }
                events.clear();
            }
            lock(&self.inner).sleeping = false;
        }
    }

    /// The driver has stopped: no event will come any more, no send will complete.
    fn finish(&self) {
        lock(&self.outbox).finished = true;
        self.event_ready.notify_all();
        self.completion_ready.notify_all();
        self.room_ready.notify_all();
        self.wake_receiver();
    }

    fn wake_receiver(&self) {
        if let Some(waker) = &self.receiver_waker {
            let _ = waker.wake();
        }
    }

    /// Called by a thread in `recv` that found no event and holds the receivers' poller
    /// (`outbox` is locked, `receiver_polling` set by the caller): makes the read passes
    /// left for later ([`Inner::read_ready`]) if there are any, or else sleeps until a
    /// socket is readable, an event is delivered, or `deadline`, and reads what is
    /// readable; all on this thread. Returns the outbox locked again.
    pub fn receive_io<'a>(
        &'a self,
        receiver: &mut ReceiverPoll,
        outbox: MutexGuard<'a, Outbox>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, Outbox> {
        drop(outbox);
        // While this thread watches the sockets, the driver thread leaves their input to it
        // (it would be woken by every message too; see `Conn::set_driver_reads`). The
        // hand-off touches no socket (see `Inner::reads`): the sockets the driver's poller
        // still watches are disarmed one by one as input comes.
        let passes = {
            let mut inner = self.lock_for_receiver();
            let now = Instant::now();
            inner.reads = Reads::Watched { since: now };
            inner.pump(self, now);
            !inner.read_ready.is_empty()
        };
        let mut ready: Vec<(u64, ReadPass)> = Vec::new();
        // With passes waiting, what the other sockets say is still read now (without
        // sleeping): a connection flooding faster than the application receives has a pass
        // waiting every time, and skipping the poller left every other connection unread
        // while it lasted (a quiet one's messages, its pongs, its close frame).
        let (deadline, budget) = if passes {
            (Some(Instant::now()), Duration::ZERO)
        } else {
            let busy = Duration::from_nanos(self.busy_poll.load(Ordering::Relaxed));
            (deadline, busy)
        };
        let waited = receiver.wait(deadline, budget);
        if waited.is_ok() {
            let ReceiverPoll { events, .. } = receiver;
            for e in events.iter().filter(|e| e.token() != WAKER) {
                let conn = e.token().0 as u64;
                if !ready.iter().any(|(c, _)| *c == conn) {
                    ready.push((conn, ReadPass::for_event(e)));
                }
            }
        }
        lock(&self.outbox).receiver_polling = false;
        let mut inner = self.lock_for_receiver();
        if let Err(e) = waited
            && e.kind() != io::ErrorKind::Interrupted
        {
            // The receivers' poller failed (other code closed its descriptor, say): no
            // thread can watch the sockets any more, and waiting again at once spun (37,000
            // failed waits in 3 s, a prober's). As when the driver's own poller fails.
            inner.driver_lost(self, &format!("the OS poller failed: {e}"));
            self.release(inner);
            self.wake();
            return lock(&self.outbox);
        }
        let now = Instant::now();
        inner.reads = Reads::left(now);
        let passed = !inner.read_ready.is_empty();
        // Events came for the caller meanwhile (the driver thread delivered them while this
        // thread waited for the lock): it takes them now, and the reads wait for its next
        // `recv`. With sixteen connections flooding, the passes made here first held back
        // an event 1.4 s (a debug build).
        let waiting = {
            let outbox = lock(&self.outbox);
            !outbox.events.is_empty() || outbox.more
        };
        if !waiting {
            inner.read_passes(now);
        }
        for (conn, pass) in ready.iter().copied() {
            if !(waiting && inner.read_later(conn, now)) {
                inner.on_ready(conn, pass, now);
            }
        }
        // Due timers run here too, as in any call into the machine: a peer that keeps this
        // thread reading (a flood of fragments) keeps it taking the lock, which the driver
        // thread then lets it have (`lock_for_driver`), and the command's close timeout
        // fired when the flood ended (18 s late) instead of on time.
        let now = Instant::now();
        let due = inner.machine.poll_timeout().is_some_and(|t| t <= now);
        if due {
            inner.machine.handle_timeout(now);
        }
        if due || !ready.is_empty() || passed {
            inner.pump(self, now);
        }
        self.release(inner);
        let outbox = lock(&self.outbox);
        if outbox.events.is_empty() && !outbox.more && outbox.receivers > 0 {
            // Nothing for this thread's caller (a timeout): another thread parked in `recv`
            // takes over watching, or the reads would wait for the driver to take them back.
            self.event_ready.notify_one();
        }
        outbox
    }

    /// Moves the next batch of events from the machine to the outbox, for a receiving
    /// thread that emptied it (taking events from the machine frees room under its receive
    /// bounds; the pump carries out the `ResumeReading` that may follow). With `catch_up`,
    /// first reads what arrived while the reads were with a receiving thread that has left
    /// ([`Inner::catch_up_reads`]): `try_recv` must see it.
    pub fn refill(&self, catch_up: bool) {
        let mut inner = self.lock_for_caller();
        let now = Instant::now();
        if catch_up {
            inner.catch_up_reads(false, now);
        }
        inner.asked = true;
        inner.pump(self, now);
        inner.asked = false;
        self.release(inner);
    }

    /// `Events` was dropped (`events_alive` is already false): nobody will receive any
    /// more, so the driver thread takes the reads back, and the events waiting in the
    /// machine are taken and discarded (which resumes a paused connection).
    pub fn discard_events(&self) {
        lock(&self.outbox).events.clear();
        let mut inner = self.lock_for_caller();
        let now = Instant::now();
        inner.catch_up_reads(true, now);
        inner.pump(self, now);
        self.release(inner);
    }
}

impl ReceiverPoll {
    /// Waits until a socket is readable, the waker fires, or `deadline`; first polls for
    /// up to `budget` without sleeping if [`BusyPoll`] says that pays (not past the
    /// deadline).
    fn wait(&mut self, deadline: Option<Instant>, budget: Duration) -> io::Result<()> {
        #[cfg(test)]
        if self.broken {
            return Err(io::Error::from_raw_os_error(9)); // EBADF
        }
        let Self {
            poll, events, busy, ..
        } = self;
        if !budget.is_zero() && busy.should_poll() {
            let start = Instant::now();
            let until = deadline.map_or(start + budget, |d| d.min(start + budget));
            loop {
                poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() {
                    busy.caught();
                    return Ok(());
                }
                if Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
            busy.missed();
        }
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        poll.poll(events, timeout)
    }
}

impl<M: Machine> Inner<M> {
    /// Whether a read or write pass stopped at its limit and the driver thread comes
    /// straight back for the rest.
    fn passes_pending(&self) -> bool {
        !self.read_ready.is_empty() || !self.write_ready.is_empty()
    }

    /// Whether the driver thread comes straight back for a pass: a write pass, or a read
    /// pass while it owns the reads (handed off, they are the receiving thread's).
    fn driver_passes_pending(&self) -> bool {
        !self.write_ready.is_empty() || (self.reads == Reads::Driver && !self.read_ready.is_empty())
    }

    /// Whether read passes wait for the receiving thread that watches the sockets (which
    /// must then be woken).
    fn receiver_passes_pending(&self) -> bool {
        matches!(self.reads, Reads::Watched { .. }) && !self.read_ready.is_empty()
    }

    /// `inner` just locked: no read pass made in this hold yet ([`Self::passed`]).
    fn held(mut inner: MutexGuard<'_, Self>) -> MutexGuard<'_, Self> {
        inner.passed.clear();
        #[cfg(test)]
        {
            inner.passes_in_hold.0 = 0;
        }
        inner
    }

    /// Makes the next read pass of every connection whose last one stopped at its limit,
    /// from [`Self::read_from`] round (those that [`Self::on_ready`] leaves for the next hold
    /// stay in `read_ready`).
    fn read_passes(&mut self, now: Instant) {
        let ready = std::mem::take(&mut self.read_ready);
        let from = self.read_from;
        for &conn in ready.range(from..).chain(ready.range(..from)) {
            self.read_pass(conn, now);
        }
    }

    /// Makes the next read pass of `conn`, if data waits.
    fn read_pass(&mut self, conn: u64, now: Instant) {
        if self.conns.get(&conn).is_some_and(|c| c.has_more_to_read()) {
            self.on_ready(conn, ReadPass::ToTheEnd, now);
        }
    }

    /// Makes the next write pass of `conn` if its last flush stopped at the pass limit
    /// ([`Self::write_ready`]); returns whether it did.
    fn write_pass(&mut self, conn: u64, now: Instant) -> bool {
        if !self.conns.get(&conn).is_some_and(|c| c.has_more_to_write()) {
            return false;
        }
        self.with_conn(conn, now, |c, _, out| c.flush(out));
        true
    }

    /// The driver can go on no longer (its poller failed): every transport is dropped
    /// and every connection ends as lost ([`Lifecycle::driver_lost`]), its last events
    /// and send outcomes handed over like any others.
    fn driver_lost(&mut self, shared: &Shared<M>, why: &str) {
        let open: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.is_open())
            .map(|c| c.id())
            .collect();
        for conn in self.conns.keys().copied().collect::<Vec<_>>() {
            self.abort(conn);
        }
        self.lifecycle
            .driver_lost(&mut self.machine, open, why, Instant::now());
        self.deliver(shared);
    }

    /// The socket of connection `conn`, if it has one.
    pub fn socket_info(&mut self, conn: ConnId) -> Option<crate::SocketInfo> {
        self.conns.get_mut(&key(conn))?.socket_info()
    }

    /// When the driver thread must look at handed-off reads again (see
    /// [`Self::reads`]): when they are due back; while a thread has been
    /// watching them for less than a grace period (a receive loop, whose watches are
    /// short), one grace period from `now`, so the receiving thread need not wake the driver
    /// each time a watch ends; during a longer watch (an idle connection) not at all, and
    /// the receiving thread wakes the driver when that watch ends
    /// ([`Self::driver_must_look`]).
    fn handback_pending(&self, now: Instant) -> Option<Instant> {
        match self.reads {
            Reads::Driver => None,
            Reads::Watched { since } => (now.saturating_duration_since(since) < HANDBACK_GRACE)
                .then(|| now + HANDBACK_GRACE),
            Reads::Unwatched { due, .. } => Some(due),
        }
    }

    /// With the reads handed off and nobody watching: reads what has arrived, and with
    /// `take_back` gives the reads back to the driver thread. Returns whether it did.
    ///
    /// Visits only the disarmed connections (those with input since the hand-off): every
    /// other socket is still watched by the driver's poller, so input on it would have
    /// disarmed it. Each is watched again and read to the end (the input that disarmed it
    /// may still wait, on the socket or in the WebSocket's buffer; re-arming a socket that
    /// has data raises an event too). Whatever comes later wakes the driver thread.
    fn catch_up_reads(&mut self, take_back: bool, now: Instant) -> bool {
        if !matches!(self.reads, Reads::Unwatched { .. }) {
            return false;
        }
        if take_back {
            self.reads = Reads::Driver;
        }
        self.read_passes(now);
        for conn in std::mem::take(&mut self.disarmed) {
            self.with_conn(conn, now, |c, _, _| c.set_driver_reads(true));
            if self.conns.get(&conn).is_some_and(|c| c.is_open()) {
                self.on_ready(conn, ReadPass::ToTheEnd, now);
            }
        }
        true
    }

    /// A readiness event from the driver thread's poller. While the reads are handed off,
    /// input on an open connection is the receiving thread's: the driver stops watching
    /// the socket for reads (it wakes for that connection once per hand-off) and reads
    /// nothing; it still flushes on writability and reports errors.
    fn on_event(&mut self, event: &mio::event::Event, now: Instant) {
        let conn = event.token().0 as u64;
        if self.reads != Reads::Driver && self.conns.get(&conn).is_some_and(|c| c.is_open()) {
            if self.disarmed.insert(conn) {
                self.with_conn(conn, now, |c, _, _| c.set_driver_reads(false));
            }
            if !(event.is_writable() || event.is_error()) {
                return;
            }
        }
        self.on_ready(conn, ReadPass::for_event(event), now);
    }

    /// After another thread ran the machine: whether the sleeping driver thread must wake
    /// to re-arm its timer earlier, run callbacks, finish a read or write pass, or notice that
    /// a shutdown's last connection is gone (a socket dropped elsewhere takes its pending
    /// readiness event with it).
    fn driver_must_look(&self) -> bool {
        let earlier = |due: Instant| self.lifecycle.armed().is_none_or(|armed| armed > due);
        self.sleeping
            && (self.driver_passes_pending()
                || matches!(self.reads, Reads::Unwatched { due, .. } if earlier(due))
                || self
                    .attempts_due
                    .first()
                    .is_some_and(|&(at, _)| earlier(at))
                || self.lifecycle.finished(&self.machine)
                || self.machine.has_callbacks()
                || self.lifecycle.timer_late(&self.machine))
    }

    /// Carries out every queued action, flushes what was written, feeds the results back,
    /// until the machine has nothing more to do; then hands the events over (and carries
    /// out what taking them asked for: resuming a paused connection).
    pub fn pump(&mut self, shared: &Shared<M>, now: Instant) {
        loop {
            while let Some(action) = self.machine.poll_action() {
                self.execute(action, now);
            }
            // One flush per connection for everything written above (batching), lowest
            // key first. A flush clears the connection's flag (or removes the
            // connection), so this ends; the dirty set spares a scan of every connection
            // (this runs for every `send`).
            if let Some(conn) = self.dirty.pop_first() {
                if self.conns.get(&conn).is_some_and(|c| c.is_dirty()) {
                    self.with_conn(conn, now, |c, _, out| c.flush(out));
                }
                continue;
            }
            // The machine has answered every read error it will answer (its close frames
            // are queued above): the rest end once flushed. One still waiting for a flush
            // comes back here from the pass that flushes it.
            if let Some(conn) = self.unanswered.pop_first() {
                self.with_conn(conn, now, |c, _, out| c.end_if_unanswered(out));
                self.unanswered.remove(&conn);
                continue;
            }
            self.deliver(shared);
            let Some(action) = self.machine.poll_action() else {
                break;
            };
            self.execute(action, now);
        }
    }

    /// Hands the machine's send outcomes to the threads waiting for them, and moves its
    /// events to the outbox, at most a batch ([`EventBatch::is_full`]; all of them, discarded,
    /// once `Events` is gone); tells a sender waiting for room when some may have freed.
    fn deliver(&mut self, shared: &Shared<M>) {
        self.machine.dispatch();
        let mut outbox = None;
        let mut completed = false;
        // A completion follows the input or action that settled it, which counted already.
        while let Some((id, result)) = self.machine.poll_completion() {
            let outbox = outbox.get_or_insert_with(|| lock(&shared.outbox));
            if let Some(slot) = outbox.waiting.get_mut(&id) {
                *slot = Some(result.map_err(|failed| *failed));
                completed = true;
            }
        }
        let mut parked = false;
        let mut polling = false;
        let has_events = self.machine.has_events();
        if has_events || self.more {
            let outbox = outbox.get_or_insert_with(|| lock(&shared.outbox));
            let alive = shared.events_alive.load(Ordering::Acquire);
            let moved = if alive {
                // Taking received messages frees no room for a send; any other event may
                // (a completion taken, a connection's state changed).
                let mut frees = false;
                // Ahead of the application (no thread waits in `recv` or asked for them), a
                // message that does not fit the batch stays in the machine, counted: taken
                // out, it let a paused connection read another as large (a reviewer saw
                // two 64 MiB messages held, 131 MiB resident, where tokio held one).
                let ahead = outbox.receivers == 0 && !outbox.receiver_polling && !self.asked;
                let moved = outbox.events.fill_from(&mut self.machine, ahead, |e| {
                    frees |= !matches!(e, Event::Message { .. });
                });
                self.progress |= frees;
                moved
            } else {
                // Nobody takes them: dropped, which frees room in the machine.
                let dropped = std::iter::from_fn(|| self.machine.next_event()).count() > 0;
                self.progress |= dropped;
                dropped
            };
            if moved {
                parked = alive && outbox.receivers > 0;
                polling = alive && outbox.receiver_polling;
            }
            self.more = self.machine.has_events();
            outbox.more = self.more;
        }
        let progress = std::mem::take(&mut self.progress);
        let mut room = false;
        if (progress || !self.room_conns.is_empty())
            && shared.room_waiters.load(Ordering::SeqCst) > 0
        {
            let outbox = outbox.get_or_insert_with(|| lock(&shared.outbox));
            room = progress
                || (self.room_conns.iter()).any(|c| outbox.room_waiting.contains_key(&Some(*c)));
            if room {
                outbox.room_epoch += 1;
            }
        }
        self.room_conns.clear();
        drop(outbox);
        if parked {
            shared.event_ready.notify_one();
        }
        if polling {
            shared.wake_receiver();
        }
        if completed {
            shared.completion_ready.notify_all();
        }
        if room {
            shared.room_ready.notify_all();
        }
    }

    /// Runs `f` on one connection and feeds what it reports to the machine; removes the
    /// connection once its transport is gone.
    fn with_conn(
        &mut self,
        conn: u64,
        now: Instant,
        f: impl FnOnce(&mut Conn, &Ctx<'_>, &mut Vec<TransportEvent>),
    ) {
        let mut out = std::mem::take(&mut self.scratch);
        #[cfg(test)]
        let inject = self.panic_in.take_if(|at| *at == conn).is_some();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        #[cfg(test)]
        self.visited.push(conn);
        let ctx = Ctx {
            registry: &self.registry,
            receivers: self.receivers.as_ref(),
            tls: &self.tls,
        };
        let span = c.span().clone();
        let _entered = span.enter();
        // A panic in the connection's work (a frame's mask is drawn from the OS's random
        // source, which can fail), on the driver thread or an application's in `try_send`,
        // ends this connection as lost, naming it, as a panic in a tokio connection's task
        // does: unwinding would leave its accepted sends unsettled and its events unsent.
        let worked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            assert!(!inject, "injected");
            f(c, &ctx, &mut out)
        }));
        if let Err(panic) = worked {
            c.abandon_transport(&ctx);
            out.extend(wxsocket_wire::connection::panicked("work", &*panic));
        }
        if let Err(e) = c.sync_interest(&ctx) {
            c.poller_failed(&ctx, &e, &mut out);
        }
        let id = c.id();
        for event in &out {
            match room_freed_by(event) {
                RoomFreed::Nowhere => {}
                RoomFreed::OnItsConnection => self.room_conns.push(id),
                RoomFreed::Anywhere => self.progress = true,
            }
        }
        if c.has_more_to_read() {
            self.read_ready.insert(conn);
        }
        if c.has_more_to_write() {
            self.write_ready.insert(conn);
        }
        if c.is_dirty() {
            self.dirty.insert(conn);
        }
        if let Some(at) = c.next_attempt() {
            self.attempts_due.insert((at, conn));
        }
        if c.is_unanswered() {
            self.unanswered.insert(conn);
        }
        if c.is_gone() {
            self.conns.remove(&conn);
            self.disarmed.remove(&conn);
            self.unanswered.remove(&conn);
        }
        for event in out.drain(..) {
            self.machine.handle(id, event, now);
        }
        self.scratch = out;
    }

    fn execute(&mut self, action: Action, now: Instant) {
        // A connection dialled, closing or ending changes what a refused send would be told;
        // a frame handed over or reading resumed frees no room.
        self.progress |= !matches!(
            action,
            Action::Send { .. } | Action::Ping { .. } | Action::ResumeReading { .. }
        );
        wxsocket_wire::trace::action(&action);
        match action {
            Action::Dial { conn, request } => {
                let connection = Connection::new(conn, request, &self.proxy_env, self.ws_config);
                let (connection, target) = match connection {
                    Ok(dial) => dial,
                    Err(failed) => return self.machine.handle(conn, failed, now),
                };
                let k = key(conn);
                self.conns.insert(k, Conn::new(connection));
                match target.address() {
                    Some(addr) => {
                        self.with_conn(k, now, |c, ctx, out| c.connect(ctx, Ok(vec![addr]), out))
                    }
                    None => self.resolve(k, target, now),
                }
            }
            Action::Send { conn, id, message } => {
                self.with_conn(key(conn), now, |c, _, out| c.send(id, message, out));
            }
            Action::Ping { conn, payload } => {
                self.with_conn(key(conn), now, |c, _, out| c.ping(payload, out));
            }
            Action::Close { conn, frame } => {
                let credit = self.machine.read_credit(conn);
                self.with_conn(key(conn), now, |c, _, out| {
                    c.close(&frame, out);
                    // The close handshake needs the peer's close frame: if the machine
                    // reads this connection again now (it no longer delivers its data),
                    // a pause ends here even without a `ResumeReading`.
                    if !credit.is_paused() {
                        c.resume_reads();
                    }
                });
            }
            Action::Abort { conn } => self.abort(key(conn)),
            Action::ResumeReading { conn } => {
                // The pass itself comes later, made by whoever owns the reads
                // (`read_ready`), so that a peer that floods a connection cannot keep this
                // call, often an application's `recv`, reading.
                self.with_conn(key(conn), now, |c, _, _| {
                    c.resume_reads();
                })
            }
            // A newer core may add actions; carrying out none of them is the safe default.
            _ => {}
        }
    }

    /// Resolves a host name on a helper thread (the OS resolver only blocks), unless a
    /// lookup of the same host and port is in flight: the dial then waits for that one. The
    /// answer comes back through the channel and the waker.
    fn resolve(&mut self, conn: u64, target: DialTarget, now: Instant) {
        self.with_conn(conn, now, |c, _, out| c.resolving(out));
        // Aborted dials wait no more.
        let conns = &self.conns;
        self.lookups.retain(|waiting| conns.contains_key(waiting));
        if !self.lookups.join(&target, conn) {
            return;
        }
        let tx = self.resolved_tx.clone();
        let waker = Arc::clone(&self.waker);
        let asked = target.clone();
        let resolver = self.resolver;
        let spawned = std::thread::Builder::new()
            .name("wxsocket-resolve".into())
            .spawn(move || {
                // Answered whatever happens, so that no later dial of the host waits for
                // a lookup that is gone.
                let addrs = std::panic::catch_unwind(|| resolver(&asked))
                    .unwrap_or_else(|_| Err(io::Error::other("the name lookup panicked")));
                if tx.send((asked, addrs)).is_ok() {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            // Out of threads, not a DNS failure: the message says which.
            let e = io::Error::new(e.kind(), format!("could not start a resolver thread: {e}"));
            self.on_resolved(&target, Err(e), now);
        }
    }

    fn on_resolved(
        &mut self,
        target: &DialTarget,
        addrs: io::Result<Vec<SocketAddr>>,
        now: Instant,
    ) {
        // An aborted dial's answer finds no connection and is dropped.
        for conn in self.lookups.finish(target) {
            let addrs = wxsocket_wire::dial::share(&addrs);
            self.with_conn(conn, now, |c, ctx, out| c.connect(ctx, addrs, out));
        }
    }

    /// The socket of `conn` is ready (or a pass is due): moves the connection on, reading
    /// within the machine's read credit for it. A connection that has just opened carries
    /// out what the open asked for first (the messages queued before it are written, as
    /// tokio's driver writes them when told of the open), then reads at once what came
    /// with the handshake response, within the credit the machine gives it now that it
    /// knows the connection is open: a close frame that came with the response is then
    /// answered after those messages, not before (which failed them).
    ///
    /// A connection read in this hold of the lock already ([`Self::passed`]), or met once
    /// the hold is to end ([`Self::leave_reads`]), is left for the next
    /// ([`Self::read_later`]).
    fn on_ready(&mut self, conn: u64, pass: ReadPass, now: Instant) {
        let leave = self.passed.contains(&conn) || self.leave_reads(now);
        if leave && self.read_later(conn, now) {
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let was_open = c.is_open();
        self.read_within_credit(conn, pass, now);
        if !was_open
            && self
                .conns
                .get(&conn)
                .is_some_and(|c| c.is_open() && c.has_more_to_read())
        {
            while let Some(action) = self.machine.poll_action() {
                self.execute(action, now);
            }
            self.read_within_credit(conn, ReadPass::ToTheEnd, now);
        }
    }

    /// Leaves the read pass of `conn` for the next hold ([`Self::read_ready`]) if it is open
    /// and reading, and says whether it did. Its writes do not wait: a flush that stopped at
    /// a full socket goes on now (its readiness will not come again). A connection whose
    /// reading is paused is not left (its pass would come back hold after hold, reading
    /// nothing), nor a dial or a handshake: the caller goes on with them.
    fn read_later(&mut self, conn: u64, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if !c.is_open() || c.is_read_paused() {
            return false;
        }
        c.read_later();
        self.read_ready.insert(conn);
        if c.link().is_some_and(|link| link.wants_write()) {
            self.with_conn(conn, now, |c, _, out| c.flush(out));
        }
        true
    }

    /// Whether the open connections' read passes still to make in this hold of the lock are
    /// left for the next ([`Self::read_ready`]), after the first: when another thread waits
    /// for the lock, or one of the machine's deadlines fell due while this hold read (after
    /// `now`, when it began), so that the hold ends and the others have the lock, and the
    /// timer runs, on time. Under a flood on many connections at once a hold read each of
    /// them once ([`Self::passed`]), and with 32 connections flooding a close timeout of
    /// 100 ms fired up to 0.9 s late in a release build (1.5–5 s with 16 in a debug build),
    /// its event then waiting for the lock.
    /// A deadline already due when the hold began is judged after the hold's reads, as the
    /// input that came in time must count.
    fn leave_reads(&self, now: Instant) -> bool {
        if self.passed.is_empty() {
            return false;
        }
        match self.machine.poll_timeout() {
            Some(due) if due <= now => false,
            due => {
                self.queued
                    .iter()
                    .any(|t| t.waiting.load(Ordering::Acquire) > 0)
                    || due.is_some_and(|due| due <= Instant::now())
            }
        }
    }

    fn read_within_credit(&mut self, conn: u64, pass: ReadPass, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let credit = self.machine.read_credit(c.id());
        self.passed.insert(conn);
        self.read_from = conn.saturating_add(1);
        #[cfg(test)]
        {
            self.readers.push(std::thread::current().id());
            let (now, most) = &mut self.passes_in_hold;
            *now += 1;
            *most = (*most).max(*now);
        }
        self.with_conn(conn, now, |c, ctx, out| {
            if !credit.is_paused() {
                // The machine reads this connection again (e.g. it no longer delivers
                // its data); its `ResumeReading` may still be queued.
                c.resume_reads();
            }
            c.on_ready(ctx, pass, credit, out);
        });
    }

    fn abort(&mut self, conn: u64) {
        self.with_conn(conn, Instant::now(), |c, ctx, _| c.drop_transport(ctx));
    }
}

/// Where a connection's input may free room for a send refused for lack of it.
enum RoomFreed {
    /// A message, a ping, a sign of life: nowhere. A sender waiting for room woke for each
    /// message of a busy connection (30,000 times in 2 s, a prober) and retried in vain.
    Nowhere,
    /// A send written or acknowledged: in that connection's buffer only. A pool's task
    /// waiting for room woke for every write of another task (46,000 times in 2 s).
    OnItsConnection,
    /// The connection opened, failed or ended: what any waiting send is told may change.
    Anywhere,
}

fn room_freed_by(event: &TransportEvent) -> RoomFreed {
    match event {
        TransportEvent::Message(_)
        | TransportEvent::Ping(_)
        | TransportEvent::Receiving
        | TransportEvent::Sending
        | TransportEvent::Dialing(_) => RoomFreed::Nowhere,
        TransportEvent::SendWritten(_) | TransportEvent::Pong(_) => RoomFreed::OnItsConnection,
        _ => RoomFreed::Anywhere,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxsocket_core::{
        ConnectOptions, ConnectionError, Event, Message, Pool, SendFailure, SessionConfig,
    };

    /// The driver thread wakes for a dial's next connection attempt
    /// ([`Inner::attempts_due`]): with the first address dropping the connect, the second
    /// is connected to a quarter of a second later, while the driver thread sleeps.
    #[test]
    fn the_driver_thread_starts_the_next_connection_attempt_when_due() {
        let host = wxsocket_test_server::DeadThenLive::start().unwrap();
        let config = Config::default();
        let pool = Pool::new(config.session.clone()).expect("pool");
        let shared = Shared::start(pool, &config, "test").expect("driver");
        let request = ConnectOptions::new(host.url()).validate().unwrap();
        let env = wxsocket_wire::proxy::ProxyEnv::empty();
        // A connection the pool does not know: what it reports is stale input there.
        let id = ConnId::from_raw(1_000);
        let (connection, _) =
            Connection::new(id, Arc::new(request), &env, WebSocketConfig::default()).unwrap();
        {
            let mut inner = lock(&shared.inner);
            inner.conns.insert(key(id), Conn::new(connection));
            // As a lookup's answer comes back for the dial that waits for it.
            let target = DialTarget {
                host: "dead-then-live.test".into(),
                port: host.addrs()[0].port(),
            };
            assert!(inner.lookups.join(&target, key(id)));
            inner.on_resolved(&target, Ok(host.addrs()), Instant::now());
            assert!(
                inner.attempts_due.first().is_some(),
                "the next attempt is due later"
            );
            shared.release(inner);
        }
        host.live.set_nonblocking(true).unwrap();
        let limit = Instant::now() + LIMIT;
        let accepted = loop {
            match host.live.accept() {
                Ok((tcp, _)) => break tcp,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < limit, "no connection within {LIMIT:?}");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(accepted.local_addr().unwrap(), host.addrs()[1]);
        shared.shutdown();
    }

    /// How long any wait in these tests may take.
    const LIMIT: Duration = Duration::from_secs(10);

    /// A lookup that panics still answers its dial (which fails saying so) and leaves
    /// nothing in flight for the next dial of the host to wait on.
    #[test]
    fn a_lookup_that_panics_answers_its_dial() {
        fn panics(_: &DialTarget) -> io::Result<Vec<SocketAddr>> {
            panic!("a resolver that panics (expected by this test)")
        }
        let config = Config::default().proxy_env(wxsocket_wire::proxy::ProxyEnv::empty());
        let pool = Pool::new(config.session.clone()).expect("pool");
        let shared = Shared::start(pool, &config, "test").expect("driver");
        lock(&shared.inner).resolver = panics;
        let options = ConnectOptions::new("ws://panics.test:9/");
        shared
            .call(|p, now| p.connect(&options, now))
            .expect("connect");
        let error = loop {
            if let Event::Error { error, .. } = next_event(&shared) {
                break error.to_string();
            }
        };
        assert!(error.contains("the name lookup panicked"), "{error}");
        assert!(lock(&shared.inner).lookups.is_empty());
        shared.shutdown();
    }

    /// Dials of one host while its lookup takes its time share that lookup, over real
    /// sockets: five connections of a pool, one call of the resolver (one thread), and
    /// every connection opens on the shared answer (a thread per dial piled up, a thousand
    /// for twenty clients retrying a host whose lookups took 10 s).
    #[test]
    fn dials_of_one_host_share_its_lookup() {
        use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        static RELEASED: AtomicBool = AtomicBool::new(false);
        static PORT: AtomicU16 = AtomicU16::new(0);
        fn slow(_: &DialTarget) -> io::Result<Vec<SocketAddr>> {
            CALLS.fetch_add(1, Ordering::SeqCst);
            let limit = Instant::now() + LIMIT;
            while !RELEASED.load(Ordering::SeqCst) && Instant::now() < limit {
                std::thread::sleep(Duration::from_millis(1));
            }
            let port = PORT.load(Ordering::SeqCst);
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        }
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let port = server
            .url()
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap();
        PORT.store(port, Ordering::SeqCst);
        let config = Config::default()
            .proxy_env(wxsocket_wire::proxy::ProxyEnv::empty())
            .session(SessionConfig::default().pool_limit(5));
        let pool = Pool::new(config.session.clone()).expect("pool");
        let shared = Shared::start(pool, &config, "test").expect("driver");
        lock(&shared.inner).resolver = slow;
        let options = ConnectOptions::new(format!("ws://slow.test:{port}/"));
        for _ in 0..5 {
            shared
                .call(|p, now| p.connect(&options, now))
                .expect("connect");
        }
        let limit = Instant::now() + LIMIT;
        // Until every dial waits and the lookup's thread is in the resolver (it may start
        // after the dials joined).
        while lock(&shared.inner).lookups.waiting() < 5 || CALLS.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < limit,
                "the dials never waited for the lookup"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(lock(&shared.inner).lookups.len(), 1, "one lookup in flight");
        assert_eq!(CALLS.load(Ordering::SeqCst), 1, "one lookup for every dial");
        RELEASED.store(true, Ordering::SeqCst);
        let mut opened = 0;
        while opened < 5 {
            if let Event::Open { .. } = next_event(&shared) {
                opened += 1;
            }
        }
        assert!(lock(&shared.inner).lookups.is_empty());
        shared.shutdown();
    }

    /// A driver for `pool` with one connection to `url`, open.
    fn open_one(pool: Pool, url: &str) -> (Arc<Shared<Pool>>, ConnId) {
        let shared = Shared::start(pool, &Config::default(), "test").expect("driver");
        let options = ConnectOptions::new(url);
        let conn = shared
            .call(|p, now| p.connect(&options, now))
            .expect("connect");
        while !matches!(next_event(&shared), Event::Open { .. }) {}
        (shared, conn)
    }

    /// The next event, taken as `Events::recv` takes it: from the outbox, the next batch
    /// from the machine, or by watching the sockets on this thread (the reads' hand-off).
    fn next_event(shared: &Shared<Pool>) -> Event {
        let deadline = Instant::now() + LIMIT;
        let mut outbox = lock(&shared.outbox);
        loop {
            if let Some(event) = outbox.events.pop() {
                return event;
            }
            if outbox.more {
                drop(outbox);
                shared.refill(false);
                outbox = lock(&shared.outbox);
                continue;
            }
            assert!(Instant::now() < deadline, "no event within {LIMIT:?}");
            let receiver = shared
                .receiver_poll
                .as_ref()
                .expect("the receivers' poller");
            let mut receiver = lock(receiver);
            outbox.receiver_polling = true;
            outbox = shared.receive_io(&mut receiver, outbox, Some(deadline));
        }
    }

    /// A thread that holds the lock reads a connection once (a pass of `READ_PASS` bytes)
    /// and leaves the next pass to the next hold ([`Inner::passed`]), so that the timers
    /// run, and the other threads have the lock, between passes: a driver turn made up to
    /// three, and under this flood a close timeout of 500 ms fired 300 ms late in a debug
    /// build, 2–3 s late with two CPU burners running.
    #[test]
    fn a_hold_of_the_lock_reads_a_connection_once() {
        // The flood never answers the close of the shutdown.
        let session = SessionConfig::default().close_timeout(Duration::from_millis(100));
        let config = Config::default().session(session);
        let pool = Pool::new(config.session.clone()).expect("pool");
        let flood = wxsocket_test_server::EchoServer::fragments_without_end().expect("server");
        let (shared, _) = open_one(pool, &flood.url());
        // Nobody receives: the driver thread takes the reads back and reads the flood, its
        // passes back to back.
        {
            let mut inner = lock(&shared.inner);
            inner.passes_in_hold = (0, 0);
            inner.readers.clear();
        }
        let start = Instant::now();
        while lock(&shared.inner).readers.len() < 30 {
            assert!(start.elapsed() < LIMIT, "the flood is not read");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_, most) = lock(&shared.inner).passes_in_hold;
        assert_eq!(most, 1, "read passes of one connection in one hold");
        shared.shutdown();
    }

    /// Opens `n` connections to an echo server on one driver.
    fn open_many(
        n: usize,
    ) -> (
        Arc<Shared<Pool>>,
        Vec<ConnId>,
        wxsocket_test_server::EchoServer,
    ) {
        let session = SessionConfig::default()
            .close_timeout(Duration::from_millis(100))
            .pool_limit(n);
        let pool = Pool::new(session).expect("pool");
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let (shared, first) = open_one(pool, &server.url());
        let options = ConnectOptions::new(server.url());
        let mut conns = vec![first];
        for _ in 1..n {
            conns.push(
                shared
                    .call(|p, now| p.connect(&options, now))
                    .expect("connect"),
            );
        }
        let mut opened = 1;
        while opened < n {
            if let Event::Open { .. } = next_event(&shared) {
                opened += 1;
            }
        }
        (shared, conns, server)
    }

    /// Makes a read pass due on each of `conns` (as under a flood on all of them).
    fn passes_due(inner: &mut Inner<Pool>, conns: &[ConnId]) {
        for &conn in conns {
            assert!(inner.read_later(key(conn), Instant::now()), "{conn} reads");
        }
    }

    /// Connections with a read pass due at once on one driver.
    const MANY: usize = 8;

    /// A hold of the lock leaves its read passes after the first for the next hold once one
    /// of the machine's deadlines falls due in it ([`Inner::leave_reads`]), so that the
    /// timer runs on time: with sixteen connections flooding, a hold read each of them once
    /// before it ran the timers, and a close timeout of 100 ms fired 1.5–5 s late in a debug
    /// build. A deadline already due when the hold began is judged after all its reads.
    #[test]
    fn a_timer_falling_due_ends_the_read_passes_of_a_hold() {
        let (shared, conns, _server) = open_many(MANY);
        shared
            .call(|p, now| p.close(conns[1], None, "", now))
            .expect("close");
        let mut inner = shared.lock_for_caller();
        let due = inner.machine.poll_timeout().expect("the close timeout");
        // The lock held, nobody runs the timer: it falls due during this hold.
        while Instant::now() < due {
            std::thread::sleep(Duration::from_millis(5));
        }
        passes_due(&mut inner, &conns);
        inner.read_passes(due - Duration::from_millis(1));
        assert_eq!(
            inner.passes_in_hold.0, 1,
            "passes once the deadline fell due"
        );
        // Due when the hold began: every connection is read first.
        inner = Inner::held(inner);
        passes_due(&mut inner, &conns);
        inner.read_passes(Instant::now());
        assert_eq!(inner.passes_in_hold.0, MANY, "passes before a due timer");
        drop(inner);
        shared.shutdown();
    }

    /// A hold of the lock leaves its read passes after the first for the next hold while an
    /// application's call waits for the lock ([`Inner::leave_reads`]), and the next hold
    /// goes on from there ([`Inner::read_from`]): with sixteen connections flooding, a call
    /// waited for a hold that read each of them once.
    #[test]
    fn a_call_waiting_for_the_lock_ends_the_read_passes_of_a_hold() {
        let (shared, conns, _server) = open_many(MANY);
        let mut inner = shared.lock_for_caller();
        let caller = std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || shared.call(|p, _| p.live())
        });
        while shared.callers.waiting.load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Hold after hold, one pass each, going round the connections.
        let mut read = BTreeSet::new();
        for _ in 0..MANY {
            inner = Inner::held(inner);
            passes_due(&mut inner, &conns);
            inner.read_passes(Instant::now());
            assert_eq!(inner.passes_in_hold.0, 1, "passes while a call waits");
            read.extend(inner.passed.iter().copied());
        }
        assert_eq!(read.len(), MANY, "connections read in {MANY} holds");
        drop(inner);
        assert_eq!(caller.join().expect("the call"), MANY);
        shared.shutdown();
    }

    /// A connection whose reading is paused is not left for later ([`Inner::read_later`]):
    /// it reads nothing until the machine resumes it, so a pass left for it would come back
    /// hold after hold, the driver thread spinning; what an event asked of it (a flush) is
    /// done at once.
    #[test]
    fn a_paused_connection_is_not_left_for_later() {
        let (shared, conns, _server) = open_many(2);
        let mut inner = shared.lock_for_caller();
        let k = key(conns[0]);
        let c = inner.conns.get_mut(&k).expect("the connection");
        let mut paused = wxsocket_core::ReadCredit::PAUSED;
        c.read(&mut paused, false, &mut Vec::new());
        assert!(c.is_read_paused());
        assert!(!inner.read_later(k, Instant::now()), "left for later");
        assert!(!inner.read_ready.contains(&k));
        assert!(
            inner.read_later(key(conns[1]), Instant::now()),
            "the other reads"
        );
        drop(inner);
        shared.shutdown();
    }

    /// Leaving a connection's read for later holds up none of its writes
    /// ([`Inner::read_later`]): a flush that stopped at a full socket goes on at once, as the
    /// writable readiness that would have made it will not come again.
    #[test]
    fn a_read_left_for_later_holds_up_no_write() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("ws://{}/", listener.local_addr().expect("address"));
        let (go, read) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let server = std::thread::spawn({
            let (go, read) = (Arc::clone(&go), Arc::clone(&read));
            move || {
                let (tcp, _) = listener.accept().expect("accept");
                let mut tcp = tungstenite::accept(tcp).expect("upgrade").into_inner();
                while !go.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let mut buf = vec![0; 1 << 16];
                while let Ok(n @ 1..) = tcp.read(&mut buf) {
                    read.fetch_add(n, Ordering::AcqRel);
                }
            }
        });
        let session = SessionConfig::default().close_timeout(Duration::from_millis(100));
        let (shared, conn) = open_one(Pool::new(session).expect("pool"), &url);
        let message = Message::binary(vec![0; 32 << 20]);
        (shared.call(|p, now| p.send(conn, message, now))).expect("send");
        // The server reads nothing yet: the flush stops at a full socket.
        let k = key(conn);
        let wants_write =
            |inner: &Inner<Pool>| (inner.conns[&k].link()).is_some_and(|link| link.wants_write());
        let start = Instant::now();
        let mut inner = shared.lock_for_caller();
        while !wants_write(&inner) {
            drop(inner);
            assert!(start.elapsed() < LIMIT, "the socket never full");
            std::thread::sleep(Duration::from_millis(1));
            inner = shared.lock_for_caller();
        }
        // The lock held, nobody writes: the server reads what the sockets held, and stops.
        go.store(true, Ordering::Release);
        let mut drained = 0;
        while drained == 0 || read.load(Ordering::Acquire) > drained {
            assert!(start.elapsed() < LIMIT, "the server reads on");
            drained = read.load(Ordering::Acquire);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(inner.read_later(k, Instant::now()));
        while read.load(Ordering::Acquire) == drained {
            assert!(start.elapsed() < LIMIT, "nothing more written");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(inner);
        shared.shutdown();
        drop(shared);
        server.join().expect("server");
    }

    /// A thread in `recv` that finds, once it has the lock, events delivered for its caller
    /// meanwhile returns them without reading, neither the passes due nor a socket its
    /// poller found readable: with sixteen connections flooding, its read passes held back
    /// the event it was waiting for 1.4 s (a debug build).
    #[test]
    fn a_receiving_thread_with_events_waiting_reads_nothing() {
        let (shared, conns, _server) = open_many(MANY);
        {
            let mut inner = shared.lock_for_caller();
            let now = Instant::now();
            let message = Message::binary(vec![7; 8]);
            (inner.machine.send(conns[0], message, now)).expect("send");
            // Written, and its completion delivered (not taken).
            inner.pump(&shared, now);
            // The lock held, nobody reads the echo: it waits on the socket, and its
            // readiness in the receivers' poller.
            let start = Instant::now();
            let echoed = |inner: &Inner<Pool>| {
                let socket = inner.conns[&key(conns[0])].socket().expect("the socket");
                socket.peek(&mut [0; 1]).is_ok_and(|n| n > 0)
            };
            while !echoed(&inner) {
                assert!(start.elapsed() < LIMIT, "no echo");
                std::thread::sleep(Duration::from_millis(1));
            }
            // The reads with a thread in `recv`: the driver thread leaves the echo to it.
            inner.reads = Reads::Watched { since: now };
            passes_due(&mut inner, &conns);
            inner.readers.clear();
        }
        let receiver = shared.receiver_poll.as_ref().expect("receivers' poller");
        let mut receiver = lock(receiver);
        let mut outbox = lock(&shared.outbox);
        assert!(!outbox.events.is_empty(), "the completion for the caller");
        outbox.receiver_polling = true;
        let outbox = shared.receive_io(&mut receiver, outbox, Some(Instant::now() + LIMIT));
        assert!(!outbox.events.is_empty(), "the events for the caller");
        drop(outbox);
        let me = std::thread::current().id();
        let readers = std::mem::take(&mut lock(&shared.inner).readers);
        let mine = readers.iter().filter(|&&t| t == me).count();
        assert_eq!(mine, 0, "passes by the receiving thread");
        shared.shutdown();
    }

    /// A connection's input that a read pass left for later (a pass stops at its limit, or
    /// when the application's backlog is full, resuming when it takes events) is read by
    /// the thread receiving, not handed over from the driver thread: with 32-byte messages
    /// flooding in, the driver thread made nine passes in ten, and the two threads spent a
    /// quarter of the client's CPU waking each other and waiting for the lock.
    #[test]
    fn a_receiving_thread_reads_what_its_passes_left() {
        const N: usize = 20_000;
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let config = Config::default().session(SessionConfig::default().send_completions(false));
        let pool = Pool::new(config.session.clone()).expect("pool");
        let bound = config.session.max_received_messages;
        let (shared, conn) = open_one(pool, &server.url());
        // Echoed back while they are sent: the backlog fills and reading pauses. The burst
        // stays well within the time the reads stay with a thread that left `recv` and
        // calls into the machine (`HANDBACK_LIMIT`): past it, the driver thread takes them
        // back and reads the echoes, as it should (20,000 sends took 220–340 ms in a debug
        // build, and this failed 1 run in 5).
        let started = Instant::now();
        let mut sent = 0;
        while sent < N && started.elapsed() < HANDBACK_LIMIT / 2 {
            let message = Message::binary(vec![sent as u8; 32]);
            shared
                .call(|p, now| p.send(conn, message, now))
                .expect("send");
            sent += 1;
        }
        assert!(
            sent >= 2 * bound,
            "only {sent} sends within {:?}: too few to fill the backlog",
            HANDBACK_LIMIT / 2
        );
        lock(&shared.inner).readers.clear();
        let mut echoes = 0;
        while echoes < sent {
            if let Event::Message { message, .. } = next_event(&shared) {
                assert_eq!(message, Message::binary(vec![echoes as u8; 32]));
                echoes += 1;
            }
        }
        let readers = std::mem::take(&mut lock(&shared.inner).readers);
        let driver = *shared.driver_thread.get().expect("the driver thread's id");
        let by_driver = readers.iter().filter(|&&t| t == driver).count();
        // The driver thread reads until the first hand-off, and again if this thread is
        // held up for a grace period between two `recv`s.
        assert!(
            by_driver * 4 <= readers.len(),
            "{by_driver} of {} read passes on the driver thread",
            readers.len()
        );
        shared.shutdown();
    }

    /// A read pass left for the thread watching the sockets (here, one that another thread
    /// asked for while it slept) wakes it: the socket, already read to the pass limit, says
    /// nothing more.
    #[test]
    #[cfg(target_os = "linux")] // It waits for the watcher's system call in `/proc`.
    fn a_read_pass_left_while_a_thread_watches_wakes_it() {
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let config = Config::default();
        let pool = Pool::new(config.session.clone()).expect("pool");
        let (shared, conn) = open_one(pool, &server.url());
        let asked = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let watcher = std::thread::spawn({
            let (shared, asked) = (Arc::clone(&shared), Arc::clone(&asked));
            move || {
                let task = std::fs::read_link("/proc/thread-self").expect("this thread's task");
                tx.send(std::path::Path::new("/proc").join(task))
                    .expect("the test waits");
                let receiver = shared
                    .receiver_poll
                    .as_ref()
                    .expect("the receivers' poller");
                let mut receiver = lock(receiver);
                // Watches until the pass is asked for (a wake-up left from opening the
                // connection ends the first watch at once).
                loop {
                    let mut outbox = lock(&shared.outbox);
                    outbox.receiver_polling = true;
                    let start = Instant::now();
                    drop(shared.receive_io(&mut receiver, outbox, Some(start + LIMIT)));
                    if asked.load(Ordering::SeqCst) {
                        return start.elapsed();
                    }
                }
            }
        });
        let task = rx.recv().expect("the watcher's task");
        let deadline = Instant::now() + LIMIT;
        while !in_epoll_wait(&task) {
            assert!(Instant::now() < deadline, "the watcher never slept");
            std::thread::yield_now();
        }
        // A pass left (as if a pass had stopped at its limit; there is nothing to read, so
        // it reads nothing), and a call into the machine.
        asked.store(true, Ordering::SeqCst);
        lock(&shared.inner).read_ready.insert(key(conn));
        shared.call(|_, _| ());
        let waited = watcher.join().expect("the watcher");
        assert!(waited < LIMIT / 2, "the watcher slept {waited:?}");
        shared.shutdown();
    }

    /// Whether the thread of `task` (a `/proc/<pid>/task/<tid>` directory) sleeps in
    /// `epoll_wait` (its poller). On an architecture whose numbers are not listed, says yes.
    #[cfg(target_os = "linux")]
    fn in_epoll_wait(task: &std::path::Path) -> bool {
        // epoll_wait, epoll_pwait, epoll_pwait2.
        let calls: &[&str] = if cfg!(target_arch = "x86_64") {
            &["232", "281", "441"]
        } else if cfg!(target_arch = "aarch64") {
            &["22", "441"]
        } else {
            return true;
        };
        std::fs::read_to_string(task.join("syscall")).is_ok_and(|call| {
            call.split_whitespace()
                .next()
                .is_some_and(|n| calls.contains(&n))
        })
    }

    /// The reads stay with an application that left `recv` as long as it keeps calling
    /// into the machine, one grace period after each call, but never past the limit after
    /// it left; nothing extends reads the driver owns or a thread watches.
    #[test]
    fn calls_into_the_machine_keep_the_reads_up_to_the_limit() {
        let left = Instant::now();
        let mut reads = Reads::left(left);
        assert_eq!(
            reads,
            Reads::Unwatched {
                left,
                due: left + HANDBACK_GRACE
            }
        );
        // A burst of sends, each within the grace of the one before.
        let mut now = left;
        while now + HANDBACK_GRACE <= left + HANDBACK_LIMIT {
            now += HANDBACK_GRACE / 2;
            reads.busy(now);
            let Reads::Unwatched { due, .. } = reads else {
                panic!("still handed off");
            };
            assert_eq!(due, (now + HANDBACK_GRACE).min(left + HANDBACK_LIMIT));
        }
        // Past the limit nothing extends it any more.
        reads.busy(left + HANDBACK_LIMIT * 3);
        assert_eq!(
            reads,
            Reads::Unwatched {
                left,
                due: left + HANDBACK_LIMIT
            }
        );
        // A call earlier than the last one does not move it back.
        reads.busy(left);
        assert_eq!(
            reads,
            Reads::Unwatched {
                left,
                due: left + HANDBACK_LIMIT
            }
        );
        for mut other in [Reads::Driver, Reads::Watched { since: left }] {
            let before = other;
            other.busy(left + HANDBACK_GRACE);
            assert_eq!(other, before);
        }
    }

    /// A call into the machine (here an empty one; a send is one) made while the reads are
    /// with a receiving thread that has left `recv` keeps them there one grace period from
    /// the call ([`Reads::busy`] from [`Shared::call_with`]).
    #[test]
    fn a_call_into_the_machine_keeps_the_reads_with_the_receiving_thread() {
        let config = Config::default();
        let pool = Pool::new(config.session.clone()).expect("pool");
        let shared = Shared::start(pool, &config, "test").expect("driver");
        // The driver thread takes the reads back once they are due; a test thread held up
        // for the whole grace period in between sees that, and tries again.
        let extended = (0..5).any(|_| {
            let left = Instant::now()
                .checked_sub(HANDBACK_GRACE / 2)
                .expect("a clock past its start");
            lock(&shared.inner).reads = Reads::left(left);
            shared.call(|_, _| ());
            match lock(&shared.inner).reads {
                Reads::Unwatched { due, .. } => {
                    assert!(
                        due > left + HANDBACK_GRACE,
                        "the call did not extend the reads"
                    );
                    true
                }
                _ => false,
            }
        });
        assert!(extended, "the reads were never seen extended");
        shared.shutdown();
    }

    /// A thread about to read the sockets lets a waiting application call have the state
    /// first only while the passes come back to back (a pass stopped at its limit): a
    /// `recv_timeout` deferring to every call returned 25 ms late for 10 ms, and the driver
    /// thread flushed large sends at half speed, while other threads kept calling in.
    #[test]
    fn reading_threads_defer_to_calls_only_while_passes_come_back_to_back() {
        let config = Config::default();
        let pool = Pool::new(config.session.clone()).expect("pool");
        let shared = Shared::start(pool, &config, "test").expect("driver");
        // The driver thread's rounds set `passes_pending`: wait for it to sleep.
        let deadline = Instant::now() + LIMIT;
        while !lock(&shared.inner).sleeping {
            assert!(Instant::now() < deadline, "the driver thread never slept");
            std::thread::yield_now();
        }
        // An application call waiting for the state.
        shared.callers.waiting.fetch_add(1, Ordering::AcqRel);
        drop(shared.lock_for_receiver());
        drop(shared.lock_for_driver());
        assert_eq!(
            shared.deferred.load(Ordering::Relaxed),
            0,
            "deferred when passes rest"
        );
        shared.passes_pending.store(true, Ordering::Release);
        drop(shared.lock_for_receiver());
        drop(shared.lock_for_driver());
        assert_eq!(
            shared.deferred.load(Ordering::Relaxed),
            2,
            "passes back to back"
        );
        shared.passes_pending.store(false, Ordering::Release);
        shared.callers.waiting.fetch_sub(1, Ordering::AcqRel);
        shared.shutdown();
    }

    /// A thread deferring to others waits for those waiting at that moment to have had the
    /// lock once each, not for a moment when nobody waits: three threads calling in a loop
    /// always had one waiting, and the driver thread waited out [`WAITING_FIRST`] before
    /// each pass of a large write.
    #[test]
    fn each_thread_waiting_gets_one_turn() {
        let turns = Turns::default();
        turns.waiting.store(2, Ordering::Release);
        let owed = turns.owed();
        assert!(turns.unserved(&owed));
        turns.served.fetch_add(1, Ordering::AcqRel);
        assert!(turns.unserved(&owed), "one of the two had its turn");
        // Still two waiting (one came back, one new): the two owed have had theirs.
        turns.served.fetch_add(1, Ordering::AcqRel);
        assert!(!turns.unserved(&owed), "both had their turn");
        // Nobody waiting: nothing owed.
        turns.waiting.store(0, Ordering::Release);
        assert!(!turns.unserved(&turns.owed()));
        // Through a lock: counted as waiting while it waits, served once it has it.
        let m = Mutex::new(());
        let owed = (turns.served.load(Ordering::Acquire), 1);
        drop(turns.lock(&m, &Gate::default()));
        assert!(!turns.unserved(&owed));
        assert_eq!(turns.waiting.load(Ordering::Acquire), 0);
    }

    /// CPU time the calling thread has used, in clock ticks (`/proc/thread-self/stat`).
    fn thread_cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("thread stat");
        // The fields after the command name (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// A thread deferring to others sleeps until one of them has its turn, and that turn
    /// wakes it: it yielded in a loop, and under a flood of small messages on two cores
    /// the driver thread spent a fifth of the client's CPU so.
    #[test]
    fn a_deferring_thread_sleeps_until_the_turn_is_taken() {
        let shared = Arc::new((Turns::default(), Gate::default(), Mutex::new(())));
        shared.0.waiting.store(1, Ordering::SeqCst);
        let deferring = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let (turns, gate, _) = &*shared;
                let owed = turns.owed();
                let (start, cpu) = (Instant::now(), thread_cpu_ticks());
                gate.wait_while(|| turns.unserved(&owed), LIMIT);
                (start.elapsed(), thread_cpu_ticks() - cpu)
            })
        };
        while shared.1.deferring.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // Not a synchronisation: the time the deferring thread waits, spinning or not.
        std::thread::sleep(Duration::from_millis(300));
        shared.0.waiting.store(0, Ordering::SeqCst);
        let (turns, gate, m) = &*shared;
        drop(turns.lock(m, gate));
        let (waited, ticks) = deferring.join().unwrap();
        assert!(
            waited < LIMIT / 2,
            "woken by the turn, not the limit: {waited:?}"
        );
        assert!(ticks <= 2, "{ticks} ticks of CPU in {waited:?} of waiting");
    }

    /// A flush that stops at its pass limit goes on without any readiness to wake the
    /// driver (the socket takes everything at once, so no event comes): the driver thread
    /// makes the next pass, and a thread waiting for its send makes it itself
    /// ([`Shared::write_on`]). With passes of 100 bytes, a message of 50 kB takes 500.
    #[test]
    fn a_write_stopped_at_its_pass_limit_goes_on_without_readiness() {
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let mut pool = Pool::new(Config::default().session).expect("pool");
        // As a `TaskPool`'s: a waiting send is told of its completion.
        pool.track_completions(true);
        let (shared, conn) = open_one(pool, &server.url());
        lock(&shared.inner)
            .conns
            .get_mut(&key(conn))
            .and_then(|c| c.link_mut())
            .expect("open")
            .set_write_pass(100);
        let echo = |big: &Message| loop {
            if let Event::Message { message, .. } = next_event(&shared) {
                assert_eq!(&message, big);
                break;
            }
        };
        // Sent, and written on by the driver thread alone.
        let big = Message::binary((0..50_000).map(|i| i as u8).collect::<Vec<_>>());
        shared
            .call(|p, now| p.send(conn, big.clone(), now))
            .expect("send");
        echo(&big);
        // Sent by a thread that waits until it is written.
        let big = Message::text("w".repeat(50_000));
        let send = |p: &mut Pool, m, now| p.send(conn, m, now);
        let sent = shared.send_and_wait(None, big.clone(), send, |_| Some(conn));
        assert!(matches!(sent, Ok(Ok(_))), "{sent:?}");
        echo(&big);
        shared.shutdown();
    }

    /// Waits (bounded) until the driver thread has the reads again.
    /// Takes events until the connection's close: its error, how many sends failed (each
    /// `ConnectionLost`), and the close's code and whether it was clean.
    fn until_close(shared: &Shared<Pool>) -> (ConnectionError, usize, (u16, bool)) {
        let (mut error, mut failed) = (None, 0);
        loop {
            match next_event(shared) {
                Event::Error { error: e, .. } => error = Some(e),
                Event::SendFailed { reason, .. } => {
                    assert_eq!(reason, SendFailure::ConnectionLost);
                    failed += 1;
                }
                Event::Close { code, clean, .. } => {
                    return (error.expect("an error first"), failed, (code, clean));
                }
                _ => {}
            }
        }
    }

    fn transport_message(error: &ConnectionError) -> &str {
        match error {
            ConnectionError::Transport(e) => &e.message,
            other => panic!("{other:?}"),
        }
    }

    /// A panic in a connection's work, here a send carried out on the application's thread
    /// (the frame's mask comes from the OS's random source, which can fail), ends that
    /// connection as lost, naming the panic, and the send fails once; the call returns, and
    /// the driver goes on with a new connection. The panic unwound into the application's
    /// call, with the send accepted and never settled.
    #[test]
    fn a_panic_in_a_connections_work_ends_only_that_connection() {
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let (shared, conn) = open_one(
            Pool::new(SessionConfig::default()).expect("pool"),
            &server.url(),
        );
        let id = {
            let mut inner = lock(&shared.inner);
            inner.panic_in = Some(key(conn));
            let now = Instant::now();
            let id = inner.machine.send(conn, Message::text("lost"), now);
            inner.pump(&shared, now);
            id.expect("accepted")
        };
        let (error, failed, close) = until_close(&shared);
        assert!(
            transport_message(&error).contains("the connection's work panicked: injected"),
            "{error}"
        );
        assert_eq!((failed, close), (1, (1006, false)), "send {id:?}");
        let options = ConnectOptions::new(server.url());
        let other = shared.call(|p, now| p.connect(&options, now)).unwrap();
        while !matches!(next_event(&shared), Event::Open { .. }) {}
        shared
            .call(|p, now| p.send(other, Message::text("after"), now))
            .unwrap();
        loop {
            match next_event(&shared) {
                Event::Message { message, .. } => {
                    break assert_eq!(message, Message::text("after"));
                }
                ended @ (Event::Error { .. } | Event::Close { .. }) => panic!("{ended:?}"),
                _ => {}
            }
        }
        shared.shutdown();
    }

    /// A panic on the driver thread outside any connection's work ends every connection as
    /// lost, naming it, as a failed poller does: the application gets their last events
    /// and sends are refused, where the connections were left without a close event and
    /// `try_send` still accepted messages that nothing would write.
    #[test]
    fn a_panic_on_the_driver_thread_ends_every_connection_saying_so() {
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let (shared, conn) = open_one(
            Pool::new(SessionConfig::default()).expect("pool"),
            &server.url(),
        );
        lock(&shared.inner).panic_next_turn = true;
        shared.wake();
        let (error, _, close) = until_close(&shared);
        assert!(
            transport_message(&error).contains("the driver thread panicked: injected"),
            "{error}"
        );
        assert_eq!(close, (1006, false));
        let refused = shared.call(|p, now| p.send(conn, Message::text("late"), now));
        assert!(refused.is_err(), "{refused:?}");
        // The thread says it finished a moment after handing over the last events: the
        // shutdown returns once it has ended.
        shared.shutdown();
        assert!(lock(&shared.outbox).finished, "the driver has finished");
    }

    /// A receivers' poller that fails (its descriptor closed by other code, say) ends every
    /// connection as lost, saying so, as the driver's own poller does. The receiving thread
    /// ignored the failure and waited again at once: it spun, and messages waited for the
    /// driver thread to take the reads back.
    #[test]
    fn a_failing_receivers_poller_ends_every_connection_saying_so() {
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let (shared, _) = open_one(
            Pool::new(SessionConfig::default()).expect("pool"),
            &server.url(),
        );
        lock(
            shared
                .receiver_poll
                .as_ref()
                .expect("the receivers' poller"),
        )
        .broken = true;
        let (error, _, close) = until_close(&shared);
        assert!(
            transport_message(&error).starts_with("the OS poller failed: Bad file descriptor"),
            "{error}"
        );
        assert_eq!(close, (1006, false));
    }

    fn wait_for_take_back(shared: &Shared<Pool>) {
        let deadline = Instant::now() + LIMIT;
        while lock(&shared.inner).reads != Reads::Driver {
            assert!(Instant::now() < deadline, "reads not taken back");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Traffic on one connection works on that connection only, however many are open:
    /// handing the reads to a receiving thread, the driver stopping to watch the socket
    /// that has input, catching up and taking the reads back visit no other connection
    /// (they used to visit every one, twice or more per hand-off).
    #[cfg(unix)]
    #[test]
    fn reads_hand_off_visits_only_the_connection_with_traffic() {
        const CONNS: usize = 40;
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let config = Config::default().session(SessionConfig::default().pool_limit(CONNS));
        let pool = Pool::new(config.session.clone()).expect("pool");
        let shared = Shared::start(pool, &config, "test").expect("driver");
        let options = ConnectOptions::new(server.url());
        let conns: Vec<ConnId> = (0..CONNS)
            .map(|_| {
                shared
                    .call(|p, now| p.connect(&options, now))
                    .expect("connect")
            })
            .collect();
        let mut opened = 0;
        while opened < CONNS {
            if let Event::Open { .. } = next_event(&shared) {
                opened += 1;
            }
        }
        wait_for_take_back(&shared);
        let busy = conns[CONNS / 2];
        lock(&shared.inner).visited.clear();
        for round in 0..3 {
            let text = format!("echo {round}");
            shared
                .call(|p, now| p.send(busy, Message::text(text.clone()), now))
                .expect("send");
            // This thread waits for the echo on the sockets (the reads are handed to it),
            // then leaves them: the driver takes them back after the grace period.
            loop {
                if let Event::Message { conn, message, .. } = next_event(&shared) {
                    assert_eq!(conn, busy);
                    assert_eq!(message, Message::text(text));
                    break;
                }
            }
            wait_for_take_back(&shared);
        }
        let visited = std::mem::take(&mut lock(&shared.inner).visited);
        assert!(
            visited.contains(&key(busy)),
            "the busy connection was worked on"
        );
        let others: BTreeSet<u64> = visited.into_iter().filter(|&c| c != key(busy)).collect();
        assert!(others.is_empty(), "other connections visited: {others:?}");
        shared.shutdown();
    }

    /// When the driver can go on no longer (its OS poller failed; called here as the
    /// driver thread calls it), the open connection ends in its documented events (an
    /// error, close 1006, the message still in flight failed) and the driver ends, instead
    /// of dropping the transports without telling the core.
    #[test]
    fn a_lost_driver_reports_every_connection_ended() {
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        let pool = Pool::new(Config::default().session).expect("pool");
        let (shared, conn) = open_one(pool, &server.url());
        let sent = {
            let mut inner = lock(&shared.inner);
            let now = Instant::now();
            let sent = inner.machine.send(conn, Message::text("in flight"), now);
            inner.driver_lost(&shared, "the OS poller failed: a test");
            sent.expect("send")
        };
        shared.wake();
        let mut ending = Vec::new();
        loop {
            let event = next_event(&shared);
            let closed = matches!(event, Event::Close { .. });
            ending.push(event);
            if closed {
                break;
            }
        }
        assert!(
            matches!(&ending[..], [
                Event::Error { conn: c1, .. },
                Event::SendFailed { id, .. },
                Event::Close { conn: c2, code: 1006, clean: false, .. },
            ] if *c1 == conn && *id == sent && *c2 == conn),
            "{ending:#?}"
        );
        shared.shutdown();
        assert!(lock(&shared.outbox).finished);
    }
}
