//! # wxsocket-blocking
//!
//! The WeChat mini-program WebSocket session model (`wx.connectSocket`, `onSocketOpen`,
//! `sendSocketMessage`, `onSocketMessage`, `closeSocket`, `onSocketClose`, …) over std
//! threads and [tungstenite], with no async runtime anywhere in the dependency tree. All
//! lifecycle decisions — queueing before open, flushing, timeouts, replacement, the
//! close-before-open policy, keepalive, exactly-once send completion — are made by the
//! sans-IO core ([`wxsocket_core`]); this crate only moves bytes and keeps one timer, so it
//! behaves exactly like `wxsocket-tokio`.
//!
//! ```no_run
//! use std::time::Duration;
//! use wxsocket_blocking::{Client, Config, ConnectOptions, Event, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, events) = Client::new(Config::default())?;
//! // wx.connectSocket: validated at once, dialled by the driver thread.
//! client.connect(&ConnectOptions::new("wss://echo.example.com/ws").protocol("chat"))?;
//! // Sent before open: queued by the core, flushed in order on open.
//! client.send("hello")?;
//!
//! for event in &events {
//!     match event {
//!         Event::Open { handshake, .. } => {
//!             println!("open, protocol {:?}", handshake.protocol);
//!             // Waits until the bytes are on the socket (or the send failed).
//!             client.send_wait(Message::binary(vec![1, 2, 3]))?;
//!         }
//!         Event::Message { message, .. } => {
//!             println!("got {message:?}");
//!             client.close(None, "done")?;
//!         }
//!         Event::Error { error, .. } => eprintln!("error: {error}"),
//!         Event::Close { code, reason, .. } => {
//!             println!("closed: {code} {reason}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # let _ = events.recv_timeout(Duration::from_millis(1));
//! # Ok(())
//! # }
//! ```
//!
//! The same surface exists for several sockets at once ([`TaskPool`] / [`SocketTask`], the
//! `SocketTask` model with a connection limit).
//!
//! ## IO design: no polling, no tick
//!
//! Each [`Client`] (or [`TaskPool`]) owns one **driver thread** and one OS readiness
//! poller ([mio]: epoll on Linux, kqueue on BSD/macOS). Every socket is non-blocking and
//! registered with that poller (edge-triggered, readable and writable). State is shared:
//! the core and the sockets sit behind one mutex, the application's events behind another.
//!
//! - **Sending** never waits for the driver. `send` locks the core, which turns the message
//!   into a `Send` action, and the calling thread carries that action out before `send`
//!   returns: the frame goes through tungstenite straight into the socket, then one flush.
//!   Everything the core queued at that moment is written first and flushed once
//!   (batching), and `SendWritten` is reported as soon as the flush succeeded. Only if the
//!   kernel's socket buffer is full does the rest wait — for the poller's *writable* event,
//!   not for a timer.
//! - **Receiving**: the driver thread sleeps in the poller and wakes the moment a socket is
//!   readable. It reads every complete message, feeds each to the core, and hands the
//!   resulting events to the [`Events`] receiver, whose `recv` is woken through a
//!   condition variable. Nothing is batched behind a timer.
//! - **Timers** (handshake, close, keepalive deadlines) are exact: the driver's poller
//!   sleeps until `poll_timeout()` of the core and no longer. When a call from the
//!   application makes a deadline earlier than the one the driver sleeps until (or starts
//!   a dial whose host name needs resolving), it wakes the driver through the poller's
//!   waker (an eventfd); otherwise the driver is not disturbed at all.
//! - **Dialling** is non-blocking too: TCP connect, TLS (rustls, read and write decoupled
//!   so two busy peers cannot deadlock) and the HTTP upgrade all progress on readiness
//!   events. An `Abort` from the core (handshake timeout, close before open, replacement)
//!   deregisters and drops the socket at once. Host names (not IP literals) are resolved
//!   on a short-lived helper thread, because the OS resolver only blocks; an aborted
//!   dial's answer is dropped.
//!
//! So there is no tick anywhere: the driver thread sleeps in the poller with no timeout
//! unless the core has a deadline, and every byte moves as soon as the kernel allows it.
//! The echo benchmark ([`bench`]) compares this adapter with a plain blocking tungstenite
//! client doing the same work.
//!
//! ## Lifetime
//!
//! Dropping the last [`Client`] clone (or the last [`TaskPool`] / [`SocketTask`]) closes
//! every connection cleanly: close frame 1000, then the transport, bounded by the close
//! timeout; connections still dialling are failed at once. [`Events::recv`] then yields
//! the remaining events and returns `None`, and the driver thread ends, leaving no thread
//! or socket behind. Dropping [`Events`] early only discards later events.
#![forbid(unsafe_code)]

pub mod bench;
mod client;
mod conn;
mod driver;
mod pool;
mod stream;
pub mod wx;

pub use client::{Client, Events, IntoIter, Iter, TryIter};
pub use pool::{SocketTask, TaskPool};
pub use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
pub use wxsocket_core::{
    CloseBeforeOpen, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions,
    ConnectionError, Event, Handshake, Message, ReadyState, SendError, SendFailure, SendId,
    SessionConfig, TransportError, TransportErrorKind,
};
pub use wxsocket_wire::tls::TlsRoots;

/// Configuration of a [`Client`] or [`TaskPool`]: the session's, and which certificate
/// authorities `wss` connections trust.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// Bounds, timeouts, close-before-open policy, keepalive, pool limit.
    pub session: SessionConfig,
    /// Trusted roots for `wss` (webpki roots by default, plus custom CAs).
    pub tls: TlsRoots,
}

impl Config {
    /// The defaults: [`SessionConfig::default`] and webpki roots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the session configuration.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Sets the trusted TLS roots.
    pub fn tls(mut self, tls: TlsRoots) -> Self {
        self.tls = tls;
        self
    }
}

/// A connection's socket as the OS reports it ([`Client::socket_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// The local address.
    pub local_addr: std::net::SocketAddr,
    /// The server's address.
    pub peer_addr: std::net::SocketAddr,
    /// Whether `TCP_NODELAY` is set (as the socket reports it).
    pub nodelay: bool,
    /// Whether the connection uses TLS.
    pub tls: bool,
}

/// Why `send_wait` did not confirm a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailed {
    /// The send was refused at once (not connected, closing, queue or buffer full, too
    /// large); the message is in the error.
    #[error(transparent)]
    Refused(#[from] SendError),
    /// The message was accepted but will never be written (connection lost, replaced, …).
    #[error("send failed: {0}")]
    Failed(SendFailure),
}
