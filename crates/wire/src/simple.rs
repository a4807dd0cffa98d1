//! What the adapters' simple path (`connect`, `WebSocket`) reports, defined once for both:
//! one error type for everything a call can end in, and how a connection closed.

use crate::client::SendFailed;
use wxsocket_core::{
    CloseError, ConfigError, ConnectError, ConnectionError, Event, PingError, SendError,
    SendFailure,
};

/// How a connection ended: the close event's code, reason and whether the close handshake
/// completed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Closed {
    /// The peer's code (1000 for a normal close; 1005 when its frame had none; 1006 when
    /// there was no close handshake).
    pub code: u16,
    /// The peer's reason, or a description of why the connection ended.
    pub reason: String,
    /// Whether both close frames were exchanged.
    pub clean: bool,
}

impl Closed {
    /// A close with this code, reason and handshake outcome.
    pub fn new(code: u16, reason: impl Into<String>, clean: bool) -> Self {
        Self {
            code,
            reason: reason.into(),
            clean,
        }
    }

    /// The `Closed` of a close event (`None` for any other event).
    pub fn of(event: &Event) -> Option<Closed> {
        match event {
            Event::Close {
                code,
                reason,
                clean,
                ..
            } => Some(Closed {
                code: *code,
                reason: reason.clone(),
                clean: *clean,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.code, self.reason)?;
        if !self.clean {
            f.write_str(" (no close handshake)")?;
        }
        Ok(())
    }
}

/// Everything a call of the simple path can end in, so `?` works and one `match` covers
/// it: [`kind`](Self::kind) says which part failed, and each `Display` says what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was invalid (the field is named); nothing was dialled.
    #[error("invalid configuration: {0} (fix that field; nothing was dialled)")]
    Config(#[from] ConfigError),
    /// The connect options were invalid (the field is named); nothing was dialled.
    #[error("invalid connect options: {0} (fix that option; nothing was dialled)")]
    Options(#[from] ConnectError),
    /// A close code or reason was invalid (1000 or 3000–4999; at most 123 bytes).
    #[error("invalid close: {0}")]
    Close(#[from] CloseError),
    /// A ping was refused (not open, payload over 125 bytes, too many waiting).
    #[error("ping refused: {0}")]
    Ping(#[from] PingError),
    /// The connection failed: it never opened (DNS, TCP, TLS, the HTTP upgrade, the
    /// handshake timeout), or it failed while open (protocol error, keepalive, I/O).
    #[error("connection failed: {0} (connect again, or use a reconnect policy)")]
    Connection(ConnectionError),
    /// The connection is closed (by the peer, or by this side): nothing more can be sent.
    #[error("connection closed: {0} (connect again to go on)")]
    Closed(Closed),
    /// A send was refused at once (the message is in the error) or accepted but never
    /// written.
    #[error("send failed: {0} (the message was not confirmed written)")]
    Send(#[from] SendFailed),
}

/// Which part of the simple path an [`Error`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Fix the configuration or the options: retrying the same call fails the same way.
    Invalid,
    /// The network or the peer: a new connection may succeed.
    Connection,
    /// The connection is closed; connect again to go on.
    Closed,
    /// A send was refused for lack of room (`try_send`); it may succeed later.
    Full,
    /// A send failed for another reason (the connection went away while it waited).
    Send,
}

impl Error {
    /// Which part failed, for a `match` that does not care about the details.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::Options(_) | Error::Close(_) => ErrorKind::Invalid,
            Error::Connection(_) => ErrorKind::Connection,
            Error::Closed(_) | Error::Ping(PingError::NotOpen) => ErrorKind::Closed,
            Error::Ping(PingError::Full) => ErrorKind::Full,
            Error::Ping(_) => ErrorKind::Invalid,
            Error::Send(SendFailed::Refused(e)) if e.is_full() => ErrorKind::Full,
            Error::Send(SendFailed::Refused(
                SendError::NotConnected(_) | SendError::Closing(_),
            )) => ErrorKind::Closed,
            Error::Send(SendFailed::Refused(SendError::TooLarge { .. })) => ErrorKind::Invalid,
            Error::Send(SendFailed::Failed(
                SendFailure::ConnectionLost | SendFailure::ConnectFailed,
            )) => ErrorKind::Connection,
            Error::Send(_) => ErrorKind::Send,
        }
    }
}
