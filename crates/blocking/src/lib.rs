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
//! ## The simple path
//!
//! [`connect`] blocks until the socket is open and returns a [`WebSocket`]: `send` returns
//! once the message is written, `recv` (and `for message in &mut ws`) yields received
//! messages only, and `close` waits for the close handshake. The whole echo client:
//!
//! ```
//! fn main() -> Result<(), wxsocket_blocking::Error> {
//!     # let server = wxsocket_test_server::EchoServer::start().unwrap();
//!     # let mut ws = wxsocket_blocking::connect(server.url())?;
//!     # /*
//!     let mut ws = wxsocket_blocking::connect("ws://127.0.0.1:9001")?;
//!     # */
//!     for text in ["one", "two", "three"] {
//!         ws.send(text)?;
//!         println!("{}", ws.recv().expect("an echo"));
//!     }
//!     ws.close()?;
//!     Ok(())
//! }
//! ```
//!
//! Every call of this path fails with one [`Error`]; [`Error::kind`] says which part failed
//! ([`ErrorKind`]), and [`WebSocket::closed`] how the connection ended ([`Closed`]). With a
//! [`ReconnectPolicy`] ([`connect_with`]), `recv` goes on across reconnections and sends
//! made meanwhile wait for the next connection:
//!
//! ```
//! use std::time::Duration;
//! use wxsocket_blocking::{Config, ReconnectPolicy, SessionConfig};
//!
//! fn main() -> Result<(), wxsocket_blocking::Error> {
//!     # let server = wxsocket_test_server::EchoServer::start().unwrap();
//!     # let url = server.url();
//!     # /*
//!     let url = "ws://127.0.0.1:9001";
//!     # */
//!     let policy =
//!         ReconnectPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(5));
//!     let config = Config::default().session(SessionConfig::default().reconnect(policy));
//!     let mut ws = wxsocket_blocking::connect_with(config, url)?;
//!     ws.send("subscribe")?;
//!     // Ends only when the connection closes for good (or the loop breaks).
//!     for message in &mut ws {
//!         println!("{message}");
//!         if message.as_text() == Some("subscribe") {
//!             break;
//!         }
//!     }
//!     println!("closed: {}", ws.close()?);
//!     Ok(())
//! }
//! ```
//!
//! [`WebSocket::into_parts`] hands over the full event model underneath.
//!
//! ## The event model
//!
//! [`Client`] and [`Events`] give every lifecycle event, as WeChat's callbacks do:
//!
//! ```
//! use std::time::Duration;
//! use wxsocket_blocking::{Client, Config, ConnectOptions, Event, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A local echo server stands in for the real one, so this example runs as a test.
//! # let server = wxsocket_test_server::EchoServer::start()?;
//! # let url = server.url();
//! # /*
//! let url = "wss://echo.example.com/ws";
//! # */
//! let (client, events) = Client::new(Config::default())?;
//! // wx.connectSocket: validated at once, dialled in the background.
//! client.connect(&ConnectOptions::new(url).tcp_no_delay(true))?;
//! // Sent before open: queued by the core, flushed in order on open.
//! client.try_send("hello")?;
//!
//! while let Ok(event) = events.recv_timeout(Duration::from_secs(10)) {
//!     match event {
//!         Event::Open { handshake, .. } => {
//!             println!("open, protocol {:?}", handshake.protocol);
//!             // Returns once the bytes are on the socket (or the send failed).
//!             client.send(Message::binary(vec![1, 2, 3]))?;
//!         }
//!         Event::Message { message, .. } => {
//!             println!("got {message:?}");
//!             if !message.is_text() {
//!                 client.close(None, "done")?; // wx.closeSocket
//!             }
//!         }
//!         Event::Error { error, .. } => eprintln!("error: {error}"),
//!         Event::Close { code, reason, .. } => {
//!             println!("closed: {code} {reason}");
//!             break;
//!         }
//!         _ => {} // Connecting, SendCompleted, ...
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The same surface exists for several sockets at once ([`TaskPool`] / [`SocketTask`], the
//! `SocketTask` model with a connection limit) and as WeChat's seven socket calls with
//! `success` / `fail` / `complete` callbacks ([`wx::WxSocket`]).
//!
//! ## Keepalive and reconnection
//!
//! Both are the core's, set on the [`SessionConfig`] inside [`Config`], and work the same
//! on every surface:
//!
//! ```
//! use std::time::Duration;
//! use wxsocket_blocking::{Config, ReconnectPolicy, SessionConfig};
//!
//! let session = SessionConfig::default()
//!     // Ping after 20 s with nothing received; the peer is dead 10 s after the ping.
//!     .keepalive(Duration::from_secs(20), Duration::from_secs(10))
//!     // Dial again after a drop: full-jitter backoff from 100 ms up to 30 s; messages
//!     // sent meanwhile are queued and carried over in order.
//!     .reconnect(ReconnectPolicy::default());
//! let config = Config::default().session(session);
//! # let _ = config;
//! ```
//!
//! A dropped connection then ends with its `Close` event, followed by
//! [`Event::Reconnecting`] (attempt, delay, last error), `Connecting` and `Open` of the next
//! connection. The application's own `close` is never retried, and cancels a pending
//! attempt.
//!
//! ## Flow control
//!
//! Memory stays bounded whatever the peer or the application does (the core's rules,
//! carried out here exactly as in `wxsocket-tokio`):
//!
//! - **Receiving.** Received messages the application has not taken from [`Events`] yet
//!   are bounded by [`SessionConfig::receive_bounds`] (default 1024 messages / 16 MiB; a
//!   [`TaskPool`] also bounds all its tasks together). At the bound the driver stops
//!   reading that socket (and stops watching it, so a flooding peer wakes nobody): TCP
//!   then pushes back on the peer. Once the application has taken half of them, reading
//!   resumes. Nothing is dropped or reordered; one message larger than the byte bound is
//!   still delivered whole. Keepalive does not end a paused connection (the backlog
//!   proves the peer alive), and `close` still finishes its handshake. [`Events`] itself
//!   holds only a small batch (64 events or 256 KiB of messages, or one larger message)
//!   and takes the next from the core when it has handed those out.
//!   [`Client::stats`] counts the pauses and their length ([`Stats::read_pauses`],
//!   [`Stats::read_paused_for`]); [`Client::backlog`] shows what waits; the `tracing`
//!   debug events `reading paused` / `reading resumed` name the connection and backlog.
//! - **Send completions** not taken yet are bounded too
//!   ([`SessionConfig::max_untaken_completions`], default 4096); an application that does
//!   not look at `SendCompleted` turns them off with [`SessionConfig::send_completions`].
//! - **Sending.** [`Client::send`] waits for room while the send buffer (or the queue
//!   before open, or the untaken completions) is full, then for the write;
//!   [`Client::send_timeout`] bounds the whole wait and hands the message back if no room
//!   came; [`Client::try_send`] never waits and hands the message back at once.
//!
//! ## Proxies
//!
//! `ws://` and `wss://` connections can go through an HTTP proxy's `CONNECT` tunnel. TLS
//! is end to end inside it (the server's name is the SNI and is checked against its
//! certificate; the proxy sees ciphertext only).
//!
//! - [`ConnectOptions::proxy`] (`http://[user:password@]host[:port]`) names a proxy for
//!   every host, loopback included; its credentials are sent as
//!   `Proxy-Authorization: Basic` and never appear in `Debug` output, events or errors. An
//!   invalid proxy URL (or an `https://` proxy, not supported) is refused by `connect`,
//!   before any IO, with an error starting `proxy:`. [`ConnectOptions::no_proxy`] connects
//!   directly.
//! - Otherwise the proxy environment applies: `https_proxy` for `wss://`, `http_proxy` for
//!   `ws://`, `all_proxy`, `no_proxy` (host suffixes, `*`, IP addresses and CIDR ranges),
//!   lower case first, then upper case, as curl reads them. The client reads the process
//!   environment once, when it is created; [`Config::proxy_env`] gives it a
//!   [`ProxyEnv`] instead (`ProxyEnv::empty()` ignores the environment). Loopback hosts
//!   (`localhost`, `127.0.0.0/8`, `::1`) always go direct, unlike curl: a proxy elsewhere
//!   cannot reach this machine's loopback.
//! - A proxy that refuses (`407`, `403`, `502`, …) fails the dial: `Error` with
//!   `ConnectionError::ConnectFailed` of kind `TransportErrorKind::HttpStatus(status)`, the
//!   message naming the proxy (without credentials) and its answer, then `Close` 1006. A
//!   [`ReconnectPolicy`] treats it as the server's own answer would be: 4xx final (unless
//!   `retry_http_4xx`), 5xx retried. The handshake timeout bounds the whole dial, the
//!   `CONNECT` exchange included; the proxy's answer head is bounded (16 KiB).
//! - [`SocketInfo::proxied`] says whether a connection went through a proxy (its
//!   `peer_addr` is then the proxy's).
//!
//! ```
//! use wxsocket_blocking::{Config, ConnectOptions, ProxyEnv};
//!
//! // An explicit proxy, with credentials (percent-encoded in the URL).
//! let options = ConnectOptions::new("wss://chat.example.com/ws")
//!     .proxy("http://alice:s%40cret@proxy.corp:3128");
//! assert!(!format!("{options:?}").contains("cret"));
//! // A client that ignores the machine's proxy variables and uses these instead.
//! let config = Config::default().proxy_env(ProxyEnv::from_vars([
//!     ("https_proxy", "http://proxy.corp:3128"),
//!     ("no_proxy", ".internal,10.0.0.0/8"),
//! ]));
//! # let _ = config;
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls` | on | `wss://` through rustls (ring provider), trusting the webpki roots and any CA added with [`TlsRoots`] |
//! | `deflate` | on | permessage-deflate (RFC 7692) through flate2 (zlib-rs): [`ConnectOptions::per_message_deflate`] and [`ConnectOptions::deflate`]; [`DeflateOptions::level`](DeflateOptions::level()) `1` is the fast option (about 4× the messages per second zlib allows at the default 6, for about 1.7× the bytes) |
//!
//! Both can be left out to shrink the build (`wxsocket-blocking = { version = "0.1", default-features
//! = false }`, adding back what you need). Without `tls`, `connect` refuses a `wss://` URL,
//! and without `deflate` a compression offer, before any IO with
//! [`ConnectError::Unsupported`] naming the feature; nothing panics.
//!
//! ## How it runs
//!
//! Each [`Client`] (or [`TaskPool`], [`wx::WxSocket`]) owns one driver thread and an OS
//! readiness poller ([mio]: epoll on Linux, kqueue on BSD/macOS; mio is a readiness
//! wrapper, not an async runtime). Nothing waits for a timer tick: `send` writes the frame
//! on the calling thread before it returns (only a full socket buffer leaves the rest to the
//! driver), a thread waiting in [`Events::recv`] is woken by the kernel and reads its own
//! message, and timers sleep exactly until the core's next deadline. The sockets' reads stay
//! with the receiving thread for 20 ms after it returns from `recv`, longer while the
//! application keeps calling into the client (sending a burst, say), up to 250 ms; then the
//! driver thread reads again. So a reply the protocol owes the peer (a pong, the close
//! handshake) waits at most 250 ms while the application sends without receiving; a due
//! timer always sees the input that arrived before it. Host names are resolved
//! on a short-lived helper thread, because the OS resolver only blocks. Should the OS poller
//! itself fail, every open connection ends as lost (an `Error`, then `Close` 1006, its
//! unsent messages failed) and the driver ends; nothing waits for ever. `DESIGN.md` in the
//! repository explains the design and its measurements.
//!
//! ## Busy-polling
//!
//! A thread in [`Events::recv`] that finds no event first polls the sockets, without
//! sleeping, for up to [`DEFAULT_BUSY_POLL`] (50 µs; zero on a one-CPU machine), because
//! waking a sleeping thread can cost more than the rest of a loopback round trip. It trades
//! CPU time for latency, so it backs off by itself: after 8 waits in a row that the budget
//! did not cover, it polls only before every 32nd wait, until a poll catches a message
//! again. [`Events::set_busy_poll`] changes the budget (at most [`MAX_BUSY_POLL`]); zero
//! turns it off.
//!
//! ## Lifetime
//!
//! Dropping the last [`Client`] clone (or the last [`TaskPool`] / [`SocketTask`] /
//! [`wx::WxSocket`]), or calling `shutdown()` on any of them (which also waits for the end),
//! shuts the core down ([`wxsocket_core::Session::shutdown`]): every open connection is
//! closed cleanly (close frame 1000, then the transport, bounded by the close timeout), and
//! every dial in progress is aborted whatever the close-before-open policy (its queued
//! messages fail as cancelled, close 1006), exactly as in `wxsocket-tokio`.
//! [`Events::recv`] then yields the remaining events and returns `None`, and the driver
//! thread ends, leaving no thread or socket behind. Dropping [`Events`] early only discards
//! later events. A socket replaced by `connect` has had its `Close` event but may still be
//! finishing its close handshake: a program about to exit drops its handles and reads
//! [`Events`] until it ends, so no close frame is cut off.
#![forbid(unsafe_code)]

mod busy_poll;
mod client;
mod conn;
mod driver;
mod pool;
mod websocket;
pub mod wx;

pub use busy_poll::{DEFAULT_BUSY_POLL, MAX_BUSY_POLL};
pub use client::{Client, Events, IntoIter, Iter, SendPending, TryIter};
pub use pool::{SocketTask, TaskPool};
pub use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
pub use websocket::{Messages, WebSocket, connect, connect_with};
pub use wxsocket_wire::reexports::*;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
