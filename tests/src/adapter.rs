//! One interface over both adapters, so each conformance scenario is written once.
//!
//! [`Adapter`] is the common subset of `wxsocket_tokio::Client` and
//! `wxsocket_blocking::Client` (plus their event receivers), driven synchronously:
//! [`TokioAdapter`] owns a multi-thread tokio runtime and `block_on`s the async parts;
//! [`BlockingAdapter`] calls the blocking client directly.

use std::time::{Duration, Instant};
use wxsocket_core::{
    Backlog, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions, Event, Message,
    ReadyState, SendError, SendId, SessionConfig,
};
use wxsocket_wire::client::{Config, StartError};
use wxsocket_wire::tls::TlsRoots;

/// How long a scenario waits for an event it expects before it fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a send that waits for its completion did not complete (one type for both adapters).
pub use wxsocket_wire::client::SendFailed;

/// A receiver of [`Event`]s, with the waits every scenario uses.
pub trait EventSource {
    /// The adapter's name, for messages.
    const NAME: &'static str;

    /// The next event, or `None` when none arrives within `timeout` (or the stream ended).
    fn next_event(&mut self, timeout: Duration) -> Option<Event>;

    /// The next event if one is ready, without waiting (`Events::try_next` /
    /// `Events::try_recv`): an application taking a backlog as fast as it can.
    fn try_event(&mut self) -> Option<Event>;

    /// A description of the state, for failure messages.
    fn describe(&self) -> String;

    /// The next event; panics with `what` when none arrives within [`EVENT_TIMEOUT`].
    fn expect_event(&mut self, what: &str) -> Event {
        match self.next_event(EVENT_TIMEOUT) {
            Some(event) => event,
            None => panic!(
                "[{}] no event within {EVENT_TIMEOUT:?} while waiting for {what} ({})",
                Self::NAME,
                self.describe()
            ),
        }
    }

    /// Collects events up to and including the first `Close` event of `conn`; panics when
    /// that takes longer than `timeout`, showing the events seen.
    fn events_until_close(&mut self, conn: ConnId, timeout: Duration) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(event) => {
                    let done = matches!(&event, Event::Close { conn: c, .. } if *c == conn);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                None => panic!(
                    "[{}] no close event for connection {conn} within {timeout:?}; {}; events seen: {seen:#?}",
                    Self::NAME,
                    self.describe()
                ),
            }
        }
    }

    /// Collects events until `done` holds for the list; panics after `timeout`.
    fn events_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(event) => seen.push(event),
                None => panic!(
                    "[{}] timed out after {timeout:?} waiting for {what}; {}; events seen: {seen:#?}",
                    Self::NAME,
                    self.describe()
                ),
            }
        }
        seen
    }
}

/// One adapter's client and its events, driven synchronously.
pub trait Adapter: EventSource + Sized {
    /// A client with this configuration.
    fn new(session: SessionConfig, tls: TlsRoots) -> Result<Self, StartError> {
        Self::with_config(Config::new().session(session).tls(tls))
    }
    /// A client with this whole configuration (e.g. with a proxy environment).
    fn with_config(config: Config) -> Result<Self, StartError>;
    /// `Client::connect`.
    fn connect(&self, options: &ConnectOptions) -> Result<ConnId, ConnectError>;
    /// `Client::reconnect_with`.
    fn reconnect_with(&self, options: &ConnectOptions) -> Result<(), ConnectError>;
    /// `Client::try_send`: returns at once.
    fn try_send(&self, message: Message) -> Result<SendId, SendError>;
    /// The adapter's waiting send: returns when the message was written or failed; panics
    /// when neither happened within [`EVENT_TIMEOUT`].
    fn send(&self, message: Message) -> Result<SendId, SendFailed>;
    /// `Client::close`.
    fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError>;
    /// `Client::state`.
    fn state(&self) -> ReadyState;
    /// `Client::buffered_amount`.
    fn buffered_amount(&self) -> usize;
    /// `Client::backlog`.
    fn backlog(&self) -> Backlog;
    /// `Client::current`.
    fn current(&self) -> Option<ConnId>;
    /// Whether `TCP_NODELAY` is set on the current connection's socket, as the adapter
    /// reads it back; `None` when the adapter offers no way to check (or no socket yet).
    fn socket_nodelay(&self) -> Option<bool>;
    /// The current connection's socket as the adapter reports it (`None`: no socket yet).
    fn socket_info(&self) -> Option<wxsocket_wire::client::SocketInfo>;
    /// Drops the client handle and the events (the connection should close cleanly in the
    /// background); the runtime, if any, keeps running until `self` is dropped.
    fn drop_handles(&mut self);
    /// Drops the client handle but keeps the events, so the ending can be watched to the
    /// end of the stream.
    fn drop_client(&mut self);
    /// `Client::shutdown`: returns once the driver has ended (panics when that takes longer
    /// than [`EVENT_TIMEOUT`]).
    fn shutdown(&self);
}

/// One adapter's `TaskPool` (several connections at once) and its events.
pub trait PoolAdapter: EventSource + Sized {
    /// The per-connection handle.
    type Task: Task;
    /// A pool with this configuration.
    fn new(session: SessionConfig, tls: TlsRoots) -> Result<Self, StartError>;
    /// `TaskPool::connect`.
    fn connect(&self, options: &ConnectOptions) -> Result<Self::Task, ConnectError>;
    /// `TaskPool::live`.
    fn live(&self) -> usize;
    /// `TaskPool::task_of`.
    fn task_of(&self, conn: ConnId) -> Option<ConnId>;
    /// `TaskPool::backlog`.
    fn backlog(&self) -> wxsocket_core::Backlog;
    /// `TaskPool::shutdown`: returns once every connection is closed and the driver has
    /// ended (panics when that takes longer than the event timeout).
    fn shutdown(&self);
}

/// One adapter's `SocketTask`.
pub trait Task {
    /// `SocketTask::id`.
    fn id(&self) -> ConnId;
    /// `SocketTask::current`.
    fn current(&self) -> Option<ConnId>;
    /// `SocketTask::try_send`.
    fn try_send(&self, message: Message) -> Result<SendId, SendError>;
    /// `SocketTask::close`.
    fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError>;
    /// `SocketTask::state`.
    fn state(&self) -> ReadyState;
    /// `SocketTask::reconnect_with`.
    fn reconnect_with(&self, options: &ConnectOptions) -> Result<(), ConnectError>;
}

/// `wxsocket_tokio::Client` on a private multi-thread runtime.
pub struct TokioAdapter {
    client: Option<wxsocket_tokio::Client>,
    events: Option<wxsocket_tokio::Events>,
    runtime: tokio::runtime::Runtime,
}

impl TokioAdapter {
    fn client(&self) -> &wxsocket_tokio::Client {
        self.client.as_ref().expect("the client handle was dropped")
    }

    /// The wrapped client.
    pub fn inner(&self) -> &wxsocket_tokio::Client {
        self.client()
    }
}

impl EventSource for TokioAdapter {
    const NAME: &'static str = "tokio";

    fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let events = self.events.as_mut().expect("the events were dropped");
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, events.next())
                .await
                .ok()
                .flatten()
        })
    }

    fn try_event(&mut self) -> Option<Event> {
        self.events
            .as_mut()
            .expect("the events were dropped")
            .try_next()
    }

    fn describe(&self) -> String {
        match &self.client {
            Some(c) => format!("state {:?}", c.state()),
            None => "handles dropped".into(),
        }
    }
}

impl Adapter for TokioAdapter {
    fn with_config(config: Config) -> Result<Self, StartError> {
        let runtime = tokio_runtime();
        let (client, events) = {
            let _guard = runtime.enter();
            wxsocket_tokio::Client::new(config)?
        };
        Ok(Self {
            client: Some(client),
            events: Some(events),
            runtime,
        })
    }

    fn connect(&self, options: &ConnectOptions) -> Result<ConnId, ConnectError> {
        self.client().connect(options)
    }

    fn reconnect_with(&self, options: &ConnectOptions) -> Result<(), ConnectError> {
        self.client().reconnect_with(options)
    }

    fn try_send(&self, message: Message) -> Result<SendId, SendError> {
        self.client().try_send(message)
    }

    fn send(&self, message: Message) -> Result<SendId, SendFailed> {
        let client = self.client().clone();
        self.runtime.block_on(async move {
            tokio::time::timeout(EVENT_TIMEOUT, client.send(message))
                .await
                .expect("the awaitable send did not resolve within the event timeout")
        })
    }

    fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        self.client().close(code, reason)
    }

    fn state(&self) -> ReadyState {
        self.client().state()
    }

    fn buffered_amount(&self) -> usize {
        self.client().buffered_amount()
    }

    fn backlog(&self) -> Backlog {
        self.client().backlog()
    }

    fn current(&self) -> Option<ConnId> {
        self.client().current()
    }

    fn socket_nodelay(&self) -> Option<bool> {
        self.client().socket_info().map(|info| info.nodelay)
    }

    fn socket_info(&self) -> Option<wxsocket_wire::client::SocketInfo> {
        self.client().socket_info()
    }

    fn drop_handles(&mut self) {
        self.client = None;
        self.events = None;
    }

    fn drop_client(&mut self) {
        self.client = None;
    }

    fn shutdown(&self) {
        let client = self.client().clone();
        self.runtime.block_on(async move {
            tokio::time::timeout(EVENT_TIMEOUT, client.shutdown())
                .await
                .expect("shutdown did not finish within the event timeout")
        })
    }
}

impl Drop for TokioAdapter {
    fn drop(&mut self) {
        // Handles first, so the driver sees them go; then the runtime.
        self.client = None;
        self.events = None;
    }
}

/// `wxsocket_blocking::Client`.
pub struct BlockingAdapter {
    client: Option<wxsocket_blocking::Client>,
    events: Option<wxsocket_blocking::Events>,
}

impl BlockingAdapter {
    fn client(&self) -> &wxsocket_blocking::Client {
        self.client.as_ref().expect("the client handle was dropped")
    }

    /// The wrapped client.
    pub fn inner(&self) -> &wxsocket_blocking::Client {
        self.client()
    }
}

impl EventSource for BlockingAdapter {
    const NAME: &'static str = "blocking";

    fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        self.events
            .as_ref()
            .expect("the events were dropped")
            .recv_timeout(timeout)
            .ok()
    }

    fn try_event(&mut self) -> Option<Event> {
        self.events
            .as_ref()
            .expect("the events were dropped")
            .try_recv()
            .ok()
    }

    fn describe(&self) -> String {
        match &self.client {
            Some(c) => format!("state {:?}", c.state()),
            None => "handles dropped".into(),
        }
    }
}

impl Adapter for BlockingAdapter {
    fn with_config(config: Config) -> Result<Self, StartError> {
        let (client, events) = wxsocket_blocking::Client::new(config)?;
        Ok(Self {
            client: Some(client),
            events: Some(events),
        })
    }

    fn connect(&self, options: &ConnectOptions) -> Result<ConnId, ConnectError> {
        self.client().connect(options)
    }

    fn reconnect_with(&self, options: &ConnectOptions) -> Result<(), ConnectError> {
        self.client().reconnect_with(options)
    }

    fn try_send(&self, message: Message) -> Result<SendId, SendError> {
        self.client().try_send(message)
    }

    fn send(&self, message: Message) -> Result<SendId, SendFailed> {
        // Bounded like the tokio side's timeout around its awaited send.
        self.client()
            .send_timeout(message, EVENT_TIMEOUT)
            .unwrap_or_else(|pending| {
                panic!("the waiting send did not complete within the event timeout: {pending}")
            })
    }

    fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        self.client().close(code, reason)
    }

    fn state(&self) -> ReadyState {
        self.client().state()
    }

    fn buffered_amount(&self) -> usize {
        self.client().buffered_amount()
    }

    fn backlog(&self) -> Backlog {
        self.client().backlog()
    }

    fn current(&self) -> Option<ConnId> {
        self.client().current()
    }

    fn socket_nodelay(&self) -> Option<bool> {
        self.client().socket_info().map(|info| info.nodelay)
    }

    fn socket_info(&self) -> Option<wxsocket_wire::client::SocketInfo> {
        self.client().socket_info()
    }

    fn drop_handles(&mut self) {
        self.client = None;
        self.events = None;
    }

    fn drop_client(&mut self) {
        self.client = None;
    }

    fn shutdown(&self) {
        let client = self.client().clone();
        blocking_shutdown(move || client.shutdown());
    }
}

/// Runs a blocking adapter's `shutdown`, bounded like the tokio side: on a thread of its
/// own, waited for with the event timeout.
fn blocking_shutdown(shutdown: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        shutdown();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(EVENT_TIMEOUT)
        .expect("shutdown did not finish within the event timeout");
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// `wxsocket_tokio::TaskPool` on a private multi-thread runtime.
pub struct TokioPool {
    pool: wxsocket_tokio::TaskPool,
    events: wxsocket_tokio::Events,
    runtime: tokio::runtime::Runtime,
}

impl EventSource for TokioPool {
    const NAME: &'static str = "tokio";

    fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let events = &mut self.events;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, events.next())
                .await
                .ok()
                .flatten()
        })
    }

    fn try_event(&mut self) -> Option<Event> {
        self.events.try_next()
    }

    fn describe(&self) -> String {
        format!("{} live", self.pool.live())
    }
}

impl PoolAdapter for TokioPool {
    type Task = wxsocket_tokio::SocketTask;

    fn new(session: SessionConfig, tls: TlsRoots) -> Result<Self, StartError> {
        let runtime = tokio_runtime();
        let config = wxsocket_tokio::Config::new().session(session).tls(tls);
        let (pool, events) = {
            let _guard = runtime.enter();
            wxsocket_tokio::TaskPool::new(config)?
        };
        Ok(Self {
            pool,
            events,
            runtime,
        })
    }

    fn connect(&self, options: &ConnectOptions) -> Result<Self::Task, ConnectError> {
        self.pool.connect(options)
    }

    fn live(&self) -> usize {
        self.pool.live()
    }
    fn backlog(&self) -> wxsocket_core::Backlog {
        self.pool.backlog()
    }
    fn task_of(&self, conn: ConnId) -> Option<ConnId> {
        self.pool.task_of(conn)
    }
    fn shutdown(&self) {
        let pool = self.pool.clone();
        self.runtime.block_on(async move {
            tokio::time::timeout(EVENT_TIMEOUT, pool.shutdown())
                .await
                .expect("shutdown did not finish within the event timeout")
        })
    }
}

impl Task for wxsocket_tokio::SocketTask {
    fn id(&self) -> ConnId {
        wxsocket_tokio::SocketTask::id(self)
    }
    fn current(&self) -> Option<ConnId> {
        wxsocket_tokio::SocketTask::current(self)
    }
    fn try_send(&self, message: Message) -> Result<SendId, SendError> {
        wxsocket_tokio::SocketTask::try_send(self, message)
    }
    fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        wxsocket_tokio::SocketTask::close(self, code, reason)
    }
    fn state(&self) -> ReadyState {
        wxsocket_tokio::SocketTask::state(self)
    }
    fn reconnect_with(&self, options: &ConnectOptions) -> Result<(), ConnectError> {
        wxsocket_tokio::SocketTask::reconnect_with(self, options)
    }
}

/// `wxsocket_blocking::TaskPool`.
pub struct BlockingPool {
    pool: wxsocket_blocking::TaskPool,
    events: wxsocket_blocking::Events,
}

impl EventSource for BlockingPool {
    const NAME: &'static str = "blocking";

    fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    fn try_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    fn describe(&self) -> String {
        format!("{} live", self.pool.live())
    }
}

impl PoolAdapter for BlockingPool {
    type Task = wxsocket_blocking::SocketTask;

    fn new(session: SessionConfig, tls: TlsRoots) -> Result<Self, StartError> {
        let config = wxsocket_blocking::Config::new().session(session).tls(tls);
        let (pool, events) = wxsocket_blocking::TaskPool::new(config)?;
        Ok(Self { pool, events })
    }

    fn connect(&self, options: &ConnectOptions) -> Result<Self::Task, ConnectError> {
        self.pool.connect(options)
    }

    fn live(&self) -> usize {
        self.pool.live()
    }
    fn backlog(&self) -> wxsocket_core::Backlog {
        self.pool.backlog()
    }
    fn task_of(&self, conn: ConnId) -> Option<ConnId> {
        self.pool.task_of(conn)
    }
    fn shutdown(&self) {
        let pool = self.pool.clone();
        blocking_shutdown(move || pool.shutdown());
    }
}

impl Task for wxsocket_blocking::SocketTask {
    fn id(&self) -> ConnId {
        wxsocket_blocking::SocketTask::id(self)
    }
    fn current(&self) -> Option<ConnId> {
        wxsocket_blocking::SocketTask::current(self)
    }
    fn try_send(&self, message: Message) -> Result<SendId, SendError> {
        wxsocket_blocking::SocketTask::try_send(self, message)
    }
    fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        wxsocket_blocking::SocketTask::close(self, code, reason)
    }
    fn state(&self) -> ReadyState {
        wxsocket_blocking::SocketTask::state(self)
    }
    fn reconnect_with(&self, options: &ConnectOptions) -> Result<(), ConnectError> {
        wxsocket_blocking::SocketTask::reconnect_with(self, options)
    }
}

/// An adapter as a driver of the published test kit ([`wxsocket_testkit::Driver`]), so that
/// both adapters pass the kit's scenarios as any other driver must.
pub struct Kit<A>(pub A);

impl<A: Adapter> wxsocket_testkit::Driver for Kit<A> {
    fn start(config: SessionConfig) -> Result<Self, ConfigError> {
        match A::new(config, TlsRoots::default()) {
            Ok(a) => Ok(Kit(a)),
            Err(StartError::Config(invalid)) => Err(invalid),
            Err(other) => panic!("[{}] could not start: {other}", A::NAME),
        }
    }
    fn connect(&mut self, options: &ConnectOptions) -> Result<ConnId, ConnectError> {
        self.0.connect(options)
    }
    fn send(&mut self, message: Message) -> Result<SendId, SendError> {
        self.0.try_send(message)
    }
    fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        self.0.close(code, reason)
    }
    fn state(&mut self) -> ReadyState {
        self.0.state()
    }
    fn backlog(&mut self) -> Backlog {
        self.0.backlog()
    }
    fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        self.0.next_event(timeout)
    }
}
