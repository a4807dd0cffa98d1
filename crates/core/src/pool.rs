//! Several sessions at once, as the newer `SocketTask` API allows ("Multiple
//! sockets"): each `connect` opens a new connection next to the others instead of
//! replacing one, up to a limit (default 5).

use crate::backlog::{Backlog, ReadCredit};
use crate::config::SessionConfig;
use crate::error::{CloseError, ConfigError, ConnectError, SendError};
use crate::event::Event;
use crate::ids::{ConnId, IdAllocator, SendId};
use crate::jitter::Jitter;
use crate::message::Message;
use crate::request::ConnectOptions;
use crate::session::{Completion, Session};
use crate::state::ReadyState;
use crate::transport::{Action, TransportEvent};
use std::collections::VecDeque;
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
    /// One session per connection, in connect order; a session leaves once its connection
    /// is closed, its teardown is over and its output is drained.
    tasks: Vec<(ConnId, Session)>,
    /// Set by [`Pool::shutdown`]: no new connection.
    shut_down: bool,
    /// Received messages and completions waiting, over every task.
    backlog: Backlog,
    /// Reading is paused on every connection: the pool's backlog reached its bound
    /// (`max_pool_received_*`) and has not come down to half of it.
    reading_paused: bool,
    /// The pool's own actions (resuming every connection), before the tasks'.
    actions: VecDeque<Action>,
    /// Sessions keep send outcomes for `poll_completion`.
    track_completions: bool,
}

impl Pool {
    /// An empty pool; `config.pool_limit` is the connection limit.
    pub fn new(config: SessionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            ids: IdAllocator::default(),
            tasks: Vec::new(),
            shut_down: false,
            backlog: Backlog::default(),
            reading_paused: false,
            actions: VecDeque::new(),
            track_completions: false,
        })
    }

    /// Connections not yet closed (the ones that count toward the limit).
    pub fn live(&self) -> usize {
        self.tasks
            .iter()
            .filter(|(_, s)| s.current().is_some())
            .count()
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
        if self.live() >= self.config.pool_limit {
            return Err(ConnectError::TooManyConnections {
                limit: self.config.pool_limit,
            });
        }
        let id = self.ids.conn();
        let mut config = self.config.clone();
        if let Some(policy) = &mut config.reconnect {
            // Each task draws its own jitter, so connections dropped together (a server
            // restart) do not retry in step; the sequence still follows from the policy's seed.
            policy.seed = Jitter::stream_seed(policy.seed, id.get());
        }
        let mut session = Session::new(config).expect("config validated in Pool::new");
        session.track_completions(self.track_completions);
        session.held = self.reading_paused;
        session.connect_as(id, request, now);
        self.tasks.push((id, session));
        Ok(id)
    }

    /// Sends on one connection (same rules as [`Session::send`]).
    pub fn send(
        &mut self,
        conn: ConnId,
        message: Message,
        now: Instant,
    ) -> Result<SendId, SendError> {
        let Some(index) = self.index(conn) else {
            return Err(SendError::NotConnected(message));
        };
        self.with_ids(index, |s| s.send(message, now))
    }

    /// Closes one connection (same rules as [`Session::close`]).
    pub fn close(
        &mut self,
        conn: ConnId,
        code: Option<u16>,
        reason: &str,
        now: Instant,
    ) -> Result<(), CloseError> {
        let Some(index) = self.index(conn) else {
            return Err(CloseError::NotConnected);
        };
        self.with_ids(index, |s| s.close(code, reason, now))
    }

    /// Shuts every connection down as [`Session::shutdown`] does; from then on `connect`
    /// fails with `ConnectError::ShutDown`.
    pub fn shutdown(&mut self, now: Instant) {
        self.shut_down = true;
        for index in 0..self.tasks.len() {
            self.with_ids(index, |s| s.shutdown(now));
        }
    }

    /// After [`shutdown`](Self::shutdown): every connection's transport is finished and
    /// every action was polled.
    pub fn is_drained(&self) -> bool {
        self.shut_down && self.actions.is_empty() && self.tasks.iter().all(|(_, s)| s.is_drained())
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
        if own == ReadCredit::UNLIMITED {
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
        for (_, s) in &mut self.tasks {
            s.track_completions(on);
        }
    }

    /// The next send outcome of any connection (see [`Session::poll_completion`]).
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.tasks.iter_mut().find_map(|(_, s)| s.poll_completion())
    }

    /// Whether events wait for the application.
    pub fn has_events(&self) -> bool {
        self.tasks.iter().any(|(_, s)| s.has_events())
    }

    /// Transport input for one connection; input for an unknown connection is ignored.
    pub fn handle(&mut self, conn: ConnId, event: TransportEvent, now: Instant) {
        if let Some(index) = self.index(conn) {
            self.with_ids(index, |s| s.handle(conn, event, now));
        }
    }

    /// Runs every connection's due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.tasks.len() {
            self.with_ids(index, |s| s.handle_timeout(now));
        }
        self.retire();
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tasks
            .iter()
            .filter_map(|(_, s)| s.poll_timeout())
            .min()
    }

    /// The next action: the pool's own, then each connection's (in connect order).
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let action = self.tasks.iter_mut().find_map(|(_, s)| s.poll_action());
        self.retire();
        action
    }

    /// The next event of any connection; each connection's events stay in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        let index = self.tasks.iter().position(|(_, s)| s.has_events())?;
        let event = self.with_ids(index, Session::poll_event);
        if self.reading_paused
            && self.backlog.is_low(
                self.config.max_pool_received_messages,
                self.config.max_pool_received_bytes,
            )
        {
            self.reading_paused = false;
            for (_, s) in &mut self.tasks {
                s.held = false;
                if let Some(conn) = s.current() {
                    self.actions.push_back(Action::ResumeReading { conn });
                }
            }
        }
        self.retire();
        event
    }

    fn task(&self, conn: ConnId) -> Option<&Session> {
        self.index(conn).map(|i| &self.tasks[i].1)
    }

    /// The task `conn` belongs to: its first connection (the task's id), its current one
    /// (after a reconnect), or one of its connections still being torn down.
    fn index(&self, conn: ConnId) -> Option<usize> {
        self.tasks.iter().position(|(id, s)| {
            *id == conn || s.current() == Some(conn) || s.teardowns().any(|t| t == conn)
        })
    }

    /// Runs `f` with the pool's id allocator lent to the session, so send ids are unique
    /// across the pool; keeps the pool's backlog in step with the session's, and pauses
    /// reading everywhere when it reaches the pool's bound.
    fn with_ids<T>(&mut self, index: usize, f: impl FnOnce(&mut Session) -> T) -> T {
        let session = &mut self.tasks[index].1;
        let before = session.backlog();
        std::mem::swap(&mut session.ids, &mut self.ids);
        let out = f(session);
        std::mem::swap(&mut session.ids, &mut self.ids);
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
            self.reading_paused = true;
            // Each session keeps its keepalive off and resumes a connection it stops
            // reading (its close), as under its own pause.
            for (_, s) in &mut self.tasks {
                s.held = true;
            }
        }
        out
    }

    /// Drops sessions with nothing left to do.
    fn retire(&mut self) {
        self.tasks.retain(|(_, s)| {
            s.current().is_some() || s.has_output() || s.teardowns().next().is_some()
        });
    }
}
