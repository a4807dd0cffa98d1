//! Automatic reconnection (issue 8) over real sockets, on both
//! adapters: every scenario is written once, generic over [`Adapter`], and the `scenarios!`
//! macro instantiates it for the tokio adapter (`on_tokio::…`) and the blocking adapter
//! (`on_blocking::…`), as in `conformance.rs`.
//!
//! The server is the test [`Peer`], which can close every connection with a code, drop
//! them, stop listening and listen again on the same port, go silent and hold handshakes.
//! Every wait is bounded and waits on an event or on the peer's record; the only fixed
//! waits are the "nothing more happens" checks at the end of a scenario, each a few times
//! the longest delay the policy could still produce.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use wxsocket_core::{
    ConnId, ConnectOptions, ConnectionError, Event, Message, ReadyState, ReconnectPolicy,
    SendError, SendFailure, SendId, SessionConfig, TransportErrorKind,
};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT, PoolAdapter, Task};
use wxsocket_tests::peer::{Mode, Peer, Snapshot};
use wxsocket_tests::scenario::{
    assert_quiet_for, client, close_cleanly, close_event, closed_port, expect_connecting,
};
use wxsocket_wire::tls::TlsRoots;

wxsocket_tests::on_both_adapters!(
    chat_survives_three_1012_restarts_and_an_abrupt_one,
    a_refusing_server_is_retried_up_to_max_attempts_then_queued_sends_fail,
    a_silent_server_is_detected_by_keepalive_and_reconnected,
    close_during_a_backoff_cancels_it,
    http_403_is_not_retried_by_default,
    a_permanent_redirect_is_not_dialled_again,
    a_server_that_closes_each_connection_at_once_is_given_up_on,
    a_busy_servers_retry_after_is_waited_out,
    attempts_slow_down_for_an_application_that_takes_no_events,
    untaken_notices_stay_bounded_and_every_dial_is_told_of,
    a_renewed_token_is_dialled_on_the_next_reconnection,
);

wxsocket_tests::on_both_pools!(
    a_pool_task_reconnects_after_a_1012_restart_with_its_messages_in_order,
    a_pool_task_dials_its_renewed_token_on_the_next_reconnection,
);

// ----- helpers -----

fn config(policy: ReconnectPolicy) -> SessionConfig {
    SessionConfig::default()
        .handshake_timeout(Duration::from_secs(3))
        .close_timeout(Duration::from_secs(1))
        .reconnect(policy)
}

/// The payload of chat message number `n`.
fn chat(n: u32) -> Message {
    Message::text(format!("m{n}"))
}

/// The number of a chat message the server received.
fn chat_number(m: &Message) -> u32 {
    match m {
        Message::Text(t) => t
            .as_str()
            .strip_prefix('m')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a chat message: {m:?}")),
        other => panic!("not a chat message: {other:?}"),
    }
}

/// The chat numbers the server received on each upgraded connection, in accept order.
fn received_per_connection(s: &Snapshot) -> Vec<Vec<u32>> {
    s.connections
        .iter()
        .filter(|c| c.upgraded)
        .map(|c| c.messages.iter().map(chat_number).collect())
        .collect()
}

fn upgraded(s: &Snapshot) -> usize {
    s.connections.iter().filter(|c| c.upgraded).count()
}

// ----- 1. the "done means": a chat client across server restarts -----

/// How one accepted chat message ended, from the client's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `SendCompleted` on this connection.
    Written(ConnId),
    /// `SendFailed`; `handed_back` when the event returned the message (it never left the
    /// session, so it cannot have reached the server).
    Failed { handed_back: bool },
}

/// One chat message the client's `try_send` accepted.
#[derive(Debug)]
struct Sent {
    number: u32,
    id: SendId,
    /// Opened connections the client had seen end when it sent this one.
    ended_before: usize,
    /// Connections the client had seen open when it sent this one.
    opened_before: usize,
}

impl Sent {
    /// The restart during whose reconnect window (after the client saw connection
    /// `restart` end, before it saw the next one open) this message was sent, if any.
    fn window(&self) -> Option<usize> {
        (self.ended_before >= 1 && self.ended_before == self.opened_before)
            .then(|| self.ended_before - 1)
    }
}

/// The client's record of the whole run.
#[derive(Default, Debug)]
struct ChatLog {
    sent: Vec<Sent>,
    /// Numbers `try_send` refused, with the refusal and how many opened connections
    /// the client had seen end by then.
    refused: Vec<(u32, String, usize)>,
    outcomes: HashMap<SendId, Vec<Outcome>>,
    /// Every event except messages and send outcomes, in order.
    lifecycle: Vec<Event>,
    /// Connections that opened, in order.
    opened: Vec<ConnId>,
    /// Close events of opened connections, in order.
    ended: Vec<Event>,
}

impl ChatLog {
    fn record(&mut self, event: Event) {
        match event {
            Event::SendCompleted { conn, id, .. } => {
                self.outcomes
                    .entry(id)
                    .or_default()
                    .push(Outcome::Written(conn));
            }
            Event::SendFailed { id, message, .. } => {
                self.outcomes.entry(id).or_default().push(Outcome::Failed {
                    handed_back: message.is_some(),
                });
            }
            Event::Message { .. } => {}
            other => {
                match &other {
                    Event::Open { conn, .. } => self.opened.push(*conn),
                    Event::Close { conn, .. } if self.opened.contains(conn) => {
                        self.ended.push(other.clone());
                    }
                    _ => {}
                }
                self.lifecycle.push(other);
            }
        }
    }

    fn settled(&self) -> bool {
        self.sent.iter().all(|s| self.outcomes.contains_key(&s.id))
    }
}

/// Messages the server must receive on each connection before the next restart, and after
/// the last reconnect before the client stops sending.
const PER_CONNECTION: usize = 10;
/// Messages the client sends at each tick (a burst, so some are in flight when the
/// server restarts).
const BURST: usize = 4;
/// The three clean restarts and the abrupt one.
const RESTARTS: usize = 4;

/// What the chat client did, shared with the restart script as it happens, so the server
/// restarts and comes back at points of the client's progress rather than of the clock.
#[derive(Default)]
struct Progress {
    state: Mutex<ProgressState>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct ProgressState {
    /// Per connection: the first message the client sent after it saw that connection
    /// open (those before were queued, and flushed first on open).
    first_after_open: [Option<u32>; RESTARTS + 1],
    /// Per restart: messages the client sent during its reconnect window.
    window_sent: [usize; RESTARTS],
    /// Per restart: the client saw a reconnect attempt fail (its dial refused) while
    /// messages sent in the window were queued.
    dial_failed_with_queue: [bool; RESTARTS],
}

impl Progress {
    fn get(&self) -> ProgressState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    /// Waits (at most [`EVENT_TIMEOUT`]) until the client sent `at_least` messages in the
    /// window of `restart` and saw an attempt fail while some of them were queued.
    fn wait_window(&self, restart: usize, at_least: usize) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, timeout) = self
            .changed
            .wait_timeout_while(state, EVENT_TIMEOUT, |p| {
                p.window_sent[restart] < at_least || !p.dial_failed_with_queue[restart]
            })
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            !timeout.timed_out(),
            "within {EVENT_TIMEOUT:?} of restart {restart}, the client did not send \
             {at_least} messages and see a dial fail with them queued: {state:?}"
        );
    }
}

/// The server side of the chat scenario: waits until the current connection carried the
/// messages queued for it and then some more, then restarts — three times closing every
/// connection with 1012 and once dropping them — stopping to listen during each restart,
/// and listening again only once the client, having seen its connection end, sent a burst
/// and saw a reconnect attempt refused while that burst was queued (so the queue had to
/// carry over).
fn restart_script(peer: &Peer, progress: &Progress) {
    for restart in 0..RESTARTS {
        let snap = peer.wait_for(
            &format!(
                "{PER_CONNECTION} messages sent after connection {restart} opened to arrive there"
            ),
            EVENT_TIMEOUT,
            |s| {
                // What arrives in order after the queued ones: once one arrived, so did
                // everything queued before it.
                let first = progress.get().first_after_open[restart];
                upgraded(s) == restart + 1
                    && first.is_some_and(|first| {
                        received_per_connection(s)[restart]
                            .iter()
                            .filter(|n| **n >= first)
                            .count()
                            >= PER_CONNECTION
                    })
            },
        );
        let live = snap.connections.len();
        peer.stop_listening();
        if restart < RESTARTS - 1 {
            assert_eq!(
                peer.close_all(1012, "service restart"),
                1,
                "one connection to close"
            );
        } else {
            peer.drop_all();
        }
        peer.wait_for("the restarted connections to end", EVENT_TIMEOUT, |s| {
            s.connections[..live].iter().all(|c| c.ended)
        });
        progress.wait_window(restart, BURST);
        peer.listen_again();
    }
}

fn chat_survives_three_1012_restarts_and_an_abrupt_one<A: Adapter>() {
    let name = A::NAME;
    // The server restarts four times within seconds, each connection open well under the
    // default `min_uptime`, which would continue the run of attempts across them (a
    // flapping server) and grow the delays past this scenario's window: here every open
    // ends the run, as a server that restarts now and then does.
    let policy = ReconnectPolicy::default()
        .seed(8)
        .min_uptime(Duration::ZERO);
    let first_ceiling = policy.ceiling(1);
    let peer = Peer::start(Mode::Echo);
    // The client sends 2000 messages a second and the server stays down for at least one
    // refused attempt per restart, so a window can last a few backoffs (the first three
    // ceilings add up to 700 ms): room to queue them all.
    let mut a: A = client(config(policy.clone()).queue_bounds(1 << 14, 8 << 20));
    let mut log = ChatLog::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let send_every = Duration::from_millis(2);

    a.connect(&ConnectOptions::new(peer.url()))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    let script_done = AtomicBool::new(false);
    let progress = Progress::default();
    std::thread::scope(|scope| {
        let script = scope.spawn(|| {
            restart_script(&peer, &progress);
            script_done.store(true, Ordering::SeqCst);
        });
        // The chat client: a numbered message every few milliseconds, events in between,
        // until the script is over and the last connection carried its share.
        let mut number = 0;
        let mut next_send = Instant::now();
        // Per restart: the connection the session was at (dialling, or backing off
        // before) right after the first message sent in its window; once that one's dial
        // fails, messages sent in the window were queued when an attempt failed.
        let mut queued_on: [Option<ConnId>; RESTARTS] = [None; RESTARTS];
        let mut after_last_open = 0;
        loop {
            let now = Instant::now();
            assert!(
                now < deadline,
                "[{name}] the chat did not finish in time; events: {:#?}; peer saw {:#?}",
                log.lifecycle,
                peer.snapshot()
            );
            if script.is_finished() && !script_done.load(Ordering::SeqCst) {
                // The script panicked: show why.
                if let Err(panic) = script.join() {
                    std::panic::resume_unwind(panic);
                }
                unreachable!();
            }
            if now >= next_send {
                for _ in 0..BURST {
                    match a.try_send(chat(number)) {
                        Ok(id) => {
                            let sent = Sent {
                                number,
                                id,
                                ended_before: log.ended.len(),
                                opened_before: log.opened.len(),
                            };
                            if let Some(restart) = sent.window() {
                                if queued_on[restart].is_none() {
                                    queued_on[restart] = a.current();
                                }
                                progress.update(|p| p.window_sent[restart] += 1);
                            } else if sent.opened_before == sent.ended_before + 1 {
                                let open = sent.ended_before;
                                if progress.get().first_after_open[open].is_none() {
                                    progress.update(|p| p.first_after_open[open] = Some(number));
                                }
                            }
                            log.sent.push(sent);
                        }
                        Err(e) => {
                            // Only while a connection is closing (the 1012 handshake) may a
                            // send be refused; a reconnect delay queues it.
                            assert!(
                                matches!(e, SendError::Closing(_)),
                                "[{name}] send {number} refused: {e:?}"
                            );
                            log.refused.push((number, e.to_string(), log.ended.len()));
                        }
                    }
                    number += 1;
                }
                next_send = now + send_every;
                if log.opened.len() == RESTARTS + 1 {
                    after_last_open += 1;
                }
                if script_done.load(Ordering::SeqCst) && after_last_open >= PER_CONNECTION {
                    break;
                }
                continue;
            }
            if let Some(event) = a.next_event(next_send - now) {
                // In a window nothing opens: a close there is a refused attempt.
                if let Event::Close { conn, .. } = &event
                    && log.ended.len() == log.opened.len()
                    && let Some(restart) = log.ended.len().checked_sub(1)
                    && queued_on[restart].is_some_and(|q| *conn >= q)
                {
                    progress.update(|p| p.dial_failed_with_queue[restart] = true);
                }
                log.record(event);
            }
        }
        script.join().expect("the restart script");
    });

    // Every accepted send completes or fails; then the client closes.
    let last = log.sent.len();
    while !log.settled() {
        let event = a.next_event(EVENT_TIMEOUT).unwrap_or_else(|| {
            panic!("[{name}] sends still pending after {EVENT_TIMEOUT:?} (of {last})")
        });
        log.record(event);
    }
    let current = a.current().expect("a connection after the chat");
    a.close(None, "done").expect("close");
    for event in a.events_until_close(current, EVENT_TIMEOUT) {
        log.record(event);
    }
    let expected_total = upgraded(&peer.snapshot());
    let snap = peer.wait_for("every connection to end", EVENT_TIMEOUT, |s| {
        s.connections.iter().all(|c| c.ended)
    });
    assert_quiet_for(&mut a, Duration::from_millis(50), "after the final close");

    // --- the client's side ---
    assert_eq!(
        log.opened.len(),
        RESTARTS + 1,
        "[{name}] one open per connection: {:#?}",
        log.lifecycle
    );
    assert_eq!(expected_total, RESTARTS + 1, "[{name}] server connections");
    for (id, outcomes) in &log.outcomes {
        assert_eq!(
            outcomes.len(),
            1,
            "[{name}] send {id} completed {outcomes:?}"
        );
    }
    // The close events of the connections the server restarted, then the client's own.
    for (i, close) in log.ended.iter().enumerate() {
        let Event::Close {
            conn, code, clean, ..
        } = close
        else {
            unreachable!()
        };
        assert_eq!(*conn, log.opened[i], "[{name}] close order");
        let error_before = log
            .lifecycle
            .iter()
            .position(|e| matches!(e, Event::Error { conn: c, .. } if c == conn));
        let close_at = log
            .lifecycle
            .iter()
            .position(|e| e == close)
            .expect("the close is logged");
        match i {
            0..3 => {
                assert_eq!(
                    (*code, *clean),
                    (1012, true),
                    "[{name}] restart {i} is a clean 1012: {close:#?}"
                );
                assert_eq!(error_before, None, "[{name}] no error for a clean close");
            }
            3 => {
                assert_eq!(
                    (*code, *clean),
                    (1006, false),
                    "[{name}] the abrupt restart is 1006: {close:#?}"
                );
                assert!(
                    error_before.is_some_and(|e| e < close_at),
                    "[{name}] an error event precedes the 1006 close: {:#?}",
                    log.lifecycle
                );
            }
            _ => assert_eq!(
                (*code, *clean),
                (1000, true),
                "[{name}] the client's own close: {close:#?}"
            ),
        }
        // After each restart: Reconnecting with attempt 1, a short delay, for the next
        // connection; if the server was still down, further attempts count up.
        if i < RESTARTS {
            let mut expected_attempt = 1;
            for e in &log.lifecycle[close_at + 1..] {
                match e {
                    Event::Reconnecting { attempt, delay, .. } => {
                        assert_eq!(
                            *attempt, expected_attempt,
                            "[{name}] attempts count up after restart {i}"
                        );
                        assert!(
                            *delay <= policy.ceiling(*attempt),
                            "[{name}] delay {delay:?} over the ceiling of attempt {attempt}"
                        );
                        if *attempt == 1 {
                            assert!(*delay <= first_ceiling);
                        }
                        expected_attempt += 1;
                    }
                    Event::Open { conn, .. } => {
                        assert_eq!(*conn, log.opened[i + 1]);
                        break;
                    }
                    _ => {}
                }
            }
            assert!(
                expected_attempt > 1,
                "[{name}] no Reconnecting after restart {i}: {:#?}",
                log.lifecycle
            );
            // The server stayed down until an attempt was refused with messages queued.
            assert!(
                expected_attempt > 2,
                "[{name}] no attempt was refused after restart {i}: {:#?}",
                log.lifecycle
            );
        }
    }
    assert_eq!(log.ended.len(), RESTARTS + 1);
    let reconnectings = log
        .lifecycle
        .iter()
        .filter(|e| matches!(e, Event::Reconnecting { attempt: 1, .. }))
        .count();
    assert_eq!(
        reconnectings, RESTARTS,
        "[{name}] one retry series per restart"
    );

    // --- the server's side ---
    let per_connection = received_per_connection(&snap);
    let received: Vec<u32> = per_connection.iter().flatten().copied().collect();
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "[{name}] the server received the messages in the order sent, each once: {received:?}"
    );
    let by_number: BTreeMap<u32, &Sent> = log.sent.iter().map(|s| (s.number, s)).collect();
    let received_on: HashMap<u32, usize> = per_connection
        .iter()
        .enumerate()
        .flat_map(|(k, ids)| ids.iter().map(move |n| (*n, k)))
        .collect();
    for n in &received {
        assert!(
            by_number.contains_key(n),
            "[{name}] the server received {n}, which the client never accepted"
        );
    }
    let dropped = log.opened[RESTARTS - 1];
    for sent in &log.sent {
        let outcome = log.outcomes[&sent.id][0];
        let got = received_on.get(&sent.number).copied();
        match outcome {
            Outcome::Failed { handed_back: true } => assert_eq!(
                got, None,
                "[{name}] message {} failed before it left the session, yet arrived",
                sent.number
            ),
            // Handed to the driver and then failed: it may have been written (the event
            // says so), but at most once, which the order check above covers.
            Outcome::Failed { handed_back: false } => {}
            Outcome::Written(conn) => {
                let k = log.opened.iter().position(|c| *c == conn).unwrap();
                if conn == dropped {
                    // Written into the connection the server dropped: TCP may lose what
                    // was written after the drop and before the client saw it; what did
                    // arrive is a prefix (checked below).
                    if let Some(got) = got {
                        assert_eq!(got, k, "[{name}] message {} arrived elsewhere", sent.number);
                    }
                } else {
                    assert_eq!(
                        got,
                        Some(k),
                        "[{name}] message {} was written on connection {k} (of {}) and must \
                         arrive there exactly once",
                        sent.number,
                        RESTARTS + 1
                    );
                }
            }
        }
    }
    // On the dropped connection: what arrived is a prefix of what was written there.
    let written_on_dropped: Vec<u32> = log
        .sent
        .iter()
        .filter(|s| log.outcomes[&s.id][0] == Outcome::Written(dropped))
        .map(|s| s.number)
        .collect();
    let arrived_on_dropped: Vec<u32> = per_connection[RESTARTS - 1]
        .iter()
        .copied()
        .filter(|n| written_on_dropped.contains(n))
        .collect();
    assert_eq!(
        arrived_on_dropped,
        written_on_dropped[..arrived_on_dropped.len()],
        "[{name}] the dropped connection delivered a prefix"
    );
    // Every message sent after the client saw the drop arrives, in order, after the
    // reconnect.
    let after_drop: Vec<u32> = log
        .sent
        .iter()
        .filter(|s| s.ended_before >= RESTARTS)
        .map(|s| s.number)
        .collect();
    assert!(
        !after_drop.is_empty(),
        "[{name}] messages were sent after the drop"
    );
    assert_eq!(
        per_connection[RESTARTS]
            .iter()
            .copied()
            .filter(|n| after_drop.contains(n))
            .collect::<Vec<_>>(),
        after_drop,
        "[{name}] every message sent after the drop arrives on the new connection, in order"
    );
    // The client kept sending while the server restarted: in each restart's reconnect
    // window (after it saw its connection end, before it saw the next one open; the server
    // listens again only once the client sent a burst there) the session queued what it
    // sent and carried it to the next connection: written there, and received there in
    // the order sent.
    let mut window_sends = Vec::new();
    for restart in 0..RESTARTS {
        let during: Vec<&Sent> = log
            .sent
            .iter()
            .filter(|s| s.window() == Some(restart))
            .collect();
        assert!(
            during.len() >= BURST,
            "[{name}] only {} messages sent during the reconnect window of restart {restart}",
            during.len()
        );
        let next = log.opened[restart + 1];
        for sent in &during {
            assert_eq!(
                log.outcomes[&sent.id],
                [Outcome::Written(next)],
                "[{name}] message {} was sent during restart {restart} and must be carried to \
                 the next connection",
                sent.number
            );
        }
        let numbers: Vec<u32> = during.iter().map(|s| s.number).collect();
        assert_eq!(
            per_connection[restart + 1]
                .iter()
                .copied()
                .filter(|n| numbers.contains(n))
                .collect::<Vec<_>>(),
            numbers,
            "[{name}] the messages sent during restart {restart} arrive on the next connection, \
             in order"
        );
        window_sends.push(during.len());
    }
    // With `carry_queue` on (the default), no message the session still held (queued) when
    // a connection ended fails: the only messages reported failed are those `send` refused
    // while a 1012 close handshake was under way, and those already handed to the driver
    // (no message handed back), which may or may not have been written (at most once, in
    // order: checked above).
    let handed_back: Vec<(u32, usize)> = log
        .sent
        .iter()
        .filter(|s| log.outcomes[&s.id][0] == Outcome::Failed { handed_back: true })
        .map(|s| (s.number, s.ended_before))
        .collect();
    assert!(
        handed_back.is_empty(),
        "[{name}] queued messages failed although the queue carries over (number, \
         connections ended before it was sent): {handed_back:?}"
    );
    for (number, why, ended_before) in &log.refused {
        assert!(
            *ended_before < RESTARTS - 1,
            "[{name}] send {number} was refused ({why}) outside the three 1012 close handshakes"
        );
    }
    let failed = log
        .sent
        .iter()
        .filter(|s| matches!(log.outcomes[&s.id][0], Outcome::Failed { .. }))
        .count();
    eprintln!(
        "[{name}] chat: {} sent ({window_sends:?} during the reconnect windows), {} refused \
         while closing, {failed} failed (none handed back), {} received over {} connections, \
         {} written into the dropped connection after the server dropped it",
        log.sent.len(),
        log.refused.len(),
        received.len(),
        per_connection.len(),
        written_on_dropped.len() - arrived_on_dropped.len()
    );
}

// ----- 2. a server that refuses -----

fn a_refusing_server_is_retried_up_to_max_attempts_then_queued_sends_fail<A: Adapter>() {
    let name = A::NAME;
    let max = 4;
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(80))
        .max_attempts(Some(max))
        .seed(3);
    let port = closed_port();
    let mut a: A = client(config(policy.clone()));
    let started = Instant::now();
    let first = a
        .connect(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    expect_connecting(&mut a, first);
    let mut queued = vec![a.try_send(Message::text("q0")).expect("queued")];
    let mut conn = first;
    let mut delays = Vec::new();
    for attempt in 1..=max + 1 {
        // The attempt fails: error (connection refused), then its close.
        match a.expect_event("the error of a refused dial") {
            Event::Error {
                conn: c,
                error: ConnectionError::ConnectFailed(e),
                ..
            } if c == conn => assert_eq!(e.kind, TransportErrorKind::Connect, "[{name}] {e}"),
            other => panic!("[{name}] expected the refused dial's error, got {other:#?}"),
        }
        if attempt == max + 1 {
            break;
        }
        match a.expect_event("the close of a refused dial") {
            Event::Close {
                conn: c,
                code: 1006,
                clean: false,
                ..
            } if c == conn => {}
            other => panic!("[{name}] expected close 1006 of {conn}, got {other:#?}"),
        }
        match a.expect_event("Reconnecting") {
            Event::Reconnecting {
                conn: next,
                attempt: n,
                delay,
                last_error,
                ..
            } => {
                assert_eq!(n, attempt, "[{name}] attempt number");
                assert!(
                    delay <= policy.ceiling(attempt),
                    "[{name}] delay {delay:?} over the ceiling {:?} of attempt {attempt}",
                    policy.ceiling(attempt)
                );
                assert!(!last_error.is_empty());
                delays.push(delay);
                conn = next;
            }
            other => panic!("[{name}] expected Reconnecting {attempt}, got {other:#?}"),
        }
        // Sent during the backoff: queued for the next attempt.
        assert_eq!(a.state(), ReadyState::Connecting);
        queued.push(
            a.try_send(Message::text(format!("q{attempt}")))
                .unwrap_or_else(|e| panic!("[{name}] send during the backoff refused: {e}")),
        );
        expect_connecting(&mut a, conn);
    }
    // The final failure: every queued message fails, once, handed back, then the close.
    let rest = a.events_until_close(conn, EVENT_TIMEOUT);
    let (close, failures) = rest.split_last().expect("the close");
    assert!(
        matches!(close, Event::Close { conn: c, code: 1006, clean: false, .. } if *c == conn),
        "[{name}] final close: {close:#?}"
    );
    let failed: Vec<SendId> = failures
        .iter()
        .map(|e| match e {
            Event::SendFailed {
                conn: c,
                id,
                reason: SendFailure::ConnectFailed,
                message: Some(_),
                ..
            } if *c == conn => *id,
            other => panic!("[{name}] expected the queued sends to fail, got {other:#?}"),
        })
        .collect();
    assert_eq!(
        failed, queued,
        "[{name}] each queued message fails exactly once, in order"
    );
    let elapsed = started.elapsed();
    let waited: Duration = delays.iter().sum();
    assert!(
        elapsed >= waited,
        "[{name}] the backoffs were honoured: {elapsed:?} < {waited:?} ({delays:?})"
    );
    assert_eq!(a.state(), ReadyState::Closed);
    assert_eq!(a.current(), None);
    // No further attempt: nothing within several times the largest ceiling.
    assert_quiet_for(
        &mut a,
        policy.ceiling(max + 1) * 4,
        "after the last attempt",
    );
    assert_eq!(delays.len(), max as usize);
}

// ----- 3. a server that goes silent -----

fn a_silent_server_is_detected_by_keepalive_and_reconnected<A: Adapter>() {
    let name = A::NAME;
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(150);
    let policy = ReconnectPolicy::default().seed(5);
    let peer = Peer::start(Mode::Silent);
    let mut a: A = client(config(policy.clone()).keepalive(interval, timeout));
    // Taken before the cause (the connect): the client idles `interval`, pings, and waits
    // `timeout` after the open, which comes later still.
    let started = Instant::now();
    let first = a
        .connect(&ConnectOptions::new(peer.url()))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    expect_connecting(&mut a, first);
    match a.expect_event("Open") {
        Event::Open { conn, .. } if conn == first => {}
        other => panic!("[{name}] expected Open, got {other:#?}"),
    }
    // From now on the server answers again, but holds the next handshake until the test
    // saw the client dial.
    peer.set_mode(Mode::Echo);
    peer.hold_handshakes();
    let events = a.events_until("Reconnecting", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Reconnecting { .. }))
    });
    let detected = started.elapsed();
    let next = match events.as_slice() {
        [
            Event::Error {
                conn: c1,
                error: ConnectionError::KeepaliveTimeout(t),
                ..
            },
            Event::Close {
                conn: c2,
                code: 1006,
                clean: false,
                ..
            },
            Event::Reconnecting {
                conn: next,
                attempt: 1,
                delay,
                ..
            },
        ] if *c1 == first && *c2 == first => {
            assert_eq!(*t, timeout);
            assert!(
                *delay <= policy.ceiling(1),
                "[{name}] first delay {delay:?}"
            );
            *next
        }
        other => panic!(
            "[{name}] expected [Error(KeepaliveTimeout), Close 1006, Reconnecting 1], got {other:#?}"
        ),
    };
    assert!(
        detected >= interval + timeout,
        "[{name}] declared dead after {detected:?}, before the pong timeout"
    );
    let silent = peer.wait_conn(0, "the client's ping", EVENT_TIMEOUT, |c| c.pings >= 1);
    assert!(silent.messages.is_empty());
    expect_connecting(&mut a, next);
    peer.wait_conn(1, "the reconnect's upgrade request", EVENT_TIMEOUT, |c| {
        c.request.is_some()
    });
    assert_eq!(a.state(), ReadyState::Connecting);
    peer.release_handshakes();
    match a.expect_event("Open after the server answers again") {
        Event::Open { conn, .. } if conn == next => {}
        other => panic!("[{name}] expected Open of {next}, got {other:#?}"),
    }
    a.send(Message::text("back"))
        .unwrap_or_else(|e| panic!("[{name}] send after the reconnect: {e:?}"));
    let echoed = a.events_until("the echo", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Message { .. }))
    });
    assert!(
        echoed
            .iter()
            .any(|e| matches!(e, Event::Message { conn, message , .. } if *conn == next && *message == Message::text("back"))),
        "[{name}] {echoed:#?}"
    );
    peer.wait_conn(0, "the silent connection to end", EVENT_TIMEOUT, |c| {
        c.ended
    });
    close_cleanly(&mut a, next);
    assert_eq!(peer.snapshot().accepted, 2);
}

// ----- 4. close() during a backoff -----

fn close_during_a_backoff_cancels_it<A: Adapter>() {
    let name = A::NAME;
    // Seed 1 draws 1975 ms out of the 2 s ceiling for the first delay: even a loaded
    // machine closes within it. That the close came during the backoff is shown by its
    // effect (the queued send cancelled, one close, no dial), not by the test's clock.
    let ceiling = Duration::from_secs(2);
    let policy = ReconnectPolicy::default().backoff(ceiling, ceiling).seed(1);
    let peer = Peer::start(Mode::DropMidMessage);
    let mut a: A = client(config(policy));
    let first = a
        .connect(&ConnectOptions::new(peer.url()))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    let events = a.events_until("Reconnecting", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Reconnecting { .. }))
    });
    let (pending, delay) = match events.last() {
        Some(Event::Reconnecting {
            conn,
            attempt: 1,
            delay,
            ..
        }) => (*conn, *delay),
        other => panic!("[{name}] expected Reconnecting 1, got {other:#?}"),
    };
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Close { conn, code: 1006, clean: false, .. } if *conn == first)
        ),
        "[{name}] {events:#?}"
    );
    assert!(
        delay >= Duration::from_millis(1900),
        "[{name}] seed 1 gives a long first delay, got {delay:?}"
    );
    let queued = a
        .try_send(Message::text("while away"))
        .expect("queued during the backoff");
    assert_eq!(a.current(), Some(pending));
    a.close(None, "").expect("close during the backoff");
    let end = a.events_until_close(pending, EVENT_TIMEOUT);
    match end.as_slice() {
        [
            Event::SendFailed {
                conn: c1,
                id,
                reason: SendFailure::Cancelled,
                message: Some(_),
                ..
            },
            Event::Close {
                conn: c2,
                clean: false,
                ..
            },
        ] if *c1 == pending && *c2 == pending && *id == queued => {}
        other => panic!(
            "[{name}] expected the queued send cancelled and one close of {pending}, got {other:#?}"
        ),
    }
    assert_eq!(a.state(), ReadyState::Closed);
    // No dial: nothing happens, and the server sees no new connection, for well past the
    // moment the cancelled backoff would have dialled.
    assert_quiet_for(
        &mut a,
        delay + ceiling / 2,
        "after closing during the backoff",
    );
    assert_eq!(
        peer.snapshot().accepted,
        1,
        "[{name}] no dial after the backoff was cancelled"
    );
}

// ----- 5. HTTP 403 -----

/// A server answering `status` to every dial: the connection fails once with that status
/// and the policy never dials it again (a retry would come within the cap).
fn expect_final_refusal<A: Adapter>(status: u16, policy: ReconnectPolicy) {
    let name = A::NAME;
    let peer = Peer::start(Mode::HttpStatus(status));
    let mut a: A = client(config(policy.clone()));
    let conn = a
        .connect(&ConnectOptions::new(peer.url()))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, EVENT_TIMEOUT);
    match events.as_slice() {
        [
            Event::Error {
                conn: c,
                error: ConnectionError::ConnectFailed(e),
                ..
            },
            Event::Close {
                code: 1006,
                clean: false,
                ..
            },
        ] if *c == conn => assert_eq!(e.kind, TransportErrorKind::HttpStatus(status)),
        other => panic!("[{name}] expected [Error({status}), Close 1006], got {other:#?}"),
    }
    assert_quiet_for(&mut a, policy.cap * 4, &format!("after a {status}"));
    assert_eq!(a.state(), ReadyState::Closed);
    assert_eq!(
        peer.snapshot().accepted,
        1,
        "[{name}] {status}: one dial only"
    );
}

/// A server answering `status` to every dial: the policy dials it again.
fn expect_retried<A: Adapter>(status: u16, policy: ReconnectPolicy) {
    let name = A::NAME;
    let peer = Peer::start(Mode::HttpStatus(status));
    let mut a: A = client(config(policy));
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    let events = a.events_until("Reconnecting", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::Reconnecting { attempt: 1, .. }))
    });
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Close { conn: c, .. } if *c == conn)),
        "[{name}] {status}: {events:#?}"
    );
    peer.wait_for("the retry's dial", EVENT_TIMEOUT, |s| s.accepted >= 2);
    a.close(None, "").expect("close");
}

fn http_403_is_not_retried_by_default<A: Adapter>() {
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(80))
        .seed(9);
    expect_final_refusal::<A>(403, policy.clone());
    // The same server answering 503 is retried, and so is 403 when the policy says so.
    expect_retried::<A>(503, policy.clone());
    expect_retried::<A>(429, policy.clone());
    expect_retried::<A>(403, policy.retry_http_4xx(true));
}

/// A permanent redirect (308, 301) is not followed, so the same request meets it again:
/// the policy does not dial it again, also with `retry_http_4xx` (it dialled the old URL
/// again and again); a temporary one (307) may end and is retried.
fn a_permanent_redirect_is_not_dialled_again<A: Adapter>() {
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(80))
        .seed(9);
    expect_final_refusal::<A>(308, policy.clone());
    expect_final_refusal::<A>(301, policy.clone());
    expect_final_refusal::<A>(308, policy.clone().retry_http_4xx(true));
    expect_retried::<A>(307, policy);
}

/// A server that accepts and at once closes with 1013 (try again later): each connection
/// ends within the policy's `min_uptime`, so the run of attempts goes on and `max_attempts`
/// ends it (a user's probe saw 58 opens in 5 s, every one announced as attempt 1).
fn a_server_that_closes_each_connection_at_once_is_given_up_on<A: Adapter>() {
    let name = A::NAME;
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(80))
        .max_attempts(Some(3))
        .seed(5);
    let peer = Peer::start(Mode::CloseWith(1013, "try again later".into()));
    let mut a: A = client(config(policy.clone()));
    a.connect(&ConnectOptions::new(peer.url()))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    let closes = |seen: &[Event]| {
        seen.iter()
            .filter(|e| matches!(e, Event::Close { .. }))
            .count()
    };
    let events = a.events_until("four closes", EVENT_TIMEOUT, |seen| closes(seen) == 4);
    let attempts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3], "[{name}] {events:#?}");
    assert_quiet_for(&mut a, policy.cap * 4, "after the last attempt");
    assert_eq!(a.state(), ReadyState::Closed);
    assert_eq!(upgraded(&peer.snapshot()), 4, "[{name}] four connections");
}

/// A server that answers the upgrade with 429 and `Retry-After: 1`: the retry comes a
/// second later at the earliest, although the policy's first delay is at most 10 ms (a
/// user's probe: a 503 with `Retry-After: 1` was retried after 137 ms).
fn a_busy_servers_retry_after_is_waited_out<A: Adapter>() {
    use std::io::{Read, Write};
    let name = A::NAME;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let mut accepted = Vec::new();
        let limit = Instant::now() + EVENT_TIMEOUT;
        for _ in 0..2 {
            // Bounded: a client that never comes back fails the test, not hangs it.
            let mut tcp = loop {
                match listener.accept() {
                    Ok((tcp, _)) => break tcp,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < limit, "no connection within the limit");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            tcp.set_nonblocking(false).unwrap();
            accepted.push(Instant::now());
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match tcp.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = tcp.write_all(answer.as_bytes());
        }
        accepted
    });
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_secs(5))
        .seed(2);
    let mut a: A = client(config(policy));
    a.connect(&ConnectOptions::new(&url)).unwrap();
    let events = a.events_until("Reconnecting", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Reconnecting { .. }))
    });
    let delay = events.iter().find_map(|e| match e {
        Event::Reconnecting { delay, .. } => Some(*delay),
        _ => None,
    });
    assert_eq!(delay, Some(Duration::from_secs(1)), "[{name}] {events:#?}");
    let accepted = server.join().unwrap();
    assert!(
        accepted[1] - accepted[0] >= Duration::from_secs(1),
        "[{name}] retried after {:?}",
        accepted[1] - accepted[0]
    );
    a.close(None, "").expect("close");
}

// ----- 6. the multi-socket form: a pool task across a server restart -----

/// A server that accepts every TCP connection and drops it at once (the dial fails before
/// the answer, and is retried), counting them.
struct DroppingServer {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl DroppingServer {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        Self {
            port,
            accepted,
            stop,
            thread,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
    }
}

/// An application that takes no events while its server drops every connection, under a
/// 1 ms backoff: once `RECONNECT_HOLD_NOTICES` notices wait untaken, each attempt waits a
/// second more (the server sees a few dozen connections in 1.5 s, not one a millisecond),
/// and the attempts never stop; once the application takes the events, they go at the
/// backoff's pace again.
fn attempts_slow_down_for_an_application_that_takes_no_events<A: Adapter>() {
    let name = A::NAME;
    let server = DroppingServer::start();
    let (port, accepted) = (server.port, std::sync::Arc::clone(&server.accepted));
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .seed(5);
    let mut a: A = client(config(policy));
    a.connect(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    // Nothing taken for a second and a half: at 1 ms a retry, hundreds of dials without
    // the wait.
    std::thread::sleep(Duration::from_millis(1500));
    let held = accepted.load(Ordering::SeqCst);
    let cycles = wxsocket_core::RECONNECT_HOLD_NOTICES / 4;
    // The events the adapter took ahead of the application (blocking's batch) add room
    // for as many again, and the held attempts go a second later each.
    assert!(
        held <= 2 * cycles + 6,
        "[{name}] {held} connections while nothing was taken"
    );
    // Still nothing taken: the attempts go on, a second apart.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while accepted.load(Ordering::SeqCst) < held + 2 {
        assert!(Instant::now() < deadline, "[{name}] the attempts stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    let slow = accepted.load(Ordering::SeqCst);
    // Taken as they come: the attempts go at the backoff's pace. One event, or a 10 ms
    // wait, a turn: the events keep coming as long as the attempts do.
    let started = Instant::now();
    let mut taken = 0;
    while accepted.load(Ordering::SeqCst) <= slow + 20 {
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "[{name}] the attempts did not speed up once {taken} events were taken"
        );
        if a.next_event(Duration::from_millis(10)).is_some() {
            taken += 1;
        }
    }
    a.close(None, "done").unwrap();
    server.stop();
}

/// The same application over a longer outage: once `RECONNECT_HOLD_NOTICES` notices wait,
/// a failed attempt is folded into the next `Reconnecting` event's count rather than
/// queued, so what waits stays bounded. Every dial the server saw is told of, as a
/// `Connecting` event or in a count, once the application takes its events.
fn untaken_notices_stay_bounded_and_every_dial_is_told_of<A: Adapter>() {
    let name = A::NAME;
    let server = DroppingServer::start();
    let (port, accepted) = (server.port, std::sync::Arc::clone(&server.accepted));
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .seed(6);
    let mut a: A = client(config(policy));
    a.connect(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    // Nothing taken until four dials in a row came at least half a second after the one
    // before: the attempts are held a second apart (a single stall of a loaded machine
    // does not make four). The first of them may still be told of (its `Reconnecting`
    // came before the count was reached); the second and third failed, each folded when
    // the next one's `Reconnecting` came, which was before the fourth dialled.
    let deadline = Instant::now() + 2 * EVENT_TIMEOUT;
    let (mut last, mut since, mut slow) = (0, Instant::now(), 0);
    while slow < 4 {
        let dials = accepted.load(Ordering::SeqCst);
        if dials != last {
            let gap = since.elapsed();
            slow = if gap >= Duration::from_millis(500) {
                slow + 1
            } else {
                0
            };
            (last, since) = (dials, Instant::now());
        }
        assert!(Instant::now() < deadline, "[{name}] {dials} dials");
        std::thread::sleep(Duration::from_millis(10));
    }
    a.close(None, "done").unwrap();
    // The attempt under way, if any, ends; then nothing more comes.
    let mut events = Vec::new();
    while let Some(event) = a.next_event(Duration::from_millis(300)) {
        events.push(event);
        assert!(events.len() < 10_000, "[{name}] events without end");
    }
    server.stop();
    let dials = accepted.load(Ordering::SeqCst) as u32;
    let connecting = events
        .iter()
        .filter(|e| matches!(e, Event::Connecting { .. }))
        .count() as u32;
    let unreported: u32 = events
        .iter()
        .map(|e| match e {
            Event::Reconnecting { unreported, .. } => *unreported,
            _ => 0,
        })
        .sum();
    assert!(unreported >= 2, "[{name}] {unreported} folded: {events:#?}");
    // What waited: the count, one attempt held, its close; and the events an adapter took
    // ahead of the application (blocking's batch, at most as many again).
    assert!(
        events.len() <= 2 * wxsocket_core::RECONNECT_HOLD_NOTICES + 8,
        "[{name}] {} events waited",
        events.len()
    );
    // The last dial may have been cancelled before the server accepted it.
    assert!(
        (dials..=dials + 1).contains(&(connecting + unreported)),
        "[{name}] {dials} dials, {connecting} told of and {unreported} counted"
    );
    assert!(
        matches!(events.last(), Some(Event::Close { .. })),
        "[{name}] {events:#?}"
    );
}

/// The options of a client whose token is `token`, in the query and in a header.
fn with_token(peer: &Peer, token: &str) -> ConnectOptions {
    ConnectOptions::new(format!("{}feed?token={token}", peer.url()))
        .header("authorization", format!("Bearer {token}"))
}

/// The token each connection the peer accepted carried: (query, header).
fn tokens_seen(peer: &Peer) -> Vec<(String, String)> {
    peer.snapshot()
        .connections
        .iter()
        .filter_map(|c| c.request.as_ref())
        .map(|r| {
            let query = r.target.split_once("token=").map_or("", |(_, t)| t);
            let header = r.header("authorization").unwrap_or("");
            (query.to_owned(), header.to_owned())
        })
        .collect()
}

/// `reconnect_with` over real sockets: a token renewed while the connection is open goes
/// nowhere until the connection drops (the open connection carries on, echoing), and the
/// reconnection then dials it, in the query and the header alike.
fn a_renewed_token_is_dialled_on_the_next_reconnection<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let policy = ReconnectPolicy::default().seed(37);
    let mut a: A = client(config(policy));
    let first = a
        .connect(&with_token(&peer, "old"))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    a.events_until("the first open", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Open { .. }))
    });
    a.reconnect_with(&with_token(&peer, "new"))
        .unwrap_or_else(|e| panic!("[{name}] reconnect_with refused: {e}"));
    // The open connection carries on.
    a.try_send(Message::text("still here")).unwrap();
    let echoed = a.events_until("the echo", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Message { .. }))
    });
    assert!(
        echoed
            .iter()
            .all(|e| e.conn() == first && !matches!(e, Event::Close { .. })),
        "[{name}] {echoed:#?}"
    );
    assert_eq!(a.current(), Some(first));
    // The server restarts (1012, retried): the reconnection carries the new token.
    peer.close_all(1012, "restart");
    a.events_until("the reconnection's open", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::Open { conn, .. } if *conn != first))
    });
    let second = a.current().expect("the reconnection");
    let seen = tokens_seen(&peer);
    assert_eq!(
        seen,
        [
            ("old".to_owned(), "Bearer old".to_owned()),
            ("new".to_owned(), "Bearer new".to_owned())
        ],
        "[{name}]"
    );
    // An invalid one changes nothing, named by its field.
    let refused = a.reconnect_with(&ConnectOptions::new("ftp://127.0.0.1/"));
    assert!(
        matches!(
            refused,
            Err(wxsocket_core::ConnectError::UnsupportedScheme { .. })
        ),
        "[{name}] {refused:?}"
    );
    close_cleanly(&mut a, second);
    // Closed for good: nothing to reconnect.
    assert_eq!(
        a.reconnect_with(&with_token(&peer, "newer")),
        Err(wxsocket_core::ConnectError::NoConnection),
        "[{name}]"
    );
}

/// A pool task's reconnection dials the token renewed for it; its neighbour's does not.
fn a_pool_task_dials_its_renewed_token_on_the_next_reconnection<P: PoolAdapter>() {
    let name = P::NAME;
    let policy = ReconnectPolicy::default().seed(38);
    let (renewed, steady) = (Peer::start(Mode::Echo), Peer::start(Mode::Echo));
    let mut pool = P::new(config(policy), TlsRoots::default())
        .unwrap_or_else(|e| panic!("[{name}] config rejected: {e}"));
    let task = pool
        .connect(&with_token(&renewed, "old"))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    let other = pool
        .connect(&with_token(&steady, "kept"))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    pool.events_until("both tasks to open", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Open { .. }))
            .count()
            == 2
    });
    task.reconnect_with(&with_token(&renewed, "new"))
        .unwrap_or_else(|e| panic!("[{name}] reconnect_with refused: {e}"));
    let first = task.id();
    renewed.close_all(1012, "restart");
    steady.close_all(1012, "restart");
    pool.events_until("both reconnections to open", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Open { .. }))
            .count()
            == 2
    });
    assert_ne!(task.current(), Some(first));
    assert_eq!(tokens_seen(&renewed)[1].0, "new", "[{name}]");
    assert_eq!(tokens_seen(&steady)[1].0, "kept", "[{name}]");
    // After the pool's shutdown, a task's renewal is refused as shut down (not as a task
    // without a connection), and nothing is dialled.
    pool.shutdown();
    assert_eq!(
        task.reconnect_with(&with_token(&renewed, "late")),
        Err(wxsocket_core::ConnectError::ShutDown),
        "[{name}]"
    );
    assert_eq!(task.state(), ReadyState::Closed, "[{name}]");
    assert_eq!(other.state(), ReadyState::Closed, "[{name}]");
    assert_eq!(upgraded(&renewed.snapshot()), 2, "[{name}]");
}

fn a_pool_task_reconnects_after_a_1012_restart_with_its_messages_in_order<P: PoolAdapter>() {
    let name = P::NAME;
    let policy = ReconnectPolicy::default().seed(12);
    let restarting = Peer::start(Mode::Echo);
    let steady = Peer::start(Mode::Echo);
    let mut pool = P::new(config(policy.clone()), TlsRoots::default())
        .unwrap_or_else(|e| panic!("[{name}] config rejected: {e}"));
    let task = pool
        .connect(&ConnectOptions::new(restarting.url()))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    let other = pool
        .connect(&ConnectOptions::new(steady.url()))
        .unwrap_or_else(|e| panic!("[{name}] connect refused: {e}"));
    let first = task.id();
    let mut log = pool.events_until("both tasks to open", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Open { .. }))
            .count()
            == 2
    });
    let mut sent: Vec<(u32, SendId)> = Vec::new();
    let mut send = |n: u32| {
        let id = task
            .try_send(chat(n))
            .unwrap_or_else(|e| panic!("[{name}] send {n} refused: {e}"));
        sent.push((n, id));
    };

    // Before the restart, on the first connection.
    for n in 0..5 {
        send(n);
    }
    // Their echoes are back before the restart (so none races with the close frame).
    let events = pool.events_until("the first five echoes", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count()
            == 5
    });
    log.extend(events);
    // The server restarts: it stops listening and closes with 1012.
    restarting.stop_listening();
    assert_eq!(restarting.close_all(1012, "service restart"), 1);
    let events = pool.events_until("the task's Reconnecting", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Reconnecting { .. }))
    });
    assert!(
        events.contains(&close_event(first, 1012, "service restart", true)),
        "[{name}] the first connection ends with the server's clean 1012: {events:#?}"
    );
    let next = match events.last() {
        Some(Event::Reconnecting {
            conn,
            attempt: 1,
            delay,
            ..
        }) => {
            assert!(
                *delay <= policy.ceiling(1),
                "[{name}] first delay {delay:?}"
            );
            *conn
        }
        other => panic!("[{name}] expected Reconnecting 1, got {other:#?}"),
    };
    assert!(next > first);
    log.extend(events);
    // While the server is down the task, still named by its first id, queues.
    assert_eq!(task.state(), ReadyState::Connecting, "[{name}]");
    for n in 5..10 {
        send(n);
    }
    // The server stays down until an attempt was refused, then listens again.
    let events = pool.events_until("a refused attempt", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::Reconnecting { attempt: 2, .. }))
    });
    log.extend(events);
    restarting.listen_again();
    let events = pool.events_until("the task to open again", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Open { .. }))
    });
    let reopened = match events.last() {
        Some(Event::Open { conn, .. }) => *conn,
        other => panic!("[{name}] expected Open, got {other:#?}"),
    };
    assert!(reopened >= next, "[{name}] {events:#?}");
    log.extend(events);
    assert_eq!(task.state(), ReadyState::Open, "[{name}]");
    assert_eq!(task.id(), first, "[{name}] the task keeps its name");
    // The later connection's events map back to the task (a user's probe could only guess
    // which task an event with a new id was for).
    assert_eq!(task.current(), Some(reopened), "[{name}]");
    assert_eq!(pool.task_of(reopened), Some(first), "[{name}]");
    assert_eq!(pool.task_of(first), Some(first), "[{name}]");
    // So do the events of the attempt that was refused, which has ended: an application
    // taking its events late still learns whose they were (they mapped to no task once
    // the connection was gone).
    assert_eq!(pool.task_of(next), Some(first), "[{name}]");
    // After the reconnect, on the new connection.
    for n in 10..15 {
        send(n);
    }
    // The echo of the last one comes after all the others on that connection.
    let events = pool.events_until("the last echo", EVENT_TIMEOUT, |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::Message { message, .. } if *message == chat(14)))
    });
    log.extend(events);

    // The server got the five sent before the restart on the first connection, and the
    // five queued while it was down followed by the five sent after on the new one, each
    // once, in order.
    let snap = restarting.wait_for("the last message", EVENT_TIMEOUT, |s| {
        s.all_messages().contains(&chat(14))
    });
    assert_eq!(
        received_per_connection(&snap),
        [(0..5).collect::<Vec<u32>>(), (5..15).collect()],
        "[{name}] what the restarting server received, per connection"
    );
    // Every send completed once: the first five on the first connection, the others on
    // the new one.
    for (n, id) in &sent {
        let outcomes: Vec<&Event> = log
            .iter()
            .filter(|e| {
                matches!(e, Event::SendCompleted { id: i, .. } | Event::SendFailed { id: i, .. } if i == id)
            })
            .collect();
        let on = if *n < 5 { first } else { reopened };
        assert!(
            matches!(outcomes.as_slice(), [Event::SendCompleted { conn, .. }] if *conn == on),
            "[{name}] message {n}: {outcomes:#?}"
        );
    }
    // The echoes came back on the connection that carried them, in order.
    let echoes: Vec<(ConnId, u32)> = log
        .iter()
        .filter_map(|e| match e {
            Event::Message { conn, message, .. } => Some((*conn, chat_number(message))),
            _ => None,
        })
        .collect();
    let expected: Vec<(ConnId, u32)> = (0..15)
        .map(|n| (if n < 5 { first } else { reopened }, n))
        .collect();
    assert_eq!(echoes, expected, "[{name}] the echoes");
    // The other task went on undisturbed: no event of its own since it opened.
    let other_id = other.id();
    assert!(
        log.iter()
            .filter(|e| e.conn() == other_id)
            .all(|e| matches!(e, Event::Connecting { .. } | Event::Open { .. })),
        "[{name}] the other task saw only its own open: {log:#?}"
    );
    assert_eq!(other.state(), ReadyState::Open);
    assert_eq!(
        steady.snapshot().accepted,
        1,
        "[{name}] the other task never redialled"
    );

    // Closing the task by its name closes its current connection, with no reconnect.
    task.close(None, "done")
        .unwrap_or_else(|e| panic!("[{name}] close: {e}"));
    let end = pool.events_until_close(reopened, EVENT_TIMEOUT);
    assert_eq!(
        end.last(),
        Some(&close_event(reopened, 1000, "done", true)),
        "[{name}] {end:#?}"
    );
    assert_eq!(task.state(), ReadyState::Closed);
    if let Some(extra) = pool.next_event(policy.ceiling(1) * 2) {
        panic!("[{name}] after the task's close: unexpected event {extra:#?}");
    }
    assert_eq!(pool.live(), 1, "[{name}] the other task is still there");
}

/// The tokio `Client` as a `Sink` across a reconnect: messages written into a connection
/// that is then lost fail, and the sink says so at its flush, although the messages sent
/// after them were written on the next connection (a flush used to wait for the last
/// message alone).
#[test]
fn a_tokio_sink_reports_messages_lost_with_a_connection_although_later_ones_went_out() {
    async fn next(events: &mut wxsocket_tokio::Events) -> Event {
        tokio::time::timeout(EVENT_TIMEOUT * 2, events.next())
            .await
            .expect("no event in time")
            .expect("events ended")
    }
    use futures_util::SinkExt;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let peer = Peer::start(Mode::Echo);
        let config = config(ReconnectPolicy::default().seed(3));
        let (mut client, mut events) =
            wxsocket_tokio::Client::new(wxsocket_tokio::Config::new().session(config)).unwrap();
        client.connect(&ConnectOptions::new(peer.url())).unwrap();
        while !matches!(next(&mut events).await, Event::Open { .. }) {}
        // The peer reads nothing: 8 MiB fill its socket, and part of them stays unwritten.
        peer.hold_reads();
        for i in 0..32u8 {
            client
                .feed(Message::binary(vec![i; 256 << 10]))
                .await
                .unwrap();
        }
        // The connection is lost with them; the session reconnects.
        peer.drop_all();
        peer.release_reads();
        let mut lost = 0;
        loop {
            match next(&mut events).await {
                Event::SendFailed { reason, .. } => {
                    assert_eq!(reason, SendFailure::ConnectionLost);
                    lost += 1;
                }
                Event::Open { .. } => break,
                _ => {}
            }
        }
        assert!(lost > 0, "no send was lost with the connection");
        // A message on the new connection is written; the flush still reports the loss.
        client.feed(Message::text("after")).await.unwrap();
        match client.flush().await {
            // The sink reports its failures together, without their messages.
            Err(wxsocket_tokio::SendFailed::Failed(failed))
                if failed.reason == SendFailure::ConnectionLost && failed.message.is_none() => {}
            other => panic!("the flush hid the lost messages: {other:?}"),
        }
        // Reported once: the next flush waits for what is left, and succeeds.
        client.flush().await.unwrap();
        client.close(None, "").unwrap();
    });
}

/// A wx socket's reconnections dial the token renewed with `reconnect_with`, on each
/// adapter: open with the old token, renew it from the open listener, the server restarts
/// (1012, retried), and the second open's request carries the new one; the open listener
/// hears both opens, and no callback runs for the call itself.
macro_rules! a_wx_socket_reconnects_with_a_renewed_token {
    ($name:ident, $adapter:ident, $($runtime:tt)*) => {
        #[test]
        fn $name() {
            use $adapter::wx::{ConnectSocket, WxSocket};
            $($runtime)*
            let peer = Peer::start(Mode::Echo);
            let policy = ReconnectPolicy::default().seed(39);
            let config = $adapter::Config::new().session(config(policy));
            let wx = WxSocket::new(config).unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            let weak = wx.downgrade();
            let renewed = with_token(&peer, "new");
            let opens = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
            let counted = std::sync::Arc::clone(&opens);
            wx.on_socket_open(move |_| {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    let wx = weak.upgrade().unwrap();
                    wx.reconnect_with(&renewed).unwrap();
                }
                tx.send(n).unwrap();
            });
            wx.connect_socket(ConnectSocket::new(with_token(&peer, "old"))).unwrap();
            assert_eq!(rx.recv_timeout(EVENT_TIMEOUT), Ok(1));
            peer.close_all(1012, "restart");
            assert_eq!(rx.recv_timeout(EVENT_TIMEOUT), Ok(2));
            let seen: Vec<String> = tokens_seen(&peer).into_iter().map(|(q, _)| q).collect();
            assert_eq!(seen, ["old", "new"]);
            let refused = wx.reconnect_with(&ConnectOptions::new("ftp://h/"));
            assert!(
                matches!(refused, Err(wxsocket_core::ConnectError::UnsupportedScheme { .. })),
                "{refused:?}"
            );
        }
    };
}

a_wx_socket_reconnects_with_a_renewed_token!(
    a_wx_socket_reconnects_with_a_renewed_token_blocking,
    wxsocket_blocking,
);
a_wx_socket_reconnects_with_a_renewed_token!(
    a_wx_socket_reconnects_with_a_renewed_token_tokio,
    wxsocket_tokio,
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
);
