//! permessage-deflate (RFC 7692) as data: what the client offers ([`DeflateOptions`]), the
//! `Sec-WebSocket-Extensions` header it sends, and the parameters both sides agreed on
//! ([`DeflateParams`]), judged from the server's answer by [`DeflateOptions::negotiate`].
//! Compressing and inflating are the IO drivers' (see `wxsocket-wire`).
//!
//! ```
//! use wxsocket_core::deflate::{DeflateOptions, DeflateParams};
//! let offer = DeflateOptions::default().server_no_context_takeover(true);
//! assert_eq!(
//!     offer.offer_header(),
//!     "permessage-deflate; server_no_context_takeover; client_max_window_bits, \
//!      permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
//! );
//! let agreed = offer
//!     .negotiate("permessage-deflate; server_no_context_takeover; client_max_window_bits=10")
//!     .unwrap();
//! assert_eq!(agreed.client_max_window_bits, 10);
//! assert_eq!(agreed.server_max_window_bits, 15);
//! assert!(agreed.server_no_context_takeover && !agreed.client_no_context_takeover);
//! ```

use crate::error::ConnectError;
use std::fmt;

/// The smallest LZ77 window RFC 7692 allows (2^8 bytes).
pub const MIN_WINDOW_BITS: u8 = 8;
/// The largest LZ77 window, and the default (2^15 bytes).
pub const MAX_WINDOW_BITS: u8 = 15;

/// The permessage-deflate offer and the client's local compression choices. Used when the
/// connect options turn `perMessageDeflate` on.
///
/// **Memory.** In the adapters, compression costs a connection nothing until a message is
/// compressed or inflated. Then zlib's state is the cost: about 320 KiB to compress and
/// 40 KiB to inflate, held for the connection's life when the context is taken over from
/// message to message (the default, both ways); a window of 2^9 bytes
/// (`client_max_window_bits(9)`, `server_max_window_bits(Some(9))`) makes it about 230 KiB.
/// Without context takeover a direction holds no state between messages (each message
/// borrows one kept per thread): for thousands of connections, set both
/// `client_no_context_takeover` and `server_no_context_takeover`, which keeps a connection
/// near its uncompressed 10–15 KiB, at the price of compressing each message on its own.
/// (README, "Decisions": the measurements.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateOptions {
    /// Ask the server to reset its compression context after each message
    /// (`server_no_context_takeover`): less memory on the server, worse compression. Every
    /// offer then asks it, so a server that accepts compression without agreeing to it
    /// fails the handshake (RFC 7692 §7.1.1.1), as one that drops a requested
    /// [`Self::server_max_window_bits`] does; one that declines compression runs without it.
    pub server_no_context_takeover: bool,
    /// Declare that this client resets its context after each message
    /// (`client_no_context_takeover`).
    pub client_no_context_takeover: bool,
    /// Ask the server to use at most a 2^N byte window (`server_max_window_bits=N`, 8–15);
    /// `None` asks nothing.
    pub server_max_window_bits: Option<u8>,
    /// The largest window this client will use, 8–15. The offer always carries
    /// `client_max_window_bits` (so the server may lower it); with a value below 15 the
    /// value is sent as well.
    pub client_max_window_bits: u8,
    /// Messages shorter than this many bytes are sent uncompressed (RSV1 clear): deflate
    /// adds a few bytes to tiny payloads. Default 32.
    pub threshold: usize,
    /// The zlib compression level, 0 (store) to 9 (smallest, slowest). Default 6, zlib's
    /// default and what browsers, Node `ws` and Python `websockets` use.
    ///
    /// Level 1 is the fast option when compression, not the network, limits throughput:
    /// on 4 KiB JSON-like text zlib compresses and inflates about 4× as many messages per
    /// second as at level 6, for about 1.7× the bytes (1,460 compressed bytes a message
    /// instead of 880; `wxsocket-bench`'s level-1 rows measure both adapters).
    pub level: u32,
}

impl Default for DeflateOptions {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: MAX_WINDOW_BITS,
            threshold: 32,
            level: 6,
        }
    }
}

/// The parameters in force on a connection, after negotiation. (RFC 7692 defines exactly
/// these four, so the struct is open for construction, e.g. by a server-side test peer.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its context after each message: inflate each message afresh.
    pub server_no_context_takeover: bool,
    /// The client resets its context after each message.
    pub client_no_context_takeover: bool,
    /// The server's window is at most 2^N bytes.
    pub server_max_window_bits: u8,
    /// The client's window must be at most 2^N bytes.
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

impl fmt::Display for DeflateParams {
    /// As an extension header value, with every parameter spelled out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("permessage-deflate")?;
        if self.server_no_context_takeover {
            f.write_str("; server_no_context_takeover")?;
        }
        if self.client_no_context_takeover {
            f.write_str("; client_no_context_takeover")?;
        }
        write!(
            f,
            "; server_max_window_bits={}; client_max_window_bits={}",
            self.server_max_window_bits, self.client_max_window_bits
        )
    }
}

/// Why a server's `Sec-WebSocket-Extensions` answer was refused (the connection fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Sec-WebSocket-Extensions: {0}")]
pub struct NegotiationError(pub String);

impl DeflateOptions {
    /// Sets [`Self::server_no_context_takeover`].
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`Self::client_no_context_takeover`].
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`Self::server_max_window_bits`].
    pub fn server_max_window_bits(mut self, bits: Option<u8>) -> Self {
        self.server_max_window_bits = bits;
        self
    }

    /// Sets [`Self::client_max_window_bits`].
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits;
        self
    }

    /// Sets [`Self::threshold`].
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Sets [`Self::level`].
    pub fn level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// The error naming the parameter at fault, if one is out of range.
    pub(crate) fn invalid_field(&self) -> Option<ConnectError> {
        let ok = |b: u8| (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&b);
        let window = |field, b: u8| ConnectError::InvalidDeflate {
            field,
            value: b.into(),
            allowed: "a window size from 8 to 15",
        };
        if let Some(b) = self.server_max_window_bits.filter(|b| !ok(*b)) {
            return Some(window("server_max_window_bits", b));
        }
        if !ok(self.client_max_window_bits) {
            return Some(window(
                "client_max_window_bits",
                self.client_max_window_bits,
            ));
        }
        if self.level > 9 {
            return Some(ConnectError::InvalidDeflate {
                field: "level",
                value: self.level,
                allowed: "a compression level from 0 to 9",
            });
        }
        None
    }

    /// The `Sec-WebSocket-Extensions` request header value: the offer, then (unless it
    /// already declares `client_no_context_takeover`) the same offer declaring it, as a
    /// second choice (RFC 7692 §5: offers in order of preference). A server that accepts
    /// compression only when the client resets its context after each message takes the
    /// second; every other server takes the first, as with a single offer. Which one was
    /// taken shows in the answer: `client_no_context_takeover` in it puts the client's
    /// reset in force (a server may also ask it of the first offer, RFC 7692 §7.1.1.2).
    pub fn offer_header(&self) -> String {
        let first = self.single_offer(self.client_no_context_takeover);
        if self.client_no_context_takeover {
            return first;
        }
        format!("{first}, {}", self.single_offer(true))
    }

    /// One `permessage-deflate` offer with these options.
    fn single_offer(&self, client_no_context_takeover: bool) -> String {
        let mut out = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        out.push_str("; client_max_window_bits");
        if self.client_max_window_bits < MAX_WINDOW_BITS {
            out.push_str(&format!("={}", self.client_max_window_bits));
        }
        out
    }

    /// Judges the server's `Sec-WebSocket-Extensions` answer against this offer (RFC 7692
    /// §7.1): exactly one `permessage-deflate` with known parameters, each at most once and
    /// with a valid value, none the offer does not allow.
    pub fn negotiate(&self, response: &str) -> Result<DeflateParams, NegotiationError> {
        let fail = |why: String| Err(NegotiationError(why));
        let mut extensions = split_outside_quotes(response, ',')
            .into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        let Some(extension) = extensions.next() else {
            return fail("empty answer".into());
        };
        if let Some(other) = extensions.next() {
            return fail(format!(
                "the server accepted more than the one extension offered ({other:?})"
            ));
        }
        let mut parts = split_outside_quotes(extension, ';')
            .into_iter()
            .map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            return fail(format!(
                "the server accepted {name:?}, which was not offered"
            ));
        }
        let mut params = DeflateParams {
            client_no_context_takeover: self.client_no_context_takeover,
            client_max_window_bits: self.client_max_window_bits,
            ..DeflateParams::default()
        };
        let mut seen: Vec<String> = Vec::new();
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                None => (part, None),
            };
            let key = key.to_ascii_lowercase();
            if seen.contains(&key) {
                return fail(format!("parameter {key} is repeated"));
            }
            seen.push(key.clone());
            match (key.as_str(), value) {
                ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => {
                    let bits = window_bits(&key, v)?;
                    if let Some(asked) = self.server_max_window_bits
                        && bits > asked
                    {
                        return fail(format!(
                            "server_max_window_bits={bits} is larger than the {asked} offered"
                        ));
                    }
                    params.server_max_window_bits = bits;
                }
                ("client_max_window_bits", Some(v)) => {
                    let bits = window_bits(&key, v)?;
                    if bits > self.client_max_window_bits {
                        return fail(format!(
                            "client_max_window_bits={bits} is larger than the {} offered",
                            self.client_max_window_bits
                        ));
                    }
                    params.client_max_window_bits = bits;
                }
                ("server_no_context_takeover" | "client_no_context_takeover", Some(_)) => {
                    return fail(format!("parameter {key} takes no value"));
                }
                ("server_max_window_bits" | "client_max_window_bits", None) => {
                    return fail(format!("parameter {key} needs a value in the answer"));
                }
                _ => return fail(format!("unknown parameter {key:?}")),
            }
        }
        if let Some(asked) = self.server_max_window_bits
            && !seen.iter().any(|k| k == "server_max_window_bits")
        {
            return fail(format!(
                "server_max_window_bits={asked} was offered but not accepted"
            ));
        }
        // RFC 7692 §7.1.1.1: every offer asks it (the second offer differs only in
        // `client_no_context_takeover`), so an answer without it accepts none of them.
        if self.server_no_context_takeover && !params.server_no_context_takeover {
            return fail("server_no_context_takeover was offered but not accepted".into());
        }
        Ok(params)
    }
}

/// The server's side of the negotiation, for servers and test peers: the first acceptable
/// `permessage-deflate` offer in a client's `Sec-WebSocket-Extensions` header, accepted
/// with everything it asks for, as the agreed parameters and the response header value.
/// `None` when no offer is acceptable (the server then answers without the extension).
///
/// ```
/// use wxsocket_core::deflate::accept_offer;
/// let (params, answer) =
///     accept_offer("permessage-deflate; client_max_window_bits=10; server_no_context_takeover").unwrap();
/// assert_eq!(answer, "permessage-deflate; server_no_context_takeover; client_max_window_bits=10");
/// assert_eq!((params.client_max_window_bits, params.server_max_window_bits), (10, 15));
/// ```
pub fn accept_offer(header: &str) -> Option<(DeflateParams, String)> {
    'offers: for offer in split_outside_quotes(header, ',') {
        let mut parts = split_outside_quotes(offer, ';').into_iter().map(str::trim);
        if !parts
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
        {
            continue;
        }
        let mut params = DeflateParams::default();
        let mut client_bits = None;
        let mut server_bits = None;
        let mut seen = Vec::new();
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(unquote(v.trim()))),
                None => (part.to_ascii_lowercase(), None),
            };
            if seen.contains(&key) {
                continue 'offers;
            }
            seen.push(key.clone());
            match (key.as_str(), value) {
                ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => match window_bits(&key, v) {
                    Ok(b) => server_bits = Some(b),
                    Err(_) => continue 'offers,
                },
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(v)) => match window_bits(&key, v) {
                    Ok(b) => client_bits = Some(b),
                    Err(_) => continue 'offers,
                },
                _ => continue 'offers,
            }
        }
        let mut answer = String::from("permessage-deflate");
        if params.server_no_context_takeover {
            answer.push_str("; server_no_context_takeover");
        }
        if params.client_no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if let Some(b) = server_bits {
            params.server_max_window_bits = b;
            answer.push_str(&format!("; server_max_window_bits={b}"));
        }
        if let Some(b) = client_bits {
            params.client_max_window_bits = b;
            answer.push_str(&format!("; client_max_window_bits={b}"));
        }
        return Some((params, answer));
    }
    None
}

fn window_bits(key: &str, value: &str) -> Result<u8, NegotiationError> {
    // RFC 7692 §7.1.2: 1*DIGIT, "8" to "15", no leading zero.
    match value.parse::<u8>() {
        Ok(b)
            if (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&b)
                && !value.starts_with('0')
                && value.bytes().all(|c| c.is_ascii_digit()) =>
        {
            Ok(b)
        }
        _ => Err(NegotiationError(format!(
            "{key}={value:?} is not a window size from 8 to 15"
        ))),
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Splits on `sep` outside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(offer: DeflateOptions, answer: &str) -> DeflateParams {
        offer.negotiate(answer).unwrap()
    }

    fn err(offer: DeflateOptions, answer: &str) -> String {
        offer.negotiate(answer).unwrap_err().to_string()
    }

    /// The client's own window limit holds when the server's answer does not mention it,
    /// and the setters set what they name.
    #[test]
    fn the_clients_window_limit_holds_when_the_answer_is_silent_about_it() {
        let offer = DeflateOptions::default()
            .client_max_window_bits(10)
            .threshold(100);
        assert_eq!(offer.threshold, 100);
        let agreed = ok(offer, "permessage-deflate");
        assert_eq!(agreed.client_max_window_bits, 10);
        assert_eq!(agreed.server_max_window_bits, 15);
    }

    /// Separators inside a quoted value do not split (RFC 7230 quoted-string).
    #[test]
    fn separators_inside_quotes_do_not_split() {
        assert_eq!(
            split_outside_quotes(r#"a; b="x;y"; c"#, ';'),
            ["a", r#" b="x;y""#, " c"]
        );
        assert_eq!(
            split_outside_quotes(r#"p; q="1,2", r"#, ','),
            [r#"p; q="1,2""#, " r"]
        );
    }

    #[test]
    fn offers() {
        // The offer, then the same declaring client_no_context_takeover (RFC 7692 §5).
        assert_eq!(
            DeflateOptions::default().offer_header(),
            "permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; client_max_window_bits"
        );
        // Either answer is understood: the second offer's puts the client's reset in force.
        let d = DeflateOptions::default();
        assert!(!ok(d, "permessage-deflate").client_no_context_takeover);
        assert!(ok(d, "permessage-deflate; client_no_context_takeover").client_no_context_takeover);
        // A server taking the first acceptable offer takes the first.
        let (_, answer) = accept_offer(&d.offer_header()).unwrap();
        assert_eq!(answer, "permessage-deflate");
        assert_eq!(
            DeflateOptions::default()
                .client_no_context_takeover(true)
                .server_no_context_takeover(true)
                .server_max_window_bits(Some(10))
                .client_max_window_bits(9)
                .offer_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"
        );
    }

    #[test]
    fn accepts_what_the_offer_allows() {
        let d = DeflateOptions::default();
        assert_eq!(ok(d, "permessage-deflate"), DeflateParams::default());
        let p = ok(
            d,
            "Permessage-Deflate ; server_no_context_takeover;client_no_context_takeover; server_max_window_bits=\"9\"; client_max_window_bits=8",
        );
        assert_eq!(
            p,
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 9,
                client_max_window_bits: 8,
            }
        );
        // What the client declared holds even if the server does not repeat it.
        let p = ok(d.client_no_context_takeover(true), "permessage-deflate");
        assert!(p.client_no_context_takeover);
        let p = ok(
            d.server_max_window_bits(Some(12)),
            "permessage-deflate; server_max_window_bits=10",
        );
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(
            p.to_string(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=15"
        );
    }

    #[test]
    fn refuses_what_the_offer_does_not_allow() {
        let d = DeflateOptions::default();
        for (offer, answer, why) in [
            (d, "", "empty"),
            (d, "x-webkit-deflate-frame", "not offered"),
            (
                d,
                "permessage-deflate, permessage-deflate",
                "more than the one",
            ),
            (d, "permessage-deflate; foo", "unknown parameter"),
            (
                d,
                "permessage-deflate; server_max_window_bits=16",
                "not a window size",
            ),
            (
                d,
                "permessage-deflate; server_max_window_bits=7",
                "not a window size",
            ),
            (
                d,
                "permessage-deflate; server_max_window_bits=010",
                "not a window size",
            ),
            (
                d,
                "permessage-deflate; server_max_window_bits",
                "needs a value",
            ),
            (
                d,
                "permessage-deflate; client_max_window_bits",
                "needs a value",
            ),
            (
                d,
                "permessage-deflate; server_no_context_takeover=1",
                "takes no value",
            ),
            (
                d,
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                "repeated",
            ),
            (
                d.server_max_window_bits(Some(10)),
                "permessage-deflate; server_max_window_bits=11",
                "larger than the 10 offered",
            ),
            (
                d.server_max_window_bits(Some(10)),
                "permessage-deflate",
                "offered but not accepted",
            ),
            (
                d.client_max_window_bits(10),
                "permessage-deflate; client_max_window_bits=12",
                "larger than the 10 offered",
            ),
        ] {
            let e = err(offer, answer);
            assert!(e.starts_with("Sec-WebSocket-Extensions: "), "{e}");
            assert!(e.contains(why), "{answer:?}: {e}");
        }
    }

    /// RFC 7692 §7.1.1.1: asked for, `server_no_context_takeover` is in both offers (the
    /// fallback differs only in `client_no_context_takeover`), so an answer without it
    /// matches none and fails, naming it, as a dropped `server_max_window_bits` does (it
    /// opened with the server's context taken over; Python websockets fails here too).
    #[test]
    fn a_requested_server_no_context_takeover_must_be_accepted() {
        let asked = DeflateOptions::default().server_no_context_takeover(true);
        for offer in split_outside_quotes(&asked.offer_header(), ',') {
            assert!(offer.contains("server_no_context_takeover"), "{offer}");
        }
        for answer in [
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10",
        ] {
            assert_eq!(
                err(asked, answer),
                "Sec-WebSocket-Extensions: server_no_context_takeover was offered but not \
                 accepted",
                "{answer}"
            );
        }
        for answer in [
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ] {
            assert!(ok(asked, answer).server_no_context_takeover, "{answer}");
        }
        // Not asked for, the server may still choose it, or not.
        let d = DeflateOptions::default();
        assert!(!ok(d, "permessage-deflate").server_no_context_takeover);
        assert!(ok(d, "permessage-deflate; server_no_context_takeover").server_no_context_takeover);
    }

    #[test]
    fn a_server_accepts_the_first_valid_offer_and_the_client_agrees() {
        assert_eq!(accept_offer("x-webkit-deflate-frame"), None);
        assert_eq!(accept_offer("permessage-deflate; bogus"), None);
        let (p, answer) = accept_offer(
            "permessage-deflate; server_max_window_bits=99, permessage-deflate; server_max_window_bits=10; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=10");
        assert_eq!(p.server_max_window_bits, 10);
        // Whatever our client offers, our server accepts, and the client agrees to it.
        for offer in [
            DeflateOptions::default(),
            DeflateOptions::default()
                .client_no_context_takeover(true)
                .server_no_context_takeover(true),
            DeflateOptions::default()
                .server_max_window_bits(Some(9))
                .client_max_window_bits(11),
        ] {
            let (server, answer) = accept_offer(&offer.offer_header()).unwrap();
            assert_eq!(offer.negotiate(&answer).unwrap(), server, "{answer}");
        }
    }

    #[test]
    fn validates_window_sizes_and_level_of_the_offer() {
        assert_eq!(DeflateOptions::default().invalid_field(), None);
        let field = |o: DeflateOptions| match o.invalid_field() {
            Some(ConnectError::InvalidDeflate { field, value, .. }) => Some((field, value)),
            _ => None,
        };
        assert_eq!(
            field(DeflateOptions::default().server_max_window_bits(Some(16))),
            Some(("server_max_window_bits", 16))
        );
        assert_eq!(
            field(DeflateOptions::default().client_max_window_bits(7)),
            Some(("client_max_window_bits", 7))
        );
        assert_eq!(field(DeflateOptions::default().level(9)), None);
        assert_eq!(
            field(DeflateOptions::default().level(10)),
            Some(("level", 10))
        );
    }
}
