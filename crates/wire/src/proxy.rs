//! Proxies: which proxy a request goes through ([`route`], with the environment snapshot
//! [`ProxyEnv`]), and the exchange that opens the tunnel ([`Tunnel`]: an HTTP proxy's
//! `CONNECT`, [`ProxyConnect`], or SOCKS5's, [`crate::socks::Socks5Connect`]; sans-IO like
//! [`crate::ClientHandshake`]). Both adapters dial with these, so they choose and talk to
//! proxies identically.
//!
//! Through a proxy, the adapter connects TCP to the proxy, writes
//! [`ProxyConnect::request_bytes`] (`CONNECT host:port`, with `Proxy-Authorization: Basic`
//! when the proxy URL has credentials), feeds the answer to [`ProxyConnect::feed`] until the
//! tunnel is open, and then runs TLS (for `wss://`, with the server's own name: TLS is end to
//! end, the proxy sees only ciphertext) and the WebSocket handshake inside the tunnel, as it
//! would on a direct connection. The core's handshake timeout bounds the whole dial, the
//! `CONNECT` exchange included.
//!
//! ```
//! use wxsocket_core::{ConnectOptions, Proxy};
//! use wxsocket_wire::proxy::{ProxyConnect, ProxyEnv, route};
//!
//! // The environment a client read (here: given as a map, as tests do).
//! let env = ProxyEnv::from_vars([("https_proxy", "http://proxy.corp:3128"), ("no_proxy", ".internal")]);
//! let request = ConnectOptions::new("wss://chat.example.com/ws").validate().unwrap();
//! let proxy = route(&request, &env).unwrap().expect("through the proxy");
//! assert_eq!(proxy.to_string(), "http://proxy.corp:3128");
//! let direct = ConnectOptions::new("wss://db.internal/ws").validate().unwrap();
//! assert_eq!(route(&direct, &env).unwrap(), None);
//!
//! let proxy = Proxy::parse("http://alice:secret@proxy.corp:3128").unwrap();
//! let mut connect = ProxyConnect::new(&proxy, "chat.example.com", 443);
//! assert_eq!(
//!     std::str::from_utf8(connect.request_bytes()).unwrap(),
//!     "CONNECT chat.example.com:443 HTTP/1.1\r\nHost: chat.example.com:443\r\n\
//!      Proxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n"
//! );
//! assert!(!connect.feed(b"HTTP/1.1 200 Connection established\r\n").unwrap());
//! assert!(connect.feed(b"\r\n").unwrap()); // the tunnel is open
//! ```

use crate::handshake::MAX_INTERIM_ANSWERS;
use crate::socks::Socks5Connect;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use wxsocket_core::{
    ConnectError, HandshakeRequest, Proxy, ProxyProtocol, ProxyRoute, TransportError,
    TransportErrorKind,
};

/// Largest proxy answer head accepted (status line and headers).
pub const MAX_PROXY_RESPONSE_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// The proxy variables of an environment, read once at a moment the application chooses
/// (the adapters read the process environment when a client is created, unless
/// [`Config::proxy_env`](crate::client::Config::proxy_env) gives one).
///
/// Read as curl reads them: `https_proxy` for `wss://`, `http_proxy` for `ws://`,
/// `all_proxy` when the scheme's own is unset, and `no_proxy`; each in lower case first,
/// then upper case (`HTTPS_PROXY`, …); an empty value counts as unset. Unlike curl, upper
/// case `HTTP_PROXY` is read too, except in a CGI program (`REQUEST_METHOD` set), where a
/// request header could have set it ("httpoxy").
///
/// `no_proxy` is a list separated by commas or spaces: `*` (no proxy for any host), host
/// names (matching the host and its subdomains, a leading dot optional; international names
/// as the URL's host, in either script), and IP addresses or CIDR ranges (`10.0.0.0/8`,
/// `::1`) matching hosts written as IP addresses (names are not resolved to check them; an
/// IPv4-mapped IPv6 host such as `[::ffff:10.0.0.1]` is matched as its IPv4 address too).
/// An entry may end in a port (`example.com:8443`, `[2001:db8::1]:80`), as Go reads it: it
/// then exempts only connections to that port (the scheme's default when the URL has
/// none). Unlike curl, loopback hosts (`localhost`, `*.localhost`, `127.0.0.0/8`,
/// `::1`, and `127.0.0.0/8` mapped into IPv6) are always reached directly: a proxy
/// elsewhere cannot reach this machine's loopback. An explicit [`wxsocket_core::ConnectOptions::proxy`] is used for
/// every host, loopback included.
///
/// `Debug` hides the credentials of proxy URLs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `(variable, value)` for `ws://`, `wss://`, and both.
    http: Option<(&'static str, String)>,
    https: Option<(&'static str, String)>,
    all: Option<(&'static str, String)>,
    no_proxy: Vec<String>,
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<(&'static str, String)>| match v {
            Some((name, value)) => match Proxy::parse(value) {
                Ok(proxy) => format!("{name}={proxy}"),
                Err(_) => format!("{name}=<invalid>"),
            },
            None => "unset".to_owned(),
        };
        f.debug_struct("ProxyEnv")
            .field("http", &shown(&self.http))
            .field("https", &shown(&self.https))
            .field("all", &shown(&self.all))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxyEnv {
    /// No proxy variables: every connection without an explicit proxy goes direct.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The process environment, now.
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The variables of a map (tests, or an application with its own configuration).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// The variables `lookup` returns.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                let value = lookup(name)?;
                (!value.trim().is_empty()).then(|| (name, value.trim().to_owned()))
            })
        };
        let cgi = lookup("REQUEST_METHOD").is_some();
        let http = if cgi {
            get("http_proxy", "http_proxy")
        } else {
            get("http_proxy", "HTTP_PROXY")
        };
        let no_proxy = get("no_proxy", "NO_PROXY")
            .map(|(_, v)| {
                v.split([',', ' ', '\t'])
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(normalise_entry)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            http,
            https: get("https_proxy", "HTTPS_PROXY"),
            all: get("all_proxy", "ALL_PROXY"),
            no_proxy,
        }
    }

    /// The proxy for a `ws://` or `wss://` URL's scheme, host and port (the scheme's default
    /// when the URL has none), or `None` to go direct. A variable that is not a usable proxy
    /// URL is an error naming it (never its value).
    pub fn proxy_for(
        &self,
        scheme: &str,
        host: &str,
        port: u16,
    ) -> Result<Option<Proxy>, TransportError> {
        self.chosen(scheme, host, port).map_err(|(name, reason)| {
            TransportError::new(
                TransportErrorKind::Connect,
                format!("proxy: the environment's {name}: {reason}"),
            )
        })
    }

    /// Refuses, before any IO, a request whose proxy from this environment is not usable
    /// ([`ConnectError::ProxyEnvironment`], naming the variable): the adapters check every
    /// connect with it, since the environment is read once and every dial would fail alike.
    /// A request with its own proxy or going direct is not checked.
    ///
    /// ```
    /// # use wxsocket_wire::reexports::{ConnectError, ConnectOptions, ProxyEnv};
    /// let env = ProxyEnv::from_vars([("ALL_PROXY", "socks4://127.0.0.1:1080")]);
    /// let request = ConnectOptions::new("wss://chat.example.com/").validate().unwrap();
    /// let refused = env.check(&request).unwrap_err();
    /// assert!(matches!(refused, ConnectError::ProxyEnvironment { variable: "ALL_PROXY", .. }));
    /// let direct = ConnectOptions::new("wss://chat.example.com/").no_proxy().validate().unwrap();
    /// assert!(env.check(&direct).is_ok());
    /// ```
    pub fn check(&self, request: &HandshakeRequest) -> Result<(), ConnectError> {
        match &request.proxy {
            ProxyRoute::Direct | ProxyRoute::Through(_) => Ok(()),
            _ => self
                .chosen(request.url.scheme(), request.host(), port_of(request))
                .map(|_| ())
                .map_err(|(variable, reason)| ConnectError::ProxyEnvironment { variable, reason }),
        }
    }

    /// [`Self::proxy_for`], with a failure as the variable and what is wrong with it.
    fn chosen(
        &self,
        scheme: &str,
        host: &str,
        port: u16,
    ) -> Result<Option<Proxy>, (&'static str, String)> {
        let chosen = match scheme {
            "wss" | "https" => self.https.as_ref(),
            _ => self.http.as_ref(),
        }
        .or(self.all.as_ref());
        let Some((name, value)) = chosen else {
            return Ok(None);
        };
        if is_loopback(host) || self.bypasses(host, port) {
            return Ok(None);
        }
        Proxy::parse(value)
            .map(Some)
            .map_err(|reason| (*name, reason))
    }

    /// Whether `no_proxy` exempts `host` on `port`.
    fn bypasses(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = bare_ip(&host);
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            let (entry, only) = split_port(entry);
            if only.is_some_and(|only| only != port) {
                return false;
            }
            if let Some(ip) = ip {
                return ip_matches(entry, ip);
            }
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let entry = entry.trim_end_matches('.');
            !entry.is_empty()
                && (host == entry
                    || host
                        .strip_suffix(entry)
                        .is_some_and(|rest| rest.ends_with('.')))
        })
    }
}

/// The proxy `request` goes through, or `None` to go direct: its own
/// [`ProxyRoute`], or for [`ProxyRoute::Environment`] what `env` says for its URL.
pub fn route(request: &HandshakeRequest, env: &ProxyEnv) -> Result<Option<Proxy>, TransportError> {
    match &request.proxy {
        ProxyRoute::Direct => Ok(None),
        ProxyRoute::Through(proxy) => Ok(Some(proxy.clone())),
        // ProxyRoute is non-exhaustive: a newer core's routes resolve as the environment.
        _ => env.proxy_for(request.url.scheme(), request.host(), port_of(request)),
    }
}

/// The port `request` connects to (the scheme's default when its URL has none).
fn port_of(request: &HandshakeRequest) -> u16 {
    request.url.port_or_known_default().unwrap_or(0)
}

/// A `no_proxy` entry in lower case, an international name in the URL parser's ASCII form
/// (as a URL's host is written), its `*.` or `.` and its port kept.
fn normalise_entry(entry: &str) -> String {
    let entry = entry.to_lowercase();
    if entry.is_ascii() {
        return entry;
    }
    let (name, port) = split_port(&entry);
    let (prefix, bare) = match name.strip_prefix("*.").or_else(|| name.strip_prefix('.')) {
        Some(bare) => (&name[..name.len() - bare.len()], bare),
        None => ("", name),
    };
    match url::Host::parse(bare) {
        Ok(url::Host::Domain(ascii)) => match port {
            Some(port) => format!("{prefix}{ascii}:{port}"),
            None => format!("{prefix}{ascii}"),
        },
        _ => entry,
    }
}

/// A `no_proxy` entry's host part, and the port it is limited to (`host:port`,
/// `[v6]:port`; a bare IPv6 address has no port).
fn split_port(entry: &str) -> (&str, Option<u16>) {
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((address, port)) => (&entry[..address.len() + 2], port),
            None => return (entry, None),
        },
        None => match entry.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port),
            _ => return (entry, None),
        },
    };
    match port.parse() {
        Ok(port) => (host, Some(port)),
        Err(_) => (entry, None),
    }
}

/// An IP address written as a host (IPv6 in brackets or not).
fn bare_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match bare_ip(&host) {
        Some(ip) => ip.to_canonical().is_loopback(),
        None => host == "localhost" || host.ends_with(".localhost"),
    }
}

/// Whether a `no_proxy` entry (an address, or a CIDR range) covers `ip`.
fn ip_matches(entry: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match entry.split_once('/') {
        Some((addr, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (addr, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Some(net) = bare_ip(addr) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            prefix_matches(&net.octets(), &ip.octets(), bits.unwrap_or(32))
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            prefix_matches(&net.octets(), &ip.octets(), bits.unwrap_or(128))
        }
        // An IPv4-mapped IPv6 host reaches the IPv4 address it holds.
        (IpAddr::V4(net), IpAddr::V6(ip)) => ip
            .to_ipv4_mapped()
            .is_some_and(|ip| prefix_matches(&net.octets(), &ip.octets(), bits.unwrap_or(32))),
        _ => false,
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], bits: u32) -> bool {
    if bits as usize > net.len() * 8 {
        return false;
    }
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    net[..whole] == ip[..whole]
        && (rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            net[whole] & mask == ip[whole] & mask
        })
}

/// The exchange that opens a proxy's tunnel, whichever its protocol: write
/// [`outgoing`](Self::outgoing) and report it with [`wrote`](Self::wrote), [`feed`](Self::feed)
/// what the proxy sends, and write again whatever is outgoing then, until `feed` returns
/// `true`.
#[derive(Debug)]
pub struct Tunnel(Exchange);

#[derive(Debug)]
enum Exchange {
    Http(ProxyConnect),
    Socks5(Socks5Connect),
}

impl Tunnel {
    /// The exchange for `host:port` (the host as a URL writes it) through `proxy`.
    pub fn new(proxy: &Proxy, host: &str, port: u16) -> Self {
        Tunnel(match proxy.protocol() {
            ProxyProtocol::Socks5 => Exchange::Socks5(Socks5Connect::new(proxy, host, port)),
            // ProxyProtocol is non-exhaustive: HTTP is what a proxy URL defaults to.
            _ => Exchange::Http(ProxyConnect::new(proxy, host, port)),
        })
    }

    /// The bytes still to write (empty while waiting for the proxy).
    pub fn outgoing(&self) -> &[u8] {
        match &self.0 {
            Exchange::Http(c) => c.outgoing(),
            Exchange::Socks5(c) => c.outgoing(),
        }
    }

    /// `n` bytes of [`Self::outgoing`] were written.
    pub fn wrote(&mut self, n: usize) {
        match &mut self.0 {
            Exchange::Http(c) => c.wrote(n),
            Exchange::Socks5(c) => c.wrote(n),
        }
    }

    /// Feeds bytes from the proxy: `Ok(true)` once the tunnel is open
    /// ([`ProxyConnect::feed`], [`Socks5Connect::feed`]).
    pub fn feed(&mut self, data: &[u8]) -> Result<bool, TransportError> {
        match &mut self.0 {
            Exchange::Http(c) => c.feed(data),
            Exchange::Socks5(c) => c.feed(data),
        }
    }

    /// The proxy, as its errors name it (its URL, credentials left out).
    pub fn proxy(&self) -> &str {
        match &self.0 {
            Exchange::Http(c) => c.proxy(),
            Exchange::Socks5(c) => c.proxy(),
        }
    }

    /// The error for a proxy that closed the connection before the tunnel opened.
    pub fn closed_early(&self) -> TransportError {
        match &self.0 {
            Exchange::Http(c) => c.closed_early(),
            Exchange::Socks5(c) => c.closed_early(),
        }
    }

    /// The error for an IO failure during the exchange, naming the proxy (for an HTTP
    /// proxy, a reset after part of its answer is that answer, see
    /// [`ProxyConnect::failed_early`]).
    pub fn io_error(&self, error: &std::io::Error) -> TransportError {
        match &self.0 {
            Exchange::Http(c) => c.failed_early(error).unwrap_or_else(|| c.io_error(error)),
            Exchange::Socks5(c) => c.io_error(error),
        }
    }
}

/// A `CONNECT` exchange with a proxy, without IO: write
/// [`request_bytes`](Self::request_bytes), then [`feed`](Self::feed) what the proxy sends
/// until it returns `true` (the tunnel is open) or an error.
///
/// `Debug` leaves out the request, which may carry credentials.
pub struct ProxyConnect {
    request: Vec<u8>,
    response: Vec<u8>,
    proxy: String,
    target: String,
    /// Interim answers passed over so far ([`MAX_INTERIM_ANSWERS`]).
    interim: usize,
    /// How much of the request is written.
    written: usize,
}

impl fmt::Debug for ProxyConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConnect")
            .field("proxy", &self.proxy)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What the proxy's answer so far says.
enum Answer {
    /// Not all of its head yet.
    Partial,
    /// An interim 1xx answer, this many bytes long: the final one follows.
    Interim(usize),
    /// 2xx: the tunnel is open.
    Open,
}

impl ProxyConnect {
    /// The `CONNECT` request for `host:port` (the host as a URL writes it: an IPv6 address
    /// in brackets), through `proxy`.
    pub fn new(proxy: &Proxy, host: &str, port: u16) -> Self {
        let target = format!("{host}:{port}");
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = proxy.credentials() {
            let value = credentials.basic_authorization();
            request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
        }
        request.push_str("\r\n");
        Self {
            request: request.into_bytes(),
            response: Vec::new(),
            proxy: proxy.to_string(),
            target,
            interim: 0,
            written: 0,
        }
    }

    /// The request to write.
    pub fn request_bytes(&self) -> &[u8] {
        &self.request
    }

    /// What is left to write of the request.
    pub fn outgoing(&self) -> &[u8] {
        &self.request[self.written..]
    }

    /// `n` bytes of [`Self::outgoing`] were written.
    pub fn wrote(&mut self, n: usize) {
        self.written = (self.written + n).min(self.request.len());
    }

    /// Feeds bytes from the proxy. `Ok(false)`: more are needed; `Ok(true)`: the proxy
    /// answered 2xx and the tunnel is open. Interim 1xx answers before the final one are
    /// skipped (RFC 9110 §15.2). A refusal is an error of kind
    /// [`TransportErrorKind::HttpStatus`] naming the proxy (never its credentials) and the
    /// status, so a reconnect policy treats it like the server's own answer: 4xx final
    /// (`407`, `403`), 5xx (`502`, `503`) retried.
    pub fn feed(&mut self, data: &[u8]) -> Result<bool, TransportError> {
        let first = self.response.is_empty();
        self.response.extend_from_slice(data);
        // Parsed again only when a line ended, as the upgrade's answer is
        // ([`crate::ClientHandshake::feed`]).
        if !first && !data.contains(&b'\n') && self.response.len() <= MAX_PROXY_RESPONSE_HEAD {
            return Ok(false);
        }
        loop {
            match self.answer()? {
                Answer::Partial => return Ok(false),
                Answer::Interim(_) if self.interim == MAX_INTERIM_ANSWERS => {
                    return Err(self.protocol(&format!(
                        "sent more than {MAX_INTERIM_ANSWERS} interim (1xx) answers to CONNECT"
                    )));
                }
                Answer::Interim(head_len) => {
                    self.interim += 1;
                    self.response.drain(..head_len);
                }
                Answer::Open => return Ok(true),
            }
        }
    }

    /// Reads the answer at the start of what the proxy sent.
    fn answer(&self) -> Result<Answer, TransportError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match crate::handshake::parse_response(&mut response, &self.response) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.response.len() > MAX_PROXY_RESPONSE_HEAD => {
                return Err(self.protocol(&format!(
                    "answered CONNECT with a head longer than {MAX_PROXY_RESPONSE_HEAD} bytes"
                )));
            }
            Ok(httparse::Status::Partial) => return Ok(Answer::Partial),
            Err(e) => return Err(self.protocol(&format!("sent an invalid answer: {e}"))),
        };
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            return Ok(Answer::Interim(head_len));
        }
        if !(200..300).contains(&status) {
            let reason: String = response.reason.unwrap_or("").chars().take(100).collect();
            return Err(TransportError::new(
                TransportErrorKind::HttpStatus(status),
                format!(
                    "proxy {} refused CONNECT {}: HTTP {status} {reason}",
                    self.proxy, self.target
                ),
            ));
        }
        if head_len < self.response.len() {
            // The server speaks only after the client (TLS ClientHello, the upgrade
            // request), so these bytes can only come from the proxy.
            return Err(self.protocol("sent bytes after its CONNECT answer"));
        }
        Ok(Answer::Open)
    }

    /// The proxy, as its errors name it (its URL, credentials left out).
    pub fn proxy(&self) -> &str {
        &self.proxy
    }

    /// The error for a proxy that closed the connection before its answer ended: before
    /// any of it, that it closed before answering; after part of it, what came, and a
    /// refusal whose status line came is that refusal ([`TransportErrorKind::HttpStatus`],
    /// as a whole one would be).
    pub fn closed_early(&self) -> TransportError {
        if self.response.is_empty() {
            return self.protocol("closed the connection before answering CONNECT");
        }
        self.cut_short("closed")
    }

    /// The error for a connection reset after part of the answer came, as
    /// [`Self::closed_early`] reports a close there (a proxy that refuses and closes with
    /// the rest of the request unread sends a reset, and its `407` was an IO error, dialled
    /// again by a reconnect policy). `None` for any other failure and before any of the
    /// answer came: those stay IO errors ([`Self::io_error`]).
    pub fn failed_early(&self, error: &std::io::Error) -> Option<TransportError> {
        (crate::handshake::is_reset(error) && !self.response.is_empty())
            .then(|| self.cut_short("reset"))
    }

    /// The answer was cut short (the proxy `how` the connection) after part of it came.
    fn cut_short(&self, how: &str) -> TransportError {
        let mut message = format!(
            "proxy {} {how} the connection in the middle of its answer to CONNECT {} ({} bytes in)",
            self.proxy,
            self.target,
            self.response.len()
        );
        let mut kind = TransportErrorKind::Protocol;
        if let Some((line, status)) = crate::handshake::status_line(&self.response) {
            message.push_str(&format!(": `{line}`"));
            // A tunnel that did not open, whose answer said it would (1xx, 2xx), stays a
            // protocol error.
            if let Some(status) = status.filter(|c| !(100..300).contains(c)) {
                kind = TransportErrorKind::HttpStatus(status);
            }
        }
        TransportError::new(kind, message)
    }

    /// An IO error during the exchange, naming the proxy.
    pub fn io_error(&self, error: &std::io::Error) -> TransportError {
        TransportError::new(
            TransportErrorKind::Io,
            format!("proxy {}: CONNECT {}: {error}", self.proxy, self.target),
        )
    }

    fn protocol(&self, what: &str) -> TransportError {
        proxy_error(TransportErrorKind::Protocol, &self.proxy, what)
    }
}

/// An error of this kind that says what `proxy` (as errors name it) did.
pub(crate) fn proxy_error(kind: TransportErrorKind, proxy: &str, what: &str) -> TransportError {
    TransportError::new(kind, format!("proxy {proxy} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxsocket_core::ConnectOptions;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_vars(vars.iter().copied())
    }

    fn via(env: &ProxyEnv, url: &str) -> Option<String> {
        let request = ConnectOptions::new(url).validate().unwrap();
        route(&request, env).unwrap().map(|p| p.to_string())
    }

    #[test]
    fn scheme_picks_the_variable() {
        let e = env(&[
            ("https_proxy", "http://s:1"),
            ("http_proxy", "h:2"),
            ("ALL_PROXY", "http://a:3"),
        ]);
        assert_eq!(via(&e, "wss://x.com").as_deref(), Some("http://s:1"));
        assert_eq!(via(&e, "https://x.com").as_deref(), Some("http://s:1"));
        assert_eq!(via(&e, "ws://x.com").as_deref(), Some("http://h:2"));
        let e = env(&[("all_proxy", "http://a:3")]);
        assert_eq!(via(&e, "ws://x.com").as_deref(), Some("http://a:3"));
        assert_eq!(via(&e, "wss://x.com").as_deref(), Some("http://a:3"));
        assert_eq!(via(&ProxyEnv::empty(), "wss://x.com"), None);
    }

    #[test]
    fn lower_case_first_and_empty_is_unset() {
        let e = env(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
        ]);
        assert_eq!(via(&e, "wss://x.com").as_deref(), Some("http://lower:1"));
        let e = env(&[("https_proxy", " "), ("HTTPS_PROXY", "http://upper:2")]);
        assert_eq!(via(&e, "wss://x.com").as_deref(), Some("http://upper:2"));
        let e = env(&[("HTTP_PROXY", "http://upper:2")]);
        assert_eq!(via(&e, "ws://x.com").as_deref(), Some("http://upper:2"));
        // A CGI program's HTTP_PROXY may come from a request header (httpoxy).
        let e = env(&[("HTTP_PROXY", "http://evil:2"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(via(&e, "ws://x.com"), None);
    }

    #[test]
    fn no_proxy_hosts_ips_and_star() {
        let e = |no: &str| env(&[("all_proxy", "http://p:1"), ("NO_PROXY", no)]);
        let direct = |no: &str, url: &str| via(&e(no), url).is_none();
        assert!(direct("example.com", "wss://example.com"));
        assert!(direct("example.com", "wss://a.b.EXAMPLE.com:8443/x"));
        assert!(direct(".example.com", "wss://example.com"));
        assert!(direct("*.example.com", "wss://a.example.com"));
        assert!(!direct("example.com", "wss://badexample.com"));
        assert!(!direct("a.example.com", "wss://example.com"));
        assert!(direct("other.org, example.com", "wss://example.com"));
        assert!(direct("other.org example.com", "wss://example.com"));
        assert!(direct("*", "wss://anything.net"));
        assert!(!direct("*.", "wss://anything.net"));
        assert!(direct("10.1.2.3", "ws://10.1.2.3:80"));
        assert!(!direct("10.1.2.3", "ws://10.1.2.4"));
        assert!(direct("10.0.0.0/8", "ws://10.200.0.1"));
        assert!(!direct("10.0.0.0/8", "ws://11.0.0.1"));
        assert!(direct("192.168.4.0/22", "ws://192.168.7.255"));
        assert!(!direct("192.168.4.0/22", "ws://192.168.8.0"));
        assert!(direct("2001:db8::/32", "ws://[2001:db8::5]"));
        assert!(direct("[2001:db8::5]", "ws://[2001:db8::5]"));
        assert!(!direct("2001:db8::/32", "ws://[2001:db9::5]"));
        // An IP entry does not match a name, nor a name entry an IP.
        assert!(!direct("10.1.2.3", "ws://ten.example"));
        assert!(!direct("example.com", "ws://10.1.2.3"));
        assert!(!direct("", "ws://example.com"));
        // International names match in either script, as the URL's host is written.
        assert!(direct("bücher.example", "ws://bücher.example"));
        assert!(direct("BÜCHER.example", "ws://xn--bcher-kva.example"));
        assert!(direct(".bücher.example", "ws://a.bücher.example:9"));
        assert!(direct("bücher.example:9", "ws://bücher.example:9"));
        // An IPv4-mapped IPv6 host is matched as its IPv4 address too.
        assert!(direct("10.0.0.0/8", "ws://[::ffff:10.1.2.3]"));
        assert!(direct("::ffff:10.1.2.3", "ws://[::ffff:10.1.2.3]"));
        assert!(!direct("10.0.0.0/8", "ws://[::ffff:11.1.2.3]"));
        // An entry with a port exempts that port only (the scheme's default when none).
        assert!(direct("example.com:8443", "wss://example.com:8443/x"));
        assert!(!direct("example.com:8443", "wss://example.com/x"));
        assert!(direct("example.com:443", "wss://example.com/x"));
        assert!(direct(".example.com:80", "ws://a.example.com"));
        assert!(direct("10.1.2.3:80", "ws://10.1.2.3"));
        assert!(!direct("10.1.2.3:81", "ws://10.1.2.3"));
        assert!(direct("[2001:db8::5]:9", "ws://[2001:db8::5]:9"));
        assert!(!direct("[2001:db8::5]:9", "ws://[2001:db8::5]:10"));
        assert!(direct("2001:db8::5", "ws://[2001:db8::5]:10"));
    }

    #[test]
    fn loopback_goes_direct_unless_the_proxy_is_explicit() {
        let e = env(&[("all_proxy", "http://p:1")]);
        for url in [
            "ws://127.0.0.1:9",
            "ws://127.8.9.10",
            "ws://[::1]:9",
            "ws://[::ffff:127.0.0.1]:9",
            "ws://localhost:9",
            "wss://app.localhost",
        ] {
            assert_eq!(via(&e, url), None, "{url}");
        }
        let explicit = ConnectOptions::new("ws://127.0.0.1:9")
            .proxy("http://p:1")
            .validate()
            .unwrap();
        assert!(route(&explicit, &e).unwrap().is_some());
        let direct = ConnectOptions::new("ws://example.com")
            .no_proxy()
            .validate()
            .unwrap();
        assert_eq!(route(&direct, &e).unwrap(), None);
    }

    #[test]
    fn invalid_variable_is_named_without_its_value() {
        let e = env(&[("HTTPS_PROXY", "https://user:secret@p:1")]);
        let request = ConnectOptions::new("wss://x.com").validate().unwrap();
        let error = route(&request, &e).unwrap_err();
        assert!(error.message.contains("HTTPS_PROXY"), "{error}");
        assert!(!error.message.contains("secret"), "{error}");
        assert!(!format!("{e:?}").contains("secret"));
        let ok = env(&[("https_proxy", "http://user:secret@p:1")]);
        assert_eq!(
            format!("{ok:?}"),
            "ProxyEnv { http: \"unset\", https: \"https_proxy=http://p:1\", all: \"unset\", no_proxy: [] }"
        );
    }

    #[test]
    fn connect_exchange() {
        let proxy = Proxy::parse("http://[::1]:3128").unwrap();
        let mut c = ProxyConnect::new(&proxy, "[2001:db8::1]", 443);
        assert_eq!(
            c.request_bytes(),
            b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"
        );
        for b in b"HTTP/1.0 200 OK\r\nVia: x\r\n" {
            assert!(!c.feed(std::slice::from_ref(b)).unwrap());
        }
        assert!(c.feed(b"\r\n").unwrap());

        let secret = Proxy::parse("http://u:secret@p:1").unwrap();
        for (answer, status) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"[..],
                407,
            ),
            (
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!",
                403,
            ),
            (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", 502),
        ] {
            let mut c = ProxyConnect::new(&secret, "h", 80);
            let e = c.feed(answer).unwrap_err();
            assert_eq!(e.kind, TransportErrorKind::HttpStatus(status));
            assert!(
                e.message.starts_with(&format!(
                    "proxy http://p:1 refused CONNECT h:80: HTTP {status} "
                )),
                "{e}"
            );
            assert!(!format!("{e:?} {c:?}").contains("secret"));
        }
        let mut c = ProxyConnect::new(&secret, "h", 80);
        let e = c.feed(b"HTTP/1.1 200 OK\r\n\r\nextra").unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        let mut c = ProxyConnect::new(&secret, "h", 80);
        let e = c.feed(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        let mut c = ProxyConnect::new(&secret, "h", 80);
        let mut long = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        long.resize(MAX_PROXY_RESPONSE_HEAD + 1, b'a');
        let e = c.feed(&long).unwrap_err();
        assert!(e.message.contains("longer than"), "{e}");
    }

    /// A proxy that closes or resets in the middle of its answer: what came is said, and a
    /// refusal whose status line came is that refusal, closed or reset alike (a reset was an
    /// IO error, and a reconnect policy dialled a `407` again); before any of the answer, a
    /// close is a protocol error and a reset stays an IO error.
    #[test]
    fn an_answer_cut_short_reads_as_far_as_it_came() {
        let proxy = Proxy::parse("http://u:secret@p:1").unwrap();
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let fresh = ProxyConnect::new(&proxy, "h", 80);
        assert!(fresh.failed_early(&reset).is_none());
        assert_eq!(
            fresh.closed_early().to_string(),
            "proxy http://p:1 closed the connection before answering CONNECT"
        );
        for (came, kind, said) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authen"[..],
                TransportErrorKind::HttpStatus(407),
                " (56 bytes in): `HTTP/1.1 407 Proxy Authentication Required`",
            ),
            (
                b"HTTP/1.1 200 Connection established\r\n",
                TransportErrorKind::Protocol,
                " (37 bytes in): `HTTP/1.1 200 Connection established`",
            ),
            (
                b"HTTP/1.1 40",
                TransportErrorKind::Protocol,
                " (11 bytes in)",
            ),
        ] {
            let mut c = ProxyConnect::new(&proxy, "h", 80);
            assert!(!c.feed(came).unwrap());
            for (how, e) in [
                ("closed", c.closed_early()),
                ("reset", c.failed_early(&reset).expect("part of an answer")),
            ] {
                assert_eq!(e.kind, kind, "{e}");
                assert_eq!(
                    e.message,
                    format!(
                        "proxy http://p:1 {how} the connection in the middle of its answer \
                         to CONNECT h:80{said}"
                    )
                );
            }
            let other = std::io::Error::from(std::io::ErrorKind::InvalidData);
            assert!(c.failed_early(&other).is_none(), "only a reset");
        }
    }

    /// Interim answers (`100 Continue`, `102 Processing`) come before the final one, in one
    /// read or split across several; the tunnel opens on the final 2xx.
    #[test]
    fn interim_answers_before_the_final_one_are_skipped() {
        let proxy = Proxy::parse("http://p:1").unwrap();
        let mut c = ProxyConnect::new(&proxy, "h", 80);
        assert!(
            c.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")
                .unwrap()
        );
        let mut c = ProxyConnect::new(&proxy, "h", 80);
        assert!(!c.feed(b"HTTP/1.1 102 Processing\r\n\r\n").unwrap());
        assert!(!c.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 20").unwrap());
        assert!(c.feed(b"0 Connection established\r\n\r\n").unwrap());
        // The final answer decides, as before.
        let mut c = ProxyConnect::new(&proxy, "h", 80);
        let e = c
            .feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 407 Auth\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::HttpStatus(407));
    }

    /// A header folded over two lines does not fail the tunnel (it was an invalid answer).
    #[test]
    fn a_folded_header_in_the_answer_is_accepted() {
        let proxy = Proxy::parse("http://p:1").unwrap();
        let mut c = ProxyConnect::new(&proxy, "h", 80);
        assert!(
            c.feed(b"HTTP/1.1 200 OK\r\nVia: 1.1 old\r\n proxy\r\n\r\n")
                .unwrap()
        );
    }

    /// [`MAX_INTERIM_ANSWERS`] interim answers are passed over, one more fails the tunnel.
    #[test]
    fn interim_answers_without_end_fail_the_tunnel() {
        let proxy = Proxy::parse("http://p:1").unwrap();
        let interim = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM_ANSWERS);
        let mut c = ProxyConnect::new(&proxy, "h", 80);
        assert!(
            c.feed(format!("{interim}HTTP/1.1 200 OK\r\n\r\n").as_bytes())
                .unwrap()
        );
        let mut c = ProxyConnect::new(&proxy, "h", 80);
        assert!(!c.feed(interim.as_bytes()).unwrap());
        let e = c.feed(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap_err();
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        assert!(e.message.contains("more than 16 interim"), "{e}");
    }
}
