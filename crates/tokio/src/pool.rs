//! Several sockets at once, as the newer `SocketTask` API allows: [`TaskPool`] and its
//! per-connection [`SocketTask`] handles, over the core's [`Pool`].

use crate::client::send_waiting;
use crate::driver::{self, Handle};
use crate::{Config, Events, SendFailed, SocketInfo};
use std::sync::Arc;
use wxsocket_core::{
    Backlog, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions, Message, PingError,
    Pool, ReadyState, SendError, SendId,
};

/// A set of independent connections (default limit 5, `SessionConfig::pool_limit`); each
/// [`connect`](Self::connect) opens one more instead of replacing one.
///
/// Cheap to clone, `Send + Sync`. The events of every connection arrive, tagged with their
/// [`ConnId`], on the one [`Events`] stream. When the pool and every [`SocketTask`] are
/// dropped, every connection is closed cleanly.
#[derive(Clone)]
pub struct TaskPool {
    inner: Arc<Handle<Pool>>,
}

impl std::fmt::Debug for TaskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPool")
            .field("live", &self.inner.shared.lock().machine.live())
            .finish()
    }
}

impl TaskPool {
    /// A pool driven on the current tokio runtime (call it inside one).
    pub fn new(config: Config) -> Result<(TaskPool, Events), ConfigError> {
        let pool = Pool::new(config.session.clone())?;
        let inner = driver::start(pool, &config, true)?;
        let events = Events::of(&inner.shared);
        Ok((TaskPool { inner }, events))
    }

    /// `wx.connectSocket` returning a `SocketTask`. Over the limit:
    /// [`ConnectError::TooManyConnections`].
    pub fn connect(&self, options: &ConnectOptions) -> Result<SocketTask, ConnectError> {
        wxsocket_wire::check_options(options)?;
        let id = self
            .inner
            .shared
            .call(|core, now| core.machine.connect(options, now))?;
        Ok(SocketTask {
            id,
            inner: Arc::clone(&self.inner),
        })
    }

    /// Connections not yet closed (the ones that count toward the limit).
    pub fn live(&self) -> usize {
        self.inner.shared.lock().machine.live()
    }

    /// Received messages and send completions waiting for the application, over every
    /// connection (bounded per connection and in total, see `SessionConfig`).
    pub fn backlog(&self) -> Backlog {
        self.inner.shared.lock().machine.backlog()
    }

    /// Shuts the whole driver down (the pool's: every connection) and waits until
    /// it has ended: every open connection is closed with 1000 and its close handshake
    /// finished (bounded by the close timeout), a dial in progress is aborted whatever the
    /// close-before-open policy (queued messages fail as cancelled, close 1006), a
    /// reconnect delay is cancelled. The events of that ending arrive on [`Events`], which
    /// then ends. Afterwards `connect` fails with `ConnectError::ShutDown`. Dropping
    /// every handle does the same without waiting.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown().await;
    }
}

/// One connection of a [`TaskPool`] (`SocketTask`). Cheap to clone. Dropping it does not
/// close the connection (use [`close`](Self::close)); dropping the pool and every task does.
#[derive(Clone)]
pub struct SocketTask {
    id: ConnId,
    inner: Arc<Handle<Pool>>,
}

impl std::fmt::Debug for SocketTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTask")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish()
    }
}

impl SocketTask {
    /// The connection's id (every event of it carries this id).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// `SocketTask.send` without waiting; see [`crate::Client::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<SendId, SendError> {
        let message = message.into();
        self.inner
            .shared
            .call(|core, now| core.machine.send(self.id, message, now))
    }

    /// Sends and waits until the message is written, waiting first for room when there
    /// is none; see [`crate::Client::send`] (the same cancel safety).
    pub async fn send(&self, message: impl Into<Message>) -> Result<SendId, SendFailed> {
        let id = self.id;
        send_waiting(&self.inner.shared, message.into(), |p, m, now| {
            p.send(id, m, now)
        })
        .await
    }

    /// Sends a ping on this connection; see [`crate::Client::ping`].
    pub fn ping(&self, payload: impl Into<bytes::Bytes>) -> Result<(), PingError> {
        let payload = payload.into();
        self.inner
            .shared
            .call(|core, now| core.machine.ping(self.id, payload, now))
    }

    /// `SocketTask.close(code, reason)`.
    pub fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        self.inner
            .shared
            .call(|core, now| core.machine.close(self.id, code, reason, now))
    }

    /// The connection's state (`Closed` once the pool has forgotten it).
    pub fn state(&self) -> ReadyState {
        self.inner.shared.lock().machine.state(self.id)
    }

    /// Bytes accepted but not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.inner.shared.lock().machine.buffered_amount(self.id)
    }

    /// Addresses and options of the connection's socket, once it is dialled.
    pub fn socket_info(&self) -> Option<SocketInfo> {
        self.inner.shared.lock().socket_info(self.id)
    }
}
