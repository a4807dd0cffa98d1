//! Connect options (the OBJECT of WeChat's `wx.connectSocket`) and their validation into the
//! complete [`HandshakeRequest`] the driver dials. Everything is checked before
//! any IO, and each rejection names the option at fault.

use crate::deflate::DeflateOptions;
use crate::error::ConnectError;
use crate::proxy::{Proxy, ProxyOption, ProxyRoute};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;
use url::Url;

/// Options for one connection, as `wx.connectSocket` takes them.
///
/// ```
/// # use wxsocket_core::ConnectOptions;
/// let opts = ConnectOptions::new("wss://example.com/chat")
///     .header("X-Token", "abc")
///     .protocol("chat.v1")
///     .data("room", "lobby 1")
///     .tcp_no_delay(true);
/// let request = opts.validate().unwrap();
/// assert_eq!(request.url.as_str(), "wss://example.com/chat?room=lobby+1");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The server URL: `ws://` or `wss://` (`http://` and `https://` are accepted and mapped
    /// to `ws://` and `wss://`, since WeChat documents `url` as an HTTPS address).
    /// Credentials in it (`wss://user:password@host/`) are sent as HTTP Basic
    /// authentication (an `Authorization` header of the application's own wins) and taken
    /// out of the request's URL, so no event, log or transcript shows the password.
    pub url: String,
    /// Key/value pairs appended to the URL query, percent-encoded (WeChat's `data`).
    pub data: Vec<(String, String)>,
    /// Custom handshake headers (WeChat's `header`). `Referer`, the headers the handshake
    /// owns and `Proxy-Authorization` (it would reach the server, not the proxy: the proxy's
    /// credentials go in its URL) are rejected.
    pub header: Vec<(String, String)>,
    /// HTTP method; only `GET` (any case) is valid. `None` means GET.
    pub method: Option<String>,
    /// Sub-protocols to offer, in preference order.
    pub protocols: Vec<String>,
    /// Set `TCP_NODELAY` on the socket.
    pub tcp_no_delay: bool,
    /// Offer permessage-deflate (RFC 7692).
    pub per_message_deflate: bool,
    /// The permessage-deflate offer's parameters, used when `per_message_deflate` is on.
    pub deflate: DeflateOptions,
    /// Handshake timeout; `None` uses the session's default (60 s).
    pub timeout: Option<Duration>,
    /// Refuse any URL that is not `wss`.
    pub require_tls: bool,
    /// WeChat's "legal domains": when non-empty, the URL's host must match an entry
    /// exactly (ASCII case-insensitive), or end with `.example.com` for an entry `*.example.com`.
    /// Entries are host names or addresses, normalised as the URL's host is: an
    /// international domain becomes its punycode (`例子.com` matches `xn--fsqu00a.com`), an
    /// IPv6 address may be written with or without brackets, an IPv4 address in any form the
    /// URL parser reads (`127.1` is `127.0.0.1`). An entry with a scheme, a port, a path, a
    /// space or another wildcard is refused ([`ConnectError::InvalidAllowedHost`]). A
    /// trailing dot counts: `example.com.` and `example.com` do not match each other.
    pub allowed_hosts: Vec<String>,
    /// The proxy to tunnel through (an HTTP proxy's `CONNECT`, or SOCKS5): by default the
    /// one the environment names, as the adapter read it (see [`ProxyOption`]).
    pub proxy: ProxyOption,
}

/// The URL's password shows as `***`; so do the values of the credential headers
/// (`Authorization`, `Proxy-Authorization`, `Cookie`) and of the usual token query
/// parameters and `data` entries (`token`, `access_token`, `key`, …
/// [`QUERY_DEFAULTS`](crate::transcript::QUERY_DEFAULTS)).
///
/// ```
/// # use wxsocket_core::ConnectOptions;
/// let options = ConnectOptions::new("wss://ann:pw@h/ws?room=5&token=abc").data("sig", "xyz");
/// let shown = format!("{options:?}");
/// assert!(shown.contains(r#""wss://***@h/ws?room=5&token=***""#), "{shown}");
/// assert!(!shown.contains("abc") && !shown.contains("xyz") && !shown.contains("pw"), "{shown}");
///
/// // Also in the error of a URL whose password breaks it (an unencoded `#`).
/// let broken = ConnectOptions::new("wss://ann:p#w0rd@h/ws");
/// let error = broken.validate().unwrap_err().to_string();
/// assert!(error.contains("wss://***@h/ws") && !error.contains("w0rd"), "{error}");
/// assert!(!format!("{broken:?}").contains("w0rd"));
/// ```
impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header: Vec<(&str, &str)> = self
            .header
            .iter()
            .map(|(name, value)| {
                let secret = CREDENTIALS
                    .iter()
                    .any(|c| name.eq_ignore_ascii_case(c.as_str()));
                (name.as_str(), if secret { "***" } else { value.as_str() })
            })
            .collect();
        let data: Vec<(&str, &str)> = self
            .data
            .iter()
            .map(|(k, v)| {
                let secret = crate::proxy::is_token(k);
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("ConnectOptions")
            .field("url", &crate::proxy::redact_written(&self.url))
            .field("data", &data)
            .field("header", &header)
            .field("method", &self.method)
            .field("protocols", &self.protocols)
            .field("tcp_no_delay", &self.tcp_no_delay)
            .field("per_message_deflate", &self.per_message_deflate)
            .field("deflate", &self.deflate)
            .field("timeout", &self.timeout)
            .field("require_tls", &self.require_tls)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// A URL is the whole of the simplest options: `connect("ws://…")`.
impl From<&str> for ConnectOptions {
    fn from(url: &str) -> Self {
        ConnectOptions::new(url)
    }
}

impl From<String> for ConnectOptions {
    fn from(url: String) -> Self {
        ConnectOptions::new(url)
    }
}

impl From<&ConnectOptions> for ConnectOptions {
    fn from(options: &ConnectOptions) -> Self {
        options.clone()
    }
}

impl ConnectOptions {
    /// Options for `url` with every other option at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Adds a handshake header (WeChat's `header`). The headers the handshake writes itself,
    /// `Referer` and `Proxy-Authorization` are refused by [`Self::validate`], naming the
    /// header and why (see the `header` field).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.header.push((name.into(), value.into()));
        self
    }

    /// Appends `key=value` to the URL's query, both percent-encoded (WeChat's `data`).
    pub fn data(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.data.push((key.into(), value.into()));
        self
    }

    /// Offers a sub-protocol; call again for more, most preferred first. The server's choice
    /// is the open event's `handshake.protocol`; one it was not offered fails the connection.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Sets the HTTP method (only GET is valid).
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Sets `TCP_NODELAY` on the socket (off by default: small writes may wait for the
    /// previous one's acknowledgement).
    pub fn tcp_no_delay(mut self, on: bool) -> Self {
        self.tcp_no_delay = on;
        self
    }

    /// Offers permessage-deflate (RFC 7692) with the default parameters (see
    /// [`Self::deflate`]); the server may decline, and the connection then goes uncompressed.
    pub fn per_message_deflate(mut self, on: bool) -> Self {
        self.per_message_deflate = on;
        self
    }

    /// Offers permessage-deflate with these parameters (turns `per_message_deflate` on).
    pub fn deflate(mut self, options: DeflateOptions) -> Self {
        self.per_message_deflate = true;
        self.deflate = options;
        self
    }

    /// Sets how long the dial and the opening handshake may take together (resolving,
    /// connecting, a proxy's tunnel, TLS, the upgrade); the session's
    /// [`handshake_timeout`](crate::SessionConfig::handshake_timeout), 60 s by default,
    /// when unset.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Refuses, in [`Self::validate`], a URL that is not `wss://` (or `https://`).
    pub fn require_tls(mut self, on: bool) -> Self {
        self.require_tls = on;
        self
    }

    /// Adds a host to the allow-list (WeChat's "legal domains"): once it has an entry, a URL
    /// whose host matches none is refused before any IO. Entries and their forms: see the
    /// `allowed_hosts` field.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into());
        self
    }

    /// Tunnels through this proxy, for every host, whatever the environment says: an HTTP
    /// proxy (`http://[user:password@]host[:port]`) or a SOCKS5 one
    /// (`socks5h://[user:password@]host[:port]`, `socks5://` alike; see
    /// [`ProxyOption::Url`]).
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxyOption::Url(url.into());
        self
    }

    /// Connects directly, whatever the environment says.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxyOption::Direct;
        self
    }

    /// Checks every option and builds the request, without any IO.
    pub fn validate(&self) -> Result<HandshakeRequest, ConnectError> {
        let mut url = parse_url(&self.url)?;
        if self.require_tls && url.scheme() != "wss" {
            return Err(ConnectError::TlsRequired {
                url: crate::proxy::redact_written(&self.url),
            });
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let patterns = (self.allowed_hosts.iter())
            .map(|entry| host_pattern(entry))
            .collect::<Result<Vec<_>, _>>()?;
        if !patterns.is_empty() && !patterns.iter().any(|h| host_matches(h, &host)) {
            return Err(ConnectError::HostNotAllowed { host });
        }
        if let Some(method) = &self.method
            && !method.eq_ignore_ascii_case("GET")
        {
            return Err(ConnectError::UnsupportedMethod {
                method: method.clone(),
            });
        }
        check_timeout(self.timeout)?;
        if self.per_message_deflate
            && let Some(error) = self.deflate.invalid_field()
        {
            return Err(error);
        }
        let proxy = match &self.proxy {
            ProxyOption::Environment => ProxyRoute::Environment,
            ProxyOption::Direct => ProxyRoute::Direct,
            ProxyOption::Url(raw) => ProxyRoute::Through(
                Proxy::parse(raw).map_err(|reason| ConnectError::InvalidProxy { reason })?,
            ),
        };
        let mut headers = validate_headers(&self.header)?;
        if let Some(credentials) = take_credentials(&mut url)?
            && !headers.contains_key(http::header::AUTHORIZATION)
        {
            let value =
                HeaderValue::from_str(&credentials).expect("base64 is a valid header value");
            headers.insert(http::header::AUTHORIZATION, value);
            mark_credentials(&mut headers);
        }
        validate_protocols(&self.protocols)?;
        if !self.data.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &self.data {
                pairs.append_pair(k, v);
            }
        }
        Ok(HandshakeRequest {
            url,
            headers,
            protocols: self.protocols.clone(),
            tcp_no_delay: self.tcp_no_delay,
            per_message_deflate: self.per_message_deflate.then_some(self.deflate),
            timeout: self.timeout,
            proxy,
        })
    }
}

/// A handshake timeout must be above zero and within the timer's range.
fn check_timeout(timeout: Option<Duration>) -> Result<(), ConnectError> {
    if timeout.is_some_and(|t| t.is_zero() || t > crate::config::MAX_TIMER) {
        return Err(ConnectError::InvalidTimeout);
    }
    Ok(())
}

/// A validated connect request: everything the driver needs to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeRequest {
    /// The `ws`/`wss` URL, with `data` already in its query.
    pub url: Url,
    /// Custom headers, all valid and none that the handshake owns.
    pub headers: HeaderMap,
    /// Sub-protocols to offer, in order (sent as one `Sec-WebSocket-Protocol` header).
    pub protocols: Vec<String>,
    /// Set `TCP_NODELAY`.
    pub tcp_no_delay: bool,
    /// The permessage-deflate offer, when compression was asked for.
    pub per_message_deflate: Option<DeflateOptions>,
    /// The handshake timeout asked for, if any (the session applies its default otherwise).
    pub timeout: Option<Duration>,
    /// How to reach the server: directly, through a proxy, or as the environment says.
    pub proxy: ProxyRoute,
}

impl HandshakeRequest {
    /// Checks again what [`ConnectOptions::validate`] checked of the fields a caller can
    /// change afterwards (or a hand-edited transcript line sets): the URL's scheme, that it
    /// has no fragment and no credentials (validation moved those to the `Authorization`
    /// header; in the URL they would not be sent), the timeout's range, the headers the
    /// handshake owns, and the sub-protocols.
    pub(crate) fn check(&self) -> Result<(), ConnectError> {
        if !matches!(self.url.scheme(), "ws" | "wss") {
            return Err(ConnectError::UnsupportedScheme {
                scheme: self.url.scheme().to_owned(),
            });
        }
        if self.url.fragment().is_some() {
            return Err(ConnectError::FragmentInUrl);
        }
        if !self.url.username().is_empty() || self.url.password().is_some() {
            let mut shown = self.url.clone();
            let _ = shown.set_username("***");
            let _ = shown.set_password(None);
            return Err(ConnectError::InvalidUrl {
                url: shown.to_string(),
                reason: "credentials in a validated request's URL would not be sent; give them \
                         to ConnectOptions, which moves them to the Authorization header"
                    .into(),
            });
        }
        check_timeout(self.timeout)?;
        for name in self.headers.keys() {
            if let Some(why) = forbidden_header(name) {
                return Err(ConnectError::ForbiddenHeader {
                    name: name.to_string(),
                    why,
                });
            }
        }
        validate_protocols(&self.protocols)
    }

    /// Whether the URL needs TLS.
    pub fn is_tls(&self) -> bool {
        self.url.scheme() == "wss"
    }

    /// The host to dial.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The port to dial (the scheme's default when the URL has none).
    pub fn port(&self) -> u16 {
        self.url
            .port_or_known_default()
            .unwrap_or(if self.is_tls() { 443 } else { 80 })
    }
}

/// Whether a URL's host is an IPv6 address with a zone identifier (`[fe80::1%25eth0]`),
/// user info before it or not.
fn has_zone(raw: &str) -> bool {
    let rest = raw.split_once("//").map_or(raw, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    host.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(address, _)| address.contains('%'))
}

fn parse_url(raw: &str) -> Result<Url, ConnectError> {
    // The URL parser drops tabs and line breaks anywhere (WHATWG URL) and goes on, so
    // `ws://ev\r\nil.com/` would dial `evil.com`: a control character is refused instead.
    if raw.chars().any(char::is_control) {
        return Err(ConnectError::InvalidUrl {
            url: crate::proxy::redact_written(&raw.escape_debug().to_string()),
            reason: "a control character (a line break, say) in the URL".into(),
        });
    }
    let mut url = Url::parse(raw).map_err(|e| ConnectError::InvalidUrl {
        url: crate::proxy::redact_written(raw),
        reason: match e {
            // `[fe80::1%25eth0]` (RFC 6874): the URL standard browsers follow has no zone
            // identifiers, and neither does the URL parser.
            url::ParseError::InvalidIpv6Address if has_zone(raw) => {
                "IPv6 zone identifiers (the `%…` of `[fe80::1%25eth0]`) are not \
                 supported; use an address that needs none"
                    .into()
            }
            e => e.to_string(),
        },
    })?;
    let mapped = match url.scheme() {
        "ws" | "wss" => None,
        "http" => Some("ws"),
        "https" => Some("wss"),
        other => {
            return Err(ConnectError::UnsupportedScheme {
                scheme: other.to_owned(),
            });
        }
    };
    if let Some(scheme) = mapped {
        // http(s) and ws(s) are both "special" schemes, so this cannot fail; rebuild to be sure.
        let rest = &raw[raw.find(':').unwrap_or(0)..];
        url = Url::parse(&format!("{scheme}{rest}")).map_err(|e| ConnectError::InvalidUrl {
            url: crate::proxy::redact_written(raw),
            reason: e.to_string(),
        })?;
    }
    if url.fragment().is_some() {
        return Err(ConnectError::FragmentInUrl);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConnectError::InvalidUrl {
            url: crate::proxy::redact_written(raw),
            reason: "no host".into(),
        });
    }
    if url.port() == Some(0) {
        return Err(ConnectError::InvalidUrl {
            url: crate::proxy::redact_written(raw),
            reason: "port 0 cannot be dialled".into(),
        });
    }
    Ok(url)
}

/// Takes the credentials out of `url` (`ws://user:password@host/`), as the value of an HTTP
/// Basic `Authorization` header (percent-decoded), as browsers and curl send them.
fn take_credentials(url: &mut Url) -> Result<Option<String>, ConnectError> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let invalid = |url: &Url, reason: &str| {
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        ConnectError::InvalidUrl {
            url: shown.to_string(),
            reason: reason.into(),
        }
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| invalid(url, "the credentials are not valid UTF-8"))
    };
    let username = decode(url.username())?;
    if username.contains(':') {
        return Err(invalid(url, "a user name may not contain ':' (RFC 7617)"));
    }
    let password = decode(url.password().unwrap_or_default())?;
    // A URL with a host (checked before) takes an empty user name and no password.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(Some(basic_authorization(&username, &password)))
}

/// HTTP Basic credentials (RFC 7617): `Basic` and the base64 of `user:password`, the value
/// of an `Authorization` or `Proxy-Authorization` header.
pub(crate) fn basic_authorization(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("{username}:{password}").as_bytes())
    )
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// An `allowed_hosts` entry as the URL parser writes a host (see
/// [`ConnectOptions::allowed_hosts`]), its `*.` kept.
fn host_pattern(entry: &str) -> Result<String, ConnectError> {
    let invalid = |reason| ConnectError::InvalidAllowedHost {
        entry: entry.to_owned(),
        reason,
    };
    let (wildcard, name) = match entry.strip_prefix("*.") {
        Some(name) => ("*.", name),
        None => ("", entry),
    };
    if name.contains('*') {
        return Err(invalid(
            "has a wildcard other than a first label ('*.example.com')",
        ));
    }
    // An IPv6 address, bracketed as in a URL.
    let bracketed;
    let name = match name.parse::<std::net::Ipv6Addr>() {
        Ok(_) => {
            bracketed = format!("[{name}]");
            &bracketed
        }
        Err(_) => name,
    };
    match url::Host::parse(name) {
        Ok(url::Host::Domain(domain)) => Ok(format!("{wildcard}{domain}")),
        Ok(_) if !wildcard.is_empty() => Err(invalid("puts a wildcard on an address")),
        // Written as the URL parser writes the URL's host, not as std does: they differ for
        // an IPv4-mapped IPv6 address (`[::ffff:7f00:1]`, not `[::ffff:127.0.0.1]`).
        Ok(address) => Ok(address.to_string()),
        Err(_) => Err(invalid(
            "is not a host name or address (no scheme, port, path or space)",
        )),
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Headers the opening handshake writes itself (RFC 6455 §4.1), plus `Referer`, which
/// WeChat's API forbids, and `Proxy-Authorization`, which would reach the server.
fn forbidden_header(name: &HeaderName) -> Option<&'static str> {
    let n = name.as_str();
    if n == "referer" {
        return Some("WeChat's API forbids setting Referer");
    }
    if n == "proxy-authorization" {
        // Handshake headers go to the WebSocket server, through the tunnel: the proxy's
        // credentials would reach the server, and never the proxy.
        return Some(
            "it would go to the server, not the proxy; put the credentials in the proxy URL",
        );
    }
    if n == "host" {
        return Some("the handshake sets it from the URL's host and port");
    }
    if n == "sec-websocket-protocol" || n == "sec-websocket-extensions" {
        return Some(
            "the WebSocket handshake sets it; use the protocols / perMessageDeflate options",
        );
    }
    if matches!(
        n,
        "upgrade" | "connection" | "content-length" | "transfer-encoding"
    ) || n.starts_with("sec-websocket-")
    {
        return Some("the WebSocket handshake sets it");
    }
    None
}

fn validate_headers(header: &[(String, String)]) -> Result<HeaderMap, ConnectError> {
    let mut map = HeaderMap::with_capacity(header.len());
    for (name, value) in header {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConnectError::InvalidHeaderName { name: name.clone() })?;
        if let Some(why) = forbidden_header(&parsed) {
            return Err(ConnectError::ForbiddenHeader {
                name: name.clone(),
                why,
            });
        }
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| ConnectError::InvalidHeaderValue { name: name.clone() })?;
        map.append(parsed, value);
    }
    mark_credentials(&mut map);
    Ok(map)
}

/// The headers whose values are credentials: never shown in `Debug` output.
const CREDENTIALS: [http::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
];

/// Marks the values of the credential headers ([`CREDENTIALS`]) sensitive, so they show as
/// `Sensitive` in `Debug` output (of the request, the `Dial`); they are still sent.
pub(crate) fn mark_credentials(headers: &mut HeaderMap) {
    // Walked, not looked up with `entry`: that allocates the map's table even when the
    // header is absent, and every connection keeps its request (0.7 KiB each, measured).
    for (name, value) in headers.iter_mut() {
        if CREDENTIALS.contains(name) {
            value.set_sensitive(true);
        }
    }
}

/// RFC 7230 `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_protocols(protocols: &[String]) -> Result<(), ConnectError> {
    for (i, p) in protocols.iter().enumerate() {
        if !is_token(p) {
            return Err(ConnectError::InvalidProtocol {
                protocol: p.clone(),
            });
        }
        if protocols[..i].contains(p) {
            return Err(ConnectError::DuplicateProtocol {
                protocol: p.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(opts: ConnectOptions) -> ConnectError {
        opts.validate().unwrap_err()
    }

    /// What a driver dials: TLS or not, the host and the port (the scheme's default when
    /// the URL has none), and `TCP_NODELAY`; a URL converts to the default options for it.
    #[test]
    fn the_request_says_what_to_dial() {
        let r = ConnectOptions::new("wss://Example.COM:8443/x")
            .tcp_no_delay(true)
            .validate()
            .unwrap();
        assert!(r.is_tls() && r.tcp_no_delay);
        assert_eq!((r.host(), r.port()), ("example.com", 8443));
        let r = ConnectOptions::new("ws://[::1]/x").validate().unwrap();
        assert!(!r.is_tls() && !r.tcp_no_delay);
        assert_eq!((r.host(), r.port()), ("[::1]", 80));
        assert_eq!(
            ConnectOptions::new("wss://h/").validate().unwrap().port(),
            443
        );
        let options = ConnectOptions::new("ws://h/chat");
        assert_eq!(ConnectOptions::from("ws://h/chat"), options);
        assert_eq!(ConnectOptions::from("ws://h/chat".to_owned()), options);
        assert_eq!(ConnectOptions::from(&options), options);
    }

    #[test]
    fn credentials_in_the_url_become_basic_authentication_and_leave_the_url() {
        // RFC 7617's example, percent-encoded in the URL.
        let r = ConnectOptions::new("wss://Aladdin:open%20sesame@example.com/chat")
            .validate()
            .unwrap();
        assert_eq!(r.url.as_str(), "wss://example.com/chat");
        assert_eq!(
            r.headers[http::header::AUTHORIZATION],
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        // The application's own header wins; the URL loses its credentials all the same.
        let r = ConnectOptions::new("ws://u:p@example.com/")
            .header("Authorization", "Bearer t")
            .validate()
            .unwrap();
        assert_eq!(r.url.as_str(), "ws://example.com/");
        assert_eq!(r.headers[http::header::AUTHORIZATION], "Bearer t");
        // A user name alone, and a password alone.
        let basic = |url: &str| {
            ConnectOptions::new(url).validate().unwrap().headers[http::header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(basic("ws://user@example.com/"), "Basic dXNlcjo=");
        assert_eq!(basic("ws://:pw@example.com/"), "Basic OnB3");
        match err(ConnectOptions::new("ws://a%3Ab:secret@example.com/")) {
            ConnectError::InvalidUrl { url, reason } => {
                assert!(reason.contains("':'"), "{reason}");
                assert!(!url.contains("secret"), "{url}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn base64_pads_as_rfc_4648_says() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn urls_and_schemes() {
        assert!(matches!(
            err(ConnectOptions::new("not a url")),
            ConnectError::InvalidUrl { .. }
        ));
        assert!(matches!(
            err(ConnectOptions::new("ftp://x")),
            ConnectError::UnsupportedScheme { .. }
        ));
        assert_eq!(
            err(ConnectOptions::new("ws://x/#frag")),
            ConnectError::FragmentInUrl
        );
        for url in [
            "ws://[fe80::1%25eth0]:9/",
            "ws://[fe80::1%lo]/",
            "ws://user@[fe80::1%25eth0]/",
            "ws://u:p@[fe80::1%25lo]:9/a?b",
        ] {
            match err(ConnectOptions::new(url)) {
                ConnectError::InvalidUrl { reason, .. } => {
                    assert!(reason.contains("zone identifier"), "{url}: {reason}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        match err(ConnectOptions::new("ws://[fe80::zz]/")) {
            ConnectError::InvalidUrl { reason, .. } => assert_eq!(reason, "invalid IPv6 address"),
            other => panic!("{other:?}"),
        }
        let r = ConnectOptions::new("https://Example.com:8443/a")
            .validate()
            .unwrap();
        assert_eq!(r.url.as_str(), "wss://example.com:8443/a");
        assert!(r.is_tls());
        assert_eq!(r.port(), 8443);
        let r = ConnectOptions::new("http://h/").validate().unwrap();
        assert_eq!(r.url.scheme(), "ws");
        assert_eq!(r.port(), 80);
        assert!(
            err(ConnectOptions::new("ws://x").require_tls(true))
                .to_string()
                .starts_with("url:")
        );
        assert!(
            ConnectOptions::new("wss://x")
                .require_tls(true)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn allow_list() {
        let o = |u: &str| {
            ConnectOptions::new(u)
                .allow_host("api.example.com")
                .allow_host("*.cdn.net")
        };
        assert!(o("wss://API.example.com/x").validate().is_ok());
        assert!(o("wss://a.b.cdn.net/x").validate().is_ok());
        assert!(matches!(
            err(o("wss://cdn.net")),
            ConnectError::HostNotAllowed { .. }
        ));
        assert!(matches!(
            err(o("wss://evilcdn.net")),
            ConnectError::HostNotAllowed { .. }
        ));
        assert!(matches!(
            err(o("wss://example.com")),
            ConnectError::HostNotAllowed { .. }
        ));
    }

    /// Entries are normalised as the URL's host is, so that an international name, an IPv6
    /// address without brackets or an IPv4 address in a short form matches; an entry that
    /// could never match is refused, naming it (a prober's `--allow-host 例子.com`,
    /// `example.com:443`, `wss://example.com` and `*` were taken and matched nothing).
    #[test]
    fn allow_list_entries_are_normalised_or_refused() {
        let allows = |entry: &str, url: &str| {
            ConnectOptions::new(url)
                .allow_host(entry)
                .validate()
                .map(|_| ())
        };
        for (entry, url) in [
            ("例子.com", "ws://例子.com/"),
            ("例子.com", "ws://xn--fsqu00a.com/"),
            ("*.例子.com", "ws://a.xn--fsqu00a.com/"),
            ("EXAMPLE.com", "ws://example.COM/"),
            ("::1", "ws://[::1]:9/"),
            ("[0:0::1]", "ws://[::1]/"),
            ("::ffff:127.0.0.1", "ws://[::ffff:127.0.0.1]/"),
            ("[::ffff:7f00:1]", "ws://[::ffff:127.0.0.1]/"),
            ("127.1", "ws://127.0.0.1/"),
            ("example.com.", "ws://example.com./"),
        ] {
            assert_eq!(allows(entry, url), Ok(()), "{entry} {url}");
        }
        assert!(matches!(
            allows("example.com.", "ws://example.com/"),
            Err(ConnectError::HostNotAllowed { .. })
        ));
        for entry in [
            "",
            "*",
            "a.*.example.com",
            "*example.com",
            "example.com:443",
            "wss://example.com",
            "example.com/x",
            "exa mple.com",
            "*.127.0.0.1",
            "*.[::1]",
        ] {
            let e = allows(entry, "ws://example.com/").unwrap_err();
            assert!(
                matches!(&e, ConnectError::InvalidAllowedHost { entry: given, .. } if given == entry),
                "{entry:?}: {e}"
            );
            assert!(e.to_string().starts_with("allowed_hosts: "), "{e}");
        }
    }

    #[test]
    fn headers() {
        let base = || ConnectOptions::new("ws://h");
        for name in [
            "Referer",
            "host",
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "sec-websocket-protocol",
            "Content-Length",
            "transfer-encoding",
        ] {
            let e = err(base().header(name, "v"));
            assert!(matches!(e, ConnectError::ForbiddenHeader { .. }), "{name}");
            assert!(e.to_string().starts_with("header:"));
        }
        // Each says what to do instead, where there is something to do.
        let why = |name| match err(base().header(name, "v")) {
            ConnectError::ForbiddenHeader { why, .. } => why,
            other => panic!("{other:?}"),
        };
        assert!(why("Host").contains("from the URL's host"));
        assert!(why("Sec-WebSocket-Protocol").contains("protocols"));
        assert_eq!(why("Upgrade"), "the WebSocket handshake sets it");
        assert!(matches!(
            err(base().header("bad name", "v")),
            ConnectError::InvalidHeaderName { .. }
        ));
        assert!(matches!(
            err(base().header("X-A", "a\r\nInjected: 1")),
            ConnectError::InvalidHeaderValue { .. }
        ));
        for value in ["a\nb", "a\rb", "a\0b", "a\x7fb", "a\x01b"] {
            assert!(
                matches!(
                    err(base().header("X-A", value)),
                    ConnectError::InvalidHeaderValue { .. }
                ),
                "{value:?}"
            );
        }
        // Horizontal tab is field whitespace (RFC 9110 §5.5), and bytes above 0x7f are
        // opaque octets; both are allowed.
        let r = base()
            .header("X-Tab", "a\tb")
            .header("X-Utf8", "é")
            .validate()
            .unwrap();
        assert_eq!(r.headers["x-tab"], "a\tb");
        let r = base()
            .header("content-type", "application/json")
            .header("X-Multi", "1")
            .header("x-multi", "2")
            .validate()
            .unwrap();
        assert_eq!(r.headers.get_all("x-multi").iter().count(), 2);
        assert_eq!(r.headers["content-type"], "application/json");
    }

    #[test]
    fn protocols_method_timeout_data() {
        let base = || ConnectOptions::new("ws://h/p?a=1");
        assert!(matches!(
            err(base().protocol("chat v1")),
            ConnectError::InvalidProtocol { .. }
        ));
        assert!(matches!(
            err(base().protocol("")),
            ConnectError::InvalidProtocol { .. }
        ));
        assert!(matches!(
            err(base().protocol("a").protocol("a")),
            ConnectError::DuplicateProtocol { .. }
        ));
        assert!(base().protocol("a").protocol("b.v2").validate().is_ok());
        assert!(base().method("get").validate().is_ok());
        let e = err(base().method("POST"));
        assert!(e.to_string().starts_with("method:"), "{e}");
        assert_eq!(
            err(base().timeout(Duration::ZERO)),
            ConnectError::InvalidTimeout
        );
        let r = base()
            .data("x", "")
            .data("y", "a b&c=d/é")
            .validate()
            .unwrap();
        assert_eq!(r.url.query(), Some("a=1&x=&y=a+b%26c%3Dd%2F%C3%A9"));
    }

    #[test]
    fn proxy_option() {
        let base = || ConnectOptions::new("wss://h");
        assert_eq!(base().validate().unwrap().proxy, ProxyRoute::Environment);
        assert_eq!(
            base().no_proxy().validate().unwrap().proxy,
            ProxyRoute::Direct
        );
        let r = base().proxy("http://u:pw@p:3128").validate().unwrap();
        let ProxyRoute::Through(proxy) = &r.proxy else {
            panic!("{r:?}")
        };
        assert_eq!(proxy.to_string(), "http://p:3128");
        assert!(!format!("{r:?}").contains("pw"));
        let e = err(base().proxy("https://u:pw@p:3128"));
        assert!(e.to_string().starts_with("proxy: https://"), "{e}");
        assert!(!format!("{e} {e:?}").contains("pw"), "{e:?}");
    }

    #[test]
    fn deflate_offer_is_checked_only_when_compression_is_on() {
        use crate::deflate::DeflateOptions;
        let base = || ConnectOptions::new("ws://h");
        let bad = DeflateOptions::default().server_max_window_bits(Some(16));
        let e = err(base().deflate(bad));
        assert_eq!(
            e.to_string(),
            "perMessageDeflate: server_max_window_bits=16 is not a window size from 8 to 15"
        );
        let e = err(base().deflate(DeflateOptions::default().client_max_window_bits(0)));
        assert!(e.to_string().contains("client_max_window_bits=0"), "{e}");
        let e = err(base().deflate(DeflateOptions::default().level(10)));
        assert_eq!(
            e.to_string(),
            "perMessageDeflate: level=10 is not a compression level from 0 to 9"
        );
        let off = ConnectOptions {
            deflate: bad,
            ..base()
        };
        assert_eq!(off.validate().unwrap().per_message_deflate, None);
        let on = base().per_message_deflate(true).validate().unwrap();
        assert_eq!(on.per_message_deflate, Some(DeflateOptions::default()));
    }
}
