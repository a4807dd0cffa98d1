//! The `link` target: an open connection's read and write path
//! ([`wxsocket_wire::link::Link`], what both adapters drive), fed a server's frames in
//! arbitrary pieces between the application's sends, flushes and read credits.
//!
//! The server's side is built from the fuzzer's choices, so what it sent is known: data
//! messages of any length up to 100,000 bytes (text or binary, whole or fragmented), pings
//! between fragments and between messages, and perhaps a close frame at the end. The
//! socket hands over what was fed in the fuzzer's pieces and takes writes up to a room the
//! fuzzer sets. After the steps, everything is fed and read, and everything written is
//! flushed.
//!
//! Checked on every input:
//! - no panic, and no error event (every frame is valid);
//! - every message arrives once, whole, in order; a read hands over no more messages than
//!   its credit allows, and none after the one that used up its bytes;
//! - every ping is answered by a pong with its payload, in order;
//! - every send goes out as one masked frame with its payload, in order, and is reported
//!   written once, never before its frame is whole on the socket;
//! - the server's close frame is reported once, with its code and reason, after every
//!   message, and answered.
//!
//! Long frames among them make the link renew tungstenite's buffers whenever it is idle
//! (`wxsocket_wire::GIVE_BACK_FROM`), which none of this may notice.

use arbitrary::{Arbitrary, Unstructured};
use std::io::{self, Read, Write};
use wxsocket_core::{
    ConnId, ConnectOptions, Handshake, Message, PeerClose, ReadCredit, SendId, SessionConfig,
    TransportEvent,
};
use wxsocket_wire::HandshakeDone;
use wxsocket_wire::link::{Link, ReadEnd};
use wxsocket_wire::upgrade::Stream;

/// The lengths the fuzzer picks from (and adds up to 255 to), around tungstenite's 4 KiB
/// reads, the copy and give-back bounds (32 KiB), the 16-bit length and the read-ahead.
const LENGTHS: [usize; 8] = [0, 100, 4_000, 32_000, 32_768, 65_535, 66_000, 99_000];

#[derive(Debug, Arbitrary)]
struct Case {
    messages: Vec<ServerMessage>,
    /// A close frame (code 1000, reason "bye") after the messages.
    close: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
struct ServerMessage {
    text: bool,
    length: u8,
    extra: u8,
    /// Frames it is cut into (0 and 1: one).
    fragments: u8,
    /// A ping before the message, and between its fragments.
    pings: bool,
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// Hands the socket this many more of the server's bytes (times 512, plus one).
    Feed(u8),
    /// A read of at most `max` messages (at least one), within a credit of `messages`
    /// messages (none: paused) and `kib` KiB (times 4, plus one byte).
    Read {
        max: u8,
        messages: u8,
        kib: u8,
    },
    /// Sends a binary message of one of the lengths, filled with its number.
    Send(u8),
    Flush,
    /// How many bytes each socket write takes from now on (0: none, until changed; 255:
    /// unlimited), times 97.
    Room(u8),
}

/// The socket: what the server sent, handed over as far as fed; what the client wrote.
#[derive(Debug, Default)]
struct Socket {
    input: Vec<u8>,
    fed: usize,
    at: usize,
    written: Vec<u8>,
    room: Option<usize>,
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.fed - self.at);
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room.map_or(buf.len(), |room| room.min(buf.len()));
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A server's (unmasked) frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(fin) << 7 | opcode];
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

/// The client's whole frames in `written` (each must be masked): opcode, FIN, payload.
fn client_frames(written: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = written;
    while rest.len() >= 2 {
        let (b0, b1) = (rest[0], rest[1]);
        assert!(b1 & 0x80 != 0, "a client frame without a mask");
        let (len, at) = match b1 & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => (
                u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if rest.len() < at + 4 + len {
            break;
        }
        let mask = &rest[at..at + 4];
        let payload = (rest[at + 4..at + 4 + len].iter().enumerate())
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        frames.push((b0 & 0x0f, b0 & 0x80 != 0, payload));
        rest = &rest[at + 4 + len..];
    }
    frames
}

/// What the link reported, checked as it comes.
#[derive(Default)]
struct Seen {
    messages: Vec<Message>,
    written: Vec<u64>,
    closed: Option<PeerClose>,
}

impl Seen {
    /// Takes `out`'s events: sends reported written must be whole on the socket.
    fn take(&mut self, out: &mut Vec<TransportEvent>, socket: &Socket, sent: usize) {
        for event in out.drain(..) {
            match event {
                TransportEvent::Message(message) => {
                    assert!(self.closed.is_none(), "a message after the close frame");
                    self.messages.push(message);
                }
                TransportEvent::SendWritten(id) => {
                    let id = id.get();
                    assert_eq!(id, self.written.len() as u64, "written out of order");
                    assert!((id as usize) < sent);
                    let whole = client_frames(&socket.written)
                        .iter()
                        .filter(|(op, _, _)| *op == 0x2)
                        .count();
                    assert!(whole > id as usize, "send {id} reported before its frame");
                    self.written.push(id);
                }
                TransportEvent::PeerClosed(close) => {
                    assert!(self.closed.is_none(), "the close frame reported twice");
                    self.closed = Some(close);
                }
                TransportEvent::Error(error) => panic!("an error on valid frames: {error}"),
                _ => {}
            }
        }
    }
}

/// Checks one input (see the module docs).
pub fn link(data: &[u8]) {
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    // The server's side.
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let mut pings = Vec::new();
    for (n, m) in case.messages.iter().take(24).enumerate() {
        let len = LENGTHS[usize::from(m.length) % LENGTHS.len()] + usize::from(m.extra);
        let payload: Vec<u8> = (0..len).map(|i| b'a' + ((i + n) % 26) as u8).collect();
        let pieces = usize::from(m.fragments.max(1)).min(len.max(1));
        let size = len.div_ceil(pieces).max(1);
        let chunks: Vec<&[u8]> = if len == 0 {
            vec![&[]]
        } else {
            payload.chunks(size).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            if m.pings {
                let ping = format!("ping {n}.{i}").into_bytes();
                input.extend(frame(true, 0x9, &ping));
                pings.push(ping);
            }
            let opcode = match (i, m.text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            input.extend(frame(i + 1 == chunks.len(), opcode, chunk));
        }
        expected.push(if m.text {
            Message::text(String::from_utf8(payload).unwrap())
        } else {
            Message::binary(payload)
        });
    }
    if case.close {
        input.extend(frame(true, 0x8, b"\x03\xe8bye"));
    }

    let request = ConnectOptions::new("ws://fuzz.example/")
        .validate()
        .unwrap();
    let config = wxsocket_wire::websocket_config(&SessionConfig::default());
    let socket = Socket {
        input,
        ..Socket::default()
    };
    let done = HandshakeDone {
        handshake: Handshake::default(),
        tail: Vec::new(),
    };
    let (mut link, _) = Link::open(
        ConnId::from_raw(1),
        Stream::Plain(socket),
        done,
        &request,
        config,
    );
    let mut seen = Seen::default();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    for step in case.steps.iter().take(200) {
        match *step {
            Step::Feed(n) => {
                let s = link.wire_mut().stream.socket_mut();
                s.fed = (s.fed + usize::from(n) * 512 + 1).min(s.input.len());
            }
            Step::Read { max, messages, kib } => {
                let mut credit =
                    ReadCredit::new(usize::from(messages), usize::from(kib) * 4096 + 1);
                let given = credit;
                let before = seen.messages.len();
                let end = link.read(&mut credit, usize::from(max.max(1)), &mut out);
                seen.take(&mut out, link.wire().stream.socket(), sent.len());
                let taken = &seen.messages[before..];
                assert!(taken.len() <= given.messages, "past the credit's messages");
                let mut bytes = 0;
                for (i, message) in taken.iter().enumerate() {
                    assert!(
                        bytes < given.bytes || i == 0,
                        "a message after the credit's bytes were used"
                    );
                    bytes += message.len();
                }
                if given.is_paused() {
                    assert!(taken.is_empty() && end == ReadEnd::Paused, "{end:?}");
                }
            }
            Step::Send(length) if seen.closed.is_none() => {
                let len = LENGTHS[usize::from(length) % LENGTHS.len()] + usize::from(length);
                let payload = vec![sent.len() as u8; len];
                let id = SendId::from_raw(sent.len() as u64);
                sent.push(payload.clone());
                link.send(id, Message::binary(payload), &mut out);
                seen.take(&mut out, link.wire().stream.socket(), sent.len());
            }
            Step::Send(_) => {}
            Step::Flush => {
                link.flush(&mut out);
                seen.take(&mut out, link.wire().stream.socket(), sent.len());
            }
            Step::Room(room) => {
                link.wire_mut().stream.socket_mut().room =
                    (room != 255).then_some(usize::from(room) * 97);
            }
        }
    }

    // Everything fed and read, everything written out.
    {
        let s = link.wire_mut().stream.socket_mut();
        s.fed = s.input.len();
        s.room = None;
    }
    let mut rounds = 0;
    loop {
        let mut credit = ReadCredit::UNLIMITED;
        let end = link.read(&mut credit, 64, &mut out);
        link.flush(&mut out);
        seen.take(&mut out, link.wire().stream.socket(), sent.len());
        if !matches!(end, ReadEnd::Limit | ReadEnd::RepliesOwed) && !link.wants_write() {
            break;
        }
        rounds += 1;
        assert!(rounds < 10_000, "reading never ends");
    }
    assert_eq!(
        seen.messages.len(),
        expected.len(),
        "messages lost or added"
    );
    for (i, (got, want)) in seen.messages.iter().zip(&expected).enumerate() {
        assert!(got == want, "message {i} differs");
    }
    let frames = client_frames(&link.wire().stream.socket().written);
    let pongs: Vec<&Vec<u8>> = (frames.iter())
        .filter(|(op, _, _)| *op == 0xA)
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(pongs, pings.iter().collect::<Vec<_>>(), "pongs");
    let data: Vec<&Vec<u8>> = (frames.iter())
        .filter(|(op, _, _)| *op == 0x2)
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(data.len(), sent.len(), "sends lost or added");
    assert!(
        data.iter().zip(&sent).all(|(a, b)| *a == b),
        "a send differs"
    );
    assert_eq!(
        seen.written.len(),
        sent.len(),
        "a send never reported written"
    );
    if case.close {
        let close = seen.closed.expect("the close frame reported");
        assert_eq!((close.code, close.reason.as_str()), (Some(1000), "bye"));
        assert!(
            frames.iter().any(|(op, _, _)| *op == 0x8),
            "the close frame answered"
        );
    } else {
        assert!(seen.closed.is_none());
    }
}
