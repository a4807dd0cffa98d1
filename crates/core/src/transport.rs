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

/// What the server answered in a successful handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The sub-protocol the server selected, if any.
    pub protocol: Option<String>,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The `Sec-WebSocket-Extensions` the server accepted, as sent (empty when none).
    pub extensions: Option<String>,
    /// The permessage-deflate parameters in force, when compression was negotiated.
    pub deflate: Option<DeflateParams>,
}

/// The kind of a [`TransportError`]; decides the close code reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Name resolution or TCP connect failed.
    Connect,
    /// TLS failed (certificate, handshake).
    Tls,
    /// The server answered the upgrade with this HTTP status instead of 101.
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// A readable description from the IO layer.
    pub message: String,
}

impl TransportError {
    /// A transport error.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
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
    /// The peer sent a close frame.
    PeerClosed(PeerClose),
    /// The driver wrote (flushed to the socket) the message of this send.
    SendWritten(SendId),
    /// The transport failed; it will be dropped, and `Closed` follows or is implied.
    Error(TransportError),
    /// The transport is fully closed (TCP gone).
    Closed,
}

/// Work for the IO driver. Drain with [`crate::Session::poll_action`] after every input.
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
    /// Send a close frame and finish the close handshake; report `Closed` when the
    /// transport is gone.
    Close {
        /// The connection.
        conn: ConnId,
        /// Code and reason for the close frame.
        frame: CloseRequest,
    },
    /// Drop the transport (or cancel the dial) now, without a handshake.
    Abort {
        /// The connection.
        conn: ConnId,
    },
    /// Reading this connection was paused (its [`crate::ReadCredit`] was used up) and may
    /// go on: ask for the credit again and read. Harmless when not paused.
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
