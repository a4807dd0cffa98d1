//! The adapters' simple path (`connect`, `WebSocket`), defined once for both: one error
//! type for everything a call can end in, how a connection closed, and the two small
//! machines that turn the event model into it ([`Opening`] waits for the first open,
//! [`Lifecycle`] follows a `WebSocket`'s stream of messages to the final close).

use crate::client::{SendFailed, StartError};
use bytes::Bytes;
use wxsocket_core::{
    CloseError, ConfigError, ConnectError, ConnectionError, Event, Handshake, Message, PingError,
    ReadyState, SendError, SendFailure, TransportErrorKind,
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

    /// The close reported when the client's driver ended without a close event (its
    /// runtime shut down).
    pub fn driver_gone() -> Self {
        Self::new(1006, "the client's driver has ended", false)
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
    #[error("invalid configuration: {0} (nothing was dialled)")]
    Config(#[from] ConfigError),
    /// The operating system refused what the client needs to start (a poller, a thread:
    /// the process is out of open files or threads); nothing was dialled.
    #[error("cannot start: {0} (nothing was dialled; try again once the process has freed some)")]
    Start(StartError),
    /// The connect options were invalid (the field is named); nothing was dialled.
    #[error("{}", options_message(.0))]
    Options(#[from] ConnectError),
    /// A close code or reason was invalid (1000 or 3000–4999; at most 123 bytes).
    #[error("invalid close: {0}")]
    Close(#[from] CloseError),
    /// A ping was refused (not open, not open yet while a reconnect policy dials again,
    /// payload over 125 bytes, too many waiting).
    #[error("ping refused: {0}")]
    Ping(#[from] PingError),
    /// The connection failed: it never opened (DNS, TCP, TLS, the HTTP upgrade, the
    /// handshake timeout), or it failed while open (protocol error, keepalive, I/O).
    #[error("connection failed: {} ({hint})", failure(.0), hint = connection_hint(.0))]
    Connection(ConnectionError),
    /// The connection is closed (by the peer, or by this side): nothing more can be sent.
    #[error("connection closed: {0} (connect again to go on)")]
    Closed(Closed),
    /// A send was refused at once (the message is in the error) or accepted but never
    /// written.
    #[error("send failed: {0} ({hint})", hint = send_hint(.0))]
    Send(#[from] SendFailed),
}

impl From<StartError> for Error {
    /// A configuration error stays one ([`Error::Config`]); the OS's refusal is
    /// [`Error::Start`].
    fn from(error: StartError) -> Self {
        match error {
            StartError::Config(config) => Error::Config(config),
            other => Error::Start(other),
        }
    }
}

/// Whether the server refused the connection in a way that the same request meets again:
/// an HTTP 4xx answer to the upgrade (but 429, "too many requests": later it may not), a
/// permanent redirect (301, 308; redirects are not followed), an extension or
/// sub-protocol it would not agree to, or a SOCKS5 proxy's refusal of the client. A reconnect policy does not retry these (4xx unless
/// told to).
fn refused(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::ConnectFailed(e) => match e.kind {
            TransportErrorKind::HttpStatus(301 | 308) => true,
            TransportErrorKind::HttpStatus(status) => (400..500).contains(&status) && status != 429,
            TransportErrorKind::Negotiation => true,
            // A SOCKS5 proxy refusing this client (credentials, its rules).
            TransportErrorKind::ProxyRefused => true,
            _ => false,
        },
        ConnectionError::ProtocolNotOffered(_) | ConnectionError::DeflateNotOffered => true,
        _ => false,
    }
}

/// Refused connect options; a proxy variable of the environment is no option to fix.
fn options_message(error: &ConnectError) -> String {
    match error {
        ConnectError::ProxyEnvironment { .. } => {
            format!("cannot connect: {error} (nothing was dialled)")
        }
        _ => format!("invalid connect options: {error} (fix that option; nothing was dialled)"),
    }
}

/// What failed, without the core's "connect failed: " after "connection failed: ".
fn failure(error: &ConnectionError) -> &dyn std::fmt::Display {
    match error {
        ConnectionError::ConnectFailed(e) => e,
        other => other,
    }
}

fn connection_hint(error: &ConnectionError) -> &'static str {
    if refused(error) {
        // The message says whether the server or a proxy on the way answered.
        "refused: the same request fails the same way until it, the server or the proxy changes"
    } else if matches!(error, ConnectionError::ConnectFailed(e) if e.kind == TransportErrorKind::Tls)
    {
        // A certificate the roots do not vouch for fails again too, unless what answered
        // changes (a captive portal, a certificate being replaced), which is why a reconnect
        // policy still retries it.
        "check the server's certificate and the trusted roots; connecting again helps only if the server's answer changes"
    } else {
        "connect again, or use a reconnect policy"
    }
}

fn send_hint(failed: &SendFailed) -> &'static str {
    match failed {
        SendFailed::Refused(_) => "not sent; the message is handed back",
        SendFailed::Failed(_) => "the message was not confirmed written",
    }
}

/// Which part of the simple path an [`Error`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Fix the configuration or the options: retrying the same call fails the same way.
    Invalid,
    /// The network or the peer: a new connection may succeed. Also a ping while a
    /// reconnect policy is dialling again ([`PingError::NotOpenYet`]): ping again once it
    /// has opened.
    Connection,
    /// The server refused the connection (an HTTP 4xx answer to the upgrade but 429, a
    /// permanent redirect (301, 308), which is not followed, or an extension or
    /// sub-protocol it would not agree to), or a proxy refused the client (an HTTP proxy's
    /// 4xx, a SOCKS5 proxy's [`TransportErrorKind::ProxyRefused`]): the same request fails
    /// the same way until it, the server or the proxy changes. A reconnect policy does not
    /// retry it (a 4xx or a SOCKS5 refusal only with `retry_http_4xx`).
    Refused,
    /// The connection is closed; connect again to go on.
    Closed,
    /// The operating system refused a resource the client needs (open files, threads):
    /// the same call may succeed once the process has freed some.
    Resources,
    /// A send was refused for lack of room (`try_send`), or a ping because too many wait
    /// for their pongs; it may succeed later.
    Full,
    /// A send failed for another reason (the connection went away while it waited).
    Send,
}

impl Error {
    /// Which part failed, for a `match` that does not care about the details.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::Options(_) | Error::Close(_) => ErrorKind::Invalid,
            Error::Start(e) if e.is_temporary() => ErrorKind::Resources,
            Error::Start(_) => ErrorKind::Invalid,
            Error::Connection(e) if refused(e) => ErrorKind::Refused,
            Error::Connection(_) => ErrorKind::Connection,
            Error::Closed(_) | Error::Ping(PingError::NotOpen) => ErrorKind::Closed,
            Error::Ping(PingError::Full) => ErrorKind::Full,
            Error::Ping(PingError::NotOpenYet) => ErrorKind::Connection,
            Error::Ping(_) => ErrorKind::Invalid,
            Error::Send(SendFailed::Refused(e)) if e.is_full() => ErrorKind::Full,
            Error::Send(SendFailed::Refused(
                SendError::NotConnected(_) | SendError::Closing(_),
            )) => ErrorKind::Closed,
            Error::Send(SendFailed::Refused(SendError::TooLarge { .. })) => ErrorKind::Invalid,
            Error::Send(SendFailed::Failed(failed))
                if matches!(
                    failed.reason,
                    SendFailure::ConnectionLost
                        | SendFailure::ConnectFailed
                        | SendFailure::MaybeDelivered
                ) =>
            {
                ErrorKind::Connection
            }
            Error::Send(_) => ErrorKind::Send,
        }
    }
}

/// Waiting for the first open (`connect_with`): errors are remembered, a reconnection keeps
/// waiting (a policy dials again), and the close that leaves the client Closed ends the
/// wait with the last error, or with the close itself when there was none.
#[derive(Debug, Default)]
pub struct Opening {
    failure: Option<ConnectionError>,
}

impl Opening {
    /// Takes the next event; `state` is the client's state read after taking it. `None`:
    /// keep waiting; `Some(Ok(handshake))`: open, the server having answered `handshake`;
    /// `Some(Err(_))`: it never will be.
    pub fn on_event(
        &mut self,
        event: Event,
        state: ReadyState,
    ) -> Option<Result<Box<Handshake>, Error>> {
        match event {
            Event::Open { handshake, .. } => Some(Ok(handshake)),
            Event::Error { error, .. } => {
                self.failure = Some(error);
                None
            }
            Event::Reconnecting { .. } => {
                self.failure = None;
                None
            }
            Event::Close { .. } if state == ReadyState::Closed => {
                let closed = Closed::of(&event).expect("a close event");
                Some(Err(self
                    .failure
                    .take()
                    .map_or(Error::Closed(closed), Error::Connection)))
            }
            _ => None,
        }
    }

    /// The wait ended in `error`: the events already queued after the close that ended it
    /// (taken with `queued`, which does not wait) are read too, and the last attempt's
    /// failure is returned. The client is Closed for good then, so every later event is
    /// queued already; when all the reconnect policy's attempts failed before the
    /// application took the first failure, it is the last one that says why.
    pub fn last_error(&mut self, error: Error, mut queued: impl FnMut() -> Option<Event>) -> Error {
        let mut last = error;
        while let Some(event) = queued() {
            if let Some(Err(later)) = self.on_event(event, ReadyState::Closed) {
                last = later;
            }
        }
        last
    }

    /// The events ended before an open (the driver is gone).
    pub fn driver_gone(&mut self) -> Error {
        Error::Closed(Closed::driver_gone())
    }

    /// Takes the next event as [`Self::on_event`] does, or the end of the events (`None`:
    /// the driver is gone, which ends the wait with an error).
    pub fn next(
        &mut self,
        event: Option<Event>,
        state: ReadyState,
    ) -> Option<Result<Box<Handshake>, Error>> {
        match event {
            Some(event) => self.on_event(event, state),
            None => Some(Err(self.driver_gone())),
        }
    }
}

/// What a `WebSocket`'s stream of messages has seen of the connection: the latest open and
/// how many came after the first, the final close, the last error and the last pong. Closed
/// is final on the simple path (it never
/// connects again), so once the close that leaves the client Closed was taken, every later
/// event is already queued: the stream takes those without waiting, and a later close
/// among them (a reconnection that ended too before the application read the first) is
/// the one that counts.
#[derive(Debug)]
pub struct Lifecycle {
    handshake: Box<Handshake>,
    reconnections: u64,
    closed: Option<Closed>,
    error: Option<ConnectionError>,
    last_pong: Option<Bytes>,
}

impl Lifecycle {
    /// The lifecycle of a socket that has just opened, the server having answered
    /// `handshake`.
    pub fn opened(handshake: Box<Handshake>) -> Self {
        Self {
            handshake,
            reconnections: 0,
            closed: None,
            error: None,
            last_pong: None,
        }
    }

    /// Takes the next event; `state` is the client's state read after taking it. Returns
    /// the message to hand out, if it is one; records the rest.
    pub fn take(&mut self, event: Event, state: ReadyState) -> Option<Message> {
        match event {
            Event::Message { message, .. } => return Some(message),
            Event::Open { handshake, .. } => {
                self.handshake = handshake;
                self.reconnections += 1;
            }
            // Reconnections that opened and dropped while the application left its
            // events untaken, folded into this event's count.
            Event::Reconnecting {
                unreported_opened, ..
            } => self.reconnections += u64::from(unreported_opened),
            Event::Error { error, .. } => self.error = Some(error),
            Event::Pong { payload, .. } => self.last_pong = Some(payload),
            Event::Close { .. } if self.closed.is_some() || state == ReadyState::Closed => {
                self.closed = Closed::of(&event);
            }
            _ => {}
        }
        None
    }

    /// The events ended without a close event: the driver is gone.
    pub fn driver_gone(&mut self) {
        self.closed.get_or_insert_with(Closed::driver_gone);
    }

    /// Whether the connection has closed for good: the stream then only hands out what is
    /// already queued.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// The `Debug` of a `WebSocket` whose client is in `state`.
    pub fn fmt_websocket(
        &self,
        state: ReadyState,
        f: &mut std::fmt::Formatter<'_>,
    ) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("state", &state)
            .field("closed", &self.closed())
            .finish_non_exhaustive()
    }

    /// How the connection closed, once it has.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// The last failure reported: the one that ended the connection, if one did. With a
    /// reconnect policy it stays after a reconnection opened (the failure that caused it);
    /// a reconnection after a clean close leaves none ([`Self::reconnections`] counts both).
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// What the server answered when the latest connection the stream has reached opened.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// How many connections have opened after the first, as far as the stream has read.
    pub fn reconnections(&self) -> u64 {
        self.reconnections
    }

    /// The payload of the latest pong answering one of the application's pings.
    pub fn last_pong(&self) -> Option<&Bytes> {
        self.last_pong.as_ref()
    }

    /// A send's error as the simple path reports it: once the connection has closed, a
    /// refusal for anything but room is "closed".
    pub fn send_error(&self, e: SendFailed) -> Error {
        match (&self.closed, &e) {
            (Some(closed), SendFailed::Refused(r)) if !r.is_full() => Error::Closed(closed.clone()),
            _ => Error::Send(e),
        }
    }
}

/// Defines an adapter's `WebSocket` (over its `Client` and `Events`) with the calls that do
/// not wait: `ping`, `last_pong`, `closed`, `error`, `client`, `into_parts`, and the
/// private `opened` (a socket whose client has just opened) and `start_close` (the first
/// half of `close_with`: `Ok(true)` when the close event is still to be read). The
/// attributes given go on `WebSocket`. The adapter adds `send`, receiving and `close`.
#[macro_export]
#[doc(hidden)]
macro_rules! websocket {
    ($(#[$meta:meta])* $(,)?) => {
        $(#[$meta])*
        pub struct WebSocket {
            client: Client,
            events: Events,
            /// The final close, the last error and pong, as the stream has seen them.
            lifecycle: $crate::simple::Lifecycle,
        }

        impl ::std::fmt::Debug for WebSocket {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.lifecycle.fmt_websocket(self.client.state(), f)
            }
        }

        impl WebSocket {
            /// Sends a ping (payload at most 125 bytes); the pong is seen by
            /// [`last_pong`](Self::last_pong) once the messages have been read past it.
            pub fn ping(
                &self,
                payload: impl Into<$crate::__private::Bytes>,
            ) -> Result<(), $crate::simple::Error> {
                Ok(self.client.ping(payload)?)
            }

            /// The payload of the latest pong answering [`ping`](Self::ping).
            pub fn last_pong(&self) -> Option<&$crate::__private::Bytes> {
                self.lifecycle.last_pong()
            }

            /// How the connection closed, once the messages have ended (or
            /// [`close_with`](Self::close_with) has returned).
            pub fn closed(&self) -> Option<&$crate::simple::Closed> {
                self.lifecycle.closed()
            }

            /// The last failure reported: the one that ended the connection, if one did.
            /// With a reconnect policy it stays after a reconnection opened (the failure
            /// that caused it); a reconnection after a clean close (a server restarting
            /// with 1012, say) leaves none: [`reconnections`](Self::reconnections) counts
            /// every one. [`closed`](Self::closed) is `None` while the socket is open.
            pub fn error(&self) -> Option<&$crate::reexports::ConnectionError> {
                self.lifecycle.error()
            }

            /// What the server answered when the connection opened: the sub-protocol it
            /// selected (`None` when it selected none of those offered, which RFC 6455
            /// allows and this client accepts, as browsers do: check it if the protocol
            /// matters), its headers, the extensions in force and the dial's timing. After
            /// a reconnection, the new connection's, once the messages have been read up
            /// to it.
            pub fn handshake(&self) -> &$crate::reexports::Handshake {
                self.lifecycle.handshake()
            }

            /// How many times a reconnect policy has opened a new connection since
            /// `connect` returned, counted as the messages are read: the messages after
            /// the count changed came on the new connection. What the server kept for the
            /// old one (a login, subscriptions) is gone: an application that set any up
            /// compares the count between messages and sets it up again. Messages queued
            /// while it reconnected were already sent when the count changes (they go out
            /// as the new connection opens), so a protocol that needs a first message on
            /// each connection (a login) must not send while reconnecting, or must use the
            /// full event model ([`into_parts`](Self::into_parts)) and
            /// `carry_queue(false)`.
            pub fn reconnections(&self) -> u64 {
                self.lifecycle.reconnections()
            }

            /// The [`Client`] underneath: state, `buffered_amount`, `try_send`, socket
            /// details, `reconnect_with` (a renewed token for the next reconnections); a
            /// clone of it sends from elsewhere.
            pub fn client(&self) -> &Client {
                &self.client
            }

            /// The full event model: the [`Client`] and its [`Events`] (every lifecycle
            /// event).
            pub fn into_parts(self) -> (Client, Events) {
                (self.client, self.events)
            }

            /// The socket of a client that has just opened, the server having answered
            /// `handshake`.
            fn opened(
                client: Client,
                events: Events,
                handshake: Box<$crate::reexports::Handshake>,
            ) -> Self {
                WebSocket {
                    client,
                    events,
                    lifecycle: $crate::simple::Lifecycle::opened(handshake),
                }
            }

            /// Starts `close_with`: `Ok(true)` when the close event is still to be read,
            /// `Ok(false)` when the socket has already closed for good.
            fn start_close(&self, code: u16, reason: &str) -> Result<bool, $crate::simple::Error> {
                if self.lifecycle.is_closed() {
                    return Ok(false);
                }
                match self.client.close(Some(code), reason) {
                    // Already closed: the close event is still to be read.
                    Ok(()) | Err($crate::reexports::CloseError::NotConnected) => Ok(true),
                    Err(e) => Err(e.into()),
                }
            }

            /// How the connection closed, once `close_with` has read its close event.
            fn final_close(&self) -> $crate::simple::Closed {
                self.lifecycle
                    .closed()
                    .cloned()
                    .unwrap_or_else($crate::simple::Closed::driver_gone)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxsocket_core::{ConnId, TransportError};

    fn close(conn: u64, code: u16) -> Event {
        Event::close(ConnId::from_raw(conn), code, "", false)
    }

    fn error(conn: u64) -> Event {
        Event::error(
            ConnId::from_raw(conn),
            ConnectionError::ConnectFailed(TransportError::new(TransportErrorKind::Io, "refused")),
        )
    }

    /// A dial that failed says so once ("connection failed: connect failed: connect to …"
    /// said it three times).
    #[test]
    fn a_failed_dial_says_connection_failed_once() {
        let refused =
            TransportError::new(TransportErrorKind::Io, "connect to h (1.2.3.4:1): refused");
        let message = Error::Connection(ConnectionError::ConnectFailed(refused)).to_string();
        assert_eq!(
            message,
            "connection failed: connect to h (1.2.3.4:1): refused \
             (connect again, or use a reconnect policy)"
        );
        let timeout = Error::Connection(ConnectionError::KeepaliveTimeout(
            std::time::Duration::from_secs(1),
        ));
        assert!(
            timeout
                .to_string()
                .starts_with("connection failed: no pong within 1s"),
            "{timeout}"
        );
    }

    /// A proxy variable refused is not called an option to fix.
    #[test]
    fn a_refused_proxy_variable_is_no_option() {
        let refused = Error::Options(ConnectError::ProxyEnvironment {
            variable: "ALL_PROXY",
            reason: "unsupported proxy scheme \"socks4\"".into(),
        });
        let message = refused.to_string();
        assert!(
            message.starts_with("cannot connect: ALL_PROXY"),
            "{message}"
        );
        assert!(!message.contains("fix that option"), "{message}");
        assert_eq!(refused.kind(), ErrorKind::Invalid);
    }

    #[test]
    fn opening_waits_across_a_reconnection_and_reports_the_last_error() {
        let mut o = Opening::default();
        assert!(o.on_event(error(1), ReadyState::Connecting).is_none());
        // Not final: a reconnection follows.
        assert!(o.on_event(close(1, 1006), ReadyState::Connecting).is_none());
        let again = Event::reconnecting(
            ConnId::from_raw(2),
            1,
            std::time::Duration::from_millis(1),
            "",
        );
        assert!(o.on_event(again, ReadyState::Connecting).is_none());
        assert!(o.on_event(error(2), ReadyState::Closed).is_none());
        let failed = o.on_event(close(2, 1006), ReadyState::Closed);
        assert!(
            matches!(failed, Some(Err(Error::Connection(_)))),
            "{failed:?}"
        );
    }

    /// Every attempt failed before the application took the first failure: the close that
    /// ended the first attempt already finds the client Closed, and the failure reported is
    /// the last attempt's, read from the events queued after it.
    #[test]
    fn opening_reports_the_last_attempts_failure_when_all_were_queued() {
        let refused = |conn: u64, why: &str| {
            Event::error(
                ConnId::from_raw(conn),
                ConnectionError::ConnectFailed(TransportError::new(TransportErrorKind::Io, why)),
            )
        };
        let again = |conn: u64| {
            Event::reconnecting(
                ConnId::from_raw(conn),
                1,
                std::time::Duration::from_millis(1),
                "",
            )
        };
        let mut queued = vec![
            refused(1, "first"),
            close(1, 1006),
            again(2),
            refused(2, "second"),
            close(2, 1006),
            again(3),
            refused(3, "last"),
            close(3, 1006),
        ]
        .into_iter();
        let mut o = Opening::default();
        let first = loop {
            if let Some(result) = o.next(queued.next(), ReadyState::Closed) {
                break result.unwrap_err();
            }
        };
        assert!(first.to_string().contains("first"), "{first}");
        let last = o.last_error(first, || queued.next());
        assert!(last.to_string().contains("last"), "{last}");
    }

    #[test]
    fn the_lifecycle_takes_a_later_close_once_closed() {
        let mut l = Lifecycle::opened(Box::default());
        assert!(l.take(close(1, 1000), ReadyState::Open).is_none());
        assert!(
            !l.is_closed(),
            "a close while the client is not Closed is not final"
        );
        l.take(close(1, 1000), ReadyState::Closed);
        assert_eq!(l.closed().map(|c| c.code), Some(1000));
        // Queued after it: a later close is the one that counts.
        l.take(close(2, 1006), ReadyState::Closed);
        assert_eq!(l.closed().map(|c| c.code), Some(1006));
        let message = Event::message(ConnId::from_raw(2), Message::text("late"));
        assert_eq!(
            l.take(message, ReadyState::Closed),
            Some(Message::text("late"))
        );
    }

    /// A server's refusal (HTTP 4xx, a negotiation it rejects) is its own kind, and its
    /// hint does not say to connect again; a refused send says it was not sent; the failure
    /// before a reconnection stays visible once it opened.
    #[test]
    fn refusals_and_hints_say_what_to_do() {
        let status = |code| {
            Error::Connection(ConnectionError::ConnectFailed(TransportError::new(
                TransportErrorKind::HttpStatus(code),
                format!("HTTP {code}"),
            )))
        };
        for code in [401, 403, 404] {
            let refused = status(code);
            assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
            assert!(refused.to_string().contains("refused: "), "{refused}");
            assert!(!refused.to_string().contains("connect again"), "{refused}");
        }
        // A permanent redirect, which is not followed, is met again: a refusal (it was a
        // connection error with "connect again"). A temporary one may end.
        for code in [301, 308] {
            let moved = status(code);
            assert_eq!(moved.kind(), ErrorKind::Refused, "{moved}");
            assert!(!moved.to_string().contains("connect again"), "{moved}");
        }
        for code in [503, 429, 302, 303, 307] {
            let unavailable = status(code);
            assert_eq!(unavailable.kind(), ErrorKind::Connection);
            assert!(
                unavailable.to_string().contains("connect again"),
                "{unavailable}"
            );
        }
        // A certificate failure does not say to just connect again.
        let tls = Error::Connection(ConnectionError::ConnectFailed(TransportError::new(
            TransportErrorKind::Tls,
            "invalid peer certificate: UnknownIssuer",
        )));
        assert_eq!(tls.kind(), ErrorKind::Connection);
        assert!(tls.to_string().contains("trusted roots"), "{tls}");
        let socks = Error::Connection(ConnectionError::ConnectFailed(TransportError::new(
            TransportErrorKind::ProxyRefused,
            "proxy socks5h://p:1080 refused the user name and password (RFC 1929 status 1)",
        )));
        assert_eq!(socks.kind(), ErrorKind::Refused, "{socks}");
        assert!(!socks.to_string().contains("connect again"), "{socks}");
        let mismatch = Error::Connection(ConnectionError::ProtocolNotOffered("v9".into()));
        assert_eq!(mismatch.kind(), ErrorKind::Refused);

        let too_large = Error::Send(SendFailed::Refused(SendError::TooLarge {
            message: Message::text("x"),
            len: 1,
            max: 0,
        }));
        assert!(too_large.to_string().contains("not sent"), "{too_large}");
        let lost = Error::Send(SendFailed::Failed(wxsocket_core::FailedSend::new(
            SendFailure::ConnectionLost,
            None,
        )));
        assert!(lost.to_string().contains("not confirmed written"), "{lost}");
        let config = Error::Config(ConfigError::new(
            "runtime",
            "must be called from inside a tokio runtime",
        ));
        assert!(!config.to_string().contains("field"), "{config}");
        assert_eq!(config.kind(), ErrorKind::Invalid);
        // Out of open files when the client starts: not the configuration's fault.
        let emfile = std::io::Error::from_raw_os_error(24);
        let start = Error::from(StartError::os("create the OS poller", &emfile));
        assert_eq!(start.kind(), ErrorKind::Resources, "{start}");
        assert!(
            start
                .to_string()
                .starts_with("cannot start: could not create the OS poller: ")
                && start.to_string().contains("os error 24")
                && !start.to_string().contains("invalid"),
            "{start}"
        );
        let invalid = Error::from(StartError::from(ConfigError::new("tls", "x")));
        assert!(matches!(invalid, Error::Config(_)), "{invalid:?}");

        let mut lifecycle = Lifecycle::opened(Box::default());
        lifecycle.take(error(1), ReadyState::Connecting);
        assert!(lifecycle.error().is_some());
        // An Open event as a session makes it.
        let now = std::time::Instant::now();
        let mut session = wxsocket_core::Session::new(Default::default()).unwrap();
        let conn = session
            .connect(&wxsocket_core::ConnectOptions::new("ws://127.0.0.1:9"), now)
            .unwrap();
        session.handle(
            conn,
            wxsocket_core::TransportEvent::Opened(Box::default()),
            now,
        );
        let open = std::iter::from_fn(|| session.poll_event())
            .find(|e| matches!(e, Event::Open { .. }))
            .expect("an Open event");
        assert_eq!(lifecycle.reconnections(), 0);
        lifecycle.take(open, ReadyState::Open);
        assert!(
            lifecycle.error().is_some(),
            "the drop before the reconnection is still there to see"
        );
        assert_eq!(lifecycle.reconnections(), 1);
    }

    /// Reconnections that opened and dropped while the application left its events
    /// untaken, folded into a `Reconnecting` event's count, are counted too.
    #[test]
    fn reconnections_count_those_folded_while_events_waited() {
        use std::time::Duration;
        use wxsocket_core::{Action, ConnectOptions, ReconnectPolicy, Session, SessionConfig};
        use wxsocket_core::{TransportErrorKind, TransportEvent};
        let policy = ReconnectPolicy::default()
            .backoff(Duration::from_millis(1), Duration::from_millis(1))
            .seed(7);
        let mut session = Session::new(SessionConfig::default().reconnect(policy)).unwrap();
        let mut now = std::time::Instant::now();
        let mut conn = session
            .connect(&ConnectOptions::new("ws://127.0.0.1:9"), now)
            .unwrap();
        while session.poll_action().is_some() {}
        // Each attempt opens and drops at once; nothing is taken meanwhile.
        let mut opens = 0;
        while opens < 200 {
            session.handle(conn, TransportEvent::Opened(Box::default()), now);
            opens += 1;
            let dropped = TransportError::new(TransportErrorKind::Io, "reset");
            session.handle(conn, TransportEvent::Error(dropped), now);
            conn = loop {
                now = session.poll_timeout().expect("a backoff deadline");
                session.handle_timeout(now);
                let dial = std::iter::from_fn(|| session.poll_action()).find_map(|a| match a {
                    Action::Dial { conn, .. } => Some(conn),
                    _ => None,
                });
                if let Some(next) = dial {
                    break next;
                }
            };
        }
        let mut lifecycle = Lifecycle::opened(Box::default());
        let mut first = true;
        let mut folded = false;
        while let Some(event) = session.poll_event() {
            folded |= matches!(event, Event::Reconnecting { unreported_opened, .. } if unreported_opened > 0);
            if first {
                // The first connection opened before `connect` returned.
                first = !matches!(event, Event::Open { .. });
                continue;
            }
            lifecycle.take(event, session.state());
        }
        assert!(folded, "attempts were folded");
        assert_eq!(lifecycle.reconnections(), opens - 1);
    }
}
