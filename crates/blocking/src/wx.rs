//! The seven socket calls of WeChat's `wx.connectSocket` API over std threads:
//! [`WxSocket`] with `connect_socket`, `send_socket_message`, `close_socket` and the four
//! `on_socket_*` listeners, built on [`wxsocket_core::wx::WxSocket`] in its deferred mode.
//!
//! Every callback (listeners and `success` / `fail` / `complete`) runs on the driver thread,
//! in order, outside any lock: a callback may call back into the socket (WeChat's
//! pattern of sending inside `onSocketOpen`). Like JavaScript callbacks, they run after the
//! call that caused them has returned.
//!
//! A callback that keeps a clone of the socket keeps the socket alive (a reference
//! cycle); capture a [`WeakWxSocket`] from [`WxSocket::downgrade`] instead when the socket
//! should close once the application drops it.

use crate::Config;
use crate::client::ApiHandle;
use crate::driver::Shared;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;
use wxsocket_core::wx as core_wx;
use wxsocket_core::{ConfigError, ConnId, ReadyState, SendId};

pub use wxsocket_core::wx::{
    CallResult, CloseResult, CloseSocket, ConnectSocket, ErrorResult, MessageResult, OpenResult,
    SendSocketMessage,
};

type Core = core_wx::WxSocket;

/// WeChat's socket API over std threads. Cheap to clone, `Send + Sync`; every clone is the
/// same socket. Dropping every clone closes the connection cleanly.
///
/// ```
/// use std::time::Duration;
/// use wxsocket_blocking::wx::{ConnectSocket, SendSocketMessage, WxSocket};
/// use wxsocket_blocking::{Config, ConnectOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # // A local echo server stands in for the real one, so this example runs as a test.
/// # let server = wxsocket_test_server::EchoServer::start()?;
/// # let url = server.url();
/// # /*
/// let url = "wss://example.com/ws";
/// # */
/// let wx = WxSocket::new(Config::default())?;
/// let weak = wx.downgrade();
/// wx.on_socket_open(move |_| {
///     // Runs on the driver thread; calling back into the socket is fine.
///     if let Some(wx) = weak.upgrade() {
///         let _ = wx.send_socket_message(SendSocketMessage::new("hello"));
///     }
/// });
/// let (tx, received) = std::sync::mpsc::channel();
/// wx.on_socket_message(move |res| {
///     let _ = tx.send(res.data.clone());
/// });
/// wx.connect_socket(ConnectSocket::new(ConnectOptions::new(url)))
///     .unwrap();
/// let data = received.recv_timeout(Duration::from_secs(10))?;
/// assert_eq!(data.as_bytes(), b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct WxSocket {
    inner: Arc<ApiHandle<Core>>,
}

/// A [`WxSocket`] that does not keep the socket alive; for callbacks that call back into
/// it.
#[derive(Clone)]
pub struct WeakWxSocket {
    inner: Weak<ApiHandle<Core>>,
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
    /// A socket with its own driver thread.
    pub fn new(config: Config) -> Result<WxSocket, ConfigError> {
        let mut core = Core::deferred(config.session.clone())?;
        core.set_connect_check(wxsocket_wire::check_request);
        let shared = Shared::start(core, &config, "wx")?;
        // Callbacks are the only output; no event queue is kept.
        shared.events_alive.store(false, Ordering::Release);
        Ok(WxSocket {
            inner: Arc::new(ApiHandle { shared }),
        })
    }

    /// A handle that does not keep the socket alive.
    pub fn downgrade(&self) -> WeakWxSocket {
        WeakWxSocket {
            inner: Arc::downgrade(&self.inner),
        }
    }

    fn shared(&self) -> &Shared<Core> {
        &self.inner.shared
    }

    /// Runs a core call under the lock; the driver thread is woken when it queued callbacks.
    fn call<R>(&self, f: impl FnOnce(&mut Core, Instant) -> R) -> R {
        self.shared().call(f)
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
        self.shared().read(|core| core.session().state())
    }

    /// Bytes accepted but not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.shared().read(|core| core.session().buffered_amount())
    }

    /// Shuts the socket down for every clone and blocks until its driver thread has ended:
    /// an open connection is closed with 1000 (its `on_socket_close` listeners run), a dial
    /// in progress is aborted whatever the close-before-open policy. Afterwards
    /// `connect_socket` fails. Dropping every clone does the same without waiting. Called
    /// from a callback, which runs on the driver thread, it starts the shutdown and returns
    /// at once (the driver cannot wait for itself).
    pub fn shutdown(&self) {
        self.shared().shutdown();
    }
}
