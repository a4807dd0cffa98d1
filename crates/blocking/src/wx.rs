//! The seven socket calls of WeChat's `wx.connectSocket` API over std threads:
//! [`WxSocket`] with `connect_socket`, `send_socket_message`, `close_socket` and the four
//! `on_socket_*` listeners, built on [`wxsocket_core::wx::WxSocket`] in its deferred mode.
//!
//! Every callback (listeners and `success` / `fail` / `complete`) runs on the driver thread,
//! in order, outside any lock: a callback may call back into the socket (WeChat's
//! pattern of sending inside `onSocketOpen`). Like JavaScript callbacks, they never run
//! inside the call that caused them; but the driver thread may run them before that call has
//! returned to its caller, so store what a callback needs (a returned `SendId`, say) before
//! the call. A listener set with `on_socket_*` takes every event from the moment it is set,
//! those already due included: the listener it replaced is not called again. A send's
//! `complete` runs even when its `success` or `fail` panics.
//!
//! A callback that keeps a clone of the socket keeps the socket alive (a reference
//! cycle); capture a [`WeakWxSocket`] from [`WxSocket::downgrade`] instead when the socket
//! should close once the application drops it.
//!
//! A `fail` callback that calls `connect_socket` again at once retries without pause once
//! the socket is shut down (each call fails at once, and runs `fail` again), and the
//! shutdown then never ends: retry from a timer, or stop when the failure says the socket
//! was shut down.

use crate::Config;
use crate::client::Handle;
use crate::driver::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wxsocket_core::wx::WxSocket as Core;

wxsocket_wire::wx_socket! {
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
    handle: Handle<Core>,
    driver: "thread",
}

impl WxSocket {
    /// A socket with its own driver thread. As [`Client::new`](crate::Client::new), it
    /// fails with [`StartError::Os`](crate::StartError::Os) when the OS refuses the driver
    /// its poller or thread.
    pub fn new(config: Config) -> Result<WxSocket, crate::StartError> {
        let shared = Shared::start(wxsocket_wire::wx::core(&config)?, &config, "wx")?;
        // Callbacks are the only output; no event queue is kept.
        shared.events_alive.store(false, Ordering::Release);
        Ok(WxSocket {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// Shuts the socket down for every clone and blocks until its driver thread has ended:
    /// an open connection is closed with 1000 (its `on_socket_close` listeners run), a dial
    /// in progress is aborted whatever the close-before-open policy. Afterwards
    /// `connect_socket` fails. Dropping every clone does the same without waiting. Called
    /// from a callback, which runs on the driver thread, it starts the shutdown and returns
    /// at once (the driver cannot wait for itself).
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }
}
