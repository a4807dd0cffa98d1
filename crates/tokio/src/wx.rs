//! The seven socket calls of WeChat's `wx.connectSocket` API over tokio: [`WxSocket`] with
//! `connect_socket`, `send_socket_message`, `close_socket` and the four `on_socket_*`
//! listeners, built on [`wxsocket_core::wx::WxSocket`] in its deferred mode.
//!
//! Every callback (listeners and `success` / `fail` / `complete`) runs on the driver task,
//! in order, outside any lock: a callback may call back into the socket (WeChat's
//! pattern of sending inside `onSocketOpen`). Like JavaScript callbacks, they never run
//! inside the call that caused them; but the driver task may run them before that call has
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
use crate::driver::{self, Handle};
use wxsocket_core::wx::WxSocket as Core;

wxsocket_wire::wx_socket! {
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
    handle: Handle<Core>,
    driver: "task",
}

impl WxSocket {
    /// A socket driven on the current tokio runtime (call it inside one, built with its
    /// time and IO drivers, as [`Client::new`](crate::Client::new) says: otherwise
    /// [`StartError::Config`](crate::StartError::Config) with the field `runtime`).
    pub fn new(config: Config) -> Result<WxSocket, crate::StartError> {
        let handle = driver::start(wxsocket_wire::wx::core(&config)?, &config, false)?;
        Ok(WxSocket { handle })
    }

    /// Shuts the socket down for every clone and waits until its driver has ended: an open
    /// connection is closed with 1000 (its `on_socket_close` listeners run), a dial in
    /// progress is aborted whatever the close-before-open policy. Afterwards
    /// `connect_socket` fails. Dropping every clone does the same without waiting.
    pub async fn shutdown(&self) {
        self.handle.shared.shutdown().await;
    }
}
