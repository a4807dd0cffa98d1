//! The `inflate` target: the permessage-deflate read path (`wxsocket_wire::deflate::Inflater`)
//! under a tungstenite client, as the adapters run it.
//!
//! Each input is a well-formed compressed conversation built from arbitrary messages
//! (compressed or not, fragmented at arbitrary points, control frames between fragments,
//! context takeover on or off), followed by arbitrary raw bytes, fed in arbitrary pieces:
//! - the well-formed part must come out exactly as sent, except that a message larger than
//!   the limit must end the stream with `MessageTooBig` (never allocate its inflated size);
//! - whatever follows must never panic or hang, and once the inflater fails it stays
//!   failed;
//! - the output of every piece stays within DEFLATE's maximum expansion of that piece
//!   (1032:1, plus frame headers): the inflater never holds more than one piece's worth,
//!   however many messages the piece completes.
//!
//! Every input runs twice: with the pieces handed to `feed`, and read through `read_from`
//! (as the adapters read), where the inflater inflates what it read a frame at a time and
//! must never hold more than its bound (16 KiB + 2 × 128 KiB) however compressible the data.
//! There the frame watch (`wxsocket_wire::convert::FrameWatch`) follows the output too, as
//! the adapters' read path does, and must find no invalid UTF-8 before the garbage.

use arbitrary::{Arbitrary, Unstructured};
use std::io::{self, Read, Write};
use tungstenite::Message as WsMessage;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use wxsocket_core::{DeflateParams, Message, TransportErrorKind};
use wxsocket_wire::convert::{FrameWatch, classify};
use wxsocket_wire::deflate::{Compressor, Inflater};

/// DEFLATE's largest expansion (a 258-byte match in under 2 bits is 1032:1), with room
/// for the frame headers the inflater writes.
const MAX_EXPANSION: usize = 1100;
/// What an inflater read through `read_from` holds at most, at any time: its 16 KiB read
/// buffer, a scratch and an output buffer of at most 128 KiB each.
const READER_BOUND: usize = (16 << 10) + 2 * (128 << 10);

#[derive(Debug, Arbitrary)]
struct Case {
    no_context_takeover: bool,
    /// The agreed `server_max_window_bits`: 9 to 15 (the value modulo 7, plus 9).
    window_bits: u8,
    /// The limit, in bytes (small, so the fuzzer reaches it).
    max: u16,
    messages: Vec<Msg>,
    /// Piece sizes the bytes are fed in (cycled; 0 counts as 1, and read through
    /// `read_from` it is a socket with nothing to read now: `WouldBlock`, after which the
    /// inflater has let its buffers go).
    pieces: Vec<u8>,
    garbage: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct Msg {
    text: bool,
    compressed: bool,
    /// Payload: `repeat` copies of `unit` (so it compresses, sometimes far below its size).
    unit: Vec<u8>,
    repeat: u8,
    /// Fragment boundaries, as fractions of the frame payload (one frame when empty).
    cuts: Vec<u8>,
    /// A ping between every two fragments.
    pings: bool,
}

/// The server's frames for the case's messages, and what tungstenite must read from them,
/// each with the index of the message it belongs to (pings belong to the message whose
/// fragments they interrupt).
fn conversation(case: &Case) -> (Vec<u8>, Vec<(usize, WsMessage)>) {
    let params = params(case);
    let mut compressor = Compressor::server(&params, 0);
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for (index, m) in case.messages.iter().take(16).enumerate() {
        let mut payload: Vec<u8> = m
            .unit
            .iter()
            .copied()
            .cycle()
            .take(m.unit.len() * m.repeat as usize)
            .collect();
        let message = if m.text {
            payload = String::from_utf8_lossy(&payload).into_owned().into_bytes();
            Message::text(String::from_utf8(payload.clone()).unwrap_or_default())
        } else {
            Message::binary(payload.clone())
        };
        let opcode = OpCode::Data(if m.text { Data::Text } else { Data::Binary });
        let (body, rsv1) = if m.compressed {
            match compressor.encode(message) {
                WsMessage::Frame(f) => (f.into_payload().to_vec(), true),
                _ => unreachable!("threshold 0 compresses every message"),
            }
        } else {
            (payload.clone(), false)
        };
        let mut cuts: Vec<usize> = m
            .cuts
            .iter()
            .take(8)
            .map(|c| body.len() * *c as usize / 255)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut start = 0;
        let ends: Vec<usize> = cuts.into_iter().chain([body.len()]).collect();
        for (i, end) in ends.iter().enumerate() {
            let end = (*end).max(start);
            let fin = i == ends.len() - 1;
            let op = if i == 0 {
                opcode
            } else {
                OpCode::Data(Data::Continue)
            };
            let mut f = Frame::message(body[start..end].to_vec(), op, fin);
            f.header_mut().rsv1 = rsv1 && i == 0;
            f.format(&mut wire).unwrap();
            if !fin && m.pings {
                Frame::ping(vec![i as u8]).format(&mut wire).unwrap();
                expected.push((index, WsMessage::Ping(vec![i as u8].into())));
            }
            start = end;
        }
        // Pings between the fragments are read before the message they interrupt.
        expected.push((
            index,
            if m.text {
                WsMessage::text(String::from_utf8(payload).unwrap_or_default())
            } else {
                WsMessage::binary(payload)
            },
        ));
    }
    (wire, expected)
}

/// What tungstenite reads: the inflater's output over the input, fed in pieces, or read
/// through it in pieces (`reader`).
struct Feed {
    reader: bool,
    /// How many input bytes are the well-formed conversation (the garbage follows).
    well_formed: usize,
    watch: FrameWatch,
    input: Vec<u8>,
    at: usize,
    pieces: Vec<usize>,
    turn: usize,
    inflater: Inflater,
    out: Vec<u8>,
    out_at: usize,
    failed: Option<wxsocket_wire::deflate::InflateError>,
}

/// The socket under an inflater read through `read_from`: each read returns the next
/// piece (or as much of it as fits).
struct Pieces<'a> {
    input: &'a [u8],
    at: &'a mut usize,
    pieces: &'a [usize],
    turn: &'a mut usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let step = self.pieces[*self.turn % self.pieces.len()];
        *self.turn += 1;
        if step == 0 && *self.at < self.input.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let end = (*self.at + step.min(buf.len())).min(self.input.len());
        let n = end - *self.at;
        buf[..n].copy_from_slice(&self.input[*self.at..end]);
        *self.at = end;
        Ok(n)
    }
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reader {
            let mut socket = Pieces {
                input: &self.input,
                at: &mut self.at,
                pieces: &self.pieces,
                turn: &mut self.turn,
            };
            let read = self.inflater.read_from(&mut socket, buf);
            assert!(
                self.inflater.retained() <= READER_BOUND,
                "the inflater holds {} bytes",
                self.inflater.retained()
            );
            if let Ok(n) = read
                && self.watch.scan(&mut buf[..n]).is_some()
            {
                assert!(
                    self.at > self.well_formed,
                    "a fault (invalid UTF-8, a bad frame length) found in the well-formed messages"
                );
            }
            return read;
        }
        while self.out_at == self.out.len() {
            if let Some(e) = self.failed.take() {
                return Err(e.into());
            }
            if self.at == self.input.len() {
                return Ok(0);
            }
            let step = self.pieces[self.turn % self.pieces.len()];
            self.turn += 1;
            let end = (self.at + step).min(self.input.len());
            let piece = &self.input[self.at..end];
            self.at = end;
            self.out.clear();
            self.out_at = 0;
            let fed = self.inflater.feed(piece);
            self.inflater.drain_output(&mut self.out);
            assert!(
                self.out.len() <= MAX_EXPANSION * piece.len() + 1024,
                "{} bytes out of {} in",
                self.out.len(),
                piece.len()
            );
            if let Err(e) = fed {
                assert!(
                    self.inflater.feed(b"\x81\x00").is_err(),
                    "a failed inflater stays failed"
                );
                if self.out.is_empty() {
                    return Err(e.into());
                }
                // Serve what came before the failure first; the error comes next time.
                self.at = self.input.len();
                self.input.clear();
                self.failed = Some(e);
            }
        }
        let n = (self.out.len() - self.out_at).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
        self.out_at += n;
        Ok(n)
    }
}

impl Write for Feed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The agreement of `case`: the server's context takeover and window.
fn params(case: &Case) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: case.no_context_takeover,
        server_max_window_bits: 9 + case.window_bits % 7,
        ..DeflateParams::default()
    }
}

/// Checks the permessage-deflate read path on one input (see the module docs).
pub fn inflate(data: &[u8]) {
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    check(&case, false);
    check(&case, true);
}

/// Checks one case, fed to the inflater or read through it (`reader`).
fn check(case: &Case, reader: bool) {
    let max = case.max as usize + 1;
    let (mut wire, expected) = conversation(case);
    let well_formed = wire.len();
    wire.extend_from_slice(&case.garbage);
    let params = params(case);
    // Read through `read_from`, a 0 is a `WouldBlock`; fed, it counts as 1.
    let mut pieces: Vec<usize> = case
        .pieces
        .iter()
        .map(|p| {
            if reader {
                *p as usize
            } else {
                (*p as usize).max(1)
            }
        })
        .collect();
    if pieces.iter().all(|p| *p == 0) {
        pieces.push(well_formed.max(1));
    }
    let feed = Feed {
        reader,
        well_formed,
        watch: FrameWatch::default(),
        input: wire,
        at: 0,
        pieces,
        turn: 0,
        inflater: Inflater::new(&params, max),
        out: Vec::new(),
        out_at: 0,
        failed: None,
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut ws = WebSocket::from_raw_socket(feed, Role::Client, Some(config));
    let mut read = Vec::new();
    let error = loop {
        match ws.read() {
            Ok(m) => read.push(m),
            // The socket had nothing this time: read again, as an adapter does when it is
            // readable again.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                assert_eq!(
                    ws.get_ref().inflater.retained(),
                    0,
                    "buffers kept while idle"
                );
            }
            Err(e) => break e,
        }
    };
    // The well-formed part comes out as sent, up to the first message over the limit (of
    // which nothing is certain: it may fail before or after a ping between its fragments).
    let too_big = expected
        .iter()
        .find(|(_, m)| !matches!(m, WsMessage::Ping(_)) && m.len() > max)
        .map(|(index, _)| *index);
    let must: Vec<WsMessage> = expected
        .into_iter()
        .filter(|(index, _)| too_big.is_none_or(|big| *index < big))
        .map(|(_, m)| m)
        .collect();
    assert!(
        read.len() >= must.len() && read[..must.len()] == must[..],
        "read {read:?}\nexpected {must:?}"
    );
    if too_big.is_some() {
        assert!(
            read[must.len()..]
                .iter()
                .all(|m| matches!(m, WsMessage::Ping(_))),
            "nothing but its pings after the message over the limit: {read:?}"
        );
        let kind = classify(&error).map(|e| e.kind);
        assert_eq!(kind, Some(TransportErrorKind::MessageTooBig), "{error:?}");
    } else if case.garbage.is_empty() {
        assert_eq!(read.len(), must.len(), "{read:?}");
    }
}
