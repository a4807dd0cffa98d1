//! The seven socket calls of WeChat's `wx.connectSocket` API over tokio: [`WxSocket`] with
//! `connect_socket`, `send_socket_message`, `close_socket` and the four `on_socket_*`
//! listeners, built on [`wxsocket_core::wx::WxSocket`] in its deferred mode.
//!
//! Every callback (listeners and `success` / `fail` / `complete`) runs on the driver task,
//! in order, outside any lock: a callback may call back into the socket (WeChat's
//! pattern of sending inside `onSocketOpen`). Like JavaScript callbacks, they run after the
//! call that caused them has returned.
//!
//! A callback that keeps a clone of the socket keeps the socket alive (a reference
//! cycle); capture a [`WeakWxSocket`] from [`WxSocket::downgrade`] instead when the socket
//! should close once the application drops it.

use crate::Config;
use crate::driver::{self, Handle};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Instant;
use wxsocket_core::wx as core_wx;
use wxsocket_core::{ConfigError, ConnId, ReadyState, SendId};

pub use wxsocket_core::wx::{
    CallResult, CloseResult, CloseSocket, ConnectSocket, ErrorResult, MessageResult, OpenResult,
    SendSocketMessage,
};

type Core = core_wx::WxSocket;

/// WeChat's socket API over tokio. Cheap to clone, `Send + Sync`; every clone is the
/// same socket. Dropping every clone closes the connection cleanly.
///
/// ```
/// use std::time::Duration;
/// use wxsocket_tokio::wx::{ConnectSocket, SendSocketMessage, WxSocket};
/// use wxsocket_tokio::{Config, ConnectOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # // A local echo server stands in for the real one, so this example runs as a test.
/// # let server = wxsocket_test_server::EchoServer::start()?;
/// # let url = server.url();
/// # /*
/// let url = "wss://example.com/ws";
/// # */
/// let wx = WxSocket::new(Config::default())?;
/// let weak = wx.downgrade();
/// wx.on_socket_open(move |_| {
///     // Runs on the driver task; calling back into the socket is fine.
///     if let Some(wx) = weak.upgrade() {
///         let _ = wx.send_socket_message(SendSocketMessage::new("hello"));
///     }
/// });
/// let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
/// wx.on_socket_message(move |res| {
///     let _ = tx.send(res.data.clone());
/// });
/// wx.connect_socket(ConnectSocket::new(ConnectOptions::new(url)))
///     .unwrap();
/// let data = tokio::time::timeout(Duration::from_secs(10), received.recv()).await?;
/// let data = data.expect("the echo");
/// assert_eq!(data.as_bytes(), b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct WxSocket {
    inner: Arc<Handle<Core>>,
}

/// A [`WxSocket`] that does not keep the socket alive; for callbacks that call back into
/// it.
#[derive(Clone)]
pub struct WeakWxSocket {
    inner: Weak<Handle<Core>>,
}

impl fmt::Debug for WeakWxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakWxSocket").finish_non_exhaustive()
    }
}

impl WeakWxSocket {
    /// The socket, if some clone of it still exists.
    pub fn upgrade(&self) -> Option<WxSocket> {
        self.inner.upgrade().map(|inner| WxSocket { inner })
    }
}

impl fmt::Debug for WxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WxSocket")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl WxSocket {
    /// A socket driven on the current tokio runtime (call it inside one).
    pub fn new(config: Config) -> Result<WxSocket, ConfigError> {
        let mut core = Core::deferred(config.session.clone())?;
        core.set_connect_check(wxsocket_wire::check_request);
        let inner = driver::start(core, &config, false)?;
        Ok(WxSocket { inner })
    }

    /// A handle that does not keep the socket alive.
    pub fn downgrade(&self) -> WeakWxSocket {
        WeakWxSocket {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Runs a core call under the lock; the driver task is woken when it queued callbacks.
    fn call<R>(&self, f: impl FnOnce(&mut Core, Instant) -> R) -> R {
        self.inner
            .shared
            .call(|core, now| f(&mut core.machine, now))
    }

    /// `wx.connectSocket`. Replaces a connection that exists (WeChat's single-socket
    /// rule). Options this adapter cannot honour fail like invalid ones.
    pub fn connect_socket(&self, call: ConnectSocket) -> Result<ConnId, CallResult> {
        self.call(|core, now| core.connect_socket(call, now))
    }

    /// `wx.sendSocketMessage`. Queued while connecting; `success` once written; `fail` when
    /// refused or when the message can no longer be written.
    pub fn send_socket_message(&self, call: SendSocketMessage) -> Result<SendId, CallResult> {
        self.call(|core, now| core.send_socket_message(call, now))
    }

    /// `wx.closeSocket`.
    pub fn close_socket(&self, call: CloseSocket) -> Result<(), CallResult> {
        self.call(|core, now| core.close_socket(call, now))
    }

    /// `wx.onSocketOpen`: replaces the previous listener. The result has the response
    /// headers and, as `profile`, how long each phase of the dial took, as this adapter
    /// measured it ([`wxsocket_core::OpenProfile`]).
    pub fn on_socket_open(&self, f: impl FnMut(&OpenResult) + Send + 'static) {
        self.call(|core, _| core.on_socket_open(f));
    }

    /// `wx.onSocketError`: replaces the previous listener.
    pub fn on_socket_error(&self, f: impl FnMut(&ErrorResult) + Send + 'static) {
        self.call(|core, _| core.on_socket_error(f));
    }

    /// `wx.onSocketMessage`: replaces the previous listener.
    pub fn on_socket_message(&self, f: impl FnMut(&MessageResult) + Send + 'static) {
        self.call(|core, _| core.on_socket_message(f));
    }

    /// `wx.onSocketClose`: replaces the previous listener.
    pub fn on_socket_close(&self, f: impl FnMut(&CloseResult) + Send + 'static) {
        self.call(|core, _| core.on_socket_close(f));
    }

    /// The state (`readyState`).
    pub fn state(&self) -> ReadyState {
        self.inner.shared.lock().machine.session().state()
    }

    /// Bytes accepted but not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.inner.shared.lock().machine.session().buffered_amount()
    }

    /// Shuts the socket down for every clone and waits until its driver has ended: an open
    /// connection is closed with 1000 (its `on_socket_close` listeners run), a dial in
    /// progress is aborted whatever the close-before-open policy. Afterwards
    /// `connect_socket` fails. Dropping every clone does the same without waiting.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown().await;
    }
}
