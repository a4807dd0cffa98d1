//! Session configuration: close-before-open policy, bounds, timeouts, keepalive.

use crate::error::ConfigError;
use std::time::Duration;

/// What `close` does while the socket is still connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CloseBeforeOpen {
    /// Abort the dial; queued messages fail as cancelled; close event 1006, unclean.
    /// The WHATWG WebSocket standard's close while connecting, except that no error event
    /// comes first: the close is the application's own choice, not a connection fault.
    #[default]
    Abort,
    /// Remember the close; on open, emit open, flush the queue, then close (the workaround
    /// WeChat's documentation gives, built in).
    AfterOpen,
    /// Refuse the close with [`crate::CloseError::NotOpenYet`] and change nothing (the
    /// race WeChat's documentation describes, for runtimes that must mimic it).
    Ignore,
}

/// The longest duration any timer setting may have: the handshake and close timeouts,
/// keepalive's interval and timeout, and the reconnect policy's base and cap (24 hours).
/// [`SessionConfig::validate`] and [`crate::ConnectOptions`] reject longer ones, naming the
/// field, so every deadline the session computes is representable.
pub const MAX_TIMER: Duration = Duration::from_secs(24 * 60 * 60);

/// How many connection notices (events other than messages and send outcomes:
/// `Connecting`, `Error`, `Reconnecting`, …) may wait untaken before the reconnect policy
/// holds back, so that an application that stopped taking events neither has failed
/// attempts pile theirs up nor grows without bound ([`ReconnectPolicy`]). Two rules apply
/// from this count on:
///
/// - a reconnection attempt that falls due waits once more, [`RECONNECT_HOLD_DELAY`]
///   (so at most about one attempt a second);
/// - an attempt's notices are held back, and an attempt that ends with nothing to report
///   but them (its dial failed, or it opened and dropped with no message, send outcome or
///   pong) is not queued at all when another attempt follows: it is counted in the next
///   [`Event::Reconnecting`](crate::Event::Reconnecting)'s `unreported` instead. Anything
///   else about the attempt (a message, a send outcome, taking events until fewer than
///   this wait) queues what was held, in order.
///
/// So a client whose application takes no events holds at most this many notices, plus
/// those of the attempt held and five for each connection that has other events
/// waiting (those are bounded by the receive and completion bounds), however long the
/// server stays away. Notices add up over the client's whole life: a program that never
/// takes events reaches the count after a dozen reconnections. Connections the
/// application opens itself are its own to pace: each `connect` queues a few notices,
/// which only taking events frees.
pub const RECONNECT_HOLD_NOTICES: usize = 64;

/// How much longer a reconnection attempt held by [`RECONNECT_HOLD_NOTICES`] waits: its
/// delay's ceiling, or this if longer. Then it goes, taken or not: a held client keeps
/// reconnecting, about once a second at most.
pub const RECONNECT_HOLD_DELAY: Duration = Duration::from_secs(1);

/// Liveness checking: ping after `interval` with nothing received, declare the peer dead when
/// nothing arrives within `timeout` of the ping. Anything counts: a message, a ping or pong, or
/// part of a large message still arriving
/// ([`TransportEvent::Receiving`](crate::TransportEvent::Receiving)); and so does a large
/// message of ours still going out, the socket taking more of it
/// ([`TransportEvent::Sending`](crate::TransportEvent::Sending)): the ping waits behind it.
/// What the socket's own buffers have taken is out of the driver's sight, so on a slow uplink
/// the timeout must cover the time those bytes take to leave. The adapters keep that small on
/// Linux and Android (at most 64 KiB not yet sent, `TCP_NOTSENT_LOWAT`, plus what is in flight,
/// which the peer's receive window bounds: 128 KiB on a 20 KB/s link is about 6 s); elsewhere
/// the socket may take a few MiB.
///
/// A timeout whose timer runs more than a second late (or more than `timeout`, when that is
/// shorter: the driver was not running, a suspended process or a stalled loop) waits once
/// more from then, since the peer's answer may be waiting unread; the next input, read
/// after the timers, then keeps the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Idle time (nothing received) before a ping is sent.
    pub interval: Duration,
    /// How long to wait after the ping for anything to arrive.
    pub timeout: Duration,
}

impl Keepalive {
    /// A ping after `interval` with nothing received, and the connection failed when nothing
    /// arrives within `timeout` of it ([`SessionConfig::keepalive`] sets one).
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self { interval, timeout }
    }
}

/// Delivery acknowledged by the peer (SPEC §8; off unless set with
/// [`SessionConfig::acknowledge`]).
///
/// A little while (`delay`) after messages are handed to the driver, the session sends a
/// barrier ping with a payload of its own (a counter and 64 bits drawn from [`Self::seed`]
/// and the connection's id); a pong answering it — or a later barrier, since a
/// peer may answer only the latest (RFC 6455 §5.5.3) — proves that the peer's WebSocket
/// stack read every message sent before that ping, and each of them ends in
/// [`crate::Event::SendDelivered`] instead of `SendCompleted`. The application's pings and
/// keepalive's acknowledge nothing: a peer may send pongs nobody asked for (§5.5.3 allows
/// them as heartbeats), and one with their payload proves nothing. While a barrier waits, a
/// fresh one follows each of those pings, so that the latest ping is a barrier. When this
/// side closes, a barrier ping goes just before its close frame
/// (unless a ping already covers every message), so messages sent up to the close are
/// acknowledged by its pong; the peer's close frame alone acknowledges nothing, since it may
/// have crossed ours unread. Messages not acknowledged when the connection
/// drops are sent again first on the next connection when the reconnect policy carries
/// the queue (marked `duplicate`: they may arrive twice), or fail with
/// [`crate::SendFailure::MaybeDelivered`], the message handed back. Unacknowledged messages
/// count toward `buffered_amount`, so a peer that stops answering makes sends wait. The
/// messages resent after a drop come from the send buffer: while reconnecting they may hold
/// the queue above [`SessionConfig::queue_bounds`] (never above the buffer's bounds), and new
/// sends are refused with `QueueFull` until it is back under them.
///
/// What a pong proves is that the peer's WebSocket implementation read the message, not
/// that its application handled it (a server library may read a whole socket buffer's
/// worth before its application sees the first; a crash then loses what it read).
///
/// The pongs are read like every other input: while reading is paused because the
/// application does not take its received messages ([`SessionConfig::receive_bounds`]),
/// no pong is read, nothing is acknowledged, and sends waiting for acknowledgement (and a
/// tokio `Sink`'s flush) wait too, without the ack timeout running (the backlog proves the
/// peer alive). An application that splits a socket into a sending and a receiving half
/// keeps the receiving half read.
///
/// ```
/// use std::time::{Duration, Instant};
/// use wxsocket_core::*;
///
/// let ack = Acknowledgement::new().delay(Duration::from_millis(2));
/// let mut s = Session::new(SessionConfig::default().acknowledge(ack)).unwrap();
/// let now = Instant::now();
/// let conn = s.connect(&ConnectOptions::new("ws://127.0.0.1:9000"), now).unwrap();
/// s.handle(conn, TransportEvent::Opened(Box::default()), now);
/// let id = s.send(Message::text("order 17"), now).unwrap();
/// s.handle(conn, TransportEvent::SendWritten(id), now); // written: not delivered yet
/// s.handle_timeout(now + Duration::from_millis(2)); // the barrier ping goes out
/// let ping = std::iter::from_fn(|| s.poll_action())
///     .find_map(|a| match a {
///         Action::Ping { payload, .. } => Some(payload),
///         _ => None,
///     })
///     .unwrap();
/// s.handle(conn, TransportEvent::Pong(ping), now + Duration::from_millis(3));
/// assert!(std::iter::from_fn(|| s.poll_event()).any(|e| matches!(
///     e,
///     Event::SendDelivered { id: d, duplicate: false, .. } if d == id
/// )));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acknowledgement {
    /// How long after a message is handed to the driver the barrier ping follows, so that
    /// one ping covers a batch; at most one such timed barrier waits for its pong at a
    /// time. Default 1 ms; zero sends it at the next timer call. The messages a reconnect
    /// sends again get a barrier at least every 64 messages or 256 KiB, so that a
    /// connection that drops partway through that backlog has still acknowledged its start
    /// (one barrier after all of it, against a peer that ends every connection sooner, was
    /// never answered, and the backlog was resent for ever).
    pub delay: Duration,
    /// How long a ping covering unacknowledged messages may wait for its pong before the
    /// peer is considered dead: an [`crate::ConnectionError::AckTimeout`] error ends the
    /// connection (then as for any drop). Suspended while reading is paused for the
    /// application (the pong may be waiting unread), and given once more when its timer
    /// runs late (as [`Keepalive`]'s). Default 10 s.
    pub timeout: Duration,
    /// Seed of the random part of the barrier pings' payloads: each is `wxsocket-ack `, a
    /// counter, a space and 16 hex digits drawn from this seed and the connection's id, so
    /// that a pong the peer makes up (an unasked pong, a guess at the counter) matches no
    /// barrier it has not read. The default is drawn at random for each value made (std's
    /// `RandomState`, as [`ReconnectPolicy`]'s); set one to make runs replay exactly (a
    /// transcript records the seed used, whichever it is). The digits are not a secret
    /// against a peer out to deceive: one that wants to fake acknowledgement can as well
    /// read and drop.
    pub seed: u64,
}

impl Default for Acknowledgement {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(1),
            timeout: Duration::from_secs(10),
            seed: random_seed(),
        }
    }
}

impl Acknowledgement {
    /// The defaults: 1 ms batching delay, 10 s timeout, a random seed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the seed of the barrier pings' payloads ([`Self::seed`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the batching delay before the barrier ping.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets how long a barrier ping may wait for its pong while nothing else arrives: a
    /// message or ping from the peer, or part of a message, restarts the wait (the pong
    /// may be queued behind them), up to eight timeouts after the wait began, so a peer
    /// that keeps sending but
    /// never answers still times out; reading paused for the application starts the wait
    /// afresh, and so does a pong that acknowledges some messages, for the rest, and so
    /// does our own message still going out to a full socket that takes more of it (the
    /// barrier ping waits behind it: a slow upload is not a dead peer; what the socket's
    /// buffers took is out of sight (see [`Keepalive`]), so on a slow uplink the timeout
    /// must cover the time those bytes take to leave). Messages
    /// sent after the last ping wait from the barrier ping that covers them. At the timeout
    /// the connection fails with `AckTimeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Automatic reconnection (off unless set). After a connection the
/// application did not close ends, the same request is dialled again after a delay drawn
/// with full jitter: uniform in `[0, min(cap, base × 2^(attempt−1))]` (a draw of 0 counts as
/// 1 ns, so the backoff always ends after it began), so the first retry comes within `base`
/// (100 ms by default).
///
/// What is retried: a dial that fails (name lookup, TCP, TLS, the handshake timing out, an
/// HTTP 5xx or 429 answer, a temporary redirect: 302, 303, 307, or another 3xx but 301 and
/// 308) and a connection that fails or drops once open. A TLS
/// failure is retried too, an untrusted certificate included (a captive portal's goes
/// away once the user has logged in, a mistaken deployment is rolled back): with no
/// `max_attempts` a client whose certificate check will never pass retries for ever, each
/// attempt's error naming the cause. Final: an HTTP 4xx answer other than 429 (unless
/// [`Self::retry_http_4xx`]; so is a SOCKS5 proxy's refusal of the client,
/// [`TransportErrorKind::ProxyRefused`](crate::TransportErrorKind::ProxyRefused)), a permanent redirect (301, 308: redirects are not followed,
/// and the same request meets it again), a server answer that agrees to what was not offered (a
/// sub-protocol or extension: a configuration mismatch), a clean close by the peer with a
/// code not in [`Self::retry_close_codes`], and the application's own close.
///
/// An attempt slows down for an application that does not take its events: when it falls
/// due while [`RECONNECT_HOLD_NOTICES`] connection notices or more wait untaken (each
/// failed attempt leaves four: its `Error` and `Close`, the next `Reconnecting` and
/// `Connecting`), it waits once more, its delay's ceiling or [`RECONNECT_HOLD_DELAY`]
/// (1 s) if longer, without an event, and then goes. And from that count on, an attempt
/// with nothing to report but its notices is folded into the next `Reconnecting` event's
/// `unreported` count rather than queued. So a client whose application stopped taking
/// events never stops reconnecting, and its notices stay bounded however long it goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Ceiling of the first delay; doubles per attempt. Default 100 ms.
    pub base: Duration,
    /// Largest ceiling. Default 30 s.
    pub cap: Duration,
    /// Most consecutive attempts before giving up; `None` keeps trying. Default `None`.
    /// A connection that stays open [`Self::min_uptime`] ends the run of attempts (the next
    /// drop starts again from the first delay); one that ends sooner continues it, and so
    /// does, with delivery acknowledgement on, one that was handed messages and
    /// acknowledged none of them: a peer that accepts connections and drops them at once,
    /// or never acknowledges, is given up on after this many, and the messages fail.
    pub max_attempts: Option<u32>,
    /// How long a connection must stay open to end the run of attempts. Default 5 s. A
    /// server that accepts and at once closes (with 1013, "try again later", say) or drops
    /// every connection is then dialled with growing delays, as one that refuses is, not
    /// again within milliseconds each time. Zero: every connection that opens ends the run.
    pub min_uptime: Duration,
    /// Keep messages queued while reconnecting (in order, under the queue bounds) for the
    /// next connection; otherwise each attempt that fails fails them. Default on.
    pub carry_queue: bool,
    /// Peer close codes that are retried (a clean close by the peer is otherwise final).
    /// Default 1001 (going away), 1011 (server error), 1012 (service restart), 1013 (try
    /// again later).
    pub retry_close_codes: Vec<u16>,
    /// Retry a handshake the server (or an HTTP proxy) rejected with HTTP 4xx, and a SOCKS5
    /// proxy's refusal of the client
    /// ([`TransportErrorKind::ProxyRefused`](crate::TransportErrorKind::ProxyRefused)). Default off (5xx is retried,
    /// and so is a temporary redirect, 302, 303 or 307: a redirect is not followed, its
    /// error names the `Location`, and a temporary one may end; set `max_attempts` for a
    /// server that keeps redirecting. A permanent one, 301 or 308, is final, with this
    /// flag too).
    /// 429 (Too Many Requests) is always retried, as 503 is; with either, the delay is at
    /// least the server's `Retry-After` in seconds, up to `cap`.
    pub retry_http_4xx: bool,
    /// Seed of the jitter source. The default is drawn at random for each policy made
    /// (std's `RandomState`, no IO of the core's), so that clients that lose their server
    /// together, in one process or in many, do not retry in lockstep; set one to make runs
    /// replay exactly (a transcript records the seed used, whichever it is). In a
    /// [`Pool`](crate::Pool) each task mixes the id of its first connection into it, so tasks
    /// dropped together draw different delays (and the same pool still replays exactly).
    pub seed: u64,
}

/// A seed that differs from one call to the next and from one process to another: std's
/// hasher keys are random per thread and move on with every `RandomState` made.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            max_attempts: None,
            min_uptime: Duration::from_secs(5),
            carry_queue: true,
            retry_close_codes: vec![1001, 1011, 1012, 1013],
            retry_http_4xx: false,
            seed: random_seed(),
        }
    }
}

impl ReconnectPolicy {
    /// Sets base and cap.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap;
        self
    }

    /// Sets the attempt limit.
    pub fn max_attempts(mut self, max: Option<u32>) -> Self {
        self.max_attempts = max;
        self
    }

    /// Sets how long a connection must stay open to end the run of attempts.
    pub fn min_uptime(mut self, uptime: Duration) -> Self {
        self.min_uptime = uptime;
        self
    }

    /// Sets whether queued messages carry over to the next connection.
    pub fn carry_queue(mut self, on: bool) -> Self {
        self.carry_queue = on;
        self
    }

    /// Sets the peer close codes that are retried.
    pub fn retry_close_codes(mut self, codes: Vec<u16>) -> Self {
        self.retry_close_codes = codes;
        self
    }

    /// Sets whether HTTP 4xx answers are retried.
    pub fn retry_http_4xx(mut self, on: bool) -> Self {
        self.retry_http_4xx = on;
        self
    }

    /// Sets the jitter seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The ceiling of the delay before `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base.saturating_mul(doubling).min(self.cap)
    }
}

/// Configuration of a [`Session`](crate::Session). Checked by [`SessionConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Close-before-open policy. Default [`CloseBeforeOpen::Abort`].
    pub close_before_open: CloseBeforeOpen,
    /// Most messages queued while connecting. Default 1024.
    pub max_queued_messages: usize,
    /// Most payload bytes queued while connecting. Default 8 MiB. A larger message (up to
    /// `max_message_size`) is queued alone, when nothing else is queued.
    pub max_queued_bytes: usize,
    /// Most bytes accepted but not yet confirmed written
    /// ([`Session::buffered_amount`](crate::Session::buffered_amount)). Must be at least
    /// `max_queued_bytes`. Default 16 MiB. A larger message (up to `max_message_size`) is
    /// accepted alone, once nothing else is in flight, so the bytes held are at most the larger
    /// of the two. It also bounds how many messages may be in flight: one per 64 bytes of it
    /// (262,144 by default; at least `max_queued_messages`), so that empty messages are bounded
    /// too.
    pub max_buffered_bytes: usize,
    /// Largest message, sent or received. Default 64 MiB (tungstenite's default). It is
    /// also what one connection may hold of a message still arriving, which the receive
    /// bounds do not count (they count the payload of messages received whole): a
    /// [`Pool`](crate::Pool) holds at most the payload its pool bound allows (see
    /// `max_pool_received_messages`) plus, per live connection, one message in progress of
    /// up to this size. The buffers that payload is read through add to that, per
    /// connection:
    /// - tungstenite's read buffer. A message read as one frame is read into a buffer of its
    ///   size, which the message then shares (and when a longer message comes, the new
    ///   buffer is twice the old one's size if that is more). Once the connection is idle
    ///   (its socket read dry, everything written out) after a frame of 32 KiB or more, the
    ///   buffer is made anew at 4 KiB: the message the application holds is then all that
    ///   keeps that memory. Shorter frames leave a buffer up to about twice their size.
    /// - A message that arrives in several frames (fragmented, or compressed and longer
    ///   than 32 KiB) is joined in a buffer that grows by doubling, up to twice what has
    ///   arrived (the message is trimmed to its length once whole), and the read buffer
    ///   takes the size of its largest frame, until the connection is idle.
    /// - Up to 64 KiB read ahead of the socket while data streams in, kept while reading
    ///   is paused.
    ///
    /// The process's memory adds what the allocator keeps of the buffers freed (with glibc,
    /// the smaller steps of the doubling). A pool of many connections whose peers may not
    /// be trusted sets it lower.
    pub max_message_size: usize,
    /// Handshake timeout when the connect options give none. Default 60 s. A timeout whose
    /// timer runs more than a second late (or more than the timeout, when that is shorter:
    /// the driver was not running, a suspended process or an application in the
    /// background) runs once more from then, as keepalive's does: the server's answer may be
    /// waiting unread.
    pub handshake_timeout: Duration,
    /// How long a closing transport may take before it is aborted. Default 10 s. As the
    /// handshake timeout, it runs once more from then when its timer runs more than a
    /// second late (or more than the timeout, when that is shorter), once per close: the
    /// peer's close frame may be waiting unread, or our answer to the peer's not yet
    /// written, and either would still give a clean close. Not the linger that follows
    /// once both close frames went ([`crate::close::CLOSE_LINGER`]): the close is clean
    /// whenever that ends.
    pub close_timeout: Duration,
    /// Keepalive; off by default.
    pub keepalive: Option<Keepalive>,
    /// Connection limit of a [`Pool`](crate::Pool). Default 5 (the `SocketTask` limit). A
    /// connection counts until its `Close` event, not from its `close` call: at the limit,
    /// a `connect` right after a `close` is refused while that close handshake goes on.
    pub pool_limit: usize,
    /// Automatic reconnection; off by default, as in WeChat's API.
    pub reconnect: Option<ReconnectPolicy>,
    /// Deliver the messages that arrive after this side sent its close frame and before
    /// the peer's close frame (RFC 6455 §5.5.1 allows the peer to send them). Off by
    /// default: the WHATWG WebSocket standard drops them once the socket is closing. A
    /// command-line client that closes at the end of its input turns it on, so replies
    /// already on their way are not lost.
    pub receive_while_closing: bool,
    /// Most received messages the application has not taken yet; at this bound (or
    /// `max_received_bytes`) the session pauses reading until half of them are taken, and
    /// TCP pushes back on the peer. Default 1024. While reading is paused the peer's pings
    /// are not read either, so they are answered only once reading resumes: a server with
    /// a keepalive of its own may drop a client that stops taking its events for longer.
    pub max_received_messages: usize,
    /// Most payload bytes of received messages not yet taken (one message larger than
    /// this is still delivered whole; reading pauses after it). Default 16 MiB.
    pub max_received_bytes: usize,
    /// A [`Pool`](crate::Pool)'s bound on received messages not yet taken, over all its
    /// connections (each also has its own, above). Default 4096. Each task holds a share of it
    /// for itself, whatever the others hold: half the bound divided by `pool_limit` (409 by
    /// default); the tasks share the other half. When the shared half is used up, the tasks at
    /// their share or over it pause (each until it is down to half its share, or until half the
    /// shared room is free again) while the others go on reading up to their share: a
    /// connection whose messages the application takes as they come is not paused (nor its
    /// peer's pings left unanswered) because another's pile up. A bound below twice
    /// `pool_limit` (a share of zero) is refused by [`Pool::new`](crate::Pool::new): raise the
    /// bound with the limit. A task that closes with messages untaken leaves them counted while
    /// its share goes to the task connecting in its place; should the total reach the bound
    /// while such messages are held, every task pauses until half the shared room is free.
    /// (A message read past a credit is delivered whole, so busy tasks can take the bytes
    /// past the bound by a message each; that does not pause a task under its share.) Each connection's read
    /// credit is what was left when it asked, so connections reading at the same moment on
    /// credits given at once would together take the shared room once each: a driver that
    /// reads them so (`wxsocket-tokio`'s task per connection) asks
    /// [`Pool::concurrent_read_credit`](crate::Pool::concurrent_read_credit), which gives
    /// each task at most its part of the room, and the total then passes the bound by at
    /// most the shared room (half the bound) and a message a task. A message still arriving is not counted until it is whole (see
    /// `max_message_size`).
    pub max_pool_received_messages: usize,
    /// A [`Pool`](crate::Pool)'s bound on their bytes, shared the same way (and at least twice
    /// `pool_limit` as well). Default 64 MiB.
    pub max_pool_received_bytes: usize,
    /// Most send completions (`SendCompleted`, `SendDelivered`, `SendFailed`) the
    /// application has not taken yet. A send accepted and not yet settled (queued, in
    /// flight, or waiting for its acknowledgement) counts as the completion it will queue,
    /// so the bound holds however the sends in flight settle (a connection that drops fails
    /// them all at once); pongs are counted once they arrive (at most
    /// [`MAX_PINGS`](crate::MAX_PINGS) more). At the bound a new send is refused with
    /// [`crate::SendError::CompletionsFull`] (an awaitable send waits) until some are taken
    /// or settle without an event (`send_completions` off). It therefore also bounds the
    /// sends in flight by count. Default 4096.
    pub max_untaken_completions: usize,
    /// Queue an [`crate::Event::SendCompleted`] for every message written (with delivery
    /// acknowledgement on, an [`crate::Event::SendDelivered`] for every message the peer
    /// acknowledged: the successful outcome either way). On by default; an application
    /// that does not look at them turns it off, and then they are not queued at all,
    /// `SendDelivered` included (`SendFailed` always is: a message that was not delivered
    /// is never dropped silently). A driver that awaits sends takes the outcomes from
    /// [`crate::Session::poll_completion`] instead, which this does not affect.
    pub send_completions: bool,
    /// Delivery acknowledgement ([`Acknowledgement`]). Default `None`: off, a send's success
    /// is `SendCompleted` (written to the socket).
    pub acknowledge: Option<Acknowledgement>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            close_before_open: CloseBeforeOpen::Abort,
            max_queued_messages: 1024,
            max_queued_bytes: 8 << 20,
            max_buffered_bytes: 16 << 20,
            max_message_size: 64 << 20,
            handshake_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(10),
            keepalive: None,
            pool_limit: 5,
            reconnect: None,
            receive_while_closing: false,
            max_received_messages: 1024,
            max_received_bytes: 16 << 20,
            max_pool_received_messages: 4096,
            max_pool_received_bytes: 64 << 20,
            max_untaken_completions: 4096,
            send_completions: true,
            acknowledge: None,
        }
    }
}

impl SessionConfig {
    /// Sets the close-before-open policy.
    pub fn close_before_open(mut self, policy: CloseBeforeOpen) -> Self {
        self.close_before_open = policy;
        self
    }

    /// Sets the queue bounds (messages, bytes).
    pub fn queue_bounds(mut self, messages: usize, bytes: usize) -> Self {
        self.max_queued_messages = messages;
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets the buffered-bytes bound (16 MiB by default). It must be at least the queue's
    /// byte bound (8 MiB by default), which the check refuses otherwise (field
    /// `max_buffered_bytes`): to lower it below that, lower
    /// [`queue_bounds`](Self::queue_bounds) too.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sets the maximum message size.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the handshake timeout for connects whose options give none (default 60 s): the
    /// dial and the opening handshake together (see the `handshake_timeout` field).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets how long a close handshake may take before the transport is aborted (default
    /// 10 s; see the `close_timeout` field).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Turns keepalive on: a ping after `interval` with nothing received, and the connection
    /// failed when nothing arrives within `timeout` of it ([`Keepalive`]).
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some(Keepalive { interval, timeout });
        self
    }

    /// Sets how many connections a [`Pool`](crate::Pool) holds at once (default 5, WeChat's
    /// `SocketTask` limit); a connect beyond it is refused. A connection counts until its
    /// `Close` event.
    pub fn pool_limit(mut self, limit: usize) -> Self {
        self.pool_limit = limit;
        self
    }

    /// Turns automatic reconnection on.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Delivers (or, by default, drops) the messages that arrive after this side's close
    /// frame and before the peer's.
    pub fn receive_while_closing(mut self, on: bool) -> Self {
        self.receive_while_closing = on;
        self
    }

    /// Sets the bounds on received messages not yet taken by the application (messages,
    /// bytes).
    pub fn receive_bounds(mut self, messages: usize, bytes: usize) -> Self {
        self.max_received_messages = messages;
        self.max_received_bytes = bytes;
        self
    }

    /// Sets a pool's bounds on received messages not yet taken, over all its connections.
    pub fn pool_receive_bounds(mut self, messages: usize, bytes: usize) -> Self {
        self.max_pool_received_messages = messages;
        self.max_pool_received_bytes = bytes;
        self
    }

    /// Sets the bound on send completions not yet taken.
    pub fn max_untaken_completions(mut self, completions: usize) -> Self {
        self.max_untaken_completions = completions;
        self
    }

    /// Queues `SendCompleted` events (the default), or not.
    pub fn send_completions(mut self, on: bool) -> Self {
        self.send_completions = on;
        self
    }

    /// Turns delivery acknowledgement on ([`Acknowledgement`]).
    pub fn acknowledge(mut self, ack: Acknowledgement) -> Self {
        self.acknowledge = Some(ack);
        self
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, problem| Err(ConfigError { field, problem });
        if self.max_queued_messages == 0 {
            return fail("max_queued_messages", "must be at least 1");
        }
        if self.max_queued_bytes == 0 {
            return fail("max_queued_bytes", "must be at least 1");
        }
        if self.max_buffered_bytes < self.max_queued_bytes {
            return fail(
                "max_buffered_bytes",
                "must be at least max_queued_bytes (the queue is flushed into the buffer on open)",
            );
        }
        if self.max_message_size == 0 {
            return fail("max_message_size", "must be at least 1");
        }
        let mut timers = vec![
            ("handshake_timeout", self.handshake_timeout),
            ("close_timeout", self.close_timeout),
        ];
        if let Some(k) = self.keepalive {
            timers.extend([
                ("keepalive.interval", k.interval),
                ("keepalive.timeout", k.timeout),
            ]);
        }
        if let Some(r) = &self.reconnect {
            timers.push(("reconnect.base", r.base));
        }
        if let Some(a) = self.acknowledge {
            timers.push(("acknowledge.timeout", a.timeout));
            if a.delay > MAX_TIMER {
                return fail("acknowledge.delay", "must be at most 24 hours");
            }
        }
        for (field, value) in timers {
            if value.is_zero() {
                return fail(field, "must be greater than zero");
            }
            if value > MAX_TIMER {
                return fail(field, "must be at most 24 hours");
            }
        }
        if let Some(r) = &self.reconnect {
            if r.cap < r.base {
                return fail("reconnect.cap", "must be at least reconnect.base");
            }
            if r.cap > MAX_TIMER {
                return fail("reconnect.cap", "must be at most 24 hours");
            }
            if r.min_uptime > MAX_TIMER {
                return fail("reconnect.min_uptime", "must be at most 24 hours");
            }
            if r.max_attempts == Some(0) {
                return fail(
                    "reconnect.max_attempts",
                    "must be at least 1 (or None for no limit)",
                );
            }
        }
        if self.pool_limit == 0 {
            return fail("pool_limit", "must be at least 1");
        }
        for (field, value) in [
            ("max_received_messages", self.max_received_messages),
            ("max_received_bytes", self.max_received_bytes),
            (
                "max_pool_received_messages",
                self.max_pool_received_messages,
            ),
            ("max_pool_received_bytes", self.max_pool_received_bytes),
            ("max_untaken_completions", self.max_untaken_completions),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1");
            }
        }
        Ok(())
    }
}
