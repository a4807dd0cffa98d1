//! What both adapters log through `tracing`, written once so that a log reads the same
//! whichever adapter wrote it: the same target (`wxsocket`), the same messages and the same
//! fields, at the same points of a connection's life.
//!
//! - `debug`: an action carried out (`dial` with the URL, `close` with the code, `abort`,
//!   `reading resumes`), `dial failed` with the error, `open` with the local address and
//!   `TCP_NODELAY`, `reading paused`, `read failed` / `write failed` with
//!   the error, `transport gone`.
//! - `trace`: each send and ping handed to a connection.
//!
//! Every record carries `conn`, the connection's id, as its events do. A password in a URL
//! is logged as `***`, and the values of the query parameters a transcript leaves out by
//! default (`token`, `access_token`, `key`, …
//! [`QUERY_DEFAULTS`](wxsocket_core::transcript::QUERY_DEFAULTS)) as `<redacted>`, so a
//! debug log shipped elsewhere carries no credential of the URL. Filter on the
//! target, e.g. `RUST_LOG=wxsocket=debug` with `tracing-subscriber`'s env filter.

use crate::client::SocketInfo;
use std::fmt::Display;
use tracing::Span;
use url::Url;
use wxsocket_core::transcript::Redaction;
use wxsocket_core::{Action, ConnId};

/// The target of every record in this module.
pub const TARGET: &str = "wxsocket";

/// The span of connection `conn` to `url` (level `debug`): the adapters run everything
/// they do for the connection inside it, so a subscriber that shows spans puts the URL on
/// every record of the connection.
pub fn connection_span(conn: ConnId, url: &Url) -> Span {
    tracing::debug_span!(target: TARGET, "connection", %conn, url = %Logged(url))
}

/// A URL as the log shows it: a password in it is replaced by `***`, and the values of the
/// usual token query parameters by `<redacted>` (as a transcript writes them by default).
struct Logged<'a>(&'a Url);

impl Display for Logged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut url = Redaction::default().url(self.0);
        if url.password().is_some() {
            let _ = url.to_mut().set_password(Some("***"));
        }
        Display::fmt(&url, f)
    }
}

/// An action the driver is about to carry out.
pub fn action(action: &Action) {
    match action {
        Action::Dial { conn, request } => {
            tracing::debug!(target: TARGET, %conn, url = %Logged(&request.url), "dial");
        }
        Action::Send { conn, id, message } => {
            tracing::trace!(target: TARGET, %conn, %id, len = message.len(), "send");
        }
        Action::Ping { conn, payload } => {
            tracing::trace!(target: TARGET, %conn, len = payload.len(), "ping");
        }
        Action::Close { conn, frame } => {
            tracing::debug!(target: TARGET, %conn, code = frame.code(), "close");
        }
        Action::Abort { conn } => tracing::debug!(target: TARGET, %conn, "abort"),
        Action::ResumeReading { conn } => {
            tracing::debug!(target: TARGET, %conn, "reading resumes");
        }
        other => tracing::debug!(target: TARGET, ?other, "action not understood by this driver"),
    }
}

/// The dial of `conn` failed (DNS, TCP, proxy, TLS or the handshake).
pub fn dial_failed(conn: ConnId, error: &impl Display) {
    tracing::debug!(target: TARGET, %conn, %error, "dial failed");
}

/// `conn` completed its opening handshake on `socket`.
pub fn opened(conn: ConnId, socket: &SocketInfo) {
    tracing::debug!(
        target: TARGET,
        %conn,
        local = %socket.local_addr,
        nodelay = socket.nodelay,
        "open"
    );
}

/// The driver stopped reading `conn`: the application has not taken its messages (the
/// core's receive bound is reached).
pub fn reading_paused(conn: ConnId) {
    tracing::debug!(target: TARGET, %conn, "reading paused");
}

/// Reading `conn` failed; the close frame the core asked for follows, if it can be sent.
pub fn read_failed(conn: ConnId, error: &impl Display) {
    tracing::debug!(target: TARGET, %conn, %error, "read failed");
}

/// Writing to `conn` failed; the connection is lost.
pub fn write_failed(conn: ConnId, error: &impl Display) {
    tracing::debug!(target: TARGET, %conn, %error, "write failed");
}

/// `conn`'s socket is closed and released.
pub fn transport_gone(conn: ConnId) {
    tracing::debug!(target: TARGET, %conn, "transport gone");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_and_the_usual_tokens_in_a_logged_url_are_hidden() {
        let url = Url::parse("wss://ann:s3cret@example.com:8443/chat?room=1").unwrap();
        assert_eq!(
            Logged(&url).to_string(),
            "wss://ann:***@example.com:8443/chat?room=1"
        );
        let url = Url::parse("ws://example.com/chat").unwrap();
        assert_eq!(Logged(&url).to_string(), "ws://example.com/chat");
        let url = Url::parse("wss://ann:s3cret@h/ws?Access_Token=abc&room=1&sig=x").unwrap();
        assert_eq!(
            Logged(&url).to_string(),
            "wss://ann:***@h/ws?Access_Token=%3Credacted%3E&room=1&sig=%3Credacted%3E"
        );
    }
}
