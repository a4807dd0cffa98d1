//! What the IO driver reports to the session ([`TransportEvent`]) and what the session asks
//! of the driver ([`Action`]). Every item is tagged with the [`ConnId`] it belongs to.

use crate::close::{
    ABNORMAL, CloseRequest, INVALID_PAYLOAD, MESSAGE_TOO_BIG, PROTOCOL_ERROR, PeerClose,
};
use crate::deflate::DeflateParams;
use crate::ids::{ConnId, SendId};
use crate::message::Message;
use crate::request::HandshakeRequest;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// What the server answered in a successful handshake, and how long the dial took.
///
/// It reaches the application on [`crate::Event::Open`]. Fields may be added (it is
/// `#[non_exhaustive]`): read them by name; a driver or test builds one with
/// [`Handshake::default`] and the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// # use wxsocket_core::{Handshake, OpenProfile};
/// let ms = Duration::from_millis;
/// let handshake = Handshake::default()
///     .with_protocol(Some("chat".into()))
///     .with_profile(OpenProfile::new(ms(1), ms(3), None, ms(3), ms(5)));
/// assert_eq!(handshake.protocol.as_deref(), Some("chat"));
/// assert_eq!(handshake.profile.response_received, ms(5));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handshake {
    /// The sub-protocol the server selected, if any.
    pub protocol: Option<String>,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The `Sec-WebSocket-Extensions` the server accepted, as sent (empty when none).
    pub extensions: Option<String>,
    /// The permessage-deflate parameters in force, when compression was negotiated.
    pub deflate: Option<DeflateParams>,
    /// When each phase of the dial ended, as the driver measured it (all zero when the
    /// driver measured nothing, as in a simulation).
    pub profile: OpenProfile,
}

impl Handshake {
    /// With this selected sub-protocol.
    #[must_use]
    pub fn with_protocol(mut self, protocol: Option<String>) -> Self {
        self.protocol = protocol;
        self
    }

    /// With these response headers.
    #[must_use]
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// With this accepted `Sec-WebSocket-Extensions` value.
    #[must_use]
    pub fn with_extensions(mut self, extensions: Option<String>) -> Self {
        self.extensions = extensions;
        self
    }

    /// With these permessage-deflate parameters in force.
    #[must_use]
    pub fn with_deflate(mut self, deflate: Option<DeflateParams>) -> Self {
        self.deflate = deflate;
        self
    }

    /// With this timing profile of the dial.
    #[must_use]
    pub fn with_profile(mut self, profile: OpenProfile) -> Self {
        self.profile = profile;
        self
    }
}

/// How long each phase of a dial took: when each ended, as an offset from the moment the
/// driver began the dial (it received [`Action::Dial`]), on a monotonic clock. The newer
/// WeChat `SocketTask.onOpen` reports the same as `res.profile`.
///
/// The phases follow one another, so the offsets never decrease: `resolved ≤ connected ≤
/// tls (when present) ≤ request_written ≤ response_received`. The duration of a phase is
/// the difference between its offset and the previous one (see [`Self::phases`]).
///
/// The driver measures (the core has no clock), with `std::time::Instant`; both adapters
/// measure the same points (`wxsocket_wire::DialTimer`). Through a proxy (HTTP or SOCKS5),
/// `resolved` and `connected` are the proxy's name resolution and TCP connect, and the
/// exchange that opens its tunnel falls in the next phase (`tls`, or `request_written` for `ws://`).
///
/// In WeChat's terms, with `fetchStart` as zero: `domainLookUpEnd` is `resolved`,
/// `connectEnd` (which includes TLS) is `tls` or else `connected`, and `cost` is about
/// `response_received`.
///
/// Fields may be added (it is `#[non_exhaustive]`): build one with [`Self::new`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OpenProfile {
    /// The host name was resolved to addresses (zero for an IP address).
    pub resolved: Duration,
    /// The TCP connection was established (to the proxy, through one).
    pub connected: Duration,
    /// The TLS handshake completed: only for `wss://`.
    pub tls: Option<Duration>,
    /// The HTTP upgrade request was written and flushed to the socket.
    pub request_written: Duration,
    /// The server's `101 Switching Protocols` response head was read and checked.
    pub response_received: Duration,
}

impl OpenProfile {
    /// A profile from the end of each phase, as offsets from the start of the dial.
    pub fn new(
        resolved: Duration,
        connected: Duration,
        tls: Option<Duration>,
        request_written: Duration,
        response_received: Duration,
    ) -> Self {
        Self {
            resolved,
            connected,
            tls,
            request_written,
            response_received,
        }
    }

    /// How long each phase took, in order: `("dns", ..)`, `("tcp", ..)`, `("tls", ..)`
    /// (only when present), `("request", ..)`, `("response", ..)`. Each is the difference
    /// to the previous phase's end (saturating at zero), so they add up to
    /// [`Self::response_received`] when the offsets are ordered.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use wxsocket_core::OpenProfile;
    /// let ms = Duration::from_millis;
    /// let profile = OpenProfile::new(ms(2), ms(5), Some(ms(9)), ms(9), ms(310));
    /// let phases: Vec<_> = profile.phases().collect();
    /// assert_eq!(phases, [("dns", ms(2)), ("tcp", ms(3)), ("tls", ms(4)), ("request", ms(0)), ("response", ms(301))]);
    /// ```
    pub fn phases(&self) -> impl Iterator<Item = (&'static str, Duration)> + use<> {
        let ends = [
            Some(("dns", self.resolved)),
            Some(("tcp", self.connected)),
            self.tls.map(|t| ("tls", t)),
            Some(("request", self.request_written)),
            Some(("response", self.response_received)),
        ];
        let mut previous = Duration::ZERO;
        ends.into_iter().flatten().map(move |(name, end)| {
            let took = end.saturating_sub(previous);
            previous = previous.max(end);
            (name, took)
        })
    }
}

/// The kind of a [`TransportError`]; decides the close code reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The dial failed on the network: name resolution, TCP connect, or the connection
    /// reset or closed before the server's answer (during a proxy's tunnel or the TLS
    /// handshake too; the error names the stage).
    Connect,
    /// TLS failed (certificate, handshake, a record that does not decrypt, an alert).
    Tls,
    /// The server answered the upgrade with this HTTP status instead of 101 (or sent this
    /// status line, then closed the connection before its answer's end).
    HttpStatus(u16),
    /// The peer broke the WebSocket protocol (close code 1002).
    Protocol,
    /// The server's handshake answer agreed to something that was not offered, or not in
    /// the form offered (an extension or its parameters). A configuration mismatch: a
    /// reconnect policy does not retry it.
    Negotiation,
    /// A text message was not valid UTF-8 (close code 1007).
    InvalidUtf8,
    /// A message exceeded the maximum size (close code 1009).
    MessageTooBig,
    /// Any other IO failure (reset, broken pipe, unexpected EOF).
    Io,
    /// A SOCKS5 proxy refused this client: it accepted none of the authentication methods
    /// offered (none without credentials in the proxy URL), refused the credentials, its
    /// rules do not allow the connection, or it does not support the request (an address
    /// type: some proxies take addresses only, not names). Final for a reconnect policy, as an HTTP
    /// proxy's `407` or `403` is, unless
    /// [`ReconnectPolicy::retry_http_4xx`](crate::ReconnectPolicy::retry_http_4xx). (An
    /// HTTP proxy's refusals are [`Self::HttpStatus`], with the proxy named in the error.)
    ProxyRefused,
}

impl TransportErrorKind {
    /// The close code a connection that fails this way reports.
    pub fn close_code(self) -> u16 {
        match self {
            TransportErrorKind::Protocol => PROTOCOL_ERROR,
            TransportErrorKind::InvalidUtf8 => INVALID_PAYLOAD,
            TransportErrorKind::MessageTooBig => MESSAGE_TOO_BIG,
            _ => ABNORMAL,
        }
    }

    /// Whether the failing side should still try to send a close frame with
    /// [`Self::close_code`] (RFC 6455 §7.1.7: fail the connection).
    pub fn sends_close_frame(self) -> bool {
        self.close_code() != ABNORMAL
    }
}

/// A failure the IO driver observed.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// A readable description from the IO layer.
    pub message: String,
    /// How long the server asked the client to wait before it tries again (HTTP
    /// `Retry-After` in seconds, with a 429 or 503 answer to the upgrade): a reconnect
    /// waits at least this long, up to the policy's cap.
    pub retry_after: Option<Duration>,
}

/// Shows `retry_after` only when set, so the `Debug` text of every other error (which
/// transcripts compare) is what it was before the field existed.
impl std::fmt::Debug for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TransportError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(wait) = self.retry_after {
            d.field("retry_after", &wait);
        }
        d.finish()
    }
}

impl TransportError {
    /// A transport error.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error with the server's `Retry-After`, at most [`crate::MAX_TIMER`] (no
    /// policy waits longer).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait.min(crate::MAX_TIMER));
        self
    }
}

/// Input from the IO driver about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// The opening handshake completed. (Boxed, like the other rare large payloads, so
    /// that the events of every message stay small to move.)
    Opened(Box<Handshake>),
    /// Dialling or the handshake failed; the transport is gone.
    ConnectFailed(TransportError),
    /// A data message arrived.
    Message(Message),
    /// A ping arrived (the driver answers it; this only proves the peer is alive).
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The peer sent a close frame. The session does not answer a valid one: no
    /// [`Action::Close`] follows (a code the peer may not send, such as 1004 or 1006, is a
    /// protocol error, and a 1002 close frame is asked for, which a transport that has
    /// answered already may drop), so the driver's transport must send the reply close
    /// frame itself (echoing
    /// the peer's code, RFC 6455 §5.5.1), flush it, and then report `Closed` when the
    /// transport is gone. tungstenite queues that reply by itself when it reads the close
    /// frame; the driver only has to keep flushing. A message being written goes out
    /// before the reply, also when the peer's TCP ends meanwhile; report
    /// [`Self::CloseWritten`] once the reply is on the socket. If the transport fails
    /// before the reply is out, report `Error`: the close is then not clean (RFC 6455
    /// §7.1.4); once both close frames were exchanged, a failure is only the end
    /// (`Closed`). The same holds after our own close frame: an `Error` after the peer's
    /// close frame means ours did not go out.
    PeerClosed(PeerClose),
    /// The driver wrote (flushed to the socket) the message of this send.
    SendWritten(SendId),
    /// The driver wrote (flushed to the socket) our close frame: the one of
    /// [`Action::Close`], or the reply to the peer's ([`Self::PeerClosed`]). Once both close
    /// frames went, the session gives the server a short linger
    /// ([`crate::close::CLOSE_LINGER`]) to close TCP and then ends the connection cleanly
    /// itself; until then, only the close timeout bounds the close, and a close timeout
    /// with the peer's close frame read but ours not written ends it not clean (RFC 6455
    /// §7.1.4). Report it once, after the flush that got the frame out (not for the close
    /// frame a driver sends itself after a read error: the connection has failed then).
    /// A driver that never reports it has every close the peer began end by the close
    /// timeout, not clean, when the server keeps TCP open.
    CloseWritten,
    /// The transport failed; it will be dropped, and `Closed` follows or is implied.
    Error(TransportError),
    /// The transport is fully closed (TCP gone).
    Closed,
    /// Bytes arrived on an open connection that complete nothing yet (part of a large
    /// frame still coming): the peer is alive. Like a message, it restarts keepalive's
    /// idle interval and the acknowledgement timeout's wait (a pong waits behind the rest
    /// of the frame). A driver reports it at most once per read that produced no other
    /// input. One that never reports it lets keepalive end a connection whose peer sends
    /// one message more slowly than the keepalive timeout allows.
    Receiving,
    /// Frames waiting for a full socket moved on: the socket, which had taken no more,
    /// took some (so the peer's TCP acknowledged what it held). A ping of ours waits
    /// behind those frames, so this restarts keepalive's idle interval and the
    /// acknowledgement timeout's wait, as [`Self::Receiving`] does for the other direction:
    /// a large message going out over a slow link is not taken for a dead peer. A driver
    /// reports it at most once per flush. Optional: one that never reports it lets those
    /// timers end a connection whose own upload takes longer than they allow.
    Sending,
    /// The dial entered this stage (reported as it moves on): a handshake timeout then says
    /// where the dial stood ([`crate::ConnectionError::HandshakeTimeout`]). Optional: a
    /// driver that never reports it gets the timeout without the stage.
    Dialing(DialStage),
}

/// Where a dial stands, as a driver reports it with [`TransportEvent::Dialing`]. The
/// stages come in this order; a dial without a proxy has no `Tunnel`, one to `ws://` no
/// `Tls`.
///
/// ```
/// use wxsocket_core::DialStage;
/// assert_eq!(DialStage::Connecting.to_string(), "no TCP connection yet");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DialStage {
    /// Resolving the host name (of the server, or of the proxy).
    Resolving,
    /// Connecting TCP to one of the addresses (the server's, or the proxy's).
    Connecting,
    /// Connected to a proxy (HTTP or SOCKS5); its tunnel is not open yet.
    Tunnel,
    /// In the TLS handshake with the server.
    Tls,
    /// The upgrade request is going out; the server's answer has not come.
    Upgrade,
}

impl DialStage {
    /// The stage's name in transcripts: `resolving`, `connecting`, `tunnel`, `tls`,
    /// `upgrade`.
    pub fn as_str(self) -> &'static str {
        match self {
            DialStage::Resolving => "resolving",
            DialStage::Connecting => "connecting",
            DialStage::Tunnel => "tunnel",
            DialStage::Tls => "tls",
            DialStage::Upgrade => "upgrade",
        }
    }

    /// The stage named `name` ([`Self::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            DialStage::Resolving,
            DialStage::Connecting,
            DialStage::Tunnel,
            DialStage::Tls,
            DialStage::Upgrade,
        ]
        .into_iter()
        .find(|stage| stage.as_str() == name)
    }
}

impl std::fmt::Display for DialStage {
    /// What had not happened when the dial timed out in this stage.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DialStage::Resolving => "the host name was still being resolved",
            DialStage::Connecting => "no TCP connection yet",
            DialStage::Tunnel => "the proxy had not opened its tunnel",
            DialStage::Tls => "the TLS handshake had not finished",
            DialStage::Upgrade => "the server's answer to the upgrade request had not come in full",
        })
    }
}

/// Work for the IO driver. Drain with [`Session::poll_action`](crate::Session::poll_action)
/// after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum Action {
    /// Open a transport and run the opening handshake with this request.
    Dial {
        /// The new connection.
        conn: ConnId,
        /// The complete, validated request.
        request: Arc<HandshakeRequest>,
    },
    /// Write this message, then report [`TransportEvent::SendWritten`].
    Send {
        /// The connection.
        conn: ConnId,
        /// The send to confirm.
        id: SendId,
        /// The payload.
        message: Message,
    },
    /// Send a ping.
    Ping {
        /// The connection.
        conn: ConnId,
        /// The ping payload.
        payload: Bytes,
    },
    /// Send a close frame and finish the close handshake; report
    /// [`TransportEvent::CloseWritten`] once the frame is on the socket, and `Closed` when the
    /// transport is gone. Only for a close this side starts (the application's, a timeout's,
    /// a failure's): a close the peer starts ([`TransportEvent::PeerClosed`]) gets no
    /// `Close` action, and the driver's transport sends the reply frame itself.
    Close {
        /// The connection.
        conn: ConnId,
        /// Code and reason for the close frame.
        frame: CloseRequest,
    },
    /// Drop the transport (or cancel the dial) now, without a handshake. The session has
    /// already ended the connection: report nothing more for it (a `Closed` after this is
    /// harmless, counted in [`crate::Stats::stale_inputs`]).
    Abort {
        /// The connection.
        conn: ConnId,
    },
    /// Reading this connection was paused (its [`ReadCredit`](crate::ReadCredit) was used up)
    /// and may go on: ask for the credit again and read. Harmless when not paused.
    ResumeReading {
        /// The connection.
        conn: ConnId,
    },
}

impl Action {
    /// The connection this action is for.
    pub fn conn(&self) -> ConnId {
        match self {
            Action::Dial { conn, .. }
            | Action::Send { conn, .. }
            | Action::Ping { conn, .. }
            | Action::Close { conn, .. }
            | Action::Abort { conn }
            | Action::ResumeReading { conn } => *conn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_sends_a_close_frame_only_with_a_code_to_send() {
        for kind in [
            TransportErrorKind::Protocol,
            TransportErrorKind::MessageTooBig,
        ] {
            assert!(kind.sends_close_frame(), "{kind:?}");
        }
        for kind in [TransportErrorKind::Io, TransportErrorKind::Connect] {
            assert!(!kind.sends_close_frame(), "{kind:?}");
        }
    }

    #[test]
    fn the_builders_set_what_they_name() {
        let h = Handshake::default().with_extensions(Some("permessage-deflate".into()));
        assert_eq!(h.extensions.as_deref(), Some("permessage-deflate"));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-a", "1".parse().unwrap());
        assert_eq!(
            Handshake::default().with_headers(headers.clone()).headers,
            headers
        );
    }
}
