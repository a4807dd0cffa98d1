//! The single-socket handle ([`Client`]) and the event stream ([`Events`]).

use crate::driver::{self, Handle, Machine};
use crate::{Config, SendFailed, SocketInfo};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use wxsocket_core::{
    CloseError, ConfigError, ConnId, ConnectError, ConnectOptions, Event, Message, ReadyState,
    SendError, SendFailure, SendId, Session,
};

/// A handle to one WebSocket session, the one-socket-at-a-time model of `wx.connectSocket`: a new
/// [`connect`](Self::connect) replaces the current connection.
///
/// Cheap to clone, `Send + Sync`. Every call returns at once; what happens on the network
/// arrives as [`Event`]s on the [`Events`] stream returned with it. When every clone and the
/// `Events` are dropped, the connection is closed cleanly (close frame 1000, bounded by the
/// close timeout) and every task and socket is released.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle<Session>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .field("current", &self.current())
            .finish()
    }
}

impl Client {
    /// A client over a new session, driven on the current tokio runtime (call it inside
    /// one). The configuration is checked first.
    pub fn new(config: Config) -> Result<(Client, Events), ConfigError> {
        let session = Session::new(config.session.clone())?;
        let (inner, rx) = driver::start(session, &config, true)?;
        let events = Events::new(rx);
        Ok((Client { inner }, events))
    }

    /// `wx.connectSocket`: validates the options (nothing is dialled on error) and starts a
    /// new connection, replacing the current one (whose close event comes first).
    pub fn connect(&self, options: &ConnectOptions) -> Result<ConnId, ConnectError> {
        wxsocket_wire::check_options(options)?;
        self.inner
            .shared
            .call(|core, now| core.machine.connect(options, now))
    }

    /// `wx.sendSocketMessage` without waiting: the message is queued (while connecting) or
    /// handed to the connection. Its completion arrives later as
    /// [`Event::SendCompleted`] or [`Event::SendFailed`] with the returned id.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<SendId, SendError> {
        let message = message.into();
        self.inner
            .shared
            .call(|core, now| core.machine.send(message, now))
    }

    /// Sends and waits until the message is written to the socket, or for the reason it
    /// never will be. The completion event is still delivered on [`Events`].
    pub async fn send(&self, message: impl Into<Message>) -> Result<SendId, SendFailed> {
        let message = message.into();
        let (id, done) = self.inner.shared.call(|core, now| {
            let id = core.machine.send(message, now)?;
            let (tx, rx) = oneshot::channel();
            core.out.waiters.insert(id, tx);
            Ok::<_, SendError>((id, rx))
        })?;
        wait_send(id, done).await
    }

    /// `wx.closeSocket` / `SocketTask.close(code, reason)`: code 1000 (`None`) or
    /// 3000–4999, reason at most 123 UTF-8 bytes.
    pub fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        self.inner
            .shared
            .call(|core, now| core.machine.close(code, reason, now))
    }

    /// Shuts the whole driver down (every clone's, not only this one's) and waits until
    /// it has ended: an open connection is closed with 1000 and its close handshake
    /// finished (bounded by the close timeout), a dial in progress is aborted whatever the
    /// close-before-open policy (queued messages fail as cancelled, close 1006), a
    /// reconnect delay is cancelled. The events of that ending arrive on [`Events`], which
    /// then ends. Afterwards `connect` fails with [`ConnectError::ShutDown`]. Dropping
    /// every handle does the same without waiting.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown().await;
    }

    /// The state (`readyState`).
    pub fn state(&self) -> ReadyState {
        self.inner.shared.lock().machine.state()
    }

    /// Bytes accepted by `send` but not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.inner.shared.lock().machine.buffered_amount()
    }

    /// The current connection (Connecting, Open or Closing), if any.
    pub fn current(&self) -> Option<ConnId> {
        self.inner.shared.lock().machine.current()
    }

    /// Addresses and options of the current connection's socket, once it is dialled.
    pub fn socket_info(&self) -> Option<SocketInfo> {
        let core = self.inner.shared.lock();
        core.machine
            .current()
            .and_then(|conn| core.socket_info(conn))
    }
}

pub(crate) async fn wait_send(
    id: SendId,
    done: oneshot::Receiver<driver::SendResult>,
) -> Result<SendId, SendFailed> {
    match done.await {
        Ok(Ok(())) => Ok(id),
        Ok(Err(reason)) => Err(SendFailed::Failed(reason)),
        // The driver is gone (runtime shut down): the message was not confirmed written.
        Err(_) => Err(SendFailed::Failed(SendFailure::ConnectionLost)),
    }
}

/// Every [`Event`] of a [`Client`] or [`crate::TaskPool`], in order: a
/// [`Stream`](futures_core::Stream), or [`next`](Self::next).
///
/// Dropping it while handles live only stops the events (they are no longer produced).
/// When the last handle is dropped, the connections are closed; the stream delivers their
/// last events (each `Close`) and then ends with `None`.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("ready", &self.rx.len())
            .finish()
    }
}

impl Events {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event; `None` when the stream has ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
    assert_send_sync::<Events>();
    fn is_machine<M: Machine>() {}
    is_machine::<Session>();
};
