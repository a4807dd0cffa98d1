//! Open: messages flow both ways. The peer's close frame, a local `close` or `shutdown`
//! lead to Closing; a transport error, a silent peer (keepalive) or an unacknowledged send
//! (delivery acknowledgement) end it at once, then a reconnect delay if the policy says so.

use super::Conn;
use super::closing::Closing;
use super::context::{Cause, Context, Ending, Next, Run};
use crate::ack::{AckTimer, Acks};
use crate::close::{ABNORMAL, CloseRequest, NORMAL, PeerClose};
use crate::config::SessionConfig;
use crate::deadline::{after, late};
use crate::error::{ConnectionError, PingError, SendError, SendFailure};
use crate::event::Event;
use crate::ids::{ConnId, SendId};
use crate::message::Message;
use crate::queue::SendQueue;
use crate::request::HandshakeRequest;
use crate::transport::{Action, TransportError, TransportErrorKind, TransportEvent};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// The bytes of `max_buffered_bytes` each message in flight counts for in the bound on their
/// number (the memory a message costs besides its payload: its id, its frame, the driver's
/// command); 262,144 messages under the default 16 MiB.
pub(super) const IN_FLIGHT_WEIGHT: usize = 64;

#[derive(Debug)]
pub(super) struct Open {
    pub(super) id: ConnId,
    request: Arc<HandshakeRequest>,
    pub(super) in_flight: SendQueue<usize>,
    liveness: Option<Liveness>,
    /// Payloads of the application's pings not yet answered, oldest first.
    pings: VecDeque<Bytes>,
    /// With delivery acknowledgement on: what the peer has not acknowledged yet.
    acks: Option<Acks>,
    /// Where it stands in the run of reconnect attempts.
    run: Run,
}

#[derive(Debug, Clone, Copy)]
struct Liveness {
    /// When to ping, or, with a ping outstanding, when the peer is declared dead.
    deadline: Instant,
    awaiting_pong: bool,
    /// The wait for the pong was restarted once because its timer ran late (see
    /// [`Open::on_timeout`]).
    restarted: bool,
}

impl Open {
    pub(super) fn new(
        id: ConnId,
        request: Arc<HandshakeRequest>,
        acks: Option<Acks>,
        run: Run,
    ) -> Box<Self> {
        Box::new(Open {
            id,
            request,
            in_flight: SendQueue::default(),
            liveness: None,
            pings: VecDeque::new(),
            acks,
            run,
        })
    }

    /// Something arrived: the peer is alive; restart the idle interval.
    pub(super) fn touch(&mut self, config: &SessionConfig, now: Instant) {
        self.liveness = config.keepalive.map(|k| Liveness {
            deadline: after(now, k.interval),
            awaiting_pong: false,
            restarted: false,
        });
    }

    /// The earliest of the keepalive and acknowledgement timers.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let ack = self.acks.as_ref().and_then(Acks::poll_timeout);
        match (self.liveness.map(|l| l.deadline), ack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands send `id` to the driver.
    pub(super) fn hand_over(
        &mut self,
        cx: &mut Context,
        id: SendId,
        message: Message,
        now: Instant,
    ) {
        self.in_flight.push(id, message.len());
        let resent = cx.duplicates.contains(&id);
        let barrier = self
            .acks
            .as_mut()
            .and_then(|acks| acks.on_send(id, message.clone(), resent, now));
        cx.actions.push_back(Action::Send {
            conn: self.id,
            id,
            message,
        });
        if let Some(payload) = barrier {
            cx.actions.push_back(Action::Ping {
                conn: self.id,
                payload,
            });
        }
    }

    /// `send`: to the driver, within the buffer's bounds.
    pub(super) fn send(
        &mut self,
        cx: &mut Context,
        message: Message,
        now: Instant,
    ) -> Result<SendId, SendError> {
        // Bytes bound the buffer, and so does the count: one message per
        // `IN_FLIGHT_WEIGHT` bytes of the bound (at least the queue's count, which
        // is flushed into it on open), so empty messages cannot grow memory without
        // limit either.
        let max_in_flight =
            (cx.config.max_buffered_bytes / IN_FLIGHT_WEIGHT).max(cx.config.max_queued_messages);
        if !self
            .in_flight
            .fits(message.len(), max_in_flight, cx.config.max_buffered_bytes)
        {
            return Err(SendError::BufferFull(message));
        }
        let id = cx.accept_send();
        self.hand_over(cx, id, message, now);
        Ok(id)
    }

    /// With acknowledgement on, the barrier that follows a ping of the application's or
    /// keepalive's while barriers wait ([`Acks::after_other_ping`]).
    fn barrier_after_other_ping(&mut self, cx: &mut Context, now: Instant) {
        if let Some(payload) = self.acks.as_mut().and_then(|a| a.after_other_ping(now)) {
            cx.actions.push_back(Action::Ping {
                conn: self.id,
                payload,
            });
        }
    }

    /// `ping`: the application's ping, answered by an [`Event::Pong`].
    pub(super) fn ping(
        &mut self,
        cx: &mut Context,
        payload: Bytes,
        full: bool,
        now: Instant,
    ) -> Result<(), PingError> {
        if full || self.pings.len() >= super::MAX_PINGS {
            return Err(PingError::Full);
        }
        if self.acks.is_some() && crate::ack::is_barrier_payload(&payload) {
            return Err(PingError::Reserved);
        }
        self.pings.push_back(payload.clone());
        cx.actions.push_back(Action::Ping {
            conn: self.id,
            payload,
        });
        self.barrier_after_other_ping(cx, now);
        Ok(())
    }

    /// A message received: the peer is alive, and the application gets it. The connection
    /// stays open, so the session calls this in place, without a step through
    /// [`Self::on_event`] (most of a busy connection's inputs are messages).
    pub(super) fn on_message(&mut self, cx: &mut Context, message: Message, now: Instant) {
        if cx.config.keepalive.is_some() || self.acks.is_some() {
            // Their deadlines move (with neither, no deadline of the open connection does).
            cx.due = None;
        }
        self.touch(&cx.config, now);
        if let Some(acks) = &mut self.acks {
            acks.on_input(now);
        }
        cx.emit_message(self.id, message);
    }

    /// Input from the driver for this connection.
    pub(super) fn on_event(
        mut self: Box<Self>,
        cx: &mut Context,
        event: TransportEvent,
        now: Instant,
    ) -> Next {
        let conn = self.id;
        match event {
            TransportEvent::Message(message) => self.on_message(cx, message, now),
            TransportEvent::SendWritten(id) => {
                cx.on_written(conn, &mut self.in_flight, self.acks.as_mut(), id);
            }
            TransportEvent::Pong(payload) => {
                self.touch(&cx.config, now);
                if let Some(acks) = &mut self.acks {
                    let acked = acks.on_pong(&payload, now);
                    cx.deliver(conn, &mut self.in_flight, acked);
                }
                // The answer to one of the application's pings (and to every earlier one).
                if let Some(at) = self.pings.iter().position(|p| *p == payload) {
                    self.pings.drain(..=at);
                    cx.emit(Event::Pong { conn, payload });
                }
            }
            TransportEvent::Ping(_) | TransportEvent::Receiving => {
                self.touch(&cx.config, now);
                if let Some(acks) = &mut self.acks {
                    acks.on_input(now);
                }
            }
            TransportEvent::Sending => {
                self.touch(&cx.config, now);
                if let Some(acks) = &mut self.acks {
                    acks.on_sending(now);
                }
            }
            TransportEvent::PeerClosed(peer) => return self.on_peer_close(cx, peer, now),
            TransportEvent::Error(error) => {
                return self.fail(cx, ConnectionError::Transport(error), now);
            }
            TransportEvent::Closed => {
                let error = TransportError::new(
                    TransportErrorKind::Io,
                    "connection closed without a close frame",
                );
                return self.fail(cx, ConnectionError::Transport(error), now);
            }
            _ => cx.stats.unexpected_inputs += 1,
        }
        Conn::Open(self).into()
    }

    /// The keepalive timer, then the acknowledgement barrier and timeout.
    pub(super) fn on_timeout(mut self: Box<Self>, cx: &mut Context, now: Instant) -> Next {
        let paused = cx.is_paused();
        if let Some(l) = self.liveness
            && l.deadline <= now
        {
            let k = cx.config.keepalive.expect("liveness implies keepalive");
            if paused {
                // Reading is paused for the application: a pong would wait behind the
                // backlog, which itself proves the peer alive.
                self.liveness = Some(Liveness {
                    deadline: after(now, k.interval),
                    awaiting_pong: false,
                    restarted: false,
                });
            } else if l.awaiting_pong && !l.restarted && late(l.deadline, now, k.timeout) {
                // The driver was not running when the timeout passed (a suspended process,
                // a stalled loop): the pong may be waiting unread, so it gets one more
                // timeout from now. Once: a driver that is always this late still ends a
                // dead peer, a timeout later.
                self.liveness = Some(Liveness {
                    deadline: after(now, k.timeout),
                    awaiting_pong: true,
                    restarted: true,
                });
            } else if l.awaiting_pong {
                return self.fail(cx, ConnectionError::KeepaliveTimeout(k.timeout), now);
            } else {
                cx.actions.push_back(Action::Ping {
                    conn: self.id,
                    payload: Bytes::new(),
                });
                self.barrier_after_other_ping(cx, now);
                self.liveness = Some(Liveness {
                    deadline: after(now, k.timeout),
                    awaiting_pong: true,
                    restarted: false,
                });
            }
        }
        let timer = self.acks.as_mut().and_then(|a| a.poll_timer(now, paused));
        match timer {
            Some(AckTimer::Ping(payload)) => {
                cx.actions.push_back(Action::Ping {
                    conn: self.id,
                    payload,
                });
            }
            Some(AckTimer::TimedOut) => {
                let timeout = cx.config.acknowledge.map(|a| a.timeout).unwrap_or_default();
                return self.fail(cx, ConnectionError::AckTimeout(timeout), now);
            }
            None => {}
        }
        Conn::Open(self).into()
    }

    /// `close`: this side's close frame goes first.
    pub(super) fn close(
        self: Box<Self>,
        cx: &mut Context,
        request: CloseRequest,
        now: Instant,
    ) -> Next {
        Conn::Closing(self.begin_close(cx, request, now)).into()
    }

    /// `shutdown`: closed with 1000.
    pub(super) fn shutdown(self: Box<Self>, cx: &mut Context, now: Instant) -> Next {
        self.close(cx, CloseRequest::internal(NORMAL, ""), now)
    }

    /// `connect`: a new connection replaces this one; its close event (1000, replaced)
    /// comes at once, and its transport is closed in the background.
    pub(super) fn replace(self: Box<Self>, cx: &mut Context) {
        let Open {
            id,
            in_flight,
            acks,
            ..
        } = *self;
        cx.actions.push_back(Action::Close {
            conn: id,
            frame: CloseRequest::internal(NORMAL, super::REPLACED_REASON),
        });
        let (in_flight, _) = cx.settle(id, in_flight, acks, false);
        let replaced = Ending {
            code: NORMAL,
            reason: super::REPLACED_REASON,
            clean: false,
        };
        cx.end(id, in_flight, SendFailure::Replaced, true, replaced);
        cx.release_reads(id, false);
    }

    /// Sends this side's close frame: Closing, under the close timeout. With delivery
    /// acknowledgement, a barrier ping goes first when messages are not yet covered by one.
    pub(super) fn begin_close(
        self: Box<Self>,
        cx: &mut Context,
        request: CloseRequest,
        now: Instant,
    ) -> Box<Closing> {
        let Open {
            id,
            request: handshake,
            in_flight,
            mut acks,
            run,
            ..
        } = *self;
        if let Some(payload) = acks.as_mut().and_then(|a| a.barrier_before_close(now)) {
            cx.actions.push_back(Action::Ping { conn: id, payload });
        }
        cx.actions.push_back(Action::Close {
            conn: id,
            frame: request,
        });
        let closing = Closing::new(
            id,
            handshake,
            in_flight,
            acks,
            run.closing(now),
            after(now, cx.config.close_timeout),
            None,
        );
        cx.release_reads(id, closing.is_reading(&cx.config));
        closing
    }

    /// The peer's close frame: the driver answers it (RFC 6455 §5.5.1; tungstenite does so
    /// itself); the close event waits for the transport to end, or for the linger once the
    /// answer is written, within the close timeout.
    #[inline(never)] // rare: keeps the per-message path (`Session::step`) small
    fn on_peer_close(self: Box<Self>, cx: &mut Context, peer: PeerClose, now: Instant) -> Next {
        let Open {
            id,
            request,
            in_flight,
            acks,
            run,
            ..
        } = *self;
        let deadline = after(now, cx.config.close_timeout);
        let run = run.closing(now);
        let closing = Closing::new(id, request, in_flight, acks, run, deadline, Some(peer));
        Conn::Closing(closing).into()
    }

    /// The connection failed: error event, in-flight sends failed, close event with the
    /// failure's code (a close frame is still attempted for protocol-level failures), then
    /// a reconnect if the policy says so.
    #[inline(never)] // rare: keeps the per-message path (`Session::step`) small
    fn fail(self: Box<Self>, cx: &mut Context, error: ConnectionError, now: Instant) -> Next {
        let Open {
            id,
            request,
            in_flight,
            acks,
            run,
            ..
        } = *self;
        let code = match &error {
            ConnectionError::Transport(e) => e.kind.close_code(),
            _ => ABNORMAL,
        };
        let reason = error.to_string();
        let teardown = code != ABNORMAL;
        if teardown {
            cx.actions.push_back(Action::Close {
                conn: id,
                frame: CloseRequest::internal(code, &reason),
            });
        } else {
            cx.actions.push_back(Action::Abort { conn: id });
        }
        cx.emit(Event::Error { conn: id, error });
        let ending = Ending {
            code,
            reason: &reason,
            clean: false,
        };
        let attempt = cx.attempt_after(run, acks.as_ref());
        let retry = cx.retry(Cause::Lost, attempt);
        let carry = retry && cx.carries_queue();
        let (in_flight, carried) = cx.settle(id, in_flight, acks, carry);
        cx.end(id, in_flight, SendFailure::ConnectionLost, teardown, ending);
        cx.reconnect(retry, request, carried, attempt, || reason, None, now)
    }
}
