//! Closing: a close handshake is under way, begun by this side (`close`, `shutdown`) or by
//! the peer. Sends are refused, unless the peer began it with a code the reconnect policy
//! retries: then they wait for the next connection, as during the reconnect delay that
//! follows. Writes still complete. It ends when the transport ends,
//! when the close timeout passes (once more when its timer ran late: see
//! [`Closing::on_timeout`]), or, once both close frames were exchanged (the peer's read,
//! ours written), after a short linger; the close event carries the peer's code when its
//! close frame arrived.

use super::Conn;
use super::context::{Cause, Context, Ending, Next, Run, Teardown};
use crate::ack::Acks;
use crate::close::{ABNORMAL, NORMAL, PeerClose};
use crate::config::SessionConfig;
use crate::deadline::{after, late};
use crate::error::{ConnectionError, SendError, SendFailure};
use crate::event::Event;
use crate::ids::{ConnId, SendId};
use crate::message::Message;
use crate::queue::SendQueue;
use crate::request::HandshakeRequest;
use crate::transport::{Action, TransportEvent};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
pub(super) struct Closing {
    pub(super) id: ConnId,
    request: Arc<HandshakeRequest>,
    pub(super) in_flight: SendQueue<usize>,
    pub(super) deadline: Instant,
    /// The peer's close frame, once it arrived.
    peer: Option<PeerClose>,
    /// Our close frame (ours, or the reply to the peer's) is on the socket
    /// ([`TransportEvent::CloseWritten`]).
    written: bool,
    /// The application asked for this close (such a connection is never reconnected).
    local: bool,
    /// The close timeout was restarted once, its timer having run late (see
    /// [`Closing::on_timeout`]).
    restarted: bool,
    /// With delivery acknowledgement on: what the peer has not acknowledged yet. Only a
    /// pong acknowledges, here as when open: when this side began the close, a barrier ping
    /// went before its close frame (see [`Acks::barrier_before_close`]).
    acks: Option<Acks>,
    /// Where it stands in the run of reconnect attempts.
    run: Run,
    /// Sends made while a reconnect is to follow ([`Closing::will_reconnect`]), for the next
    /// connection.
    pub(super) next: SendQueue<Message>,
}

impl Closing {
    /// From Open: with `peer`, the peer's close frame began it; without, this side's.
    pub(super) fn new(
        id: ConnId,
        request: Arc<HandshakeRequest>,
        in_flight: SendQueue<usize>,
        acks: Option<Acks>,
        run: Run,
        deadline: Instant,
        peer: Option<PeerClose>,
    ) -> Box<Self> {
        Box::new(Closing {
            id,
            request,
            in_flight,
            deadline,
            local: peer.is_none(),
            peer,
            written: false,
            restarted: false,
            acks,
            run,
            next: SendQueue::default(),
        })
    }

    /// A send while a reconnect is to follow ([`Self::will_reconnect`]): queued for the next
    /// connection within the queue's bounds, and, with what is still in flight here, within
    /// the send buffer's (`buffered_amount` counts both). A message goes alone when nothing
    /// else is pending, whatever its size, as into an empty queue.
    pub(super) fn queue_for_next(
        &mut self,
        cx: &mut Context,
        message: Message,
    ) -> Result<SendId, SendError> {
        let config = &cx.config;
        let len = message.len();
        let max_in_flight = (config.max_buffered_bytes / super::open::IN_FLIGHT_WEIGHT)
            .max(config.max_queued_messages);
        let pending = self.in_flight.len() + self.next.len();
        let fits = pending == 0
            || (self.next.len() < config.max_queued_messages
                && self.next.bytes().saturating_add(len) <= config.max_queued_bytes
                && pending < max_in_flight
                && (self.in_flight.bytes() + self.next.bytes()).saturating_add(len)
                    <= config.max_buffered_bytes);
        if !fits {
            return Err(SendError::QueueFull(message));
        }
        let id = cx.accept_send();
        self.next.push(id, message);
        Ok(id)
    }

    /// Whether the reconnect policy will dial again when this close ends: the peer began
    /// it with a code the policy retries, attempts are left, and the application has not
    /// closed (or shut down) since.
    pub(super) fn will_reconnect(&self, cx: &Context) -> bool {
        let Some(peer) = self.peer.as_ref().filter(|_| !self.local) else {
            return false;
        };
        let attempt = cx.attempt_after(self.run, self.acks.as_ref());
        cx.retry(Cause::PeerClosed(peer.reported_code()), attempt)
    }

    /// Whether its messages still reach the application (and so are flow-controlled): when
    /// opted in with `receive_while_closing`, after our close frame and until the peer's.
    pub(super) fn is_reading(&self, config: &SessionConfig) -> bool {
        config.receive_while_closing && self.local && self.peer.is_none()
    }

    /// Input from the driver for this connection.
    #[inline(never)] // rare: keeps the per-message path (`Session::step`) small
    pub(super) fn on_event(
        mut self: Box<Self>,
        cx: &mut Context,
        event: TransportEvent,
        now: Instant,
    ) -> Next {
        let conn = self.id;
        match event {
            TransportEvent::SendWritten(id) => {
                cx.on_written(conn, &mut self.in_flight, self.acks.as_mut(), id);
            }
            TransportEvent::Pong(payload) if self.acks.is_some() => {
                // Control frames still count while closing: a pong acknowledges.
                if let Some(acks) = &mut self.acks {
                    let acked = acks.on_pong(&payload, now);
                    cx.deliver(conn, &mut self.in_flight, acked);
                }
            }
            TransportEvent::PeerClosed(peer) => {
                if self.peer.is_none() {
                    // The answer to our close frame (or a close frame crossing it).
                    self.peer = Some(peer);
                    self.linger_once_exchanged(cx, now);
                }
            }
            TransportEvent::CloseWritten => {
                self.written = true;
                self.linger_once_exchanged(cx, now);
            }
            TransportEvent::Closed => return self.finish(cx, now, true),
            TransportEvent::Error(error) => {
                if self.peer.is_some() {
                    // The peer's close frame came, and the transport failed before ours was
                    // out (ours or the answer: once both went, a driver reports `Closed`):
                    // the peer's code, not clean (RFC 6455 §7.1.4: the closing handshake
                    // did not complete).
                    cx.emit(Event::Error {
                        conn,
                        error: ConnectionError::Transport(error),
                    });
                    return self.finish(cx, now, false);
                }
                cx.emit(Event::Error {
                    conn,
                    error: ConnectionError::Transport(error.clone()),
                });
                let ending = Ending {
                    code: error.kind.close_code(),
                    reason: &error.message,
                    clean: false,
                };
                return self.lost(cx, ending);
            }
            TransportEvent::Message(message) if self.is_reading(&cx.config) => {
                // Opted in: the peer may still send data after our close frame until it
                // sends its own (RFC 6455 §5.5.1).
                cx.emit(Event::Message { conn, message });
            }
            TransportEvent::Ping(_)
            | TransportEvent::Pong(_)
            | TransportEvent::Message(_)
            | TransportEvent::Receiving
            | TransportEvent::Sending => {
                // Data after our close frame is allowed by RFC 6455 §5.5.1 but, as in the
                // WHATWG standard, not delivered once the socket is closing (unless
                // `receive_while_closing`).
            }
            _ => cx.stats.unexpected_inputs += 1,
        }
        Conn::Closing(self).into()
    }

    /// The close timer: the close timeout, or the linger after both close frames.
    pub(super) fn on_timeout(mut self: Box<Self>, cx: &mut Context, now: Instant) -> Next {
        if self.deadline > now {
            return Conn::Closing(self).into();
        }
        let timeout = cx.config.close_timeout;
        let exchanged = self.written && self.peer.is_some();
        if !exchanged && !self.restarted && late(self.deadline, now, timeout) {
            // The driver was not running when the close timeout passed (a suspended process,
            // an application in the background, a stalled loop): the peer's close frame may
            // be waiting unread, or our own (the answer) unwritten for want of a driver, so
            // the timeout runs once more from now, as the handshake's and keepalive's do.
            // Once: a driver that is always this late still ends the close a timeout later.
            // Not the linger: both close frames went, and the close is clean whenever it
            // ends.
            self.restarted = true;
            self.deadline = after(now, timeout);
            return Conn::Closing(self).into();
        }
        cx.actions.push_back(Action::Abort { conn: self.id });
        if self.peer.is_some() {
            if self.written {
                // Both close frames were exchanged and only the server's TCP close is
                // missing: the close is clean (RFC 6455 §7.1.4); the client closes TCP
                // itself (§7.1.1).
                return self.finish(cx, now, true);
            }
            // The peer's close frame came but ours never got out (behind a message the
            // peer stopped reading): the peer's code, not clean.
            cx.emit(Event::Error {
                conn: self.id,
                error: ConnectionError::CloseTimeout(timeout),
            });
            return self.finish(cx, now, false);
        }
        cx.emit(Event::Error {
            conn: self.id,
            error: ConnectionError::CloseTimeout(timeout),
        });
        let ending = Ending {
            code: ABNORMAL,
            reason: "close handshake timed out",
            clean: false,
        };
        self.lost(cx, ending)
    }

    /// Once both close frames were exchanged, the server has a short while left to close
    /// TCP ([`Context::linger`]) before the session ends the connection itself.
    fn linger_once_exchanged(&mut self, cx: &Context, now: Instant) {
        if self.written && self.peer.is_some() {
            self.deadline = self.deadline.min(after(now, cx.linger()));
        }
    }

    /// `close` or `shutdown`: a close the peer began is now the application's too: it ends
    /// the session rather than being retried by a reconnect policy.
    pub(super) fn close(mut self: Box<Self>) -> Next {
        self.local = true;
        Conn::Closing(self).into()
    }

    /// `connect`: a new connection replaces this one; its close event (1000, replaced)
    /// comes at once, and its close handshake goes on in the background under its own
    /// deadline.
    pub(super) fn replace(self: Box<Self>, cx: &mut Context, now: Instant) {
        let Closing {
            id,
            in_flight,
            deadline,
            acks,
            next,
            peer,
            written,
            ..
        } = *self;
        let (in_flight, _) = cx.settle(id, in_flight, acks, false);
        cx.fail(id, in_flight, SendFailure::Replaced);
        cx.fail(id, next, SendFailure::Replaced);
        let in_flight = SendQueue::<usize>::default();
        let replaced = Ending {
            code: NORMAL,
            reason: super::REPLACED_REASON,
            clean: false,
        };
        cx.end(id, in_flight, SendFailure::Replaced, false, replaced);
        cx.release_reads(id, false);
        cx.teardowns.push(Teardown {
            peer_closed: peer.is_some(),
            written,
            ..Teardown::new(id, deadline.max(now))
        });
    }

    /// The connection ended without the close handshake finishing: its unacknowledged
    /// sends fail, then `ending`.
    fn lost(self: Box<Self>, cx: &mut Context, ending: Ending<'_>) -> Next {
        let Closing {
            id,
            in_flight,
            acks,
            next,
            ..
        } = *self;
        let (in_flight, _) = cx.settle(id, in_flight, acks, false);
        cx.fail(id, in_flight, SendFailure::ConnectionLost);
        cx.end(id, next, SendFailure::ConnectionLost, false, ending);
        Conn::Closed.into()
    }

    /// The transport ended, or was aborted once both close frames were exchanged: the
    /// close event carries the peer's code, `clean` (RFC 6455 §7.1.4; not when our close
    /// frame, ours or the answer to the peer's, could not be written); without the peer's
    /// close frame, 1006 and not clean.
    fn finish(mut self: Box<Self>, cx: &mut Context, now: Instant, clean: bool) -> Next {
        let Some(peer) = self.peer.take() else {
            let ending = Ending {
                code: ABNORMAL,
                reason: "connection closed without a close frame",
                clean: false,
            };
            return self.lost(cx, ending);
        };
        let Closing {
            id,
            request,
            in_flight,
            local,
            acks,
            run,
            mut next,
            ..
        } = *self;
        let code = peer.reported_code();
        let ending = Ending {
            code,
            reason: &peer.reason,
            clean,
        };
        let cause = if local {
            Cause::Application
        } else {
            Cause::PeerClosed(code)
        };
        let attempt = cx.attempt_after(run, acks.as_ref());
        let retry = cx.retry(cause, attempt);
        let carry = retry && cx.carries_queue();
        let (in_flight, mut carried) = cx.settle(id, in_flight, acks, carry);
        cx.fail(id, in_flight, SendFailure::ConnectionLost);
        if retry {
            // Sent while the close went on, after everything carried.
            carried.append(&mut next);
        }
        // Otherwise they waited for a reconnect the application's close (or shutdown)
        // cancelled.
        cx.end(id, next, SendFailure::Cancelled, false, ending);
        let reason = || format!("peer closed the connection with code {code}");
        cx.reconnect(retry, request, carried, attempt, reason, None, now)
    }
}
