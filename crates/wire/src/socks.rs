//! SOCKS5 proxies: the exchange that opens a tunnel through one ([`Socks5Connect`], sans-IO
//! like [`crate::proxy::ProxyConnect`]): the greeting and its chosen method (RFC 1928 §3),
//! the user name and password when the proxy asks for them (RFC 1929), and the `CONNECT`
//! request and its reply (RFC 1928 §4–6).
//!
//! The server's host goes to the proxy as it is written in the URL (a name, or an IP
//! address), so the proxy resolves a name: with `socks5h://` and `socks5://` alike, as
//! Chrome and Go do. Each step waits for the proxy's answer before the next is written.
//!
//! ```
//! use wxsocket_core::Proxy;
//! use wxsocket_wire::socks::Socks5Connect;
//!
//! let proxy = Proxy::parse("socks5h://alice:secret@proxy.corp:1080").unwrap();
//! let mut connect = Socks5Connect::new(&proxy, "chat.example.com", 443);
//! // The greeting offers no authentication and a user name with a password.
//! assert_eq!(connect.outgoing(), [5, 2, 0, 2]);
//! connect.wrote(connect.outgoing().len());
//! assert!(!connect.feed(&[5, 2]).unwrap()); // the proxy chose the user name and password
//! assert_eq!(connect.outgoing(), b"\x01\x05alice\x06secret");
//! connect.wrote(connect.outgoing().len());
//! assert!(!connect.feed(&[1, 0]).unwrap()); // accepted
//! assert_eq!(connect.outgoing(), b"\x05\x01\x00\x03\x10chat.example.com\x01\xbb");
//! connect.wrote(connect.outgoing().len());
//! // Granted, the proxy bound to 10.0.0.1:4242: the tunnel is open.
//! assert!(connect.feed(&[5, 0, 0, 1, 10, 0, 0, 1, 0x10, 0x92]).unwrap());
//! ```

use crate::proxy::proxy_error;
use std::fmt;
use std::net::IpAddr;
use wxsocket_core::{Proxy, TransportError, TransportErrorKind};

const VERSION: u8 = 5;
/// RFC 1929's sub-negotiation version.
const AUTH_VERSION: u8 = 1;
const NO_AUTHENTICATION: u8 = 0;
const USERNAME_PASSWORD: u8 = 2;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;
const IPV4: u8 = 1;
const DOMAIN: u8 = 3;
const IPV6: u8 = 4;

/// The longest host name a `CONNECT` request can carry (a one-byte length).
pub const MAX_SOCKS5_HOST: usize = 255;

/// Where the exchange is: the answer it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The method the proxy chose, after the greeting.
    Method,
    /// The verdict on the user name and password.
    Authentication,
    /// The reply to `CONNECT`.
    Reply,
    /// The tunnel is open.
    Open,
}

impl Step {
    /// What the proxy answers at this step, as errors name it.
    fn answer(self) -> &'static str {
        match self {
            Step::Method => "the greeting",
            Step::Authentication => "the user name and password",
            Step::Reply | Step::Open => "CONNECT",
        }
    }
}

/// A SOCKS5 exchange with a proxy, without IO: write [`outgoing`](Self::outgoing) (and
/// report it with [`wrote`](Self::wrote)), [`feed`](Self::feed) what the proxy sends, and
/// write again whatever is outgoing then, until `feed` returns `true` (the tunnel is open)
/// or an error.
///
/// `Debug` leaves out the messages, which may carry credentials.
pub struct Socks5Connect {
    step: Step,
    /// The message being written, and how much of it is.
    out: Vec<u8>,
    written: usize,
    /// The proxy's answer so far at this step.
    answer: Vec<u8>,
    /// The user name and password message, when the proxy URL has credentials.
    authentication: Option<Vec<u8>>,
    /// The `CONNECT` request, written once the method is settled.
    request: Vec<u8>,
    /// Whether the request carries the server's name (not an address).
    sent_a_name: bool,
    proxy: String,
    target: String,
}

impl fmt::Debug for Socks5Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socks5Connect")
            .field("proxy", &self.proxy)
            .field("target", &self.target)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Refuses, before any IO, a host a `CONNECT` request cannot carry (a name over
/// [`MAX_SOCKS5_HOST`] bytes), naming the proxy.
pub fn check_host(proxy: &Proxy, host: &str) -> Result<(), TransportError> {
    if address(host).is_none() && host.len() > MAX_SOCKS5_HOST {
        return Err(TransportError::new(
            TransportErrorKind::Connect,
            format!(
                "proxy {proxy}: the server's host name is {} bytes long, and SOCKS5 carries at \
                 most {MAX_SOCKS5_HOST}",
                host.len()
            ),
        ));
    }
    Ok(())
}

/// The host as an IP address, if it is one (IPv6 in brackets or not).
fn address(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

impl Socks5Connect {
    /// The exchange for `host:port` (the host as a URL writes it: an IPv6 address in
    /// brackets), through `proxy`. A name longer than [`MAX_SOCKS5_HOST`] bytes is
    /// [`check_host`]'s to refuse; here it would be cut.
    pub fn new(proxy: &Proxy, host: &str, port: u16) -> Self {
        let authentication = proxy.credentials().map(|c| {
            let (user, password) = (c.username().as_bytes(), c.password().as_bytes());
            let mut message = vec![AUTH_VERSION, user.len() as u8];
            message.extend_from_slice(user);
            message.push(password.len() as u8);
            message.extend_from_slice(password);
            message
        });
        let greeting = if authentication.is_some() {
            vec![VERSION, 2, NO_AUTHENTICATION, USERNAME_PASSWORD]
        } else {
            vec![VERSION, 1, NO_AUTHENTICATION]
        };
        let mut request = vec![VERSION, CONNECT, 0];
        match address(host) {
            Some(IpAddr::V4(ip)) => {
                request.push(IPV4);
                request.extend_from_slice(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                request.push(IPV6);
                request.extend_from_slice(&ip.octets());
            }
            None => {
                let name = &host.as_bytes()[..host.len().min(MAX_SOCKS5_HOST)];
                request.push(DOMAIN);
                request.push(name.len() as u8);
                request.extend_from_slice(name);
            }
        }
        request.extend_from_slice(&port.to_be_bytes());
        Self {
            sent_a_name: address(host).is_none(),
            step: Step::Method,
            out: greeting,
            written: 0,
            answer: Vec::new(),
            authentication,
            request,
            proxy: proxy.to_string(),
            target: format!("{host}:{port}"),
        }
    }

    /// The bytes still to write of the current message (empty while waiting for an answer).
    pub fn outgoing(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// `n` bytes of [`Self::outgoing`] were written.
    pub fn wrote(&mut self, n: usize) {
        self.written = (self.written + n).min(self.out.len());
    }

    /// Feeds bytes from the proxy. `Ok(false)`: more are needed (and the next message may
    /// be outgoing); `Ok(true)`: the proxy granted `CONNECT` and the tunnel is open. A
    /// refusal is an error naming the proxy (never its credentials) and what it said:
    /// [`TransportErrorKind::ProxyRefused`] for a refusal of this client (no acceptable
    /// method, credentials refused, not allowed by its rules) or of what it asked (a command
    /// or address type the proxy does not support), `Connect` for a server it could not
    /// reach, `Protocol` for anything that is not SOCKS5 as RFC 1928 writes it.
    pub fn feed(&mut self, data: &[u8]) -> Result<bool, TransportError> {
        if self.step == Step::Open {
            return Err(self.protocol("sent bytes after its reply to CONNECT"));
        }
        self.answer.extend_from_slice(data);
        let Some(len) = self.answer_len()? else {
            return Ok(false);
        };
        if len < self.answer.len() {
            // The proxy speaks only when asked (and the server only after the client).
            return Err(self.protocol(&format!(
                "sent more than its answer to {}",
                self.step.answer()
            )));
        }
        if self.written < self.out.len() {
            return Err(self.protocol(&format!(
                "answered {} before it was written",
                self.step.answer()
            )));
        }
        let answer = std::mem::take(&mut self.answer);
        self.step = match self.step {
            Step::Method => self.method_chosen(answer[1])?,
            Step::Authentication => self.authenticated(answer[1])?,
            Step::Reply | Step::Open => self.replied(answer[1])?,
        };
        Ok(self.step == Step::Open)
    }

    /// The length of the whole answer at the start of what came, `None` while it is partial.
    fn answer_len(&self) -> Result<Option<usize>, TransportError> {
        let a = &self.answer;
        let Some(&version) = a.first() else {
            return Ok(None);
        };
        let expected = match self.step {
            Step::Authentication => AUTH_VERSION,
            _ => VERSION,
        };
        // Many proxies answer the credentials with the SOCKS version, 5, instead of RFC
        // 1929's own 1 (microsocks did until 2018): read as curl, tinyproxy and
        // proxychains-ng read it, the status deciding.
        let tolerated = self.step == Step::Authentication && version == VERSION;
        if version != expected && !tolerated {
            let mut what = format!(
                "answered {} with version {version}, not {expected}",
                self.step.answer()
            );
            if a.starts_with(b"HTTP/") || b"HTTP/".starts_with(a) {
                what = format!(
                    "answered {} in HTTP: is it an http:// proxy?",
                    self.step.answer()
                );
            }
            return Err(self.protocol(&what));
        }
        Ok(match self.step {
            Step::Method | Step::Authentication => (a.len() >= 2).then_some(2),
            // A refusal is reported as soon as its code is in, whatever follows it.
            Step::Reply | Step::Open if a.get(1).is_some_and(|&code| code != 0) => Some(a.len()),
            Step::Reply | Step::Open => {
                // VER REP RSV ATYP BND.ADDR BND.PORT
                let address = match a.get(3) {
                    None => return Ok(None),
                    Some(&IPV4) => 4,
                    Some(&IPV6) => 16,
                    Some(&DOMAIN) => match a.get(4) {
                        None => return Ok(None),
                        Some(&n) => 1 + usize::from(n),
                    },
                    Some(&other) => {
                        return Err(
                            self.protocol(&format!("replied to CONNECT with address type {other}"))
                        );
                    }
                };
                let len = 4 + address + 2;
                (a.len() >= len).then_some(len)
            }
        })
    }

    /// The proxy chose `method`: the next message is the credentials or the request.
    fn method_chosen(&mut self, method: u8) -> Result<Step, TransportError> {
        match (method, self.authentication.take()) {
            (NO_AUTHENTICATION, _) => {
                let request = std::mem::take(&mut self.request);
                self.send(request);
                Ok(Step::Reply)
            }
            (USERNAME_PASSWORD, Some(message)) => {
                self.send(message);
                Ok(Step::Authentication)
            }
            (NO_ACCEPTABLE_METHOD, None) => Err(self.refused(
                "requires authentication, and the proxy URL has no user name and password"
                    .to_owned(),
            )),
            (NO_ACCEPTABLE_METHOD, Some(_)) => Err(self.refused(
                "accepted none of the authentication methods offered (none, user name and \
                 password)"
                    .to_owned(),
            )),
            (other, _) => Err(self.protocol(&format!(
                "chose authentication method {other:#04x}, which was not offered"
            ))),
        }
    }

    /// The proxy's verdict on the credentials.
    fn authenticated(&mut self, status: u8) -> Result<Step, TransportError> {
        if status != 0 {
            return Err(self.refused(format!(
                "refused the user name and password (RFC 1929 status {status})"
            )));
        }
        let request = std::mem::take(&mut self.request);
        self.send(request);
        Ok(Step::Reply)
    }

    /// The proxy's reply to `CONNECT`.
    fn replied(&mut self, code: u8) -> Result<Step, TransportError> {
        let (kind, reason) = match code {
            0 => return Ok(Step::Open),
            1 => (TransportErrorKind::Connect, "general SOCKS server failure"),
            2 => (
                TransportErrorKind::ProxyRefused,
                "connection not allowed by ruleset",
            ),
            3 => (TransportErrorKind::Connect, "network unreachable"),
            4 => (TransportErrorKind::Connect, "host unreachable"),
            5 => (TransportErrorKind::Connect, "connection refused"),
            6 => (TransportErrorKind::Connect, "TTL expired"),
            // What this proxy does not do, it will not do on the next attempt either.
            7 => (TransportErrorKind::ProxyRefused, "command not supported"),
            8 => (
                TransportErrorKind::ProxyRefused,
                "address type not supported",
            ),
            _ => (TransportErrorKind::Protocol, "an unassigned reply code"),
        };
        let mut message = format!(
            "proxy {} refused CONNECT {}: {reason} (SOCKS5 reply {code})",
            self.proxy, self.target
        );
        if code == 8 && self.sent_a_name {
            message.push_str(
                "; the server's name was sent for the proxy to resolve (with socks5:// too): \
                 this proxy takes addresses only, so give the server's IP address in the URL",
            );
        }
        Err(TransportError::new(kind, message))
    }

    fn send(&mut self, message: Vec<u8>) {
        self.out = message;
        self.written = 0;
    }

    /// The proxy, as its errors name it (its URL, credentials left out).
    pub fn proxy(&self) -> &str {
        &self.proxy
    }

    /// The error for a proxy that closed the connection before the tunnel opened: what
    /// it was to answer, and how much of the answer came.
    ///
    /// A close with nothing of the answer to the credentials is how some proxies refuse
    /// them (`pproxy` sends no RFC 1929 failure status): [`TransportErrorKind::ProxyRefused`],
    /// as that status would be, so a reconnect policy does not dial a wrong password again
    /// and again. A close with nothing of the answer to the greeting is how `pproxy` turns
    /// away a client without credentials, but also what a TCP forwarder in front of a proxy
    /// that is down does (`ssh -L`, `socat`, Docker's userland proxy): a protocol error that
    /// says both, which a reconnect policy dials again.
    pub fn closed_early(&self) -> TransportError {
        let answer = self.step.answer();
        if let Some(refusal) = self.turned_away("closed the connection") {
            return refusal;
        }
        if self.answer.is_empty() {
            return self.protocol(&format!("closed the connection before answering {answer}"));
        }
        self.protocol(&format!(
            "closed the connection in the middle of its answer to {answer} ({} bytes in)",
            self.answer.len()
        ))
    }

    /// An IO error during the exchange, naming the proxy; a reset where
    /// [`Self::closed_early`] sees a refusal is that refusal.
    pub fn io_error(&self, error: &std::io::Error) -> TransportError {
        if crate::handshake::is_reset(error)
            && let Some(refusal) = self.turned_away("reset the connection")
        {
            return refusal;
        }
        TransportError::new(
            TransportErrorKind::Io,
            format!(
                "proxy {}: SOCKS5 CONNECT {}: {error}",
                self.proxy, self.target
            ),
        )
    }

    /// What a proxy's close (`how`) with nothing of its answer means, at the steps where it
    /// may be a refusal: after the credentials, a refusal of them (only the proxy itself
    /// answered the greeting); after the greeting, a refusal or a proxy that a forwarder in
    /// front of it could not reach, which only a retry tells apart.
    fn turned_away(&self, how: &str) -> Option<TransportError> {
        if !self.answer.is_empty() || !self.outgoing().is_empty() {
            return None;
        }
        let answer = self.step.answer();
        match (self.step, self.authentication.is_some()) {
            (Step::Authentication, _) => Some(self.refused(format!(
                "{how} without answering {answer} (the user name and password were refused)"
            ))),
            (Step::Method, credentials) => {
                let refusal = if credentials {
                    "it may accept none of the authentication methods offered"
                } else {
                    "it may refuse this client: it may require a user name and password, and \
                     the proxy URL has no user name and password"
                };
                Some(self.protocol(&format!(
                    "{how} without answering {answer} ({refusal}; or a forwarder in front of \
                     the proxy could not reach it)"
                )))
            }
            (Step::Reply | Step::Open, _) => None,
        }
    }

    fn refused(&self, what: String) -> TransportError {
        proxy_error(TransportErrorKind::ProxyRefused, &self.proxy, &what)
    }

    fn protocol(&self, what: &str) -> TransportError {
        proxy_error(TransportErrorKind::Protocol, &self.proxy, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(url: &str) -> Proxy {
        Proxy::parse(url).unwrap()
    }

    /// Writes whatever is outgoing, returning it.
    fn take(c: &mut Socks5Connect) -> Vec<u8> {
        let out = c.outgoing().to_vec();
        c.wrote(out.len());
        out
    }

    #[test]
    fn without_credentials_the_greeting_offers_none_and_the_request_follows() {
        let mut c = Socks5Connect::new(&proxy("socks5://p"), "[::1]", 9001);
        assert_eq!(take(&mut c), [5, 1, 0]);
        assert!(c.outgoing().is_empty());
        assert!(!c.feed(&[5]).unwrap());
        assert!(!c.feed(&[0]).unwrap());
        let mut expected = vec![5, 1, 0, 4];
        expected.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        expected.extend_from_slice(&[0x23, 0x29]);
        assert_eq!(take(&mut c), expected);
        // A reply bound to a name, given a byte at a time.
        let reply = [5, 0, 0, 3, 4, b'h', b'o', b's', b't', 0, 80];
        for (i, b) in reply.iter().enumerate() {
            assert_eq!(c.feed(&[*b]).unwrap(), i == reply.len() - 1, "byte {i}");
        }
        let e = c.feed(b"x").unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        let mut c = Socks5Connect::new(&proxy("socks5h://p"), "10.1.2.3", 80);
        take(&mut c);
        c.feed(&[5, 0]).unwrap();
        assert_eq!(take(&mut c), [5, 1, 0, 1, 10, 1, 2, 3, 0, 80]);
    }

    #[test]
    fn refusals_name_the_proxy_and_what_it_said_never_the_credentials() {
        let with = proxy("socks5h://user:hunter2@p:1");
        let without = proxy("socks5h://p:1");
        let cases: [(&Proxy, &[&[u8]], TransportErrorKind, &str); 9] = [
            (
                &without,
                &[&[5, 0xff]],
                TransportErrorKind::ProxyRefused,
                "no user name",
            ),
            (
                &with,
                &[&[5, 0xff]],
                TransportErrorKind::ProxyRefused,
                "none of the",
            ),
            (
                &with,
                &[&[5, 2], &[1, 1]],
                TransportErrorKind::ProxyRefused,
                "status 1",
            ),
            (
                &without,
                &[&[5, 2]],
                TransportErrorKind::Protocol,
                "method 0x02",
            ),
            (
                &without,
                &[&[5, 0], &[5, 2, 0, 1]],
                TransportErrorKind::ProxyRefused,
                "ruleset (SOCKS5 reply 2)",
            ),
            (
                &without,
                &[&[5, 0], &[5, 5]],
                TransportErrorKind::Connect,
                "refused CONNECT h.example:443: connection refused",
            ),
            (
                &without,
                &[&[5, 0], &[5, 8, 0, 1]],
                TransportErrorKind::ProxyRefused,
                "address type not supported (SOCKS5 reply 8); the server's name was sent",
            ),
            (
                &without,
                &[&[5, 0], &[5, 0, 0, 9, 1]],
                TransportErrorKind::Protocol,
                "address type 9",
            ),
            (
                &without,
                &[b"HTTP/1.1 400 Bad"],
                TransportErrorKind::Protocol,
                "in HTTP",
            ),
        ];
        for (proxy, answers, kind, says) in cases {
            let mut c = Socks5Connect::new(proxy, "h.example", 443);
            let mut result = Ok(false);
            for answer in answers {
                take(&mut c);
                result = c.feed(answer);
                if result.is_err() {
                    break;
                }
            }
            let e = result.unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(says), "{e}");
            assert!(e.message.starts_with("proxy socks5h://p:1 "), "{e}");
            assert!(!format!("{e:?} {c:?}").contains("hunter2"), "{e:?}");
        }
    }

    #[test]
    fn answers_out_of_turn_are_protocol_errors() {
        let p = proxy("socks5h://p:1");
        // More than the method's answer at once.
        let mut c = Socks5Connect::new(&p, "h", 1);
        take(&mut c);
        assert!(
            c.feed(&[5, 0, 5])
                .unwrap_err()
                .message
                .contains("more than")
        );
        // An answer before the greeting was written.
        let mut c = Socks5Connect::new(&p, "h", 1);
        assert!(
            c.feed(&[5, 0])
                .unwrap_err()
                .message
                .contains("before it was written")
        );
        // A close after part of the reply says how far it came.
        let mut c = Socks5Connect::new(&p, "h", 1);
        take(&mut c);
        c.feed(&[5, 0]).unwrap();
        take(&mut c);
        c.feed(&[5, 0, 0]).unwrap();
        let e = c.closed_early();
        assert!(e.message.contains("answer to CONNECT (3 bytes in)"), "{e}");
    }

    /// A close or a reset with nothing of the answer to the credentials is a refusal
    /// (`pproxy`'s way); with nothing of the answer to the greeting it may be one, or a
    /// forwarder whose proxy is down (a reviewer): a protocol error saying both, retried;
    /// later, or after part of an answer, it is neither.
    #[test]
    fn a_close_without_an_answer_to_the_greeting_or_the_credentials_is_a_refusal() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let check = |e: TransportError, kind: TransportErrorKind, says: &str| {
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(says), "{e}");
            assert!(!e.message.contains("hunter2"), "{e}");
        };
        let refused = |e, says| check(e, TransportErrorKind::ProxyRefused, says);
        let unsure = |e, says| check(e, TransportErrorKind::Protocol, says);
        let mut c = Socks5Connect::new(&proxy("socks5h://p:1"), "h", 1);
        // Not yet written: not a refusal of anything.
        assert_eq!(c.closed_early().kind, TransportErrorKind::Protocol);
        take(&mut c);
        unsure(
            c.closed_early(),
            "closed the connection without answering the greeting",
        );
        unsure(
            c.io_error(&reset),
            "the proxy URL has no user name and password; or a forwarder",
        );
        let mut c = Socks5Connect::new(&proxy("socks5h://u:hunter2@p:1"), "h", 1);
        take(&mut c);
        unsure(
            c.closed_early(),
            "accept none of the authentication methods",
        );
        c.feed(&[5, 2]).unwrap();
        take(&mut c);
        refused(c.closed_early(), "the user name and password were refused");
        refused(
            c.io_error(&reset),
            "reset the connection without answering the user name",
        );
        c.feed(&[1, 0]).unwrap();
        take(&mut c);
        assert_eq!(c.closed_early().kind, TransportErrorKind::Protocol);
        assert_eq!(c.io_error(&reset).kind, TransportErrorKind::Io);
        c.feed(&[1]).unwrap_err();
    }

    /// A reviewer: many proxies answer the RFC 1929 sub-negotiation with the SOCKS version,
    /// `05 00`, instead of its own version 1 (microsocks did until 2018-05-29, commit
    /// 1998a16; tinyproxy, proxychains-ng and curl accept both forms, curl ignoring the
    /// byte). Such a proxy accepted the credentials: the request follows; `05 01` is its
    /// refusal of them, as `01 01` is.
    #[test]
    fn a_credentials_answer_with_the_socks_version_is_read_as_curl_reads_it() {
        let p = proxy("socks5h://alice:hunter2@p:1");
        let mut c = Socks5Connect::new(&p, "h.example", 443);
        take(&mut c);
        assert!(!c.feed(&[5, 2]).unwrap());
        take(&mut c);
        assert!(!c.feed(&[5, 0]).unwrap(), "accepted");
        assert_eq!(take(&mut c), b"\x05\x01\x00\x03\x09h.example\x01\xbb");
        assert!(c.feed(&[5, 0, 0, 1, 10, 0, 0, 1, 0, 80]).unwrap());

        let mut c = Socks5Connect::new(&p, "h.example", 443);
        take(&mut c);
        c.feed(&[5, 2]).unwrap();
        take(&mut c);
        let e = c.feed(&[5, 1]).unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::ProxyRefused, "{e}");
        assert!(
            e.message.contains("refused the user name and password"),
            "{e}"
        );
    }

    #[test]
    fn a_host_name_over_255_bytes_is_refused_before_any_io() {
        let p = proxy("socks5h://p:1");
        let long = "a".repeat(256);
        let e = check_host(&p, &long).unwrap_err();
        assert!(e.message.contains("256 bytes"), "{e}");
        assert!(check_host(&p, &"a".repeat(255)).is_ok());
        assert!(check_host(&p, "[::1]").is_ok());
    }
}
