//! `Session::poll_events_into` against `poll_event`: two sessions fed the same generated
//! inputs (messages, sends and their completions, pings, drops and reconnections whose
//! notices are held back, timeouts), one drained a batch at a time, the other one event
//! at a time under the same admission rule, give the same events, leave the same backlog,
//! pause and resume reading at the same points (the same `ResumeReading` actions), with
//! and without a transcript being recorded.

use proptest::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use wxsocket_core::transcript::Redaction;
use wxsocket_core::*;

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Opened,
    Message(usize),
    Send(usize),
    /// Confirms the oldest send handed to the driver.
    Written,
    Ping,
    Pong,
    Drop,
    /// This many dials in a row fail, each after the backoff before it.
    Flap(usize),
    Advance(u64),
    /// Takes events while fewer than `max` were taken in this take, stopping before the
    /// first message longer than `stop_above` (if any).
    Take {
        max: usize,
        stop_above: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Connect),
        2 => Just(Op::Opened),
        8 => (0usize..50).prop_map(Op::Message),
        2 => (0usize..20).prop_map(Op::Send),
        2 => Just(Op::Written),
        1 => Just(Op::Ping),
        1 => Just(Op::Pong),
        2 => Just(Op::Drop),
        1 => (1usize..30).prop_map(Op::Flap),
        2 => (0u64..2_000).prop_map(Op::Advance),
        4 => (0usize..12, proptest::option::of(0usize..50))
            .prop_map(|(max, stop_above)| Op::Take { max, stop_above }),
    ]
}

struct Pair {
    one: Session,
    batch: Session,
    now: Instant,
    /// Sends handed to the driver, not yet confirmed.
    sent: VecDeque<SendId>,
    /// An event already in the batch.
    filler: Event,
}

impl Pair {
    fn new(record: bool) -> Self {
        let config = SessionConfig::default().receive_bounds(6, 120).reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_millis(10), Duration::from_millis(40))
                .seed(7),
        );
        let mut one = Session::new(config.clone()).unwrap();
        let mut batch = Session::new(config).unwrap();
        if record {
            one.start_recording(Redaction::default(), |_| {});
            batch.start_recording(Redaction::default(), |_| {});
        }
        let mut other = Session::new(SessionConfig::default()).unwrap();
        let now = Instant::now();
        other
            .connect(&ConnectOptions::new("ws://127.0.0.1:9"), now)
            .unwrap();
        let filler = other.poll_event().unwrap();
        Pair {
            filler,
            one,
            batch,
            now,
            sent: VecDeque::new(),
        }
    }

    /// Runs `f` on both; their results must be the same.
    fn both<T: PartialEq + std::fmt::Debug>(&mut self, f: impl Fn(&mut Session, Instant) -> T) {
        let a = f(&mut self.one, self.now);
        let b = f(&mut self.batch, self.now);
        assert_eq!(a, b);
    }

    /// Carries out the actions of both (which must be the same), noting the sends.
    fn drain_actions(&mut self) {
        loop {
            let a = self.one.poll_action();
            let b = self.batch.poll_action();
            assert_eq!(a, b);
            match a {
                Some(Action::Send { id, .. }) => self.sent.push_back(id),
                Some(_) => {}
                None => break,
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let current = self.one.current();
        assert_eq!(current, self.batch.current());
        match op {
            Op::Connect => self.both(|s, now| {
                s.connect(&ConnectOptions::new("ws://127.0.0.1:9"), now)
                    .map_err(|e| e.to_string())
            }),
            Op::Opened => {
                if let Some(conn) = current {
                    self.both(|s, now| s.handle(conn, TransportEvent::Opened(Box::default()), now));
                }
            }
            Op::Message(len) => {
                if let Some(conn) = current {
                    let message = Message::binary(vec![7u8; *len]);
                    self.both(|s, now| {
                        s.handle(conn, TransportEvent::Message(message.clone()), now)
                    });
                }
            }
            Op::Send(len) => self.both(|s, now| {
                s.send(Message::binary(vec![1u8; *len]), now)
                    .map_err(|e| e.to_string())
            }),
            Op::Written => {
                if let (Some(conn), Some(id)) = (current, self.sent.pop_front()) {
                    self.both(|s, now| s.handle(conn, TransportEvent::SendWritten(id), now));
                }
            }
            Op::Ping => self.both(|s, now| s.ping(&b"p"[..], now).map_err(|e| e.to_string())),
            Op::Pong => {
                if let Some(conn) = current {
                    let pong = TransportEvent::Pong(bytes::Bytes::from_static(b"p"));
                    self.both(|s, now| s.handle(conn, pong.clone(), now));
                }
            }
            Op::Drop => {
                if let Some(conn) = current {
                    let lost = TransportError::new(TransportErrorKind::Io, "reset");
                    self.both(|s, now| s.handle(conn, TransportEvent::Error(lost.clone()), now));
                    self.sent.clear();
                }
            }
            Op::Flap(n) => {
                for _ in 0..*n {
                    if let Some(conn) = self.one.current() {
                        let refused = TransportError::new(TransportErrorKind::Io, "refused");
                        let failed = TransportEvent::ConnectFailed(refused);
                        self.both(|s, now| s.handle(conn, failed.clone(), now));
                    }
                    self.drain_actions();
                    self.now += Duration::from_millis(50);
                    self.both(|s, now| s.handle_timeout(now));
                    self.drain_actions();
                }
                self.sent.clear();
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(*ms);
                self.both(|s, now| s.handle_timeout(now));
            }
            Op::Take { max, stop_above } => self.take(*max, *stop_above),
        }
        self.drain_actions();
        assert_eq!(self.one.backlog(), self.batch.backlog());
        assert_eq!(self.one.is_reading_paused(), self.batch.is_reading_paused());
        assert_eq!(self.one.has_events(), self.batch.has_events());
        assert_eq!(self.one.peek_event(), self.batch.peek_event());
    }

    fn take(&mut self, max: usize, stop_above: Option<usize>) {
        let admit = |taken: &mut usize, event: &Event| {
            let long = matches!((event, stop_above),
                (Event::Message { message, .. }, Some(limit)) if message.len() > limit);
            if *taken >= max || long {
                return false;
            }
            *taken += 1;
            true
        };
        let mut one = Vec::new();
        let mut taken = 0;
        while let Some(event) = self.one.peek_event() {
            if !admit(&mut taken, event) {
                break;
            }
            one.extend(self.one.poll_event());
        }
        // Into a batch that already holds something, now and then.
        let mut batch: VecDeque<Event> = VecDeque::new();
        let earlier = max.is_multiple_of(3);
        if earlier {
            batch.push_back(self.filler.clone());
        }
        let mut taken = 0;
        let count = self
            .batch
            .poll_events_into(&mut batch, |event| admit(&mut taken, event));
        if earlier {
            batch.pop_front();
        }
        assert_eq!(count, batch.len());
        assert_eq!(one, Vec::from(batch));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn taking_a_batch_is_taking_each_event(
        ops in proptest::collection::vec(op(), 1..120),
        record in any::<bool>(),
    ) {
        let mut pair = Pair::new(record);
        for op in &ops {
            pair.apply(op);
        }
        pair.apply(&Op::Take { max: usize::MAX, stop_above: None });
        prop_assert!(!pair.one.has_events() && !pair.batch.has_events());
    }
}
