//! The simple path: [`connect`] blocks until the socket is open and returns a
//! [`WebSocket`] whose [`recv`](WebSocket::recv) and iterator yield received messages only;
//! its sends wait for room and for the write; its [`close`](WebSocket::close) waits for the
//! close handshake. Built on [`Client`] and [`Events`], which stay one call away
//! ([`WebSocket::into_parts`]). The same names and meanings as `wxsocket-tokio`'s, without
//! the `.await`.

use crate::{Client, Config, Events, SendPending};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};
use wxsocket_core::{ConnectOptions, Message};
use wxsocket_wire::simple::{Closed, Error, Opening};

/// Connects and blocks until the socket is open, or fails with why it never opened:
/// [`Error::Connection`] with the dial's error (DNS, TCP, TLS, the HTTP upgrade, the
/// handshake timeout, 60 s by default), or [`Error::Options`] / [`Error::Config`] before
/// anything is dialled. `options` is a URL (`&str`, `String`) or a [`ConnectOptions`].
///
/// ```
/// # let server = wxsocket_test_server::EchoServer::start().unwrap();
/// # let url = server.url();
/// let mut ws = wxsocket_blocking::connect(url.as_str())?;
/// for text in ["one", "two", "three"] {
///     ws.send(text)?;
///     println!("{}", ws.recv().expect("an echo"));
/// }
/// ws.close()?;
/// # Ok::<(), wxsocket_blocking::Error>(())
/// ```
pub fn connect(options: impl Into<ConnectOptions>) -> Result<WebSocket, Error> {
    connect_with(Config::default(), options)
}

/// [`connect`] with a configuration (TLS roots, bounds, keepalive, a reconnect policy…).
/// Send completions are not queued as events on this path (`send` returns when written).
///
/// With a [`ReconnectPolicy`](wxsocket_core::ReconnectPolicy) a failed dial is retried
/// as the policy says, and this call keeps waiting until one opens; it fails only when
/// the policy gives up (with the last attempt's error). A policy without
/// `max_attempts` may therefore wait for as long as the server stays unreachable.
pub fn connect_with(
    mut config: Config,
    options: impl Into<ConnectOptions>,
) -> Result<WebSocket, Error> {
    config.session.send_completions = false;
    let (client, events) = Client::new(config)?;
    client.connect(&options.into())?;
    let mut opening = Opening::default();
    // Lifecycle events before the open are taken here; an error or a close ends the wait.
    loop {
        match opening.next(events.recv(), client.state()) {
            None => {}
            Some(Ok(handshake)) => return Ok(WebSocket::opened(client, events, handshake)),
            Some(Err(error)) => return Err(opening.last_error(error, || events.try_recv().ok())),
        }
    }
}

wxsocket_wire::websocket! {
    /// An open WebSocket (from [`connect`]): [`recv`](Self::recv) and the iterator give the
    /// messages it receives, [`send`](Self::send) and [`close`](Self::close) block until done.
    ///
    /// `recv` returns `None` when the connection has closed for good: the close is then in
    /// [`closed`](Self::closed), and the failure that caused it, if any, in
    /// [`error`](Self::error); messages that arrived before the close are all handed out
    /// first. With a reconnect policy it goes on across reconnections (lifecycle events are
    /// skipped; [`into_parts`](Self::into_parts) gives them all), which
    /// [`reconnections`](Self::reconnections) counts: what the server kept for the old
    /// connection (a login, subscriptions) is to be set up again.
    ///
    /// Dropping it closes the connection cleanly on the driver thread; a process that then
    /// exits cuts that short, failing what was not yet written: call [`close`](Self::close)
    /// first, which returns once the close handshake is over.
    ///
    /// Iterating takes `&mut`, so the socket is still there after the loop:
    ///
    /// ```
    /// # let server = wxsocket_test_server::EchoServer::start().unwrap();
    /// # let mut ws = wxsocket_blocking::connect(server.url())?;
    /// ws.send("ping")?;
    /// ws.send("bye")?;
    /// // Or `ws.iter()`; ends when the connection closes for good.
    /// for message in &mut ws {
    ///     println!("{message}");
    ///     if message.as_text() == Some("bye") {
    ///         break;
    ///     }
    /// }
    /// ws.close()?;
    /// # Ok::<(), wxsocket_blocking::Error>(())
    /// ```
    ///
    /// Received messages are bounded as on [`Client`]: a `WebSocket` nobody reads from stops
    /// reading from the server, and a server that then stops reading leaves `send` waiting
    /// for room; [`send_timeout`](Self::send_timeout) bounds the wait. To send from another
    /// thread while this one receives, clone [`client`](Self::client) (`Client` is
    /// `Clone + Send + Sync`).
}

impl WebSocket {
    /// Sends a message and blocks until it is written to the socket; when the send buffer
    /// is full it first waits for room. Fails if the connection is closed (an error whose
    /// [`kind`](Error::kind) is [`ErrorKind::Closed`](crate::ErrorKind::Closed)) or is lost
    /// before the message is written, when there is no reconnect policy.
    ///
    /// How long it blocks depends on the configuration and on the server:
    ///
    /// - with a reconnect policy, a lost connection does not fail it: the message is queued
    ///   for the next connection and this waits through the outage until it is written
    ///   there (it fails only once the policy gives up);
    /// - with delivery acknowledgement on (`SessionConfig::acknowledge`), it waits until
    ///   the peer acknowledged the message, not only until it was written;
    /// - it can block for ever: received messages are bounded, so a program that sends to a
    ///   server that answers (an echo server, say) and never reads stops reading from the
    ///   server; the server, unable to write its answers, stops reading in turn, the socket
    ///   fills, and the send buffer never has room again.
    ///
    /// [`send_timeout`](Self::send_timeout) bounds the wait.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        match self.client.send(message) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.lifecycle.send_error(e)),
        }
    }

    /// [`send`](Self::send) whose whole wait, for room and then for the write (or the
    /// acknowledgement), lasts at most `timeout`. The outer result is the wait's, the inner
    /// one the send's (the shape of [`Client::send_timeout`]; unlike a timeout around the
    /// tokio adapter's `send`, a message still waiting for room when the time is up comes
    /// back):
    ///
    /// - `Ok(Ok(()))`: the message was written within `timeout`;
    /// - `Ok(Err(error))`: the send failed as `send` fails, or there was still no room
    ///   when `timeout` ran out: then the error's [`kind`](Error::kind) is
    ///   [`ErrorKind::Full`](crate::ErrorKind::Full), nothing was sent, and the message is
    ///   handed back in it (`Error::Send(SendFailed::Refused(refused))`,
    ///   [`SendError::into_message`](crate::SendError::into_message));
    /// - `Err(SendPending { .. })`: the message was accepted but neither written nor failed
    ///   within `timeout` (queued while reconnecting, or waiting behind earlier messages
    ///   that a server that does not read leaves unwritten). It is not cancelled and will
    ///   still be written, or fail, later; this path does not report which (the
    ///   [`Client`]'s [`send_timeout`](Client::send_timeout) and its events do).
    ///
    /// ```
    /// # let server = wxsocket_test_server::EchoServer::start().unwrap();
    /// # let mut ws = wxsocket_blocking::connect(server.url())?;
    /// use std::time::Duration;
    /// match ws.send_timeout("hello", Duration::from_secs(5)) {
    ///     Ok(sent) => sent?,
    ///     Err(pending) => eprintln!("not written yet: {pending}"),
    /// }
    /// # Ok::<(), wxsocket_blocking::Error>(())
    /// ```
    pub fn send_timeout(
        &self,
        message: impl Into<Message>,
        timeout: Duration,
    ) -> Result<Result<(), Error>, SendPending> {
        Ok(match self.client.send_timeout(message, timeout)? {
            Ok(_) => Ok(()),
            Err(e) => Err(self.lifecycle.send_error(e)),
        })
    }

    /// Blocks until the next received message; `None` once the connection has closed for
    /// good (and every message received before the close was handed out).
    pub fn recv(&mut self) -> Option<Message> {
        self.next_message(None).ok()
    }

    /// [`recv`](Self::recv) waiting at most `timeout`:
    /// [`RecvTimeoutError::Timeout`] if no message came in time (the socket is still
    /// usable), [`RecvTimeoutError::Disconnected`] once the connection has closed for good.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.next_message(Some(timeout))
    }

    /// A blocking iterator over the received messages (each step is
    /// [`recv`](Self::recv)); it ends when the connection has closed for good. `for
    /// message in &mut ws` is the same.
    pub fn iter(&mut self) -> Messages<'_> {
        Messages { ws: self }
    }

    /// Closes with code 1000 and blocks until the close handshake is done (bounded by the
    /// close timeout, 10 s by default); returns how the connection closed. Messages that
    /// arrive meanwhile are dropped. Closing a socket that is already closed returns its
    /// close.
    pub fn close(mut self) -> Result<Closed, Error> {
        self.close_with(1000, "")
    }

    /// [`close`](Self::close) with a code (1000, or 3000–4999) and a reason (at most 123
    /// bytes); an invalid one is [`Error::Close`] and nothing is closed.
    pub fn close_with(&mut self, code: u16, reason: &str) -> Result<Closed, Error> {
        if self.start_close(code, reason)? {
            while self.recv().is_some() {}
        }
        Ok(self.final_close())
    }

    /// The next message, waiting at most `timeout` (`None`: without a limit).
    fn next_message(&mut self, timeout: Option<Duration>) -> Result<Message, RecvTimeoutError> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        loop {
            let event = if self.lifecycle.is_closed() {
                // Closed for good: hand out what was still queued, never wait.
                self.events
                    .try_recv()
                    .map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                match deadline {
                    None | Some(None) => self.events.recv().ok_or(RecvTimeoutError::Disconnected),
                    Some(Some(deadline)) => self
                        .events
                        .recv_timeout(deadline.saturating_duration_since(Instant::now())),
                }
            };
            match event {
                Ok(event) => {
                    if let Some(message) = self.lifecycle.take(event, self.client.state()) {
                        return Ok(message);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(RecvTimeoutError::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    self.lifecycle.driver_gone();
                    return Err(RecvTimeoutError::Disconnected);
                }
            }
        }
    }
}

/// The blocking iterator over a [`WebSocket`]'s messages, from [`WebSocket::iter`] or
/// `&mut ws`: each step is [`WebSocket::recv`].
#[derive(Debug)]
pub struct Messages<'a> {
    ws: &'a mut WebSocket,
}

impl Iterator for Messages<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.ws.recv()
    }
}

impl<'a> IntoIterator for &'a mut WebSocket {
    type Item = Message;
    type IntoIter = Messages<'a>;

    fn into_iter(self) -> Messages<'a> {
        self.iter()
    }
}
