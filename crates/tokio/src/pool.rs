//! Several sockets at once, as the newer `SocketTask` API allows: [`TaskPool`] and its
//! per-connection [`SocketTask`] handles, over the core's [`Pool`].

use crate::client::send_waiting;
use crate::driver::{self, Handle};
use crate::{Config, Events, SendFailed};
use wxsocket_core::{Message, Pool, SendError, SendId};

wxsocket_wire::task_pool! {
    /// A set of independent connections (default limit 5, `SessionConfig::pool_limit`); each
    /// [`connect`](Self::connect) opens one more instead of replacing one.
    ///
    /// Cheap to clone, `Send + Sync`. The events of every connection arrive, tagged with their
    /// [`ConnId`], on the one [`Events`] stream. When the pool and every [`SocketTask`] are
    /// dropped, every connection is closed cleanly.
    handle: Handle<Pool>,
}

impl TaskPool {
    /// A pool driven on the current tokio runtime (call it inside one, built with its time
    /// and IO drivers, as [`Client::new`](crate::Client::new) says: otherwise
    /// [`StartError::Config`](crate::StartError::Config) with the field `runtime`).
    pub fn new(config: Config) -> Result<(TaskPool, Events), crate::StartError> {
        let pool = config.pool()?;
        let handle = driver::start(pool, &config, true)?;
        let events = Events::of(&handle.shared);
        Ok((TaskPool { handle }, events))
    }

    /// Shuts the whole driver down (the pool's: every connection) and waits until
    /// it has ended: every open connection is closed with 1000 and its close handshake
    /// finished (bounded by the close timeout), a dial in progress is aborted whatever the
    /// close-before-open policy (queued messages fail as cancelled, close 1006), a
    /// reconnect delay is cancelled. The events of that ending arrive on [`Events`], which
    /// then ends. Afterwards `connect` fails with `ConnectError::ShutDown`. Dropping
    /// every handle does the same without waiting.
    pub async fn shutdown(&self) {
        self.handle.shared.shutdown().await;
    }
}

impl SocketTask {
    /// `SocketTask.send` without waiting; see [`crate::Client::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<SendId, SendError> {
        let message = message.into();
        self.handle
            .shared
            .call(|core, now| core.machine.send(self.id, message, now))
    }

    /// Sends and waits until the message is written, waiting first for room when there
    /// is none; see [`crate::Client::send`] (the same cancel safety).
    pub async fn send(&self, message: impl Into<Message>) -> Result<SendId, SendFailed> {
        let id = self.id;
        send_waiting(&self.handle.shared, message.into(), |p, m, now| {
            p.send(id, m, now)
        })
        .await
    }
}

#[cfg(test)]
impl TaskPool {
    /// The driver's state, for the crate's tests.
    pub(crate) fn shared(&self) -> &std::sync::Arc<driver::Shared<Pool>> {
        &self.handle.shared
    }
}
