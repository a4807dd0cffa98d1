//! What tungstenite reads on an open client connection, in both adapters: first the bytes
//! that came with the handshake response (its tail), then the socket's, through the
//! adaptive read-ahead ([`ReadAhead`]), or through the inflater when permessage-deflate is
//! in force; a [`FrameWatch`] sees every byte, for the peer's close frame as it was sent
//! and for invalid UTF-8 in a text message, which fails the connection as soon as it
//! arrives (after the bytes before it were read).
//!
//! The tail is served first rather than handed to tungstenite's `from_partially_read`,
//! which would size its read buffer from it: with a short tail, every later read would
//! fetch a few bytes, one syscall per message. With the inflater the tail is inflated on the
//! first read, so a failure in it fails the open connection (1002 / 1009).

use crate::convert::FrameWatch;
use crate::deflate::Inflater;
use crate::read_ahead::ReadAhead;
use bytes::Bytes;
use std::io;
use std::task::Poll;

/// The read side of an open connection (see the module docs).
#[derive(Debug)]
pub struct Incoming {
    tail: Bytes,
    inflater: Option<Box<Inflater>>,
    ahead: ReadAhead,
    frame_watch: FrameWatch,
    /// Invalid UTF-8 the frame watch found, for the next read once the bytes before it
    /// were handed on.
    failure: Option<io::Error>,
}

impl Incoming {
    /// The read side of a connection whose handshake left `tail` unread, inflating with
    /// `inflater` when compression was agreed (see [`crate::dial::codecs`]).
    pub fn new(tail: Bytes, inflater: Option<Box<Inflater>>) -> Self {
        Self {
            tail,
            inflater,
            ahead: ReadAhead::default(),
            frame_watch: FrameWatch::default(),
            failure: None,
        }
    }

    /// Whether the socket's bytes pass through an inflater.
    pub fn is_inflating(&self) -> bool {
        self.inflater.is_some()
    }

    /// What the close watch saw of the peer's close frame.
    pub fn frame_watch(&self) -> &FrameWatch {
        &self.frame_watch
    }

    /// The close watch, to start counting its longest frame afresh.
    pub fn frame_watch_mut(&mut self) -> &mut FrameWatch {
        &mut self.frame_watch
    }

    /// Fills `out` with the next bytes for tungstenite; `read` reads (or polls) the socket,
    /// and its `Pending`, errors and end of stream are passed on.
    pub fn poll_read(
        &mut self,
        out: &mut [u8],
        mut read: impl FnMut(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let Some(failure) = self.failure.take() {
            return Poll::Ready(Err(failure));
        }
        let polled = match &mut self.inflater {
            None if !self.tail.is_empty() => {
                let n = self.tail.len().min(out.len());
                out[..n].copy_from_slice(&self.tail.split_to(n));
                Poll::Ready(Ok(n))
            }
            None => self.ahead.poll_read(out, read),
            Some(inflater) => {
                if !self.tail.is_empty() {
                    inflater.feed_deferred(&std::mem::take(&mut self.tail));
                }
                inflater.poll_read_from(out, &mut read)
            }
        };
        if let Poll::Ready(Ok(n)) = polled
            && let Some(fault) = self.frame_watch.scan(&mut out[..n])
        {
            // Invalid UTF-8 in a text message (1007) or a frame length no peer may send
            // (1002): what came before it is read first (it may complete earlier
            // messages), then the connection fails.
            let failure = io::Error::new(io::ErrorKind::InvalidData, fault.error);
            if fault.at == 0 {
                return Poll::Ready(Err(failure));
            }
            self.failure = Some(failure);
            return Poll::Ready(Ok(fault.at));
        }
        polled
    }
}
