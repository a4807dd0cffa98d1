//! What the session tells the application. Drain with [`crate::Session::poll_event`].

use crate::close::PeerClose;
use crate::error::{ConnectionError, SendFailure};
use crate::ids::{ConnId, SendId};
use crate::message::Message;
use crate::transport::Handshake;
use std::fmt;
use std::sync::Arc;
use url::Url;

/// An application event. For one connection the order is: `Reconnecting` (only for a
/// reconnect attempt), `Connecting`, then `Open`
/// (unless it failed), messages and send completions, at most one `Error`, the
/// `SendFailed` of every send still pending when it ended, exactly one `Close`. Every
/// event of connection N comes before any event of connection N+1.
///
/// The enum is `#[non_exhaustive]`, and so is every variant: match them with `..`
/// (`Event::Open { handshake, .. }`, `Event::Close { code, .. }`), so that a field added
/// later (as [`Handshake::profile`] was) breaks no one. Outside this crate, events are
/// built with [`Event::message`], [`Event::close`] and their siblings.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A dial started.
    #[non_exhaustive]
    Connecting {
        /// The new connection.
        conn: ConnId,
        /// The URL dialled (with `data` in the query). Behind a pointer, as is the
        /// handshake of `Open`: an event is moved several times on its way to the
        /// application, and these rare variants would otherwise make every message's event
        /// 160 bytes. Shared: every attempt of one request, reconnections included, carries
        /// the same URL rather than a copy each.
        url: Arc<Url>,
    },
    /// The handshake completed (`onSocketOpen`).
    #[non_exhaustive]
    Open {
        /// The connection.
        conn: ConnId,
        /// What the server answered (negotiated protocol, headers, extensions) and the
        /// dial's timing ([`Handshake::profile`]).
        handshake: Box<Handshake>,
    },
    /// A message arrived (`onSocketMessage`).
    #[non_exhaustive]
    Message {
        /// The connection.
        conn: ConnId,
        /// The message.
        message: Message,
    },
    /// A send was written to the socket (`sendSocketMessage` success).
    #[non_exhaustive]
    SendCompleted {
        /// The connection.
        conn: ConnId,
        /// The send.
        id: SendId,
    },
    /// With delivery acknowledgement on ([`crate::Acknowledgement`]): the peer acknowledged
    /// the send (a pong answering a barrier ping of the session's sent after it, each with a
    /// payload of its own; the application's and keepalive's pings acknowledge nothing; a
    /// close this side begins sends a barrier before its close frame, and the peer's close
    /// frame alone acknowledges nothing). In that mode it replaces `SendCompleted` as the
    /// send's one successful outcome (`sendSocketMessage` success), and like it is not
    /// queued with [`crate::SessionConfig::send_completions`] off. Match it with `..`:
    /// fields may be added.
    #[non_exhaustive]
    SendDelivered {
        /// The connection that delivered it (for a resent message, not the one it was
        /// first sent on).
        conn: ConnId,
        /// The send.
        id: SendId,
        /// The message was sent again after a connection dropped before acknowledging it:
        /// the peer may have received it twice.
        duplicate: bool,
    },
    /// A send will never be confirmed written (`sendSocketMessage` fail); with delivery
    /// acknowledgement on, never acknowledged.
    #[non_exhaustive]
    SendFailed {
        /// The connection.
        conn: ConnId,
        /// The send.
        id: SendId,
        /// Why.
        reason: SendFailure,
        /// The message, handed back when it never left the session (it was still queued);
        /// `None` when it had been handed to the driver, which may have written part or
        /// all of it, so resending it could duplicate it. With delivery acknowledgement on,
        /// a message never acknowledged is handed back whatever the driver did with it
        /// ([`SendFailure::MaybeDelivered`]: it may or may not have arrived).
        message: Option<Message>,
    },
    /// The connection failed (`onSocketError`). A `Close` always follows.
    #[non_exhaustive]
    Error {
        /// The connection.
        conn: ConnId,
        /// What went wrong.
        error: ConnectionError,
    },
    /// The previous connection ended and the reconnect policy will dial again after
    /// `delay`, as connection `conn` (its `Connecting` event follows when the delay is over).
    #[non_exhaustive]
    Reconnecting {
        /// The connection the next attempt will be.
        conn: ConnId,
        /// Consecutive attempt number, from 1.
        attempt: u32,
        /// The backoff before the dial.
        delay: std::time::Duration,
        /// Why the previous connection ended.
        last_error: String,
        /// Attempts before this one that the application was never told of: each ended
        /// while [`RECONNECT_HOLD_NOTICES`](crate::RECONNECT_HOLD_NOTICES) notices or more
        /// waited untaken, with nothing to report but its own notices (its dial failed, or
        /// it opened and dropped with no message, send outcome event or pong: a send that
        /// settled without one, `send_completions` off, tells nothing), and was folded
        /// into this count rather than queued. 0 for an application that takes its events.
        /// They count in `attempt` as any attempt does.
        unreported: u32,
        /// How many of the `unreported` attempts opened a connection before it dropped (the
        /// reconnections an application counting `Open` events missed).
        unreported_opened: u32,
    },
    /// The peer answered a ping the application sent (`Session::ping`) with this payload
    /// (a pong answering a later ping answers the earlier ones too, RFC 6455 §5.5.3).
    #[non_exhaustive]
    Pong {
        /// The connection.
        conn: ConnId,
        /// The pong's payload, as the ping's.
        payload: bytes::Bytes,
    },
    /// The connection ended (`onSocketClose`). Exactly one per connection.
    #[non_exhaustive]
    Close {
        /// The connection.
        conn: ConnId,
        /// The peer's code; 1005 when its close frame had none; 1006 when there was no
        /// close handshake; the failure code (1002, 1007, 1009) when the client failed it.
        code: u16,
        /// The peer's reason, or a description of why the connection ended.
        reason: String,
        /// Whether the close handshake completed.
        clean: bool,
    },
}

impl Event {
    /// The connection the event belongs to.
    pub fn conn(&self) -> ConnId {
        match self {
            Event::Connecting { conn, .. }
            | Event::Open { conn, .. }
            | Event::Message { conn, .. }
            | Event::SendCompleted { conn, .. }
            | Event::SendDelivered { conn, .. }
            | Event::SendFailed { conn, .. }
            | Event::Error { conn, .. }
            | Event::Close { conn, .. }
            | Event::Pong { conn, .. }
            | Event::Reconnecting { conn, .. } => *conn,
        }
    }

    /// A `Message` event, as the session reports one. Every variant is
    /// `#[non_exhaustive]` (fields may be added), so outside this crate events are built
    /// with these functions: for tests of the code that handles them, or a stand-in peer.
    ///
    /// ```
    /// # use wxsocket_core::{ConnId, Event, Message};
    /// let event = Event::message(ConnId::from_raw(1), Message::text("hi"));
    /// assert!(matches!(&event, Event::Message { message, .. } if message.as_text() == Some("hi")));
    /// ```
    pub fn message(conn: ConnId, message: Message) -> Event {
        Event::Message { conn, message }
    }

    /// A `Close` event (see [`Event::message`] for why these functions exist).
    pub fn close(conn: ConnId, code: u16, reason: impl Into<String>, clean: bool) -> Event {
        Event::Close {
            conn,
            code,
            reason: reason.into(),
            clean,
        }
    }

    /// An `Error` event (see [`Event::message`]).
    pub fn error(conn: ConnId, error: ConnectionError) -> Event {
        Event::Error { conn, error }
    }

    /// A `Pong` event (see [`Event::message`]).
    pub fn pong(conn: ConnId, payload: impl Into<bytes::Bytes>) -> Event {
        Event::Pong {
            conn,
            payload: payload.into(),
        }
    }

    /// A `Reconnecting` event (see [`Event::message`]).
    pub fn reconnecting(
        conn: ConnId,
        attempt: u32,
        delay: std::time::Duration,
        last_error: impl Into<String>,
    ) -> Event {
        Event::Reconnecting {
            conn,
            attempt,
            delay,
            last_error: last_error.into(),
            unreported: 0,
            unreported_opened: 0,
        }
    }

    /// This `Reconnecting` event with `attempts` folded into it, `opened` of them having
    /// opened (see [`Event::Reconnecting`]'s `unreported`); any other event unchanged.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use wxsocket_core::{ConnId, Event};
    /// let event = Event::reconnecting(ConnId::from_raw(9), 9, Duration::from_secs(1), "refused")
    ///     .with_unreported(7, 2);
    /// assert!(matches!(event, Event::Reconnecting { unreported: 7, unreported_opened: 2, .. }));
    /// ```
    pub fn with_unreported(mut self, attempts: u32, opened: u32) -> Event {
        if let Event::Reconnecting {
            unreported,
            unreported_opened,
            ..
        } = &mut self
        {
            *unreported = attempts;
            *unreported_opened = opened.min(attempts);
        }
        self
    }
}

/// Like the derived `Debug`, but a URL prints as the URL it is, not as its parsed parts.
impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connecting { conn, url } => f
                .debug_struct("Connecting")
                .field("conn", conn)
                .field("url", &url.as_str())
                .finish(),
            Event::Open { conn, handshake } => f
                .debug_struct("Open")
                .field("conn", conn)
                .field("handshake", handshake)
                .finish(),
            Event::Message { conn, message } => f
                .debug_struct("Message")
                .field("conn", conn)
                .field("message", message)
                .finish(),
            Event::SendCompleted { conn, id } => f
                .debug_struct("SendCompleted")
                .field("conn", conn)
                .field("id", id)
                .finish(),
            Event::SendDelivered {
                conn,
                id,
                duplicate,
            } => f
                .debug_struct("SendDelivered")
                .field("conn", conn)
                .field("id", id)
                .field("duplicate", duplicate)
                .finish(),
            Event::SendFailed {
                conn,
                id,
                reason,
                message,
            } => f
                .debug_struct("SendFailed")
                .field("conn", conn)
                .field("id", id)
                .field("reason", reason)
                .field("message", message)
                .finish(),
            Event::Error { conn, error } => f
                .debug_struct("Error")
                .field("conn", conn)
                .field("error", error)
                .finish(),
            Event::Reconnecting {
                conn,
                attempt,
                delay,
                last_error,
                unreported,
                unreported_opened,
            } => {
                let mut d = f.debug_struct("Reconnecting");
                d.field("conn", conn)
                    .field("attempt", attempt)
                    .field("delay", delay)
                    .field("last_error", last_error);
                // Only when there are some: transcripts recorded before these fields
                // existed replay unchanged.
                if *unreported != 0 {
                    d.field("unreported", unreported)
                        .field("unreported_opened", unreported_opened);
                }
                d.finish()
            }
            Event::Pong { conn, payload } => f
                .debug_struct("Pong")
                .field("conn", conn)
                .field("payload", payload)
                .finish(),
            Event::Close {
                conn,
                code,
                reason,
                clean,
            } => f
                .debug_struct("Close")
                .field("conn", conn)
                .field("code", code)
                .field("reason", reason)
                .field("clean", clean)
                .finish(),
        }
    }
}

/// One readable line: the connection, what happened, and its details.
///
/// ```
/// # use wxsocket_core::{ConnId, Event, Message};
/// let event = Event::message(ConnId::from_raw(1), Message::text("hi"));
/// assert_eq!(event.to_string(), "#1 message: hi");
/// let event = Event::close(ConnId::from_raw(1), 1000, "bye", true);
/// assert_eq!(event.to_string(), "#1 closed: 1000 \"bye\" (clean)");
/// ```
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conn = self.conn().get();
        match self {
            Event::Connecting { url, .. } => write!(f, "#{conn} connecting to {url}"),
            Event::Open { handshake, .. } => {
                write!(f, "#{conn} open")?;
                if let Some(p) = &handshake.protocol {
                    write!(f, ", protocol {p}")?;
                }
                if handshake.deflate.is_some() {
                    f.write_str(", permessage-deflate")?;
                }
                Ok(())
            }
            Event::Message { message, .. } => write!(f, "#{conn} message: {message}"),
            Event::SendCompleted { id, .. } => write!(f, "#{conn} send {id} written"),
            Event::SendDelivered { id, duplicate, .. } => {
                write!(f, "#{conn} send {id} delivered")?;
                if *duplicate {
                    f.write_str(" (resent: possibly a duplicate)")?;
                }
                Ok(())
            }
            Event::SendFailed { id, reason, .. } => write!(f, "#{conn} send {id} failed: {reason}"),
            Event::Error { error, .. } => write!(f, "#{conn} error: {error}"),
            Event::Pong { payload, .. } => write!(f, "#{conn} pong ({} bytes)", payload.len()),
            Event::Reconnecting {
                attempt,
                delay,
                last_error,
                unreported,
                unreported_opened,
                ..
            } => {
                write!(
                    f,
                    "#{conn} reconnecting (attempt {attempt}, in {delay:?}) after: {last_error}"
                )?;
                if *unreported != 0 {
                    write!(
                        f,
                        " ({unreported} attempts unreported while events were left untaken, \
                         {unreported_opened} of them opened)"
                    )?;
                }
                Ok(())
            }
            Event::Close {
                code,
                reason,
                clean,
                ..
            } => write!(
                f,
                "#{conn} closed: {code} {reason:?} ({})",
                if *clean { "clean" } else { "not clean" }
            ),
        }
    }
}

impl PeerClose {
    /// The code a close event reports for this frame (1005 when none).
    pub fn reported_code(&self) -> u16 {
        self.code.unwrap_or(crate::close::NO_STATUS)
    }
}
