//! # wxsocket-wire
//!
//! What the tokio and blocking adapters of wxsocket share below the session core, written
//! once so the two cannot drift apart:
//!
//! - [`ClientHandshake`]: the RFC 6455 opening handshake as a sans-IO machine (bytes in,
//!   bytes out). It is ours rather than tungstenite's because tungstenite fails a server that
//!   selects no sub-protocol, which browsers and WeChat accept, and reports no response
//!   headers on failure; the session core then judges the answer.
//! - [`convert`]: messages between the core and tungstenite, and tungstenite errors
//!   classified into [`wxsocket_core::TransportError`]s (which decide close codes).
//! - [`deflate`]: permessage-deflate (RFC 7692) for connections that negotiated it, as a
//!   frame-level transform around tungstenite (which has no extension support): a
//!   [`deflate::Compressor`] for what is sent and an [`deflate::Inflater`] for what is
//!   read. The module docs explain the choice; uncompressed connections never touch it.
//! - [`proxy`]: HTTP and SOCKS5 proxies: which one a request goes through (the connect
//!   option, or the `https_proxy` / `http_proxy` / `all_proxy` / `no_proxy` environment as
//!   the client read it), and the `CONNECT` exchange as a sans-IO machine (SOCKS5's is in
//!   [`socks`]).
//! - [`tls`]: a rustls client configuration from webpki roots and custom CA certificates,
//!   with a client certificate for mutual TLS.
//! - [`connection::Connection`]: one connection's transport from its dial plan to its end
//!   (the upgrade, the open WebSocket read within the core's credit, the end), which both
//!   adapters drive; they keep the TCP connect and how they wait for the socket.
//! - [`dial`]: the dial plan (where the TCP connection goes, what each failure is called,
//!   the TLS server name) and a connection's codecs once open ([`dial::Encoder`]).
//! - [`events::EventBatch`]: the batch of events an adapter's `Events` takes from the
//!   machine at a time, with its bounds.
//! - [`handle`]: the calls of the adapters' `Client`, `TaskPool` and `SocketTask` that do
//!   not wait, written once over a [`handle::DriverHandle`].
//! - [`incoming::Incoming`]: the read side of an open connection (the handshake's tail,
//!   the read-ahead or the inflater, the close watch).
//! - [`machine::Machine`]: what a driver needs from the core's `Session`, `Pool` and wx
//!   socket besides `Driven`, implemented once for the three.
//! - [`wx`]: the WeChat socket surface (`WxSocket`) both adapters define with one macro.
//! - [`DialTimer`]: the points of a dial both adapters time for the open event's
//!   [`wxsocket_core::OpenProfile`].
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls` | on | [`tls::TlsRoots::client_config`]: rustls (aws-lc-rs provider, post-quantum key exchange preferred) with the webpki roots and custom CAs |
//! | `deflate` | on | the [`deflate`] codecs, through flate2 (zlib-rs); without it the module's types have no values and [`deflate::accept`] declines every offer |
//!
//! [`check_request`] refuses a request this build cannot dial (`wss://` without `tls`, a
//! compression offer without `deflate`), naming the feature; the adapters call it on every
//! connect.
//!
//! ```
//! use wxsocket_core::ConnectOptions;
//! use wxsocket_wire::ClientHandshake;
//! let request = ConnectOptions::new("ws://127.0.0.1:9001/chat").protocol("v1").validate().unwrap();
//! let handshake = ClientHandshake::new(&request);
//! let text = std::str::from_utf8(handshake.request_bytes()).unwrap();
//! assert!(text.starts_with("GET /chat HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n"));
//! assert!(text.contains("Sec-WebSocket-Protocol: v1\r\n"));
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod connection;
pub mod convert;
#[cfg(feature = "deflate")]
pub mod deflate;
#[cfg(not(feature = "deflate"))]
#[path = "deflate_off.rs"]
pub mod deflate;
pub mod dial;
pub mod events;
mod features;
pub mod handle;
mod handshake;
pub mod incoming;
pub mod link;
pub mod machine;
pub mod proxy;
pub mod read_ahead;
pub mod simple;
pub mod socks;
mod timing;
pub mod tls;
pub mod trace;
pub mod upgrade;
pub mod wx;

/// What both adapters (`wxsocket-tokio`, `wxsocket-blocking`) re-export at their root, from
/// the core and from this crate: one list, so that a program moves between them by adding or
/// removing `.await`, with the same types.
pub mod reexports {
    pub use crate::client::{Config, Recording, SendFailed, SocketInfo, StartError};
    pub use crate::proxy::ProxyEnv;
    pub use crate::simple::{Closed, Error, ErrorKind};
    pub use crate::tls::{ClientIdentity, PemFileError, TlsRoots};
    /// A binary payload ([`Message::binary`], a pong's payload), without adding `bytes`.
    pub use bytes::Bytes;
    /// A header's name, for [`Recording::redact`] (and whatever else names one).
    pub use http::HeaderName;
    /// A handshake's headers ([`Handshake::headers`]) and their values.
    pub use http::{HeaderMap, HeaderValue};
    /// A certificate or private key in DER, for [`TlsRoots::with_ca`] and
    /// [`ClientIdentity::new`], without adding `rustls-pki-types`.
    pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    pub use wxsocket_core::transcript::Redaction;
    pub use wxsocket_core::{
        Acknowledgement, Backlog, CloseBeforeOpen, CloseError, ConfigError, ConnId, ConnectError,
        ConnectOptions, ConnectionError, DeflateOptions, DeflateParams, Event, FailedSend,
        Handshake, Keepalive, MAX_TIMER, Message, OpenProfile, PingError, ProxyOption, ReadyState,
        ReconnectPolicy, SendError, SendFailure, SendId, SessionConfig, Stats, TransportError,
        TransportErrorKind, Utf8Payload,
    };
}

/// What the handle macros ([`handle`], [`wx`]) name, reachable through `$crate` from the
/// adapter crates that expand them.
#[doc(hidden)]
pub mod __private {
    pub use bytes::Bytes;
    pub use wxsocket_core::wx::WxSocket as WxCore;
    pub use wxsocket_core::{Pool, Session};
}

pub use features::check_request;
pub use handshake::{ClientHandshake, HandshakeDone, MAX_RESPONSE_HEAD};
pub use timing::DialTimer;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

use wxsocket_core::SessionConfig;

/// tungstenite's read size, and so the read buffer every connection keeps while idle.
///
/// tungstenite zero-fills the free part of its read buffer (up to this much) before every
/// read, so all of it stays resident once a connection has read at all: at 32 KiB that was
/// most of an idle connection's 39 KiB. While data streams in, the adapters read the socket
/// [`READ_AHEAD`] bytes at a time through a [`read_ahead::ReadAhead`] and serve tungstenite
/// from it. (`DESIGN.md` in the repository has the measurements.)
pub const READ_BUFFER: usize = 4 * 1024;

/// How much a busy connection reads from the socket per read call (see
/// [`read_ahead`]); the buffer is given back when the socket runs dry.
pub const READ_AHEAD: usize = 64 * 1024;

/// Received payloads shorter than this are copied out of tungstenite's buffer (see
/// [`convert::from_ws`]); longer ones were read into a buffer reserved for their frame and
/// are passed on as they are.
pub const COPY_BELOW: usize = 32 * 1024;

/// How large tungstenite's buffers of a connection may grow and be kept: once a frame this
/// long or longer was read, or this many bytes were written between two flushes, the
/// connection makes them anew (a read buffer of [`READ_BUFFER`], an empty write buffer) the
/// next time it is idle: its socket read dry, everything written out, between messages, no
/// close under way. Until then each keeps the size of the longest frame read or the most
/// written at once, so that a connection that once received a 64 MiB message would hold
/// 64 MiB for the rest of its life. Below this, the buffers are kept: frames under
/// [`COPY_BELOW`] are copied out, so tungstenite reuses its buffer for the next one.
pub const GIVE_BACK_FROM: usize = COPY_BELOW;

/// tungstenite's configuration from the session's: the maximum message size applies to
/// received messages and data frames; reads take at most [`READ_BUFFER`] at a time.
pub fn websocket_config(config: &SessionConfig) -> tungstenite::protocol::WebSocketConfig {
    // tungstenite bounds every frame by its frame limit, control frames too: below 125
    // bytes (the most a control frame holds, RFC 6455 §5.5) the peer's close frame or
    // pong failed the connection as too big. Data frames stay bounded by the message
    // limit, which tungstenite checks on each data frame as well.
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size.max(MAX_CONTROL_PAYLOAD)))
        .read_buffer_size(READ_BUFFER)
}

/// The most payload a control frame (close, ping, pong) holds (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
