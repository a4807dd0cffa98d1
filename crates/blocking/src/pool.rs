//! Several sockets at once, the `SocketTask` model ([`wxsocket_core::Pool`]).

use crate::client::{ApiHandle, Events, SendPending};
use crate::driver::Shared;
use crate::{Config, SendFailed};
use std::sync::Arc;
use std::time::Duration;
use wxsocket_core::{
    Backlog, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions, Message, Pool,
    ReadyState, SendError, SendId,
};

/// A set of independent connections driven by one thread, as the newer `SocketTask` API
/// (up to `SessionConfig::pool_limit`, default 5). Cheap to clone. Events of every task
/// arrive on the one [`Events`] receiver, tagged with their [`ConnId`].
#[derive(Clone)]
pub struct TaskPool {
    handle: Arc<ApiHandle<Pool>>,
}

impl std::fmt::Debug for TaskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPool")
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

impl TaskPool {
    /// A pool with `config`, its driver thread started, and the receiver of its events.
    pub fn new(config: Config) -> Result<(TaskPool, Events), ConfigError> {
        let mut pool = Pool::new(config.session.clone())?;
        // Threads waiting in `send` learn the outcome from the pool directly.
        pool.track_completions(true);
        let shared = Shared::start(pool, &config, "pool")?;
        let events = Events::new(Arc::clone(&shared));
        Ok((
            TaskPool {
                handle: Arc::new(ApiHandle { shared }),
            },
            events,
        ))
    }

    /// Opens a new connection next to the others; over the limit,
    /// [`ConnectError::TooManyConnections`].
    pub fn connect(&self, options: &ConnectOptions) -> Result<SocketTask, ConnectError> {
        wxsocket_wire::check_options(options)?;
        let id = self.handle.call(|p, now| p.connect(options, now))?;
        Ok(SocketTask {
            id,
            handle: Arc::clone(&self.handle),
        })
    }

    /// Connections not yet closed.
    pub fn live(&self) -> usize {
        self.handle.read(Pool::live)
    }

    /// The received messages (count, payload bytes) and send completions waiting in the
    /// pool for the application, over every task. Reading pauses when a task reaches its
    /// own [`SessionConfig::receive_bounds`](wxsocket_core::SessionConfig::receive_bounds),
    /// and every task pauses when the pool reaches
    /// [`SessionConfig::pool_receive_bounds`](wxsocket_core::SessionConfig::pool_receive_bounds).
    /// Events already moved to [`Events`]' own small batch (at most 64) are not counted.
    pub fn backlog(&self) -> Backlog {
        self.handle.read(Pool::backlog)
    }

    /// Shuts the pool down and blocks until its driver thread has ended: every open
    /// connection is closed with 1000 (bounded by the close timeout), every dial in
    /// progress is aborted whatever the close-before-open policy. The events stay
    /// receivable; afterwards `connect` fails with `ConnectError::ShutDown`. Dropping the
    /// pool and every [`SocketTask`] does the same without waiting.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }
}

/// One connection of a [`TaskPool`] (`SocketTask`). Dropping it does not close the
/// connection; [`close`](Self::close) does (and dropping the last pool handle closes all).
#[derive(Clone)]
pub struct SocketTask {
    id: ConnId,
    handle: Arc<ApiHandle<Pool>>,
}

impl std::fmt::Debug for SocketTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTask")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl SocketTask {
    /// This task's connection id (the `conn` of its events).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Sends on this connection (queued while connecting) without waiting; returns once
    /// accepted. A refusal, also one for lack of room ([`SendError::is_full`]), sends
    /// nothing and hands the message back in the error, as
    /// [`Client::try_send`](crate::Client::try_send).
    pub fn try_send(&self, message: impl Into<Message>) -> Result<SendId, SendError> {
        let id = self.id;
        self.handle
            .send_with(false, message.into(), |p, message, now| {
                p.send(id, message, now)
            })
            .map_err(|e| match e {
                SendFailed::Refused(e) => e,
                _ => unreachable!("no completion is awaited"),
            })
    }

    /// Sends, waiting for room while the connection refuses the message for lack of it,
    /// then for the completion (written, or failed), as
    /// [`Client::send`](crate::Client::send): any other refusal returns at once with the
    /// message handed back in `SendFailed::Refused`.
    pub fn send(&self, message: impl Into<Message>) -> Result<SendId, SendFailed> {
        let id = self.id;
        self.handle
            .send_with(true, message.into(), |p, message, now| {
                p.send(id, message, now)
            })
    }

    /// [`send`](Self::send) whose whole wait lasts at most `timeout`, with the outcomes of
    /// [`Client::send_timeout`](crate::Client::send_timeout): still no room when the time
    /// is up hands the message back (`Ok(Err(SendFailed::Refused(_)))`, nothing sent);
    /// accepted but not yet written leaves the send pending, its completion still
    /// arriving as an event.
    pub fn send_timeout(
        &self,
        message: impl Into<Message>,
        timeout: Duration,
    ) -> Result<Result<SendId, SendFailed>, SendPending> {
        let id = self.id;
        self.handle
            .send_and_wait(Some(timeout), message.into(), |p, message, now| {
                p.send(id, message, now)
            })
    }

    /// Sends a ping on this connection; see [`crate::Client::ping`].
    pub fn ping(&self, payload: impl Into<bytes::Bytes>) -> Result<(), wxsocket_core::PingError> {
        let (id, payload) = (self.id, payload.into());
        self.handle.call(|p, now| p.ping(id, payload, now))
    }

    /// Closes this connection (code 1000 or 3000–4999, reason at most 123 bytes).
    pub fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        let id = self.id;
        self.handle.call(|p, now| p.close(id, code, reason, now))
    }

    /// This connection's state (`Closed` once the pool has forgotten it).
    pub fn state(&self) -> ReadyState {
        self.handle.read(|p| p.state(self.id))
    }

    /// This connection's socket (addresses, `TCP_NODELAY`, TLS), once connected.
    pub fn socket_info(&self) -> Option<crate::SocketInfo> {
        let id = self.id;
        self.handle.socket_info(|_| Some(id))
    }

    /// Bytes accepted on this connection but not yet confirmed written.
    pub fn buffered_amount(&self) -> usize {
        self.handle.read(|p| p.buffered_amount(self.id))
    }
}
