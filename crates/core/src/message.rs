//! Application messages: text (always valid UTF-8) or binary, both over [`Bytes`] so the core
//! never copies a payload.

use bytes::Bytes;
use std::fmt;

/// A UTF-8 payload stored as [`Bytes`]; the only ways to build one check the encoding.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Payload(Bytes);

impl Utf8Payload {
    /// Wraps a static string without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Construction guarantees UTF-8; this check cannot fail and keeps the crate free of
        // `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The encoded bytes (a cheap reference-counted clone).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Utf8Payload> for Bytes {
    fn from(p: Utf8Payload) -> Bytes {
        p.0
    }
}

impl From<String> for Utf8Payload {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Payload {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<Bytes> for Utf8Payload {
    type Error = std::str::Utf8Error;
    fn try_from(b: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&b)?;
        Ok(Self(b))
    }
}

impl fmt::Debug for Utf8Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One WebSocket data message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Message {
    /// A text message; the payload is valid UTF-8.
    Text(Utf8Payload),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<Utf8Payload>) -> Self {
        Message::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Message::Binary(b.into())
    }

    /// Payload length in bytes; what counts toward the queue and buffer bounds.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload bytes (text as UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// The text of a text message; `None` for a binary one.
    ///
    /// ```
    /// # use wxsocket_core::Message;
    /// assert_eq!(Message::text("hi").as_text(), Some("hi"));
    /// assert_eq!(Message::binary(vec![1, 2]).as_text(), None);
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// The text of a text message as a `String` (one copy of the payload); `None` for a
    /// binary one.
    ///
    /// ```
    /// # use wxsocket_core::Message;
    /// assert_eq!(Message::text("hi").into_text().as_deref(), Some("hi"));
    /// assert_eq!(Message::binary(vec![1, 2]).into_text(), None);
    /// ```
    pub fn into_text(self) -> Option<String> {
        self.as_text().map(str::to_owned)
    }
}

/// Text as it is; binary summarised as its length and (up to 16) first bytes in hex, so a
/// message can be printed whatever it holds.
///
/// ```
/// # use wxsocket_core::Message;
/// assert_eq!(Message::text("hello").to_string(), "hello");
/// assert_eq!(Message::binary(vec![0xde, 0xad]).to_string(), "<binary, 2 bytes: dead>");
/// ```
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(t) => f.write_str(t.as_str()),
            Message::Binary(b) => {
                write!(f, "<binary, {} bytes", b.len())?;
                if !b.is_empty() {
                    f.write_str(": ")?;
                    for byte in b.iter().take(16) {
                        write!(f, "{byte:02x}")?;
                    }
                    if b.len() > 16 {
                        f.write_str("…")?;
                    }
                }
                f.write_str(">")
            }
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::Binary(Bytes::from(v))
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_always_utf8() {
        let ok = Utf8Payload::try_from(Bytes::from_static("héllo".as_bytes())).unwrap();
        assert_eq!(ok.as_str(), "héllo");
        for bad in [&b"\xff"[..], b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf"] {
            assert!(
                Utf8Payload::try_from(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
        let m = Message::text(ok.clone());
        assert!(m.is_text());
        assert_eq!(m.as_bytes(), "héllo".as_bytes());
    }

    #[test]
    fn the_small_accessors_say_what_they_hold() {
        let text = Utf8Payload::from("héllo");
        assert!(!text.is_empty());
        assert!(Utf8Payload::default().is_empty());
        assert_eq!(text.to_string(), "héllo");
        assert_eq!(Bytes::from(text), Bytes::from_static("héllo".as_bytes()));
        assert!(Message::text("").is_empty() && Message::binary(vec![]).is_empty());
        assert!(!Message::text("x").is_empty() && !Message::binary(vec![0]).is_empty());
        assert!(!Message::binary(vec![1]).is_text());
    }

    #[test]
    fn a_binary_message_prints_its_first_16_bytes_and_marks_the_rest() {
        let sixteen = Message::binary(vec![0xab; 16]).to_string();
        assert_eq!(sixteen, format!("<binary, 16 bytes: {}>", "ab".repeat(16)));
        let seventeen = Message::binary(vec![0xab; 17]).to_string();
        assert_eq!(
            seventeen,
            format!("<binary, 17 bytes: {}…>", "ab".repeat(16))
        );
        assert_eq!(Message::binary(vec![]).to_string(), "<binary, 0 bytes>");
    }
}
