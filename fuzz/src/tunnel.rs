//! The `tunnel` target: a proxy's answers, whatever they are, fed to the exchange that opens
//! its tunnel ([`wxsocket_wire::proxy::Tunnel`]: an HTTP proxy's `CONNECT`, or SOCKS5).
//!
//! The client's side is played as a driver would: everything outgoing is written (in
//! fuzzer-sized pieces) before the proxy's next bytes are fed. The proxy's side is the
//! fuzzer's bytes, in its pieces; with `well_formed`, a correct answer for each step is
//! sent first (so the exchange's later steps are reached), and the fuzzer's bytes follow.
//!
//! Checked on every input:
//! - no panic, and each step ends in more needed, the tunnel open, or an error;
//! - what was written is what the protocol says for the proxy and target, computed here
//!   independently of the crate: the HTTP request; or SOCKS5's greeting, the credentials
//!   only if the proxy chose them, and the `CONNECT` request only after the proxy accepted;
//! - every error names the proxy (`proxy <scheme>://host:port`) and never the password,
//!   and so do the errors for a close or an IO failure at any point;
//! - the answer waited for is bounded: an exchange that still wants more after 16 KiB and
//!   a piece (HTTP) or 300 bytes a step (SOCKS5) has kept unbounded input.

use arbitrary::{Arbitrary, Unstructured};
use wxsocket_core::{Proxy, ProxyProtocol};
use wxsocket_wire::proxy::{MAX_PROXY_RESPONSE_HEAD, Tunnel};

const PASSWORD: &str = "pw-f9zz";

#[derive(Debug, Arbitrary)]
struct Case {
    socks: bool,
    credentials: bool,
    /// 0: a name, 1: IPv4, 2: IPv6, else a name of 255 bytes.
    host: u8,
    port: u16,
    /// Correct answers first (SOCKS5: method `method`, then success), then `answer`.
    well_formed: bool,
    method: u8,
    /// How many bytes each write takes (0 counts as 1).
    write_pieces: Vec<u8>,
    /// How the proxy's bytes are cut (0 counts as 1).
    read_pieces: Vec<u8>,
    answer: Vec<u8>,
}

/// Checks one input (see the module docs).
pub fn tunnel(data: &[u8]) {
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let host = match case.host % 4 {
        0 => "chat.example.com".to_owned(),
        1 => "10.1.2.3".to_owned(),
        2 => "[2001:db8::1]".to_owned(),
        _ => "a".repeat(255),
    };
    let user = if case.credentials {
        format!("alice:{PASSWORD}@")
    } else {
        String::new()
    };
    let scheme = if case.socks { "socks5h" } else { "http" };
    let proxy = Proxy::parse(&format!("{scheme}://{user}proxy.example:1080")).unwrap();
    let named = format!("proxy {scheme}://proxy.example:1080");
    let mut tunnel = Tunnel::new(&proxy, &host, case.port);
    let mut answer = Vec::new();
    if case.well_formed && proxy.protocol() == ProxyProtocol::Socks5 {
        answer.extend_from_slice(&[5, case.method % 3]);
        if case.method % 3 == 2 {
            answer.extend_from_slice(&[1, 0]);
        }
        answer.extend_from_slice(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80]);
    } else if case.well_formed {
        answer.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    }
    answer.extend_from_slice(&case.answer);

    let mut written = Vec::new();
    let mut writes = case.write_pieces.iter().cycle();
    let mut reads = case.read_pieces.iter().cycle();
    let mut fed = 0;
    let mut rest = answer.as_slice();
    let open = loop {
        check_error(&tunnel.closed_early().message, &named);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        check_error(&tunnel.io_error(&reset).message, &named);
        while !tunnel.outgoing().is_empty() {
            let piece = writes.next().map_or(usize::MAX, |&p| usize::from(p).max(1));
            let n = piece.min(tunnel.outgoing().len());
            written.extend_from_slice(&tunnel.outgoing()[..n]);
            tunnel.wrote(n);
        }
        if rest.is_empty() {
            break false;
        }
        let piece = reads.next().map_or(rest.len(), |&p| usize::from(p).max(1));
        let (now, later) = rest.split_at(piece.min(rest.len()));
        rest = later;
        fed += now.len();
        match tunnel.feed(now) {
            Ok(true) => break true,
            Ok(false) => {
                let bound = if case.socks {
                    3 * 300
                } else {
                    MAX_PROXY_RESPONSE_HEAD + 256
                };
                assert!(fed <= bound, "{fed} bytes kept waiting for an answer");
            }
            Err(e) => {
                check_error(&e.message, &named);
                break false;
            }
        }
    };
    check_written(&case, &host, &written, &answer, open);
}

fn check_error(message: &str, named: &str) {
    assert!(message.starts_with(named), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

/// What was written is the protocol's, for what the proxy answered.
fn check_written(case: &Case, host: &str, written: &[u8], answer: &[u8], open: bool) {
    let port = case.port.to_be_bytes();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if !case.socks {
        let mut request = format!("CONNECT {host}:{}", case.port);
        request = format!("{request} HTTP/1.1\r\nHost: {}\r\n", &request[8..]);
        if case.credentials {
            // base64("alice:pw-f9zz")
            request.push_str("Proxy-Authorization: Basic YWxpY2U6cHctZjl6eg==\r\n");
        }
        request.push_str("\r\n");
        assert_eq!(written, request.as_bytes());
        return;
    }
    let greeting: &[u8] = if case.credentials {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    assert!(written.starts_with(greeting), "{written:?}");
    let mut rest = &written[greeting.len()..];
    let chose_password = answer.get(..2) == Some(&[5, 2]) && case.credentials;
    if chose_password && !rest.is_empty() {
        let mut auth = vec![1, 5];
        auth.extend_from_slice(b"alice");
        auth.push(PASSWORD.len() as u8);
        auth.extend_from_slice(PASSWORD.as_bytes());
        assert!(rest.starts_with(&auth), "{written:?}");
        rest = &rest[auth.len()..];
        // The request follows only once the proxy accepted.
        assert!(
            // (Version 5 too: many proxies answer the credentials with it.)
            rest.is_empty() || matches!(answer.get(2..4), Some(&[1 | 5, 0])),
            "{written:?}"
        );
    }
    if rest.is_empty() {
        assert!(!open, "open without a request");
        return;
    }
    let mut request = vec![5, 1, 0];
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            request.extend_from_slice(&[3, host.len() as u8]);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port);
    assert_eq!(rest, request.as_slice(), "{written:?}");
}
