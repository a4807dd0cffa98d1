//! Inbound flow control: what the application has not taken yet, and how much more the
//! driver may read (SPEC §7).
//!
//! A session counts the received messages and send completions waiting in its event queue
//! (taken by [`crate::Session::poll_event`]). When the received messages reach their bound
//! (count or bytes, [`crate::SessionConfig::receive_bounds`]) the session pauses reading:
//! [`crate::Session::read_credit`] is zero until the application has taken half of them,
//! then the session asks the driver to read again with [`crate::Action::ResumeReading`].
//! A driver hands the session at most the credit it was given, so TCP pushes back on the
//! peer instead of memory growing.

/// Events waiting in a session's queue that count toward its bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// Received messages not yet taken.
    pub messages: usize,
    /// Their payload bytes.
    pub bytes: usize,
    /// Send completions (`SendCompleted`, `SendFailed`) not yet taken.
    pub completions: usize,
}

impl Backlog {
    /// Whether the received messages reached either bound.
    pub(crate) fn is_full(&self, max_messages: usize, max_bytes: usize) -> bool {
        self.messages >= max_messages || self.bytes >= max_bytes
    }

    /// Whether the received messages are down to half of both bounds (the low-water mark
    /// at which a paused connection reads again; halfway, so a paused reader is not woken
    /// for every message the application takes).
    pub(crate) fn is_low(&self, max_messages: usize, max_bytes: usize) -> bool {
        self.messages <= max_messages / 2 && self.bytes <= max_bytes / 2
    }

    /// The credit left under the bounds (zero when full).
    pub(crate) fn credit(&self, max_messages: usize, max_bytes: usize) -> ReadCredit {
        if self.is_full(max_messages, max_bytes) {
            return ReadCredit::PAUSED;
        }
        ReadCredit {
            messages: max_messages - self.messages,
            bytes: max_bytes - self.bytes,
        }
    }
}

/// How much a driver may read from one connection before it asks again
/// ([`Session::read_credit`](crate::Session::read_credit)): at most `messages` more messages,
/// and it stops after the message with which the bytes handed over reach `bytes` (so one
/// message larger than the whole allowance is still delivered whole). Zero messages: reading is
/// paused until [`Action::ResumeReading`](crate::Action::ResumeReading).
///
/// ```
/// use wxsocket_core::ReadCredit;
/// let mut credit = ReadCredit::new(3, 100);
/// assert!(credit.take(60)); // 1 message, 40 bytes left
/// assert!(!credit.take(70)); // crosses the byte allowance: delivered, then paused
/// assert!(credit.is_paused());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCredit {
    /// Messages the driver may still hand over.
    pub messages: usize,
    /// Bytes before the driver stops (after the message that reaches it).
    pub bytes: usize,
}

impl ReadCredit {
    /// No reading.
    pub const PAUSED: ReadCredit = ReadCredit {
        messages: 0,
        bytes: 0,
    };
    /// No limit (data the session discards, or a connection that is not the reading one).
    pub const UNLIMITED: ReadCredit = ReadCredit {
        messages: usize::MAX,
        bytes: usize::MAX,
    };

    /// A credit of `messages` messages and `bytes` bytes.
    pub fn new(messages: usize, bytes: usize) -> Self {
        Self { messages, bytes }
    }

    /// Whether the driver must not read now.
    pub fn is_paused(&self) -> bool {
        self.messages == 0 || self.bytes == 0
    }

    /// Counts one message of `len` bytes handed over; returns whether the driver may
    /// read another.
    pub fn take(&mut self, len: usize) -> bool {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
        if self.bytes == 0 {
            self.messages = 0;
        }
        !self.is_paused()
    }
}
