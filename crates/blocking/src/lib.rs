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
//! client.send("hello")?;
//!
//! while let Ok(event) = events.recv_timeout(Duration::from_secs(10)) {
//!     match event {
//!         Event::Open { handshake, .. } => {
//!             println!("open, protocol {:?}", handshake.protocol);
//!             // Returns once the bytes are on the socket (or the send failed).
//!             client.send_wait(Message::binary(vec![1, 2, 3]))?;
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
//! `SocketTask` model with a connection limit) and as the seed's seven calls with
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
//! ## IO design: no polling, no tick
//!
//! Each [`Client`] (or [`TaskPool`], [`wx::WxSocket`]) owns one **driver thread** and an
//! OS readiness poller ([mio]: epoll on Linux, kqueue on BSD/macOS; mio is only a
//! readiness wrapper, not an async runtime). Every socket is non-blocking and registered
//! with that poller, edge-triggered. The session core and the sockets sit behind one
//! mutex, the application's events behind another. Whoever changes the core — an
//! application thread in `send` / `close` / `connect`, a thread waiting in
//! [`Events::recv`], or the driver thread — carries out the actions the core queued
//! before letting go of the lock. Nothing ever waits for a timer tick:
//!
//! - **Sending** never waits for another thread. `send` runs the core, which turns the
//!   message into a `Send` action, and the calling thread writes the frame through
//!   tungstenite straight into the socket before `send` returns. Everything the core queued
//!   at that moment (e.g. the queue flushed on open) is written first and flushed once
//!   (batching), and `SendWritten` is reported as soon as the flush succeeded. Only when the
//!   kernel's socket buffer is full does the rest wait — for the poller's *writable* event,
//!   which the driver thread handles (its poller watches writability only then).
//! - **Receiving** has no hand-over between threads either. A thread that calls
//!   [`Events::recv`] and finds no event sleeps on a second poller that holds the same
//!   sockets (readable only), so the kernel wakes *it* when data arrives; it reads the
//!   message, runs the core, and returns the event — the same wake-up a plain blocking
//!   `read` costs. Before it sleeps it takes the sockets' reads from the driver thread
//!   (the driver's poller stops watching them for reads), so an arriving message wakes
//!   only the thread that waits for it. On an otherwise idle machine a second wake-up
//!   per message costs more than the rest of a round trip: with both threads woken,
//!   small pipelined messages ran at about 0.65 of the plain client, without it at about
//!   0.95. A read pass that a readiness event started ends at the first short read (the
//!   socket is empty; any later arrival is a new edge), unless the event says the peer's
//!   FIN is already there, and then it reads on to the end. Bytes read past the handshake
//!   response are served by the transport itself, so tungstenite keeps its full-size read
//!   buffer.
//! - **Busy-polling**: a thread in `recv` that finds no event first polls the sockets
//!   (without sleeping) for up to 50 µs ([`DEFAULT_BUSY_POLL`]; zero on a one-CPU
//!   machine; [`Events::set_busy_poll`] changes it, zero turns it off). On a virtual
//!   machine, waking a sleeping thread costs tens of microseconds, more than the rest of a
//!   loopback round trip; a reply that comes within the budget is picked up by a thread
//!   that never slept. This trades CPU time for latency, as Linux's `SO_BUSY_POLL` and
//!   KVM's halt polling do, so it stops by itself when it does not pay: after 8 waits in a
//!   row that the budget did not cover (an idle connection, or messages farther apart than
//!   the budget), it polls only before every 32nd wait, and one poll that catches a message
//!   resumes it. A connection whose messages come slower than the budget therefore costs
//!   at most one budget per 32 waits. In the benchmark it makes one-at-a-time round trips
//!   about 2.6 times as fast and 16 KiB pipelined messages about 15 % faster; the
//!   benchmark also reports every case with it turned off.
//! - **Giving reads back**: after `recv` returns, the reads stay with the application for
//!   20 ms in case it comes back to `recv` (an application that receives in a loop does),
//!   so messages that arrive meanwhile wait in the socket for the application's own next
//!   `recv` instead of waking the driver thread. Then the driver thread takes them back
//!   and reads as data arrives again (answering pings, finishing closes, running
//!   callbacks), so a peer's ping or close is answered within those 20 ms even if nobody
//!   receives. While a receive loop runs (waits shorter than 20 ms), the driver looks
//!   again on its own timer, once per 20 ms, so the receiving thread never has to wake it.
//!   (Waking it whenever a `recv` ended, with a 5 ms grace, cost a wake-up and a contended
//!   lock every few calls, and small pipelined messages ran at 0.92 of the plain client.)
//!   During a longer wait (an idle connection) the driver sleeps without a timer, and the
//!   receiving thread wakes it once when that wait ends. [`Events::try_recv`] reads what
//!   arrived first, and the driver reads before it judges any timer (a keepalive never
//!   counts a pong that sits unread in the socket as missing). Dropping [`Events`] gives
//!   the reads back at once. Callback machines ([`wx::WxSocket`]) never hand reads off.
//! - **Timers** (handshake, close, keepalive, reconnect backoff) are exact: the driver's
//!   poller sleeps until `poll_timeout()` of the core and no longer. When another thread
//!   makes a deadline earlier than the one the driver sleeps until, it wakes the driver
//!   through the poller's waker (an eventfd); otherwise the driver is not disturbed.
//! - **Dialling** is non-blocking too: TCP connect, a proxy's `CONNECT` exchange, TLS
//!   (rustls; reading and writing are decoupled so two busy peers cannot deadlock) and the
//!   HTTP upgrade all progress on readiness events. An `Abort` from the core (handshake timeout, close before open,
//!   replacement) deregisters and drops the socket at once. Host names (not IP literals)
//!   are resolved on a short-lived helper thread, because the OS resolver only blocks; an
//!   aborted dial's answer is dropped.
//!
//! So no message ever waits for a fixed interval: the driver sleeps in the poller with no
//! timeout unless the core has a deadline or a receive loop is running, and every byte
//! moves as soon as the kernel allows it. The echo benchmark (the unpublished `wxsocket-bench` crate) compares this
//! adapter with a plain blocking tungstenite client doing the same work; a one-at-a-time
//! round trip takes tens of microseconds, which a design with a polling tick (a
//! millisecond at least) could not reach.
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
mod stream;
pub mod wx;

pub use busy_poll::{DEFAULT_BUSY_POLL, MAX_BUSY_POLL};
pub use client::{Client, Events, IntoIter, Iter, SendPending, TryIter};
pub use pool::{SocketTask, TaskPool};
pub use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
pub use wxsocket_core::{
    CloseBeforeOpen, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions,
    ConnectionError, DeflateOptions, DeflateParams, Event, Handshake, Keepalive, MAX_TIMER,
    Message, ReadyState, ReconnectPolicy, SendError, SendFailure, SendId, SessionConfig,
    TransportError, TransportErrorKind,
};
pub use wxsocket_wire::client::{Config, SendFailed, SocketInfo};
pub use wxsocket_wire::proxy::ProxyEnv;
pub use wxsocket_wire::tls::TlsRoots;
