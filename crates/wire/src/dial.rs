//! The dial both adapters follow, written once: where the TCP connection goes (the server,
//! or the proxy, HTTP or SOCKS5, the request is routed through), what a failure at each step is called,
//! the TLS server name, and the codecs of a connection once its handshake is done. The
//! adapters keep only how they wait for a socket.
//!
//! The steps: resolve [`DialPlan::tcp_target`] (unless it is an IP address), connect to its
//! addresses as [`Attempts`] paces them, set `TCP_NODELAY` if asked, open the proxy's tunnel
//! ([`DialPlan::tunnel`]) if there is one, TLS for `wss` with
//! [`DialPlan::tls_server_name`], then the upgrade ([`crate::ClientHandshake`]). Each
//! failure is a [`TransportError`] made here, so both adapters report the same text.

use crate::convert::connect_error;
use crate::deflate::{Compressor, Inflater};
use crate::proxy::{ProxyEnv, Tunnel};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tungstenite::Message as WsMessage;

pub use rustls_pki_types::ServerName;
use wxsocket_core::{
    Handshake, HandshakeRequest, Message, Proxy, ProxyProtocol, TransportError, TransportErrorKind,
};

/// The name lookups a driver has in flight, each with the dials waiting for it, so that
/// dials of the same host and port share one. The OS resolver only blocks, and a lookup
/// cannot be cancelled: a dial that gave up (its handshake timeout) leaves its lookup
/// running, and one lookup per dial piled up threads while the resolver was slow (a user's
/// probe: 1,000 resolver threads for 20 clients retrying a host whose lookups took 10 s).
/// With this, a driver runs at most one lookup per host and port at a time.
///
/// Sans-IO: the adapter calls [`Lookups::join`] for a dial that needs a lookup and starts
/// one only when told to; when it ends, [`Lookups::finish`] hands back the waiters, each of
/// which gets [`share`] of the answer. Waiters that no longer wait (their dial was aborted)
/// are dropped with [`Lookups::retain`].
///
/// ```
/// use wxsocket_wire::connection::DialTarget;
/// use wxsocket_wire::dial::Lookups;
/// let host = DialTarget { host: "example.com".into(), port: 443 };
/// let mut lookups = Lookups::default();
/// assert!(lookups.join(&host, 1), "the first dial starts the lookup");
/// assert!(!lookups.join(&host, 2), "the second waits for it");
/// lookups.retain(|&dial| dial != 1); // dial 1 was aborted
/// assert_eq!(lookups.finish(&host), [2]);
/// assert!(lookups.join(&host, 3), "a later dial starts a new one");
/// ```
#[derive(Debug)]
pub struct Lookups<W> {
    in_flight: std::collections::HashMap<crate::connection::DialTarget, Vec<W>>,
}

impl<W> Default for Lookups<W> {
    fn default() -> Self {
        Self {
            in_flight: std::collections::HashMap::new(),
        }
    }
}

impl<W> Lookups<W> {
    /// Adds `waiter` to the lookup of `target`; `true` when none is in flight, and the
    /// caller must start it.
    pub fn join(&mut self, target: &crate::connection::DialTarget, waiter: W) -> bool {
        match self.in_flight.get_mut(target) {
            Some(waiters) => {
                waiters.push(waiter);
                false
            }
            None => {
                self.in_flight.insert(target.clone(), vec![waiter]);
                true
            }
        }
    }

    /// The lookup of `target` ended: its waiters, in the order they joined.
    pub fn finish(&mut self, target: &crate::connection::DialTarget) -> Vec<W> {
        self.in_flight.remove(target).unwrap_or_default()
    }

    /// Keeps only the waiters for which `wait` holds (the lookups stay in flight).
    pub fn retain(&mut self, mut wait: impl FnMut(&W) -> bool) {
        for waiters in self.in_flight.values_mut() {
            waiters.retain(&mut wait);
        }
    }

    /// How many dials wait for a lookup, over every lookup in flight.
    pub fn waiting(&self) -> usize {
        self.in_flight.values().map(Vec::len).sum()
    }

    /// How many lookups are in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

/// What a name lookup calls: the OS resolver, or in tests one that takes its time.
pub type Resolver = fn(&crate::connection::DialTarget) -> io::Result<Vec<SocketAddr>>;

/// The OS resolver (`getaddrinfo` on Unix), which blocks until it answers.
pub fn resolve(target: &crate::connection::DialTarget) -> io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map(Iterator::collect)
}

/// A lookup's answer for one of its waiters (an `io::Error` cannot be cloned: its kind and
/// text are).
pub fn share(answer: &io::Result<Vec<SocketAddr>>) -> io::Result<Vec<SocketAddr>> {
    match answer {
        Ok(addrs) => Ok(addrs.clone()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

/// How long a TCP connection attempt has before the next address is tried beside it (RFC
/// 8305 §5's recommended Connection Attempt Delay).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The TCP connection attempts of one dial, paced as RFC 8305 (Happy Eyeballs v2) §4–5 asks:
/// the resolved addresses are tried with their families interleaved (the first address's
/// family first), the next attempt starts when one fails or [`ATTEMPT_DELAY`] after the
/// last one began, whichever comes first, and earlier attempts go on beside it; the first to
/// connect wins. So a host whose first address drops the connection attempts (a broken IPv6
/// route, a firewall) is reached on its next address a quarter of a second later, instead
/// of the dial waiting out the handshake timeout on the first.
///
/// Sans-IO: the adapter starts an attempt to each address [`Attempts::next_due`] gives,
/// wakes at [`Attempts::deadline`], reports each failed attempt, and drops the others when
/// one connects.
///
/// ```
/// use std::time::{Duration, Instant};
/// use wxsocket_wire::dial::{ATTEMPT_DELAY, Attempts};
/// let (v6, v4a, v4b) = ("[::1]:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap(), "127.0.0.2:80".parse().unwrap());
/// let start = Instant::now();
/// let mut attempts = Attempts::new(vec![v4a, v4b, v6], start);
/// assert_eq!(attempts.next_due(start), Some(v4a));
/// assert_eq!(attempts.next_due(start), None, "the first attempt has its delay");
/// assert_eq!(attempts.deadline(), Some(start + ATTEMPT_DELAY));
/// // The families alternate: the IPv6 address comes second.
/// assert_eq!(attempts.next_due(start + ATTEMPT_DELAY), Some(v6));
/// // A failure starts the next attempt at once.
/// let later = start + ATTEMPT_DELAY + Duration::from_millis(1);
/// attempts.failed(v6, std::io::ErrorKind::ConnectionRefused.into(), later);
/// assert_eq!(attempts.next_due(later), Some(v4b));
/// ```
#[derive(Debug)]
pub struct Attempts {
    /// The addresses not tried yet, in the order they will be.
    rest: VecDeque<SocketAddr>,
    /// When the next address is due while attempts are in progress.
    next_at: Instant,
    in_progress: usize,
    /// The last attempt that failed, and how.
    last_failure: Option<(SocketAddr, io::Error)>,
}

impl Attempts {
    /// The attempts for the resolved `addrs`, starting at `now`.
    pub fn new(addrs: Vec<SocketAddr>, now: Instant) -> Self {
        let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
        let (mut same, mut other): (VecDeque<_>, VecDeque<_>) =
            addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
        let mut rest = VecDeque::with_capacity(same.len() + other.len());
        loop {
            match (same.pop_front(), other.pop_front()) {
                (None, None) => break,
                (a, b) => rest.extend(a.into_iter().chain(b)),
            }
        }
        Attempts {
            rest,
            next_at: now,
            in_progress: 0,
            last_failure: None,
        }
    }

    /// The address to start an attempt to now, if one is due (counted in progress from
    /// then on).
    pub fn next_due(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.in_progress > 0 && now < self.next_at {
            return None;
        }
        let addr = self.rest.pop_front()?;
        self.in_progress += 1;
        self.next_at = now + ATTEMPT_DELAY;
        Some(addr)
    }

    /// When the next address is due, while one is left and attempts are in progress.
    pub fn deadline(&self) -> Option<Instant> {
        (self.in_progress > 0 && !self.rest.is_empty()).then_some(self.next_at)
    }

    /// The attempt to `addr` failed (also one that could not start): the next address is
    /// due at once.
    pub fn failed(&mut self, addr: SocketAddr, error: io::Error, now: Instant) {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.last_failure = Some((addr, error));
        self.next_at = now;
    }

    /// Every attempt failed and no address is left: the dial failed, with the last failure
    /// (`None` when there was no address), for [`crate::connection::Connection::connect_failed`].
    pub fn exhausted(&mut self) -> Option<Option<(SocketAddr, io::Error)>> {
        (self.in_progress == 0 && self.rest.is_empty()).then(|| self.last_failure.take())
    }
}

/// Where one connection's TCP connection goes and how its failures are named.
#[derive(Debug, Clone)]
pub struct DialPlan {
    /// The server's host as in the URL (an IPv6 address in brackets) and port.
    host: String,
    port: u16,
    /// The proxy the request goes through, if any.
    proxy: Option<Proxy>,
}

/// `host` without the brackets of an IPv6 address, as resolvers and TLS take it.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

impl DialPlan {
    /// The plan for `request`, its proxy chosen by [`crate::proxy::route`] from `env`.
    pub fn new(request: &HandshakeRequest, env: &ProxyEnv) -> Result<DialPlan, TransportError> {
        let proxy = crate::proxy::route(request, env)?;
        if let Some(proxy) = proxy
            .as_ref()
            .filter(|p| p.protocol() == ProxyProtocol::Socks5)
        {
            crate::socks::check_host(proxy, request.host())?;
        }
        Ok(DialPlan {
            host: request.host().to_owned(),
            port: request.port(),
            proxy,
        })
    }

    /// The host (without brackets) and port the TCP connection goes to: the proxy's, or
    /// the server's.
    pub fn tcp_target(&self) -> (&str, u16) {
        match &self.proxy {
            Some(proxy) => (bare(proxy.host()), proxy.port()),
            None => (bare(&self.host), self.port),
        }
    }

    /// Whether the connection goes through a proxy.
    pub fn is_proxied(&self) -> bool {
        self.proxy.is_some()
    }

    /// What a failure to reach the TCP target names: the server's host, or the proxy.
    fn target_name(&self) -> String {
        match &self.proxy {
            Some(proxy) => format!("proxy {proxy}"),
            None => self.host.clone(),
        }
    }

    /// Resolving the TCP target failed.
    pub fn resolve_failed(&self, error: &io::Error) -> TransportError {
        connect_error(error, &format!("resolve {}", self.target_name()))
    }

    /// The TCP target resolved to no address.
    pub fn no_address(&self) -> TransportError {
        TransportError::new(
            TransportErrorKind::Connect,
            format!("resolve {}: no address found", self.target_name()),
        )
    }

    /// Connecting to `addr`, the last address tried, failed.
    pub fn connect_failed(&self, addr: SocketAddr, error: &io::Error) -> TransportError {
        connect_error(
            error,
            &format!("connect to {} ({addr})", self.target_name()),
        )
    }

    /// Setting up the connected socket failed: `what` is the step, e.g. "setting
    /// TCP_NODELAY" (the error's text names it).
    pub fn socket_failed(error: &io::Error, what: &str) -> TransportError {
        connect_error(error, &format!("socket: {what}"))
    }

    /// The exchange that opens the tunnel to the server, when there is a proxy.
    pub fn tunnel(&self) -> Option<Tunnel> {
        self.proxy
            .as_ref()
            .map(|proxy| Tunnel::new(proxy, &self.host, self.port))
    }

    /// The name TLS checks the server's certificate against: the server's host (also
    /// through a tunnel).
    pub fn tls_server_name(&self) -> Result<ServerName<'static>, TransportError> {
        let host = bare(&self.host);
        ServerName::try_from(host.to_owned()).map_err(|e| {
            TransportError::new(
                TransportErrorKind::Tls,
                format!("tls: invalid server name {host:?}: {e}"),
            )
        })
    }
}

/// Reading or writing failed during TLS (`what` = `"tls"`) or the upgrade (`"handshake"`),
/// `via` the tunnel of this proxy if there is one. Through a tunnel, a reset names the
/// proxy as its end does (the client cannot tell which of the two broke it).
pub fn handshake_failed(error: &io::Error, what: &str, via: Option<&str>) -> TransportError {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match (error.kind(), via) {
        (UnexpectedEof, _) => handshake_closed(what, via),
        (ConnectionReset | ConnectionAborted | BrokenPipe, Some(proxy)) => TransportError::new(
            TransportErrorKind::Connect,
            format!(
                "{what}: the tunnel through proxy {proxy} was broken before the server \
                 answered ({error})"
            ),
        ),
        _ => connect_error(error, what),
    }
}

/// The connection closed before the server's TLS (`what` = `"tls"`) or upgrade
/// (`"handshake"`) answer was complete: a dial that failed on the network, as a reset
/// there is ([`TransportErrorKind::Connect`]). Through a proxy's tunnel (`via`, the proxy as its
/// errors name it) the client cannot tell whether the proxy or the server closed it.
pub fn handshake_closed(what: &str, via: Option<&str>) -> TransportError {
    let message = match via {
        None => format!("{what}: the server closed the connection before answering"),
        Some(proxy) => {
            format!("{what}: the tunnel through proxy {proxy} closed before the server answered")
        }
    };
    TransportError::new(TransportErrorKind::Connect, message)
}

/// The codecs of a connection whose handshake is `handshake`: an inflater for what it reads
/// and a compressor for what it sends when permessage-deflate was agreed (none without the
/// `deflate` feature, which offers nothing). `max_message_size` bounds an inflated message.
pub fn codecs(
    handshake: &Handshake,
    request: &HandshakeRequest,
    max_message_size: Option<usize>,
) -> (Option<Box<Inflater>>, Encoder) {
    #[cfg(feature = "deflate")]
    if let Some(params) = handshake.deflate {
        let max = max_message_size.unwrap_or(usize::MAX);
        let options = request.per_message_deflate.unwrap_or_default();
        return (
            Some(Box::new(Inflater::new(&params, max))),
            Encoder {
                compressor: Some(Compressor::new(&params, &options)),
                compressed_unflushed: 0,
            },
        );
    }
    let _ = (handshake, request, max_message_size);
    (None, Encoder::default())
}

/// Once this many bytes of messages were compressed since the last flush, the frames go to
/// the socket before the next message is compressed.
///
/// Compression costs far more than a write (~14 µs per KiB at level 6 with zlib-rs on the
/// development machine, against a few µs for a write). Compressing a whole window of
/// messages before one write kept the peer idle while this side compressed, then this side
/// idle while the peer caught up (48 % of the zlib limit in issue 17's measurement).
/// Flushed at this point, the peer works on the frames of one flush while this side
/// compresses the next ones; uncompressed and small messages still go out in batches.
///
/// 16 KiB (about 230 µs of compression at level 6, four 4 KiB messages): a flush per 4 KiB
/// message cost the tokio client a `sendto` per message, ~10 % of its CPU in the kernel
/// (the loopback TCP path runs in the sender's call), and its echo server a read per
/// message; at 16 KiB the client's kernel share fell to ~5 % and the share of the zlib limit
/// rose from 0.79 to 0.85 (medians of 7 interleaved runs, DESIGN.md, 2026-12-04). 32 KiB
/// gained nothing more and holds the peer idle longer at the start of a burst.
pub const FLUSH_AFTER_COMPRESSED: usize = 16 * 1024;

/// How a connection's messages become frames: compressed when permessage-deflate is in
/// force (and the message is long enough), plain otherwise; and when the compressed ones
/// should be flushed ([`FLUSH_AFTER_COMPRESSED`]).
#[derive(Debug, Default)]
pub struct Encoder {
    compressor: Option<Compressor>,
    /// Uncompressed bytes of the messages compressed since the last flush.
    compressed_unflushed: usize,
}

impl Encoder {
    /// An encoder compressing from `threshold` bytes, with default parameters (tests).
    #[cfg(all(test, feature = "deflate"))]
    pub(crate) fn deflating_for_tests(threshold: usize) -> Self {
        let params = wxsocket_core::DeflateParams::default();
        let mut options = wxsocket_core::DeflateOptions::default();
        options.threshold = threshold;
        Encoder {
            compressor: Some(Compressor::new(&params, &options)),
            compressed_unflushed: 0,
        }
    }

    /// The message as tungstenite should write it.
    pub fn encode(&mut self, message: Message) -> WsMessage {
        match &mut self.compressor {
            Some(compressor) => {
                let len = message.len();
                let item = compressor.encode(message);
                if matches!(item, WsMessage::Frame(_)) {
                    self.compressed_unflushed += len;
                }
                item
            }
            None => crate::convert::to_ws(message),
        }
    }

    /// Whether enough was compressed since the last flush that the frames should go out now.
    pub fn flush_due(&self) -> bool {
        self.compressed_unflushed >= FLUSH_AFTER_COMPRESSED
    }

    /// Everything encoded so far was flushed.
    pub fn flushed(&mut self) {
        self.compressed_unflushed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through a proxy's tunnel, a reset during the handshake names the proxy as an early
    /// end does (a user's probe saw "handshake: Connection reset by peer" in some runs and
    /// the proxy named in the others, for the same proxy).
    #[test]
    fn a_reset_tunnel_names_the_proxy() {
        let via = Some("http://proxy:3128");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
        for error in [&reset, &closed] {
            let failed = handshake_failed(error, "handshake", via);
            assert_eq!(failed.kind, TransportErrorKind::Connect);
            assert!(
                failed
                    .message
                    .starts_with("handshake: the tunnel through proxy http://proxy:3128"),
                "{failed}"
            );
        }
        let direct = handshake_failed(&reset, "handshake", None);
        assert!(!direct.message.contains("proxy"), "{direct}");
        assert_eq!(direct.kind, TransportErrorKind::Connect);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Families alternate from the first address's; the attempts are paced by the delay
    /// and by failures; the dial fails once every attempt failed and none is left.
    #[test]
    fn attempts_interleave_families_and_pace_themselves() {
        let given = ["[::1]:1", "[::2]:1", "[::3]:1", "10.0.0.1:1", "10.0.0.2:1"].map(addr);
        let start = Instant::now();
        let mut attempts = Attempts::new(given.to_vec(), start);
        let mut order = Vec::new();
        let mut now = start;
        while let Some(a) = attempts.next_due(now) {
            order.push(a);
            assert_eq!(attempts.next_due(now), None);
            if let Some(at) = attempts.deadline() {
                assert_eq!(at, now + ATTEMPT_DELAY);
                now = at;
            }
        }
        let expected = ["[::1]:1", "10.0.0.1:1", "[::2]:1", "10.0.0.2:1", "[::3]:1"].map(addr);
        assert_eq!(order, expected);
        assert_eq!(attempts.deadline(), None, "none left");
        assert!(attempts.exhausted().is_none(), "five in progress");
        for a in order {
            attempts.failed(a, io::ErrorKind::ConnectionRefused.into(), now);
        }
        let (last, _) = attempts.exhausted().expect("failed").expect("a failure");
        assert_eq!(last, addr("[::3]:1"));
        // Nothing resolved: failed at once, with no address to name.
        let mut none = Attempts::new(Vec::new(), start);
        assert_eq!(none.next_due(start), None);
        assert!(matches!(none.exhausted(), Some(None)));
    }
}
