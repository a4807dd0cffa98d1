//! An open connection's WebSocket over a non-blocking byte stream, written once for both
//! adapters: messages become frames (compressed when permessage-deflate was agreed),
//! frames are flushed and each send reported written, messages are read within the core's
//! read credit, and every failure becomes the [`TransportEvent`]s the core expects.
//!
//! The stream is anything `Read + Write` that says `WouldBlock` instead of waiting: a
//! non-blocking socket (the blocking adapter's mio socket), or an async stream polled with
//! the waker of the task that drives the connection (the tokio adapter). The adapter keeps
//! only how it waits for the socket to be ready again.

use crate::convert::{SmallCopies, classify, close_frame, from_ws_copying};
use crate::dial::Encoder;
use crate::incoming::Incoming;
use crate::upgrade::Stream;
use crate::{GIVE_BACK_FROM, HandshakeDone};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::task::Poll;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message as WsMessage};
use wxsocket_core::{
    CloseRequest, ConnId, Handshake, HandshakeRequest, Message, PeerClose, ReadCredit, SendId,
    TransportEvent,
};

/// Where a [`Link::read`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadEnd {
    /// The stream has nothing more now (`WouldBlock`).
    Drained,
    /// The credit is used up: reading pauses until the core gives more.
    Paused,
    /// The most messages one read may take were read; more may wait.
    Limit,
    /// The replies owed to the peer (pongs to its pings) that wait unflushed reached
    /// [`MAX_OWED_REPLIES`]: reading stops until a flush gets them out, so a peer that pings
    /// and does not read cannot grow this side's memory. Once a flush has got them out,
    /// reading goes on ([`Link::reads_unblocked`]).
    RepliesOwed,
    /// Reading failed or the stream ended: the events say how, and nothing more is read.
    /// The transport is gone too unless the core still sends a close frame on it
    /// ([`Link::is_gone`]).
    Stopped,
}

/// The most bytes of replies (pongs, frame headers included) a connection owes the peer
/// without a flush that got them out, before it stops reading ([`ReadEnd::RepliesOwed`]).
/// One read pass answers at most [`MAX_READS`](crate::connection::MAX_READS) pings of 131
/// bytes at most (33.5 KiB), so a peer that reads what it is sent never meets it, unless
/// our own large message goes out a pass at a time ([`Link::set_write_pass`]): the pongs
/// wait behind its frame, and a peer that pings fast enough meets the bound; reading then
/// waits until that message is out, which the driver's write passes see to without the
/// peer.
pub const MAX_OWED_REPLIES: usize = 64 * 1024;

/// An open connection: the WebSocket over the socket `S`, and what was written on it.
pub struct Link<S> {
    conn: ConnId,
    /// tungstenite's side of the WebSocket: frames in and out, the pongs and close answers
    /// it queues. Made anew once the connection is idle after a long frame
    /// ([`Self::give_back_buffers`]).
    ctx: WebSocketContext,
    /// The byte stream tungstenite reads and writes.
    wire: Wire<S>,
    /// Compresses outgoing messages when permessage-deflate was agreed.
    encoder: Encoder,
    /// Sends written into the WebSocket's buffer but not yet on the socket, each with the
    /// stream offset its frame ends at (see [`Self::handed`]).
    pending: VecDeque<(SendId, u64)>,
    /// How many bytes were handed to the WebSocket's buffer to go out, as far as they are
    /// known: our frames' exact sizes, and the pongs tungstenite queues for the pings read
    /// (counted even when a later one replaces it: an offset can only be late, never
    /// early). A send is reported written once the socket took the stream up to its end
    /// ([`Wire::confirmed`]), also while later frames still wait: a pipeline into a slow or
    /// nearly full socket never empties the buffer, and its sends waited for that.
    handed: u64,
    /// Something was written that still needs a flush.
    needs_flush: bool,
    /// A flush stopped at a full stream: bytes wait until it can be written again.
    wants_write: bool,
    /// A close frame was written (or queued) by us.
    close_sent: bool,
    /// The peer's close frame was read (tungstenite queued the answer, unless it answered
    /// ours).
    peer_close_read: bool,
    /// Our close frame (ours, or the answer to the peer's) is out: a flush after it was
    /// queued completed. With `peer_close_read`, both close frames were exchanged.
    close_out: bool,
    /// A read failed with an error answered by a close frame (1002 / 1007 / 1009): the
    /// stream is out of step, so nothing more is read, and once the close frame is flushed
    /// the transport ends. tungstenite must not be read again after refusing a frame: with
    /// the frame's bytes filling its buffer it would read into an empty slice (a failed
    /// debug assertion in tungstenite 0.30).
    read_failed: bool,
    /// The peer's TCP ended (after its close frame) while our frames still waited for the
    /// socket: nothing more is read, and the transport ends once they are out.
    ends_when_flushed: bool,
    /// The transport is gone (its last events were reported).
    gone: bool,
    /// Bytes of the replies tungstenite queued for the pings read since the last flush that
    /// got everything out (see [`MAX_OWED_REPLIES`]).
    owed: usize,
    /// The last read stopped at [`ReadEnd::RepliesOwed`].
    owing: bool,
    /// Where the short payloads read are copied (let go whenever the socket runs dry).
    copies: SmallCopies,
    /// The read credit the last read left: what a read after a failed write may still
    /// hand over ([`Self::salvage`]). Before the first read, one message ([`FIRST_CREDIT`]).
    credit_left: ReadCredit,
    /// The last read found the stream empty ([`ReadEnd::Drained`]): tungstenite has parsed
    /// every frame of the bytes it was given, and holds none of them unless a frame is part
    /// way (which the frame watch knows). True before the first read.
    read_idle: bool,
    /// Bytes written into tungstenite's buffer since the last flush that got everything
    /// out.
    unflushed: usize,
    /// tungstenite's write buffer took [`GIVE_BACK_FROM`] bytes or more between two
    /// flushes, and has not been made anew since ([`Self::give_back_buffers`]).
    write_buffer_grown: bool,
    /// How many times tungstenite's side was made anew (for the tests).
    #[cfg(test)]
    made_anew: usize,
}

impl<S: Read + Write> Link<S> {
    /// The open connection `conn` once the server accepted the upgrade of `request` over
    /// `stream` (what [`Upgrade::drive`](crate::upgrade::Upgrade::drive) returns). The bytes
    /// after the response head are the server's first frames and are read first (with
    /// permessage-deflate through the inflater, like every later byte, so a failure in them
    /// is a failure of the open connection); messages are written through the matching
    /// encoder. Returns the link and the server's handshake, for the core's `Opened`.
    pub fn open(
        conn: ConnId,
        stream: Stream<S>,
        done: HandshakeDone,
        request: &HandshakeRequest,
        config: WebSocketConfig,
    ) -> (Self, Handshake) {
        let HandshakeDone { handshake, tail } = done;
        let (inflater, encoder) = crate::dial::codecs(&handshake, request, config.max_message_size);
        // The tail goes to `Incoming`, not to tungstenite's `from_partially_read`, which would
        // size its read buffer from it: with an empty tail, every later read would be a few
        // bytes, one syscall per message.
        let wire = Wire::new(stream, Incoming::new(tail.into(), inflater));
        (Self::new(conn, wire, config, encoder), handshake)
    }

    pub(crate) fn new(
        conn: ConnId,
        wire: Wire<S>,
        config: WebSocketConfig,
        encoder: Encoder,
    ) -> Self {
        Self {
            conn,
            ctx: WebSocketContext::new(Role::Client, Some(config)),
            wire,
            encoder,
            pending: VecDeque::new(),
            handed: 0,
            needs_flush: false,
            wants_write: false,
            close_sent: false,
            peer_close_read: false,
            close_out: false,
            read_failed: false,
            ends_when_flushed: false,
            gone: false,
            owed: 0,
            owing: false,
            copies: SmallCopies::default(),
            credit_left: FIRST_CREDIT,
            read_idle: true,
            unflushed: 0,
            write_buffer_grown: false,
            #[cfg(test)]
            made_anew: 0,
        }
    }

    /// The byte stream.
    pub fn wire(&self) -> &Wire<S> {
        &self.wire
    }

    /// The byte stream, mutably (to set it up for the next operation).
    pub fn wire_mut(&mut self) -> &mut Wire<S> {
        &mut self.wire
    }

    /// Whether the transport is gone: nothing more can be written or read.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Whether messages can still be read (no read failed, the transport is there).
    pub fn is_readable(&self) -> bool {
        !self.read_failed && !self.gone
    }

    /// Whether something written waits for a flush.
    pub fn needs_flush(&self) -> bool {
        self.needs_flush
    }

    /// Whether reading stopped at [`ReadEnd::RepliesOwed`] and a flush has since got the
    /// replies out: the next read need not wait for the socket (its data is still there,
    /// and no readiness will announce it).
    pub fn reads_unblocked(&self) -> bool {
        self.owing && self.owed == 0
    }

    /// Whether a flush stopped at a full stream (wait until it is writable).
    pub fn wants_write(&self) -> bool {
        self.wants_write
    }

    /// Bounds what one [`Self::flush`] hands to the stream to `bytes` (at least one), so
    /// that a driver working on many connections under one lock (the blocking adapter)
    /// lets the others in between the passes of a large write. A flush that stops there
    /// says so ([`Self::write_spent`]): the stream may take more at once, and no readiness
    /// announces it, so the driver flushes again without waiting. Unbounded by default.
    pub fn set_write_pass(&mut self, bytes: usize) {
        let wire = &mut self.wire;
        wire.write_pass = bytes.max(1);
        wire.write_left = wire.write_left.min(wire.write_pass);
    }

    /// Whether the last flush stopped at its pass limit ([`Self::set_write_pass`]) with
    /// more to write: flush again without waiting for the stream.
    pub fn write_spent(&self) -> bool {
        self.wants_write && self.wire.write_spent
    }

    /// Whether we wrote a close frame.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether reading ended (the peer's TCP, after its close frame) while frames of ours
    /// still wait for the socket, the answer to that close among them: the transport ends
    /// once a flush has them out, and must not be ended before.
    pub fn ends_when_flushed(&self) -> bool {
        self.ends_when_flushed && !self.gone
    }

    /// Whether sends wait for a flush to be reported written.
    pub fn has_unflushed_sends(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes a message into the WebSocket's buffer; [`Self::flush`] writes it out, or this
    /// does at once when compressing it took the buffer past
    /// [`FLUSH_AFTER_COMPRESSED`](crate::dial::FLUSH_AFTER_COMPRESSED) (and the stream
    /// takes more).
    pub fn send(&mut self, id: SendId, message: Message, out: &mut Vec<TransportEvent>) {
        if self.gone {
            return;
        }
        let item = self.encoder.encode(message);
        let taken = match direct(item) {
            Ok((header, payload)) => self.write_direct(header, payload, out),
            Err(item) => self.write(item, out),
        };
        if !taken {
            // Not taken: never reported written (the core fails it when the transport ends).
            return;
        }
        self.pending.push_back((id, self.handed));
        if self.encoder.flush_due() && !self.wants_write {
            self.flush(out);
        }
    }

    /// Writes a ping into the WebSocket's buffer.
    pub fn ping(&mut self, payload: Bytes, out: &mut Vec<TransportEvent>) {
        let _ = self.write(WsMessage::Ping(payload), out);
    }

    /// Queues a close frame, after everything written before it.
    pub fn close(&mut self, frame: &CloseRequest, out: &mut Vec<TransportEvent>) {
        if self.gone {
            return;
        }
        self.close_sent = true;
        self.needs_flush = true;
        let frame = close_frame(frame);
        let len = frame_len(2 + frame.reason.len());
        match self.ctx.close(&mut self.wire, Some(frame)) {
            // WouldBlock: the frame is in tungstenite's buffer; a flush finishes it.
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return self.failed(&e, false, out),
        }
        self.handed += len;
    }

    /// Writes a frame into the WebSocket's buffer; `false` when it was not taken: the
    /// transport is gone or failed, or the peer's close frame came before it (the
    /// connection is closing, nothing more goes out; that is no failure of the peer's).
    fn write(&mut self, item: WsMessage, out: &mut Vec<TransportEvent>) -> bool {
        if self.gone {
            return false;
        }
        let len = message_len(&item);
        match self.ctx.write(&mut self.wire, item) {
            // WouldBlock: the frame is in tungstenite's buffer; a flush finishes it.
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(WsError::Protocol(ProtocolError::SendAfterClosing)) => return false,
            Err(e) => {
                self.failed(&e, false, out);
                return false;
            }
        }
        self.needs_flush = true;
        self.unflushed = self.unflushed.saturating_add(len as usize);
        self.handed += len;
        true
    }

    /// Writes a large data frame past tungstenite's buffer, into the wire's queue behind
    /// what tungstenite holds (which a flush hands to the wire first), masked as it goes
    /// out ([`DIRECT_FROM`]); `false` when it was not taken, as [`Self::write`].
    fn write_direct(
        &mut self,
        mut header: FrameHeader,
        payload: Bytes,
        out: &mut Vec<TransportEvent>,
    ) -> bool {
        // tungstenite's buffer (and a pong it queued) goes first: the wire takes all of it.
        match self.ctx.flush(&mut self.wire) {
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                self.failed(&e, false, out);
                return false;
            }
        }
        if !self.ctx.can_write() {
            // A close frame went out or came in: as tungstenite refuses a write then.
            return false;
        }
        let mask: [u8; 4] = rand::random();
        header.mask = Some(mask);
        let mut formatted = Vec::with_capacity(14);
        header
            .format(payload.len() as u64, &mut formatted)
            .expect("formatting into a Vec");
        self.needs_flush = true;
        self.handed += frame_len(payload.len());
        self.wire.push_frame(formatted, payload, mask);
        true
    }

    /// Flushes what was written (and the replies tungstenite queued, pong and close).
    /// Once it is all out, every send written is reported ([`TransportEvent::SendWritten`]),
    /// then our close frame if it went with them ([`TransportEvent::CloseWritten`]); a full
    /// stream leaves the rest for the next flush ([`Self::wants_write`]).
    pub fn flush(&mut self, out: &mut Vec<TransportEvent>) {
        let wire = &mut self.wire;
        wire.write_left = wire.write_pass;
        let spent = std::mem::take(&mut wire.write_spent);
        self.flush_within_pass(out, spent);
    }

    /// [`Self::flush`] within what is left of the pass's limit (the replies a read writes
    /// out are part of the read's pass, not a new one); `spent`: the last flush stopped at
    /// its pass limit, not at a full socket.
    fn flush_within_pass(&mut self, out: &mut Vec<TransportEvent>, spent: bool) {
        if self.gone {
            return;
        }
        // Frames had been waiting for a full socket: if it takes some now, the peer's TCP
        // took what it held, and a ping of ours behind them is on its way (a sign of life
        // for the core's timers, as for a slow upload).
        // While blocked, bytes a send's own write-out moved (tungstenite writes its buffer
        // out past its write size) count too: the mark was cleared when the block began.
        // A flush that stopped at its pass limit is no block: the socket took every byte
        // it was offered, which says nothing of the peer (the reviewer: a peer that never
        // answered pings kept a keepalive of 300 ms alive for as long as the application
        // sent messages larger than a pass).
        let blocked = self.wants_write && !spent;
        if !blocked {
            self.wire.take_sent();
        }
        let flushed = self.ctx.flush(&mut self.wire);
        if blocked && self.wire.take_sent() {
            out.push(TransportEvent::Sending);
        }
        match flushed {
            Ok(()) => {
                self.encoder.flushed();
                let close_now_out = !self.close_out && (self.close_sent || self.peer_close_read);
                self.close_out |= close_now_out;
                self.needs_flush = false;
                self.wants_write = false;
                self.owed = 0;
                // Everything handed is out: the estimate of the replies is exact again.
                self.handed = self.wire.taken;
                self.write_buffer_grown |= self.unflushed >= GIVE_BACK_FROM;
                self.unflushed = 0;
                out.extend(
                    self.pending
                        .drain(..)
                        .map(|(id, _)| TransportEvent::SendWritten(id)),
                );
                if close_now_out && !self.read_failed {
                    // Our close frame or the answer to the peer's (not the one after a
                    // read error: the connection failed).
                    out.push(TransportEvent::CloseWritten);
                }
                if self.read_failed && (self.close_sent || self.ends_when_flushed) {
                    // The close frame after a read error is out, or what waited when the
                    // peer's TCP ended; nothing more to read.
                    self.end(out);
                }
                self.give_back_buffers();
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.wants_write = true;
                // What this flush moved before the block is no news for the next one.
                self.wire.take_sent();
                let confirmed = self.wire.confirmed;
                while let Some(&(id, _)) = self.pending.front().filter(|(_, end)| *end <= confirmed)
                {
                    self.pending.pop_front();
                    out.push(TransportEvent::SendWritten(id));
                }
            }
            Err(e) => self.failed(&e, false, out),
        }
    }

    /// Reads at most `max` messages, and never more than `credit` allows: once the messages
    /// read use it up (control frames are free), reading stops ([`ReadEnd::Paused`]) and
    /// the rest stays on the stream, so that TCP pushes back on the peer. A read that starts
    /// without credit reads nothing. Replies tungstenite queues while reading (pong, close)
    /// go out with the next flush. A read that took bytes from the stream and completed
    /// nothing reports [`TransportEvent::Receiving`].
    pub fn read(
        &mut self,
        credit: &mut ReadCredit,
        max: usize,
        out: &mut Vec<TransportEvent>,
    ) -> ReadEnd {
        let end = self.read_pass(credit, max, out);
        self.credit_left = *credit;
        end
    }

    /// The driver did not read because the core's credit ran out: a read after a failed
    /// write hands over nothing either ([`Self::salvage`]).
    pub(crate) fn note_paused(&mut self) {
        self.credit_left = ReadCredit::PAUSED;
    }

    /// [`Self::read`], but for keeping what the credit left.
    fn read_pass(
        &mut self,
        credit: &mut ReadCredit,
        max: usize,
        out: &mut Vec<TransportEvent>,
    ) -> ReadEnd {
        if !self.is_readable() {
            return ReadEnd::Stopped;
        }
        self.owing = false;
        let reported = out.len();
        let wire = &mut self.wire;
        wire.received = false;
        wire.read_left = READ_PASS;
        wire.read_spent = false;
        // The replies this read writes out (and the frames held before them) are a pass
        // of their own ([`Self::set_write_pass`]).
        wire.write_left = wire.write_pass;
        wire.stream.took_bytes();
        for _ in 0..max {
            if credit.is_paused() {
                return ReadEnd::Paused;
            }
            if self.owed >= MAX_OWED_REPLIES {
                self.owing = true;
                return ReadEnd::RepliesOwed;
            }
            match self.ctx.read(&mut self.wire) {
                Ok(message) => {
                    self.read_idle = false;
                    // tungstenite queues pong and close replies; the next flush sends them.
                    self.needs_flush = true;
                    if let WsMessage::Ping(payload) = &message {
                        // A masked pong: its payload, a two-byte header and the mask.
                        self.owed += payload.len() + 6;
                        // It goes out before the frames written after this read.
                        self.handed += frame_len(payload.len());
                    }
                    // tungstenite's next read writes the reply, and with it every frame
                    // buffered before it: flushed here, so that the sends among them are
                    // reported written before the frame read (a close with a code the core
                    // refuses fails the sends not yet written) and whatever the next read
                    // brings (a failure after a close frame failed messages that had gone
                    // out). A failed flush's end comes after the frame read.
                    let mut flushed = Vec::new();
                    self.peer_close_read |= matches!(message, WsMessage::Close(_));
                    if matches!(message, WsMessage::Ping(_) | WsMessage::Close(_)) {
                        // A failed flush reads on within what is left ([`Self::salvage`]).
                        self.credit_left = *credit;
                        let spent = self.wire.write_spent;
                        self.flush_within_pass(&mut flushed, spent);
                        let written = flushed
                            .iter()
                            .take_while(|e| {
                                matches!(
                                    e,
                                    TransportEvent::SendWritten(_) | TransportEvent::Sending
                                )
                            })
                            .count();
                        out.extend(flushed.drain(..written));
                    }
                    if let Some(event) = self.event_of(message, credit) {
                        if let TransportEvent::PeerClosed(PeerClose {
                            code: Some(code), ..
                        }) = &event
                            && !wxsocket_core::close::is_valid_from_peer(*code)
                        {
                            // A code the peer may not send fails the connection (the core
                            // reports it as a protocol error): like a read that failed, the
                            // transport ends once the core's close frame is out, rather
                            // than waiting for the peer to close TCP (a prober's client
                            // held it for the close timeout). What tungstenite wrote in
                            // reply is no answer the core counts on: it fails the connection.
                            self.read_failed = true;
                            flushed.retain(|e| *e != TransportEvent::CloseWritten);
                        }
                        out.push(event);
                    }
                    out.append(&mut flushed);
                    if self.read_failed && self.close_sent && !self.gone {
                        // Our close frame went before (with what the flush above wrote):
                        // nothing more is to be sent or read (a reviewer: the read stopped
                        // with the transport left for a later flush to end).
                        self.end(out);
                    }
                    if self.read_failed || self.gone {
                        return ReadEnd::Stopped;
                    }
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Part of a frame came and nothing completed: the peer is alive (a
                    // large message on a slow link must not look like silence).
                    if out.len() == reported && self.wire.received {
                        out.push(TransportEvent::Receiving);
                    }
                    if self.wire.read_spent {
                        // The pass took all it may: the rest waits for the next.
                        return ReadEnd::Limit;
                    }
                    self.copies.reset();
                    self.read_idle = true;
                    self.give_back_buffers();
                    return ReadEnd::Drained;
                }
                Err(WsError::ConnectionClosed) if self.wants_write || self.needs_flush => {
                    // The peer's TCP ended after its close frame while our frames wait for
                    // the socket: the rest of a message (RFC 6455 §5.5.1 lets it finish
                    // before the answer) and the answer to the close, behind it. The peer
                    // reads until it has that answer, so they go out, and the transport
                    // ends once they are (it used to end here: the message was cut off, the
                    // peer never had our close frame, and the close was reported clean).
                    self.read_failed = true;
                    self.ends_when_flushed = true;
                    return ReadEnd::Stopped;
                }
                Err(e) => {
                    self.read_failed = true;
                    self.failed(&e, true, out);
                    return ReadEnd::Stopped;
                }
            }
        }
        if credit.is_paused() {
            ReadEnd::Paused
        } else {
            ReadEnd::Limit
        }
    }

    /// A message read as the core takes it: a data message counted against `credit`, a
    /// close frame with its code and reason as the peer sent them.
    fn event_of(&mut self, message: WsMessage, credit: &mut ReadCredit) -> Option<TransportEvent> {
        let event = from_ws_copying(message, &mut self.copies)?;
        match &event {
            TransportEvent::Message(message) => {
                credit.take(message.len());
            }
            // Only a close frame is ever corrected: every other event passes as it is,
            // without a move through the watch.
            TransportEvent::PeerClosed(_) => {
                return Some(self.wire.incoming.frame_watch().correct(event));
            }
            _ => {}
        }
        Some(event)
    }

    /// A read or write failed: report it, and end the transport unless the core will still
    /// want to send a close frame on it. A write that failed on the socket first reads what
    /// the socket still holds ([`Self::salvage`]).
    fn failed(&mut self, error: &WsError, reading: bool, out: &mut Vec<TransportEvent>) {
        if self.peer_close_read && self.close_out {
            // Both close frames were exchanged: a failure now (a reset, a TLS connection
            // ended without `close_notify`) is only how the transport ended. The core
            // takes an error after the peer's close frame to mean our answer did not go
            // out: the close would be reported unclean.
            return self.end(out);
        }
        if !reading && matches!(error, WsError::Io(_)) {
            self.salvage(out);
        }
        match classify(error) {
            None => self.end(out),
            Some(error) => {
                if reading {
                    crate::trace::read_failed(self.conn, &error);
                } else {
                    crate::trace::write_failed(self.conn, &error);
                }
                let keep = error.kind.sends_close_frame() && !self.close_sent;
                out.push(TransportEvent::Error(error));
                if !keep {
                    self.end(out);
                }
            }
        }
    }

    /// A write failed on the socket: the peer reset or closed the connection, and may have
    /// said why before it went. What the socket still holds is read before the failure is
    /// reported, so that a close frame the peer sent first (1009 for a message too large
    /// for it) is reported with its code and reason rather than as a lost connection (1006,
    /// "Broken pipe"), and the messages before it are delivered. Reading stays within the
    /// credit the last read left ([`FIRST_CREDIT`] before the first read) and one read pass
    /// ([`READ_PASS`]), writes nothing (the replies tungstenite queues stay queued), and
    /// stops at the close frame, the socket's end or an error: the failure is then reported
    /// as before.
    fn salvage(&mut self, out: &mut Vec<TransportEvent>) {
        if !self.is_readable() || !self.ctx.can_read() {
            return;
        }
        let mut credit = std::mem::replace(&mut self.credit_left, ReadCredit::PAUSED);
        self.read_idle = false;
        let wire = &mut self.wire;
        wire.writes_off = true;
        wire.read_left = READ_PASS;
        wire.read_spent = false;
        wire.begin_pass(false);
        while !credit.is_paused() {
            let Ok(message) = self.ctx.read(&mut self.wire) else {
                break;
            };
            let closed = matches!(message, WsMessage::Close(_));
            out.extend(self.event_of(message, &mut credit));
            if closed {
                break;
            }
        }
        self.wire.writes_off = false;
    }

    /// Makes tungstenite's side of the connection anew, with a read buffer of
    /// [`READ_BUFFER`](crate::READ_BUFFER) and an empty write buffer, once either grew to
    /// [`GIVE_BACK_FROM`] or more (a frame that long was read, or that much written between
    /// two flushes) and the connection is idle: the last read found the stream empty between
    /// messages, and everything written is out. tungstenite then holds nothing a new context
    /// would not: no bytes read and not parsed, no message part way, nothing to write, no
    /// close under way. Otherwise its buffers keep their largest size for the connection's
    /// life (tungstenite 0.30 never shrinks them), and a message received shares its read
    /// buffer's allocation, so even one the application let go of stayed in memory.
    fn give_back_buffers(&mut self) {
        let watch = self.wire.incoming.frame_watch();
        let grown = self.write_buffer_grown || watch.longest_frame() >= GIVE_BACK_FROM as u64;
        let idle = self.read_idle
            && watch.between_messages()
            && !self.needs_flush
            && !self.wants_write
            && !self.close_sent
            && !self.peer_close_read
            && self.is_readable()
            && !self.wire.writes_off;
        if grown && idle {
            self.ctx = WebSocketContext::new(Role::Client, Some(*self.ctx.get_config()));
            self.write_buffer_grown = false;
            self.wire.incoming.frame_watch_mut().forget_longest_frame();
            #[cfg(test)]
            {
                self.made_anew += 1;
            }
        }
    }

    /// The transport ends: the last event says so.
    pub fn end(&mut self, out: &mut Vec<TransportEvent>) {
        if !self.gone {
            self.gone = true;
            self.pending.clear();
            out.push(TransportEvent::Closed);
        }
    }
}

/// What tungstenite reads and writes on an open connection: the stream (with or without
/// TLS), read through [`Incoming`] (the handshake's tail first, the inflater with
/// permessage-deflate, the close watch).
pub struct Wire<S> {
    /// The socket, with or without TLS.
    pub stream: Stream<S>,
    /// What reads go through.
    pub incoming: Incoming,
    /// Set for a read pass the driver knows ends at a short read (see [`Self::begin_pass`]):
    /// a short read from the plain socket then means the socket is empty, and the pass ends
    /// there instead of paying one more `recv` to see `WouldBlock`. Not with
    /// permessage-deflate, whose reads fill the inflater's buffer rather than tungstenite's.
    short_read_ends: bool,
    /// A short read ended this pass (see `short_read_ends`).
    drained: bool,
    /// The socket gave bytes since [`Link::read`] began (see [`TransportEvent::Receiving`]).
    received: bool,
    /// How many more bytes this [`Link::read`] may take from the socket ([`READ_PASS`]).
    read_left: usize,
    /// This read used them up: it ends with more to read ([`ReadEnd::Limit`]).
    read_spent: bool,
    /// The most bytes one [`Link::flush`] hands to the stream ([`Link::set_write_pass`];
    /// unbounded unless set).
    write_pass: usize,
    /// How many more bytes this flush may hand to the stream.
    write_left: usize,
    /// This flush used them up: it stopped with more to write and a stream that may take
    /// it ([`Link::write_spent`]).
    write_spent: bool,
    /// Writes take nothing (`WouldBlock`): a read after a failed write
    /// ([`Link::salvage`]) must not write the replies tungstenite queued.
    writes_off: bool,
    /// The socket took bytes since [`Link::flush`] began (see [`TransportEvent::Sending`]).
    sent: bool,
    /// Bytes the stream took (plaintext under TLS).
    taken: u64,
    /// How many of them are certainly on the socket: all of them for a plain socket; under
    /// TLS, all of them once rustls holds no ciphertext to write.
    confirmed: u64,
    /// What was handed to the wire and the stream has not taken yet, in order: written
    /// before anything else. The wire takes every write of tungstenite's whole, keeping here
    /// what the stream did not take, so tungstenite never holds bytes it has written out
    /// (it moves the rest of its buffer to the front after every partial write, which costs
    /// the whole message again for each piece a nearly full socket takes: quadratic in the
    /// message's size), and a large message the link writes itself
    /// ([`Wire::push_frame`]) can queue behind it.
    queue: VecDeque<Queued>,
    /// How much of the front [`Queued::Plain`] was written.
    front_at: usize,
    /// The next piece of the front [`Queued::Masked`] frame, masked, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
}

/// Bytes the wire holds for the stream ([`Wire::queue`]).
enum Queued {
    /// Bytes as they go out: the rest of a write, a frame's header.
    Plain(Vec<u8>),
    /// A data frame's payload, masked a piece ([`PIECE`]) at a time as the stream takes it,
    /// from `next` on: the message is never copied whole.
    Masked {
        payload: Bytes,
        mask: [u8; 4],
        next: usize,
    },
}

impl<S> Wire<S> {
    /// The transport under `stream`, reading through `incoming`.
    pub fn new(stream: Stream<S>, incoming: Incoming) -> Self {
        Self {
            stream,
            incoming,
            short_read_ends: false,
            drained: false,
            received: false,
            read_left: READ_PASS,
            read_spent: false,
            write_pass: usize::MAX,
            write_left: usize::MAX,
            write_spent: false,
            writes_off: false,
            sent: false,
            taken: 0,
            confirmed: 0,
            queue: VecDeque::new(),
            front_at: 0,
            ready: Vec::new(),
            ready_at: 0,
        }
    }

    /// Whether the socket took bytes since the last call (TLS: ciphertext).
    fn take_sent(&mut self) -> bool {
        std::mem::take(&mut self.sent) | self.stream.gave_bytes()
    }

    /// Starts a read pass: with `short_read_ends`, one that ends at a short read of the
    /// plain socket (the blocking adapter's passes started by an edge-triggered readiness
    /// event without the peer's end of the stream in it: every later arrival raises a new
    /// event).
    pub fn begin_pass(&mut self, short_read_ends: bool) {
        self.short_read_ends = short_read_ends;
        self.drained = false;
    }
}

impl<S: Read + Write> Read for Wire<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (stream, drained, received) = (&mut self.stream, &mut self.drained, &mut self.received);
        let (read_left, read_spent) = (&mut self.read_left, &mut self.read_spent);
        let short_read_ends =
            self.short_read_ends && !self.incoming.is_inflating() && !stream.is_tls();
        // The read-ahead and the inflater call the socket only once what they hold is
        // served.
        let polled = self.incoming.poll_read(buf, |buf| {
            if *drained {
                return Poll::Pending;
            }
            if *read_left == 0 {
                *read_spent = true;
                return Poll::Pending;
            }
            let read = stream.read(buf);
            if let Ok(n) = read {
                *read_left = read_left.saturating_sub(n);
            }
            // Over TLS, part of a record counts too (it gives no plaintext yet).
            *received |= matches!(read, Ok(n) if n > 0) || stream.took_bytes();
            match read {
                Ok(n) => {
                    if short_read_ends && n > 0 && n < buf.len() {
                        *drained = true;
                    }
                    Poll::Ready(Ok(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        });
        match polled {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// What a read after a failed write ([`Link::salvage`]) may hand over when the driver has
/// not read yet (its credit unknown): one message, as any credit lets one message past its
/// bytes. A write can fail before the first read (an application's send right after the
/// open, written on its own thread): the peer's close frame was then left unread.
const FIRST_CREDIT: ReadCredit = ReadCredit {
    messages: 1,
    bytes: usize::MAX,
};

/// The most bytes one [`Link::read`] takes from the socket; then it ends with
/// [`ReadEnd::Limit`] (more may wait), so that the driver runs its timers and the other
/// connections, and the application its calls, between passes. Frames that complete no
/// message (a server sending empty continuation frames without end) took no read credit
/// and no message off `max`, and a read went on for as long as the server sent them:
/// the command ignored Ctrl-C, and the blocking adapter's other connections and calls
/// waited.
pub const READ_PASS: usize = 256 << 10;

/// The most bytes a driver that works on many connections under one lock (the blocking
/// adapter) lets one [`Link::flush`] hand to the socket ([`Link::set_write_pass`]): a
/// large message to a fast reader (16 MB) was written whole under the lock, and another
/// connection's echo waited up to 21 ms, a `recv_timeout` of 10 ms returned up to 61 ms
/// late. As [`READ_PASS`] for reads.
pub const WRITE_PASS: usize = 256 << 10;

/// The messages from this size on are written by the link itself ([`Wire::push_frame`]),
/// masked a piece at a time, instead of being copied whole into tungstenite's buffer (which
/// keeps its largest size for the connection's life) and again into the wire's queue.
pub(crate) const DIRECT_FROM: usize = 64 << 10;
/// How much of a masked frame is masked at a time.
const PIECE: usize = 64 << 10;

impl<S: Read + Write> Wire<S> {
    /// Writes the queue to the stream: `Ok` once it is all out, `WouldBlock` while the
    /// stream takes no more.
    fn write_queue(&mut self) -> io::Result<()> {
        loop {
            // What the stream is given next: at most what this flush may still write.
            let (bytes, at) = if self.ready_at < self.ready.len() {
                (&self.ready, self.ready_at)
            } else {
                match self.queue.front_mut() {
                    None => break,
                    Some(Queued::Plain(bytes)) if self.front_at < bytes.len() => {
                        (&*bytes, self.front_at)
                    }
                    Some(Queued::Masked {
                        payload,
                        mask,
                        next,
                    }) if *next < payload.len() => {
                        let end = payload.len().min(*next + PIECE);
                        self.ready.clear();
                        self.ready.extend_from_slice(&payload[*next..end]);
                        apply_mask(&mut self.ready, *mask, *next);
                        self.ready_at = 0;
                        *next = end;
                        continue;
                    }
                    Some(_) => {
                        self.queue.pop_front();
                        self.front_at = 0;
                        continue;
                    }
                }
            };
            if self.write_left == 0 {
                self.write_spent = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let end = bytes.len().min(at.saturating_add(self.write_left));
            let written = self.stream.write(&bytes[at..end]);
            if let Ok(n) = written {
                if self.ready_at < self.ready.len() {
                    self.ready_at += n;
                } else {
                    self.front_at += n;
                }
            }
            self.took(&written);
            if written? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        // All out: a large message's piece is not kept for an idle connection.
        self.ready = Vec::new();
        self.ready_at = 0;
        Ok(())
    }

    /// Queues a data frame with `header` (formatted, mask key included) and `payload`,
    /// masked with `mask` as it goes out, behind everything handed before.
    fn push_frame(&mut self, header: Vec<u8>, payload: Bytes, mask: [u8; 4]) {
        self.queue.push_back(Queued::Plain(header));
        self.queue.push_back(Queued::Masked {
            payload,
            mask,
            next: 0,
        });
    }

    /// Counts what a write took (see [`Self::taken`], [`Self::confirmed`]).
    fn took(&mut self, written: &io::Result<usize>) {
        if let Ok(n) = written {
            self.write_left = self.write_left.saturating_sub(*n);
            self.taken += *n as u64;
            self.sent |= *n > 0 && !self.stream.is_tls();
        }
        if !self.stream.wants_write() {
            self.confirmed = self.taken;
        }
    }
}

impl<S: Read + Write> Write for Wire<S> {
    /// Takes `buf` whole (tungstenite's buffer): what the stream does not take now is
    /// queued (the wire's queue), and `flush` says `WouldBlock` until it is out.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.writes_off {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = match self.write_queue() {
            Ok(()) if self.write_left == 0 && !buf.is_empty() => {
                self.write_spent = true;
                0
            }
            Ok(()) => {
                let written = self.stream.write(&buf[..buf.len().min(self.write_left)]);
                self.took(&written);
                match written {
                    Ok(0) if !buf.is_empty() => return Ok(0),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if taken < buf.len() {
            self.queue.push_back(Queued::Plain(buf[taken..].to_vec()));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.writes_off {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.write_queue()?;
        let flushed = self.stream.flush();
        self.took(&Ok(0));
        flushed
    }
}

/// Masks `piece`, the payload's bytes from `offset` on, with the frame's `mask` (RFC 6455
/// §5.3: byte `i` of the payload is XORed with `mask[i % 4]`).
fn apply_mask(piece: &mut [u8], mask: [u8; 4], offset: usize) {
    let m: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut words = piece.chunks_exact_mut(8);
    for word in &mut words {
        let masked = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ wide;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // The rest starts at a multiple of 8 into the piece, so at `m[0]`.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= m[i % 4];
    }
}

/// The bytes a client's frame with `payload` bytes takes on the wire: the header, the
/// extended length, the mask and the payload.
fn frame_len(payload: usize) -> u64 {
    let extended = match payload {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    (2 + extended + 4 + payload) as u64
}

/// A data message the link writes itself ([`DIRECT_FROM`]): its frame's header (FIN, the
/// opcode, RSV1 when compressed) and payload; any other message as it was.
fn direct(message: WsMessage) -> Result<(FrameHeader, Bytes), WsMessage> {
    let data = |opcode| FrameHeader {
        opcode: OpCode::Data(opcode),
        ..FrameHeader::default()
    };
    match message {
        WsMessage::Text(text) if text.len() >= DIRECT_FROM => Ok((data(Data::Text), text.into())),
        WsMessage::Binary(bytes) if bytes.len() >= DIRECT_FROM => Ok((data(Data::Binary), bytes)),
        WsMessage::Frame(frame) if frame.payload().len() >= DIRECT_FROM => {
            let header = frame.header().clone();
            Ok((header, frame.into_payload()))
        }
        other => Err(other),
    }
}

/// [`frame_len`] of a message as tungstenite writes it (one frame).
fn message_len(message: &WsMessage) -> u64 {
    frame_len(match message {
        WsMessage::Text(text) => text.len(),
        WsMessage::Binary(data) | WsMessage::Ping(data) | WsMessage::Pong(data) => data.len(),
        WsMessage::Close(frame) => frame.as_ref().map_or(0, |f| 2 + f.reason.len()),
        WsMessage::Frame(frame) => frame.payload().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket of scripted input (then `WouldBlock`) that keeps what is written, or, while
    /// `full`, takes nothing (`WouldBlock`), or, when `broken`, fails every write (when
    /// `reset`, every read).
    #[derive(Default)]
    pub(super) struct Scripted {
        pub(super) input: io::Cursor<Vec<u8>>,
        pub(super) written: Vec<u8>,
        full: bool,
        broken: bool,
        /// Every read fails (the peer reset the connection).
        reset: bool,
        /// Once the input is read, reads say the stream ended (the peer's FIN), not
        /// `WouldBlock`.
        eof: bool,
        /// Once the input is read, reads fail with this.
        end_error: Option<io::ErrorKind>,
        /// Every write takes nothing without blocking (`Ok(0)`: the connection is gone).
        write_zero: bool,
        /// How many more bytes it takes, when limited.
        pub(super) room: Option<usize>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.reset {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            match self.input.read(buf)? {
                0 if self.eof => Ok(0),
                0 if let Some(kind) = self.end_error => Err(kind.into()),
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if self.write_zero {
                return Ok(0);
            }
            if self.full || self.room == Some(0) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.room.map_or(buf.len(), |room| room.min(buf.len()));
            if let Some(room) = &mut self.room {
                *room -= n;
            }
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A link whose one send ("queued", id 1) waits behind a full socket, and the events so
    /// far (none).
    fn queued_behind_a_full_socket() -> (Link<Scripted>, Vec<TransportEvent>) {
        let mut link = link(&[]);
        socket(&mut link).full = true;
        let mut out = Vec::new();
        link.send(SendId::from_raw(1), Message::text("queued"), &mut out);
        link.flush(&mut out);
        assert!(link.wants_write() && out.is_empty());
        (link, out)
    }

    fn link(input: &[u8]) -> Link<Scripted> {
        let socket = Scripted {
            input: io::Cursor::new(input.to_vec()),
            ..Scripted::default()
        };
        let wire = Wire::new(Stream::Plain(socket), Incoming::new(Bytes::new(), None));
        Link::new(
            ConnId::from_raw(1),
            wire,
            WebSocketConfig::default(),
            Encoder::default(),
        )
    }

    /// A send whose frame the socket has taken is reported written while later frames
    /// still wait for it (a pipeline into a slow socket never empties the buffer: its sends
    /// were reported only when the sender paused, and senders met a full send buffer); one
    /// only partly taken is not.
    #[test]
    fn sends_the_socket_took_are_reported_while_later_ones_wait() {
        let mut link = link(&[]);
        // Frames of 106 bytes (2 header, 4 mask, 100 payload): room for two and a half.
        socket(&mut link).room = Some(250);
        let mut out = Vec::new();
        for id in 1..=3 {
            link.send(
                SendId::from_raw(id),
                Message::binary(vec![0; 100]),
                &mut out,
            );
        }
        link.flush(&mut out);
        let written = |out: &[TransportEvent]| -> Vec<u64> {
            out.iter()
                .filter_map(|e| match e {
                    TransportEvent::SendWritten(id) => Some(id.get()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(written(&out), [1, 2], "{out:?}");
        assert!(link.needs_flush());
        out.clear();
        socket(&mut link).room = Some(1000);
        link.flush(&mut out);
        assert_eq!(written(&out), [3], "{out:?}");
    }

    /// The pong tungstenite queues for a ping goes out before the frames written after the
    /// ping was read: a send is not reported written until the socket took the pong too.
    #[test]
    fn a_queued_pong_counts_before_the_sends_after_it() {
        // The server's ping, payload "pp": our pong is 8 bytes.
        let mut link = link(&[0x89, 0x02, b'p', b'p']);
        socket(&mut link).room = Some(0);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        link.read(&mut credit, 16, &mut out);
        out.clear();
        link.send(SendId::from_raw(1), Message::binary(vec![0; 100]), &mut out);
        // One byte short of the pong and the 106-byte frame.
        socket(&mut link).room = Some(8 + 106 - 1);
        link.flush(&mut out);
        assert!(
            !out.iter()
                .any(|e| matches!(e, TransportEvent::SendWritten(_))),
            "{out:?}"
        );
        socket(&mut link).room = Some(1);
        link.flush(&mut out);
        assert!(
            out.iter()
                .any(|e| matches!(e, TransportEvent::SendWritten(_))),
            "{out:?}"
        );
    }

    /// A message sent after the peer's close frame was read (the core did not know yet) is
    /// not taken: it is never reported written, and it is no protocol error of the peer's.
    #[test]
    fn a_send_after_the_peers_close_frame_is_not_reported_written() {
        // The server's close frame, 1000, unmasked.
        let mut link = link(&[0x88, 0x02, 0x03, 0xE8]);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        link.read(&mut credit, 16, &mut out);
        assert!(
            matches!(
                out.as_slice(),
                [TransportEvent::PeerClosed(_), TransportEvent::CloseWritten]
            ),
            "{out:?}"
        );
        out.clear();
        let id = SendId::from_raw(7);
        link.send(id, Message::text("late"), &mut out);
        assert!(!link.needs_flush(), "nothing was taken to flush");
        link.flush(&mut out);
        assert!(
            !out.iter()
                .any(|e| matches!(e, TransportEvent::SendWritten(_) | TransportEvent::Error(_))),
            "{out:?}"
        );
    }

    /// A message buffered before the peer's close frame is read goes out with the reply to
    /// it, and is reported written before the close (whose code the core may refuse,
    /// failing the sends not written) and what the next read brings: here a frame after
    /// the close, a protocol error, which would otherwise fail a message that went out.
    /// Both close frames were exchanged by then, so the error only ends the transport.
    #[test]
    fn sends_written_with_a_reply_are_reported_before_the_next_read() {
        // The server's close frame (4000), then a text frame it may no longer send.
        let mut link = link(&[0x88, 0x02, 0x0F, 0xA0, 0x81, 0x01, b'x']);
        let mut out = Vec::new();
        let id = SendId::from_raw(3);
        link.send(id, Message::text("queued"), &mut out);
        assert_eq!(out, []);
        let mut credit = ReadCredit::UNLIMITED;
        link.read(&mut credit, 16, &mut out);
        assert!(
            matches!(
                out.as_slice(),
                [
                    TransportEvent::SendWritten(written),
                    TransportEvent::PeerClosed(_),
                    TransportEvent::CloseWritten,
                    TransportEvent::Closed,
                ] if *written == id
            ),
            "{out:?}"
        );
    }

    /// tungstenite's side is made anew once the connection is idle after a flush that
    /// wrote [`GIVE_BACK_FROM`] bytes or more (its write buffer keeps its largest size
    /// otherwise), not after smaller ones (a new context for every small write).
    #[test]
    fn the_buffers_are_made_anew_after_a_large_write_only() {
        let mut link = link(&[]);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        link.send(SendId::from_raw(1), Message::binary(vec![0; 100]), &mut out);
        link.flush(&mut out);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert_eq!(link.made_anew, 0, "after a small write");
        let large = Message::binary(vec![0; GIVE_BACK_FROM]);
        link.send(SendId::from_raw(2), large, &mut out);
        link.flush(&mut out);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert_eq!(link.made_anew, 1, "after a large write");
        assert_eq!(
            out.iter()
                .filter(|e| matches!(e, TransportEvent::SendWritten(_)))
                .count(),
            2
        );
    }

    /// A reply that cannot be written (the peer reset the connection) ends the transport
    /// after the frame it answers and what the socket still held up to the peer's close
    /// frame ([`Link::salvage`]), and nothing is read or reported after that end (a
    /// reviewer saw the next messages and the close follow `Closed`).
    #[test]
    fn nothing_follows_the_end_when_a_reply_cannot_be_written() {
        // ping "p", text "a", text "b", close 1000, text "c".
        let mut link = link(&[
            0x89, 0x01, b'p', 0x81, 0x01, b'a', 0x81, 0x01, b'b', 0x88, 0x02, 0x03, 0xE8, 0x81,
            0x01, b'c',
        ]);
        socket(&mut link).broken = true;
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(
                out.as_slice(),
                [
                    TransportEvent::Ping(_),
                    TransportEvent::Message(_),
                    TransportEvent::Message(_),
                    TransportEvent::PeerClosed(_),
                    TransportEvent::Error(_),
                    TransportEvent::Closed
                ]
            ),
            "{out:?}"
        );
    }

    /// Our close frame out, the peer's answer with a code it may not send ends the
    /// transport in the same read (a reviewer found it left for a later flush to end).
    #[test]
    fn an_invalid_close_code_after_ours_ends_the_transport_at_once() {
        // The server's close frame, 1004.
        let mut link = link(&[0x88, 0x02, 0x03, 0xEC]);
        let mut out = Vec::new();
        link.close(&CloseRequest::new(Some(1000), "bye").unwrap(), &mut out);
        link.flush(&mut out);
        assert_eq!(out, [TransportEvent::CloseWritten]);
        out.clear();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(
                out.as_slice(),
                [TransportEvent::PeerClosed(_), TransportEvent::Closed]
            ),
            "{out:?}"
        );
    }

    /// A xorshift generator for the randomized tests, seeded so that any seed (0 too) runs.
    pub(super) struct Rng(u64);

    impl Rng {
        pub(super) fn seeded(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
        }

        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(super) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The complete frames at the start of `w` (a client's: every one masked): (first
    /// byte, where the payload is, its mask, end offset). A frame cut short ends the list.
    pub(super) fn frames(w: &[u8]) -> Vec<(u8, std::ops::Range<usize>, [u8; 4], usize)> {
        let mut v = Vec::new();
        let mut i = 0;
        loop {
            if i + 2 > w.len() {
                return v;
            }
            let b0 = w[i];
            assert!(w[i + 1] & 0x80 != 0, "unmasked frame at {i}");
            let mut h = 2;
            let len = match w[i + 1] & 0x7F {
                126 => {
                    if i + 4 > w.len() {
                        return v;
                    }
                    h += 2;
                    u16::from_be_bytes([w[i + 2], w[i + 3]]) as usize
                }
                127 => {
                    if i + 10 > w.len() {
                        return v;
                    }
                    h += 8;
                    u64::from_be_bytes(w[i + 2..i + 10].try_into().unwrap()) as usize
                }
                n => n as usize,
            };
            if i + h + 4 + len > w.len() {
                return v;
            }
            let mask = w[i + h..i + h + 4].try_into().unwrap();
            let payload = i + h + 4..i + h + 4 + len;
            i += h + 4 + len;
            v.push((b0, payload, mask, i));
        }
    }

    /// [`frames`] with their payloads unmasked: (first byte, payload, end offset).
    pub(super) fn parse(w: &[u8]) -> Vec<(u8, Vec<u8>, usize)> {
        frames(w)
            .into_iter()
            .map(|(b0, payload, mask, end)| {
                let unmasked = w[payload]
                    .iter()
                    .enumerate()
                    .map(|(j, b)| b ^ mask[j % 4])
                    .collect();
                (b0, unmasked, end)
            })
            .collect()
    }

    /// The server sends one to three pings of random length (unmasked), and the link reads
    /// them.
    pub(super) fn server_pings(
        link: &mut Link<Scripted>,
        rng: &mut Rng,
        out: &mut Vec<TransportEvent>,
    ) {
        for _ in 0..1 + rng.below(3) {
            let p = rng.below(126) as usize;
            let input = socket(link).input.get_mut();
            input.push(0x89);
            input.push(p as u8);
            input.extend(std::iter::repeat_n(b'q', p));
        }
        let mut credit = ReadCredit::UNLIMITED;
        link.read(&mut credit, 16, out);
    }

    /// Every frame in `written`, which holds whole frames only: (opcode, payload).
    fn unmasked_frames(written: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let frames = parse(written);
        assert_eq!(
            frames.last().map_or(0, |f| f.2),
            written.len(),
            "whole frames"
        );
        frames
            .into_iter()
            .map(|(b0, p, _)| (b0 & 0x0F, p))
            .collect()
    }

    /// Large messages go out past tungstenite's buffer, masked a piece at a time, in order
    /// with the small ones and the pings around them, whatever the socket takes at a time;
    /// each payload arrives exactly, every send is reported written, and nothing of a large
    /// message stays with the link or tungstenite once it is out.
    #[test]
    fn large_messages_are_masked_as_they_go_out_in_order() {
        let sizes = [
            DIRECT_FROM - 1,
            DIRECT_FROM,
            DIRECT_FROM + 3,
            10,
            PIECE * 3 + 5,
            1,
            200_001,
        ];
        for room in [None, Some(1), Some(7), Some(4096), Some(PIECE + 1)] {
            let mut link = link(&[]);
            let mut out = Vec::new();
            let mut sent = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                let payload: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
                let message = if i % 2 == 0 {
                    Message::binary(payload.clone())
                } else {
                    let text: String = payload.iter().map(|b| (b'a' + b % 26) as char).collect();
                    Message::text(text)
                };
                sent.push((if i % 2 == 0 { 2 } else { 1 }, message.as_bytes().to_vec()));
                link.send(SendId::from_raw(i as u64), message, &mut out);
                if i == 2 {
                    link.ping(Bytes::from_static(b"between"), &mut out);
                    sent.push((9, b"between".to_vec()));
                }
            }
            socket(&mut link).room = room;
            let mut rounds = 0;
            loop {
                link.flush(&mut out);
                if !link.wants_write() {
                    break;
                }
                socket(&mut link).room = room;
                rounds += 1;
                assert!(rounds < 1_000_000, "never done");
            }
            let written = std::mem::take(&mut socket(&mut link).written);
            assert_eq!(unmasked_frames(&written), sent, "room {room:?}");
            let reported = out
                .iter()
                .filter(|e| matches!(e, TransportEvent::SendWritten(_)))
                .count();
            assert_eq!(reported, sizes.len(), "room {room:?}");
            let wire = link.wire_mut();
            assert!(wire.queue.is_empty() && wire.ready.capacity() == 0);
        }
    }

    /// The test socket under the link (under TLS too).
    pub(super) fn socket(link: &mut Link<Scripted>) -> &mut Scripted {
        link.wire_mut().stream.socket_mut()
    }

    /// Part of a frame is a sign of life ([`TransportEvent::Receiving`], once a read), so
    /// keepalive does not end a connection whose peer sends a large message slowly; a read
    /// that completes the message reports only the message, and one that finds nothing
    /// reports nothing.
    #[test]
    fn part_of_a_frame_is_reported_as_receiving() {
        let mut frame = vec![0x82, 126, 0x03, 0xe8]; // binary, 1,000 bytes
        frame.extend_from_slice(&[7; 1000]);
        let mut link = link(&frame[..300]);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert_eq!(out, [TransportEvent::Receiving]);
        out.clear();
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert_eq!(out, [], "nothing came");
        socket(&mut link)
            .input
            .get_mut()
            .extend_from_slice(&frame[300..]);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert!(
            matches!(out.as_slice(), [TransportEvent::Message(m)] if m.len() == 1000),
            "{out:?}"
        );
    }

    /// An unmasked binary frame from the server: `fin`, `opcode`, `payload`.
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => frame.push(n as u8),
            n @ 126..=0xFFFF => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    /// The binary payloads among `out`, taken out of it (so that they are the only
    /// references the test holds).
    fn binaries(out: &mut Vec<TransportEvent>) -> Vec<Bytes> {
        let mut payloads = Vec::new();
        out.retain(|e| match e {
            TransportEvent::Message(Message::Binary(b)) => {
                payloads.push(b.clone());
                false
            }
            _ => true,
        });
        payloads
    }

    /// A long frame's read buffer is let go once the connection is idle: the message the
    /// application got is then the only owner of its allocation, so that letting go of it
    /// frees the memory (tungstenite kept the buffer, the size of the longest frame, for the
    /// connection's life: a pool whose connections once took a 4 MB message each held
    /// 4 MB per connection while idle). Reading and writing go on as before afterwards.
    #[test]
    fn an_idle_connection_lets_go_of_a_long_frames_buffer() {
        let long: Vec<u8> = (0..GIVE_BACK_FROM * 3).map(|i| i as u8).collect();
        let mut link = link(&server_frame(true, 2, &long));
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        let [payload] = binaries(&mut out).try_into().unwrap();
        assert_eq!(payload, long);
        link.flush(&mut out);
        assert!(
            payload.is_unique(),
            "tungstenite still holds the long frame's buffer"
        );
        drop(payload);
        // The connection works on: a short and a long message read, a message written.
        out.clear();
        let input = [
            server_frame(true, 2, b"short"),
            server_frame(true, 2, &long),
        ]
        .concat();
        socket(&mut link).input = io::Cursor::new(input);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        let read = binaries(&mut out);
        assert_eq!(read, [&b"short"[..], &long[..]]);
        link.send(SendId::from_raw(1), Message::binary(long.clone()), &mut out);
        link.flush(&mut out);
        assert!(out.contains(&TransportEvent::SendWritten(SendId::from_raw(1))));
        assert!(read[1].is_unique());
        let written = &socket(&mut link).written;
        assert_eq!(written.len(), 2 + 8 + 4 + long.len());
    }

    /// The buffer is kept while anything of tungstenite's would be lost with it: a long
    /// frame part way, a message of several frames under way, a frame read and not yet
    /// parsed; nor is it let go before what was written is flushed. Each message still
    /// comes whole.
    #[test]
    fn a_long_frames_buffer_is_kept_while_a_message_is_part_way() {
        let long: Vec<u8> = (0..GIVE_BACK_FROM * 2).map(|i| (i * 3) as u8).collect();
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        // A long frame, then half of the next one: the socket runs dry part way.
        let next = server_frame(true, 2, &long);
        let half = next.len() / 2;
        let mut link = link(&[server_frame(true, 2, &long), next[..half].to_vec()].concat());
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        link.flush(&mut out);
        let [first] = binaries(&mut out).try_into().unwrap();
        assert!(
            !first.is_unique(),
            "the buffer holds half a frame: it must stay"
        );
        out.clear();
        socket(&mut link).input = io::Cursor::new(next[half..].to_vec());
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert_eq!(binaries(&mut out), [&long[..]]);
        // A message of two long frames, the socket dry after the first.
        out.clear();
        socket(&mut link).input = io::Cursor::new(server_frame(false, 2, &long));
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        link.flush(&mut out);
        assert!(binaries(&mut out).is_empty());
        socket(&mut link).input = io::Cursor::new(server_frame(true, 0, b"end"));
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        let joined = [&long[..], b"end"].concat();
        assert_eq!(binaries(&mut out), [&joined[..]]);
        // Read, not yet flushed: a message written waits in tungstenite's buffer.
        out.clear();
        socket(&mut link).input = io::Cursor::new(server_frame(true, 2, &long));
        link.send(
            SendId::from_raw(7),
            Message::binary(&b"queued"[..]),
            &mut out,
        );
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        let [last] = binaries(&mut out).try_into().unwrap();
        assert!(!last.is_unique(), "let go before the flush");
        link.flush(&mut out);
        assert!(last.is_unique(), "let go once flushed");
        assert!(out.contains(&TransportEvent::SendWritten(SendId::from_raw(7))));
        // Its frame, masked, is all that was ever written.
        assert_eq!(
            socket(&mut link).written.len(),
            2 + 4 + 6,
            "the queued message went out"
        );
    }

    /// A server's stream of random binary messages and pings (see [`server_stream`]).
    struct ServerStream {
        bytes: Vec<u8>,
        /// Where each frame ends in `bytes`.
        ends: Vec<usize>,
        messages: Vec<Vec<u8>>,
        /// The pings' payloads (each its own), in order.
        pings: Vec<Vec<u8>>,
    }

    /// `count` random binary messages from the server, each of one of `lengths` or of up
    /// to 70,000 bytes, in one to three frames, a ping after any of the frames.
    fn server_stream(rng: &mut Rng, count: usize, lengths: &[usize]) -> ServerStream {
        let mut stream = ServerStream {
            bytes: Vec::new(),
            ends: Vec::new(),
            messages: Vec::new(),
            pings: Vec::new(),
        };
        for _ in 0..count {
            let len = if rng.below(2) == 0 {
                lengths[rng.below(lengths.len() as u64) as usize]
            } else {
                rng.below(70_000) as usize
            };
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let fragments = 1 + rng.below(3) as usize;
            let mut pieces = payload.chunks(len.div_ceil(fragments).max(1)).peekable();
            let mut first = true;
            loop {
                let piece = pieces.next().unwrap_or(&[]);
                let fin = pieces.peek().is_none();
                let opcode = if first { 2 } else { 0 };
                stream.bytes.extend(server_frame(fin, opcode, piece));
                stream.ends.push(stream.bytes.len());
                first = false;
                if rng.below(2) == 0 {
                    let ping = format!("ping {}", stream.pings.len()).into_bytes();
                    stream.bytes.extend(server_frame(true, 9, &ping));
                    stream.ends.push(stream.bytes.len());
                    stream.pings.push(ping);
                }
                if fin {
                    break;
                }
            }
            stream.messages.push(payload);
        }
        stream
    }

    /// Random messages from the server, of every length around [`GIVE_BACK_FROM`], whole or
    /// in fragments with pings between them, arriving in random pieces, with random sends
    /// and flushes between the reads: every message arrives whole and in order, every ping
    /// is answered and every send goes out, however often tungstenite's side is made anew
    /// in between.
    #[test]
    fn messages_arrive_whole_whenever_the_buffers_are_made_anew() {
        let lengths = [
            0,
            10,
            4000,
            GIVE_BACK_FROM - 1,
            GIVE_BACK_FROM,
            GIVE_BACK_FROM * 2 + 3,
            100_000,
        ];
        let mut made_anew = 0;
        for seed in 0..150 {
            let mut rng = Rng::seeded(seed);
            let ServerStream {
                bytes: stream,
                ends,
                messages: expected,
                pings,
            } = server_stream(&mut rng, 12, &lengths);
            let mut link = link(&[]);
            let mut out = Vec::new();
            let mut credit = ReadCredit::UNLIMITED;
            let mut received = Vec::new();
            let mut sent = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let n = match ends.iter().position(|&end| end > at) {
                    Some(next) if rng.below(2) == 0 => {
                        let end = ends[(next + rng.below(3) as usize).min(ends.len() - 1)];
                        end - at
                    }
                    _ => (1 + rng.below(80_000) as usize).min(stream.len() - at),
                };
                socket(&mut link)
                    .input
                    .get_mut()
                    .extend_from_slice(&stream[at..at + n]);
                at += n;
                while link.read(&mut credit, 16, &mut out) == ReadEnd::Limit {}
                if rng.below(3) == 0 {
                    let len = [5, GIVE_BACK_FROM, 50_000][rng.below(3) as usize];
                    let id = SendId::from_raw(sent.len() as u64);
                    sent.push(vec![sent.len() as u8; len]);
                    link.send(id, Message::binary(sent.last().unwrap().clone()), &mut out);
                }
                // Mostly flushed after each read, as the drivers do.
                if rng.below(4) != 0 {
                    link.flush(&mut out);
                }
                received.extend(binaries(&mut out));
            }
            link.flush(&mut out);
            received.extend(binaries(&mut out));
            assert_eq!(received.len(), expected.len(), "seed {seed}");
            for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
                assert!(got == want, "seed {seed}: message {i} differs");
            }
            assert!(!out.iter().any(|e| matches!(e, TransportEvent::Error(_))));
            let written = unmasked_frames(&socket(&mut link).written);
            let pongs: Vec<&Vec<u8>> = (written.iter())
                .filter(|(op, _)| *op == 0xA)
                .map(|(_, p)| p)
                .collect();
            assert_eq!(
                pongs,
                pings.iter().collect::<Vec<_>>(),
                "seed {seed}: every ping answered, in order"
            );
            let data: Vec<&Vec<u8>> = (written.iter())
                .filter(|(op, _)| *op == 0x2)
                .map(|(_, p)| p)
                .collect();
            assert_eq!(data, sent.iter().collect::<Vec<_>>(), "seed {seed}");
            made_anew += link.made_anew;
        }
        assert!(made_anew > 300, "made anew only {made_anew} times");
    }

    /// The randomized stream above, with a socket that takes a random amount at a time (or
    /// nothing: flushes stop part way), a bound on each flush for some seeds, pings with
    /// their own payloads between fragments and messages, and sends long enough to go past
    /// tungstenite's buffer: every message arrives whole and in order, every send goes out
    /// once in order and is reported written once, and the pongs answer the pings in order,
    /// the last one included, however often tungstenite's side is made anew in between.
    #[test]
    fn replies_and_sends_survive_the_buffers_made_anew_on_a_slow_socket() {
        let lengths = [0, 10, GIVE_BACK_FROM - 1, GIVE_BACK_FROM, 100_000];
        let mut made_anew = 0;
        for seed in 0..80 {
            let mut rng = Rng::seeded(seed ^ 0xB0B);
            let ServerStream {
                bytes: stream,
                messages: expected,
                pings,
                ..
            } = server_stream(&mut rng, 10, &lengths);
            let mut link = link(&[]);
            if rng.below(3) == 0 {
                link.set_write_pass(1 + rng.below(40_000) as usize);
            }
            let mut out = Vec::new();
            let mut credit = ReadCredit::UNLIMITED;
            let mut received = Vec::new();
            let mut sent = Vec::new();
            let mut reported = Vec::new();
            let mut take = |out: &mut Vec<TransportEvent>, received: &mut Vec<Bytes>| {
                received.extend(binaries(out));
                for e in out.drain(..) {
                    match e {
                        TransportEvent::SendWritten(id) => reported.push(id.get()),
                        TransportEvent::Error(e) => panic!("seed {seed}: {e:?}"),
                        TransportEvent::Closed => panic!("seed {seed}: closed"),
                        _ => {}
                    }
                }
            };
            let mut at = 0;
            while at < stream.len() {
                let n = (1 + rng.below(60_000) as usize).min(stream.len() - at);
                socket(&mut link)
                    .input
                    .get_mut()
                    .extend_from_slice(&stream[at..at + n]);
                at += n;
                loop {
                    match link.read(&mut credit, 16, &mut out) {
                        ReadEnd::Limit => {}
                        ReadEnd::RepliesOwed => {
                            socket(&mut link).room = None;
                            link.flush(&mut out);
                        }
                        _ => break,
                    }
                }
                for _ in 0..rng.below(3) {
                    let len = [5, GIVE_BACK_FROM, 50_000, 70_000][rng.below(4) as usize];
                    let id = SendId::from_raw(sent.len() as u64);
                    sent.push(vec![sent.len() as u8; len]);
                    link.send(id, Message::binary(sent.last().unwrap().clone()), &mut out);
                }
                socket(&mut link).room = match rng.below(4) {
                    0 => Some(0),
                    1 => Some(rng.below(20_000) as usize),
                    _ => None,
                };
                if rng.below(4) != 0 {
                    link.flush(&mut out);
                }
                take(&mut out, &mut received);
            }
            socket(&mut link).room = None;
            for _ in 0..1000 {
                link.flush(&mut out);
                if !link.needs_flush() && !link.wants_write() {
                    break;
                }
            }
            assert!(!link.needs_flush() && !link.wants_write(), "seed {seed}");
            assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
            link.flush(&mut out);
            take(&mut out, &mut received);
            assert_eq!(received.len(), expected.len(), "seed {seed}");
            for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
                assert!(got == want, "seed {seed}: message {i} differs");
            }
            let written = unmasked_frames(&socket(&mut link).written);
            let data: Vec<&Vec<u8>> = (written.iter())
                .filter(|(op, _)| *op == 0x2)
                .map(|(_, p)| p)
                .collect();
            assert_eq!(data, sent.iter().collect::<Vec<_>>(), "seed {seed}");
            assert_eq!(
                reported,
                (0..sent.len() as u64).collect::<Vec<_>>(),
                "seed {seed}: every send reported written once, in order"
            );
            let pongs: Vec<&Vec<u8>> = (written.iter())
                .filter(|(op, _)| *op == 0xA)
                .map(|(_, p)| p)
                .collect();
            let mut rest = pings.iter();
            for pong in &pongs {
                assert!(
                    rest.any(|ping| ping == *pong),
                    "seed {seed}: a pong out of order or answering no ping"
                );
            }
            assert_eq!(
                pongs.last(),
                pings.last().as_ref(),
                "seed {seed}: last ping"
            );
            made_anew += link.made_anew;
        }
        assert!(made_anew > 50, "made anew only {made_anew} times");
    }

    /// Small messages read together share their copies' memory; once the socket has run
    /// dry, the link holds no block, and the next message is copied alone.
    #[test]
    fn small_messages_read_together_share_memory_and_a_dry_socket_lets_go() {
        let frames: Vec<u8> = (0..8u8).flat_map(|i| [0x82, 2, i, i]).collect();
        let mut link = link(&frames);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        let payloads: Vec<&[u8]> = (out.iter())
            .map(|e| match e {
                TransportEvent::Message(m) => m.as_bytes(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(payloads.len(), 8);
        for (i, pair) in payloads.windows(2).enumerate().skip(1) {
            assert_eq!(pair[0], [i as u8; 2]);
            assert_eq!(
                pair[1].as_ptr(),
                pair[0].as_ptr().wrapping_add(2),
                "message {i}"
            );
        }
        assert_eq!(link.copies.unused(), 0, "let go when the socket ran dry");
    }

    /// A peer that pings and does not read: the pongs owed wait in the WebSocket's buffer
    /// behind a full socket, and reading stops once they reach [`MAX_OWED_REPLIES`] (it did
    /// not: a ping flood grew the client by 20 MiB a second). A flush that gets them out
    /// lets reading go on, and every ping is answered.
    #[test]
    fn reading_stops_while_the_pongs_owed_cannot_be_written() {
        const PINGS: usize = 2_000;
        // The server's pings, unmasked, 125 bytes each.
        let ping: Vec<u8> = [0x89, 125].into_iter().chain([b'p'; 125]).collect();
        let mut link = link(&ping.repeat(PINGS));
        socket(&mut link).full = true;
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        let mut end = ReadEnd::Limit;
        for _ in 0..PINGS {
            end = link.read(&mut credit, crate::connection::MAX_READS, &mut out);
            link.flush(&mut out);
            if end == ReadEnd::RepliesOwed {
                break;
            }
        }
        assert_eq!(end, ReadEnd::RepliesOwed);
        // Checked before every frame: it stops at the first ping past the bound.
        assert!(
            (MAX_OWED_REPLIES..MAX_OWED_REPLIES + 131).contains(&link.owed),
            "{} bytes of pongs owed",
            link.owed
        );
        assert!(!link.reads_unblocked());
        // Still full: nothing more is read.
        let before = socket(&mut link).input.position();
        assert_eq!(
            link.read(&mut credit, crate::connection::MAX_READS, &mut out),
            ReadEnd::RepliesOwed
        );
        assert_eq!(socket(&mut link).input.position(), before);
        // The socket drains: the flush gets the pongs out, and reading goes on to the end.
        socket(&mut link).full = false;
        link.flush(&mut out);
        assert!(link.reads_unblocked());
        while link.read(&mut credit, crate::connection::MAX_READS, &mut out) != ReadEnd::Drained {
            link.flush(&mut out);
        }
        link.flush(&mut out);
        let written = &socket(&mut link).written;
        // Each pong: masked, 125 bytes of payload.
        let answered = written.len() / 131;
        assert!(
            out.iter().all(|e| !matches!(e, TransportEvent::Error(_))),
            "{out:?}"
        );
        assert_eq!(answered, PINGS, "every ping answered");
    }

    /// A peer that reads what it is sent never meets [`MAX_OWED_REPLIES`]: one read pass of
    /// [`MAX_READS`](crate::connection::MAX_READS) pings of the largest size, every pong
    /// waiting behind a full socket, reads them all and ends at the pass's limit.
    #[test]
    fn one_pass_of_the_largest_pings_stays_under_the_owed_bound() {
        let max = crate::connection::MAX_READS;
        let ping: Vec<u8> = [0x89, 125].into_iter().chain([b'p'; 125]).collect();
        let mut link = link(&ping.repeat(max));
        socket(&mut link).full = true;
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, max, &mut out), ReadEnd::Limit);
        let pings = out
            .iter()
            .filter(|e| matches!(e, TransportEvent::Ping(_)))
            .count();
        assert_eq!(pings, max, "{out:?}");
    }

    /// A frame the peer may not send (a masked one) stops reading at once, but the
    /// transport stays for the core's close frame: not readable, not gone, and a later read
    /// reads nothing. Once our close frame is out, the transport ends.
    #[test]
    fn a_refused_frame_stops_reading_and_the_transport_ends_after_our_close() {
        // A masked text frame from the server (RFC 6455 §5.1: a protocol error), then a
        // valid one that must not be read.
        let mut link = link(&[0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1, 0x81, 0x01, b'y']);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert!(link.is_readable() && !link.is_gone() && !link.close_sent());
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(out.as_slice(), [TransportEvent::Error(e)] if e.kind == wxsocket_core::TransportErrorKind::Protocol),
            "{out:?}"
        );
        assert!(!link.is_readable(), "no read after a refused frame");
        assert!(!link.is_gone(), "the core's close frame is still to go");
        out.clear();
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert_eq!(out, []);
        link.close(&CloseRequest::new(Some(1000), "").unwrap(), &mut out);
        assert!(link.close_sent());
        link.flush(&mut out);
        assert_eq!(out, [TransportEvent::Closed]);
        assert!(link.is_gone() && !link.is_readable());
    }

    /// After a refused frame, our close frame meeting a broken socket reads nothing more:
    /// the frames behind the refused one stay unread (a write that fails reads what the
    /// socket holds only while reading is still allowed), and the failure ends the
    /// transport.
    #[test]
    fn a_failed_close_after_a_refused_frame_reads_nothing_more() {
        let mut link = link(&[0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1, 0x81, 0x01, b'y']);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(!link.is_readable() && !link.is_gone(), "{out:?}");
        out.clear();
        socket(&mut link).broken = true;
        link.close(&CloseRequest::new(Some(1000), "").unwrap(), &mut out);
        link.flush(&mut out);
        assert_failed(&out);
        assert!(link.is_gone());
    }

    /// A write that fails ends the transport, and nothing more is read, though no read
    /// failed: beyond what the read after the failure takes (before the first read, one
    /// message: [`FIRST_CREDIT`]), the data waiting on the socket stays unread.
    #[test]
    fn a_failed_write_ends_reading_too() {
        let mut link = link(&[0x81, 0x01, b'y', 0x81, 0x01, b'z']);
        socket(&mut link).broken = true;
        let mut out = Vec::new();
        link.send(SendId::from_raw(1), Message::text("x"), &mut out);
        link.flush(&mut out);
        assert!(
            matches!(
                out.as_slice(),
                [
                    TransportEvent::Message(_),
                    TransportEvent::Error(_),
                    TransportEvent::Closed
                ]
            ),
            "{out:?}"
        );
        assert!(link.is_gone() && !link.is_readable());
        out.clear();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert_eq!(out, []);
    }

    /// Asserts the events were exactly a failure and the end.
    fn assert_failed(out: &[TransportEvent]) {
        assert!(
            matches!(out, [TransportEvent::Error(_), TransportEvent::Closed]),
            "{out:?}"
        );
    }

    /// The server's close frame 1009 "too big", unmasked.
    const CLOSE_1009: &[u8] = &[
        0x88, 0x09, 0x03, 0xF1, b't', b'o', b'o', b' ', b'b', b'i', b'g',
    ];

    /// A write that fails because the peer went away first reads what the socket still
    /// holds, within the credit the last read left: the messages the peer sent and its
    /// close frame, whose code says why (a user saw 1006 "Broken pipe" where the server had
    /// refused the message with 1009). Then the failure, as before.
    #[test]
    fn a_failed_write_reads_the_close_frame_the_peer_sent_before_it_went() {
        let mut link = link(&[]);
        let mut out = Vec::new();
        let mut credit = ReadCredit::new(10, 1000);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        let mut input = vec![0x81, 0x01, b'y'];
        input.extend_from_slice(CLOSE_1009);
        socket(&mut link).input = io::Cursor::new(input);
        socket(&mut link).broken = true;
        link.send(SendId::from_raw(1), Message::text("x"), &mut out);
        link.flush(&mut out);
        match out.as_slice() {
            [
                TransportEvent::Message(message),
                TransportEvent::PeerClosed(peer),
                TransportEvent::Error(_),
                TransportEvent::Closed,
            ] => {
                assert_eq!(message, &Message::text("y"));
                assert_eq!((peer.code, peer.reason.as_str()), (Some(1009), "too big"));
            }
            other => panic!("{other:?}"),
        }
        assert!(link.is_gone());
        // Nothing of ours went out after the failure (the close reply stays queued).
        assert_eq!(socket(&mut link).written, []);
    }

    /// The read after a failed write hands over no more than the credit left: a link whose
    /// last read used it up reads nothing, the peer's close frame behind the messages stays
    /// on the socket, and the failure is reported as it is.
    #[test]
    fn a_failed_write_reads_nothing_past_the_credit() {
        let mut input = vec![0x81, 0x01, b'a', 0x81, 0x01, b'b'];
        input.extend_from_slice(CLOSE_1009);
        let mut link = link(&input);
        let mut out = Vec::new();
        let mut credit = ReadCredit::new(1, 1000);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Paused);
        assert!(
            matches!(out.as_slice(), [TransportEvent::Message(_)]),
            "{out:?}"
        );
        out.clear();
        socket(&mut link).broken = true;
        link.send(SendId::from_raw(1), Message::text("x"), &mut out);
        link.flush(&mut out);
        assert_failed(&out);
    }

    /// Before its first read a link hands over one message after a failed write, unless the
    /// driver did not read because the core's credit ran out (a review: a connection that
    /// opens with the core's backlog full took one message past it).
    #[test]
    fn a_failed_write_before_any_read_takes_one_message_unless_reading_is_paused() {
        let input = [0x81, 0x01, b'a', 0x81, 0x01, b'b'];
        for paused in [false, true] {
            let mut link = link(&input);
            if paused {
                link.note_paused();
            }
            socket(&mut link).broken = true;
            let mut out = Vec::new();
            link.send(SendId::from_raw(1), Message::text("x"), &mut out);
            link.flush(&mut out);
            let messages = out
                .iter()
                .filter(|e| matches!(e, TransportEvent::Message(_)))
                .count();
            assert_eq!(messages, usize::from(!paused), "{out:?}");
            assert_failed(&out[messages..]);
        }
    }

    /// A pong that cannot be written (the flush after a ping read) reads on past the ping,
    /// within the read's own credit: the close frame behind it comes before the failure.
    #[test]
    fn a_failed_pong_reads_the_close_frame_behind_its_ping() {
        let mut input = vec![0x89, 0x01, b'p'];
        input.extend_from_slice(CLOSE_1009);
        let mut link = link(&input);
        socket(&mut link).broken = true;
        let mut out = Vec::new();
        let mut credit = ReadCredit::new(10, 1000);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(
                out.as_slice(),
                [
                    TransportEvent::Ping(_),
                    TransportEvent::PeerClosed(PeerClose {
                        code: Some(1009),
                        ..
                    }),
                    TransportEvent::Error(_),
                    TransportEvent::Closed,
                ]
            ),
            "{out:?}"
        );
    }

    /// The peer's close frame and then its FIN while a large message of ours is going out
    /// into a full socket: the message is finished and the answer to the close sent behind
    /// it before the transport ends, as the references (Python `websockets`, Node `ws`) do.
    /// The transport used to end at the FIN: the message was cut off, the peer never had
    /// our close frame, and the close was reported clean.
    #[test]
    fn the_peers_fin_after_its_close_lets_our_message_and_answer_go_out() {
        let mut link = link(&[]);
        socket(&mut link).room = Some(1000);
        let mut out = Vec::new();
        link.send(
            SendId::from_raw(1),
            Message::binary(vec![7; 200_000]),
            &mut out,
        );
        link.flush(&mut out);
        assert!(link.wants_write(), "{out:?}");
        assert_eq!(out, []);
        socket(&mut link).input = io::Cursor::new(vec![0x88, 0x02, 0x03, 0xE8]);
        socket(&mut link).eof = true;
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(out.as_slice(), [TransportEvent::PeerClosed(_)]),
            "{out:?}"
        );
        assert!(!link.is_gone() && !link.is_readable());
        out.clear();
        socket(&mut link).room = None;
        link.flush(&mut out);
        assert_eq!(
            out,
            [
                TransportEvent::Sending,
                TransportEvent::SendWritten(SendId::from_raw(1)),
                TransportEvent::Closed
            ]
        );
        let written = unmasked_frames(&socket(&mut link).written);
        assert_eq!(written.len(), 2, "the message, then the answer");
        assert_eq!((written[0].0, written[0].1.len()), (0x2, 200_000));
        assert_eq!(written[1], (0x8, vec![0x03, 0xE8]));
    }

    /// Once both close frames were exchanged, a failure (a TLS connection ended without
    /// `close_notify`) is only how the transport ended: no error, which the core would take
    /// to mean our answer to the peer's close did not go out. When the answer could not be
    /// written, the error is reported, after the peer's close.
    #[test]
    fn a_failure_after_both_close_frames_is_only_the_end() {
        let mut exchanged = link(&[0x88, 0x02, 0x03, 0xE8]);
        socket(&mut exchanged).end_error = Some(io::ErrorKind::UnexpectedEof);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(exchanged.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert_eq!(
            out,
            [
                TransportEvent::PeerClosed(PeerClose {
                    code: Some(1000),
                    reason: String::new()
                }),
                TransportEvent::CloseWritten,
                TransportEvent::Closed
            ]
        );

        let mut refused = link(&[0x88, 0x02, 0x03, 0xE8]);
        socket(&mut refused).broken = true;
        let mut out = Vec::new();
        assert_eq!(refused.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(
                out.as_slice(),
                [
                    TransportEvent::PeerClosed(_),
                    TransportEvent::Error(_),
                    TransportEvent::Closed
                ]
            ),
            "{out:?}"
        );
    }

    /// Sends wait unflushed from the send until a flush reports them written.
    #[test]
    fn sends_wait_unflushed_until_a_flush_reports_them() {
        let mut link = link(&[]);
        let mut out = Vec::new();
        assert!(!link.has_unflushed_sends());
        link.send(SendId::from_raw(1), Message::text("x"), &mut out);
        assert!(link.has_unflushed_sends());
        link.flush(&mut out);
        assert_eq!(out, [TransportEvent::SendWritten(SendId::from_raw(1))]);
        assert!(!link.has_unflushed_sends());
    }

    /// Compressed messages are flushed by the send that takes them past
    /// [`FLUSH_AFTER_COMPRESSED`](crate::dial::FLUSH_AFTER_COMPRESSED), without waiting for
    /// the driver's flush; those before it wait for it.
    #[cfg(feature = "deflate")]
    #[test]
    fn compressed_sends_past_the_flush_size_go_out_at_once() {
        let mut link = link(&[]);
        link.encoder = Encoder::deflating_for_tests(0);
        let mut out = Vec::new();
        link.send(SendId::from_raw(1), Message::binary(vec![1; 100]), &mut out);
        assert_eq!(out, []);
        assert!(socket(&mut link).written.is_empty());
        let big = vec![2; crate::dial::FLUSH_AFTER_COMPRESSED];
        link.send(SendId::from_raw(2), Message::binary(big), &mut out);
        assert_eq!(
            out,
            [1, 2].map(|id| TransportEvent::SendWritten(SendId::from_raw(id)))
        );
        assert_eq!(frames(&socket(&mut link).written).len(), 2);
        assert!(!link.needs_flush());
    }

    /// A close frame behind a full socket waits in the buffer: no failure, the transport
    /// stays, and the next flush that finds room writes it.
    #[test]
    fn a_close_behind_a_full_socket_goes_out_with_the_next_flush() {
        let mut link = link(&[]);
        socket(&mut link).full = true;
        let mut out = Vec::new();
        link.close(&CloseRequest::new(Some(1000), "bye").unwrap(), &mut out);
        assert_eq!(out, []);
        assert!(link.close_sent() && link.needs_flush() && !link.is_gone());
        socket(&mut link).full = false;
        link.flush(&mut out);
        assert_eq!(out, [TransportEvent::CloseWritten]);
        let written = parse(&socket(&mut link).written);
        assert!(
            matches!(written.as_slice(), [(0x88, payload, _)] if payload == b"\x03\xe8bye"),
            "{written:?}"
        );
    }

    /// A close frame that cannot be written (the peer reset the connection) ends the
    /// transport at once, with the error.
    #[test]
    fn a_close_on_a_broken_socket_ends_the_transport() {
        let mut link = link(&[]);
        socket(&mut link).broken = true;
        let mut out = Vec::new();
        link.close(&CloseRequest::new(Some(1000), "bye").unwrap(), &mut out);
        assert_failed(&out);
        assert!(link.is_gone());
    }

    /// Sends 60,000-byte messages with `ids` (below `DIRECT_FROM`: through tungstenite's
    /// buffer, which writes them out past its 128 KiB write size) and asserts the socket's
    /// failure was reported by them, error then end, and nothing else.
    fn sends_end_the_transport(
        link: &mut Link<Scripted>,
        ids: std::ops::RangeInclusive<u64>,
        out: &mut Vec<TransportEvent>,
    ) {
        for id in ids {
            link.send(SendId::from_raw(id), Message::binary(vec![0; 60_000]), out);
        }
        assert_failed(out);
    }

    /// A send whose frame tungstenite writes out at once (its buffer past its write size)
    /// onto a broken socket fails there: the error and the end are reported by that send,
    /// which is not taken (never reported written).
    #[test]
    fn a_send_that_meets_a_broken_socket_ends_the_transport_at_once() {
        let mut link = link(&[]);
        socket(&mut link).broken = true;
        let mut out = Vec::new();
        sends_end_the_transport(&mut link, 1..=3, &mut out);
        assert!(link.is_gone() && !link.has_unflushed_sends());
    }

    /// A large message sent while the socket is full queues behind everything before it
    /// (in the wire's queue and in tungstenite's buffer): no failure, and once the socket
    /// takes bytes again all go out in order and are reported written.
    #[test]
    fn a_large_send_behind_a_full_socket_waits_its_turn() {
        let mut link = link(&[]);
        socket(&mut link).full = true;
        let mut out = Vec::new();
        link.send(SendId::from_raw(1), Message::text("small"), &mut out);
        link.flush(&mut out);
        assert!(link.wants_write());
        // One in the wire's queue, one in tungstenite's buffer, then the large one.
        link.send(SendId::from_raw(2), Message::text("second"), &mut out);
        let large = Message::binary(vec![5; DIRECT_FROM]);
        link.send(SendId::from_raw(3), large, &mut out);
        assert_eq!(out, []);
        assert!(!link.is_gone() && link.has_unflushed_sends());
        socket(&mut link).full = false;
        link.flush(&mut out);
        let mut expected = vec![TransportEvent::Sending];
        expected.extend((1..=3).map(|id| TransportEvent::SendWritten(SendId::from_raw(id))));
        assert_eq!(out, expected);
        let written = unmasked_frames(&socket(&mut link).written);
        let sent = [
            (1, b"small".to_vec()),
            (1, b"second".to_vec()),
            (2, vec![5; DIRECT_FROM]),
        ];
        assert_eq!(written, sent);
    }

    /// A large message whose turn comes on a broken socket (the frames before it cannot be
    /// written) fails there: the error and the end are reported by that send.
    #[test]
    fn a_large_send_that_meets_a_broken_socket_ends_the_transport_at_once() {
        let mut link = link(&[]);
        socket(&mut link).broken = true;
        let mut out = Vec::new();
        link.send(SendId::from_raw(1), Message::text("small"), &mut out);
        assert_eq!(out, []);
        link.send(
            SendId::from_raw(2),
            Message::binary(vec![5; DIRECT_FROM]),
            &mut out,
        );
        assert_failed(&out);
        assert!(link.is_gone() && !link.has_unflushed_sends());
    }

    /// A failure found under tungstenite (the frame watch's invalid UTF-8, carried as an IO
    /// error) fails the read: it is reported and reading stops, not taken for a socket
    /// with nothing more.
    #[test]
    fn invalid_utf8_found_under_tungstenite_fails_the_read() {
        // A text frame, "\xC3(" (a lead byte without its continuation).
        let mut link = link(&[0x81, 0x02, 0xC3, b'(']);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(out.as_slice(), [TransportEvent::Error(e)] if e.kind == wxsocket_core::TransportErrorKind::InvalidUtf8),
            "{out:?}"
        );
        assert!(!link.is_readable() && !link.is_gone());
    }

    /// A close frame from the peer with a code it may not send, before we closed: reading
    /// stops, but the transport waits for the core's close frame (1002) and ends once it
    /// is out.
    #[test]
    fn an_invalid_close_code_before_ours_waits_for_our_close_frame() {
        // The server's close frame, 1004.
        let mut link = link(&[0x88, 0x02, 0x03, 0xEC]);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(out.as_slice(), [TransportEvent::PeerClosed(_)]),
            "{out:?}"
        );
        assert!(!link.is_gone() && !link.is_readable());
        out.clear();
        link.close(&CloseRequest::new(Some(1000), "").unwrap(), &mut out);
        link.flush(&mut out);
        assert_eq!(out, [TransportEvent::Closed]);
    }

    /// A flush that finds the socket still full reports no sign of life; one that gets
    /// bytes out after a full socket reports [`TransportEvent::Sending`].
    #[test]
    fn a_blocked_flush_reports_sending_only_when_the_socket_took_bytes() {
        let mut link = link(&[]);
        socket(&mut link).full = true;
        let mut out = Vec::new();
        link.send(SendId::from_raw(1), Message::text("x"), &mut out);
        link.flush(&mut out);
        link.flush(&mut out);
        assert!(link.wants_write());
        assert_eq!(out, [], "nothing went out");
        // Part of the frame goes out: a sign of life, though the flush is still blocked.
        socket(&mut link).full = false;
        socket(&mut link).room = Some(3);
        link.flush(&mut out);
        assert!(link.wants_write());
        assert_eq!(out, [TransportEvent::Sending]);
        out.clear();
        socket(&mut link).room = None;
        link.flush(&mut out);
        assert_eq!(
            out,
            [
                TransportEvent::Sending,
                TransportEvent::SendWritten(SendId::from_raw(1))
            ]
        );
    }

    /// A pass begun to end at a short read (the blocking adapter's, on an edge-triggered
    /// readiness) takes nothing more from the socket after one: what arrives later waits
    /// for the next pass, which takes it.
    #[test]
    fn a_pass_that_ends_at_a_short_read_leaves_later_bytes_to_the_next() {
        let mut link = link(&[0x81, 0x01, b'a']);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        link.wire_mut().begin_pass(true);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert!(
            matches!(out.as_slice(), [TransportEvent::Message(m)] if m.as_bytes() == b"a"),
            "{out:?}"
        );
        out.clear();
        let later = [0x81, 0x01, b'b'];
        socket(&mut link).input.get_mut().extend_from_slice(&later);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert_eq!(out, [], "the pass ended at the short read");
        link.wire_mut().begin_pass(true);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert!(
            matches!(out.as_slice(), [TransportEvent::Message(m)] if m.as_bytes() == b"b"),
            "{out:?}"
        );
    }

    /// A socket whose read fails (the peer reset the connection) fails the read: the
    /// error, then the end (no close frame can follow), not a socket with nothing more.
    #[test]
    fn a_failed_socket_read_ends_the_transport() {
        let mut link = link(&[]);
        socket(&mut link).reset = true;
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Stopped);
        assert!(
            matches!(
                out.as_slice(),
                [TransportEvent::Error(e), TransportEvent::Closed] if e.kind == wxsocket_core::TransportErrorKind::Io
            ),
            "{out:?}"
        );
        assert!(link.is_gone());
    }

    /// A pass begun to end at a short read goes on through full ones: a message larger than
    /// one read completes in the pass.
    #[test]
    fn a_pass_that_ends_at_a_short_read_goes_on_through_full_ones() {
        const LEN: usize = 200_000;
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&(LEN as u64).to_be_bytes());
        frame.extend(std::iter::repeat_n(9, LEN));
        let mut link = link(&frame);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        link.wire_mut().begin_pass(true);
        assert_eq!(link.read(&mut credit, 16, &mut out), ReadEnd::Drained);
        assert!(
            matches!(out.as_slice(), [TransportEvent::Message(m)] if m.len() == LEN),
            "{out:?}"
        );
    }

    /// Bytes queued behind a full socket, then the socket broken: the send whose frame
    /// tungstenite writes out behind them meets the failure, and reports it at once.
    #[test]
    fn a_send_behind_queued_bytes_that_meets_a_broken_socket_ends_the_transport_at_once() {
        let (mut link, mut out) = queued_behind_a_full_socket();
        socket(&mut link).broken = true;
        sends_end_the_transport(&mut link, 2..=4, &mut out);
    }

    /// Frames held back by a full socket that a later send's own write-out moved on
    /// (tungstenite writes its buffer out past its write size) are a sign of life too: the
    /// flush after reports `Sending` though nothing is left for it to move (it reported
    /// nothing: a mutation run).
    #[test]
    fn bytes_a_send_moved_while_blocked_count_as_sending() {
        let (mut link, mut out) = queued_behind_a_full_socket();
        socket(&mut link).full = false;
        for id in 2..=4 {
            link.send(
                SendId::from_raw(id),
                Message::binary(vec![0; 60_000]),
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
        link.flush(&mut out);
        assert!(
            matches!(out.first(), Some(TransportEvent::Sending)),
            "{out:?}"
        );
        assert!(!link.wants_write());
        // Not blocked any more: the next flush of nothing reports nothing.
        let mut later = Vec::new();
        link.flush(&mut later);
        assert!(later.is_empty(), "{later:?}");
    }

    /// A socket that takes nothing without blocking (`Ok(0)`: the connection is gone) fails
    /// the send whose frame tungstenite writes out: the error and the end come at once.
    #[test]
    fn a_send_meeting_a_socket_that_takes_nothing_ends_the_transport_at_once() {
        let mut link = link(&[]);
        socket(&mut link).write_zero = true;
        let mut out = Vec::new();
        sends_end_the_transport(&mut link, 1..=3, &mut out);
    }

    /// A socket that takes nothing (`Ok(0)`) is no sign of life: a flush that was blocked
    /// and meets it reports the failure and the end, without `Sending` before them (which
    /// would tell the core's timers that the peer took bytes).
    #[test]
    fn a_socket_taking_nothing_after_a_block_is_no_sign_of_life() {
        let (mut link, mut out) = queued_behind_a_full_socket();
        socket(&mut link).full = false;
        socket(&mut link).write_zero = true;
        link.flush(&mut out);
        assert_failed(&out);
        assert!(link.is_gone());
    }

    /// A send is reported written as soon as the socket took its frame's last byte, and not
    /// a byte before: frames of each header size (7-bit, 16-bit and 64-bit lengths).
    #[test]
    fn a_send_is_reported_when_its_frames_last_byte_is_taken() {
        for (payload, header) in [(100, 2), (1000, 4), (70_000, 10)] {
            let frame = header + 4 + payload;
            for (room, reported) in [(2 * frame - 1, vec![1]), (2 * frame, vec![1, 2])] {
                let mut link = link(&[]);
                socket(&mut link).room = Some(room);
                let mut out = Vec::new();
                for id in 1..=3 {
                    link.send(
                        SendId::from_raw(id),
                        Message::binary(vec![0; payload]),
                        &mut out,
                    );
                }
                link.flush(&mut out);
                let written: Vec<u64> = out
                    .iter()
                    .filter_map(|e| match e {
                        TransportEvent::SendWritten(id) => Some(id.get()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(written, reported, "payload {payload}, room {room}");
            }
        }
    }

    /// A flush that used up its write pass to the byte, with nothing left over: what
    /// tungstenite writes out next (a small send held in its buffer, written ahead of a
    /// large one) waits for the next flush instead of failing the transport (tungstenite
    /// takes a write of nothing for a connection reset). Everything then goes out in order.
    #[test]
    fn a_write_after_a_pass_used_up_exactly_waits_for_the_next_flush() {
        let mut link = link(&[]);
        link.set_write_pass(frame_len(100) as usize);
        let mut out = Vec::new();
        link.send(SendId::from_raw(1), Message::binary(vec![1; 100]), &mut out);
        link.flush(&mut out);
        assert_eq!(out, [TransportEvent::SendWritten(SendId::from_raw(1))]);
        assert!(!link.wants_write());
        out.clear();
        link.send(SendId::from_raw(2), Message::binary(vec![2; 10]), &mut out);
        link.send(
            SendId::from_raw(3),
            Message::binary(vec![3; DIRECT_FROM]),
            &mut out,
        );
        assert_eq!(out, [], "no failure");
        link.set_write_pass(usize::MAX);
        link.flush(&mut out);
        assert_eq!(
            out,
            [
                TransportEvent::SendWritten(SendId::from_raw(2)),
                TransportEvent::SendWritten(SendId::from_raw(3))
            ]
        );
        let frames = unmasked_frames(&socket(&mut link).written);
        let sizes: Vec<(u8, usize, u8)> = frames.iter().map(|f| (f.0, f.1.len(), f.1[0])).collect();
        assert_eq!(sizes, [(2, 100, 1), (2, 10, 2), (2, DIRECT_FROM, 3)]);
    }

    /// With a write pass set, a flush hands the socket at most that many bytes even when
    /// it would take more, and says that more waits without the socket being full
    /// ([`Link::write_spent`]); the sends are reported as their last byte goes. A read's
    /// replies and the frames before them are a pass of their own. A socket that is full
    /// is not a spent pass.
    #[test]
    fn a_flush_writes_at_most_a_pass_and_says_more_waits() {
        const PASS: usize = 1000;
        let mut link = link(&[]);
        link.set_write_pass(PASS);
        let mut out = Vec::new();
        // A large message written directly, then small ones through tungstenite's buffer.
        link.send(
            SendId::from_raw(1),
            Message::binary(vec![1; 100_000]),
            &mut out,
        );
        for id in 2..=4 {
            link.send(
                SendId::from_raw(id),
                Message::binary(vec![2; 700]),
                &mut out,
            );
        }
        let total = frame_len(100_000) + 3 * frame_len(700);
        let mut flushes = 0;
        let mut reported = Vec::new();
        loop {
            let before = socket(&mut link).written.len();
            link.flush(&mut out);
            flushes += 1;
            let wrote = socket(&mut link).written.len() - before;
            assert!(wrote <= PASS, "flush {flushes} wrote {wrote}");
            reported.extend(out.drain(..).filter_map(|e| match e {
                TransportEvent::SendWritten(id) => {
                    Some((id.get(), socket(&mut link).written.len()))
                }
                _ => None,
            }));
            if !link.write_spent() {
                break;
            }
            assert!(link.wants_write() && link.needs_flush());
        }
        assert_eq!(socket(&mut link).written.len() as u64, total);
        assert_eq!(flushes as u64, total.div_ceil(PASS as u64));
        let ids: Vec<u64> = reported.iter().map(|r| r.0).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(
            reported[0].1 >= frame_len(100_000) as usize,
            "the large send reported before its last byte"
        );
        assert!(!link.wants_write() && !link.needs_flush());

        // A full socket is not a spent pass: the driver waits for it to be writable.
        link.send(
            SendId::from_raw(5),
            Message::binary(vec![3; 5000]),
            &mut out,
        );
        socket(&mut link).room = Some(0);
        link.flush(&mut out);
        assert!(link.wants_write() && !link.write_spent());

        // A read starts a pass of its own: the pong a ping asks for goes out within it.
        socket(&mut link).room = None;
        link.flush(&mut out);
        assert!(link.write_spent());
        let before = socket(&mut link).written.len();
        socket(&mut link)
            .input
            .get_mut()
            .extend_from_slice(&[0x89, 0x01, b'p']);
        let mut credit = ReadCredit::UNLIMITED;
        link.read(&mut credit, 16, &mut out);
        let wrote = socket(&mut link).written.len() - before;
        assert!(wrote > 0 && wrote <= PASS, "the read wrote {wrote}");
    }

    /// A flush stopped by its pass limit on a socket that took every byte it was offered
    /// is no full socket: the next pass reports no sign of life (`Sending`), which would
    /// keep a keepalive alive against a peer that never answers (the reviewer's
    /// reproducer). After a real block it does.
    #[test]
    fn a_pass_after_a_spent_pass_is_no_sign_of_life() {
        let mut link = link(&[]);
        link.set_write_pass(1000);
        let mut out = Vec::new();
        link.send(
            SendId::from_raw(1),
            Message::binary(vec![1; 100_000]),
            &mut out,
        );
        link.flush(&mut out);
        assert!(link.write_spent(), "the first pass stops at its limit");
        link.flush(&mut out);
        assert!(!out.contains(&TransportEvent::Sending), "{out:?}");
        // A full socket, then room again: the next pass is a sign of life.
        socket(&mut link).room = Some(0);
        link.flush(&mut out);
        assert!(link.wants_write() && !link.write_spent());
        socket(&mut link).room = None;
        link.flush(&mut out);
        assert_eq!(out.last(), Some(&TransportEvent::Sending), "{out:?}");
    }

    /// Messages from [`DIRECT_FROM`] bytes on, text or binary, are queued as they are, to
    /// be masked as they go out, not copied through tungstenite's buffer; smaller ones go
    /// through it.
    #[test]
    fn messages_from_the_direct_size_on_are_queued_uncopied() {
        let mut link = link(&[]);
        socket(&mut link).full = true;
        let mut out = Vec::new();
        let masked = |link: &mut Link<Scripted>| {
            let queue = &link.wire_mut().queue;
            queue
                .iter()
                .filter(|q| matches!(q, Queued::Masked { .. }))
                .count()
        };
        let small = DIRECT_FROM - 1;
        link.send(
            SendId::from_raw(1),
            Message::binary(vec![0; small]),
            &mut out,
        );
        link.send(
            SendId::from_raw(2),
            Message::text("a".repeat(small)),
            &mut out,
        );
        assert_eq!(masked(&mut link), 0);
        link.send(
            SendId::from_raw(3),
            Message::binary(vec![0; DIRECT_FROM]),
            &mut out,
        );
        assert_eq!(masked(&mut link), 1);
        link.send(
            SendId::from_raw(4),
            Message::text("a".repeat(DIRECT_FROM)),
            &mut out,
        );
        assert_eq!(masked(&mut link), 2);
        assert_eq!(out, []);
    }

    /// A compressed message is queued uncopied too when its frame's payload is from
    /// [`DIRECT_FROM`] bytes on; a smaller frame goes through tungstenite's buffer.
    #[cfg(feature = "deflate")]
    #[test]
    fn compressed_frames_from_the_direct_size_on_are_queued_uncopied() {
        let mut link = link(&[]);
        link.encoder = Encoder::deflating_for_tests(0);
        socket(&mut link).full = true;
        let mut out = Vec::new();
        let masked = |link: &mut Link<Scripted>| {
            let queue = &link.wire_mut().queue;
            queue
                .iter()
                .filter(|q| matches!(q, Queued::Masked { .. }))
                .count()
        };
        link.send(SendId::from_raw(1), Message::binary(vec![0; 100]), &mut out);
        assert_eq!(masked(&mut link), 0);
        // Random bytes do not compress: the frame stays past DIRECT_FROM.
        let mut rng = Rng::seeded(7);
        let noise: Vec<u8> = (0..DIRECT_FROM + 1000).map(|_| rng.next() as u8).collect();
        link.send(SendId::from_raw(2), Message::binary(noise), &mut out);
        assert_eq!(masked(&mut link), 1);
    }
}

/// A reviewer's randomized check of the written reports: sends of every size around the
/// length boundaries (and past the wire's backlog), pings both ways (pongs replacing each
/// other), the socket's room down to zero, both closes; after every step the socket's bytes
/// are parsed into frames, and no send may be reported written before its frame is whole
/// on the socket, nor out of order.
#[cfg(test)]
mod randomized_tests {
    use super::tests::{Rng, Scripted, frames, server_pings, socket as sock};
    use super::*;
    use std::collections::HashMap;

    fn run(seed: u64, encoder: Encoder) {
        let mut rng = Rng::seeded(seed);
        let wire = Wire::new(
            Stream::Plain(Scripted::default()),
            Incoming::new(Bytes::new(), None),
        );
        let mut link = Link::new(
            ConnId::from_raw(1),
            wire,
            WebSocketConfig::default(),
            encoder,
        );
        let mut order: HashMap<u64, usize> = HashMap::new(); // id -> ordinal of data frame
        let mut ndata = 0usize;
        let mut next_id = 1u64;
        let mut reported: Vec<u64> = Vec::new();
        let sizes = [
            0usize, 1, 100, 125, 126, 127, 1000, 65535, 65536, 70000, 200_000, 300_000, 600_000,
        ];
        for step in 0..300 {
            let mut out = Vec::new();
            match rng.below(10) {
                0..=3 => {
                    let size = if rng.below(2) == 0 {
                        sizes[rng.below(sizes.len() as u64) as usize]
                    } else {
                        rng.below(3000) as usize
                    };
                    let id = next_id;
                    next_id += 1;
                    let msg = if rng.below(2) == 0 {
                        Message::text("a".repeat(size))
                    } else {
                        Message::binary(vec![7u8; size])
                    };
                    link.send(SendId::from_raw(id), msg, &mut out);
                    if link.pending.back().is_some_and(|p| p.0.get() == id)
                        || out
                            .iter()
                            .any(|e| matches!(e, TransportEvent::SendWritten(i) if i.get() == id))
                    {
                        order.insert(id, ndata);
                        ndata += 1;
                    }
                }
                4 => {
                    let p = rng.below(126) as usize;
                    link.ping(Bytes::from(vec![1u8; p]), &mut out);
                }
                5 => {
                    sock(&mut link).room = match rng.below(4) {
                        0 => None,
                        1 => Some(0),
                        _ => Some(rng.below(400) as usize),
                    };
                }
                6 | 7 => link.flush(&mut out),
                8 => {
                    // The server pings (one or more, unmasked).
                    server_pings(&mut link, &mut rng, &mut out);
                }
                9 if step > 200 && rng.below(4) == 0 => {
                    if rng.below(2) == 0 {
                        let reason = "r".repeat(rng.below(100) as usize);
                        link.close(&CloseRequest::new(Some(1000), &reason).unwrap(), &mut out);
                    } else {
                        let s = sock(&mut link);
                        s.input
                            .get_mut()
                            .extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]);
                        let mut credit = ReadCredit::UNLIMITED;
                        link.read(&mut credit, 16, &mut out);
                    }
                }
                _ => {
                    // The server sends a small text.
                    let s = sock(&mut link);
                    s.input.get_mut().extend_from_slice(&[0x81, 0x01, b'z']);
                    let mut credit = ReadCredit::UNLIMITED;
                    link.read(&mut credit, 16, &mut out);
                }
            }
            let fr = frames(&sock(&mut link).written);
            let data_done = fr.iter().filter(|f| matches!(f.0 & 0x0F, 0..=2)).count();
            for e in &out {
                if let TransportEvent::SendWritten(id) = e {
                    let k = order[&id.get()];
                    assert!(
                        k < data_done,
                        "seed {seed} step {step}: send {} (data frame #{k}) reported written with only {data_done} data frames on the socket ({} bytes); events {out:?}",
                        id.get(),
                        sock(&mut link).written.len()
                    );
                    reported.push(id.get());
                }
                if matches!(e, TransportEvent::Error(_) | TransportEvent::Closed) {
                    return;
                }
            }
        }
        let mut sorted = reported.clone();
        sorted.sort();
        assert_eq!(reported, sorted, "seed {seed}: in order");
    }

    #[test]
    fn sends_are_never_reported_before_their_frame_is_on_the_socket() {
        for seed in 0..400 {
            run(seed, Encoder::default());
        }
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn compressed_sends_are_never_reported_before_their_frame_is_on_the_socket() {
        for seed in 0..200 {
            run(
                seed,
                Encoder::deflating_for_tests(if seed % 2 == 0 { 0 } else { 100 }),
            );
        }
    }
}

/// A second reviewer's randomized check of the whole write path: every frame parsed off
/// the socket and unmasked, payloads compared byte for byte with what was sent (sizes
/// around [`DIRECT_FROM`] and [`PIECE`], random contents), pings of ours in order, the
/// server's pings answered in between (never inside another frame), closes both ways, the
/// socket's room random (down to one byte); and after every step a link whose wire holds
/// bytes still asks for a flush.
#[cfg(all(test, feature = "deflate"))]
mod review_randomized {
    use super::tests::{Rng, Scripted, frames, parse, server_pings, socket as sock};
    use super::*;

    fn holds_bytes<S>(wire: &Wire<S>) -> bool {
        !wire.queue.is_empty() || wire.ready_at < wire.ready.len()
    }

    fn run(seed: u64, compress: Option<usize>) {
        let mut rng = Rng::seeded(seed);
        let wire = Wire::new(
            Stream::Plain(Scripted::default()),
            Incoming::new(Bytes::new(), None),
        );
        #[cfg(feature = "deflate")]
        let encoder = match compress {
            Some(t) => Encoder::deflating_for_tests(t),
            None => Encoder::default(),
        };
        #[cfg(not(feature = "deflate"))]
        let encoder = {
            let _ = compress;
            Encoder::default()
        };
        let mut link = Link::new(
            ConnId::from_raw(1),
            wire,
            WebSocketConfig::default(),
            encoder,
        );
        // A bound on each flush, for a third of the seeds (drawn apart, so the seeds' other
        // draws stay as they were).
        let pass = match Rng::seeded(!seed).below(6) {
            0 => Some(1 + Rng::seeded(seed ^ 0x5A55).below(100) as usize),
            1 => Some(1 + Rng::seeded(seed ^ 0x5A55).below(300_000) as usize),
            _ => None,
        };
        if let Some(pass) = pass {
            link.set_write_pass(pass);
        }
        // What must appear on the socket, in order, pongs left out: (opcode, payload).
        let mut expected: Vec<(u8, Vec<u8>)> = Vec::new();
        // Send id -> index of its frame among the expected ones.
        let mut frame_of: std::collections::HashMap<u64, usize> = Default::default();
        let mut reported: Vec<u64> = Vec::new();
        let mut next_id = 1u64;
        let sizes = [
            0usize,
            1,
            125,
            126,
            65_535,
            65_536,
            65_537,
            65_539,
            65_536 * 2 - 1,
            65_536 * 2 + 3,
            200_003,
            300_001,
        ];
        let mut ended = false;
        let steps = 120;
        for step in 0..steps {
            let mut out = Vec::new();
            let can_write = !link.gone && link.ctx.can_write();
            let written_before = sock(&mut link).written.len();
            match rng.below(12) {
                0..=3 => {
                    let size = if rng.below(3) != 0 {
                        sizes[rng.below(sizes.len() as u64) as usize]
                    } else {
                        rng.below(70_000) as usize
                    };
                    let id = next_id;
                    next_id += 1;
                    let text = rng.below(2) == 0;
                    let mut r = Rng::seeded(id);
                    let bytes: Vec<u8> = (0..size)
                        .map(|_| {
                            let b = r.next() as u8;
                            if text { b'a' + b % 26 } else { b }
                        })
                        .collect();
                    let message = if text {
                        Message::text(String::from_utf8(bytes.clone()).unwrap())
                    } else {
                        Message::binary(bytes.clone())
                    };
                    link.send(SendId::from_raw(id), message, &mut out);
                    let taken = link.pending.back().is_some_and(|p| p.0.get() == id)
                        || out
                            .iter()
                            .any(|e| matches!(e, TransportEvent::SendWritten(i) if i.get() == id));
                    assert_eq!(taken, can_write, "seed {seed} step {step}: taken");
                    if taken {
                        frame_of.insert(id, expected.len());
                        expected.push((if text { 1 } else { 2 }, bytes));
                    }
                }
                4 => {
                    let p = rng.below(126) as usize;
                    let payload = vec![b'P'; p];
                    link.ping(Bytes::from(payload.clone()), &mut out);
                    if can_write {
                        expected.push((9, payload));
                    }
                }
                5 | 6 => {
                    sock(&mut link).room = match rng.below(6) {
                        0 => None,
                        1 => Some(0),
                        2 => Some(1 + rng.below(7) as usize),
                        3 => Some(65_536 + rng.below(16) as usize - 8),
                        _ => Some(rng.below(5000) as usize),
                    };
                }
                7 | 8 => link.flush(&mut out),
                9 => {
                    server_pings(&mut link, &mut rng, &mut out);
                }
                10 if step > steps / 2 && rng.below(3) == 0 => {
                    if rng.below(2) == 0 {
                        if !link.close_sent && !link.gone {
                            let reason = "r".repeat(rng.below(60) as usize);
                            link.close(&CloseRequest::new(Some(1000), &reason).unwrap(), &mut out);
                        }
                    } else {
                        sock(&mut link)
                            .input
                            .get_mut()
                            .extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]);
                        let mut credit = ReadCredit::UNLIMITED;
                        link.read(&mut credit, 16, &mut out);
                    }
                }
                _ => {
                    sock(&mut link)
                        .input
                        .get_mut()
                        .extend_from_slice(&[0x81, 0x01, b'z']);
                    let mut credit = ReadCredit::UNLIMITED;
                    link.read(&mut credit, 16, &mut out);
                }
            }
            if let Some(pass) = pass {
                // A flush or a read writes a pass at most; a send writes what is left of
                // the last one's.
                let wrote = sock(&mut link).written.len() - written_before;
                assert!(
                    wrote <= 2 * pass,
                    "seed {seed} step {step}: {wrote} bytes in one step"
                );
            }
            // The whole frames so far; their payloads are checked once, at the end.
            let frames = frames(&sock(&mut link).written);
            let data_done = frames.iter().filter(|f| f.0 & 0x0F <= 2).count();
            for e in &out {
                if let TransportEvent::SendWritten(id) = e {
                    let k = frame_of[&id.get()];
                    let data_before = expected[..=k].iter().filter(|f| f.0 <= 2).count();
                    assert!(
                        data_before <= data_done,
                        "seed {seed} step {step}: send {} reported written before its frame is whole",
                        id.get()
                    );
                    reported.push(id.get());
                }
                if matches!(e, TransportEvent::Closed) {
                    ended = true;
                }
            }
            if ended {
                break;
            }
            if holds_bytes(link.wire()) {
                assert!(
                    link.needs_flush() || link.wants_write(),
                    "seed {seed} step {step}: the wire holds bytes and the link asks for no flush"
                );
            }
        }
        if !ended {
            // Drain: the socket takes everything now.
            sock(&mut link).room = None;
            let mut out = Vec::new();
            let mut rounds = 0;
            let most = 10 + pass.map_or(0, |pass| link.handed as usize / pass);
            while link.needs_flush() && !link.gone {
                link.flush(&mut out);
                rounds += 1;
                assert!(rounds < most, "seed {seed}: never flushed");
                assert!(
                    link.write_spent() || !link.wants_write(),
                    "seed {seed}: a socket taking everything said to be full"
                );
            }
            for e in &out {
                if let TransportEvent::SendWritten(id) = e {
                    reported.push(id.get());
                }
            }
            assert!(
                !holds_bytes(link.wire()),
                "seed {seed}: bytes left in the wire"
            );
            assert_eq!(link.wire().ready.capacity(), 0, "seed {seed}: a piece kept");
            let mut sorted = reported.clone();
            sorted.sort();
            let all: Vec<u64> = {
                let mut v: Vec<u64> = frame_of.keys().copied().collect();
                v.sort();
                v
            };
            assert_eq!(
                sorted, all,
                "seed {seed}: every send taken reported written once"
            );
        }
        assert!(
            reported.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: reported in order {reported:?}"
        );
        // The frames on the socket: ours in order, pongs anywhere between them, one close
        // at most, last.
        let written = std::mem::take(&mut sock(&mut link).written);
        let frames = parse(&written);
        let end = frames.last().map_or(0, |f| f.2);
        if !ended {
            assert_eq!(end, written.len(), "seed {seed}: a partial frame left");
        }
        let mut inflate = flate2::Decompress::new_with_window_bits(false, 15);
        let mut seen: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut closes = 0;
        for (i, (b0, payload, _)) in frames.iter().enumerate() {
            let op = b0 & 0x0F;
            assert_eq!(b0 & 0x80, 0x80, "seed {seed}: FIN");
            match op {
                0xA => continue,
                0x8 => {
                    closes += 1;
                    assert_eq!(i, frames.len() - 1, "seed {seed}: a frame after the close");
                    continue;
                }
                _ => {}
            }
            let payload = if b0 & 0x40 != 0 {
                let mut input = payload.clone();
                input.extend_from_slice(&[0, 0, 0xff, 0xff]);
                let mut plain = Vec::with_capacity(1 << 20);
                let before = inflate.total_in();
                while ((inflate.total_in() - before) as usize) < input.len() {
                    let at = (inflate.total_in() - before) as usize;
                    plain.reserve(1 << 16);
                    inflate
                        .decompress_vec(&input[at..], &mut plain, flate2::FlushDecompress::Sync)
                        .unwrap();
                }
                plain
            } else {
                payload.clone()
            };
            seen.push((op, payload));
        }
        assert!(closes <= 1);
        let want: Vec<(u8, Vec<u8>)> = if ended {
            expected[..seen.len().min(expected.len())].to_vec()
        } else {
            expected.clone()
        };
        assert_eq!(seen.len(), want.len(), "seed {seed}: frames on the socket");
        for (k, (a, b)) in seen.iter().zip(&want).enumerate() {
            assert!(
                a.0 == b.0 && a.1 == b.1,
                "seed {seed}: frame {k}: opcode {} len {} on the socket, opcode {} len {} sent",
                a.0,
                a.1.len(),
                b.0,
                b.1.len()
            );
        }
    }

    #[test]
    fn every_frame_reaches_the_socket_once_in_order_and_unmasks_to_what_was_sent() {
        for seed in 0..24 {
            run(seed, None);
        }
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn compressed_frames_reach_the_socket_once_in_order() {
        for seed in 0..12 {
            run(seed, Some(if seed % 2 == 0 { 0 } else { 70_000 }));
        }
    }
}

/// The link over TLS. The randomized check: the server decrypts what the socket took, and
/// no send may be reported written before its frame's plaintext can be decrypted there
/// (rustls holding none of its ciphertext). Then what counts as a sign of life, and what
/// is delivered before a TLS failure.
#[cfg(all(test, feature = "tls"))]
mod review_tls {
    use super::tests::{Rng, Scripted, frames, parse, socket as sock};
    use super::*;
    use crate::upgrade::TlsStream;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};
    use std::sync::Arc;

    fn pair(ca: &wxsocket_test_pki::TestCa) -> (ClientConnection, ServerConnection) {
        let mut roots = RootCertStore::empty();
        roots.add(ca.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
        let mut server = ServerConnection::new(ca.server_config()).unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut r = &buf[..];
            while !r.is_empty() {
                server.read_tls(&mut r).unwrap();
            }
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut r = &buf[..];
            while !r.is_empty() {
                client.read_tls(&mut r).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        (client, server)
    }

    /// Decrypts what the socket took since the last call into `plain`.
    fn server_reads(
        link: &mut Link<Scripted>,
        server: &mut ServerConnection,
        at: &mut usize,
        plain: &mut Vec<u8>,
    ) {
        let written = sock(link).written[*at..].to_vec();
        *at += written.len();
        let mut r = &written[..];
        let mut buf = vec![0u8; 65536];
        while !r.is_empty() {
            server.read_tls(&mut r).unwrap();
            server.process_new_packets().unwrap();
            loop {
                match server.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    /// A link over TLS with `client`, whose handshake is done, on a scripted socket.
    fn tls_link(client: ClientConnection) -> Link<Scripted> {
        let stream = Stream::Tls(Box::new(TlsStream::for_tests(client, Scripted::default())));
        let wire = Wire::new(stream, Incoming::new(Bytes::new(), None));
        Link::new(
            ConnId::from_raw(1),
            wire,
            WebSocketConfig::default(),
            Encoder::default(),
        )
    }

    fn run(seed: u64, ca: &wxsocket_test_pki::TestCa) {
        let mut rng = Rng::seeded(seed);
        let (client, mut server) = pair(ca);
        let mut link = tls_link(client);
        let mut expected: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut frame_of: std::collections::HashMap<u64, usize> = Default::default();
        let mut reported = Vec::new();
        let (mut at, mut plain) = (0usize, Vec::new());
        let sizes = [1usize, 125, 65_535, 65_536, 65_537, 131_075, 200_003];
        let mut next_id = 1u64;
        for step in 0..80 {
            let mut out = Vec::new();
            let can_write = !link.gone && link.ctx.can_write();
            match rng.below(10) {
                0..=3 => {
                    let size = sizes[rng.below(sizes.len() as u64) as usize];
                    let id = next_id;
                    next_id += 1;
                    let mut r = Rng::seeded(id);
                    let bytes: Vec<u8> = (0..size).map(|_| r.next() as u8).collect();
                    link.send(
                        SendId::from_raw(id),
                        Message::binary(bytes.clone()),
                        &mut out,
                    );
                    if can_write {
                        frame_of.insert(id, expected.len());
                        expected.push((2, bytes));
                    }
                }
                4 => {
                    let payload = vec![b'P'; rng.below(126) as usize];
                    link.ping(Bytes::from(payload.clone()), &mut out);
                    if can_write {
                        expected.push((9, payload));
                    }
                }
                5 | 6 => {
                    sock(&mut link).room = match rng.below(4) {
                        0 => None,
                        1 => Some(0),
                        2 => Some(1 + rng.below(40) as usize),
                        _ => Some(rng.below(40_000) as usize),
                    }
                }
                7 | 8 => link.flush(&mut out),
                _ => {
                    // The server pings.
                    let p = rng.below(126) as usize;
                    let mut frame = vec![0x89, p as u8];
                    frame.extend(std::iter::repeat_n(b'q', p));
                    server.writer().write_all(&frame).unwrap();
                    let mut tls = Vec::new();
                    while server.wants_write() {
                        server.write_tls(&mut tls).unwrap();
                    }
                    sock(&mut link).input.get_mut().extend_from_slice(&tls);
                    let mut credit = ReadCredit::UNLIMITED;
                    link.read(&mut credit, 16, &mut out);
                }
            }
            server_reads(&mut link, &mut server, &mut at, &mut plain);
            let frames = frames(&plain);
            let data_done = frames.iter().filter(|f| f.0 & 0x0F <= 2).count();
            for e in &out {
                match e {
                    TransportEvent::SendWritten(id) => {
                        let k = frame_of[&id.get()];
                        let before = expected[..=k].iter().filter(|f| f.0 <= 2).count();
                        assert!(
                            before <= data_done,
                            "seed {seed} step {step}: send {} reported written, its frame not decryptable on the socket",
                            id.get()
                        );
                        reported.push(id.get());
                    }
                    TransportEvent::Error(_) | TransportEvent::Closed => {
                        panic!("seed {seed}: {out:?}")
                    }
                    _ => {}
                }
            }
            let wire = link.wire();
            if !wire.queue.is_empty()
                || wire.ready_at < wire.ready.len()
                || wire.stream.wants_write()
            {
                assert!(
                    link.needs_flush() || link.wants_write(),
                    "seed {seed} step {step}: bytes wait and no flush is asked for"
                );
            }
        }
        sock(&mut link).room = None;
        let mut out = Vec::new();
        for _ in 0..10 {
            if !(link.needs_flush() || link.wire().stream.wants_write()) {
                break;
            }
            link.flush(&mut out);
        }
        assert!(
            !(link.needs_flush() || link.wire().stream.wants_write()),
            "seed {seed}"
        );
        reported.extend(out.iter().filter_map(|e| match e {
            TransportEvent::SendWritten(id) => Some(id.get()),
            _ => None,
        }));
        server_reads(&mut link, &mut server, &mut at, &mut plain);
        let frames = parse(&plain);
        assert_eq!(frames.last().map_or(0, |f| f.2), plain.len(), "seed {seed}");
        let seen: Vec<(u8, Vec<u8>)> = frames
            .into_iter()
            .filter(|f| f.0 & 0x0F != 0xA)
            .map(|f| (f.0 & 0x0F, f.1))
            .collect();
        assert_eq!(seen.len(), expected.len(), "seed {seed}");
        assert!(seen == expected, "seed {seed}: payloads differ");
        let mut all: Vec<u64> = frame_of.keys().copied().collect();
        all.sort();
        assert_eq!(reported, all, "seed {seed}: all reported once, in order");
    }

    #[test]
    fn over_tls_every_frame_arrives_and_no_send_is_reported_early() {
        let ca = wxsocket_test_pki::TestCa::generate("review");
        for seed in 0..16 {
            run(seed, &ca);
        }
    }

    /// Over TLS, plaintext that rustls takes while the socket is full is no sign of life: a
    /// flush still blocked reports no [`TransportEvent::Sending`]; one that gets ciphertext
    /// onto the socket does.
    #[test]
    fn over_tls_only_ciphertext_on_the_socket_is_a_sign_of_life() {
        let ca = wxsocket_test_pki::TestCa::generate("sending");
        let (client, _server) = pair(&ca);
        let mut link = tls_link(client);
        sock(&mut link).room = Some(0);
        let mut out = Vec::new();
        for id in 1..=3 {
            link.send(
                SendId::from_raw(id),
                Message::binary(vec![1; 1000]),
                &mut out,
            );
            link.flush(&mut out);
            assert!(link.wants_write());
        }
        assert_eq!(out, [], "nothing reached the socket");
        sock(&mut link).room = None;
        link.flush(&mut out);
        assert_eq!(out.first(), Some(&TransportEvent::Sending), "{out:?}");
    }

    /// Two frames, then a record that does not decrypt (as a corrupted or forged one does),
    /// all in one socket read: the frames are delivered, in order, one a read, and then the
    /// read fails naming the TLS error, which ends the transport. rustls had decrypted them
    /// before it met the bad record.
    #[test]
    fn the_messages_before_a_record_that_does_not_decrypt_are_delivered() {
        let ca = wxsocket_test_pki::TestCa::generate("bad record");
        let (client, mut server) = pair(&ca);
        server.writer().write_all(b"\x81\x02hi\x82\x03you").unwrap();
        let mut input = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut input).unwrap();
        }
        // Application data, 32 bytes no key encrypted.
        input.extend([0x17, 0x03, 0x03, 0x00, 0x20]);
        input.extend([0x5a; 32]);
        let mut link = tls_link(client);
        sock(&mut link).input = io::Cursor::new(input);
        let mut out = Vec::new();
        let mut end = ReadEnd::Drained;
        for _ in 0..4 {
            // One message a read: the failure waits while reading is paused too.
            end = link.read(&mut ReadCredit::new(1, usize::MAX), 16, &mut out);
            if end == ReadEnd::Stopped {
                break;
            }
        }
        assert_eq!(end, ReadEnd::Stopped, "{out:?}");
        assert!(
            matches!(
                out.as_slice(),
                [
                    TransportEvent::Message(Message::Text(hi)),
                    TransportEvent::Message(Message::Binary(you)),
                    TransportEvent::Error(error),
                    TransportEvent::Closed,
                ] if hi.as_str() == "hi" && &you[..] == b"you"
                    && error.kind == wxsocket_core::TransportErrorKind::Tls
                    && error.message.contains("decrypt")
            ),
            "{out:?}"
        );
    }
}
