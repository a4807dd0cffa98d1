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

/// What a message read from tungstenite means to the session; `None` for raw frames, which
/// tungstenite never returns from `read`.
pub fn from_ws(message: WsMessage) -> Option<TransportEvent> {
    Some(match message {
        WsMessage::Text(t) => {
            let bytes: bytes::Bytes = t.into();
            TransportEvent::Message(Message::Text(Utf8Payload::try_from(bytes).ok()?))
        }
        WsMessage::Binary(b) => TransportEvent::Message(Message::Binary(b)),
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
    let kind = match error.get_ref().map(|e| e.is::<rustls::Error>()) {
        Some(true) => TransportErrorKind::Tls,
        _ => TransportErrorKind::Connect,
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
