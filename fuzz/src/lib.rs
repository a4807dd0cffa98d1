//! # wxsocket-fuzz
//!
//! What the cargo-fuzz targets check, as plain functions over `&[u8]` so the committed
//! corpus is replayed by `cargo test` (`tests/replay.rs`) and the targets
//! (`fuzz_targets/*.rs`, built by `cargo fuzz` with the `libfuzzer` feature) stay one line.
//!
//! - [`session`]: arbitrary sequences of application calls, transport inputs (any
//!   `ConnId`, any order, any state) and time jumps into a [`Session`], with reconnection
//!   on or off; after every step the session's invariants are checked. Text frames are
//!   fed as bytes, valid UTF-8 or not, as a driver would: invalid UTF-8 must end the
//!   connection with 1007.
//!
//!   Flow control (SPEC §7): the receive and completion bounds are small; the
//!   application takes every event after every step, or only as many as `Take` steps say.
//!   The peer's frames wait in a socket that the driver reads only within the credit
//!   `read_credit` gives, spent with `ReadCredit::take`. Checked after every step: the
//!   untaken messages equal the ones handed over and not taken, at most
//!   `max_received_messages`, and less than `max_received_bytes + max_message_size` bytes;
//!   reading is paused exactly from reaching a bound until the application has taken them
//!   down to half of both (so full ⇒ paused, paused ⇒ above half), and the credit is what
//!   is left under the bounds; a connection the driver waits on is not readable without a
//!   `ResumeReading` (no lost wake-up) and is not declared dead by keepalive; every message
//!   handed over while the session reads that connection is delivered once, in order
//!   (binary ones are numbered); `CompletionsFull` exactly at the completion bound; each
//!   send completes exactly once (its outcome for the driver, and its event unless it
//!   succeeded without `send_completions`).
//!
//!   [`session_transcript`] runs the same on an input with the session recording a
//!   transcript ([`wxsocket_core::transcript`]): a crash file becomes a file `wxsocket
//!   replay` reads (`cargo run -p wxsocket-fuzz --example session_transcript -- CRASH`).
//! - [`connect_options`]: arbitrary URLs, headers, protocols, data and permessage-deflate
//!   offers into option validation; every input is accepted or rejected with an error
//!   naming its option, an accepted request never carries CR/LF or a forbidden header, and
//!   an accepted deflate offer is one our server-side acceptance and the client agree on;
//!   and a generated option set that is valid by construction is accepted as given.
//! - [`pool`]: several connections at once in a [`Pool`], every close call's result
//!   predicted from its arguments and the task's state; the same flow-control checks per
//!   task and for the pool's totals (`pool_receive_bounds`).
//! - [`inflate()`]: the permessage-deflate read path under tungstenite, on well-formed
//!   compressed conversations followed by arbitrary bytes (see [`mod@inflate`]).
//! - [`transcript()`]: transcripts, as they are or valid ones with fuzzer-chosen edits,
//!   replayed by [`wxsocket_core::transcript::replay`] and `replay_from`: an error or a
//!   consistent, deterministic replay (see [`mod@transcript`]).
//!
//! - [`tunnel()`]: a proxy's answers to the exchange that opens its tunnel (HTTP `CONNECT`
//!   or SOCKS5): what is written is the protocol's, errors name the proxy and never its
//!   password, and what is kept waiting for an answer is bounded (see [`mod@tunnel`]).
//! - [`link()`]: an open connection's read and write path, a server's valid frames fed in
//!   arbitrary pieces between sends, flushes and read credits: every message, pong and
//!   send whole and in order, reads within their credit (see [`mod@link`]).
//!
//! ```
//! // Any bytes are a valid input; a violated invariant panics.
//! wxsocket_fuzz::session(b"any bytes at all");
//! wxsocket_fuzz::connect_options(&[0xff; 64]);
//! wxsocket_fuzz::pool(&[]);
//! wxsocket_fuzz::inflate(b"\x01\x02compressed or not");
//! wxsocket_fuzz::transcript(b"{\"wxsocket_transcript\":1}\n");
//! wxsocket_fuzz::tunnel(b"\x01\x00\x05\x00");
//! wxsocket_fuzz::link(b"\x03\x01\x07\x02");
//! ```
#![forbid(unsafe_code)]

pub mod inflate;
pub use inflate::inflate;
pub mod transcript;
pub use transcript::transcript;
pub mod tunnel;
pub use tunnel::tunnel;
pub mod link;
pub use link::link;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use wxsocket_core::*;

/// One step of a session or pool run.
#[derive(Debug, Arbitrary)]
enum Op {
    Connect {
        valid: bool,
    },
    Send {
        len: u8,
        text: bool,
        conn: u8,
    },
    Close {
        code: u16,
        reason_len: u8,
        conn: u8,
    },
    Transport {
        target: u8,
        input: Input,
    },
    Advance {
        ms: u16,
    },
    /// A call whose `now` is earlier than one already seen.
    StaleSend {
        back_ms: u16,
        len: u8,
    },
    /// The application gives the reconnect policy's next attempts a new request
    /// (`reconnect_with`), offering sub-protocol `p` or another (the session's current
    /// connection; the pool task `conn`'s).
    ReconnectWith {
        same_protocol: bool,
        conn: u8,
    },
    /// The driver shuts the machine down (every handle was dropped).
    Shutdown,
    /// The application takes up to `n` events (when it does not take every event after
    /// every step).
    Take {
        n: u8,
    },
    /// The peer sends `count` binary messages of `len` bytes on a connection (the
    /// session's current one; the pool task `conn`'s).
    Burst {
        count: u8,
        len: u8,
        conn: u8,
    },
}

#[derive(Debug, Arbitrary)]
enum Input {
    Opened {
        protocol: u8,
    },
    ConnectFailed {
        kind: u8,
    },
    Message {
        len: u8,
    },
    /// A text frame's payload as it came off the wire: valid UTF-8 or not.
    Text {
        bytes: Vec<u8>,
    },
    Ping,
    Pong,
    PeerClosed {
        code: Option<u16>,
    },
    Written {
        oldest: bool,
        raw: u8,
    },
    Error {
        kind: u8,
    },
    Closed,
    /// Part of a frame arrived, completing nothing.
    Receiving,
}

#[derive(Debug, Arbitrary)]
struct Setup {
    policy: u8,
    keepalive: bool,
    reconnect: Option<(bool, Option<u8>, u64)>,
    queue_messages: u8,
    queue_bytes: u8,
    extra_buffer: u8,
    /// `receive_bounds` (messages, bytes), small unless the first is 255 (the default).
    receive: (u8, u8),
    /// `pool_receive_bounds` (messages, bytes), small.
    pool_receive: (u8, u8),
    /// `% 8`: `max_untaken_completions`; 128 and above: delivery acknowledgement on, with a
    /// barrier delay of `% 16` ms (the high bit was unused, so the committed corpus keeps
    /// what it meant and half of it now runs with acknowledgement).
    completions: u8,
    send_completions: bool,
    receive_while_closing: bool,
    /// The application takes events only when a `Take` step says (otherwise every event
    /// after every step, as before flow control).
    lazy: bool,
}

impl Setup {
    fn config(&self) -> SessionConfig {
        let policy = match self.policy % 3 {
            0 => CloseBeforeOpen::Abort,
            1 => CloseBeforeOpen::AfterOpen,
            _ => CloseBeforeOpen::Ignore,
        };
        let queued = usize::from(self.queue_bytes).max(1);
        let mut c = SessionConfig::default()
            .close_before_open(policy)
            .queue_bounds(usize::from(self.queue_messages % 8).max(1), queued)
            .max_buffered_bytes(queued + usize::from(self.extra_buffer))
            .max_message_size(200)
            .handshake_timeout(Duration::from_millis(500))
            .close_timeout(Duration::from_millis(300))
            .pool_limit(3)
            .receive_bounds(
                if self.receive.0 == u8::MAX {
                    1024
                } else {
                    usize::from(self.receive.0 % 8) + 1
                },
                usize::from(self.receive.1) * 4 + 1,
            )
            // At least a share of one for each of the 3 tasks (`Pool::new` refuses less).
            .pool_receive_bounds(
                usize::from(self.pool_receive.0 % 16) + 6,
                usize::from(self.pool_receive.1) * 8 + 6,
            )
            .max_untaken_completions(usize::from(self.completions % 8) + 1)
            .send_completions(self.send_completions)
            .receive_while_closing(self.receive_while_closing);
        if self.keepalive {
            c = c.keepalive(Duration::from_millis(200), Duration::from_millis(100));
        }
        if self.completions >= 128 {
            c = c.acknowledge(
                Acknowledgement::new()
                    .delay(Duration::from_millis(u64::from(self.completions % 16)))
                    .timeout(Duration::from_millis(400))
                    // Fixed: a crash replays with the same barrier payloads.
                    .seed(u64::from(self.completions)),
            );
        }
        if let Some((carry, max, seed)) = self.reconnect {
            c = c.reconnect(
                ReconnectPolicy::default()
                    .backoff(Duration::from_millis(20), Duration::from_millis(300))
                    .max_attempts(max.map(|m| u32::from(m % 5) + 1))
                    .carry_queue(carry)
                    .seed(seed),
            );
        }
        c
    }
}

fn kind(k: u8) -> TransportErrorKind {
    match k % 8 {
        0 => TransportErrorKind::Connect,
        1 => TransportErrorKind::Tls,
        // Refused (403, and the permanent redirects 301 and 308), retried (503, 302).
        2 => TransportErrorKind::HttpStatus([403, 503, 301, 308, 302][usize::from(k >> 3) % 5]),
        3 => TransportErrorKind::Protocol,
        4 => TransportErrorKind::InvalidUtf8,
        5 => TransportErrorKind::MessageTooBig,
        6 => TransportErrorKind::Negotiation,
        _ => TransportErrorKind::Io,
    }
}

/// The session's invariants, checked on everything a session or pool emits.
#[derive(Default)]
struct Invariants {
    config: SessionConfig,
    issued: BTreeMap<SendId, ConnId>,
    completed: BTreeSet<SendId>,
    /// Per connection: (saw Connecting, saw Open, saw Close, announced by Reconnecting).
    conns: BTreeMap<ConnId, [bool; 4]>,
    /// For a single session: the last connection an event was about.
    last_conn: Option<ConnId>,
    /// Send actions carried out but not confirmed, per connection (for `Written`).
    unconfirmed: BTreeMap<ConnId, Vec<SendId>>,
    earliest_dial: BTreeMap<ConnId, Instant>,
    dials: BTreeSet<ConnId>,
    /// The close code a connection must end with, from its transport error event.
    close_code: BTreeMap<ConnId, u16>,
    /// The code of the first close frame the peer sent on an open connection (a valid one):
    /// a transport error before our answer to it was out ends the connection with this
    /// code instead of the error's.
    peer_close: BTreeMap<ConnId, u16>,
    /// Every send's outcome as the driver learns it (`poll_completion`): succeeded or not.
    outcomes: BTreeMap<SendId, bool>,
    /// Per connection, the messages handed over while the machine read that connection
    /// for the application, not yet taken: each is delivered once, in this order.
    expect: BTreeMap<ConnId, VecDeque<Message>>,
    /// The task each such connection belongs to (a session is one task, `ConnId` 0).
    task_of: BTreeMap<ConnId, ConnId>,
    /// Untaken messages per task, and over all tasks (a pool's total).
    tasks: BTreeMap<ConnId, Untaken>,
    total: Untaken,
    /// A pool's total reached its bound (a task closed holding messages): from then on
    /// every task may be paused until the pool resumes everyone, which the model does not
    /// see, so a quiet task's credit is no longer checked.
    pool_was_full: bool,
    /// The last message number the peer sent.
    sent: u64,
    /// Delivery acknowledgement: per connection, the sends in the order they were handed
    /// to the driver, and each ping with how many sends went before it.
    sent_order: BTreeMap<ConnId, Vec<SendId>>,
    pings: BTreeMap<ConnId, Vec<(Bytes, usize)>>,
    /// Per connection, for each pong the peer sent (in order): how many of its sends the
    /// ping it answers proves read (`None`: it answers nothing).
    answers: BTreeMap<ConnId, VecDeque<Option<usize>>>,
    /// Sends a pong fed to the machine proved read, per connection.
    provable: BTreeMap<ConnId, BTreeSet<SendId>>,
    /// The connections each send was handed to the driver on.
    sent_on: BTreeMap<SendId, BTreeSet<ConnId>>,
}

/// Received messages not yet taken, and whether they hold reading paused: from reaching
/// a bound (count or bytes) until taken down to half of both.
#[derive(Debug, Default, Clone, Copy)]
struct Untaken {
    messages: usize,
    bytes: usize,
    paused: bool,
}

impl Untaken {
    fn is_full(&self, (messages, bytes): (usize, usize)) -> bool {
        self.messages >= messages || self.bytes >= bytes
    }

    fn is_low(&self, (messages, bytes): (usize, usize)) -> bool {
        self.messages <= messages / 2 && self.bytes <= bytes / 2
    }

    fn add(&mut self, len: usize, bounds: (usize, usize)) {
        self.messages += 1;
        self.bytes += len;
        if self.is_full(bounds) {
            self.paused = true;
        }
    }

    fn take(&mut self, len: usize, bounds: (usize, usize)) {
        self.messages -= 1;
        self.bytes -= len;
        if self.paused && self.is_low(bounds) {
            self.paused = false;
        }
    }

    /// The credit these bounds leave.
    fn credit(&self, (messages, bytes): (usize, usize)) -> ReadCredit {
        if self.paused {
            ReadCredit::PAUSED
        } else {
            ReadCredit::new(messages - self.messages, bytes - self.bytes)
        }
    }

    /// At most the bound of messages; bytes under the bound but for the one message
    /// that crossed it (at most `max_message_size`); paused exactly as derived.
    fn check(&self, what: &str, (messages, bytes): (usize, usize), max_message: usize) {
        assert!(
            self.messages <= messages,
            "{what}: {} messages untaken, bound {messages}",
            self.messages
        );
        assert!(
            self.bytes < bytes + max_message,
            "{what}: {} bytes untaken, bound {bytes}",
            self.bytes
        );
        if self.is_full((messages, bytes)) {
            assert!(self.paused, "{what}: at the bound but reading");
        }
        if self.paused {
            assert!(
                !self.is_low((messages, bytes)),
                "{what}: paused at half of both bounds"
            );
        }
    }
}

impl Invariants {
    fn bounds(&self) -> (usize, usize) {
        (
            self.config.max_received_messages,
            self.config.max_received_bytes,
        )
    }

    fn pool_bounds(&self) -> (usize, usize) {
        (
            self.config.max_pool_received_messages,
            self.config.max_pool_received_bytes,
        )
    }

    /// What each task of a pool holds for itself: half the pool's bounds divided by the
    /// connection limit (the tasks share the rest).
    fn share(&self) -> (usize, usize) {
        let limit = self.config.pool_limit.max(1) * 2;
        let (messages, bytes) = self.pool_bounds();
        (messages / limit, bytes / limit)
    }

    /// A pool's total stays within its bounds (bytes but for the messages that crossed
    /// the shared room's end and each task's share).
    fn check_pool_total(&self) {
        let c = &self.config;
        let t = self.total;
        assert!(
            t.messages <= c.max_pool_received_messages,
            "pool: {} messages untaken, bound {}",
            t.messages,
            c.max_pool_received_messages
        );
        let slack = (c.pool_limit + 1).saturating_mul(c.max_message_size);
        assert!(
            t.bytes < c.max_pool_received_bytes.saturating_add(slack),
            "pool: {} bytes untaken, bound {}",
            t.bytes,
            c.max_pool_received_bytes
        );
    }

    /// The credit a pool gives a reading connection of `task`: never more than the task's
    /// own bounds leave, and never paused while the task holds half its share or less and
    /// its own bounds leave room (what the others hold does not pause it then), unless the
    /// pool's total reached its bound.
    fn check_pool_credit(&self, task: ConnId, credit: ReadCredit, conn: ConnId) {
        let own = self.credit(task);
        assert!(
            credit.messages <= own.messages && credit.bytes <= own.bytes,
            "credit of {conn}: {credit:?}, more than its task's own {own:?}"
        );
        let b = self.tasks.get(&task).copied().unwrap_or_default();
        let (messages, bytes) = self.share();
        let has_share = messages > 0 && bytes > 0 && !self.pool_was_full;
        if has_share && !own.is_paused() && b.messages <= messages / 2 && b.bytes <= bytes / 2 {
            assert!(
                !credit.is_paused(),
                "{conn} paused by the pool while it holds {b:?}, at most half its share"
            );
        }
    }

    /// A message handed to the machine while it read `conn` (of `task`) for the
    /// application.
    fn handed_over(&mut self, conn: ConnId, task: ConnId, message: Message) {
        let (bounds, pool_bounds) = (self.bounds(), self.pool_bounds());
        self.tasks
            .entry(task)
            .or_default()
            .add(message.len(), bounds);
        self.total.add(message.len(), pool_bounds);
        self.pool_was_full |= self.total.is_full(pool_bounds);
        self.task_of.insert(conn, task);
        self.expect.entry(conn).or_default().push_back(message);
    }

    /// The credit a reading connection of `task` must have under its task's own bounds.
    fn credit(&self, task: ConnId) -> ReadCredit {
        self.tasks
            .get(&task)
            .copied()
            .unwrap_or_default()
            .credit(self.bounds())
    }

    /// A frame read from `conn`'s socket is handed to the machine: a pong proves the
    /// sends before the ping it answers read.
    ///
    /// `opened`: the connection's `Opened` was handed over before. A close frame read
    /// before it is input the machine does not act on (a dial has no frames), so it is
    /// not the peer's close.
    fn fed(&mut self, conn: ConnId, event: &TransportEvent, opened: bool) {
        if let TransportEvent::PeerClosed(peer) = event
            && opened
            && peer
                .code
                .is_none_or(wxsocket_core::close::is_valid_from_peer)
        {
            self.peer_close
                .entry(conn)
                .or_insert_with(|| peer.reported_code());
        }
        if let TransportEvent::Pong(_) = event {
            let answered = self.answers.get_mut(&conn).and_then(VecDeque::pop_front);
            if let Some(Some(before)) = answered {
                let sent = self.sent_order.get(&conn).map_or(&[][..], |s| &s[..before]);
                self.provable
                    .entry(conn)
                    .or_default()
                    .extend(sent.iter().copied());
            }
        }
    }

    /// A send's outcome, as the driver learns it: exactly once per issued send.
    fn outcome(&mut self, id: SendId, ok: bool) {
        assert!(
            self.issued.contains_key(&id),
            "outcome of {id} never issued"
        );
        assert!(self.outcomes.insert(id, ok).is_none(), "{id}: two outcomes");
    }

    fn action(&mut self, action: Action, now: Instant) {
        match action {
            Action::Dial { conn, request } => {
                assert!(self.dials.insert(conn), "{conn} dialled twice");
                if let Some(t) = self.earliest_dial.get(&conn) {
                    assert!(now >= *t, "{conn} dialled during its backoff");
                }
                assert!(matches!(request.url.scheme(), "ws" | "wss"));
            }
            Action::Send { conn, id, message } => {
                let issued = self.issued[&id];
                assert!(
                    self.carried(issued, conn),
                    "send {id} of {issued} written on {conn}"
                );
                assert!(message.len() <= self.config.max_message_size);
                let list = self.unconfirmed.entry(conn).or_default();
                if let Some(last) = list.last() {
                    assert!(*last < id, "sends out of order on {conn}");
                }
                list.push(id);
                self.sent_order.entry(conn).or_default().push(id);
                self.sent_on.entry(id).or_default().insert(conn);
            }
            Action::Ping { conn, payload } => {
                let before = self.sent_order.get(&conn).map_or(0, Vec::len);
                self.pings.entry(conn).or_default().push((payload, before));
            }
            Action::Close { frame, .. } => {
                assert!(frame.reason().len() <= close::MAX_REASON_BYTES);
            }
            _ => {}
        }
    }

    /// An event the application takes; `waiting`: connections the driver does not read
    /// because their credit was used up.
    fn event(&mut self, event: Event, now: Instant, single: bool, waiting: &BTreeSet<ConnId>) {
        let conn = event.conn();
        if single {
            if let Some(last) = self.last_conn {
                assert!(last <= conn, "an event of {conn} after one of {last}");
            }
            self.last_conn = Some(conn);
        }
        let seen = self.conns.entry(conn).or_default();
        assert!(!seen[2], "{event:?} after the close of {conn}");
        match &event {
            Event::Reconnecting {
                attempt,
                delay,
                unreported,
                unreported_opened,
                ..
            } => {
                assert!(!seen[0] && !seen[3]);
                // Attempts folded while notices waited untaken are attempts of this run.
                assert!(unreported_opened <= unreported);
                seen[3] = true;
                let policy = self.config.reconnect.as_ref().expect("a policy");
                assert!(*delay <= policy.ceiling(*attempt));
                assert!(policy.max_attempts.is_none_or(|m| *attempt <= m));
                self.earliest_dial.insert(conn, now + *delay);
            }
            Event::Connecting { .. } => {
                assert!(!seen[0]);
                seen[0] = true;
            }
            Event::Open { .. } => {
                assert!(seen[0] && !seen[1]);
                seen[1] = true;
            }
            Event::Message { message, .. } => {
                assert!(seen[1]);
                if let Message::Text(t) = message {
                    assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                }
                // Exactly the next message handed over on this connection.
                let next = self.expect.get_mut(&conn).and_then(VecDeque::pop_front);
                assert_eq!(
                    next.as_ref(),
                    Some(message),
                    "message on {conn} lost, repeated or out of order"
                );
                let (bounds, pool_bounds) = (self.bounds(), self.pool_bounds());
                let task = self.task_of[&conn];
                let untaken = self.tasks.get_mut(&task).expect("a task with messages");
                untaken.take(message.len(), bounds);
                self.total.take(message.len(), pool_bounds);
            }
            Event::Error { error, .. } => {
                assert!(seen[0]);
                if let ConnectionError::KeepaliveTimeout(_) = error {
                    assert!(
                        !waiting.contains(&conn),
                        "{conn} declared dead while its reading was paused"
                    );
                }
                if let ConnectionError::Transport(e) = error {
                    // RFC 6455 §7.4.1, written out: the close code of a failed connection.
                    let code = match e.kind {
                        TransportErrorKind::Protocol => 1002,
                        TransportErrorKind::InvalidUtf8 => 1007,
                        TransportErrorKind::MessageTooBig => 1009,
                        _ => 1006,
                    };
                    self.close_code.insert(conn, code);
                }
            }
            Event::SendDelivered { id, duplicate, .. } => {
                assert!(
                    self.config.acknowledge.is_some(),
                    "delivered without acknowledgement"
                );
                // Only a pong proves a message read: a peer's close frame may have crossed
                // ours unread.
                let proven = self.provable.get(&conn).is_some_and(|p| p.contains(id));
                assert!(
                    proven,
                    "{id} delivered on {conn} before anything proved it read"
                );
                let resent = self.sent_on[id].iter().any(|c| *c != conn);
                assert_eq!(*duplicate, resent, "{id}'s duplicate mark");
            }
            _ => {}
        }
        match &event {
            Event::SendCompleted { id, .. }
            | Event::SendDelivered { id, .. }
            | Event::SendFailed { id, .. } => {
                if let Event::SendCompleted { .. } = &event {
                    assert!(
                        self.config.acknowledge.is_none(),
                        "written reported as a final outcome with acknowledgement on"
                    );
                }
                if let Event::SendFailed {
                    reason: SendFailure::MaybeDelivered,
                    message,
                    ..
                } = &event
                {
                    assert!(self.config.acknowledge.is_some());
                    assert!(
                        message.is_some(),
                        "a MaybeDelivered message not handed back"
                    );
                }
                let issued = *self
                    .issued
                    .get(id)
                    .expect("completion of an id never issued");
                assert!(
                    self.carried(issued, conn),
                    "{id} of {issued} completed on {conn}"
                );
                assert!(self.completed.insert(*id), "{id} completed twice");
                let ok = !matches!(event, Event::SendFailed { .. });
                assert_eq!(self.outcomes.get(id), Some(&ok), "{id}'s event and outcome");
            }
            Event::Close { code, reason, .. } => {
                assert!(*code >= 1000 && *code < 5000, "close code {code}");
                if let Some(expected) = self.close_code.get(&conn) {
                    assert!(
                        code == expected || self.peer_close.get(&conn) == Some(code),
                        "close code {code} of {conn} after its error ({expected}, or the \
                         peer's close code {:?})",
                        self.peer_close.get(&conn)
                    );
                }
                assert!(reason.len() <= 200);
                self.conns.entry(conn).or_default()[2] = true;
            }
            _ => {}
        }
    }

    fn finish(&self) {
        // Every send completes exactly once: an outcome for the driver, and an event
        // unless it succeeded without `send_completions`.
        let missing: Vec<_> = self
            .issued
            .keys()
            .filter(|id| {
                let reported = self.completed.contains(id);
                match self.outcomes.get(id) {
                    None => true,
                    Some(true) => reported != self.config.send_completions,
                    Some(false) => !reported,
                }
            })
            .collect();
        assert!(missing.is_empty(), "sends never completed: {missing:?}");
        let lost: Vec<_> = self.expect.iter().filter(|(_, q)| !q.is_empty()).collect();
        assert!(lost.is_empty(), "messages never delivered: {lost:?}");
        for (conn, seen) in &self.conns {
            assert!(seen[2], "{conn} never got its close event");
            assert!(seen[0] || seen[3], "{conn} lacks its connecting event");
        }
    }

    /// Whether a send accepted on `issued` may be written or completed on `conn`: the
    /// same connection, or a later attempt it was carried to (`carry_queue`).
    fn carried(&self, issued: ConnId, conn: ConnId) -> bool {
        let carry = self
            .config
            .reconnect
            .as_ref()
            .is_some_and(|r| r.carry_queue);
        issued == conn || (carry && issued < conn)
    }
}

/// The transport event a driver makes of one input (a message larger than
/// `max_message_size` fails the connection with `MessageTooBig`, as the driver's reader
/// refuses it).
fn transport_event(input: &Input, conn: ConnId, inv: &mut Invariants) -> TransportEvent {
    let event = raw_event(input, conn, inv);
    match event {
        TransportEvent::Message(m) if m.len() > inv.config.max_message_size => {
            TransportEvent::Error(TransportError::new(
                TransportErrorKind::MessageTooBig,
                "message too big",
            ))
        }
        event => event,
    }
}

/// The dial stage a driver reports before it reports `Opened`, drawn from the open's
/// protocol byte (not an input of its own: a new variant of [`Input`] would change how the
/// committed corpus decodes). Sent to whatever connection the open goes to, so a stale or
/// misplaced stage is exercised too.
fn stage_before(input: &Input) -> Option<TransportEvent> {
    let Input::Opened { protocol } = input else {
        return None;
    };
    let stage = match (protocol / 3) % 5 {
        0 => DialStage::Resolving,
        1 => DialStage::Connecting,
        2 => DialStage::Tunnel,
        3 => DialStage::Tls,
        _ => DialStage::Upgrade,
    };
    Some(TransportEvent::Dialing(stage))
}

fn raw_event(input: &Input, conn: ConnId, inv: &mut Invariants) -> TransportEvent {
    match input {
        Input::Opened { protocol } => TransportEvent::Opened(Box::new(
            Handshake::default().with_protocol(match protocol % 3 {
                0 => None,
                1 => Some("p".into()),
                _ => Some("other".into()),
            }),
        )),
        Input::ConnectFailed { kind: k } => {
            TransportEvent::ConnectFailed(TransportError::new(kind(*k), "fuzz"))
        }
        Input::Message { len } => TransportEvent::Message(numbered(inv, *len)),
        // What a driver does with a text frame: a message if it is UTF-8, otherwise the
        // connection fails with InvalidUtf8 (and must close with 1007).
        Input::Text { bytes } => match String::from_utf8(bytes.clone()) {
            Ok(text) => TransportEvent::Message(Message::text(text)),
            Err(_) => TransportEvent::Error(TransportError::new(
                TransportErrorKind::InvalidUtf8,
                "invalid UTF-8 in a text frame",
            )),
        },
        Input::Ping => TransportEvent::Ping(Default::default()),
        // The peer answers the latest ping of the connection (RFC 6455 §5.5.3 allows it),
        // or sends an unsolicited pong when there is none.
        Input::Pong => {
            let ping = inv.pings.get(&conn).and_then(|p| p.last().cloned());
            inv.answers
                .entry(conn)
                .or_default()
                .push_back(ping.as_ref().map(|(_, before)| *before));
            TransportEvent::Pong(ping.map(|(payload, _)| payload).unwrap_or_default())
        }
        Input::PeerClosed { code } => TransportEvent::PeerClosed(PeerClose {
            code: *code,
            reason: "fuzz".into(),
        }),
        // Our frames moving on to a full socket: drawn from an unknown id's write (255), so
        // the committed corpus decodes as before but for that.
        Input::Written {
            oldest: false,
            raw: u8::MAX,
        } => TransportEvent::Sending,
        // Our close frame (or the answer to the peer's) written: likewise drawn from an
        // unknown id's write (254).
        Input::Written {
            oldest: false,
            raw: 254,
        } => TransportEvent::CloseWritten,
        Input::Written { oldest, raw } => {
            let list = inv.unconfirmed.entry(conn).or_default();
            let id = if *oldest && !list.is_empty() {
                list.remove(0)
            } else {
                SendId::from_raw(u64::from(*raw))
            };
            TransportEvent::SendWritten(id)
        }
        Input::Error { kind: k } => TransportEvent::Error(TransportError::new(kind(*k), "fuzz")),
        Input::Closed => TransportEvent::Closed,
        Input::Receiving => TransportEvent::Receiving,
    }
}

fn bytes_of(len: u8) -> Vec<u8> {
    vec![b'x'; usize::from(len)]
}

/// The peer's next binary message: its number, padded to `len` bytes.
fn numbered(inv: &mut Invariants, len: u8) -> Message {
    inv.sent += 1;
    let mut bytes = inv.sent.to_string().into_bytes();
    bytes.resize(bytes.len().max(usize::from(len)), b'x');
    Message::binary(bytes)
}

/// Whether a driver only gets this by reading the socket, so not while reading is paused:
/// data and control frames, read errors (those answered with a close frame) and the end
/// of the stream.
fn is_read(event: &TransportEvent) -> bool {
    match event {
        TransportEvent::Message(_)
        | TransportEvent::Ping(_)
        | TransportEvent::Pong(_)
        | TransportEvent::PeerClosed(_)
        | TransportEvent::Receiving
        | TransportEvent::Closed => true,
        TransportEvent::Error(e) => e.kind.sends_close_frame(),
        _ => false,
    }
}

/// What the fuzz targets drive: a session or a pool.
trait Machine: Driven {
    fn next_event(&mut self) -> Option<Event>;
    fn next_completion(&mut self) -> Option<Completion>;
}

impl Machine for Session {
    fn next_event(&mut self) -> Option<Event> {
        self.poll_event()
    }
    fn next_completion(&mut self) -> Option<Completion> {
        self.poll_completion()
    }
}

impl Machine for Pool {
    fn next_event(&mut self) -> Option<Event> {
        self.poll_event()
    }
    fn next_completion(&mut self) -> Option<Completion> {
        self.poll_completion()
    }
}

/// The IO driver: the peer's frames wait in a socket per connection and are read only
/// within the machine's credit; actions are carried out; the application takes events.
#[derive(Default)]
struct Driver {
    /// Frames the peer sent and the driver has not read, per connection, in TCP's order.
    socket: BTreeMap<ConnId, VecDeque<TransportEvent>>,
    /// Connections whose credit the driver found used up: not read until
    /// `ResumeReading`.
    waiting: BTreeSet<ConnId>,
    /// Connections whose transport the driver knows is over (aborted, failed, ended).
    finished: BTreeSet<ConnId>,
    /// Connections whose `Opened` was handed to the machine.
    opened: BTreeSet<ConnId>,
    /// Connections dialled, in order.
    dialled: Vec<ConnId>,
    /// The application takes events only on `Take` steps.
    lazy: bool,
    /// The last time the application found no event waiting: every event it takes was
    /// produced at this time or later (with lazy taking, possibly well before it is taken).
    drained_at: Option<Instant>,
}

impl Driver {
    /// Transport input for `conn`: a read goes through the socket, anything else to the
    /// machine at once.
    fn input<M: Machine>(&mut self, m: &mut M, conn: ConnId, event: TransportEvent, now: Instant) {
        if is_read(&event) {
            self.socket.entry(conn).or_default().push_back(event);
            return;
        }
        if matches!(
            event,
            TransportEvent::Error(_) | TransportEvent::ConnectFailed(_)
        ) {
            self.finished.insert(conn);
        }
        if let TransportEvent::Opened(_) = event {
            self.opened.insert(conn);
        }
        m.handle(conn, event, now);
    }

    /// After a step: the driver takes the send outcomes and carries out the actions, the
    /// application takes up to `quota` events, the driver reads what its credit allows;
    /// again until nothing more is read. `live`: the connections the driver reads;
    /// `task`: the task a reading connection belongs to.
    #[allow(clippy::too_many_arguments)]
    fn settle<M: Machine>(
        &mut self,
        m: &mut M,
        inv: &mut Invariants,
        now: Instant,
        mut quota: usize,
        single: bool,
        live: &dyn Fn(&M) -> Vec<ConnId>,
        task: &dyn Fn(&M, ConnId) -> ConnId,
    ) {
        loop {
            while let Some((id, outcome)) = m.next_completion() {
                inv.outcome(id, outcome.is_ok());
            }
            while quota > 0 {
                let Some(e) = m.next_event() else {
                    self.drained_at = Some(now);
                    break;
                };
                quota -= 1;
                // Judged at the earliest time it can have been produced (a reconnect
                // delay counts from then).
                let produced = self.drained_at.map_or(now, |t| t.min(now));
                inv.event(e, produced, single, &self.waiting);
            }
            while let Some(a) = m.poll_action() {
                match &a {
                    Action::Dial { conn, .. } => self.dialled.push(*conn),
                    Action::ResumeReading { conn } => {
                        self.waiting.remove(conn);
                    }
                    Action::Abort { conn } => {
                        self.finished.insert(*conn);
                    }
                    _ => {}
                }
                inv.action(a, now);
            }
            if !self.read(m, inv, now, live, task) {
                return;
            }
        }
    }

    /// Reads each connection while its credit lasts (a credit taken, spent message by
    /// message, asked again when used up). Returns whether anything was fed.
    fn read<M: Machine>(
        &mut self,
        m: &mut M,
        inv: &mut Invariants,
        now: Instant,
        live: &dyn Fn(&M) -> Vec<ConnId>,
        task: &dyn Fn(&M, ConnId) -> ConnId,
    ) -> bool {
        let mut fed = false;
        let mut conns: BTreeSet<ConnId> = live(m).into_iter().collect();
        conns.extend(
            self.socket
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(c, _)| *c),
        );
        for conn in conns {
            let mut credit = m.read_credit(conn);
            if credit.is_paused() {
                if !self.finished.contains(&conn) {
                    self.waiting.insert(conn);
                }
                continue;
            }
            while !credit.is_paused() {
                let Some(event) = self.socket.get_mut(&conn).and_then(VecDeque::pop_front) else {
                    break;
                };
                fed = true;
                if let TransportEvent::Message(message) = &event {
                    if m.read_credit(conn) != ReadCredit::UNLIMITED {
                        inv.handed_over(conn, task(m, conn), message.clone());
                    }
                    credit.take(message.len());
                }
                if matches!(event, TransportEvent::Closed | TransportEvent::Error(_)) {
                    self.finished.insert(conn);
                }
                inv.fed(conn, &event, self.opened.contains(&conn));
                m.handle(conn, event, now);
                // The credit the driver holds is never more than the machine gives now,
                // and is used up exactly when the machine pauses.
                let now_credit = m.read_credit(conn);
                if now_credit != ReadCredit::UNLIMITED {
                    assert_eq!(
                        credit.is_paused(),
                        now_credit.is_paused(),
                        "credit of {conn}"
                    );
                    if !credit.is_paused() {
                        assert_eq!(credit, now_credit, "credit of {conn}");
                    }
                }
            }
        }
        fed
    }

    /// No lost wake-up: a connection the driver waits on is not readable until it is told.
    fn check_waiting<M: Machine>(&self, m: &M) {
        for conn in &self.waiting {
            if !self.finished.contains(conn) {
                assert!(
                    m.read_credit(*conn).is_paused(),
                    "{conn} may be read again but got no ResumeReading"
                );
            }
        }
    }

    /// Events the application takes after a step.
    fn quota(&self, op: &Op) -> usize {
        match op {
            _ if !self.lazy => usize::MAX,
            Op::Take { n } => usize::from(*n),
            _ => 0,
        }
    }
}

fn message(len: u8, text: bool) -> Message {
    if text {
        Message::text("é".repeat(usize::from(len / 2)))
    } else {
        Message::binary(bytes_of(len))
    }
}

fn close_args(code: u16, reason_len: u8) -> (Option<u16>, String) {
    let code = if code.is_multiple_of(4) {
        None
    } else {
        Some(code)
    };
    (code, "r".repeat(usize::from(reason_len)))
}

/// Winds a run down: closes, fails outstanding dials for good, lets every timer run out.
fn wind_down(
    now: &mut Instant,
    conns: impl Fn() -> Vec<ConnId>,
    mut step: impl FnMut(ConnId, Option<TransportEvent>, Instant),
    mut tick: impl FnMut(Instant),
) {
    let gone = TransportError::new(TransportErrorKind::HttpStatus(404), "gone");
    for _ in 0..4 {
        for conn in conns() {
            step(conn, None, *now);
            step(
                conn,
                Some(TransportEvent::ConnectFailed(gone.clone())),
                *now,
            );
            step(conn, Some(TransportEvent::Closed), *now);
        }
        *now += Duration::from_secs(60);
        tick(*now);
    }
}

/// The `session` target. Panics when an invariant breaks.
pub fn session(data: &[u8]) {
    session_recorded(data, None);
}

/// The [`session`] target's run of `data`, recorded as a transcript
/// ([`wxsocket_core::transcript`]): a crash input becomes a file that `wxsocket replay` and
/// the core's committed-transcripts test replay, without the fuzzer. Returns the transcript
/// (empty when `data` is too short to set a session up) and, when an invariant failed, the
/// panic's message (the transcript then ends at the failing step).
///
/// `cargo run -p wxsocket-fuzz --example session_transcript -- CRASH_FILE > bug.jsonl`
pub fn session_transcript(data: &[u8]) -> (String, Option<String>) {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&text);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        session_recorded(
            data,
            Some(Box::new(move |line: &str| {
                let mut t = sink.lock().unwrap_or_else(|e| e.into_inner());
                t.push_str(line);
                t.push('\n');
            })),
        )
    }));
    let failure = outcome
        .err()
        .map(|p| wxsocket_wire::connection::panic_message(&*p).to_owned());
    let text = text.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (text, failure)
}

/// Where [`session_recorded`] writes its transcript's lines.
type Sink = Box<dyn FnMut(&str) + Send>;

fn session_recorded(data: &[u8], record: Option<Sink>) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let config = setup.config();
    let mut s = Session::new(config.clone()).expect("a valid config");
    if let Some(sink) = record {
        s.start_recording(wxsocket_core::transcript::Redaction::none(), sink);
    }
    s.track_completions(true);
    let mut inv = Invariants {
        config: config.clone(),
        ..Invariants::default()
    };
    let start = Instant::now();
    let mut d = Driver {
        lazy: setup.lazy,
        drained_at: Some(start),
        ..Driver::default()
    };
    let mut now = start;
    let mut last_now = start;
    let mut shut_down = false;
    // A session is one task.
    let one = ConnId::from_raw(0);
    let live = |s: &Session| s.current().into_iter().collect::<Vec<_>>();
    let task = |_: &Session, _: ConnId| one;
    let check = |s: &Session, inv: &Invariants, d: &Driver, now: Instant| {
        // A message larger than a byte bound is held alone: the bytes stay within the larger
        // of the bound and the largest message.
        assert!(s.buffered_amount() <= config.max_buffered_bytes.max(config.max_message_size));
        if s.state() == ReadyState::Connecting {
            if config.acknowledge.is_none() {
                assert!(s.pending_sends() <= config.max_queued_messages);
                assert!(s.buffered_amount() <= config.max_queued_bytes || s.pending_sends() == 1);
            } else {
                // Messages resent after a drop come from the send buffer, and may hold the
                // queue above its own bounds (never above the buffer's).
                let in_flight = (config.max_buffered_bytes / 64).max(config.max_queued_messages);
                assert!(s.pending_sends() <= in_flight);
            }
        }
        if let Some(t) = s.poll_timeout() {
            assert!(t > now, "a deadline not after the latest now");
        }
        // Flow control: the session's count is the messages handed over and not taken.
        let b = s.backlog();
        let untaken = inv.tasks.get(&one).copied().unwrap_or_default();
        assert_eq!(
            (b.messages, b.bytes),
            (untaken.messages, untaken.bytes),
            "untaken messages"
        );
        untaken.check("session", inv.bounds(), config.max_message_size);
        assert_eq!(s.is_reading_paused(), untaken.paused, "reading paused");
        if let Some(conn) = s.current() {
            let credit = s.read_credit(conn);
            match s.state() {
                ReadyState::Open => assert_eq!(credit, inv.credit(one)),
                ReadyState::Closing if credit != ReadCredit::UNLIMITED => {
                    assert!(config.receive_while_closing);
                    assert_eq!(credit, inv.credit(one));
                }
                _ => assert_eq!(credit, ReadCredit::UNLIMITED, "{conn} is not read"),
            }
        }
        d.check_waiting(s);
    };
    while let (false, Ok(op)) = (u.is_empty(), Op::arbitrary(&mut u)) {
        let quota = d.quota(&op);
        match op {
            Op::Connect { valid } => {
                let url = if valid {
                    "ws://127.0.0.1:1/p"
                } else {
                    "ftp://x"
                };
                let r = s.connect(&ConnectOptions::new(url).protocol("p"), now);
                assert_eq!(r.is_ok(), valid && !shut_down);
                if valid && shut_down {
                    assert_eq!(r, Err(ConnectError::ShutDown));
                }
            }
            Op::ReconnectWith { same_protocol, .. } => {
                let protocol = if same_protocol { "p" } else { "q" };
                let options = ConnectOptions::new("ws://127.0.0.1:1/r").protocol(protocol);
                let before = s.current();
                let r = s.reconnect_with(&options, now);
                match r {
                    Ok(()) => assert!(before.is_some() && !shut_down),
                    Err(ConnectError::ShutDown) => assert!(shut_down),
                    Err(ConnectError::NoConnection) => assert!(before.is_none()),
                    Err(e) => panic!("reconnect_with: {e}"),
                }
                assert_eq!(s.current(), before, "reconnect_with leaves the connection");
            }
            Op::Shutdown => {
                s.shutdown(now);
                shut_down = true;
                assert!(
                    !matches!(s.state(), ReadyState::Open | ReadyState::Connecting),
                    "shutdown leaves nothing open or dialling: {}",
                    s.state()
                );
            }
            Op::Send { len, text, .. } => {
                let m = message(len, text);
                let n = m.len();
                let r = s.send(m, now);
                // The completions waiting, and one to come for every send not settled.
                let completions = s.backlog().completions + inv.issued.len() - inv.outcomes.len();
                let bound = config.max_untaken_completions;
                match r {
                    Ok(id) => {
                        assert!(
                            completions < bound,
                            "a send accepted at the completion bound"
                        );
                        inv.issued.insert(id, s.current().expect("a connection"));
                    }
                    Err(e) => {
                        if let SendError::CompletionsFull(_) = e {
                            assert!(completions >= bound, "CompletionsFull under the bound");
                        }
                        assert_eq!(e.into_message().len(), n, "message handed back")
                    }
                }
            }
            Op::StaleSend { back_ms, len } => {
                let at = now
                    .checked_sub(Duration::from_millis(u64::from(back_ms)))
                    .unwrap_or(start)
                    .max(start);
                if let Ok(id) = s.send(message(len, false), at) {
                    inv.issued.insert(id, s.current().expect("a connection"));
                }
            }
            Op::Close {
                code, reason_len, ..
            } => {
                let (code, reason) = close_args(code, reason_len);
                let before = s.state();
                if s.close(code, &reason, now).is_err() {
                    assert_eq!(s.state(), before, "a refused close changes nothing");
                }
            }
            Op::Transport { target, input } => {
                let conn = match target % 4 {
                    0 | 1 => s.current().or(d.dialled.last().copied()),
                    2 => d.dialled.iter().rev().nth(1).copied(),
                    _ => Some(ConnId::from_raw(u64::from(target))),
                };
                if let Some(conn) = conn {
                    if let Some(stage) = stage_before(&input) {
                        d.input(&mut s, conn, stage, now);
                    }
                    let event = transport_event(&input, conn, &mut inv);
                    d.input(&mut s, conn, event, now);
                }
            }
            Op::Burst { count, len, .. } => {
                if let Some(conn) = s.current() {
                    for _ in 0..count % 16 {
                        let event = transport_event(&Input::Message { len }, conn, &mut inv);
                        d.input(&mut s, conn, event, now);
                    }
                }
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms));
                s.handle_timeout(now);
            }
            Op::Take { .. } => {}
        }
        last_now = last_now.max(now);
        d.settle(&mut s, &mut inv, last_now, quota, true, &live, &task);
        check(&s, &inv, &d, last_now);
    }
    // The application takes everything; the driver reads what it may.
    d.settle(&mut s, &mut inv, now, usize::MAX, true, &live, &task);
    // The wind-down feeds each transport's end directly, waited on or not.
    d.waiting.clear();
    let s = std::cell::RefCell::new(s);
    wind_down(
        &mut now,
        || s.borrow().current().into_iter().collect(),
        |conn, e, t| match e {
            None => {
                let _ = s.borrow_mut().close(None, "", t);
            }
            Some(e) => s.borrow_mut().handle(conn, e, t),
        },
        |t| s.borrow_mut().handle_timeout(t),
    );
    let mut s = s.into_inner();
    d.settle(&mut s, &mut inv, now, usize::MAX, true, &live, &task);
    check(&s, &inv, &d, now);
    assert_eq!(s.poll_timeout(), None, "a timer left after winding down");
    assert_eq!(s.backlog(), Backlog::default(), "events left untaken");
    if shut_down {
        assert!(s.is_drained(), "shut down and wound down, but not drained");
    }
    inv.finish();
}

/// The `pool` target: several connections at once. Panics when an invariant breaks.
pub fn pool(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let config = setup.config();
    let mut p = Pool::new(config.clone()).expect("a valid config");
    p.track_completions(true);
    let mut inv = Invariants {
        config: config.clone(),
        ..Invariants::default()
    };
    let mut now = Instant::now();
    let mut d = Driver {
        lazy: setup.lazy,
        drained_at: Some(now),
        ..Driver::default()
    };
    // Each task by the id of its first connection.
    let tasks = std::cell::RefCell::new(Vec::<ConnId>::new());
    let mut shut_down = false;
    let pick =
        |conns: &[ConnId], i: u8| (!conns.is_empty()).then(|| conns[usize::from(i) % conns.len()]);
    let live = |p: &Pool| {
        tasks
            .borrow()
            .iter()
            .filter_map(|t| p.current(*t))
            .collect::<Vec<_>>()
    };
    let task = |p: &Pool, conn: ConnId| {
        tasks
            .borrow()
            .iter()
            .copied()
            .find(|t| p.current(*t) == Some(conn))
            .expect("a reading connection is its task's current one")
    };
    let check = |p: &Pool, inv: &Invariants, d: &Driver, now: Instant| {
        assert!(
            p.live() <= config.pool_limit,
            "more live connections than the limit"
        );
        if let Some(t) = p.poll_timeout() {
            assert!(t > now);
        }
        // Flow control: per task, and the pool's total.
        let b = p.backlog();
        assert_eq!(
            (b.messages, b.bytes),
            (inv.total.messages, inv.total.bytes),
            "untaken messages over the pool"
        );
        inv.check_pool_total();
        for (t, untaken) in &inv.tasks {
            untaken.check(&format!("task {t}"), inv.bounds(), config.max_message_size);
        }
        for t in tasks.borrow().iter() {
            if let Some(conn) = p.current(*t) {
                let credit = p.read_credit(conn);
                // A driver whose connections read at once is given no more, and a pause
                // all the same (its resume is the same `ResumeReading`).
                let concurrent = p.concurrent_read_credit(conn);
                assert!(
                    concurrent.messages <= credit.messages && concurrent.bytes <= credit.bytes,
                    "{conn}: concurrent credit {concurrent:?} over {credit:?}"
                );
                assert_eq!(concurrent.is_paused(), credit.is_paused(), "{conn}");
                if credit != ReadCredit::UNLIMITED {
                    inv.check_pool_credit(*t, credit, conn);
                } else {
                    assert_ne!(p.state(conn), ReadyState::Open, "{conn} open but not read");
                }
            }
        }
        d.check_waiting(p);
    };
    while let (false, Ok(op)) = (u.is_empty(), Op::arbitrary(&mut u)) {
        let quota = d.quota(&op);
        let conns = tasks.borrow().clone();
        match op {
            Op::Connect { valid } => {
                let url = if valid {
                    "ws://127.0.0.1:1/p"
                } else {
                    "ftp://x"
                };
                let live = p.live();
                match p.connect(&ConnectOptions::new(url).protocol("p"), now) {
                    Ok(c) => {
                        assert!(!shut_down, "a connection after shutdown");
                        tasks.borrow_mut().push(c);
                    }
                    Err(ConnectError::ShutDown) => assert!(valid && shut_down),
                    Err(ConnectError::TooManyConnections { limit }) => {
                        assert!(valid && live >= limit && !shut_down);
                    }
                    Err(_) => assert!(!valid),
                }
            }
            Op::Send { len, text, conn } => {
                if let Some(c) = pick(&conns, conn) {
                    let r = p.send(c, message(len, text), now);
                    // Over all tasks: at least the refusing task's waiting and to come.
                    let completions =
                        p.backlog().completions + inv.issued.len() - inv.outcomes.len();
                    match r {
                        Ok(id) => {
                            let on = p.current(c).expect("a task that accepted a send");
                            inv.issued.insert(id, on);
                        }
                        Err(SendError::CompletionsFull(_)) => {
                            assert!(completions >= config.max_untaken_completions);
                        }
                        Err(_) => {}
                    }
                }
            }
            Op::Close {
                code,
                reason_len,
                conn,
            } => {
                if let Some(c) = pick(&conns, conn) {
                    let (code, reason) = close_args(code, reason_len);
                    let before = p.state(c);
                    // During a backoff the task's connection is announced but not dialled.
                    let backing_off = p.current(c).is_some_and(|on| !d.dialled.contains(&on));
                    let result = p.close(c, code, &reason, now);
                    let expected = match code.unwrap_or(1000) {
                        code if code != 1000 && !(3000..=4999).contains(&code) => {
                            Err(CloseError::InvalidCode(code))
                        }
                        _ if reason.len() > 123 => Err(CloseError::ReasonTooLong(reason.len())),
                        _ => match before {
                            ReadyState::Idle | ReadyState::Closed => Err(CloseError::NotConnected),
                            ReadyState::Connecting
                                if !backing_off
                                    && config.close_before_open == CloseBeforeOpen::Ignore =>
                            {
                                Err(CloseError::NotOpenYet)
                            }
                            _ => Ok(()),
                        },
                    };
                    if before == ReadyState::Closed {
                        // A closed task the pool has already dropped answers NotConnected
                        // whatever the arguments; one it still holds checks them first.
                        assert!(
                            result == expected || result == Err(CloseError::NotConnected),
                            "close of {c} in {before}: {result:?}, expected {expected:?}"
                        );
                    } else {
                        assert_eq!(result, expected, "close of {c} in {before}");
                    }
                    let after = p.state(c);
                    match (&result, before) {
                        (Err(_), _) => assert_eq!(after, before, "a refused close changes nothing"),
                        (Ok(()), ReadyState::Open | ReadyState::Closing) => {
                            assert_eq!(after, ReadyState::Closing)
                        }
                        (Ok(()), _) if backing_off => assert_eq!(after, ReadyState::Closed),
                        (Ok(()), _) => {
                            let expected = match config.close_before_open {
                                CloseBeforeOpen::AfterOpen => ReadyState::Connecting,
                                _ => ReadyState::Closed,
                            };
                            assert_eq!(after, expected, "close while connecting");
                        }
                    }
                }
            }
            Op::Transport { target, input } => {
                let c = pick(&conns, target).unwrap_or(ConnId::from_raw(99));
                if let Some(stage) = stage_before(&input) {
                    d.input(&mut p, c, stage, now);
                }
                let event = transport_event(&input, c, &mut inv);
                d.input(&mut p, c, event, now);
            }
            Op::Burst { count, len, conn } => {
                if let Some(c) = pick(&conns, conn).and_then(|t| p.current(t)) {
                    for _ in 0..count % 16 {
                        let event = transport_event(&Input::Message { len }, c, &mut inv);
                        d.input(&mut p, c, event, now);
                    }
                }
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms));
                p.handle_timeout(now);
            }
            Op::StaleSend { .. } | Op::Take { .. } => {}
            Op::ReconnectWith {
                same_protocol,
                conn,
            } => {
                let protocol = if same_protocol { "p" } else { "q" };
                let request = ConnectOptions::new("ws://127.0.0.1:1/r")
                    .protocol(protocol)
                    .validate()
                    .expect("valid options");
                if let Some(c) = pick(&conns, conn) {
                    let before = p.state(c);
                    let r = p.reconnect_with_request(c, std::sync::Arc::new(request), now);
                    match r {
                        Ok(()) => assert!(!shut_down),
                        Err(ConnectError::ShutDown) => assert!(shut_down),
                        Err(ConnectError::NoConnection) => assert!(!shut_down),
                        Err(e) => panic!("reconnect_with: {e}"),
                    }
                    assert_eq!(p.state(c), before, "reconnect_with leaves the connection");
                }
            }
            Op::Shutdown => {
                p.shutdown(now);
                shut_down = true;
                for c in &conns {
                    assert!(
                        !matches!(p.state(*c), ReadyState::Open | ReadyState::Connecting),
                        "shutdown leaves nothing open or dialling: {c} {}",
                        p.state(*c)
                    );
                }
            }
        }
        d.settle(&mut p, &mut inv, now, quota, false, &live, &task);
        check(&p, &inv, &d, now);
    }
    d.settle(&mut p, &mut inv, now, usize::MAX, false, &live, &task);
    // The wind-down feeds each transport's end directly, waited on or not.
    d.waiting.clear();
    let p = std::cell::RefCell::new(p);
    let all = tasks.borrow().clone();
    wind_down(
        &mut now,
        || all.clone(),
        |conn, e, t| match e {
            None => {
                let _ = p.borrow_mut().close(conn, None, "", t);
            }
            Some(e) => p.borrow_mut().handle(conn, e, t),
        },
        |t| p.borrow_mut().handle_timeout(t),
    );
    let mut p = p.into_inner();
    d.settle(&mut p, &mut inv, now, usize::MAX, false, &live, &task);
    check(&p, &inv, &d, now);
    assert_eq!(p.poll_timeout(), None);
    assert_eq!(p.live(), 0);
    assert_eq!(p.backlog(), Backlog::default(), "events left untaken");
    if shut_down {
        assert!(p.is_drained(), "shut down and wound down, but not drained");
    }
    inv.finish();
}

#[derive(Debug, Arbitrary)]
struct OptionsCase {
    scheme: u8,
    host: String,
    rest: String,
    raw_url: Option<String>,
    data: Vec<(String, String)>,
    header: Vec<(String, String)>,
    protocols: Vec<String>,
    method: Option<String>,
    timeout_ms: Option<u16>,
    require_tls: bool,
    allowed_hosts: Vec<String>,
    /// perMessageDeflate: server / client no context takeover, server and client window
    /// bits, level.
    deflate: Option<(bool, bool, Option<u8>, u8, u32)>,
}

/// Headers an accepted request may never carry (the handshake's own, and `Referer`).
const FORBIDDEN: &[&str] = &[
    "referer",
    "host",
    "upgrade",
    "connection",
    "content-length",
    "transfer-encoding",
];

/// A set of options that is valid by construction (the completeness side: a validator
/// that refused too much would fail here).
#[derive(Debug, Arbitrary)]
struct ValidCase {
    /// ws, wss, http, https.
    scheme: u8,
    /// Host labels (letters and digits), or an IPv4 address.
    labels: Vec<Vec<u8>>,
    ipv4: Option<[u8; 4]>,
    port: Option<u16>,
    path: Vec<u8>,
    /// Any text: it is percent-encoded into the query.
    data: Vec<(String, String)>,
    /// `x-` plus a token; a value of visible ASCII and spaces.
    header: Vec<(Vec<u8>, Vec<u8>)>,
    protocols: Vec<Vec<u8>>,
    get: Option<bool>,
    timeout_ms: Option<u32>,
    require_tls: bool,
    allow_list: bool,
    deflate: Option<(bool, bool, Option<u8>, u8, u8)>,
}

/// `bytes` mapped onto `alphabet` (at least one character).
fn spelled(bytes: &[u8], alphabet: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .take(20)
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect();
    if text.is_empty() { "a".into() } else { text }
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const TCHAR: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";

impl ValidCase {
    fn options(&self) -> (ConnectOptions, String, Vec<String>) {
        let scheme = ["ws", "wss", "http", "https"][usize::from(self.scheme % 4)];
        let tls = matches!(scheme, "wss" | "https");
        let host = match self.ipv4 {
            Some([a, b, c, d]) => format!("{a}.{b}.{c}.{d}"),
            None => {
                let labels: Vec<String> = self
                    .labels
                    .iter()
                    .take(4)
                    .map(|l| spelled(l, ALNUM))
                    .collect();
                if labels.is_empty() {
                    "example.com".into()
                } else {
                    // A last label of digits only would be read as an IPv4 number.
                    format!("{}.example", labels.join("."))
                }
            }
        };
        // Port 0 cannot be dialled, and is refused: a valid case uses 1 in its place.
        let port = self
            .port
            .map(|p| format!(":{}", p.max(1)))
            .unwrap_or_default();
        let path = spelled(&self.path, b"abcXYZ019-._~/");
        let mut opts = ConnectOptions::new(format!("{scheme}://{host}{port}/{path}"));
        for (k, v) in self.data.iter().take(8) {
            opts = opts.data(k, v);
        }
        for (name, value) in self.header.iter().take(8) {
            let value: String = value
                .iter()
                .take(40)
                .map(|b| char::from(0x20 + b % 0x5f))
                .collect();
            opts = opts.header(format!("x-{}", spelled(name, TCHAR)), value);
        }
        let mut protocols: Vec<String> = Vec::new();
        for p in self.protocols.iter().take(6) {
            let p = spelled(p, TCHAR);
            if !protocols.contains(&p) {
                protocols.push(p.clone());
                opts = opts.protocol(p);
            }
        }
        if let Some(upper) = self.get {
            opts.method = Some(if upper { "GET" } else { "get" }.into());
        }
        if let Some(ms) = self.timeout_ms {
            opts = opts.timeout(Duration::from_millis(u64::from(ms % 86_400_000) + 1));
        }
        opts = opts.require_tls(self.require_tls && tls);
        if self.allow_list {
            opts = opts.allow_host("other.example").allow_host(host.clone());
        }
        if let Some((server_reset, client_reset, server_bits, client_bits, level)) = self.deflate {
            opts = opts.deflate(
                DeflateOptions::default()
                    .server_no_context_takeover(server_reset)
                    .client_no_context_takeover(client_reset)
                    .server_max_window_bits(server_bits.map(|b| 8 + b % 8))
                    .client_max_window_bits(8 + client_bits % 8)
                    .level(u32::from(level % 10)),
            );
        }
        (opts, host, protocols)
    }
}

/// The `connect_options` target: validation never panics; an accepted request is clean; a
/// valid option set is accepted, as given.
pub fn connect_options(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(case) = OptionsCase::arbitrary(&mut u) else {
        return;
    };
    if let Ok(valid) = ValidCase::arbitrary(&mut u) {
        let (opts, host, protocols) = valid.options();
        let request = opts
            .validate()
            .unwrap_or_else(|e| panic!("valid options refused: {e}: {opts:?}"));
        assert_eq!(request.host(), host);
        let tls = opts.url.starts_with("wss:") || opts.url.starts_with("https:");
        assert_eq!(request.is_tls(), tls, "{}", opts.url);
        assert_eq!(request.protocols, protocols);
        assert_eq!(request.headers.len(), opts.header.len());
        let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
        assert_eq!(query, opts.data, "data in the query, in order");
        assert_eq!(
            request.per_message_deflate.is_some(),
            opts.per_message_deflate
        );
    }
    let url = case.raw_url.clone().unwrap_or_else(|| {
        let scheme = ["ws", "wss", "http", "https", "ftp"][usize::from(case.scheme % 5)];
        format!("{scheme}://{}/{}", case.host, case.rest)
    });
    let mut opts = ConnectOptions::new(url);
    opts.data = case.data;
    opts.header = case.header;
    opts.protocols = case.protocols;
    opts.method = case.method;
    opts.timeout = case
        .timeout_ms
        .map(|ms| Duration::from_millis(u64::from(ms)));
    opts.require_tls = case.require_tls;
    opts.allowed_hosts = case.allowed_hosts;
    if let Some((server_reset, client_reset, server_bits, client_bits, level)) = case.deflate {
        opts = opts.deflate(
            DeflateOptions::default()
                .server_no_context_takeover(server_reset)
                .client_no_context_takeover(client_reset)
                .server_max_window_bits(server_bits)
                .client_max_window_bits(client_bits)
                .level(level % 16),
        );
    }
    match opts.validate() {
        Err(e) => {
            // Every rejection names its option first.
            let text = e.to_string();
            let field = text.split(':').next().unwrap_or_default();
            assert!(
                [
                    "url",
                    "header",
                    "protocols",
                    "method",
                    "timeout",
                    "perMessageDeflate",
                    "allowed_hosts"
                ]
                .contains(&field),
                "error without an option name: {text}"
            );
        }
        Ok(request) => {
            assert!(matches!(request.url.scheme(), "ws" | "wss"));
            assert!(!request.url.as_str().contains(['\r', '\n', ' ']));
            assert!(request.url.fragment().is_none());
            if opts.require_tls {
                assert!(request.is_tls());
            }
            for (name, value) in &request.headers {
                let n = name.as_str();
                assert!(
                    !FORBIDDEN.contains(&n) && !n.starts_with("sec-websocket-"),
                    "forbidden header {n}"
                );
                assert!(
                    !value
                        .as_bytes()
                        .iter()
                        .any(|b| matches!(b, b'\r' | b'\n' | 0)),
                    "CR/LF in {n}"
                );
            }
            for (i, p) in request.protocols.iter().enumerate() {
                assert!(
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
                );
                assert!(!request.protocols[..i].contains(p));
            }
            assert!(request.timeout.is_none_or(|t| !t.is_zero()));
            if let Some(offer) = &request.per_message_deflate {
                // A valid offer: a clean header, and whatever a server accepts of it, the
                // client agrees to.
                assert!((8..=15).contains(&offer.client_max_window_bits));
                assert!(
                    offer
                        .server_max_window_bits
                        .is_none_or(|b| (8..=15).contains(&b))
                );
                assert!(offer.level <= 9);
                let header = offer.offer_header();
                assert!(header.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
                let (server, answer) =
                    deflate::accept_offer(&header).expect("a server accepts our own offer");
                assert_eq!(offer.negotiate(&answer), Ok(server), "{header} / {answer}");
            }
        }
    }
}
