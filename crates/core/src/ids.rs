//! Identifiers the session hands out: one per connection attempt, one per accepted send.

use std::fmt;

/// Identifies one connection attempt (one dial). Every `connect` gets a fresh, larger id,
/// so transport input for an old connection can always be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// An id from its number, for drivers that carry ids across a boundary (and tests);
    /// the session only acts on ids it issued itself.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The id as a number, for logs and wire formats (the CLI's `"conn"` field).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one message accepted by `send`. Each `SendId` ever returned gets exactly one
/// completion event: written or failed, exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendId(pub(crate) u64);

impl SendId {
    /// An id from its number, for drivers that carry ids across a boundary (and tests);
    /// the session only acts on ids it issued itself.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The id as a number, for logs and wire formats (the CLI's `"id"` field).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Hands out monotonic ids. Shared by a [`Pool`](crate::Pool)'s sessions so ids stay unique
/// across all of its connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdAllocator {
    next_conn: u64,
    next_send: u64,
}

impl IdAllocator {
    pub(crate) fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub(crate) fn send(&mut self) -> SendId {
        self.next_send += 1;
        SendId(self.next_send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids print as their number (the command's `#1` lines, the `--json` `conn` and `id`).
    #[test]
    fn ids_display_as_their_number() {
        assert_eq!(ConnId::from_raw(7).to_string(), "7");
        assert_eq!(SendId::from_raw(42).to_string(), "42");
    }
}
