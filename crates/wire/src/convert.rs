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

/// A received payload as the application gets it: one shorter than [`crate::READ_BUFFER`]
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
/// microsecond. A payload as long as the read buffer or longer was read into a buffer
/// reserved for its frame, so it pins little besides itself.
fn owned(payload: bytes::Bytes) -> bytes::Bytes {
    if payload.len() < crate::READ_BUFFER {
        bytes::Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// What a message read from tungstenite means to the session; `None` for raw frames, which
/// tungstenite never returns from `read`. A payload shorter than [`READ_BUFFER`](crate::READ_BUFFER)
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
        let buffer = bytes::Bytes::from(vec![b'x'; 4 * crate::READ_BUFFER]);
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

        let long = buffer.slice(0..crate::READ_BUFFER);
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
