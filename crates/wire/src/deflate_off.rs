//! permessage-deflate when the `deflate` feature is off: nothing is compressed.
//!
//! The adapters refuse a compression offer at connect ([`crate::check_request`]) and the
//! core fails a server answer that agrees to an extension not offered, so no connection
//! ever negotiates compression. [`Compressor`] and [`Inflater`] therefore have no values:
//! there is no client-side constructor, and the server-side ones take [`NoDeflateParams`],
//! which [`accept`] never returns (a server built on it declines every offer). They keep
//! the code that uses them the same in both builds.

use std::fmt;
use std::io::{self, Read};
use tungstenite::Message as WsMessage;
use wxsocket_core::{Message, TransportError, TransportErrorKind};

/// Compresses outgoing messages; has no values without the `deflate` feature.
#[derive(Debug)]
pub enum Compressor {}

impl Compressor {
    /// The server's side of an agreement, which cannot exist without the feature.
    pub fn server(params: &NoDeflateParams, _threshold: usize) -> Self {
        match *params {}
    }

    /// The message as tungstenite should write it.
    pub fn encode(&mut self, _message: Message) -> WsMessage {
        match *self {}
    }
}

/// Agreed permessage-deflate parameters on a server; has no values without the `deflate`
/// feature (with it, [`accept`] returns `wxsocket_core::DeflateParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDeflateParams {}

impl fmt::Display for NoDeflateParams {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

/// The server's side of the negotiation: without the `deflate` feature every offer is
/// declined (`None`), and the connection runs uncompressed.
pub fn accept(_headers: &http::HeaderMap) -> Option<(NoDeflateParams, http::HeaderValue)> {
    None
}

/// Why the server's compressed data could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflateError {
    /// [`TransportErrorKind::Protocol`] or [`TransportErrorKind::MessageTooBig`].
    pub kind: TransportErrorKind,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InflateError {}

impl From<InflateError> for TransportError {
    fn from(e: InflateError) -> Self {
        TransportError::new(e.kind, e.message)
    }
}

impl From<InflateError> for io::Error {
    fn from(e: InflateError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Inflates the server's compressed frames; has no values without the `deflate` feature.
#[derive(Debug)]
pub enum Inflater {}

impl Inflater {
    /// The server's side of an agreement, which cannot exist without the feature.
    pub fn server(params: &NoDeflateParams, _max_message_size: usize) -> Self {
        match *params {}
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        match *self {}
    }

    /// Copies waiting output into `buf`; returns how much.
    pub fn take_output(&mut self, _buf: &mut [u8]) -> usize {
        match *self {}
    }

    /// Moves all waiting output to the end of `into`.
    pub fn drain_output(&mut self, _into: &mut Vec<u8>) {
        match *self {}
    }

    /// Reads from `inner` until there is output for `buf`.
    pub fn read_from<R: Read>(&mut self, _inner: &mut R, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    /// [`read_from`](Self::read_from) through a reading (or polling) function.
    pub fn poll_read_from(
        &mut self,
        _buf: &mut [u8],
        _read: impl FnMut(&mut [u8]) -> std::task::Poll<io::Result<usize>>,
    ) -> std::task::Poll<io::Result<usize>> {
        match *self {}
    }

    /// Feeds bytes read from the server, keeping a failure for later.
    pub fn feed_deferred(&mut self, _input: &[u8]) {
        match *self {}
    }

    /// The failure kept by [`feed_deferred`](Self::feed_deferred).
    pub fn take_failure(&mut self) -> Option<InflateError> {
        match *self {}
    }

    /// Feeds bytes read from the server.
    pub fn feed(&mut self, _input: &[u8]) -> Result<(), InflateError> {
        match *self {}
    }
}
