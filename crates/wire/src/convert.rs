//! Conversions between the core's types and tungstenite's.

use tungstenite::Message as WsMessage;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use wxsocket_core::{
    CloseRequest, Message, PeerClose, TransportError, TransportErrorKind, TransportEvent,
    Utf8Payload,
};

/// A core message as a tungstenite message, sharing the payload (no copy).
pub fn to_ws(message: Message) -> WsMessage {
    match message {
        Message::Text(t) => {
            // The payload is valid UTF-8 by construction; tungstenite checks again.
            let bytes: bytes::Bytes = t.into();
            WsMessage::Text(tungstenite::Utf8Bytes::try_from(bytes).unwrap_or_default())
        }
        Message::Binary(b) => WsMessage::Binary(b),
        _ => WsMessage::Binary(message.as_bytes().to_vec().into()),
    }
}

/// A close request as a tungstenite close frame.
pub fn close_frame(request: &CloseRequest) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(request.code()),
        reason: request.reason().to_owned().into(),
    }
}

/// A received payload as the application gets it: one shorter than [`crate::COPY_BELOW`]
/// is copied into its own allocation; a longer one is passed on as it is.
///
/// tungstenite hands out each payload as a slice of its read buffer, which holds the
/// frames read with it. While the application holds such a slice (a message waiting in the
/// event queue, or kept for later), the whole buffer stays allocated, and tungstenite
/// cannot reuse it: its next read goes into a new allocation. With 16 KiB messages
/// pipelined through the tokio adapter that was a fresh allocation per message, about one
/// page fault per two messages while the allocator shrank and regrew its heap, and the
/// benchmark row ran at 0.89–0.99 of the plain client (which drops each message at once);
/// with the copy, 1.04–1.24 in the same paired runs. Copying 16 KiB costs well under a
/// microsecond. A payload as long as `COPY_BELOW` or longer was read into a buffer
/// reserved for its frame, so it pins little besides itself.
fn owned(payload: bytes::Bytes) -> bytes::Bytes {
    if payload.len() < crate::COPY_BELOW {
        bytes::Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// What a message read from tungstenite means to the session; `None` for raw frames, which
/// tungstenite never returns from `read`. A payload shorter than [`COPY_BELOW`](crate::COPY_BELOW)
/// is copied out of tungstenite's read buffer, so a message the application keeps pins only
/// its own bytes; longer payloads are passed on as they are.
pub fn from_ws(message: WsMessage) -> Option<TransportEvent> {
    Some(match message {
        WsMessage::Text(t) => {
            let bytes: bytes::Bytes = owned(t.into());
            TransportEvent::Message(Message::Text(Utf8Payload::try_from(bytes).ok()?))
        }
        WsMessage::Binary(b) => TransportEvent::Message(Message::Binary(owned(b))),
        WsMessage::Ping(p) => TransportEvent::Ping(p),
        WsMessage::Pong(p) => TransportEvent::Pong(p),
        WsMessage::Close(frame) => TransportEvent::PeerClosed(match frame {
            Some(f) => PeerClose {
                code: Some(u16::from(f.code)),
                reason: f.reason.as_str().to_owned(),
            },
            None => PeerClose {
                code: None,
                reason: String::new(),
            },
        }),
        WsMessage::Frame(_) => return None,
    })
}

/// Longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Watches the bytes tungstenite reads for the peer's first close frame, to report its code
/// and reason as they were on the wire.
///
/// tungstenite 0.30 hands a received close frame to the application with the code 1002
/// and the reason "Protocol violation" whenever it does not know the code as one a peer
/// may send: the invalid codes (0–999, 1004–1006, 1015, 1016–2999, 5000 and above) but
/// also 1014 (Bad Gateway, RFC 6455 §7.4.2, registered with IANA since). The session
/// then could neither report 1014 (nor retry it when the reconnect policy lists it) nor
/// tell an invalid code, which is a protocol failure (error event, close 1002 not
/// clean), from a peer's own 1002. The watch follows the frame headers of the stream
/// (a few bytes per frame; payloads are skipped, not read) and keeps the payload of the
/// first close frame, the one tungstenite acts on, after which it stops looking.
/// [`CloseWatch::correct`] puts the wire's code and reason back into the session's
/// input.
///
/// ```
/// use wxsocket_core::{PeerClose, TransportEvent};
/// use wxsocket_wire::convert::{CloseWatch, from_ws};
///
/// let mut watch = CloseWatch::default();
/// // A text frame, then a close frame with code 1014 and the reason "gw", in two reads.
/// watch.scan(&mut b"\x81\x02hi\x88\x04\x03".to_owned());
/// let mut second = *b"\xf6gw";
/// watch.scan(&mut second);
/// // tungstenite reads 1000 (and answers with it, not with 1002).
/// assert_eq!(&second, b"\xe8gw");
/// // What tungstenite 0.30 returns for it.
/// let read = tungstenite::Message::Close(Some(tungstenite::protocol::CloseFrame {
///     code: 1002.into(),
///     reason: "Protocol violation".into(),
/// }));
/// let event = watch.correct(from_ws(read).unwrap());
/// let expected = PeerClose { code: Some(1014), reason: "gw".into() };
/// assert_eq!(event, TransportEvent::PeerClosed(expected));
/// ```
#[derive(Debug, Default, Clone)]
pub struct CloseWatch {
    /// The header of the frame being read (at most 14 bytes: 2, 8 of length, 4 of mask).
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The payload of the first close frame, while and after it is read.
    close: Option<Vec<u8>>,
    /// The first close frame was read whole: nothing more to watch.
    done: bool,
}

impl CloseWatch {
    /// Follows `bytes`, the next bytes of the stream tungstenite reads (after the
    /// handshake response; with permessage-deflate, the inflater's output), before
    /// tungstenite parses them.
    ///
    /// A close code 1014 is handed to tungstenite as 1000 (its second byte rewritten; the
    /// first, 0x03, is the same): tungstenite 0.30 would otherwise answer the peer's close
    /// with 1002 "Protocol violation", telling a server that closed for a bad gateway that
    /// it broke the protocol. It answers 1000 with the peer's reason instead, and
    /// [`Self::correct`] still reports 1014 as it was on the wire.
    pub fn scan(&mut self, mut bytes: &mut [u8]) {
        while !bytes.is_empty() && !self.done {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                let unmasked = self.header[1] & 0x80 == 0;
                if let Some(payload) = &mut self.close {
                    let before = payload.len();
                    let room = MAX_CONTROL_PAYLOAD.saturating_sub(before);
                    payload.extend_from_slice(&bytes[..n.min(room)]);
                    if unmasked && before < 2 && payload.len() >= 2 && payload[..2] == [0x03, 0xf6]
                    {
                        bytes[1 - before] = 0xe8;
                    }
                }
                self.remaining -= n as u64;
                bytes = &mut bytes[n..];
                self.done = self.remaining == 0 && self.close.is_some();
                continue;
            }
            // A header: two bytes, then as many more as they announce.
            while self.header_len < self.header_needed() && !bytes.is_empty() {
                let n = (self.header_needed() - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &mut bytes[n..];
            }
            if self.header_len < self.header_needed() {
                return; // the rest of the header comes with the next bytes
            }
            self.header_len = 0;
            self.remaining = match self.header[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
                short => u64::from(short),
            };
            if self.header[0] & 0x0f == 0x8 {
                let capacity = usize::try_from(self.remaining).map_or(0, |n| n.min(125));
                self.close = Some(Vec::with_capacity(capacity));
                self.done = self.remaining == 0;
            }
        }
    }

    /// Length of the current frame's header, as far as its first two bytes tell.
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    /// `event` with the close frame's code and reason as the peer sent them, once the
    /// watch has read the whole frame; anything else is returned as it is.
    pub fn correct(&self, event: TransportEvent) -> TransportEvent {
        match (event, &self.close) {
            (TransportEvent::PeerClosed(_), Some(payload)) if self.done => {
                TransportEvent::PeerClosed(match payload.as_slice() {
                    [hi, lo, reason @ ..] => PeerClose {
                        code: Some(u16::from_be_bytes([*hi, *lo])),
                        // tungstenite has checked that the reason is UTF-8.
                        reason: String::from_utf8_lossy(reason).into_owned(),
                    },
                    _ => PeerClose {
                        code: None,
                        reason: String::new(),
                    },
                })
            }
            (event, _) => event,
        }
    }
}

/// A tungstenite error classified for the session; `None` when it means the connection
/// ended normally (`ConnectionClosed`, `AlreadyClosed`), which the driver reports as
/// [`TransportEvent::Closed`].
pub fn classify(error: &WsError) -> Option<TransportError> {
    let kind = match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => return None,
        WsError::Io(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::deflate::InflateError>())
        {
            // permessage-deflate failed under tungstenite: report it as what it is.
            Some(inflate) => return Some(inflate.clone().into()),
            None => TransportErrorKind::Io,
        },
        WsError::Tls(_) => TransportErrorKind::Tls,
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            TransportErrorKind::MessageTooBig
        }
        WsError::Capacity(_) => TransportErrorKind::Protocol,
        WsError::Utf8(_) => TransportErrorKind::InvalidUtf8,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => TransportErrorKind::Io,
        WsError::Protocol(_) | WsError::AttackAttempt => TransportErrorKind::Protocol,
        WsError::Http(r) => TransportErrorKind::HttpStatus(r.status().as_u16()),
        WsError::WriteBufferFull(_) | WsError::Url(_) | WsError::HttpFormat(_) => {
            TransportErrorKind::Io
        }
    };
    Some(TransportError::new(kind, error.to_string()))
}

/// An IO error during dialling, classified.
pub fn connect_error(error: &std::io::Error, what: &str) -> TransportError {
    #[cfg(feature = "tls")]
    let tls = error.get_ref().is_some_and(|e| e.is::<rustls::Error>());
    #[cfg(not(feature = "tls"))]
    let tls = false;
    let kind = if tls {
        TransportErrorKind::Tls
    } else {
        TransportErrorKind::Connect
    };
    TransportError::new(kind, format!("{what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = to_ws(Message::text("héllo"));
        assert_eq!(t, WsMessage::text("héllo"));
        assert_eq!(
            from_ws(t),
            Some(TransportEvent::Message(Message::text("héllo")))
        );
        let b = to_ws(Message::binary(vec![1, 2]));
        assert_eq!(
            from_ws(b),
            Some(TransportEvent::Message(Message::binary(vec![1, 2])))
        );
        let c = from_ws(WsMessage::Close(None)).unwrap();
        assert_eq!(
            c,
            TransportEvent::PeerClosed(PeerClose {
                code: None,
                reason: String::new()
            })
        );
        let f = close_frame(&CloseRequest::new(Some(4000), "bye").unwrap());
        assert_eq!(u16::from(f.code), 4000);
    }

    /// Whether `inner` lies within `outer`'s bytes.
    fn within(inner: &[u8], outer: &[u8]) -> bool {
        let range = outer.as_ptr_range();
        range.contains(&inner.as_ptr())
    }

    #[test]
    fn short_payloads_are_copied_out_of_the_read_buffer_long_ones_are_not() {
        // A read buffer holding several frames, as tungstenite hands them out.
        let buffer = bytes::Bytes::from(vec![b'x'; 4 * crate::COPY_BELOW]);
        let short = buffer.slice(10..10 + 16 * 1024);
        let Some(TransportEvent::Message(Message::Binary(got))) =
            from_ws(WsMessage::Binary(short.clone()))
        else {
            panic!("a binary message");
        };
        assert_eq!(got, short);
        assert!(
            !within(&got, &buffer),
            "a short payload must not pin the buffer"
        );
        let Some(TransportEvent::Message(text)) = from_ws(WsMessage::Text(
            tungstenite::Utf8Bytes::try_from(buffer.slice(0..32)).unwrap(),
        )) else {
            panic!("a text message");
        };
        assert_eq!(text, Message::text("x".repeat(32)));
        assert!(!within(text.as_bytes(), &buffer));

        let long = buffer.slice(0..crate::COPY_BELOW);
        let Some(TransportEvent::Message(Message::Binary(got))) =
            from_ws(WsMessage::Binary(long.clone()))
        else {
            panic!("a binary message");
        };
        assert_eq!(
            got.as_ptr(),
            long.as_ptr(),
            "a long payload is passed on as it is"
        );
    }

    /// Frames as a server writes them (unmasked unless `mask`).
    fn frame(opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let bit = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(bit | n as u8),
            n if n <= 0xffff => {
                out.push(bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            out.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as it is
        }
        out.extend_from_slice(payload);
        out
    }

    fn tungstenite_close() -> TransportEvent {
        from_ws(WsMessage::Close(Some(CloseFrame {
            code: CloseCode::Protocol,
            reason: "Protocol violation".into(),
        })))
        .unwrap()
    }

    #[test]
    fn close_watch_finds_the_first_close_frame_however_the_bytes_are_split() {
        let mut stream = Vec::new();
        stream.extend(frame(0x1, b"hi", false));
        stream.extend(frame(0x9, b"ping", false));
        stream.extend(frame(0x2, &[7; 300], false)); // 16-bit length
        stream.extend(frame(0x2, &vec![8; 70_000], false)); // 64-bit length
        stream.extend(frame(0x0, b"", true));
        let mut close = 1014u16.to_be_bytes().to_vec();
        close.extend_from_slice("bad gateway é".as_bytes());
        stream.extend(frame(0x8, &close, false));
        stream.extend(frame(0x8, &1000u16.to_be_bytes(), false)); // a second one is ignored
        let expected = TransportEvent::PeerClosed(PeerClose {
            code: Some(1014),
            reason: "bad gateway é".into(),
        });
        let code_at = stream.len() - 4 - close.len();
        for chunk in [1, 2, 3, 7, 125, 4096, stream.len()] {
            let mut read = stream.clone();
            let mut watch = CloseWatch::default();
            let before_end = stream.len() - 4 - close.len() - 1;
            for piece in read[..before_end].chunks_mut(chunk) {
                watch.scan(piece);
            }
            // Until the frame was read whole, the event is left as it is.
            assert_eq!(watch.correct(tungstenite_close()), tungstenite_close());
            for piece in read[before_end..].chunks_mut(chunk) {
                watch.scan(piece);
            }
            // tungstenite reads 1000 for the first close frame's 1014, and nothing else
            // changes.
            assert_eq!(
                read[code_at..code_at + 2],
                1000u16.to_be_bytes(),
                "chunk {chunk}"
            );
            read[code_at + 1] = stream[code_at + 1];
            assert_eq!(read, stream, "chunk {chunk}");
            assert_eq!(
                watch.correct(tungstenite_close()),
                expected,
                "chunk {chunk}"
            );
            // Other input passes unchanged.
            let text = TransportEvent::Message(Message::text("x"));
            assert_eq!(watch.correct(text.clone()), text);
        }
    }

    #[test]
    fn close_watch_reports_a_close_frame_without_a_body_as_no_code() {
        let mut watch = CloseWatch::default();
        watch.scan(&mut frame(0x8, b"", false));
        assert_eq!(
            watch.correct(tungstenite_close()),
            TransportEvent::PeerClosed(PeerClose {
                code: None,
                reason: String::new()
            })
        );
        // Codes outside every range come through as they were sent.
        for code in [0u16, 999, 1004, 1015, 2999, 5000, u16::MAX] {
            let mut watch = CloseWatch::default();
            watch.scan(&mut frame(0x8, &code.to_be_bytes(), false));
            assert_eq!(
                watch.correct(tungstenite_close()),
                TransportEvent::PeerClosed(PeerClose {
                    code: Some(code),
                    reason: String::new()
                })
            );
        }
    }

    #[test]
    fn classifies() {
        assert_eq!(classify(&WsError::ConnectionClosed), None);
        let k = |e: WsError| classify(&e).unwrap().kind;
        assert_eq!(
            k(WsError::Utf8("x".into())),
            TransportErrorKind::InvalidUtf8
        );
        assert_eq!(
            k(WsError::Capacity(CapacityError::MessageTooLong {
                size: 2,
                max_size: 1
            })),
            TransportErrorKind::MessageTooBig
        );
        assert_eq!(
            k(WsError::Protocol(ProtocolError::NonZeroReservedBits)),
            TransportErrorKind::Protocol
        );
        assert_eq!(
            k(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            TransportErrorKind::Io
        );
        assert_eq!(TransportErrorKind::InvalidUtf8.close_code(), 1007);
    }
}
