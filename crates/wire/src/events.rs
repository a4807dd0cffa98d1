//! The batch of events an adapter's `Events` takes from the machine at a time: taking a
//! batch (one lock of the machine) costs little per event, and what is not taken yet stays
//! in the machine, whose receive bounds pause reading (flow control).

use std::collections::VecDeque;
use wxsocket_core::Event;

/// Most events in one batch.
pub const BATCH_EVENTS: usize = 64;

/// Most message payload bytes in one batch (it always takes at least one event, so a larger
/// message still gets through).
pub const BATCH_BYTES: usize = 256 << 10;

/// Events taken from the machine, not yet handed to the application: at most
/// [`BATCH_EVENTS`] events and [`BATCH_BYTES`] of message payloads (or one message).
#[derive(Debug, Default)]
pub struct EventBatch {
    events: VecDeque<Event>,
    /// Payload bytes of the messages in `events`.
    bytes: usize,
}

impl EventBatch {
    /// Takes the next event.
    pub fn pop(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if let Event::Message { message, .. } = &event {
            self.bytes -= message.len();
        }
        Some(event)
    }

    /// Whether no event is waiting here.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many events wait here.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Drops every event.
    pub fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    /// Whether the batch is complete (an empty batch never is).
    pub fn is_full(&self) -> bool {
        self.events.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES
    }

    /// Moves events from `next` (the machine's next event) in until the batch is full or
    /// `next` has none; returns whether any came.
    pub fn fill(&mut self, mut next: impl FnMut() -> Option<Event>) -> bool {
        let mut moved = false;
        while !self.is_full() {
            let Some(event) = next() else {
                break;
            };
            if let Event::Message { message, .. } = &event {
                self.bytes += message.len();
            }
            self.events.push_back(event);
            moved = true;
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use wxsocket_core::{ConnectOptions, Message, Session, SessionConfig, TransportEvent};

    /// An open session that has received `lens.len()` messages of those lengths.
    fn received(lens: &[usize]) -> Session {
        let config = SessionConfig::default()
            .receive_bounds(10_000, 64 << 20)
            .max_message_size(16 << 20);
        let mut session = Session::new(config).unwrap();
        let now = Instant::now();
        let conn = session
            .connect(&ConnectOptions::new("ws://127.0.0.1:9"), now)
            .unwrap();
        session.handle(conn, TransportEvent::Opened(Box::default()), now);
        while session.poll_action().is_some() {}
        while session.poll_event().is_some() {}
        for &len in lens {
            let message = TransportEvent::Message(Message::binary(vec![0u8; len]));
            session.handle(conn, message, now);
        }
        session
    }

    /// A batch ends at either bound, always takes at least one event, and gives the bytes
    /// back as events are taken.
    #[test]
    fn a_batch_ends_at_either_bound() {
        let mut batch = EventBatch::default();
        let mut session = received(&[1; BATCH_EVENTS + 1]);
        assert!(batch.fill(|| session.poll_event()));
        assert_eq!(batch.len(), BATCH_EVENTS, "the events bound");
        assert!(
            !batch.fill(|| session.poll_event()),
            "full: nothing more comes"
        );
        batch.clear();
        assert!(batch.is_empty() && !batch.is_full());

        let mut session = received(&[BATCH_BYTES / 4; 10]);
        batch.fill(|| session.poll_event());
        assert_eq!(batch.len(), 4, "the bytes bound");
        while batch.pop().is_some() {}
        assert!(!batch.is_full(), "the bytes went with the events");

        let mut session = received(&[BATCH_BYTES * 2, 1]);
        batch.fill(|| session.poll_event());
        assert_eq!(
            batch.len(),
            1,
            "a message over the bound still comes, alone"
        );
        batch.pop();
        assert!(batch.fill(|| session.poll_event()));
        assert_eq!(batch.len(), 1);
    }
}
