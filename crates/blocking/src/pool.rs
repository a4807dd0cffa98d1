//! Several sockets at once, the `SocketTask` model ([`wxsocket_core::Pool`]).

use crate::client::{Events, Handle, SendPending};
use crate::driver::Shared;
use crate::{Config, SendFailed};
use std::sync::Arc;
use std::time::Duration;
use wxsocket_core::{Message, Pool, SendError, SendId};

wxsocket_wire::task_pool! {
    /// A set of independent connections driven by one thread, as the newer `SocketTask` API
    /// (up to `SessionConfig::pool_limit`, default 5). Cheap to clone. Events of every task
    /// arrive on the one [`Events`] receiver, tagged with their [`ConnId`].
    handle: Handle<Pool>,
}

impl TaskPool {
    /// A pool with `config`, its driver thread started, and the receiver of its events. As
    /// [`Client::new`](crate::Client::new), it fails with
    /// [`StartError::Os`](crate::StartError::Os) when the OS refuses the driver its poller
    /// or thread.
    pub fn new(config: Config) -> Result<(TaskPool, Events), crate::StartError> {
        let mut pool = config.pool()?;
        // Threads waiting in `send` learn the outcome from the pool directly.
        pool.track_completions(true);
        let shared = Shared::start(pool, &config, "pool")?;
        let events = Events::new(Arc::clone(&shared));
        Ok((
            TaskPool {
                handle: Arc::new(Handle { shared }),
            },
            events,
        ))
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

impl SocketTask {
    /// Sends on this connection (queued while connecting) without waiting; returns once
    /// accepted. A refusal, also one for lack of room ([`SendError::is_full`]), sends
    /// nothing and hands the message back in the error, as
    /// [`Client::try_send`](crate::Client::try_send).
    pub fn try_send(&self, message: impl Into<Message>) -> Result<SendId, SendError> {
        let id = self.id;
        self.handle
            .send_with(
                false,
                message.into(),
                |p, message, now| p.send(id, message, now),
                |p| p.current(id),
            )
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
        self.handle.send_with(
            true,
            message.into(),
            |p, message, now| p.send(id, message, now),
            |p| p.current(id),
        )
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
        self.handle.send_and_wait(
            Some(timeout),
            message.into(),
            |p, message, now| p.send(id, message, now),
            |p| p.current(id),
        )
    }
}
