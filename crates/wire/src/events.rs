//! The batch of events an adapter's `Events` takes from the machine at a time: taking a
//! batch (one lock of the machine) costs little per event, and what is not taken yet stays
//! in the machine, whose receive bounds pause reading (flow control).

use crate::machine::Machine;
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

    /// Moves events from `machine` in until the batch is full or the machine has none;
    /// returns whether any came.
    pub fn fill<M: Machine>(&mut self, machine: &mut M) -> bool {
        self.fill_from(machine, false, |_| {})
    }

    /// [`Self::fill`], and with `ahead` (a batch filled ahead of the application, with
    /// nobody waiting for it) it stops before a message that would take the batch past
    /// [`BATCH_BYTES`], even into an empty batch: the message stays in the machine, whose
    /// receive bounds count it, so a paused connection does not read another while it
    /// waits here. `seen` sees each event moved in.
    pub fn fill_from<M: Machine>(
        &mut self,
        machine: &mut M,
        ahead: bool,
        mut seen: impl FnMut(&Event),
    ) -> bool {
        let (mut len, mut bytes) = (self.events.len(), self.bytes);
        // The machine moves them in bulk; this says where the batch ends.
        let taken = machine.take_events(&mut self.events, |event| {
            if len >= BATCH_EVENTS || bytes >= BATCH_BYTES {
                return false;
            }
            if let Event::Message { message, .. } = event {
                if ahead && bytes + message.len() > BATCH_BYTES {
                    return false;
                }
                bytes += message.len();
            }
            len += 1;
            seen(event);
            true
        });
        self.bytes = bytes;
        taken > 0
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
        assert!(batch.fill(&mut session));
        assert_eq!(batch.len(), BATCH_EVENTS, "the events bound");
        assert!(!batch.fill(&mut session), "full: nothing more comes");
        batch.clear();
        assert!(batch.is_empty() && !batch.is_full());

        let mut session = received(&[BATCH_BYTES / 4; 10]);
        batch.fill(&mut session);
        assert_eq!(batch.len(), 4, "the bytes bound");
        while batch.pop().is_some() {}
        assert!(!batch.is_full(), "the bytes went with the events");

        let mut session = received(&[BATCH_BYTES * 2, 1]);
        batch.fill(&mut session);
        assert_eq!(
            batch.len(),
            1,
            "a message over the bound still comes, alone"
        );
        batch.pop();
        assert!(batch.fill(&mut session));
        assert_eq!(batch.len(), 1);
    }

    /// A batch says it is full at either bound alone and not empty once it holds an event;
    /// an event taken gives back exactly its own bytes, so the next fill takes just what
    /// fits again.
    #[test]
    fn a_partly_taken_batch_refills_to_its_bound() {
        let mut batch = EventBatch::default();
        let mut session = received(&[1; BATCH_EVENTS]);
        assert!(batch.fill(&mut session));
        assert!(!batch.is_empty());
        assert!(batch.is_full(), "the events bound alone");

        let mut batch = EventBatch::default();
        let mut session = received(&[BATCH_BYTES / 4; 10]);
        assert!(batch.fill(&mut session));
        assert!(batch.is_full(), "the bytes bound alone");
        batch.pop();
        assert!(!batch.is_full());
        assert!(batch.fill(&mut session));
        assert_eq!(
            batch.len(),
            4,
            "one event's bytes came back, room for one more"
        );
        assert_eq!(session.backlog().messages, 5);
    }

    /// Filled ahead, a message that takes the batch exactly to its bytes bound still fits.
    #[test]
    fn a_batch_filled_ahead_takes_a_message_that_fits_exactly() {
        let mut batch = EventBatch::default();
        let mut session = received(&[BATCH_BYTES / 2, BATCH_BYTES / 2, 1]);
        assert!(batch.fill_from(&mut session, true, |_| {}));
        assert_eq!(batch.len(), 2);
        assert!(batch.is_full());
        assert_eq!(session.backlog().messages, 1);
    }

    /// Filled ahead of the application, a batch leaves a message that does not fit in the
    /// session, where the receive bounds still count it, even when the batch is empty; the
    /// smaller ones before it come.
    #[test]
    fn a_batch_filled_ahead_leaves_a_message_that_does_not_fit() {
        let mut batch = EventBatch::default();
        let mut session = received(&[BATCH_BYTES / 2, BATCH_BYTES + 1, 1]);
        assert!(batch.fill_from(&mut session, true, |_| {}));
        assert_eq!(batch.len(), 1, "the first fits, the second does not");
        assert_eq!(session.backlog().messages, 2);
        batch.pop();
        assert!(!batch.fill_from(&mut session, true, |_| {}));
        assert_eq!(session.backlog().bytes, BATCH_BYTES + 2, "still counted");
        // Asked for (or with a thread waiting), it comes, alone.
        assert!(batch.fill(&mut session));
        assert_eq!(batch.len(), 1);
        assert_eq!(session.backlog().messages, 1);
    }
}
