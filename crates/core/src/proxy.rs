//! The proxy a connection goes through (an HTTP proxy's `CONNECT` tunnel, or SOCKS5): the
//! `proxy` connect option and the validated proxy the driver dials. Credentials never appear in `Debug` or `Display` output, nor in
//! any error.

use std::fmt;
use url::Url;

/// Which proxy a connection uses ([`crate::ConnectOptions::proxy`]).
///
/// `Debug` hides the credentials of a proxy URL.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyOption {
    /// The proxy the environment names (`https_proxy` for `wss://`, `http_proxy` for
    /// `ws://`, `all_proxy`, `no_proxy`), looked up by the IO adapter, which reads the
    /// environment when its client is created; the core itself never reads it. Default.
    #[default]
    Environment,
    /// Connect directly, whatever the environment says.
    Direct,
    /// Through this proxy, for every host, loopback included:
    /// - `http://[user:password@]host[:port]`, an HTTP proxy's `CONNECT` tunnel (the scheme
    ///   may be left out; the port defaults to 80; credentials go as `Basic`);
    /// - `socks5h://[user:password@]host[:port]` or `socks5://…`, a SOCKS5 proxy (RFC 1928;
    ///   the port defaults to 1080; credentials go as RFC 1929's user name and password).
    ///   With either scheme the proxy resolves the server's name, as Chrome and Go do (curl
    ///   resolves it on the client for `socks5://`): a name only the proxy's side knows
    ///   still works, and no lookup leaks from the client.
    Url(String),
}

impl fmt::Debug for ProxyOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyOption::Environment => f.write_str("Environment"),
            ProxyOption::Direct => f.write_str("Direct"),
            ProxyOption::Url(url) => f.debug_tuple("Url").field(&redact(url)).finish(),
        }
    }
}

/// How a validated request reaches its server
/// ([`HandshakeRequest::proxy`](crate::HandshakeRequest::proxy)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyRoute {
    /// The adapter decides from the environment it read (see [`ProxyOption::Environment`]).
    #[default]
    Environment,
    /// Directly.
    Direct,
    /// Through this proxy.
    Through(Proxy),
}

/// How a [`Proxy`] is asked for a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// An HTTP proxy: `CONNECT host:port`.
    Http,
    /// A SOCKS5 proxy (RFC 1928), given the server's name to resolve.
    Socks5,
}

/// A validated proxy: where to dial, how to ask it for a tunnel, and the credentials to
/// present.
///
/// `Display` shows `scheme://host:port`, never the credentials; `Debug` hides them too.
///
/// ```
/// use wxsocket_core::{Proxy, ProxyProtocol};
/// let proxy = Proxy::parse("http://alice:s%40cret@proxy.example:3128/").unwrap();
/// assert_eq!(proxy.to_string(), "http://proxy.example:3128");
/// assert_eq!(proxy.credentials().unwrap().password(), "s@cret");
/// assert!(!format!("{proxy:?}").contains("cret"));
/// // Debug shows the proxy, and that there are credentials, without them.
/// assert!(format!("{proxy:?}").contains("proxy.example"));
/// assert!(format!("{:?}", proxy.credentials().unwrap()).contains("<redacted>"));
///
/// let socks = Proxy::parse("socks5h://proxy.example").unwrap();
/// assert_eq!(socks.protocol(), ProxyProtocol::Socks5);
/// assert_eq!(socks.to_string(), "socks5h://proxy.example:1080");
/// assert!(Proxy::parse("socks4://proxy:1080").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The scheme as written (`http`, `socks5`, `socks5h`), for `Display`.
    scheme: &'static str,
    protocol: ProxyProtocol,
    host: String,
    port: u16,
    credentials: Option<ProxyCredentials>,
}

/// The user name and password of a proxy URL (an HTTP proxy's `Proxy-Authorization: Basic`,
/// a SOCKS5 proxy's RFC 1929 authentication). `Debug` hides both.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    username: String,
    password: String,
}

impl ProxyCredentials {
    /// The user name (percent-decoded).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password (percent-decoded; empty when the URL has none).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The value of the `Proxy-Authorization` header that sends these credentials: HTTP
    /// Basic (RFC 7617), `Basic` and the base64 of `user:password`.
    ///
    /// ```
    /// use wxsocket_core::Proxy;
    /// let proxy = Proxy::parse("http://Aladdin:open%20sesame@proxy:3128").unwrap();
    /// let credentials = proxy.credentials().unwrap();
    /// assert_eq!(credentials.basic_authorization(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    /// ```
    pub fn basic_authorization(&self) -> String {
        crate::request::basic_authorization(&self.username, &self.password)
    }
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyCredentials(<redacted>)")
    }
}

impl Proxy {
    /// This proxy with placeholder credentials: what a transcript's replay dials, the
    /// credentials themselves never being written.
    pub(crate) fn with_redacted_credentials(mut self) -> Self {
        self.credentials = Some(ProxyCredentials {
            username: crate::transcript::REDACTED.to_owned(),
            password: crate::transcript::REDACTED.to_owned(),
        });
        self
    }

    /// Parses `http://[user:password@]host[:port][/]` (a value without a scheme is taken
    /// as `http://`), `socks5h://…` or `socks5://…` (see [`ProxyOption::Url`]). The error
    /// says why, without repeating the URL (it may hold a password).
    pub fn parse(raw: &str) -> Result<Proxy, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("the proxy URL is empty".into());
        }
        // The URL parser would drop tabs and line breaks and go on: refuse them instead.
        if raw.chars().any(char::is_control) {
            return Err("the proxy URL contains a control character".into());
        }
        let with_scheme;
        let raw = if raw.contains("://") {
            raw
        } else {
            with_scheme = format!("http://{raw}");
            &with_scheme
        };
        // The url crate's errors describe the problem without quoting the input.
        let url = Url::parse(raw).map_err(|e| format!("invalid proxy URL: {e}"))?;
        let (scheme, protocol, default_port) = match url.scheme() {
            "http" => ("http", ProxyProtocol::Http, 80),
            "socks5" => ("socks5", ProxyProtocol::Socks5, 1080),
            "socks5h" => ("socks5h", ProxyProtocol::Socks5, 1080),
            "https" => {
                return Err("https:// proxies are not supported; use an http:// proxy (TLS to a wss:// server still runs end to end through it)".into());
            }
            other => {
                return Err(format!(
                    "unsupported proxy scheme {other:?} (http://, socks5:// and socks5h:// proxies are)"
                ));
            }
        };
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err("the proxy URL has no host".into());
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("a proxy URL has no path, query or fragment".into());
        }
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| "the proxy credentials are not valid UTF-8".to_owned())
            };
            let username = decode(url.username())?;
            let password = decode(url.password().unwrap_or_default())?;
            match protocol {
                ProxyProtocol::Http if username.contains(':') => {
                    return Err("a proxy user name may not contain ':' (RFC 7617)".into());
                }
                // RFC 1929 carries each in a field of 1 to 255 bytes (an empty password
                // is sent as an empty field, as curl does).
                ProxyProtocol::Socks5 if username.is_empty() => {
                    return Err("a SOCKS5 proxy's user name may not be empty (RFC 1929)".into());
                }
                ProxyProtocol::Socks5 if username.len() > 255 || password.len() > 255 => {
                    let (field, len) = if username.len() > 255 {
                        ("user name", username.len())
                    } else {
                        ("password", password.len())
                    };
                    return Err(format!(
                        "a SOCKS5 proxy's {field} is {len} bytes long; RFC 1929 carries at \
                         most 255"
                    ));
                }
                _ => {}
            }
            Some(ProxyCredentials { username, password })
        };
        Ok(Proxy {
            scheme,
            protocol,
            host: host.to_owned(),
            port: url.port().unwrap_or(default_port),
            credentials,
        })
    }

    /// How the proxy is asked for a tunnel.
    pub fn protocol(&self) -> ProxyProtocol {
        self.protocol
    }

    /// The proxy's host as in the URL (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The credentials, when the URL had any.
    pub fn credentials(&self) -> Option<&ProxyCredentials> {
        self.credentials.as_ref()
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("protocol", &self.protocol)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// `url` as written, with any user information replaced by `***`, for errors and `Debug`
/// output. Everything after the scheme up to the last `@` before the query goes, even where
/// a malformed URL has a `/` in its password (an `@` in a path only hides a little more),
/// or else up to the last `@` before the first `/` (a `?` or `#` in the password).
/// The values of the usual token query parameters
/// ([`QUERY_DEFAULTS`](crate::transcript::QUERY_DEFAULTS)) show as `***` too, in the query
/// and in the fragment (OAuth's implicit flow puts `access_token` there), with pairs split
/// at `&` or `;`.
pub(crate) fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let first_break = url[start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| start + i);
    let first_slash = url[start..].find('/').map_or(url.len(), |i| start + i);
    // A password with an unencoded `?` or `#`, which a URL parser takes for the query or
    // the fragment (a prober's `ws://bob:s3cr#tPASS@host/` was shown whole): the last `@`
    // before the first `/` ends the user information too.
    let at = url[start..first_break]
        .rfind('@')
        .or_else(|| url[start..first_slash].rfind('@'))
        .map(|at| start + at);
    let (mut out, from) = match at {
        Some(at) => (format!("{}***", &url[..start]), at),
        None => (String::new(), 0),
    };
    let end = url[from..].find(['?', '#']).map_or(url.len(), |i| from + i);
    out.push_str(&url[from..end]);
    let rest = &url[end..];
    let (query, fragment) = match rest.find('#') {
        Some(hash) => (&rest[..hash], Some(&rest[hash + 1..])),
        None => (rest, None),
    };
    out.push_str(&redact_pairs(query, is_token, "***"));
    if let Some(fragment) = fragment {
        out.push('#');
        // A single-page app's route (`#/login?token=…`) has its parameters after a `?`; a
        // fragment of pairs may hold a `?` in a value (`#token=…&next=/a?b`): both sides
        // are pairs to look into.
        let (before, after) = fragment.split_at(fragment.find('?').unwrap_or(fragment.len()));
        out.push_str(&redact_pairs(before, is_token, "***"));
        out.push_str(&redact_pairs(after, is_token, "***"));
    }
    out
}

/// [`redact`] for a URL as the user wrote it, which may not parse: one that does not may
/// hold a password with any of `/`, `?` and `#` (a reviewer's `ws://bob:a/b#SECRET@host/`
/// was shown whole), so everything after the scheme up to its last `@` goes (an `@` in the
/// path or query of a broken URL only hides more).
pub(crate) fn redact_written(url: &str) -> String {
    if url::Url::parse(url).is_ok() {
        return redact(url);
    }
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => redact(&format!("{}***{}", &url[..start], &url[start + at..])),
        None => redact(url),
    }
}

/// `key=value` pairs (after an optional leading `?`) split at `&` or `;`, with the values
/// of the keys `secret` names written as `shown`.
pub(crate) fn redact_pairs(pairs: &str, secret: impl Fn(&str) -> bool, shown: &str) -> String {
    let mut out = String::with_capacity(pairs.len());
    let mut rest = pairs;
    if let Some(query) = rest.strip_prefix('?') {
        out.push('?');
        rest = query;
    }
    loop {
        let split = rest.find(['&', ';']).unwrap_or(rest.len());
        let pair = &rest[..split];
        match pair.split_once('=') {
            Some((key, _)) if secret(key) => {
                out.push_str(key);
                out.push('=');
                out.push_str(shown);
            }
            _ => out.push_str(pair),
        }
        let Some(separator) = rest[split..].chars().next() else {
            return out;
        };
        out.push(separator);
        rest = &rest[split + 1..];
    }
}

/// Whether query parameter `key` (or a `data` entry's) usually carries a credential.
pub(crate) fn is_token(key: &str) -> bool {
    crate::transcript::QUERY_DEFAULTS
        .iter()
        .any(|q| q.eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_user_information_and_the_usual_tokens() {
        for (url, shown) in [
            ("ws://h/ws", "ws://h/ws"),
            ("ws://a:b@h/x?room=1#f", "ws://***@h/x?room=1#f"),
            (
                "wss://h/?Token=abc&room=5&sig=&x&api_key=k#frag&token=y",
                "wss://h/?Token=***&room=5&sig=***&x&api_key=***#frag&token=***",
            ),
            ("h?", "h?"),
            // A reviewer: the fragment of an OAuth redirect, and `;` between pairs.
            (
                "https://app/cb#access_token=t0k&state=1",
                "https://app/cb#access_token=***&state=1",
            ),
            ("/ws?room=1;token=x;a=b", "/ws?room=1;token=***;a=b"),
            ("ws://h/#", "ws://h/#"),
            // A hash route's parameters.
            (
                "https://app/#/cb?token=t&x=1",
                "https://app/#/cb?token=***&x=1",
            ),
            ("https://app/#/a?b&token=t", "https://app/#/a?b&token=***"),
            // A reviewer: a `?` in a later value of a fragment of pairs.
            (
                "https://app/cb#access_token=S&next=/home?tab=1",
                "https://app/cb#access_token=***&next=/home?tab=1",
            ),
            ("https://app/#token=S?x", "https://app/#token=***?x"),
            // A password with an unencoded `#` or `?` (a security prober).
            ("ws://bob:s3cr#tPASS@h:9/", "ws://***@h:9/"),
            ("ws://bob:a?b=c@h/x?token=t", "ws://***@h/x?token=***"),
            // An `@` in a query after a path is no user information.
            ("ws://h/p?mail=a@b.c", "ws://h/p?mail=a@b.c"),
        ] {
            assert_eq!(redact(url), shown);
        }
        // A URL that does not parse: the password may hold `/` and `#` (a reviewer).
        for (url, shown) in [
            ("ws://bob:a/b#SECRET@host/", "ws://***@host/"),
            (
                "ws://bob:a/b?SECRET@host/x?token=t",
                "ws://***@host/x?token=***",
            ),
            ("ws://bob:x#y/SECRET@host/", "ws://***@host/"),
            // A URL that parses keeps the finer rule.
            ("ws://h/p?mail=a@b.c", "ws://h/p?mail=a@b.c"),
        ] {
            assert_eq!(redact_written(url), shown);
        }
    }

    #[test]
    fn parses_and_hides_credentials() {
        let p = Proxy::parse("proxy.local:8080").unwrap();
        assert_eq!(
            (p.host(), p.port(), p.credentials()),
            ("proxy.local", 8080, None)
        );
        let p = Proxy::parse("http://[::1]").unwrap();
        assert_eq!(p.to_string(), "http://[::1]:80");
        let p = Proxy::parse(" http://u%3Ax:p%20w@h:1/ ").unwrap_err();
        assert!(p.contains("':'"), "{p}");
        let p = Proxy::parse("http://user:pa%20ss@h:1").unwrap();
        let c = p.credentials().unwrap();
        assert_eq!((c.username(), c.password()), ("user", "pa ss"));
        let p = Proxy::parse("http://user@h:1").unwrap();
        assert_eq!(p.credentials().unwrap().password(), "");
        for shown in [format!("{p:?}"), p.to_string()] {
            assert!(!shown.contains("user"), "{shown}");
        }
        // SOCKS5: its own default port, the scheme as written, and RFC 1929's bounds.
        let p = Proxy::parse("socks5://u:p%3Aw@[::1]").unwrap();
        assert_eq!(p.protocol(), ProxyProtocol::Socks5);
        assert_eq!(p.to_string(), "socks5://[::1]:1080");
        let c = p.credentials().unwrap();
        assert_eq!((c.username(), c.password()), ("u", "p:w"));
        let p = Proxy::parse("socks5h://u%3Ax@h:9").unwrap();
        assert_eq!(p.to_string(), "socks5h://h:9");
        assert_eq!(p.credentials().unwrap().username(), "u:x");
        assert_eq!(Proxy::parse("h:1").unwrap().protocol(), ProxyProtocol::Http);
        let long = "x".repeat(256);
        for url in [
            format!("socks5h://{long}:pw@h"),
            format!("socks5h://u:{long}@h"),
        ] {
            let e = Proxy::parse(&url).unwrap_err();
            assert!(
                e.contains("256 bytes long; RFC 1929 carries at most 255"),
                "{e}"
            );
            let field = if url.contains("u:") {
                "password"
            } else {
                "user name"
            };
            assert!(e.contains(field), "{e}");
        }
        assert!(Proxy::parse(&format!("socks5h://u:{}@h", "x".repeat(255))).is_ok());
        let option = ProxyOption::Url("http://user:secret@h:1/".into());
        assert_eq!(format!("{option:?}"), "Url(\"http://***@h:1/\")");
        let option = ProxyOption::Url("u:pa/ss@h:1".into());
        assert_eq!(format!("{option:?}"), "Url(\"***@h:1\")");
    }

    #[test]
    fn rejects_what_it_cannot_dial() {
        for (url, why) in [
            ("", "empty"),
            ("https://h:1", "https:// proxies are not supported"),
            ("socks4://h:1", "\"socks4\""),
            ("socks5://:pw@h:1", "may not be empty"),
            ("http://h:1/path", "no path"),
            ("http://h:1/?q", "no path"),
            ("http://user:secret@h:99999", "invalid proxy URL"),
            ("http://:secret@", "invalid proxy URL"),
        ] {
            let e = Proxy::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
    }
}
