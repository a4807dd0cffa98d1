//! The simple path: [`connect`] waits for open and returns a [`WebSocket`] whose stream
//! yields received messages only; its sends wait for room and for the write; its
//! [`close`](WebSocket::close) waits for the close handshake. Built on [`Client`] and
//! [`Events`], which stay one call away ([`WebSocket::into_parts`]).

use crate::{Client, Config, Events};
use futures_core::Stream;
use futures_util::Sink;
use std::pin::Pin;
use std::task::{Context, Poll};
use wxsocket_core::{ConnectOptions, Message};
use wxsocket_wire::client::SendFailed;
use wxsocket_wire::simple::{Closed, Error, Opening};

/// Connects and waits until the socket is open (or fails with why it never opened).
/// Dropping the future cancels the dial and releases everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wxsocket_tokio::Error> {
/// # let server = wxsocket_test_server::EchoServer::start().unwrap();
/// # let url = server.url();
/// let mut ws = wxsocket_tokio::connect(url.as_str()).await?;
/// for text in ["one", "two", "three"] {
///     ws.send(text).await?;
///     println!("{}", ws.next().await.expect("an echo"));
/// }
/// ws.close().await?;
/// # Ok(()) }
/// ```
pub async fn connect(options: impl Into<ConnectOptions>) -> Result<WebSocket, Error> {
    connect_with(Config::default(), options).await
}

/// [`connect`] with a configuration (TLS roots, bounds, keepalive, a reconnect policy…).
/// Send completions are not queued as events on this path (`send` returns when written).
///
/// With a [`ReconnectPolicy`](wxsocket_core::ReconnectPolicy) a failed dial is retried
/// as the policy says, and this call keeps waiting until one opens; it fails only when
/// the policy gives up (with the last attempt's error). A policy without
/// `max_attempts` may therefore wait for as long as the server stays unreachable (bound
/// it with `tokio::time::timeout` if need be).
pub async fn connect_with(
    mut config: Config,
    options: impl Into<ConnectOptions>,
) -> Result<WebSocket, Error> {
    config.session.send_completions = false;
    let (client, mut events) = Client::new(config)?;
    client.connect(&options.into())?;
    let mut opening = Opening::default();
    // Lifecycle events before the open are taken here; an error or a close ends the wait.
    loop {
        match opening.next(events.next().await, client.state()) {
            None => {}
            Some(Ok(handshake)) => return Ok(WebSocket::opened(client, events, handshake)),
            Some(Err(error)) => return Err(opening.last_error(error, || events.try_next())),
        }
    }
}

wxsocket_wire::websocket! {
    /// An open WebSocket (from [`connect`]): a [`Stream`](futures_core::Stream) of the
    /// messages it receives, a [`Sink`] of messages, and `send` / `close` that wait.
    ///
    /// The stream ends (`None`) when the connection has closed for good: the close is then in
    /// [`closed`](Self::closed), and the failure that caused it, if any, in
    /// [`error`](Self::error). With a reconnect policy it goes on across reconnections, which
    /// [`reconnections`](Self::reconnections) counts: what the server kept for the old
    /// connection (a login, subscriptions) is to be set up again.
    /// Received messages are bounded as on [`Client`]: a `WebSocket` nobody reads from stops
    /// reading from the server.
    ///
    /// Dropping it closes the connection cleanly on the runtime's tasks; a program that
    /// then returns from `main` (dropping the runtime) cuts that short, failing what was
    /// not yet written, and the server sees the TCP connection reset: await
    /// [`close`](Self::close) first, which returns once the close handshake is over.
}

impl WebSocket {
    /// Sends a message and waits until it is written to the socket; when the send buffer
    /// is full it first waits for room. Fails if the connection is closed, or is lost
    /// before the message is written when there is no reconnect policy.
    ///
    /// How long it waits depends on the configuration and on the server:
    ///
    /// - with a reconnect policy, a lost connection does not fail it: the message is queued
    ///   for the next connection and this waits through the outage until it is written
    ///   there (it fails only once the policy gives up);
    /// - with delivery acknowledgement on (`SessionConfig::acknowledge`), it waits until
    ///   the peer acknowledged the message, not only until it was written;
    /// - it can wait for ever: received messages are bounded, so a program that sends to a
    ///   server that answers (an echo server, say) and never reads stops reading from the
    ///   server; the server, unable to write its answers, stops reading in turn, the socket
    ///   fills, and the send buffer never has room again.
    ///
    /// To bound the wait, wrap it in `tokio::time::timeout`. Cancelling it (dropping the
    /// future, a `select!` or `timeout` that fires first) is safe but not undoing: cancelled while it waits for room, the message is not sent;
    /// cancelled once the message was accepted, it is still written (or fails), and nothing
    /// reports that to this path. So a "time out and send again" loop may send a message
    /// twice. `try_send` never waits, and [`Client::try_send`]
    /// ([`into_parts`](Self::into_parts)) returns the send's id at once, whose outcome
    /// arrives as an event there.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        match self.client.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.lifecycle.send_error(e)),
        }
    }

    /// The next received message; `None` once the connection has closed for good. Cancel
    /// safe.
    pub async fn next(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// [`next`](Self::next) under the blocking adapter's name (`WebSocket::recv` there), so
    /// that a program moves between the adapters by adding or removing `.await`.
    pub async fn recv(&mut self) -> Option<Message> {
        self.next().await
    }

    /// Closes with code 1000 and waits for the close handshake (bounded by the close
    /// timeout); returns how the connection closed. Messages that arrive meanwhile are
    /// dropped. Closing a socket that is already closed returns its close.
    pub async fn close(mut self) -> Result<Closed, Error> {
        self.close_with(1000, "").await
    }

    /// [`close`](Self::close) with a code (1000, or 3000–4999) and a reason (at most 123
    /// bytes).
    pub async fn close_with(&mut self, code: u16, reason: &str) -> Result<Closed, Error> {
        if self.start_close(code, reason)? {
            while self.next().await.is_some() {}
        }
        Ok(self.final_close())
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            let event = if self.lifecycle.is_closed() {
                // Closed for good: hand out what was still queued, never wait.
                match self.events.try_next() {
                    Some(event) => event,
                    None => return Poll::Ready(None),
                }
            } else {
                match Pin::new(&mut self.events).poll_next(cx) {
                    Poll::Ready(Some(event)) => event,
                    Poll::Ready(None) => {
                        self.lifecycle.driver_gone();
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            };
            if let Some(message) = self.lifecycle.take(event, self.client.state()) {
                return Poll::Ready(Some(message));
            }
        }
    }
}

impl futures_core::Stream for WebSocket {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.poll_message(cx)
    }
}

/// The same [`Sink`] as [`Client`]'s: `poll_ready` waits for room, `poll_flush` for the
/// writes. Closing the sink (`SinkExt::close`, the end of `forward` or `send_all`'s
/// caller) only flushes it: unlike tokio-tungstenite, it sends no close frame and the
/// connection stays open; close it with [`close`](WebSocket::close) (after `split`,
/// `reunite` the halves first).
impl Sink<Message> for WebSocket {
    type Error = SendFailed;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendFailed>> {
        Pin::new(&mut self.client).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), SendFailed> {
        Pin::new(&mut self.client).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendFailed>> {
        Pin::new(&mut self.client).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendFailed>> {
        Pin::new(&mut self.client).poll_close(cx)
    }
}
