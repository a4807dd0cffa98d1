//! Session configuration: close-before-open policy, bounds, timeouts, keepalive.

use crate::error::ConfigError;
use std::time::Duration;

/// What `close` does while the socket is still connecting (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CloseBeforeOpen {
    /// Abort the dial; queued messages fail as cancelled; close event 1006, unclean.
    /// What the WHATWG WebSocket standard does.
    #[default]
    Abort,
    /// Remember the close; on open, emit open, flush the queue, then close (the seed's
    /// workaround, built in).
    AfterOpen,
    /// Refuse the close with [`crate::CloseError::NotOpenYet`] and change nothing (the
    /// seed's documented race, for runtimes that must mimic it).
    Ignore,
}

/// Liveness checking: ping after `interval` with nothing received, declare the peer dead
/// when nothing arrives within `timeout` of the ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time (nothing received) before a ping is sent.
    pub interval: Duration,
    /// How long to wait after the ping for anything to arrive.
    pub timeout: Duration,
}

/// Configuration of a [`crate::Session`]. Checked by [`SessionConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Close-before-open policy. Default [`CloseBeforeOpen::Abort`].
    pub close_before_open: CloseBeforeOpen,
    /// Most messages queued while connecting. Default 1024.
    pub max_queued_messages: usize,
    /// Most payload bytes queued while connecting. Default 8 MiB.
    pub max_queued_bytes: usize,
    /// Most bytes accepted but not yet confirmed written ([`crate::Session::buffered_amount`]).
    /// Must be at least `max_queued_bytes`. Default 16 MiB.
    pub max_buffered_bytes: usize,
    /// Largest message, sent or received. Default 64 MiB (tungstenite's default).
    pub max_message_size: usize,
    /// Handshake timeout when the connect options give none. Default 60 s.
    pub handshake_timeout: Duration,
    /// How long a closing transport may take before it is aborted. Default 10 s.
    pub close_timeout: Duration,
    /// Keepalive; off by default.
    pub keepalive: Option<Keepalive>,
    /// Connection limit of a [`crate::Pool`]. Default 5 (the `SocketTask` limit).
    pub pool_limit: usize,
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

    /// Sets the buffered-bytes bound.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sets the maximum message size.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the default handshake timeout.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the close timeout.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Turns keepalive on.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some(Keepalive { interval, timeout });
        self
    }

    /// Sets the pool limit.
    pub fn pool_limit(mut self, limit: usize) -> Self {
        self.pool_limit = limit;
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
        if self.handshake_timeout.is_zero() {
            return fail("handshake_timeout", "must be greater than zero");
        }
        if self.close_timeout.is_zero() {
            return fail("close_timeout", "must be greater than zero");
        }
        if let Some(k) = self.keepalive {
            if k.interval.is_zero() {
                return fail("keepalive.interval", "must be greater than zero");
            }
            if k.timeout.is_zero() {
                return fail("keepalive.timeout", "must be greater than zero");
            }
        }
        if self.pool_limit == 0 {
            return fail("pool_limit", "must be at least 1");
        }
        Ok(())
    }
}
