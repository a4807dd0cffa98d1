//! Close codes and reasons: what an application may send (RFC 6455 §7.4) and what
//! a close event reports.

use crate::error::CloseError;

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The peer is going away (server shutdown, page navigated away).
pub const GOING_AWAY: u16 = 1001;
/// The peer violated the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Reported when the peer's close frame carried no code; never sent.
pub const NO_STATUS: u16 = 1005;
/// Reported when the connection ended without a close handshake; never sent.
pub const ABNORMAL: u16 = 1006;
/// A text message was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A message exceeded the maximum size.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Longest close reason in UTF-8 bytes (a control frame holds 125 bytes, 2 are the code).
pub const MAX_REASON_BYTES: usize = 123;

/// A validated close request from the application: code 1000 or 3000–4999, reason at most
/// [`MAX_REASON_BYTES`] UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    code: u16,
    reason: String,
}

impl CloseRequest {
    /// Checks a code and reason; `None` for the code means 1000.
    pub fn new(code: Option<u16>, reason: impl Into<String>) -> Result<Self, CloseError> {
        let code = code.unwrap_or(NORMAL);
        if code != NORMAL && !(3000..=4999).contains(&code) {
            return Err(CloseError::InvalidCode(code));
        }
        let reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            return Err(CloseError::ReasonTooLong(reason.len()));
        }
        Ok(Self { code, reason })
    }

    /// A normal close (1000) with no reason.
    pub fn normal() -> Self {
        Self {
            code: NORMAL,
            reason: String::new(),
        }
    }

    /// Built by the core itself for codes the application may not send (1002, 1007, …).
    pub(crate) fn internal(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code,
            reason: reason[..end].to_owned(),
        }
    }

    /// The close code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The close reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4): the defined codes
/// except the ones reserved for reporting (1004, 1005, 1006, 1015), and 3000–4999.
pub fn is_valid_from_peer(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close frame as the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClose {
    /// The code, `None` when the frame had no body (reported as 1005).
    pub code: Option<u16>,
    /// The reason, empty when none.
    pub reason: String,
}
