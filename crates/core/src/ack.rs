//! Delivery acknowledgement of one open connection (SPEC §8): which messages the peer has
//! not yet acknowledged, the pings that can acknowledge them, and the barrier ping's timers.
//!
//! Messages and pings go out in the order their actions are queued, and a driver carries
//! out one connection's actions in order, so "the peer answered a ping queued after message
//! M" proves it read M (RFC 6455 §5.5.2: a pong answers a ping; §5.5.3: it may answer only
//! the latest). Each barrier ping therefore remembers how many messages were handed to the
//! driver before it (`covers`); its pong acknowledges that many.
//!
//! Only the session's own barrier pings acknowledge, each with a payload of its own: a peer
//! may send pongs nobody asked for (§5.5.3 allows unsolicited pongs, as heartbeats), and one
//! with the payload of the application's ping or keepalive's empty one would prove nothing
//! about what the peer read. A barrier's payload ends in 64 bits drawn from the
//! acknowledgement seed and the connection's id, so a peer that has not read the barrier
//! ping does not know its payload (a reviewer's server that never read sent pongs
//! `wxsocket-ack 1` to `5` unasked, and they delivered the messages when the payload was the
//! counter alone).

use crate::config::Acknowledgement;
use crate::deadline::{after, late};
use crate::ids::{ConnId, SendId};
use crate::jitter::Jitter;
use crate::message::Message;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The prefix of a barrier ping's payload (a counter and random digits follow), so a capture
/// shows what it is.
const BARRIER_PREFIX: &[u8] = b"wxsocket-ack ";
/// How many timeouts what the peer sends may extend the wait for a pong, from when the wait
/// began (or reading last resumed after a pause): a peer that keeps sending data but never
/// answers a ping still times out.
const MAX_EXTENDED_WAIT: u32 = 8;
/// While a reconnect's unacknowledged backlog is resent, a barrier ping follows at once,
/// whatever the batching delay, when this many messages handed over are not covered by any
/// ping yet (or [`BARRIER_EVERY_BYTES`] of them): a connection that drops partway through
/// the backlog has still acknowledged its start, so each connection makes progress. (New
/// messages keep one barrier per batch: a batch lost with its connection is resent so.)
const BARRIER_EVERY_MESSAGES: u64 = 64;
/// See [`BARRIER_EVERY_MESSAGES`]: the payload bytes not yet covered by a ping.
const BARRIER_EVERY_BYTES: usize = 256 << 10;

/// The wait for a pong covering unacknowledged messages.
#[derive(Debug, Clone, Copy)]
struct Wait {
    /// When the wait times out.
    deadline: Instant,
    /// When it began: what the peer sends extends it to `since` + [`MAX_EXTENDED_WAIT`]
    /// timeouts at most.
    since: Instant,
    /// It was restarted once because its timer ran late (see [`Acks::poll_timer`]).
    restarted: bool,
}

/// A ping sent on the connection and not yet answered.
#[derive(Debug)]
struct SentPing {
    payload: Bytes,
    /// Messages handed to the driver before it (the connection's count).
    covers: u64,
}

/// Acknowledgement state of an open (or closing) connection.
#[derive(Debug)]
pub(crate) struct Acks {
    config: Acknowledgement,
    /// Messages handed to the driver and not yet acknowledged, oldest first, kept to be sent
    /// again after a drop.
    unacked: VecDeque<(SendId, Message)>,
    /// How many of `unacked`, from the front, the driver confirmed written.
    written: usize,
    /// Messages of `unacked` past the written prefix that the driver confirmed written out
    /// of order (no driver does, but it is not wrong); empty on the usual path.
    written_ahead: Vec<SendId>,
    /// Messages acknowledged before the driver confirmed them written, oldest first (their
    /// `SendWritten` is still to come and is not unexpected).
    acked_unwritten: VecDeque<SendId>,
    /// Messages handed to the driver on this connection, and how many of them are
    /// acknowledged (`issued - acked == unacked.len()`).
    issued: u64,
    acked: u64,
    /// Pings sent and not answered, oldest first.
    pings: VecDeque<SentPing>,
    /// When the next barrier ping goes out, when one is due.
    barrier_at: Option<Instant>,
    /// Barrier pings sent so far (their payload's counter).
    barriers: u64,
    /// The random part of each barrier's payload (seeded from the configuration's seed and
    /// the connection's id).
    tokens: Jitter,
    /// Payload bytes handed over since the last ping.
    uncovered_bytes: usize,
    /// The wait for the oldest ping covering unacknowledged messages.
    wait: Option<Wait>,
}

/// What [`Acks::poll_timer`] asks the session to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AckTimer {
    /// Send this barrier ping.
    Ping(Bytes),
    /// The peer did not answer in time.
    TimedOut,
}

/// Whether a ping with `payload` could be taken for a barrier ping (its pong would
/// acknowledge messages): the application may not send one while acknowledgement is on.
pub(crate) fn is_barrier_payload(payload: &[u8]) -> bool {
    payload.starts_with(BARRIER_PREFIX)
}

impl Acks {
    /// The state of connection `conn`, just open.
    pub(crate) fn new(config: Acknowledgement, conn: ConnId) -> Self {
        Self {
            tokens: Jitter::new(Jitter::stream_seed(config.seed, conn.get())),
            config,
            unacked: VecDeque::new(),
            written: 0,
            written_ahead: Vec::new(),
            acked_unwritten: VecDeque::new(),
            issued: 0,
            acked: 0,
            pings: VecDeque::new(),
            barrier_at: None,
            barriers: 0,
            uncovered_bytes: 0,
            wait: None,
        }
    }

    /// `message` was handed to the driver as send `id` (`resent`: again, after a drop).
    /// Returns the barrier ping to send right after a resent message, when
    /// [`BARRIER_EVERY_MESSAGES`] or [`BARRIER_EVERY_BYTES`] are not covered by a ping now;
    /// otherwise the barrier timer is armed.
    pub(crate) fn on_send(
        &mut self,
        id: SendId,
        message: Message,
        resent: bool,
        now: Instant,
    ) -> Option<Bytes> {
        self.uncovered_bytes = self.uncovered_bytes.saturating_add(message.len());
        self.unacked.push_back((id, message));
        self.issued += 1;
        let covered = self
            .pings
            .back()
            .map_or(self.acked, |p| p.covers.max(self.acked));
        if resent
            && (self.issued - covered >= BARRIER_EVERY_MESSAGES
                || self.uncovered_bytes >= BARRIER_EVERY_BYTES)
        {
            return self.barrier(now);
        }
        self.schedule(now);
        None
    }

    /// The driver wrote send `id`; `false` when no message of this connection waits for it
    /// (never handed over, or its write already confirmed).
    pub(crate) fn on_written(&mut self, id: SendId) -> bool {
        if let Some((next, _)) = self.unacked.get(self.written)
            && *next == id
        {
            self.written += 1;
            self.extend_written();
            return true;
        }
        if self.acked_unwritten.front() == Some(&id) {
            self.acked_unwritten.pop_front();
            return true;
        }
        self.on_written_out_of_order(id)
    }

    #[cold]
    fn on_written_out_of_order(&mut self, id: SendId) -> bool {
        if let Some(at) = self.acked_unwritten.iter().position(|i| *i == id) {
            self.acked_unwritten.remove(at);
            return true;
        }
        let waiting = self
            .unacked
            .iter()
            .skip(self.written)
            .any(|(i, _)| *i == id);
        if waiting && !self.written_ahead.contains(&id) {
            self.written_ahead.push(id);
            return true;
        }
        false
    }

    /// Moves the written prefix over the messages confirmed written out of order.
    fn extend_written(&mut self) {
        while !self.written_ahead.is_empty() {
            let Some((next, _)) = self.unacked.get(self.written) else {
                return;
            };
            let Some(at) = self.written_ahead.iter().position(|i| i == next) else {
                return;
            };
            self.written_ahead.swap_remove(at);
            self.written += 1;
        }
    }

    fn push_ping(&mut self, payload: Bytes, now: Instant) {
        self.uncovered_bytes = 0;
        self.pings.push_back(SentPing {
            payload,
            covers: self.issued,
        });
        if self.issued > self.acked && self.wait.is_none() {
            self.wait = Some(self.begin_wait(now));
        }
    }

    fn begin_wait(&self, now: Instant) -> Wait {
        Wait {
            deadline: after(now, self.config.timeout),
            since: now,
            restarted: false,
        }
    }

    /// Something else arrived from the peer while a ping waits for its pong: the pong may
    /// be queued behind it (a peer sends its pong after the data it had already queued), so
    /// the timeout counts from here, up to [`MAX_EXTENDED_WAIT`] timeouts after the wait
    /// began. The timeout is the peer's silence, as keepalive's is, but a peer that streams
    /// data and never answers still times out.
    pub(crate) fn on_input(&mut self, now: Instant) {
        let timeout = self.config.timeout;
        if let Some(wait) = &mut self.wait {
            let restarted = after(now, timeout);
            wait.deadline = match wait
                .since
                .checked_add(timeout.saturating_mul(MAX_EXTENDED_WAIT))
            {
                Some(cap) => restarted.min(cap).max(wait.deadline),
                None => restarted,
            };
        }
    }

    /// Frames of ours waiting for the socket moved on
    /// ([`TransportEvent::Sending`](crate::TransportEvent::Sending)): the barrier ping may
    /// still be behind them, unsent, so the wait starts again from here, whole (not within
    /// [`MAX_EXTENDED_WAIT`]: this side's own frames cannot keep it waiting longer than they
    /// take to go out, and once they are out the timeout runs).
    pub(crate) fn on_sending(&mut self, now: Instant) {
        if let Some(wait) = &mut self.wait {
            *wait = Wait {
                deadline: after(now, self.config.timeout).max(wait.deadline),
                since: now,
                restarted: wait.restarted,
            };
        }
    }

    /// A pong arrived: the messages the oldest ping with its payload covers are
    /// acknowledged, and returned oldest first. A pong that answers nothing changes nothing.
    ///
    /// Barrier payloads are unique, so a pong matches at most one ping; the older ones it
    /// passes are given up, as a peer may answer only the latest (RFC 6455 §5.5.3).
    pub(crate) fn on_pong(&mut self, payload: &[u8], now: Instant) -> Vec<(SendId, Message)> {
        let Some(at) = self.pings.iter().position(|p| p.payload == payload) else {
            return Vec::new();
        };
        let covers = self.pings[at].covers;
        self.pings.drain(..=at);
        self.pings.retain(|p| p.payload != payload);
        let count = covers.saturating_sub(self.acked) as usize;
        let acked = self.take_front(count);
        if !acked.is_empty() {
            // Progress: the peer answers; a fresh timeout for what is still unanswered.
            self.wait = None;
        }
        if self.issued > self.acked && self.pings.iter().any(|p| p.covers > self.acked) {
            if self.wait.is_none() {
                self.wait = Some(self.begin_wait(now));
            }
        } else {
            self.wait = None;
        }
        self.schedule(now);
        acked
    }

    /// This side is about to send its close frame: the barrier ping to send first, when
    /// messages are not yet covered by a ping. Its pong, which the peer sends before it
    /// answers our close frame, acknowledges them. The peer's close frame itself proves
    /// nothing: when close frames cross, the peer sent its own without reading ours.
    pub(crate) fn barrier_before_close(&mut self, now: Instant) -> Option<Bytes> {
        self.barrier_at = None;
        self.barrier(now)
    }

    /// Whether this connection was handed messages and acknowledged none of them: it did
    /// not carry the delivery forward, so it does not end a run of reconnect attempts
    /// ([`crate::ReconnectPolicy::max_attempts`]).
    pub(crate) fn acknowledged_none(&self) -> bool {
        self.issued > 0 && self.acked == 0
    }

    /// The connection ends: its unacknowledged messages, oldest first.
    pub(crate) fn into_unacked(self) -> VecDeque<(SendId, Message)> {
        self.unacked
    }

    fn take_front(&mut self, count: usize) -> Vec<(SendId, Message)> {
        let count = count.min(self.unacked.len());
        // Past the written prefix, a message is either written out of order or still to be.
        for (id, _) in self.unacked.range(self.written.min(count)..count) {
            match self.written_ahead.iter().position(|i| i == id) {
                Some(at) => {
                    self.written_ahead.swap_remove(at);
                }
                None => self.acked_unwritten.push_back(*id),
            }
        }
        self.written = self.written.saturating_sub(count);
        self.acked += count as u64;
        let taken = self.unacked.drain(..count).collect();
        self.extend_written();
        taken
    }

    /// Arms the barrier timer when messages are not covered by any ping and no barrier
    /// waits for its pong.
    fn schedule(&mut self, now: Instant) {
        let covered = self.pings.back().map_or(self.acked, |p| p.covers);
        if self.barrier_at.is_none() && self.issued > covered && self.pings.is_empty() {
            // Never at `now` itself: like every deadline, after the time it was set (a zero
            // delay sends the barrier at the next timer call).
            self.barrier_at = Some(after(now, self.config.delay.max(Duration::from_nanos(1))));
        }
    }

    /// The earliest of the barrier and timeout deadlines.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (self.barrier_at, self.wait.map(|w| w.deadline)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`. `paused`: reading is paused for the application, so a
    /// pong may be waiting unread; the wait starts again instead of timing out.
    pub(crate) fn poll_timer(&mut self, now: Instant, paused: bool) -> Option<AckTimer> {
        if let Some(wait) = &mut self.wait
            && wait.deadline <= now
            && !paused
            && !wait.restarted
            && late(wait.deadline, now, self.config.timeout)
        {
            // The driver was not running when the timeout passed: the pong may be waiting
            // unread, so one more timeout from now (once, as keepalive does).
            wait.deadline = after(now, self.config.timeout);
            wait.restarted = true;
        }
        if self.wait.is_some_and(|w| w.deadline <= now) {
            if !paused {
                self.wait = None;
                return Some(AckTimer::TimedOut);
            }
            self.wait = Some(self.begin_wait(now));
        }
        if self.barrier_at.is_some_and(|b| b <= now) {
            self.barrier_at = None;
            return self.barrier(now).map(AckTimer::Ping);
        }
        None
    }

    /// A barrier ping covering every message handed over, when some are not covered yet.
    fn barrier(&mut self, now: Instant) -> Option<Bytes> {
        let covered = self.pings.back().map_or(self.acked, |p| p.covers);
        if self.issued <= covered {
            return None;
        }
        Some(self.new_barrier(now))
    }

    /// A ping of the application's or keepalive's was queued. It acknowledges nothing, but a
    /// peer may answer only the latest ping (RFC 6455 §5.5.3), which would leave the barriers
    /// already sent without their pong and time a healthy connection out. So while barriers
    /// wait, a fresh one follows at once (covering everything handed over), the latest again.
    pub(crate) fn after_other_ping(&mut self, now: Instant) -> Option<Bytes> {
        if self.pings.is_empty() {
            return None;
        }
        self.barrier_at = None;
        Some(self.new_barrier(now))
    }

    fn new_barrier(&mut self, now: Instant) -> Bytes {
        self.barriers += 1;
        let mut payload = BARRIER_PREFIX.to_vec();
        let token = self.tokens.next();
        payload.extend_from_slice(format!("{} {token:016x}", self.barriers).as_bytes());
        let payload = Bytes::from(payload);
        self.push_ping(payload.clone(), now);
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdAllocator;

    fn acks() -> (Acks, IdAllocator, Instant) {
        let config = Acknowledgement::new()
            .delay(Duration::from_millis(5))
            .timeout(Duration::from_secs(1));
        (
            Acks::new(config, ConnId::from_raw(1)),
            IdAllocator::default(),
            Instant::now(),
        )
    }

    #[test]
    fn a_resent_backlog_gets_a_barrier_every_64_messages_or_256_kib() {
        let (mut a, mut ids, t0) = acks();
        // New messages: one barrier for the batch, at the timer.
        let fresh = (0..200).filter_map(|_| a.on_send(ids.send(), Message::text("m"), false, t0));
        assert_eq!(fresh.count(), 0, "no barrier before the timer");
        let Some(AckTimer::Ping(first)) = a.poll_timer(t0 + Duration::from_millis(5), false) else {
            panic!("no barrier for the batch")
        };
        assert_eq!(a.on_pong(&first, t0).len(), 200);
        // Resent after a drop: a barrier right after every 64th.
        let barriers: Vec<_> = (1..=200u64)
            .filter_map(|n| {
                a.on_send(ids.send(), Message::text("m"), true, t0)
                    .map(|p| (n, p))
            })
            .collect();
        let after: Vec<u64> = barriers.iter().map(|(n, _)| *n).collect();
        assert_eq!(after, [64, 128, 192]);
        // The pong of the first acknowledges its 64, though the rest are not answered.
        assert_eq!(a.on_pong(&barriers[0].1, t0).len(), 64);
        let big = Message::binary(vec![0; 100 << 10]);
        let sent: Vec<bool> = (0..3)
            .map(|_| a.on_send(ids.send(), big.clone(), true, t0).is_some())
            .collect();
        assert_eq!(
            sent,
            [false, false, true],
            "a barrier once 256 KiB are uncovered"
        );
    }

    #[test]
    fn one_barrier_covers_a_batch_and_its_pong_acknowledges_it() {
        let (mut a, mut ids, t0) = acks();
        let sends: Vec<_> = (0..3).map(|_| ids.send()).collect();
        for id in &sends {
            a.on_send(*id, Message::text("m"), false, t0);
        }
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(a.poll_timer(t0, false), None);
        let t1 = t0 + Duration::from_millis(5);
        let Some(AckTimer::Ping(payload)) = a.poll_timer(t1, false) else {
            panic!("no barrier")
        };
        assert!(payload.starts_with(BARRIER_PREFIX));
        // A message sent after the barrier is not covered by it, and waits for its answer
        // (one barrier at a time).
        let later = ids.send();
        a.on_send(later, Message::text("late"), false, t1);
        assert_eq!(a.poll_timeout(), Some(t1 + Duration::from_secs(1)));
        let acked: Vec<_> = a
            .on_pong(&payload, t1)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(acked, sends);
        // Then the next barrier covers the late one.
        assert_eq!(a.poll_timeout(), Some(t1 + Duration::from_millis(5)));
    }

    #[test]
    fn a_pong_for_a_later_barrier_acknowledges_what_earlier_ones_cover() {
        let (mut a, mut ids, t0) = acks();
        let first = ids.send();
        a.on_send(first, Message::text("1"), false, t0);
        let t1 = t0 + Duration::from_millis(5);
        let Some(AckTimer::Ping(b1)) = a.poll_timer(t1, false) else {
            panic!("no barrier for the first")
        };
        let second = ids.send();
        a.on_send(second, Message::text("2"), false, t1);
        // Another ping of the application's or keepalive's goes out: a barrier follows it.
        let b2 = a
            .after_other_ping(t1)
            .expect("a barrier after the other ping");
        let acked: Vec<_> = a.on_pong(&b2, t1).into_iter().map(|(i, _)| i).collect();
        assert_eq!(acked, [first, second]);
        // The earlier barrier was answered by the later pong: nothing matches it any more.
        assert!(a.on_pong(&b1, t1).is_empty());
        // Nothing waits now: no barrier follows another ping.
        assert_eq!(a.after_other_ping(t1), None);
    }

    #[test]
    fn a_pong_that_answers_nothing_changes_nothing() {
        let (mut a, mut ids, t0) = acks();
        a.on_send(ids.send(), Message::text("1"), false, t0);
        assert!(a.on_pong(b"stray", t0).is_empty());
        assert_eq!(a.into_unacked().len(), 1);
    }

    #[test]
    fn the_timeout_waits_while_reading_is_paused() {
        let (mut a, mut ids, t0) = acks();
        a.on_send(ids.send(), Message::text("1"), false, t0);
        let t1 = t0 + Duration::from_millis(5);
        assert!(matches!(a.poll_timer(t1, false), Some(AckTimer::Ping(_))));
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(a.poll_timer(t2, true), None);
        assert_eq!(a.poll_timeout(), Some(t2 + Duration::from_secs(1)));
        assert_eq!(
            a.poll_timer(t2 + Duration::from_secs(1), false),
            Some(AckTimer::TimedOut)
        );
    }

    #[test]
    fn a_message_acknowledged_before_its_write_was_confirmed_is_not_unexpected() {
        let (mut a, mut ids, t0) = acks();
        let id = ids.send();
        a.on_send(id, Message::text("1"), false, t0);
        let b = barrier(&mut a, t0);
        assert_eq!(a.on_pong(&b, t0).len(), 1);
        assert!(a.on_written(id));
        assert!(!a.on_written(id));
    }

    /// A barrier covering everything handed over, sent now.
    fn barrier(a: &mut Acks, now: Instant) -> Bytes {
        a.barrier_before_close(now).expect("something to cover")
    }

    /// Three messages handed over, none confirmed written yet.
    fn three_sent() -> (Acks, Instant, Vec<SendId>) {
        let (mut a, mut ids, t0) = acks();
        let sent = (0..3)
            .map(|i| {
                let id = ids.send();
                a.on_send(id, Message::text(i.to_string()), false, t0);
                id
            })
            .collect();
        (a, t0, sent)
    }

    /// Each write is confirmed once: a second report of a send already written is
    /// unexpected, whether or not later sends are still unwritten, and whether or not the
    /// send was acknowledged in between.
    #[test]
    fn a_write_reported_twice_is_unexpected_the_second_time() {
        let (mut a, t0, sent) = three_sent();
        assert!(a.on_written(sent[0]));
        assert!(
            !a.on_written(sent[0]),
            "the first again, the second still unwritten"
        );
        assert!(a.on_written(sent[1]));
        assert!(
            !a.on_written(sent[1]),
            "the second again, the third still unwritten"
        );
        // The first two are acknowledged, the third before its write was confirmed.
        let b = barrier(&mut a, t0);
        assert_eq!(a.on_pong(&b, t0).len(), 3);
        assert!(!a.on_written(sent[1]), "acknowledged after its write");
        assert!(a.on_written(sent[2]));
        assert!(!a.on_written(sent[2]));
    }

    /// A write confirmed out of order is known, and so is the one it overtook.
    #[test]
    fn writes_confirmed_out_of_order_are_each_known_once() {
        let (mut a, _, sent) = three_sent();
        assert!(a.on_written(sent[1]));
        assert!(!a.on_written(sent[1]));
        assert!(a.on_written(sent[0]));
        assert!(a.on_written(sent[2]));
        assert!(!a.on_written(sent[0]));
        assert!(!a.on_written(sent[1]));
        assert!(!a.on_written(sent[2]));
        // The written prefix closed over the gap: nothing is left aside.
        assert_eq!((a.written, a.written_ahead.len()), (3, 0));
    }

    /// Acknowledged while a write confirmed out of order is still ahead of the gap: the
    /// ones not yet confirmed are still expected, the one confirmed is not expected again.
    #[test]
    fn an_acknowledgement_across_a_gap_in_the_writes_keeps_each_write_known_once() {
        let (mut a, t0, sent) = three_sent();
        assert!(a.on_written(sent[1]));
        let b = barrier(&mut a, t0);
        assert_eq!(a.on_pong(&b, t0).len(), 3);
        assert!(!a.on_written(sent[1]));
        assert!(a.on_written(sent[0]));
        assert!(a.on_written(sent[2]));
        assert!(!a.on_written(sent[0]));
        assert!(!a.on_written(sent[2]));
    }
}
