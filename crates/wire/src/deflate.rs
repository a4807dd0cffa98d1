//! permessage-deflate (RFC 7692) on the wire, for connections that negotiated it.
//!
//! tungstenite 0.30 has no extension support and fails any frame with RSV1 set, but the
//! extension is, by its definition, a transform of data frames: a compressed message is a
//! data frame with RSV1 set whose payload (across its fragments) is a raw DEFLATE stream
//! ending in an empty sync-flush block, minus the block's last four bytes. So both
//! directions are done at the frame level, around an unchanged tungstenite:
//!
//! - **Sending** ([`Compressor`]): a message is compressed and handed to tungstenite as a
//!   ready-made frame with RSV1 set (`Message::Frame`), which tungstenite masks and writes
//!   like any other. Messages shorter than the threshold go out uncompressed.
//! - **Receiving** ([`Inflater`]): the bytes the server sends pass through the inflater
//!   before tungstenite reads them. Uncompressed frames pass as they are; a compressed
//!   message is inflated as its bytes arrive and re-emitted as ordinary, unmasked frames
//!   (the first with the message's opcode, the rest as continuations), so tungstenite still
//!   does everything else: control frames interleaved, fragmentation, UTF-8 checks, the
//!   close handshake, limits.
//!
//! Connections that did not negotiate compression never touch this module: their wire
//! behaviour and speed are exactly tungstenite's.
//!
//! Limits and failures: the inflated size of a message is counted while it is inflated,
//! never past `max_message_size` + one chunk, so a decompression bomb costs at most that
//! much memory and ends in [`TransportErrorKind::MessageTooBig`] (close 1009). RSV1 on a
//! control or continuation frame, a masked frame and invalid DEFLATE data are
//! [`TransportErrorKind::Protocol`] (close 1002). Errors travel through tungstenite as an
//! IO error carrying an [`InflateError`], which [`crate::convert::classify`] turns back
//! into its kind.
//!
//! ```
//! use wxsocket_core::{DeflateOptions, DeflateParams, Message};
//! use wxsocket_wire::deflate::{Compressor, Inflater};
//!
//! let params = DeflateParams::default();
//! let mut compressor = Compressor::new(&params, &DeflateOptions::default());
//! let text = "hello hello hello hello hello hello hello hello";
//! let tungstenite::Message::Frame(frame) = compressor.encode(Message::text(text)) else {
//!     panic!("long enough to be compressed");
//! };
//! assert!(frame.header().rsv1 && frame.payload().len() < text.len());
//!
//! // The same frame as a server would send it (unmasked), inflated back.
//! let mut wire = Vec::new();
//! frame.format(&mut wire).unwrap();
//! let mut inflater = Inflater::new(&params, 1 << 20);
//! inflater.feed(&wire).unwrap();
//! let mut plain = vec![0; 256];
//! let n = inflater.take_output(&mut plain);
//! assert_eq!(&plain[..2], [0x81, text.len() as u8]); // FIN + text, no RSV1
//! assert_eq!(&plain[2..n], text.as_bytes());
//! ```

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::fmt;
use std::io::{self, Read};
use std::task::Poll;
use tungstenite::Message as WsMessage;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use wxsocket_core::deflate::MIN_WINDOW_BITS;
use wxsocket_core::{DeflateOptions, DeflateParams, Message, TransportError, TransportErrorKind};

use crate::convert::to_ws;

/// The tail every compressed message ends with before it is stripped (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Most bytes inflated per step (bounds memory beyond the message limit).
const CHUNK: usize = 32 * 1024;
/// The size of a reader's buffer for the compressed bytes it reads.
const RAW: usize = 16 * 1024;
/// About the most inflated bytes re-emitted as one frame, and the output a reader
/// ([`Inflater::poll_read_from`]) lets wait before it inflates more of what it read. A
/// compressed message is handed on in frames of this size as it is inflated, never held
/// whole: one 16 KiB read can inflate to 16 MiB, and holding that (then copying it) is
/// several short-lived allocations of the message's size per message, which fragment the
/// allocator's free memory when threads share it.
const FRAGMENT: usize = CHUNK;

/// Compresses outgoing messages of one connection.
///
/// zlib's state (about 320 KiB at a 15-bit window) is made when the first message is
/// compressed, not when the connection opens; with `client_no_context_takeover` agreed the
/// connection holds none between messages: each message borrows a state kept by the thread
/// that compresses it, reset after it as the connection's own would be. So a
/// connection that sends nothing compressible, or that compresses without context
/// takeover, holds none of it, and a thread holds at most one.
pub struct Compressor {
    /// zlib's state, while it is kept (see above).
    compress: Option<Compress>,
    level: Compression,
    window_bits: u8,
    reset_each_message: bool,
    threshold: usize,
    /// The server asked for a 256-byte window, which zlib cannot make: send uncompressed
    /// (always allowed, RFC 7692 §6).
    disabled: bool,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("reset_each_message", &self.reset_each_message)
            .field("threshold", &self.threshold)
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl Compressor {
    /// A compressor for the agreed `params`, with the local choices of `options`
    /// (threshold).
    pub fn new(params: &DeflateParams, options: &DeflateOptions) -> Self {
        Self::with(
            params.client_max_window_bits,
            params.client_no_context_takeover,
            options.threshold,
            options.level,
        )
    }

    /// The server's side of the same agreement (for servers and test peers built on
    /// tungstenite, which send frames unmasked).
    pub fn server(params: &DeflateParams, threshold: usize) -> Self {
        Self::server_at_level(params, threshold, Compression::default().level())
    }

    /// [`server`](Self::server) compressing at zlib `level` (0-9; the default is 6): a
    /// benchmark's server matches the level its client compresses at, which the
    /// negotiation does not carry.
    pub fn server_at_level(params: &DeflateParams, threshold: usize, level: u32) -> Self {
        Self::with(
            params.server_max_window_bits,
            params.server_no_context_takeover,
            threshold,
            level,
        )
    }

    fn with(bits: u8, reset_each_message: bool, threshold: usize, level: u32) -> Self {
        let disabled = bits <= MIN_WINDOW_BITS;
        Self {
            compress: None,
            level: Compression::new(level.min(9)),
            window_bits: bits.clamp(MIN_WINDOW_BITS + 1, 15),
            reset_each_message,
            threshold,
            disabled,
        }
    }

    /// The message as tungstenite should write it: a compressed frame with RSV1 set, or
    /// the plain message when it is under the threshold.
    pub fn encode(&mut self, message: Message) -> WsMessage {
        let opcode = match &message {
            Message::Text(_) => OpCode::Data(Data::Text),
            Message::Binary(_) => OpCode::Data(Data::Binary),
            _ => return to_ws(message),
        };
        let input = message.as_bytes();
        if self.disabled || input.len() < self.threshold {
            return to_ws(message);
        }
        let payload = self.compress_message(input);
        let mut frame = Frame::message(payload, opcode, true);
        frame.header_mut().rsv1 = true;
        WsMessage::Frame(frame)
    }

    /// Whether zlib's state is held now (see the type's docs).
    pub fn holds_state(&self) -> bool {
        self.compress.is_some()
    }

    fn compress_message(&mut self, input: &[u8]) -> Vec<u8> {
        let (level, bits) = (self.level, self.window_bits);
        let compress = match &mut self.compress {
            Some(compress) => compress,
            None if self.reset_each_message => self.compress.insert(spare::compress(level, bits)),
            None => self
                .compress
                .insert(Compress::new_with_window_bits(level, false, bits)),
        };
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start = compress.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let done = (compress.total_in() - start) as usize;
            // Compressing into a Vec with room never fails; a sync flush is complete once a
            // call returns with output space left.
            let _ = compress.compress_vec(&input[done..], &mut out, FlushCompress::Sync);
            let done = (compress.total_in() - start) as usize;
            if done == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.is_empty() {
            // Nothing new since the last flush (an empty message): zlib wrote no block at
            // all. RFC 7692 §7.2.3.6: send an empty stored block's first byte, so the
            // receiver's appended tail completes a real block.
            out.push(0x00);
        }
        if self.reset_each_message
            && let Some(compress) = self.compress.take()
        {
            // The next message starts afresh: the state goes back to the thread's spare.
            spare::give_back_compress(level, bits, compress);
        }
        out
    }
}

/// The server's side of the negotiation over a request's headers: the first acceptable
/// permessage-deflate offer in its `Sec-WebSocket-Extensions` (all of them, in order),
/// accepted with everything it asks for (see [`wxsocket_core::deflate::accept_offer`]), as
/// the agreed parameters and the response header value. For servers and test peers built
/// on tungstenite.
pub fn accept(headers: &http::HeaderMap) -> Option<(DeflateParams, http::HeaderValue)> {
    let offers = headers
        .get_all("sec-websocket-extensions")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let (params, answer) = wxsocket_core::deflate::accept_offer(&offers)?;
    Some((params, http::HeaderValue::from_str(&answer).ok()?))
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

fn protocol(message: impl Into<String>) -> InflateError {
    InflateError {
        kind: TransportErrorKind::Protocol,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a frame header.
    Header,
    /// Passing this many payload bytes of an uncompressed frame through.
    Plain { left: u64 },
    /// Inflating this many payload bytes of a compressed message's frame.
    Compressed { left: u64, fin: bool },
    /// An error was reported; nothing more is read.
    Failed,
}

/// Turns the server's byte stream into one without compressed frames (see the module
/// docs). Sans-IO: [`feed`](Self::feed) raw bytes, [`take_output`](Self::take_output) what
/// tungstenite should read; or let [`read_from`](Self::read_from) do both over a reader.
///
/// What it holds between messages is little: zlib's state (about 40 KiB with a 32 KiB
/// window, less with a smaller agreed `server_max_window_bits`) from the first compressed
/// message on, and not at all between messages when `server_no_context_takeover` is agreed;
/// the buffers of a reader ([`poll_read_from`](Self::poll_read_from)) only while the
/// socket has bytes to read.
pub struct Inflater {
    /// zlib's state, made at the first compressed message and, without context takeover,
    /// let go at the end of each.
    decompress: Option<Decompress>,
    window_bits: u8,
    /// Server side: frames arrive masked, and are re-emitted masked (with a zero key).
    server: bool,
    /// The mask key of the compressed frame being read (server side) and the offset into
    /// its payload.
    mask: [u8; 4],
    mask_at: usize,
    reset_each_message: bool,
    max_message_size: usize,
    state: State,
    header: [u8; 14],
    header_len: usize,
    /// Inside a compressed message (its first frame seen, not yet its last).
    compressed_message: bool,
    /// Inside a fragmented uncompressed message.
    plain_message: bool,
    /// The compressed message's opcode, until its first frame is emitted.
    opcode: Option<u8>,
    /// Inflated bytes of the current compressed message.
    inflated: usize,
    /// Compressed payload bytes of the current compressed message.
    compressed: u64,
    out: Vec<u8>,
    out_pos: usize,
    /// A failure met by [`Inflater::feed_deferred`], reported once the output before it
    /// has been taken.
    failure: Option<InflateError>,
    scratch: Vec<u8>,
    unmasked: Vec<u8>,
    raw: Box<[u8]>,
    /// The bytes of `raw` read but not yet inflated: `raw[raw_at..raw_len]`.
    raw_at: usize,
    raw_len: usize,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("state", &self.state)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

impl Inflater {
    /// An inflater for the agreed `params`; messages may inflate to `max_message_size`.
    pub fn new(params: &DeflateParams, max_message_size: usize) -> Self {
        let (reset, bits) = (
            params.server_no_context_takeover,
            params.server_max_window_bits,
        );
        Self::with(false, reset, bits, max_message_size)
    }

    /// The server's side: inflates the client's (masked) compressed frames and emits
    /// masked frames, as a tungstenite server expects.
    pub fn server(params: &DeflateParams, max_message_size: usize) -> Self {
        let (reset, bits) = (
            params.client_no_context_takeover,
            params.client_max_window_bits,
        );
        Self::with(true, reset, bits, max_message_size)
    }

    fn with(server: bool, reset_each_message: bool, bits: u8, max_message_size: usize) -> Self {
        Self {
            decompress: None,
            // The peer's window is at most the agreed one; zlib's smallest is 9 bits (which
            // inflates an 8-bit window's data too).
            window_bits: bits.clamp(MIN_WINDOW_BITS + 1, 15),
            server,
            mask: [0; 4],
            mask_at: 0,
            reset_each_message,
            max_message_size,
            state: State::Header,
            header: [0; 14],
            header_len: 0,
            compressed_message: false,
            plain_message: false,
            opcode: None,
            inflated: 0,
            compressed: 0,
            out: Vec::new(),
            out_pos: 0,
            failure: None,
            scratch: Vec::new(),
            unmasked: Vec::new(),
            raw: Box::default(),
            raw_at: 0,
            raw_len: 0,
        }
    }

    /// Whether output is waiting for [`take_output`](Self::take_output).
    pub fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Copies waiting output into `buf`; returns how much.
    pub fn take_output(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.out.len() - self.out_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.output_taken();
        }
        n
    }

    /// Moves all waiting output to the end of `into`.
    pub fn drain_output(&mut self, into: &mut Vec<u8>) {
        into.extend_from_slice(&self.out[self.out_pos..]);
        self.output_taken();
    }

    /// The output has all been taken: its buffer is kept for the next message, unless one
    /// large message grew it (one read of a highly compressible message inflates to up to
    /// about a thousand times its size), which would stay with the connection for its life.
    fn output_taken(&mut self) {
        self.out_pos = 0;
        if self.out.capacity() > 4 * CHUNK {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
    }

    /// Whether zlib's state is held now (see the type's docs).
    pub fn holds_state(&self) -> bool {
        self.decompress.is_some()
    }

    /// The bytes the inflater's buffers hold (its raw read buffer, its scratch and its
    /// output; not zlib's state), for an embedder that accounts for a connection's memory.
    /// Read through [`poll_read_from`](Self::poll_read_from), a client's stays below
    /// 16 KiB + 2 × 128 KiB at all times, whatever the messages are, and is zero once the
    /// socket had nothing more to read; fed with [`feed`](Self::feed), it holds the output
    /// of what it was fed until that is taken.
    pub fn retained(&self) -> usize {
        self.raw.len() + self.scratch.capacity() + self.unmasked.capacity() + self.out.capacity()
    }

    /// Reads from `inner` until there is output for `buf` (or `inner` ends or would block).
    /// A failure is returned only after the output produced before it (see
    /// [`feed_deferred`](Self::feed_deferred)).
    pub fn read_from<R: Read>(&mut self, inner: &mut R, buf: &mut [u8]) -> io::Result<usize> {
        match self.poll_read_from(buf, |raw| Poll::Ready(inner.read(raw))) {
            Poll::Ready(result) => result,
            Poll::Pending => unreachable!("a `Read` is never pending"),
        }
    }

    /// [`read_from`](Self::read_from) through `read`, which reads the socket (or polls it:
    /// its `Pending`, its errors and the end of the stream are passed on once no output is
    /// waiting). What was read is inflated a frame at a time (about 32 KiB), as the output
    /// is taken, so the inflater holds about that much output whatever the compression ratio.
    pub fn poll_read_from(
        &mut self,
        buf: &mut [u8],
        mut read: impl FnMut(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.has_output() || buf.is_empty() {
                return Poll::Ready(Ok(self.take_output(buf)));
            }
            if let Some(failure) = self.take_failure() {
                return Poll::Ready(Err(failure.into()));
            }
            let raw = std::mem::take(&mut self.raw);
            if self.raw_at < self.raw_len {
                match self.feed_until(&raw[self.raw_at..self.raw_len], FRAGMENT) {
                    Ok(taken) => self.raw_at += taken,
                    Err(e) => {
                        self.failure = Some(e);
                        self.raw_at = self.raw_len;
                    }
                }
                self.raw = raw;
                continue;
            }
            let mut raw = raw;
            if raw.is_empty() {
                raw = vec![0; RAW].into_boxed_slice();
            }
            let polled = read(&mut raw);
            self.raw = raw;
            match polled {
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.raw_at = 0;
                    self.raw_len = n;
                }
                Poll::Pending => {
                    self.release_buffers();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.release_buffers();
                    return Poll::Ready(Err(e));
                }
                other => return other,
            }
        }
    }

    /// The socket has nothing more to read now and everything read was inflated and taken:
    /// the buffers go back (as the plain read-ahead's does), so that an idle connection
    /// holds none of them.
    fn release_buffers(&mut self) {
        self.raw = Box::default();
        self.raw_at = 0;
        self.raw_len = 0;
        self.scratch = Vec::new();
        self.unmasked = Vec::new();
        self.out = Vec::new();
        self.out_pos = 0;
    }

    /// [`feed`](Self::feed) for a reader: a failure is kept, not returned, so that what
    /// was inflated before it in the same bytes is still read first. One read can hold
    /// the end of a good message and the start of a failing one (say, one that inflates
    /// past the limit); the good one must still be delivered. Ask
    /// [`take_failure`](Self::take_failure) whenever the output runs dry.
    pub fn feed_deferred(&mut self, input: &[u8]) {
        if self.failure.is_none()
            && let Err(e) = self.feed(input)
        {
            self.failure = Some(e);
        }
    }

    /// The failure kept by [`feed_deferred`](Self::feed_deferred), once every byte of
    /// output produced before it has been taken (`None` until then).
    pub fn take_failure(&mut self) -> Option<InflateError> {
        if self.has_output() {
            None
        } else {
            self.failure.take()
        }
    }

    /// Feeds bytes read from the server.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), InflateError> {
        self.feed_until(input, usize::MAX).map(|_| ())
    }

    /// Feeds bytes read from the server until `input` is used up or `output` bytes wait to
    /// be taken; returns how many bytes of `input` it took.
    fn feed_until(&mut self, mut input: &[u8], output: usize) -> Result<usize, InflateError> {
        let given = input.len();
        while !input.is_empty() && self.out.len() - self.out_pos < output {
            match self.state {
                State::Failed => return Err(protocol("the compressed stream already failed")),
                State::Header => {
                    let need = self.header_needed();
                    let take = (need - self.header_len).min(input.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&input[..take]);
                    self.header_len += take;
                    input = &input[take..];
                    if self.header_len == self.header_needed()
                        && let Err(e) = self.on_header()
                    {
                        self.state = State::Failed;
                        return Err(e);
                    }
                }
                State::Plain { left } => {
                    let n = (left.min(input.len() as u64)) as usize;
                    grow(&mut self.out, n);
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = match left - n as u64 {
                        0 => State::Header,
                        left => State::Plain { left },
                    };
                }
                State::Compressed { left, fin } => {
                    let n = (left.min(input.len() as u64)) as usize;
                    let frame_ends = n as u64 == left;
                    let chunk = if self.server {
                        let mut unmasked = std::mem::take(&mut self.unmasked);
                        unmasked.clear();
                        unmasked.extend(
                            input[..n]
                                .iter()
                                .enumerate()
                                .map(|(i, b)| b ^ self.mask[(self.mask_at + i) % 4]),
                        );
                        Some(unmasked)
                    } else {
                        None
                    };
                    let result =
                        self.inflate(chunk.as_deref().unwrap_or(&input[..n]), frame_ends && fin);
                    if let Some(chunk) = chunk {
                        self.unmasked = chunk;
                    }
                    let taken = match result {
                        Ok(taken) => taken,
                        Err(e) => {
                            self.state = State::Failed;
                            return Err(e);
                        }
                    };
                    self.mask_at = (self.mask_at + taken) % 4;
                    input = &input[taken..];
                    self.state = match left - taken as u64 {
                        0 => State::Header,
                        left => State::Compressed { left, fin },
                    };
                }
            }
        }
        Ok(given - input.len())
    }

    /// How many header bytes the frame needs, as far as is known yet.
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + mask
    }

    fn on_header(&mut self) -> Result<(), InflateError> {
        let h = self.header;
        let header_len = self.header_len;
        self.header_len = 0;
        let fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()),
            n => n as u64,
        };
        if len >> 63 != 0 {
            // RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0.
            return Err(protocol("a frame length with its most significant bit set"));
        }
        let control = opcode & 0x08 != 0;
        if masked != self.server && (rsv1 || (opcode == 0 && self.compressed_message)) {
            return Err(protocol(if self.server {
                "the client sent an unmasked frame"
            } else {
                "the server sent a masked frame"
            }));
        }
        if h[0] & 0x30 != 0 && (rsv1 || (opcode == 0 && self.compressed_message)) {
            // A frame this inflater takes apart itself (tungstenite judges the others).
            return Err(protocol(
                "RSV2 or RSV3 set, which no negotiated extension defines",
            ));
        }
        if masked {
            let at = header_len - 4;
            self.mask.copy_from_slice(&h[at..header_len]);
            self.mask_at = 0;
        }
        if rsv1 {
            if control {
                return Err(protocol("RSV1 set on a control frame"));
            }
            if opcode == 0 {
                return Err(protocol(
                    "RSV1 set on a continuation frame (only a message's first frame has it)",
                ));
            }
            if self.compressed_message || self.plain_message {
                return Err(protocol(
                    "a new message began before the previous one ended",
                ));
            }
            self.compressed_message = true;
            self.opcode = Some(opcode);
            self.inflated = 0;
            self.compressed = 0;
        } else if opcode == 0 && self.compressed_message {
            // The next fragment of the compressed message.
        } else {
            // Not ours: tungstenite reads (and judges) the frame as it is.
            if opcode == 0 && fin {
                self.plain_message = false;
            } else if !control && opcode != 0 {
                if self.compressed_message {
                    return Err(protocol(
                        "a new message began before the compressed one ended",
                    ));
                }
                self.plain_message = !fin;
            }
            grow(&mut self.out, header_len);
            self.out.extend_from_slice(&h[..header_len]);
            self.state = if len == 0 {
                State::Header
            } else {
                State::Plain { left: len }
            };
            return Ok(());
        }
        // As tungstenite refuses a plain frame longer than the limit when its header comes
        // (a compressed one announcing 2^63 bytes waited for them instead), with room for
        // any encoding of a message within the limit: stored blocks add 5 bytes in 65,535,
        // fixed Huffman codes take at most 9 bits a byte.
        let max = self.max_message_size as u64;
        if len > max.saturating_add(max / 4).saturating_add(1024) {
            return Err(InflateError {
                kind: TransportErrorKind::MessageTooBig,
                message: format!(
                    "a compressed frame of {len} bytes, longer than any encoding of a message \
                     within the maximum of {max} bytes"
                ),
            });
        }
        if len == 0 {
            if fin {
                self.inflate(&[], true)?;
            }
            self.state = State::Header;
        } else {
            self.state = State::Compressed { left: len, fin };
        }
        Ok(())
    }

    /// Inflates the start of `input`, the next payload bytes of the compressed message, and
    /// emits what came out as a frame: it stops once about [`FRAGMENT`] bytes came out, and
    /// returns how many bytes of `input` it took. `last`: the message ends with `input`.
    fn inflate(&mut self, input: &[u8], last: bool) -> Result<usize, InflateError> {
        // `scratch` is kept initialised (zeroed once as it grows), so each step inflates
        // into it without clearing room first; `used` of it hold this frame's bytes.
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut used = 0;
        let result = self.inflate_into(input, &mut scratch, &mut used, FRAGMENT);
        let taken = *result.as_ref().unwrap_or(&input.len());
        self.compressed += taken as u64;
        let last = last && taken == input.len();
        // A message with no compressed bytes at all is empty, and its sender's stream has
        // not moved (some compressors write nothing for an empty message): appending the
        // tail would desynchronise the context, so nothing is inflated.
        let tail = last && self.compressed > 0;
        let result = result.and_then(|taken| match tail {
            true => self
                .inflate_into(&TAIL, &mut scratch, &mut used, usize::MAX)
                .map(|_| taken),
            false => Ok(taken),
        });
        if result.is_ok() && (last || used > 0) {
            self.emit(&scratch[..used], last);
        }
        if scratch.capacity() > 4 * CHUNK {
            scratch = Vec::new();
        }
        self.scratch = scratch;
        let taken = result?;
        if last {
            self.compressed_message = false;
            if self.reset_each_message
                && let Some(decompress) = self.decompress.take()
            {
                // The next message starts afresh: the state goes back to the thread's spare.
                spare::give_back_decompress(self.window_bits, decompress);
            }
        }
        Ok(taken)
    }

    /// Inflates `input` into `out` after its first `used` bytes (counting them in `used`),
    /// stopping early once `used` reaches `limit`; returns how many bytes of `input` it
    /// took.
    fn inflate_into(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        used: &mut usize,
        limit: usize,
    ) -> Result<usize, InflateError> {
        let bits = self.window_bits;
        let decompress = match &mut self.decompress {
            Some(decompress) => decompress,
            None if self.reset_each_message => self.decompress.insert(spare::decompress(bits)),
            None => self
                .decompress
                .insert(Decompress::new_with_window_bits(false, bits)),
        };
        let mut done = 0;
        loop {
            // Room for what is left to the limit (at least 1 KiB, at most a chunk), so that
            // `out` ends near the limit instead of at whatever its capacity allows.
            let room = limit.saturating_sub(*used).clamp(1024, CHUNK);
            if out.len() < *used + room {
                out.resize(*used + room, 0);
            }
            let before_in = decompress.total_in();
            let before_out = decompress.total_out();
            let status = decompress.decompress(
                &input[done..],
                &mut out[*used..*used + room],
                FlushDecompress::Sync,
            );
            let produced = (decompress.total_out() - before_out) as usize;
            *used += produced;
            let status = status.map_err(|e| protocol(format!("invalid compressed data: {e}")))?;
            done += (decompress.total_in() - before_in) as usize;
            self.inflated += produced;
            if self.inflated > self.max_message_size {
                return Err(InflateError {
                    kind: TransportErrorKind::MessageTooBig,
                    message: format!(
                        "a compressed message inflates to more than the maximum of {} bytes",
                        self.max_message_size
                    ),
                });
            }
            if status == Status::StreamEnd {
                // The server ended the DEFLATE stream (BFINAL): the next data starts afresh.
                decompress.reset(false);
            }
            let stalled = produced == 0 && done == input.len();
            if (done == input.len() && produced < room) || stalled {
                return Ok(done);
            }
            if produced == 0 && decompress.total_in() == before_in {
                // No progress with input and room left: the data is broken.
                return Err(protocol("invalid compressed data: no progress"));
            }
            if *used >= limit && done < input.len() {
                // Once the input is all taken, what the decompressor still holds is at most
                // the end of one match: the loop goes on for it.
                return Ok(done);
            }
        }
    }

    /// Appends a frame with `payload`: unmasked on the client side, masked with a zero key
    /// (which leaves the payload as it is) on the server side.
    fn emit(&mut self, payload: &[u8], fin: bool) {
        let opcode = self.opcode.take().unwrap_or(0);
        grow(&mut self.out, payload.len() + 14);
        self.out.push(if fin { 0x80 } else { 0 } | opcode);
        let mask_bit = if self.server { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => self.out.push(mask_bit | n as u8),
            n if n <= u16::MAX as usize => {
                self.out.push(mask_bit | 126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(mask_bit | 127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if self.server {
            self.out.extend_from_slice(&[0; 4]);
        }
        self.out.extend_from_slice(payload);
    }
}

/// Makes room in `v` for `more` bytes: by doubling, as a `Vec` does, except that below
/// 4 × [`CHUNK`] the doubling stops at 4 × [`CHUNK`]. A reader's output never needs more
/// than that, so its buffer stays within what [`Inflater::output_taken`] keeps (a `Vec`
/// that grew from an odd size would double past it and be given back after every message).
fn grow(v: &mut Vec<u8>, more: usize) {
    let need = v.len() + more;
    if need > v.capacity() {
        let doubled = match v.capacity() {
            cap if cap < 4 * CHUNK => (2 * cap).min(4 * CHUNK),
            cap => 2 * cap,
        };
        v.reserve_exact(need.max(doubled) - v.len());
    }
}

/// zlib states not in use, one of each kind per thread, for the messages of connections
/// without context takeover: such a message needs a fresh state and leaves nothing in it
/// for the next, so no connection need keep one between messages. Making a state for each
/// message and letting it go was tried first: the allocator kept the memory of the
/// states of a pool's connections that all sent at once (about 285 KiB per connection
/// after three messages each, against 20 KiB when they happened to send one after the
/// other), and a state costs about 3 µs more to make than to reset.
mod spare {
    use flate2::{Compress, Compression, Decompress};
    use std::cell::RefCell;

    thread_local! {
        static COMPRESS: RefCell<Option<(Compression, u8, Compress)>> = const { RefCell::new(None) };
        static DECOMPRESS: RefCell<Option<(u8, Decompress)>> = const { RefCell::new(None) };
    }

    /// A compression state at `level` with a window of `bits`, as new: this thread's spare
    /// if it has one of that kind.
    pub(super) fn compress(level: Compression, bits: u8) -> Compress {
        match COMPRESS.with(|spare| spare.borrow_mut().take()) {
            Some((l, b, compress)) if l == level && b == bits => compress,
            _ => Compress::new_with_window_bits(level, false, bits),
        }
    }

    /// A state from [`compress`] whose message is done: reset, it becomes the spare.
    pub(super) fn give_back_compress(level: Compression, bits: u8, mut compress: Compress) {
        compress.reset();
        COMPRESS.with(|spare| *spare.borrow_mut() = Some((level, bits, compress)));
    }

    /// An inflate state for a window of `bits`, as new: this thread's spare if it has one.
    pub(super) fn decompress(bits: u8) -> Decompress {
        match DECOMPRESS.with(|spare| spare.borrow_mut().take()) {
            Some((b, decompress)) if b == bits => decompress,
            _ => Decompress::new_with_window_bits(false, bits),
        }
    }

    /// A state from [`decompress`] whose message is done: reset, it becomes the spare.
    pub(super) fn give_back_decompress(bits: u8, mut decompress: Decompress) {
        decompress.reset(false);
        DECOMPRESS.with(|spare| *spare.borrow_mut() = Some((bits, decompress)));
    }
}
