//! # wxsocket-tokio
//!
//! The WeChat mini-program WebSocket session model (connect, open, send, message, error,
//! close) for async Rust: [`wxsocket_core`]'s sans-IO state machine driven over tokio and
//! tungstenite. Every lifecycle decision (queueing before open, flushing, timeouts,
//! replacement, the close-before-open policy, keepalive, exactly-once send completion) is
//! the core's; this crate moves bytes and keeps one timer.
//!
//! The whole echo client, on the simple path ([`connect`] waits for open; [`WebSocket`]
//! yields received messages only; `send` and `close` wait):
//!
//! ```
//! #[tokio::main]
//! async fn main() -> Result<(), wxsocket_tokio::Error> {
//!     # let server = wxsocket_test_server::EchoServer::start().unwrap();
//!     # let mut ws = wxsocket_tokio::connect(server.url()).await?;
//!     # /*
//!     let mut ws = wxsocket_tokio::connect("ws://127.0.0.1:9001").await?;
//!     # */
//!     for text in ["one", "two", "three"] {
//!         ws.send(text).await?;
//!         println!("{}", ws.next().await.expect("an echo"));
//!     }
//!     ws.close().await?;
//!     Ok(())
//! }
//! ```
//!
//! Underneath, three surfaces, one driver:
//!
//! - [`WebSocket`] ([`connect`], [`connect_with`]): the simple path above, over a [`Client`];
//! - [`Client`] + [`Events`]: one socket at a time (the model of WeChat's `wx.connectSocket`),
//!   with awaitable and non-waiting sends and a [`Stream`](futures_core::Stream) of every
//!   [`Event`];
//! - [`TaskPool`] + [`SocketTask`]: several sockets at once (the `SocketTask` model, limit
//!   from [`SessionConfig::pool_limit`]);
//! - [`wx::WxSocket`]: WeChat's seven socket calls by their snake_case names, with `success` /
//!   `fail` / `complete` callbacks.
//!
//! ## Example
//!
//! ```
//! use wxsocket_tokio::{Client, Config, ConnectOptions, Event, Message};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     # // A local echo server stands in for "wss://example.com/ws" so the example runs.
//!     # let server = wxsocket_test_server::EchoServer::start()?;
//!     # let url = server.url();
//!     let (client, mut events) = Client::new(Config::default())?;
//!     client.connect(&ConnectOptions::new(url).tcp_no_delay(true))?;
//!
//!     // Sent before the socket opened: queued, then written right after the handshake.
//!     client.try_send("hello")?;
//!
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Open { handshake, .. } => {
//!                 println!("open, protocol {:?}", handshake.protocol);
//!                 // Resolves once the message is written to the socket.
//!                 client.send(Message::binary(vec![1, 2, 3])).await?;
//!             }
//!             Event::Message { message, .. } if message.is_text() => {
//!                 assert_eq!(message.as_bytes(), b"hello");
//!             }
//!             Event::Message { message, .. } => {
//!                 assert_eq!(message.as_bytes(), [1, 2, 3]);
//!                 client.close(None, "done")?;
//!             }
//!             Event::Error { error, .. } => eprintln!("error: {error}"),
//!             Event::Close { code, clean, .. } => {
//!                 assert_eq!((code, clean), (1000, true));
//!                 break;
//!             }
//!             _ => {} // Connecting, SendCompleted, SendFailed
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! `wss://` works the same way; trust a private CA with
//! `Config::default().tls(TlsRoots::default().with_ca(cert))`.
//!
//! ## Keepalive and reconnection
//!
//! Both are the core's, set on the [`SessionConfig`] inside [`Config`], and work the same
//! in [`Client`], [`TaskPool`] and [`wx::WxSocket`]:
//!
//! ```
//! use std::time::Duration;
//! use wxsocket_tokio::{Config, ReconnectPolicy, SessionConfig};
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
//! use wxsocket_tokio::{Config, ConnectOptions, ProxyEnv};
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
//! Both can be left out to shrink the build (`wxsocket-tokio = { version = "0.1", default-features
//! = false }`, adding back what you need). Without `tls`, `connect` refuses a `wss://` URL,
//! and without `deflate` a compression offer, before any IO with
//! [`ConnectError::Unsupported`] naming the feature; nothing panics.
//!
//! ## How it runs
//!
//! Each [`Client`] (or [`TaskPool`], [`wx::WxSocket`]) spawns one driver task and one task
//! per connection on the current tokio runtime; a `Client` must therefore be created inside
//! a runtime with the time and IO drivers enabled. Sends never wait for another task when
//! the connection is idle: the calling thread writes the frame itself. Bursts of sends are
//! written in batches, one flush for every message already waiting. The wx-style callbacks
//! run on the driver task, outside any lock, so they may call back into the socket.
//! `DESIGN.md` in the repository explains the design and its measurements.
//!
//! ## Lifetime
//!
//! When the last handle is dropped, or `shutdown().await` is called on any handle (which
//! also waits for the end), the driver shuts the core down
//! ([`wxsocket_core::Session::shutdown`]): open connections are closed with 1000, dials in
//! progress are aborted whatever the close-before-open policy (queued messages fail as
//! cancelled, close 1006). It keeps driving until the core says every transport is done
//! (the close timeout bounds it), ends the event stream, and exits: no task, socket or
//! timer outlives it. A socket replaced by `connect` has had its `Close` event but may still
//! be finishing its close handshake; shutdown waits for it too, so a program about to exit
//! calls `shutdown().await` (or drops its handles and reads [`Events`] until it ends) and no
//! close frame is cut off.
//!
//! The tasks live on the runtime the client was created on. If that runtime is shut down
//! while the client is still used (from another runtime, say), the tasks go with it: every
//! open connection then ends as lost (an `Error`, then `Close` 1006, its unsent messages
//! failed), a dial is aborted as by `shutdown`, the wx-style callbacks this makes due still
//! run, the event stream ends, and later sends are refused. Nothing waits for ever.
#![forbid(unsafe_code)]

mod client;
mod conn;
mod driver;
mod pool;
mod websocket;
pub mod wx;

pub use client::{Client, Events};
pub use pool::{SocketTask, TaskPool};
pub use websocket::{WebSocket, connect, connect_with};
pub use wxsocket_wire::reexports::*;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
