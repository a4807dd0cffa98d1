//! Errors. Caller misuse is returned from the call that made it ([`ConnectError`],
//! [`SendError`], [`CloseError`], [`ConfigError`]); faults of a connection arrive later as
//! events ([`ConnectionError`], [`SendFailure`]).

use crate::ids::SendId;
use crate::message::Message;
use crate::transport::{DialStage, TransportError};
use std::time::Duration;

/// A connect call was rejected before anything was dialled. Each variant names the option
/// at fault, and its message starts with that option's name (or, for a call that cannot be
/// made now, such as `ShutDown`, with the call's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `url` is not a URL.
    #[error("url: invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it did not parse.
        reason: String,
    },
    /// `url` has a scheme other than ws, wss, http or https.
    #[error("url: unsupported scheme {scheme:?} (expected ws, wss, http or https)")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// `url` has a fragment, which a WebSocket URL may not have.
    #[error("url: a WebSocket URL may not have a fragment")]
    FragmentInUrl,
    /// `require_tls` is on and the URL is not `wss`.
    #[error("url: TLS is required but {url:?} is not a wss URL")]
    TlsRequired {
        /// The URL as given.
        url: String,
    },
    /// `allowed_hosts` is set and the URL's host is not on it (WeChat's "legal domains").
    #[error("url: host {host:?} is not on the allow-list")]
    HostNotAllowed {
        /// The host of the URL.
        host: String,
    },
    /// An `allowed_hosts` entry is no host name or address (a scheme, a port, a path, a
    /// space, a wildcard other than a first `*.`): it could never match.
    #[error("allowed_hosts: {entry:?} {reason}")]
    InvalidAllowedHost {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `header` name is not a valid HTTP field name.
    #[error("header: invalid header name {name:?}")]
    InvalidHeaderName {
        /// The name as given.
        name: String,
    },
    /// A `header` value contains CR, LF, NUL or another forbidden byte.
    #[error(
        "header: invalid value for header {name:?} (control characters such as CR/LF are not allowed)"
    )]
    InvalidHeaderValue {
        /// The header's name.
        name: String,
    },
    /// A `header` the application may not set: `Referer` (as WeChat's API forbids) or one the
    /// handshake owns.
    #[error("header: {name:?} may not be set ({why})")]
    ForbiddenHeader {
        /// The header's name.
        name: String,
        /// Why it is forbidden.
        why: &'static str,
    },
    /// A `protocols` entry is not an HTTP token.
    #[error("protocols: {protocol:?} is not a valid sub-protocol token")]
    InvalidProtocol {
        /// The entry as given.
        protocol: String,
    },
    /// A `protocols` entry appears twice.
    #[error("protocols: {protocol:?} is listed more than once")]
    DuplicateProtocol {
        /// The repeated entry.
        protocol: String,
    },
    /// `method` is not GET (RFC 6455 §4.1 requires GET).
    #[error("method: a WebSocket handshake must use GET, not {method:?}")]
    UnsupportedMethod {
        /// The method as given.
        method: String,
    },
    /// A `perMessageDeflate` parameter is out of range (a window size outside 8–15, a
    /// compression level above 9).
    #[error("perMessageDeflate: {field}={value} is not {allowed}")]
    InvalidDeflate {
        /// The parameter at fault.
        field: &'static str,
        /// The value given.
        value: u32,
        /// What it may be.
        allowed: &'static str,
    },
    /// `timeout` is zero or longer than [`crate::MAX_TIMER`] (24 hours).
    #[error("timeout: must be greater than zero and at most 24 hours")]
    InvalidTimeout,
    /// `proxy` is not a proxy URL this client can use (`http://`, `socks5://`, `socks5h://`). The reason never repeats
    /// the URL (it may hold a password).
    #[error("proxy: {reason}")]
    InvalidProxy {
        /// What is wrong.
        reason: String,
    },
    /// The proxy the environment gives the URL (a variable such as `https_proxy` or
    /// `all_proxy`, read when the client was created) is not a proxy URL this client can use
    /// (`http://`, `socks5://`, `socks5h://`): every dial would fail the same way. The reason never repeats the
    /// value (it may hold a password).
    #[error(
        "{variable} (from the environment): {reason}; unset it, exempt the host in no_proxy, \
         or choose the connection's proxy in its options"
    )]
    ProxyEnvironment {
        /// The variable, as it is spelt in the environment.
        variable: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// An option this IO driver cannot honour (checked before any IO).
    #[error("{option}: {why}")]
    Unsupported {
        /// The option.
        option: &'static str,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// The machine was shut down ([`Session::shutdown`](crate::Session::shutdown)): it makes no new
    /// connections.
    #[error("connect: the socket was shut down")]
    ShutDown,
    /// [`Session::reconnect_with`](crate::Session::reconnect_with) with no connection to
    /// reconnect (none was made, or the last has ended for good): `connect` instead.
    #[error("reconnect_with: there is no connection to reconnect (connect instead)")]
    NoConnection,
    /// A [`Pool`](crate::Pool) already holds its limit of live connections.
    #[error("connect: too many connections (the limit is {limit})")]
    TooManyConnections {
        /// The pool's limit.
        limit: usize,
    },
}

/// A send call was refused. The message is handed back, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No connection exists (Idle or Closed).
    #[error("WebSocket is not connected")]
    NotConnected(Message),
    /// The connection is closing (when the peer began the close with a code the reconnect
    /// policy retries, sends are queued for the next connection instead).
    #[error("WebSocket is closing")]
    Closing(Message),
    /// Connecting, and the outbound queue is at its message-count or byte bound.
    #[error("outbound queue is full")]
    QueueFull(Message),
    /// Open, and the bytes accepted but not yet written would exceed the buffer bound.
    #[error("send buffer is full")]
    BufferFull(Message),
    /// The application has not taken `max_untaken_completions` send completions yet; a
    /// send is accepted again once it takes some of its events.
    #[error("too many send completions not yet taken by the application")]
    CompletionsFull(Message),
    /// The message is larger than the configured maximum message size.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The message handed back.
        message: Message,
        /// Its size.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

impl SendError {
    /// Whether the refusal is for lack of room (queue, buffer or untaken completions): a
    /// send that waits for room retries it; any other refusal is final.
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            SendError::QueueFull(_) | SendError::BufferFull(_) | SendError::CompletionsFull(_)
        )
    }

    /// Takes back the message that was not accepted.
    pub fn into_message(self) -> Message {
        match self {
            SendError::NotConnected(m)
            | SendError::Closing(m)
            | SendError::QueueFull(m)
            | SendError::BufferFull(m)
            | SendError::CompletionsFull(m)
            | SendError::TooLarge { message: m, .. } => m,
        }
    }
}

/// A ping was refused; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The connection is not open: closing, closed, or never connected.
    #[error("WebSocket is not open")]
    NotOpen,
    /// The connection is not open yet: its dial is in progress, or a reconnect policy is
    /// dialling again after a drop. Unlike [`PingError::NotOpen`] this passes: ping again
    /// once it has opened.
    #[error("WebSocket is not open yet (connecting)")]
    NotOpenYet,
    /// A ping's payload is at most 125 bytes (RFC 6455 §5.5).
    #[error("ping payload of {len} bytes exceeds 125 bytes")]
    TooLong {
        /// The payload's size.
        len: usize,
    },
    /// `MAX_PINGS` pings are already waiting for their pong, or the application has not
    /// taken its completions and pongs (`max_untaken_completions`).
    #[error("too many pings waiting for a pong")]
    Full,
    /// Delivery acknowledgement is on and the payload begins with `wxsocket-ack `, the
    /// prefix of its own pings: a pong answering the application's ping would look like
    /// the answer to one of them and acknowledge messages the peer may not have read.
    #[error("ping payloads beginning with \"wxsocket-ack \" are delivery acknowledgement's own")]
    Reserved,
}

/// A close call was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// No connection exists (Idle or Closed).
    #[error("WebSocket is not connected")]
    NotConnected,
    /// Connecting under the `Ignore` close-before-open policy (the race WeChat's
    /// documentation describes).
    #[error("WebSocket is not open yet; close is ignored until open")]
    NotOpenYet,
    /// The code is not 1000 or 3000–4999.
    #[error("code: {0} is not allowed (use 1000 or 3000-4999)")]
    InvalidCode(u16),
    /// The reason is longer than 123 UTF-8 bytes.
    #[error("reason: {0} bytes is longer than the 123 allowed")]
    ReasonTooLong(usize),
}

/// A [`crate::SessionConfig`] value is out of range. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl ConfigError {
    /// The value of `field` is wrong, for the reason `problem` (a driver's own checks of a
    /// configuration it extends, named as the core names its own).
    pub fn new(field: &'static str, problem: &'static str) -> Self {
        Self { field, problem }
    }
}

/// Why a connection failed or ended abnormally; delivered in [`crate::Event::Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The dial and the opening handshake did not finish within the timeout.
    #[error("handshake timed out after {after:?}{}", stage_suffix(*.stage))]
    #[non_exhaustive]
    HandshakeTimeout {
        /// The timeout.
        after: Duration,
        /// Where the dial stood, when the driver reported it
        /// ([`TransportEvent::Dialing`](crate::TransportEvent::Dialing)).
        stage: Option<DialStage>,
    },
    /// Dialling or the handshake failed.
    #[error("connect failed: {0}")]
    ConnectFailed(TransportError),
    /// The server chose a sub-protocol the client did not offer.
    #[error("server selected sub-protocol {0:?}, which was not offered")]
    ProtocolNotOffered(String),
    /// The driver reported permessage-deflate in force on a connection that did not offer it.
    #[error("server accepted permessage-deflate, which was not offered")]
    DeflateNotOffered,
    /// The transport failed while open or closing.
    #[error("{0}")]
    Transport(TransportError),
    /// Nothing arrived within the keepalive pong timeout.
    #[error("no pong within {0:?}; peer considered dead")]
    KeepaliveTimeout(Duration),
    /// The close handshake did not finish within the close timeout.
    #[error("close handshake timed out after {0:?}")]
    CloseTimeout(Duration),
    /// Delivery acknowledgement is on and no pong answered a ping covering unacknowledged
    /// messages within this timeout ([`crate::Acknowledgement::timeout`]); the peer is
    /// considered dead.
    #[error("no pong acknowledged the messages sent within {0:?}; peer considered dead")]
    AckTimeout(Duration),
}

/// The end of a handshake timeout's message: where the dial stood, when known.
fn stage_suffix(stage: Option<DialStage>) -> String {
    stage.map_or_else(String::new, |stage| format!(": {stage}"))
}

/// Why an accepted message was not written; delivered in [`crate::Event::SendFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The application closed (or shut down) the socket before the message was handed to
    /// the driver: before the connection opened (`Abort` policy), or while it waited for a
    /// reconnect.
    #[error("cancelled: the socket was closed before the message was sent")]
    Cancelled,
    /// A new `connect` replaced the connection.
    #[error("the socket was replaced by a new connection")]
    Replaced,
    /// The connection never opened (dial, handshake or timeout failure).
    #[error("the connection could not be established")]
    ConnectFailed,
    /// The connection ended before the message was confirmed written.
    #[error("the connection was lost before the message was written")]
    ConnectionLost,
    /// Delivery acknowledgement is on: the connection ended after the message was handed to
    /// the driver and before the peer acknowledged it, and it is not being sent again (or,
    /// carried to the next connection to be sent again, it failed there, before it was
    /// acknowledged: whatever ended that connection). It may or may not have arrived; the
    /// message is handed back.
    #[error(
        "the connection was lost before the peer acknowledged the message: it may or may not have arrived"
    )]
    MaybeDelivered,
}

/// An accepted send that failed, as a driver that waits for it sees it
/// ([`Completion`](crate::Completion)): why, which send, and the message when it never left
/// the session (as in [`crate::Event::SendFailed`], whose message this is a copy of), so
/// whoever waited for the send gets it back too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
#[non_exhaustive]
pub struct FailedSend {
    /// Why it failed.
    pub reason: SendFailure,
    /// The message, when it was never handed to the driver (queued, or failed before it
    /// was written) or, with delivery acknowledgement, never acknowledged; `None` once the
    /// driver had it and might have written part of it.
    pub message: Option<Message>,
    /// The send's id, as in its [`crate::Event::SendFailed`]: a caller that waited for the
    /// send and also reads the events can tell that event reports this same failure.
    /// `None` where the failure is not one send's (a `Sink`'s flush, which waits for
    /// several).
    pub id: Option<SendId>,
}

impl FailedSend {
    /// A failed send's outcome, not tied to a send's id ([`Self::with_id`] ties it).
    pub fn new(reason: SendFailure, message: Option<Message>) -> Self {
        FailedSend {
            reason,
            message,
            id: None,
        }
    }

    /// The same outcome, for the send `id`.
    pub fn with_id(self, id: SendId) -> Self {
        FailedSend {
            id: Some(id),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_for_room_is_worth_waiting_for() {
        let m = || Message::text("x");
        for full in [
            SendError::QueueFull(m()),
            SendError::BufferFull(m()),
            SendError::CompletionsFull(m()),
        ] {
            assert!(full.is_full(), "{full:?}");
        }
        let too_large = SendError::TooLarge {
            message: m(),
            len: 2,
            max: 1,
        };
        for last in [
            SendError::NotConnected(m()),
            SendError::Closing(m()),
            too_large,
        ] {
            assert!(!last.is_full(), "{last:?}");
        }
    }
}
