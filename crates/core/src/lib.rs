//! # wxsocket-core
//!
//! The WeChat mini-program WebSocket session model — connect, open, send, message, error,
//! close — as a pure, sans-IO state machine. No async runtime, no sockets, no clock: every
//! input that depends on time takes `now`, and the IO driver (your runtime, or the
//! `wxsocket-tokio` / `wxsocket-blocking` adapters) carries out the [`Action`]s it emits.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wxsocket_core::*;
//!
//! let mut session = Session::new(SessionConfig::default()).unwrap();
//! let t0 = Instant::now();
//!
//! // wx.connectSocket: validated before anything is dialled.
//! let conn = session.connect(&ConnectOptions::new("wss://example.com/ws").protocol("chat"), t0).unwrap();
//! // wx.sendSocketMessage before open: queued, not lost.
//! let hello = session.send(Message::text("hello"), t0).unwrap();
//!
//! // The driver dials ...
//! let Some(Action::Dial { request, .. }) = session.poll_action() else { panic!() };
//! assert_eq!(request.protocols, ["chat"]);
//! // ... and reports the handshake.
//! let t1 = t0 + Duration::from_millis(30);
//! session.handle(conn, TransportEvent::Opened(Box::new(Handshake::default().with_protocol(Some("chat".into())))), t1);
//! assert_eq!(session.state(), ReadyState::Open);
//!
//! // The queued message is flushed on open; the driver confirms it was written.
//! let Some(Action::Send { id, .. }) = session.poll_action() else { panic!() };
//! assert_eq!(id, hello);
//! session.handle(conn, TransportEvent::SendWritten(id), t1);
//!
//! // wx.closeSocket: a close frame for the driver, then the peer answers.
//! session.close(None, "bye", t1).unwrap();
//! assert!(matches!(session.poll_action(), Some(Action::Close { .. })));
//! session.handle(conn, TransportEvent::CloseWritten, t1);
//! session.handle(conn, TransportEvent::PeerClosed(PeerClose { code: Some(1000), reason: "bye".into() }), t1);
//! session.handle(conn, TransportEvent::Closed, t1);
//!
//! let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
//! assert!(matches!(events.as_slice(), [
//!     Event::Connecting { .. },
//!     Event::Open { .. },
//!     Event::SendCompleted { .. },
//!     Event::Close { code: 1000, clean: true, .. },
//! ]));
//! ```
//!
//! Modules: [`Session`] (one socket, as `wx.connectSocket`), [`Pool`] (several, the
//! `SocketTask` model), [`wx`] (WeChat's seven socket calls with success / fail / complete
//! callbacks), and the state graph in [`TRANSITIONS`].
//!
//! ## Writing a driver
//!
//! The session decides everything (timeouts, keepalive, reconnection, flow control); the
//! driver does the IO and reports what happened. Its duties:
//!
//! - carry out every [`Action`] in order ([`Session`]'s "Run loop" says when to drain
//!   them), report each send written with [`TransportEvent::SendWritten`], and our close
//!   frame (or the reply to the peer's) written with [`TransportEvent::CloseWritten`];
//! - answer the peer's pings, and the peer's close frame: after
//!   [`TransportEvent::PeerClosed`] with a valid code the session emits no
//!   [`Action::Close`], so the transport sends the reply close frame itself (tungstenite
//!   does both by itself; the driver keeps flushing). A code the peer may not send is a
//!   protocol error: the session then asks for a 1002 close frame, which a transport that
//!   has answered already may drop;
//! - read only within the connection's read credit ([`ReadCredit`]), and report bytes
//!   that complete nothing yet as [`TransportEvent::Receiving`];
//! - report the end of a transport exactly once: `ConnectFailed` for a dial or handshake
//!   that failed, otherwise `Error` (if any) then `Closed`.
//!
//! For real IO, start from the `wxsocket-wire` crate, which the `wxsocket-tokio` and
//! `wxsocket-blocking` adapters are built on: its `ClientHandshake` (the opening handshake
//! as a sans-IO machine), its message conversions and error classification for
//! tungstenite (`convert`), and its `connection::Connection` (one connection from its dial
//! plan to its end, with TLS, permessage-deflate and proxies). Its example
//! `crates/wire/examples/poll_loop.rs` in the repository is a complete single-threaded
//! driver over the standard library's non-blocking sockets, written to be copied into a
//! game loop or engine tick (`cargo run -p wxsocket-wire --example poll_loop -- URL`).
#![forbid(unsafe_code)]
// Where the adapters' pages link the core's items that they do not re-export (`Session`,
// `Pool`, `TransportEvent`, …) when the core's own pages are not built beside theirs (as
// with `cargo doc --no-deps -p wxsocket-tokio`): without it rustdoc prints such links as
// raw text. Kept at the crate's version by the test below.
#![doc(html_root_url = "https://docs.rs/wxsocket-core/0.1.0")]

mod ack;
mod backlog;
pub mod close;
mod config;
mod deadline;
pub mod deflate;
mod driven;
mod error;
mod event;
mod ids;
mod jitter;
mod message;
mod pool;
mod proxy;
mod queue;
mod request;
mod session;
mod state;
pub mod transcript;
mod transport;
pub mod wx;

pub use backlog::{Backlog, ReadCredit};
pub use close::{CloseRequest, PeerClose};
pub use config::{
    Acknowledgement, CloseBeforeOpen, Keepalive, MAX_TIMER, RECONNECT_HOLD_DELAY,
    RECONNECT_HOLD_NOTICES, ReconnectPolicy, SessionConfig,
};
pub use deflate::{DeflateOptions, DeflateParams};
pub use driven::Driven;
pub use error::{
    CloseError, ConfigError, ConnectError, ConnectionError, FailedSend, PingError, SendError,
    SendFailure,
};
pub use event::Event;
pub use ids::{ConnId, SendId};
pub use message::{Message, Utf8Payload};
pub use pool::Pool;
pub use proxy::{Proxy, ProxyCredentials, ProxyOption, ProxyProtocol, ProxyRoute};
pub use request::{ConnectOptions, HandshakeRequest};
pub use session::{Completion, MAX_PINGS, REPLACED_REASON, Session, Stats};
pub use state::{ReadyState, State, TRANSITIONS, Transition};
pub use transport::{
    Action, DialStage, Handshake, OpenProfile, TransportError, TransportErrorKind, TransportEvent,
};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
#[test]
fn html_root_url_names_this_version() {
    let url = format!(
        "https://docs.rs/wxsocket-core/{}\")]",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        include_str!("lib.rs").contains(&url),
        "bump html_root_url to {url}"
    );
}

/// The state graph and its Mermaid rendering (the README's diagram is checked against it).
pub mod graph {
    pub use crate::state::{is_allowed, is_allowed_ready, mermaid};
}
