//! A FIFO of accepted sends with a running byte total. Used twice by the session: for
//! messages queued while connecting (bounded by count and bytes; the session still owns
//! them) and for messages handed to the driver but not yet confirmed written (bounded by
//! bytes; only their sizes are kept, since the payload went to the driver by move).

use crate::ids::SendId;
use crate::message::Message;
use std::collections::VecDeque;

/// What a queue entry holds: a whole message, or just the size of one handed away.
pub(crate) trait Entry {
    /// Bytes it counts for.
    fn weight(&self) -> usize;
    /// The message to hand back if the send fails, when the session still has it.
    fn into_message(self) -> Option<Message>;
}

impl Entry for Message {
    fn weight(&self) -> usize {
        self.len()
    }
    fn into_message(self) -> Option<Message> {
        Some(self)
    }
}

impl Entry for usize {
    fn weight(&self) -> usize {
        *self
    }
    fn into_message(self) -> Option<Message> {
        None
    }
}

#[derive(Debug)]
pub(crate) struct SendQueue<T> {
    items: VecDeque<(SendId, T)>,
    bytes: usize,
}

impl<T> Default for SendQueue<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T: Entry> SendQueue<T> {
    /// Whether an entry of `len` bytes fits under both bounds. An entry always fits an
    /// empty queue, whatever its size: a message larger than the byte bound (and within
    /// `max_message_size`, checked before) goes alone, or it could never be sent and a
    /// sender waiting for room would wait for ever.
    pub(crate) fn fits(&self, len: usize, max_entries: usize, max_bytes: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < max_entries && self.bytes.saturating_add(len) <= max_bytes)
    }

    pub(crate) fn push(&mut self, id: SendId, entry: T) {
        self.bytes += entry.weight();
        self.items.push_back((id, entry));
    }

    /// Moves every entry of `other` to the back of this queue, in order.
    pub(crate) fn append(&mut self, other: &mut Self) {
        self.bytes += std::mem::take(&mut other.bytes);
        self.items.append(&mut other.items);
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
        if let Some((_, e)) = self.items.remove(index) {
            self.bytes -= e.weight();
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
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (SendId, T)> + '_ {
        self.bytes = 0;
        self.items.drain(..)
    }
}
