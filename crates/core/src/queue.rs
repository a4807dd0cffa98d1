//! A FIFO of accepted sends with a running byte total. Used twice by the session: for
//! messages queued while connecting (bounded by count and bytes) and for messages handed to
//! the driver but not yet confirmed written (bounded by bytes; `buffered_amount`).

use crate::ids::SendId;
use crate::message::Message;
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    items: VecDeque<(SendId, Message)>,
    bytes: usize,
}

impl SendQueue {
    /// Whether a message of `len` bytes fits under both bounds.
    pub(crate) fn fits(&self, len: usize, max_messages: usize, max_bytes: usize) -> bool {
        self.items.len() < max_messages && self.bytes.saturating_add(len) <= max_bytes
    }

    pub(crate) fn push(&mut self, id: SendId, message: Message) {
        self.bytes += message.len();
        self.items.push_back((id, message));
    }

    /// Removes `id`, which the driver reports in order in the normal case (O(1)); an
    /// out-of-order report is searched for. Returns false for an unknown id.
    pub(crate) fn complete(&mut self, id: SendId) -> bool {
        let index = match self.items.front() {
            Some((front, _)) if *front == id => 0,
            _ => match self.items.iter().position(|(i, _)| *i == id) {
                Some(i) => i,
                None => return false,
            },
        };
        if let Some((_, m)) = self.items.remove(index) {
            self.bytes -= m.len();
        }
        true
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Empties the queue in FIFO order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (SendId, Message)> + '_ {
        self.bytes = 0;
        self.items.drain(..)
    }
}
