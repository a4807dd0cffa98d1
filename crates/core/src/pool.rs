//! Several sessions at once, as the newer `SocketTask` API allows ("Multiple
//! sockets"): each `connect` opens a new connection next to the others instead of
//! replacing one, up to a limit (default 5).

use crate::backlog::{Backlog, ReadCredit};
use crate::config::SessionConfig;
use crate::error::{CloseError, ConfigError, ConnectError, PingError, SendError};
use crate::event::Event;
use crate::ids::{ConnId, IdAllocator, SendId};
use crate::jitter::Jitter;
use crate::message::Message;
use crate::request::ConnectOptions;
use crate::session::{Completion, Session};
use crate::state::ReadyState;
use crate::transport::{Action, TransportEvent};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

/// A set of independent connections, each a [`Session`] that is never replaced. Ids are
/// unique across the pool, so the driver routes by [`ConnId`] alone. A task is named by
/// the id of its first connection; with a reconnect policy its later connections get new
/// ids, and calls accept either. The run loop is the same as a session's.
///
/// ```
/// use std::time::Instant;
/// use wxsocket_core::*;
/// let mut pool = Pool::new(SessionConfig::default().pool_limit(2)).unwrap();
/// let now = Instant::now();
/// let a = pool.connect(&ConnectOptions::new("ws://127.0.0.1:1/a"), now).unwrap();
/// let b = pool.connect(&ConnectOptions::new("ws://127.0.0.1:1/b"), now).unwrap();
/// assert_ne!(a, b);
/// let err = pool.connect(&ConnectOptions::new("ws://127.0.0.1:1/c"), now).unwrap_err();
/// assert_eq!(err, ConnectError::TooManyConnections { limit: 2 });
/// ```
#[derive(Debug)]
pub struct Pool {
    config: SessionConfig,
    ids: IdAllocator,
    /// One slot per task; a task leaves once its connection is closed, its teardown is
    /// over and its output is drained, and its slot is reused. Every other structure below
    /// indexes this one, so no call scans the tasks (`DESIGN.md`, "Ten thousand
    /// connections").
    slots: Vec<Option<Task>>,
    /// Free slots.
    free: Vec<usize>,
    /// Every id a task answers to (its first connection's, its current one's, the ones it
    /// is still tearing down) → its slot.
    routes: HashMap<ConnId, usize>,
    /// Every task, in connect order (a task's id is its first connection's, and ids grow).
    order: BTreeSet<Key>,
    /// Each task's earliest deadline.
    timers: BTreeSet<(Instant, Key)>,
    /// Tasks with actions, events, send outcomes waiting, in connect order (the order the
    /// pool has always served them in).
    ready_actions: BTreeSet<Key>,
    ready_events: BTreeSet<Key>,
    /// The task whose event [`Pool::poll_event`] gave last: the next comes from the next
    /// task with events after it, so that no busy connection starves the others.
    last_event: Option<Key>,
    ready_completions: BTreeSet<Key>,
    /// Tasks that may have nothing left to do, for [`Pool::retire`].
    retiring: Vec<usize>,
    /// Tasks whose connection is not closed (the ones that count toward the limit).
    live: usize,
    /// Tasks that are not drained (see [`Session::is_drained`]).
    undrained: usize,
    /// The latest `now` the pool was given: a task is never taken back before it.
    now: Option<Instant>,
    /// Set by [`Pool::shutdown`]: no new connection.
    shut_down: bool,
    /// Received messages and completions waiting, over every task.
    backlog: Backlog,
    /// Reading is paused on every connection: the pool's backlog reached its bound
    /// (`max_pool_received_*`) and has not come down to half of it. Each session is told
    /// when the pool next works on it.
    reading_paused: bool,
    /// The pool's own actions (resuming every connection), before the tasks'.
    actions: VecDeque<Action>,
    /// Sessions keep send outcomes for `poll_completion`.
    track_completions: bool,
    /// How many times the pool worked on a session, for the test that this does not
    /// grow with the number of tasks.
    #[cfg(test)]
    visits: u64,
}

/// A task in the pool's ordered indexes: its id (connect order), then its slot.
type Key = (ConnId, usize);

/// One task and what the pool's indexes hold about it, as of the last time the pool
/// worked on it ([`Pool::sync`]).
#[derive(Debug)]
struct Task {
    id: ConnId,
    session: Session,
    /// The ids routed to this task besides `id`.
    routes: Vec<ConnId>,
    deadline: Option<Instant>,
    actions: bool,
    events: bool,
    completions: bool,
    live: bool,
    drained: bool,
    /// In `Pool::retiring`.
    retiring: bool,
}

impl Pool {
    /// An empty pool; `config.pool_limit` is the connection limit.
    pub fn new(config: SessionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            ids: IdAllocator::default(),
            slots: Vec::new(),
            free: Vec::new(),
            routes: HashMap::new(),
            order: BTreeSet::new(),
            timers: BTreeSet::new(),
            ready_actions: BTreeSet::new(),
            ready_events: BTreeSet::new(),
            last_event: None,
            ready_completions: BTreeSet::new(),
            retiring: Vec::new(),
            live: 0,
            undrained: 0,
            now: None,
            shut_down: false,
            backlog: Backlog::default(),
            reading_paused: false,
            actions: VecDeque::new(),
            track_completions: false,
            #[cfg(test)]
            visits: 0,
        })
    }

    /// Connections not yet closed (the ones that count toward the limit).
    pub fn live(&self) -> usize {
        self.live
    }

    /// The state of one connection; `Closed` for one the pool no longer knows.
    pub fn state(&self, conn: ConnId) -> ReadyState {
        self.task(conn).map_or(ReadyState::Closed, Session::state)
    }

    /// The connection the task named by `conn` is on now: its first connection, or a later
    /// one after a reconnect. `None` once it is closed, or for an id the pool does not know.
    pub fn current(&self, conn: ConnId) -> Option<ConnId> {
        self.task(conn).and_then(Session::current)
    }

    /// The task connection `conn` belongs to, by its name (the id of its first
    /// connection): for the events of a task's later connections after a reconnect, which
    /// carry their own ids. `None` for an id the pool no longer routes (the task closed and
    /// its connections are gone).
    pub fn task_of(&self, conn: ConnId) -> Option<ConnId> {
        self.index(conn)
            .and_then(|slot| self.slots[slot].as_ref())
            .map(|t| t.id)
    }

    /// `buffered_amount` of one connection.
    pub fn buffered_amount(&self, conn: ConnId) -> usize {
        self.task(conn).map_or(0, Session::buffered_amount)
    }

    /// Opens a new connection next to the others; over the limit, `TooManyConnections`.
    pub fn connect(
        &mut self,
        options: &ConnectOptions,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        let request = Arc::new(options.validate()?);
        if self.shut_down {
            return Err(ConnectError::ShutDown);
        }
        if self.live >= self.config.pool_limit {
            return Err(ConnectError::TooManyConnections {
                limit: self.config.pool_limit,
            });
        }
        let now = self.clock(now);
        let id = self.ids.conn();
        let mut config = self.config.clone();
        if let Some(policy) = &mut config.reconnect {
            // Each task draws its own jitter, so connections dropped together (a server
            // restart) do not retry in step; the sequence still follows from the policy's seed.
            policy.seed = Jitter::stream_seed(policy.seed, id.get());
        }
        let mut session = Session::new(config).expect("config validated in Pool::new");
        session.track_completions(self.track_completions);
        session.cx.pool_paused = self.reading_paused;
        session.connect_as(id, request, now);
        let task = Task {
            id,
            session,
            routes: Vec::new(),
            deadline: None,
            actions: false,
            events: false,
            completions: false,
            live: false,
            drained: false,
            retiring: false,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(task);
                slot
            }
            None => {
                self.slots.push(Some(task));
                self.slots.len() - 1
            }
        };
        self.routes.insert(id, slot);
        self.order.insert((id, slot));
        self.undrained += 1;
        self.sync(slot);
        Ok(id)
    }

    /// Sends on one connection (same rules as [`Session::send`]).
    pub fn send(
        &mut self,
        conn: ConnId,
        message: Message,
        now: Instant,
    ) -> Result<SendId, SendError> {
        let Some(slot) = self.index(conn) else {
            return Err(SendError::NotConnected(message));
        };
        let now = self.clock(now);
        self.with_ids(slot, |s| s.send(message, now))
    }

    /// Pings on one connection (same rules as [`Session::ping`]).
    pub fn ping(
        &mut self,
        conn: ConnId,
        payload: impl Into<bytes::Bytes>,
        now: Instant,
    ) -> Result<(), PingError> {
        let Some(slot) = self.index(conn) else {
            return Err(PingError::NotOpen);
        };
        let now = self.clock(now);
        self.with_ids(slot, |s| s.ping(payload, now))
    }

    /// Closes one connection (same rules as [`Session::close`]).
    pub fn close(
        &mut self,
        conn: ConnId,
        code: Option<u16>,
        reason: &str,
        now: Instant,
    ) -> Result<(), CloseError> {
        let Some(slot) = self.index(conn) else {
            return Err(CloseError::NotConnected);
        };
        let now = self.clock(now);
        self.with_ids(slot, |s| s.close(code, reason, now))
    }

    /// Shuts every connection down as [`Session::shutdown`] does; from then on `connect`
    /// fails with `ConnectError::ShutDown`.
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.clock(now);
        self.shut_down = true;
        for (_, slot) in self.order.clone() {
            self.with_ids(slot, |s| s.shutdown(now));
        }
    }

    /// After [`shutdown`](Self::shutdown): every connection's transport is finished and
    /// every action was polled.
    pub fn is_drained(&self) -> bool {
        self.shut_down && self.actions.is_empty() && self.undrained == 0
    }

    /// Received messages and send completions waiting, over every connection.
    pub fn backlog(&self) -> Backlog {
        self.backlog
    }

    /// How much the driver may read from `conn` now: its task's credit
    /// ([`Session::read_credit`]), within what is left under the pool's own bounds.
    pub fn read_credit(&self, conn: ConnId) -> ReadCredit {
        let Some(task) = self.task(conn) else {
            return ReadCredit::UNLIMITED;
        };
        let own = task.read_credit(conn);
        // A connection whose data is discarded (not the task's reading one) reads freely.
        // Asked of the task, not read off `own`: the reading connection's own credit is
        // unlimited too when its bounds are `usize::MAX`, and the pool's bound still holds.
        if task.reading_conn() != Some(conn) {
            return own;
        }
        if self.reading_paused {
            return ReadCredit::PAUSED;
        }
        let pool = self.backlog.credit(
            self.config.max_pool_received_messages,
            self.config.max_pool_received_bytes,
        );
        ReadCredit::new(own.messages.min(pool.messages), own.bytes.min(pool.bytes))
    }

    /// See [`Session::track_completions`]; applies to every connection, present and future.
    pub fn track_completions(&mut self, on: bool) {
        self.track_completions = on;
        for (_, slot) in self.order.clone() {
            self.session_mut(slot).track_completions(on);
            self.sync(slot);
        }
    }

    /// The next send outcome of any connection (see [`Session::poll_completion`]).
    pub fn poll_completion(&mut self) -> Option<Completion> {
        let &(_, slot) = self.ready_completions.first()?;
        let completion = self.session_mut(slot).poll_completion();
        self.sync(slot);
        completion
    }

    /// Whether events wait for the application.
    pub fn has_events(&self) -> bool {
        !self.ready_events.is_empty()
    }

    /// Transport input for one connection; input for an unknown connection is ignored.
    pub fn handle(&mut self, conn: ConnId, event: TransportEvent, now: Instant) {
        if let Some(slot) = self.index(conn) {
            let now = self.clock(now);
            self.with_ids(slot, |s| s.handle(conn, event, now));
        }
    }

    /// Runs the due timers of every connection, in connect order.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        let mut due: Vec<Key> = self
            .timers
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|&(_, key)| key)
            .collect();
        due.sort_unstable();
        for (_, slot) in due {
            self.with_ids(slot, |s| s.handle_timeout(now));
        }
        self.retire();
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    /// The next action: the pool's own, then each connection's (in connect order).
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let action = self.ready_actions.first().copied().and_then(|(_, slot)| {
            let action = self.session_mut(slot).poll_action();
            self.sync(slot);
            action
        });
        self.retire();
        action
    }

    /// The next event of any connection: one from each connection with events in turn (in
    /// connect order, round robin), so a connection with steady traffic cannot hold back
    /// another's open, messages or close; each connection's events stay in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        let next = self.last_event.and_then(|last| {
            self.ready_events
                .range((Bound::Excluded(last), Bound::Unbounded))
                .next()
                .copied()
        });
        let key = next.or_else(|| self.ready_events.first().copied())?;
        self.last_event = Some(key);
        let (_, slot) = key;
        let event = self.with_ids(slot, Session::poll_event);
        if self.reading_paused
            && self.backlog.is_low(
                self.config.max_pool_received_messages,
                self.config.max_pool_received_bytes,
            )
        {
            self.reading_paused = false;
            // Every connection resumes (each session learns it the next time the pool
            // works on it, see `with_ids`).
            for &(_, slot) in &self.order {
                let task = self.slots[slot].as_ref().expect("ordered tasks exist");
                if let Some(conn) = task.session.current() {
                    self.actions.push_back(Action::ResumeReading { conn });
                }
            }
        }
        self.retire();
        event
    }

    fn task(&self, conn: ConnId) -> Option<&Session> {
        self.index(conn)
            .and_then(|slot| self.slots[slot].as_ref())
            .map(|t| &t.session)
    }

    fn session_mut(&mut self, slot: usize) -> &mut Session {
        &mut self.slots[slot].as_mut().expect("an occupied slot").session
    }

    /// The task `conn` belongs to: its first connection (the task's id), its current one
    /// (after a reconnect), or one of its connections still being torn down.
    fn index(&self, conn: ConnId) -> Option<usize> {
        self.routes.get(&conn).copied()
    }

    /// The time for a call: a `now` earlier than one the pool was given before is taken
    /// as that one (as [`Session`] does for its own calls), so a task the pool did not
    /// visit in `handle_timeout` (nothing was due) still never goes back before it.
    fn clock(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |last| last.max(now));
        self.now = Some(now);
        now
    }

    /// Runs `f` with the pool's id allocator lent to the session, so send ids are unique
    /// across the pool; keeps the pool's backlog in step with the session's, and pauses
    /// reading everywhere when it reaches the pool's bound.
    fn with_ids<T>(&mut self, slot: usize, f: impl FnOnce(&mut Session) -> T) -> T {
        let paused = self.reading_paused;
        let task = self.slots[slot].as_mut().expect("an occupied slot");
        let session = &mut task.session;
        session.cx.pool_paused = paused;
        let before = session.backlog();
        std::mem::swap(&mut session.cx.ids, &mut self.ids);
        let out = f(session);
        std::mem::swap(&mut session.cx.ids, &mut self.ids);
        let after = session.backlog();
        let b = &mut self.backlog;
        b.messages = b.messages + after.messages - before.messages;
        b.bytes = b.bytes + after.bytes - before.bytes;
        b.completions = b.completions + after.completions - before.completions;
        if !self.reading_paused
            && b.is_full(
                self.config.max_pool_received_messages,
                self.config.max_pool_received_bytes,
            )
        {
            // Every session learns it the next time the pool works on it; until then
            // none of them reads its `pool_paused`.
            self.reading_paused = true;
            session.cx.pool_paused = true;
        }
        self.sync(slot);
        out
    }

    /// Brings the indexes up to date with one task after the pool worked on it: its
    /// routes, deadline, ready-queues, counts, and whether it may retire.
    fn sync(&mut self, slot: usize) {
        #[cfg(test)]
        {
            self.visits += 1;
        }
        let task = self.slots[slot].as_mut().expect("an occupied slot");
        let key = (task.id, slot);
        let s = &task.session;
        // Routes: the current connection and the teardowns, besides the task's own id.
        let current = s.current().filter(|c| *c != task.id);
        let wanted = || {
            current
                .into_iter()
                .chain(s.teardowns().filter(|c| *c != task.id))
        };
        if !wanted().eq(task.routes.iter().copied()) {
            for old in task.routes.drain(..) {
                self.routes.remove(&old);
            }
            task.routes.extend(wanted());
            for &new in &task.routes {
                self.routes.insert(new, slot);
            }
        }
        let deadline = s.poll_timeout();
        if deadline != task.deadline {
            if let Some(old) = task.deadline {
                self.timers.remove(&(old, key));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, key));
            }
            task.deadline = deadline;
        }
        fn flag(set: &mut BTreeSet<Key>, cached: &mut bool, now: bool, key: Key) {
            if *cached != now {
                *cached = now;
                if now {
                    set.insert(key);
                } else {
                    set.remove(&key);
                }
            }
        }
        flag(
            &mut self.ready_actions,
            &mut task.actions,
            s.has_actions(),
            key,
        );
        flag(
            &mut self.ready_events,
            &mut task.events,
            s.has_events(),
            key,
        );
        flag(
            &mut self.ready_completions,
            &mut task.completions,
            s.has_completions(),
            key,
        );
        let live = s.current().is_some();
        if live != task.live {
            task.live = live;
            if live {
                self.live += 1;
            } else {
                self.live -= 1;
            }
        }
        let drained = s.is_drained();
        if drained != task.drained {
            task.drained = drained;
            if drained {
                self.undrained -= 1;
            } else {
                self.undrained += 1;
            }
        }
        if !task.retiring && Self::done(s) {
            task.retiring = true;
            self.retiring.push(slot);
        }
    }

    /// A task with nothing left to do: connection closed, teardowns over, output taken.
    fn done(s: &Session) -> bool {
        s.current().is_none() && !s.has_output() && s.teardowns().next().is_none()
    }

    /// Drops the tasks with nothing left to do (only those that were worked on since the
    /// last time can have become so).
    fn retire(&mut self) {
        for slot in std::mem::take(&mut self.retiring) {
            let task = self.slots[slot].as_mut().expect("an occupied slot");
            task.retiring = false;
            if !Self::done(&task.session) {
                continue;
            }
            let task = self.slots[slot].take().expect("an occupied slot");
            let key = (task.id, slot);
            self.routes.remove(&task.id);
            for id in &task.routes {
                self.routes.remove(id);
            }
            self.order.remove(&key);
            if let Some(deadline) = task.deadline {
                self.timers.remove(&(deadline, key));
            }
            // A done task has no output: it is in no ready-queue, and it is not live.
            debug_assert!(!task.actions && !task.events && !task.completions && !task.live);
            if !task.drained {
                self.undrained -= 1;
            }
            self.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How many sessions the pool works on for one round of traffic on one connection
    /// (a message in and its event out, a send and its completion, a keepalive ping, the
    /// timer and output polls of a driver's turn), among `n` open connections.
    fn visits_per_round(n: usize) -> u64 {
        let config = SessionConfig::default()
            .pool_limit(n)
            .keepalive(Duration::from_secs(5), Duration::from_secs(5));
        let mut pool = Pool::new(config).unwrap();
        pool.track_completions(true);
        let t0 = Instant::now();
        let options = ConnectOptions::new("ws://127.0.0.1:1/x");
        let conns: Vec<ConnId> = (0..n)
            .map(|i| {
                let now = t0 + Duration::from_micros(i as u64);
                let c = pool.connect(&options, now).unwrap();
                pool.handle(c, TransportEvent::Opened(Box::default()), now);
                c
            })
            .collect();
        let opened = t0 + Duration::from_micros(n as u64);
        let drain = |pool: &mut Pool| {
            while pool.poll_action().is_some() {}
            while pool.poll_completion().is_some() {}
            while pool.poll_event().is_some() {}
        };
        drain(&mut pool);
        // The last connection's keepalive is the latest of all: every other one is earlier.
        let busy = conns[n - 1];
        let before = pool.visits;
        let now = opened;
        pool.handle(busy, TransportEvent::Message(Message::text("in")), now);
        assert!(pool.poll_timeout().is_some());
        pool.handle_timeout(now);
        let id = pool.send(busy, Message::text("out"), now).unwrap();
        drain(&mut pool);
        pool.handle(busy, TransportEvent::SendWritten(id), now);
        drain(&mut pool);
        assert_eq!(pool.state(busy), ReadyState::Open);
        assert_eq!(pool.live(), n);
        pool.visits - before
    }

    #[test]
    fn the_work_of_one_connection_does_not_grow_with_the_others() {
        // Counted, not timed: the pool visits the same sessions for the same traffic,
        // whether it holds one connection or ten thousand (it used to scan all of them in
        // most calls).
        let one = visits_per_round(1);
        assert!(one > 0);
        for n in [2, 100, 10_000] {
            assert_eq!(visits_per_round(n), one, "with {n} connections");
        }
    }

    /// A task whose connection ended and whose output was taken is dropped: over many
    /// connections opened and closed one after another, the pool keeps one slot and no
    /// route, timer or ready-queue entry of the ended ones.
    #[test]
    fn ended_tasks_are_retired_and_their_slot_reused() {
        let mut pool = Pool::new(SessionConfig::default()).unwrap();
        pool.track_completions(true);
        let t0 = Instant::now();
        let options = ConnectOptions::new("ws://127.0.0.1:1/x");
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            let c = pool.connect(&options, now).unwrap();
            pool.handle(c, TransportEvent::Opened(Box::default()), now);
            let id = pool.send(c, Message::text("m"), now).unwrap();
            pool.handle(c, TransportEvent::SendWritten(id), now);
            pool.close(c, None, "", now).unwrap();
            pool.handle(c, TransportEvent::Closed, now);
            while pool.poll_action().is_some() {}
            while pool.poll_completion().is_some() {}
            while pool.poll_event().is_some() {}
            assert_eq!(pool.live(), 0);
        }
        assert_eq!(pool.slots.len(), 1);
        assert!(pool.slots.iter().all(Option::is_none));
        assert!(pool.routes.is_empty() && pool.order.is_empty() && pool.timers.is_empty());
        assert_eq!(pool.poll_timeout(), None);
        pool.shutdown(t0 + Duration::from_secs(1));
        assert!(pool.is_drained());
    }

    #[test]
    fn due_timers_visit_only_their_own_sessions() {
        let config = SessionConfig::default()
            .pool_limit(1000)
            .keepalive(Duration::from_secs(5), Duration::from_secs(5));
        let mut pool = Pool::new(config).unwrap();
        let t0 = Instant::now();
        let options = ConnectOptions::new("ws://127.0.0.1:1/x");
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            let c = pool.connect(&options, now).unwrap();
            pool.handle(c, TransportEvent::Opened(Box::default()), now);
        }
        while pool.poll_action().is_some() {}
        while pool.poll_event().is_some() {}
        // Keepalive is due 5 s after each open: by 5.0025 s for the first three, the
        // fourth at 5.003 s. Three pings, three sessions visited.
        let due = t0 + Duration::from_micros(5_002_500);
        assert_eq!(pool.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        let before = pool.visits;
        pool.handle_timeout(due);
        assert_eq!(pool.visits - before, 3);
        let pings = std::iter::from_fn(|| pool.poll_action())
            .filter(|a| matches!(a, Action::Ping { .. }))
            .count();
        assert_eq!(pings, 3);
        assert_eq!(pool.poll_timeout(), Some(t0 + Duration::from_millis(5003)));
    }
}
