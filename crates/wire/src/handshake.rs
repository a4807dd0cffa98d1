//! The client side of the RFC 6455 §4.1 opening handshake, without IO.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use wxsocket_core::transcript::redact_url_text;
use wxsocket_core::{
    DeflateOptions, Handshake, HandshakeRequest, TransportError, TransportErrorKind,
};

/// Largest response head accepted (status line and headers).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most interim answers (1xx: `100 Continue`, `103 Early Hints`) a server or proxy may
/// send before its final one. Each is passed over, and without a limit a server sending
/// them without end kept the client reading (the blocking adapter's handshake timeout
/// fired at 9 s instead of 4).
pub const MAX_INTERIM_ANSWERS: usize = 16;

/// Parses an HTTP response head. Obsolete line folding (a header continued on a line that
/// starts with a space or tab) is accepted, as RFC 9112 §5.2 allows a user agent to do, the
/// folds read as spaces ([`unfolded`]): some old servers and proxies still fold.
pub(crate) fn parse_response<'b>(
    response: &mut httparse::Response<'_, 'b>,
    bytes: &'b [u8],
) -> httparse::Result<usize> {
    httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response(response, bytes)
}

/// A header value with each obsolete line fold's CR and LF read as spaces.
fn unfolded(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if value.contains(&b'\n') {
        let spaced = value
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b });
        std::borrow::Cow::Owned(spaced.collect())
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}
const MAX_HEADERS: usize = 128;

/// A handshake in progress: write [`request_bytes`](Self::request_bytes), then
/// [`feed`](Self::feed) what the server sends until it returns the result.
#[derive(Debug)]
pub struct ClientHandshake {
    request: Vec<u8>,
    deflate: Option<DeflateOptions>,
    accept: String,
    response: Vec<u8>,
    /// Interim answers passed over so far ([`MAX_INTERIM_ANSWERS`]).
    interim: usize,
    /// How many times the head was parsed (for the test that bounds it).
    #[cfg(test)]
    parses: usize,
}

/// A successful handshake.
#[derive(Debug)]
pub struct HandshakeDone {
    /// What the server answered, for the session's `Opened` input.
    pub handshake: Handshake,
    /// Bytes after the response head: the first WebSocket frames, if the server was quick.
    pub tail: Vec<u8>,
}

impl ClientHandshake {
    /// Builds the request for `request` with a fresh random key.
    pub fn new(request: &HandshakeRequest) -> Self {
        Self::with_key(request, &generate_key())
    }

    /// Builds the request with a given `Sec-WebSocket-Key` (tests).
    pub fn with_key(request: &HandshakeRequest, key: &str) -> Self {
        let url = &request.url;
        // RFC 6455 §3's resource name: "?" only with a query (an empty one, `/a?`, is sent
        // as `/a`, as Python `websockets` and Node `ws` do).
        let mut target = url.path().to_owned();
        if let Some(q) = url.query().filter(|q| !q.is_empty()) {
            target.push('?');
            target.push_str(q);
        }
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut out = format!("GET {target} HTTP/1.1\r\n").into_bytes();
        let mut line = |name: &[u8], value: &[u8]| {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        line(b"Host", host.as_bytes());
        line(b"Connection", b"Upgrade");
        line(b"Upgrade", b"websocket");
        line(b"Sec-WebSocket-Version", b"13");
        line(b"Sec-WebSocket-Key", key.as_bytes());
        if !request.protocols.is_empty() {
            line(
                b"Sec-WebSocket-Protocol",
                request.protocols.join(", ").as_bytes(),
            );
        }
        if let Some(offer) = &request.per_message_deflate {
            line(b"Sec-WebSocket-Extensions", offer.offer_header().as_bytes());
        }
        for (name, value) in &request.headers {
            line(name.as_str().as_bytes(), value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        Self {
            request: out,
            deflate: request.per_message_deflate,
            accept: derive_accept_key(key.as_bytes()),
            response: Vec::new(),
            interim: 0,
            #[cfg(test)]
            parses: 0,
        }
    }

    /// The request to write.
    pub fn request_bytes(&self) -> &[u8] {
        &self.request
    }

    /// The error for a connection that closed before the answer was complete (`via` the
    /// proxy whose tunnel it went through). With nothing of the answer read, the server
    /// closed before answering ([`crate::dial::handshake_closed`]); with part of it, the
    /// error says so, with the status line when it came whole, and a status line of a
    /// final answer other than 101 is reported as that answer would be
    /// ([`TransportErrorKind::HttpStatus`]; its headers, `Retry-After` among them, were
    /// not all read).
    pub fn closed_early(&self, via: Option<&str>) -> TransportError {
        if self.response.is_empty() {
            return crate::dial::handshake_closed("handshake", via);
        }
        let who = match via {
            None => "the server closed the connection".to_owned(),
            Some(proxy) => format!("the tunnel through proxy {proxy} closed"),
        };
        self.cut_short(via, who)
    }

    /// The error for a connection reset after part of the answer came, as
    /// [`Self::closed_early`] reports a close there: a refusal whose status line came is
    /// that refusal, final for a reconnect policy as a 403 is (a reset right after it was a
    /// connect error, dialled again). `None` for any other failure (TLS's among them, which
    /// keeps its own kind) and before any of the answer came.
    pub fn failed_early(
        &self,
        via: Option<&str>,
        error: &std::io::Error,
    ) -> Option<TransportError> {
        if self.response.is_empty() || !is_reset(error) {
            return None;
        }
        let who = match via {
            None => "the server reset the connection".to_owned(),
            Some(proxy) => format!("the tunnel through proxy {proxy} was reset"),
        };
        Some(self.cut_short(via, who))
    }

    /// The answer was cut short (`who` says how) after part of it came.
    fn cut_short(&self, via: Option<&str>, who: String) -> TransportError {
        let received = &self.response[..];
        let whose = if via.is_some() { "the server's" } else { "its" };
        let mut message = format!(
            "handshake: {who} in the middle of {whose} answer ({} bytes in)",
            received.len()
        );
        let mut kind = TransportErrorKind::Connect;
        if let Some((line, status)) = status_line(received) {
            message.push_str(&format!(": `{line}`"));
            if let Some(status) = status.filter(|&c| c >= 200) {
                kind = TransportErrorKind::HttpStatus(status);
            }
        }
        TransportError::new(kind, message)
    }

    /// Feeds bytes from the server. `Ok(None)`: more are needed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<HandshakeDone>, TransportError> {
        let before = self.response.len();
        self.response.extend_from_slice(data);
        // A TLS record (an alert or a handshake, version 3.x) where HTTP was expected: a
        // `ws://` URL for a server that speaks only TLS. One byte cannot tell yet.
        match self.response[..] {
            [0x15 | 0x16] => return Ok(None),
            [0x15 | 0x16, 0x03, ..] if before < 2 => {
                return Err(protocol(
                    "the server answered in TLS, not HTTP: is the URL's scheme wss://?",
                ));
            }
            _ => {}
        }
        // The head is parsed from its start: parsed again only when a line ended (or on
        // the first bytes, which show a server that is not speaking HTTP), a server writing
        // it a byte at a time would cost a parse per byte (a 64 KiB head took 0.3 s of CPU).
        // (A first byte held back above is parsed with the next.)
        let first = before == 0 || before == 1 && matches!(self.response[0], 0x15 | 0x16);
        if !first && !data.contains(&b'\n') && self.response.len() <= MAX_RESPONSE_HEAD {
            return Ok(None);
        }
        #[cfg(test)]
        {
            self.parses += 1;
        }
        // Interim answers before the final one (`100 Continue`, `103 Early Hints`, which a
        // CDN may send) are read and passed over (RFC 9110 §15.2); `101` is the final one.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let interim = match parse_response(&mut response, &self.response) {
                Ok(httparse::Status::Complete(n))
                    if response
                        .code
                        .is_some_and(|c| (100..200).contains(&c) && c != 101) =>
                {
                    Some(n)
                }
                _ => None,
            };
            match interim {
                Some(_) if self.interim == MAX_INTERIM_ANSWERS => {
                    return Err(protocol(&format!(
                        "the server sent more than {MAX_INTERIM_ANSWERS} interim (1xx) answers \
                         before answering the upgrade"
                    )));
                }
                Some(head_len) => {
                    self.interim += 1;
                    drop(self.response.drain(..head_len));
                }
                None => break,
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match parse_response(&mut response, &self.response) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.response.len() > MAX_RESPONSE_HEAD {
                    return Err(protocol("handshake response head is too large"));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(protocol(&format!(
                    "invalid handshake response: more than {MAX_HEADERS} headers"
                )));
            }
            Err(e) => return Err(protocol(&format!("invalid handshake response: {e}"))),
        };
        let status = response.code.unwrap_or(0);
        // RFC 6455 §4.1: the handshake is HTTP/1.1 (or later); a `101` from HTTP/1.0, which
        // has no upgrade, is not one.
        if status == 101 && response.version != Some(1) {
            return Err(protocol("handshake response is not HTTP/1.1"));
        }
        let mut map = HeaderMap::with_capacity(response.headers.len());
        for h in response.headers.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(&unfolded(h.value)),
            ) {
                map.append(name, value);
            }
        }
        if status != 101 {
            // The server's words, cut short: they go into errors and close reasons.
            let reason: String = response.reason.unwrap_or("").chars().take(100).collect();
            let mut message = format!("server answered the upgrade with HTTP {status} {reason}");
            if (300..400).contains(&status)
                && let Some(location) = map.get(http::header::LOCATION)
            {
                // Without its credentials: errors reach events, logs and transcripts.
                let location = redact_url_text(&String::from_utf8_lossy(location.as_bytes()));
                let location = sanitized(location.as_bytes(), 200);
                message.push_str(&format!(" (a redirect to {location}, not followed)"));
            }
            // How long a server that is busy or limiting clients asks them to wait, in
            // seconds (the HTTP-date form is not read): the reconnect policy waits that long.
            let retry_after = map
                .get(http::header::RETRY_AFTER)
                .filter(|_| matches!(status, 429 | 503))
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                // More digits than a u64 holds is only longer than any cap.
                .map(|v| Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
            if let Some(wait) = retry_after {
                message.push_str(&format!(" (retry after {} s)", wait.as_secs()));
            }
            let error = TransportError::new(TransportErrorKind::HttpStatus(status), message);
            return Err(match retry_after {
                Some(wait) => error.with_retry_after(wait),
                None => error,
            });
        }
        // RFC 6455 §4.1: `Upgrade` must be "websocket" (in any case), nothing else: a list
        // (`websocket, h2c`) or a second `Upgrade` header is not an answer to this upgrade.
        // Read from the raw head, so that a copy that is no valid header value counts too.
        let upgrades: Vec<_> = response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
            .map(|h| unfolded(h.value))
            .collect();
        match &upgrades[..] {
            [value] if value.trim_ascii().eq_ignore_ascii_case(b"websocket") => {}
            [] => return Err(protocol("handshake response lacks \"Upgrade: websocket\"")),
            _ => {
                // At most three values, each cut short: the text goes into events, logs and
                // transcripts, once per attempt (120 long ones made 72 KB, a reviewer).
                let mut received = upgrades
                    .iter()
                    .take(3)
                    .map(|v| format!("\"{}\"", sanitized(v, 100)))
                    .collect::<Vec<_>>()
                    .join(", ");
                if upgrades.len() > 3 {
                    received.push_str(&format!(" and {} more", upgrades.len() - 3));
                }
                return Err(protocol(&format!(
                    "handshake response has Upgrade {received}, not \"websocket\" alone"
                )));
            }
        }
        // `Connection` is a list of options (RFC 9110 §7.6.1): "upgrade" among them is enough.
        let has_token = |name: &str, token: &str| {
            map.get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if !has_token("connection", "upgrade") {
            return Err(protocol("handshake response lacks \"Connection: Upgrade\""));
        }
        // RFC 6455 §11.3.3: Sec-WebSocket-Accept "MUST NOT appear more than once in an HTTP
        // response". Counted on the raw head, so a copy that is not a valid header value
        // counts too.
        let mut accepts = response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
        match (accepts.next(), accepts.next()) {
            (_, Some(_)) => {
                return Err(protocol("handshake response repeats Sec-WebSocket-Accept"));
            }
            (Some(h), None) if h.value == self.accept.as_bytes() => {}
            (None, None) => {
                return Err(protocol("handshake response lacks Sec-WebSocket-Accept"));
            }
            (Some(_), None) => {
                return Err(protocol(
                    "handshake response has a wrong Sec-WebSocket-Accept",
                ));
            }
        }
        let protocol_header = match map.get_all("sec-websocket-protocol").iter().count() {
            0 => None,
            1 => Some(
                map.get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_owned())
                    .ok_or_else(|| protocol("Sec-WebSocket-Protocol is not valid text"))?,
            ),
            _ => {
                return Err(protocol(
                    "handshake response repeats Sec-WebSocket-Protocol",
                ));
            }
        };
        let extensions = match map.get_all("sec-websocket-extensions").iter().count() {
            0 => None,
            // Several headers are one comma-separated list (RFC 7230 §3.2.2).
            _ => Some(
                map.get_all("sec-websocket-extensions")
                    .iter()
                    .map(|v| v.to_str())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| protocol("Sec-WebSocket-Extensions is not valid text"))?
                    .join(", "),
            ),
        };
        let deflate = match (&extensions, &self.deflate) {
            (None, _) => None,
            (Some(answer), Some(offer)) => Some(offer.negotiate(answer).map_err(|e| {
                TransportError::new(TransportErrorKind::Negotiation, e.to_string())
            })?),
            // No extension was offered (RFC 6455 §4.1: the client must fail the connection).
            (Some(answer), None) => {
                return Err(TransportError::new(
                    TransportErrorKind::Negotiation,
                    format!(
                        "Sec-WebSocket-Extensions: the server accepted {answer:?}, but no extension was offered"
                    ),
                ));
            }
        };
        let tail = self.response[head_len..].to_vec();
        Ok(Some(HandshakeDone {
            // The driver adds the dial's timing profile (`DialTimer`).
            handshake: Handshake::default()
                .with_protocol(protocol_header)
                .with_headers(map)
                .with_extensions(extensions)
                .with_deflate(deflate),
            tail,
        }))
    }
}

/// Whether `error` is the peer resetting the connection (what a server or proxy that
/// closes with the request unread sends).
pub(crate) fn is_reset(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}

/// The first line of an answer cut short (a CONNECT's or the upgrade's), escaped for an
/// error text, and its status when it reads as a status line; `None` before a line ended.
pub(crate) fn status_line(received: &[u8]) -> Option<(String, Option<u16>)> {
    let end = received.iter().position(|&b| b == b'\n')?;
    let line = received[..end]
        .strip_suffix(b"\r")
        .unwrap_or(&received[..end]);
    // The status line alone, as a whole answer without headers.
    let mut head = line.to_vec();
    head.extend_from_slice(b"\r\n\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 0];
    let mut response = httparse::Response::new(&mut headers);
    let status = match parse_response(&mut response, &head) {
        Ok(httparse::Status::Complete(_)) => response.code,
        _ => None,
    };
    Some((sanitized(line, 100), status))
}

/// Server text for an error: read as UTF-8 (lossily), at most `max` characters, control
/// characters and the marks that reorder text escaped (errors reach terminals, logs and
/// transcripts).
fn sanitized(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(bytes).chars().take(max) {
        // Controls, and the marks that reorder or break the text around them where it is
        // shown (bidirectional overrides and isolates, line and paragraph separators).
        let hidden = matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        );
        if c.is_control() || hidden {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn protocol(message: &str) -> TransportError {
    TransportError::new(TransportErrorKind::Protocol, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxsocket_core::ConnectOptions;

    fn req() -> HandshakeRequest {
        ConnectOptions::new("ws://h:81/p")
            .data("a", "b c")
            .header("X-Token", "t")
            .protocol("p1")
            .protocol("p2")
            .validate()
            .unwrap()
    }

    fn response(accept: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn request_carries_everything() {
        let h = ClientHandshake::with_key(&req(), "dGhlIHNhbXBsZSBub25jZQ==");
        let text = String::from_utf8(h.request_bytes().to_vec()).unwrap();
        assert_eq!(
            text,
            "GET /p?a=b+c HTTP/1.1\r\nHost: h:81\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: p1, p2\r\nx-token: t\r\n\r\n"
        );
    }

    #[test]
    fn an_empty_query_has_no_question_mark() {
        for (url, target) in [
            ("ws://h/a?", "GET /a HTTP/1.1"),
            ("ws://h?", "GET / HTTP/1.1"),
        ] {
            let request = ConnectOptions::new(url).validate().unwrap();
            let h = ClientHandshake::with_key(&request, "dGhlIHNhbXBsZSBub25jZQ==");
            let text = String::from_utf8(h.request_bytes().to_vec()).unwrap();
            assert!(text.starts_with(&format!("{target}\r\n")), "{text}");
        }
    }

    #[test]
    fn accepts_in_pieces_and_keeps_the_tail() {
        let mut h = ClientHandshake::with_key(&req(), "dGhlIHNhbXBsZSBub25jZQ==");
        let mut bytes = response(
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "Sec-WebSocket-Protocol: p2\r\nX-Server: yes\r\n",
        )
        .into_bytes();
        bytes.extend_from_slice(b"\x81\x02hi");
        let head_len = bytes.len() - 4;
        for b in &bytes[..head_len - 1] {
            assert!(h.feed(std::slice::from_ref(b)).unwrap().is_none());
        }
        let done = h.feed(&bytes[head_len - 1..]).unwrap().unwrap();
        assert_eq!(done.handshake.protocol.as_deref(), Some("p2"));
        assert_eq!(done.handshake.headers["x-server"], "yes");
        assert_eq!(done.tail, b"\x81\x02hi");
    }

    #[test]
    fn rejects_bad_answers() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let run = |resp: String| ClientHandshake::with_key(&req(), key).feed(resp.as_bytes());
        let e = run("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into()).unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::HttpStatus(403));
        assert_eq!(
            run(response("wrong", "")).unwrap_err().kind,
            TransportErrorKind::Protocol
        );
        let old = response(good, "").replacen("HTTP/1.1", "HTTP/1.0", 1);
        let e = run(old).unwrap_err();
        assert!(e.message.contains("not HTTP/1.1"), "{e}");
        let missing =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let e = run(missing.into()).unwrap_err();
        assert!(e.message.contains("lacks Sec-WebSocket-Accept"), "{e}");
        assert!(
            run(response(
                good,
                "Sec-WebSocket-Extensions: permessage-deflate\r\n"
            ))
            .is_err()
        );
        assert!(run("garbage\r\n\r\n".into()).is_err());
        // RFC 6455 §11.3.3: the header must not appear more than once, whichever comes first.
        for extra in [
            format!("Sec-WebSocket-Accept: {good}\r\n"),
            "Sec-WebSocket-Accept: wrong\r\n".to_owned(),
            "sec-websocket-accept: \r\n".to_owned(),
        ] {
            let e = run(response(good, &extra)).unwrap_err();
            assert_eq!(e.kind, TransportErrorKind::Protocol);
            assert!(e.message.contains("repeats Sec-WebSocket-Accept"), "{e}");
        }
        assert!(run(response(good, "")).is_ok());
        // No sub-protocol selected is fine (browsers accept it); the core judges the rest.
        assert_eq!(
            run(response(good, "")).unwrap().unwrap().handshake.protocol,
            None
        );
    }

    /// Interim answers before the 101 (`100 Continue`, `103 Early Hints` from a CDN) are
    /// passed over, also when they come in pieces, and the 101 after them opens (they
    /// failed the handshake: RFC 9110 §15.2 says a client must take them).
    #[test]
    fn interim_answers_before_the_101_are_passed_over() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
        let bytes = format!(
            "{interim}{}",
            response(good, "Sec-WebSocket-Protocol: p1\r\n")
        )
        .into_bytes();
        let mut h = ClientHandshake::with_key(&req(), key);
        let (last, head) = bytes.split_last().unwrap();
        for b in head {
            assert!(h.feed(std::slice::from_ref(b)).unwrap().is_none());
        }
        let done = h.feed(std::slice::from_ref(last)).unwrap().expect("open");
        assert_eq!(done.handshake.protocol.as_deref(), Some("p1"));
    }

    /// [`MAX_INTERIM_ANSWERS`] interim answers are passed over, one more fails the
    /// handshake (a server sending them without end kept the client reading).
    #[test]
    fn interim_answers_without_end_fail_the_handshake() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let interim = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM_ANSWERS);
        let mut h = ClientHandshake::with_key(&req(), key);
        let bytes = format!("{interim}{}", response(good, ""));
        assert!(h.feed(bytes.as_bytes()).unwrap().is_some(), "at the limit");
        let mut h = ClientHandshake::with_key(&req(), key);
        assert!(h.feed(interim.as_bytes()).unwrap().is_none());
        let e = h.feed(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        assert!(e.message.contains("more than 16 interim"), "{e}");
    }

    /// A header folded over two lines (obsolete, but still sent by some servers and
    /// proxies) is read with the fold as spaces; it failed the handshake as an invalid
    /// header name.
    #[test]
    fn a_folded_header_is_read_unfolded() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let bytes = response(
            good,
            "X-Folded: first\r\n\tsecond\r\nSec-WebSocket-Protocol: p1\r\n",
        );
        let done = ClientHandshake::with_key(&req(), key)
            .feed(bytes.as_bytes())
            .unwrap()
            .expect("open");
        assert_eq!(done.handshake.protocol.as_deref(), Some("p1"));
        let folded = done.handshake.headers.get("x-folded").expect("the header");
        assert_eq!(folded.as_bytes(), b"first  \tsecond");
    }

    /// A TLS server behind a `ws://` URL answers the plain request with a TLS alert: the
    /// error says so (it read as an invalid HTTP version).
    #[test]
    fn a_tls_answer_to_a_plain_request_is_named() {
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46];
        let e = ClientHandshake::with_key(&req(), "dGhlIHNhbXBsZSBub25jZQ==")
            .feed(&alert)
            .unwrap_err();
        assert!(e.message.contains("answered in TLS"), "{e}");
        // Also when the first read holds one byte.
        let mut h = ClientHandshake::with_key(&req(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(h.feed(&alert[..1]).unwrap().is_none());
        let e = h.feed(&alert[1..]).unwrap_err();
        assert!(e.message.contains("answered in TLS"), "{e}");
    }

    /// A head written a byte at a time is parsed once per line, not once per byte.
    #[test]
    fn a_head_in_single_bytes_is_parsed_once_a_line() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let long = format!("X-Long: {}\r\n", "v".repeat(20_000));
        let bytes = response(good, &long);
        let lines = bytes.matches('\n').count();
        let mut h = ClientHandshake::with_key(&req(), key);
        let (last, head) = bytes.as_bytes().split_last().unwrap();
        for b in head {
            assert!(h.feed(std::slice::from_ref(b)).unwrap().is_none());
        }
        assert!(h.feed(std::slice::from_ref(last)).unwrap().is_some());
        assert!(
            h.parses <= lines + 1,
            "{} parses for {lines} lines",
            h.parses
        );
        // Past the limit without a line's end, it still fails.
        let mut h = ClientHandshake::with_key(&req(), key);
        h.feed(b"HTTP/1.1 101 Switching Protocols\r\nX: ").unwrap();
        let e = h.feed(&vec![b'v'; MAX_RESPONSE_HEAD]).unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
    }

    /// A refusal's reason phrase is cut short (it goes into errors and close reasons), and
    /// a redirect says where to, and that it is not followed.
    #[test]
    fn a_refusal_says_little_and_a_redirect_where_to() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let run = |resp: String| ClientHandshake::with_key(&req(), key).feed(resp.as_bytes());
        let long = "x".repeat(60_000);
        let e = run(format!("HTTP/1.1 400 {long}\r\n\r\n")).unwrap_err();
        assert!(e.message.len() < 200, "{} bytes", e.message.len());
        let e =
            run("HTTP/1.1 302 Found\r\nLocation: wss://elsewhere/ws\r\n\r\n".into()).unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::HttpStatus(302));
        assert!(e.message.contains("wss://elsewhere/ws"), "{e}");
        assert!(e.message.contains("not followed"), "{e}");
        // Where the redirect points may carry credentials (a prober found the token and
        // password of one in a transcript): they are not repeated.
        let e = run("HTTP/1.1 302 Found\r\nLocation: wss://ann:pw@elsewhere/ws?room=1&access_token=t0k\r\n\r\n".into()).unwrap_err();
        assert!(
            e.message
                .contains("wss://***@elsewhere/ws?room=1&access_token=***"),
            "{e}"
        );
        let e = run("HTTP/1.1 307 Moved\r\nLocation: /next?token=t0k\r\n\r\n".into()).unwrap_err();
        assert!(
            e.message
                .contains("(a redirect to /next?token=***, not followed)"),
            "{e}"
        );
        // Its controls (a C1 CSI, which clears a terminal) and the marks that reorder text
        // are escaped, as every server text in an error is (a reviewer: they came raw).
        let e = run("HTTP/1.1 302 Found\r\nLocation: http://x/\u{9b}[2J\u{202e}gpj\r\n\r\n".into())
            .unwrap_err();
        assert!(
            e.message
                .contains("(a redirect to http://x/\\u{9b}[2J\\u{202e}gpj, not followed)"),
            "{e}"
        );
    }

    /// RFC 6455 §4.1: `Upgrade` must be "websocket" and nothing else (any case, spaces
    /// around it); a list holding it, or a second `Upgrade` header, fails the handshake
    /// and the error says what came (both opened: the check looked for the token in a
    /// list, as `Connection`'s does, which stays so).
    #[test]
    fn upgrade_must_be_websocket_alone() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let answer = |upgrades: &str, connection: &str| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\n{upgrades}Connection: {connection}\r\n\
                 Sec-WebSocket-Accept: {good}\r\n\r\n"
            )
        };
        let run = |resp: String| ClientHandshake::with_key(&req(), key).feed(resp.as_bytes());
        for upgrade in ["Upgrade: websocket\r\n", "upgrade:  WebSocket \r\n"] {
            assert!(
                run(answer(upgrade, "Upgrade")).unwrap().is_some(),
                "{upgrade}"
            );
        }
        // `Connection` is a list: "upgrade" among other options is enough.
        assert!(
            run(answer("Upgrade: websocket\r\n", "keep-alive, UPGRADE"))
                .unwrap()
                .is_some()
        );
        for (upgrades, received) in [
            ("Upgrade: websocket, h2c\r\n", "\"websocket, h2c\""),
            (
                "Upgrade: h2c\r\nUpgrade: websocket\r\n",
                "\"h2c\", \"websocket\"",
            ),
            (
                "Upgrade: websocket\r\nUpgrade: websocket\r\n",
                "\"websocket\", \"websocket\"",
            ),
            ("Upgrade: h2c\r\n", "\"h2c\""),
            ("Upgrade: \r\n", "\"\""),
        ] {
            let e = run(answer(upgrades, "Upgrade")).unwrap_err();
            assert_eq!(e.kind, TransportErrorKind::Protocol, "{upgrades}");
            assert_eq!(
                e.message,
                format!("handshake response has Upgrade {received}, not \"websocket\" alone"),
            );
        }
        let e = run(answer("", "Upgrade")).unwrap_err();
        assert!(e.message.contains("lacks \"Upgrade: websocket\""), "{e}");
        // Many long values, each escaped to six times its length: three are shown, and
        // how many more came (120 of them made an error text of 72 KB, a reviewer).
        let long = "\u{80}".repeat(100);
        let many: String = (0..120).map(|_| format!("Upgrade: {long}\r\n")).collect();
        let e = run(answer(&many, "Upgrade")).unwrap_err();
        assert!(e.message.len() < 2_000, "{} bytes", e.message.len());
        assert!(
            e.message
                .ends_with(" and 117 more, not \"websocket\" alone"),
            "{e}"
        );
    }

    /// More headers than [`MAX_HEADERS`] fail the handshake, and the error names the limit
    /// (it said "too many headers").
    #[test]
    fn too_many_headers_names_the_limit() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let run = |resp: String| ClientHandshake::with_key(&req(), key).feed(resp.as_bytes());
        // The answer has three headers of its own.
        let extra = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        assert!(
            run(response(good, &extra(MAX_HEADERS - 3)))
                .unwrap()
                .is_some()
        );
        let e = run(response(good, &extra(MAX_HEADERS - 2))).unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        assert_eq!(
            e.message,
            "invalid handshake response: more than 128 headers"
        );
    }

    /// A connection reset in the middle of the answer is reported as one closed there is:
    /// a refusal whose status line came is that refusal (it was a connect error, and a
    /// reconnect policy dialled a 403 again); before any of the answer, the reset as it was.
    #[test]
    fn an_answer_reset_midway_is_reported_as_one_cut_short() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(
            ClientHandshake::with_key(&req(), key)
                .failed_early(None, &reset)
                .is_none()
        );
        let mut h = ClientHandshake::with_key(&req(), key);
        assert!(
            h.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Le")
                .unwrap()
                .is_none()
        );
        let e = h.failed_early(None, &reset).expect("part of an answer");
        assert_eq!(e.kind, TransportErrorKind::HttpStatus(403));
        assert_eq!(
            e.message,
            "handshake: the server reset the connection in the middle of its answer \
             (34 bytes in): `HTTP/1.1 403 Forbidden`"
        );
        let e = h
            .failed_early(Some("http://proxy:3128"), &reset)
            .expect("part of an answer");
        assert!(
            e.message.starts_with(
                "handshake: the tunnel through proxy http://proxy:3128 was reset in the \
                 middle of the server's answer"
            ),
            "{e}"
        );
        // Any other failure keeps its own kind: TLS's (a record that does not decrypt) is
        // a TLS error, not a refusal (the reviewer: it read as the 403).
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "cannot decrypt peer's message",
        );
        assert!(h.failed_early(None, &tls).is_none());
        let mut h = ClientHandshake::with_key(&req(), key);
        assert!(h.feed(b"HTTP/1.1 10").unwrap().is_none());
        let e = h.failed_early(None, &reset).expect("part of an answer");
        assert_eq!(e.kind, TransportErrorKind::Connect);
    }

    /// A connection that closes in the middle of the answer says so, how much came, and the
    /// status line when it came whole (it said the server closed "before answering"); a
    /// refusal's status line is reported as the whole refusal would be. Nothing read: the
    /// server closed before answering, as before.
    #[test]
    fn an_answer_cut_short_says_what_came() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let cut = |bytes: &[u8], via: Option<&str>| {
            let mut h = ClientHandshake::with_key(&req(), key);
            assert!(h.feed(bytes).unwrap().is_none());
            h.closed_early(via)
        };
        let e = ClientHandshake::with_key(&req(), key).closed_early(None);
        assert_eq!(e.kind, TransportErrorKind::Connect);
        assert_eq!(
            e.message,
            "handshake: the server closed the connection before answering"
        );
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n";
        let e = cut(forbidden, None);
        assert_eq!(e.kind, TransportErrorKind::HttpStatus(403));
        assert_eq!(
            e.message,
            "handshake: the server closed the connection in the middle of its answer \
             (43 bytes in): `HTTP/1.1 403 Forbidden`"
        );
        let e = cut(forbidden, Some("http://proxy:3128"));
        assert_eq!(e.kind, TransportErrorKind::HttpStatus(403));
        assert!(
            e.message.starts_with(
                "handshake: the tunnel through proxy http://proxy:3128 closed in the middle \
                 of the server's answer (43 bytes in)"
            ),
            "{e}"
        );
        // A 101 cut short, a status line cut short, an interim answer cut short: the kind
        // a close before the answer has.
        let e = cut(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
            None,
        );
        assert_eq!(e.kind, TransportErrorKind::Connect);
        assert!(
            e.message
                .ends_with("(54 bytes in): `HTTP/1.1 101 Switching Protocols`"),
            "{e}"
        );
        let e = cut(b"HTTP/1.1 40", None);
        assert_eq!(e.kind, TransportErrorKind::Connect);
        assert!(
            e.message.ends_with("middle of its answer (11 bytes in)"),
            "{e}"
        );
        let e = cut(b"HTTP/1.1 100 Continue\r\n", None);
        assert_eq!(e.kind, TransportErrorKind::Connect);
        // The server's text is cut short and its control characters escaped.
        // (C0 controls fail the status line's parse; C1 ones, as UTF-8, pass it.)
        let mut long = b"HTTP/1.1 500 \xc2\x9b[2J".to_vec();
        long.extend_from_slice(&[b'x'; 500]);
        long.extend_from_slice(b"\r\n");
        let e = cut(&long, None);
        assert_eq!(e.kind, TransportErrorKind::HttpStatus(500));
        assert!(e.message.contains("`HTTP/1.1 500 \\u{9b}[2Jxxx"), "{e}");
        assert!(e.message.len() < 200, "{e}");
    }

    /// A busy or limiting server's `Retry-After` (seconds) is read with 429 and 503, for the
    /// reconnect policy; not with other statuses, nor in the HTTP-date form.
    #[test]
    fn retry_after_is_read_from_429_and_503() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let run = |resp: &str| {
            ClientHandshake::with_key(&req(), key)
                .feed(resp.as_bytes())
                .unwrap_err()
        };
        let e = run("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n\r\n");
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert!(e.message.contains("retry after 7 s"), "{e}");
        let e = run("HTTP/1.1 503 Busy\r\nRetry-After:  2 \r\n\r\n");
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        let e = run("HTTP/1.1 403 No\r\nRetry-After: 7\r\n\r\n");
        assert_eq!(e.retry_after, None);
        let e = run("HTTP/1.1 503 Busy\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n");
        assert_eq!(e.retry_after, None);
        // Too large for any integer: the longest wait there is, not none (a reviewer:
        // 4294967296 was ignored, and the client retried within the first delay).
        let e = run("HTTP/1.1 429 Slow down\r\nRetry-After: 99999999999999999999999\r\n\r\n");
        assert_eq!(e.retry_after, Some(wxsocket_core::MAX_TIMER));
        let e = run("HTTP/1.1 429 Slow down\r\nRetry-After: -5\r\n\r\n");
        assert_eq!(e.retry_after, None);
    }

    /// A server that does not speak HTTP fails the handshake at its first bytes, though no
    /// line ended in them (an SSH banner is not waited on until the head's limit); a first
    /// byte that looked like TLS is judged with the byte after it.
    #[test]
    fn an_answer_that_is_not_http_fails_at_its_first_bytes() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let e = ClientHandshake::with_key(&req(), key)
            .feed(b"SSH-2.0-OpenSSH_9.6")
            .unwrap_err();
        assert!(e.message.contains("invalid handshake response"), "{e}");
        let mut h = ClientHandshake::with_key(&req(), key);
        assert!(h.feed(&[0x16]).unwrap().is_none());
        let e = h.feed(b"A").unwrap_err();
        assert!(e.message.contains("invalid handshake response"), "{e}");
    }

    /// A head cut short is waited on while it holds at most [`MAX_RESPONSE_HEAD`] bytes,
    /// and fails with one more.
    #[test]
    fn a_head_is_waited_on_up_to_its_limit() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut h = ClientHandshake::with_key(&req(), key);
        let start = b"HTTP/1.1 101 Switching Protocols\r\nX: ";
        assert!(h.feed(start).unwrap().is_none());
        // Up to the limit exactly, a line's end last (so that the head is parsed).
        let mut rest = vec![b'v'; MAX_RESPONSE_HEAD - start.len() - 2];
        rest.extend_from_slice(b"\r\n");
        assert!(h.feed(&rest).unwrap().is_none(), "at the limit");
        let e = h.feed(b"Y").unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
    }

    /// Three `Upgrade` values are all shown, and nothing said of more; a fourth is counted.
    #[test]
    fn three_upgrade_values_are_shown_whole_and_a_fourth_is_counted() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let run = |n: usize| {
            let upgrades: String = (0..n).map(|i| format!("Upgrade: u{i}\r\n")).collect();
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\n{upgrades}Connection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {good}\r\n\r\n"
            );
            ClientHandshake::with_key(&req(), key)
                .feed(resp.as_bytes())
                .unwrap_err()
                .message
        };
        assert_eq!(
            run(3),
            "handshake response has Upgrade \"u0\", \"u1\", \"u2\", not \"websocket\" alone"
        );
        assert_eq!(
            run(4),
            "handshake response has Upgrade \"u0\", \"u1\", \"u2\" and 1 more, not \"websocket\" alone"
        );
    }
}
