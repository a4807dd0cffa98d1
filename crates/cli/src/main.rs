//! `wxsocket`: the WeChat mini-program WebSocket session model on the command line.
//!
//! - `wxsocket` / `wxsocket demo [--blocking]`: a timeline of the session model against an
//!   embedded echo server;
//! - `wxsocket connect URL [options]`: a client for pipes and terminals (payloads only by
//!   default, `-v` for the annotated timeline, `--json` for scripts);
//! - `wxsocket serve [--addr ADDR] [--deflate] [--broadcast]`: an echo or broadcast server;
//! - `wxsocket replay FILE`: replays a transcript `connect --record FILE` wrote, printing
//!   the events in the `--json` contract, and tells whether they are the recorded ones;
//!
//! Invalid command-line options exit with status 2 and a one-line error naming the option;
//! `connect`'s other exit statuses are listed in its `--help`.
#![forbid(unsafe_code)]

mod backend;
mod connect;
mod demo;
mod identity;
mod output;
mod replay;
mod server;
mod server_stream;
mod signals;
mod stdout;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The WeChat mini-program WebSocket session model (connect, open, send, message, error,
/// close), as a demo, an interactive client, an echo server and a benchmark.
#[derive(Debug, Parser)]
#[command(name = "wxsocket", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play the mini-program page flow against an embedded echo server, as a timeline
    /// (the default command).
    Demo(DemoArgs),
    /// Connect to a WebSocket server, send standard input, print what arrives.
    Connect(Box<ConnectArgs>),
    /// Run an echo (or broadcast) server, printing each connection and close.
    Serve(ServeArgs),
    /// Replay a transcript (`connect --record FILE`) in a fresh session: print its events
    /// as JSON lines and check that every action and event is the recorded one.
    Replay(ReplayArgs),
    /// The benchmarks are not part of this command (see `wxsocket-bench` in the repository).
    #[command(hide = true)]
    Bench(BenchArgs),
}

#[derive(Debug, Args, Default)]
struct DemoArgs {
    /// Use the blocking adapter (wxsocket-blocking) instead of wxsocket-tokio.
    #[arg(long)]
    blocking: bool,
}

/// What `close` does before the socket opened.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Policy {
    /// Abort the dial; queued messages fail; close event 1006 (the default, as browsers, without their error event).
    Abort,
    /// Remember the close and carry it out right after open (WeChat's documented workaround).
    AfterOpen,
    /// Refuse the close while connecting (WeChat's documented race).
    Ignore,
}

#[derive(Debug, Args)]
#[command(after_help = connect::STDIN_HELP)]
struct ConnectArgs {
    /// The server: `ws://host[:port]/path` or `wss://…` (http/https are mapped to ws/wss).
    #[arg(value_name = "URL")]
    url: String,
    /// A handshake header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// A sub-protocol to offer (repeatable, in preference order).
    #[arg(short = 'p', long = "protocol", value_name = "P")]
    protocols: Vec<String>,
    /// A key=value pair appended to the URL query, percent-encoded (repeatable).
    #[arg(long = "data", value_name = "KEY=VALUE", value_parser = parse_data)]
    data: Vec<(String, String)>,
    /// Handshake timeout in milliseconds, 1-86400000 (default 60000).
    #[arg(long, value_name = "MS", value_parser = parse_millis, allow_hyphen_values = true)]
    timeout: Option<u64>,
    /// How long the close handshake may take before the connection is dropped (1006), in
    /// milliseconds, 1-86400000 (default 10000). Raise it for a slow uplink: our close
    /// frame waits behind what is still going out.
    #[arg(long, value_name = "MS", value_parser = parse_millis, allow_hyphen_values = true)]
    close_timeout: Option<u64>,
    /// Set TCP_NODELAY on the socket.
    #[arg(long)]
    nodelay: bool,
    /// Offer permessage-deflate compression (RFC 7692); the agreed parameters are shown on
    /// open.
    #[arg(long, help_heading = "Compression")]
    deflate: bool,
    /// Ask the server to reset its compression context after each message (implies
    /// --deflate).
    #[arg(long, help_heading = "Compression")]
    deflate_server_no_context_takeover: bool,
    /// Declare that this client resets its compression context after each message
    /// (implies --deflate).
    #[arg(long, help_heading = "Compression")]
    deflate_client_no_context_takeover: bool,
    /// Ask the server to compress with at most a 2^BITS-byte window, 8-15 (implies
    /// --deflate).
    #[arg(
        long,
        value_name = "BITS",
        help_heading = "Compression",
        allow_hyphen_values = true,
        value_parser = parse_window_bits
    )]
    deflate_server_window_bits: Option<u8>,
    /// Compress with at most a 2^BITS-byte window, 8-15 (default 15; the server may lower
    /// it; implies --deflate).
    #[arg(
        long,
        value_name = "BITS",
        help_heading = "Compression",
        allow_hyphen_values = true,
        value_parser = parse_window_bits
    )]
    deflate_client_window_bits: Option<u8>,
    /// Send messages shorter than BYTES uncompressed (default 32; implies --deflate).
    #[arg(
        long,
        value_name = "BYTES",
        help_heading = "Compression",
        allow_hyphen_values = true,
        value_parser = parse_usize
    )]
    deflate_threshold: Option<usize>,
    /// zlib compression level, 0-9 (default 6; 1 is several times faster, 9 the
    /// smallest; implies --deflate).
    #[arg(
        long,
        value_name = "LEVEL",
        help_heading = "Compression",
        allow_hyphen_values = true,
        value_parser = parse_u32
    )]
    deflate_level: Option<u32>,
    /// What /close does while the socket is still connecting.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "abort")]
    close_before_open: Policy,
    /// Ping after SECS seconds with nothing received; give up if nothing arrives within
    /// another SECS seconds (1-86400).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_hyphen_values = true)]
    keepalive: Option<u64>,
    /// Trust the CA certificates of this PEM file (in addition to the webpki roots).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Present this client certificate (PEM, the client's own certificate first, then any
    /// intermediates) to a wss server that asks for one (mutual TLS); refused with a ws://
    /// URL, where it could not be presented.
    #[arg(long, value_name = "PEM")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM: PKCS#8, PKCS#1 or SEC1; default: read from
    /// the --client-cert file).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Refuse any URL that is not wss.
    #[arg(long)]
    require_tls: bool,
    /// Only allow these hosts ("legal domains"; `*.example.com` matches subdomains).
    #[arg(long = "allow-host", value_name = "HOST", value_parser = parse_host_pattern)]
    allow_hosts: Vec<String>,
    /// Tunnel through this proxy, for every host: an HTTP proxy,
    /// http://USER:PASSWORD@HOST:PORT, or a SOCKS5 proxy, socks5h://USER:PASSWORD@HOST:PORT
    /// (socks5:// alike; the proxy resolves the server's name). Credentials and port
    /// optional (80, 1080)
    /// (default: the https_proxy / http_proxy / all_proxy / no_proxy environment, loopback
    /// hosts excepted).
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly, ignoring the proxy environment variables.
    #[arg(long)]
    no_proxy: bool,
    /// Reconnect automatically when a connection this client did not close ends (a failed
    /// dial, a TLS failure such as an untrusted certificate included, a drop, a keepalive
    /// failure, a retried close code), with exponential backoff and full jitter; the first
    /// retry within --reconnect-base. An HTTP 4xx answer is final, and so are a SOCKS5
    /// proxy's refusal of the client (credentials, its rules) and a permanent redirect (301,
    /// 308). Without --reconnect-max, retries never end.
    #[arg(long, help_heading = "Reconnection")]
    reconnect: bool,
    /// Ceiling of the first retry's delay in milliseconds, doubling per attempt,
    /// 1-86400000 (default 100; implies --reconnect).
    #[arg(
        long,
        value_name = "MS",
        value_parser = parse_millis,
        help_heading = "Reconnection",
        allow_hyphen_values = true
    )]
    reconnect_base: Option<u64>,
    /// Largest delay ceiling in milliseconds, at least --reconnect-base, up to 86400000
    /// (default 30000, or --reconnect-base if larger; implies --reconnect).
    #[arg(
        long,
        value_name = "MS",
        value_parser = parse_millis,
        help_heading = "Reconnection",
        allow_hyphen_values = true
    )]
    reconnect_cap: Option<u64>,
    /// Retry at most N times in a row: the close after the Nth retry is final (default: no
    /// limit; implies --reconnect). A connection that stays open --reconnect-min-uptime
    /// ends the row; one that ends sooner continues it.
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_attempts,
        help_heading = "Reconnection",
        allow_hyphen_values = true
    )]
    reconnect_max: Option<u32>,
    /// How long a connection must stay open to end a row of retries, in milliseconds,
    /// 0-86400000 (default 5000; 0: every connection that opens ends it; implies
    /// --reconnect). A server that accepts and at once closes is then retried with growing
    /// delays, and --reconnect-max ends it.
    #[arg(
        long,
        value_name = "MS",
        value_parser = parse_millis_or_zero,
        help_heading = "Reconnection",
        allow_hyphen_values = true
    )]
    reconnect_min_uptime: Option<u64>,
    /// Fail the messages queued while reconnecting when an attempt fails, instead of
    /// keeping them for the next one (implies --reconnect).
    #[arg(long, help_heading = "Reconnection")]
    reconnect_no_carry: bool,
    /// Also retry a handshake the server (or an HTTP proxy) rejected with HTTP 4xx, and a
    /// SOCKS5 proxy's refusal of the client (implies --reconnect).
    #[arg(long = "reconnect-on-4xx", help_heading = "Reconnection")]
    reconnect_on_4xx: bool,
    /// Delivery acknowledgement: a ping follows each batch of messages, and each message is
    /// reported delivered (`delivered` in --json) once the server's pong proves its
    /// WebSocket stack read it, instead of written. With --reconnect, messages not yet
    /// acknowledged when a connection drops are sent again first on the next one, marked
    /// `"duplicate": true` (they may arrive twice); otherwise they fail, as possibly
    /// delivered. A server that answers no ping for 10 s (--ack-timeout) is given up as
    /// dead.
    #[arg(long)]
    ack: bool,
    /// How long a ping of --ack may wait for its pong while nothing arrives, in
    /// milliseconds, 1-86400000 (default 10000; implies --ack). What the socket's buffers
    /// hold on a slow uplink goes out before the pong can come: the timeout must cover it.
    #[arg(long, value_name = "MS", value_parser = parse_millis, allow_hyphen_values = true)]
    ack_timeout: Option<u64>,
    /// The server's close codes that are retried, comma-separated, or `none` (default
    /// 1001,1011,1012,1013; implies --reconnect).
    #[arg(
        long,
        value_name = "CODES",
        value_parser = parse_close_codes,
        help_heading = "Reconnection",
        allow_hyphen_values = true
    )]
    reconnect_codes: Option<CloseCodes>,
    /// Seed of the backoff jitter, so the delays replay (default: random; implies
    /// --reconnect).
    #[arg(
        long,
        value_name = "N",
        help_heading = "Reconnection",
        allow_hyphen_values = true,
        value_parser = parse_whole
    )]
    reconnect_seed: Option<u64>,
    /// Use the blocking adapter (wxsocket-blocking) instead of wxsocket-tokio.
    #[arg(long)]
    blocking: bool,
    /// Each line of standard input is a text message, and /commands work (the default). The
    /// line ending (\n, or \r\n) is not sent.
    #[arg(short = 't', long, help_heading = "Input and output")]
    text: bool,
    /// Each chunk read from standard input (at most 64 KiB) is one binary message, its bytes
    /// as they are (\r and \n included); no /commands.
    #[arg(
        short = 'b',
        long,
        conflicts_with = "text",
        help_heading = "Input and output"
    )]
    binary: bool,
    /// Write binary messages as their raw bytes (no newline added) instead of one line of
    /// hex.
    #[arg(long, help_heading = "Input and output")]
    raw_output: bool,
    /// Print the annotated timeline of every event instead of message payloads only.
    #[arg(short = 'v', long, help_heading = "Input and output")]
    verbose: bool,
    /// Print no diagnostics on stderr (the exit status still tells what happened).
    #[arg(short = 'q', long, help_heading = "Input and output")]
    quiet: bool,
    /// Print one JSON object per line (the event contract of the README).
    #[arg(long, conflicts_with = "verbose", help_heading = "Input and output")]
    json: bool,
    /// Close and exit once N messages were received (1-4294967295).
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_count,
        help_heading = "Input and output",
        allow_hyphen_values = true
    )]
    max_messages: Option<u64>,
    /// Close and exit after the first message received (--max-messages 1).
    #[arg(
        short = '1',
        conflicts_with = "max_messages",
        help_heading = "Input and output"
    )]
    one_message: bool,
    /// The largest message sent or received, in bytes, 1-1073741824 (default 67108864);
    /// a longer line of standard input is an error.
    #[arg(
        long,
        value_name = "BYTES",
        value_parser = parse_size,
        help_heading = "Input and output",
        allow_hyphen_values = true
    )]
    max_message_size: Option<usize>,
    /// At the end of input, wait until every send completed and nothing arrived for MS
    /// milliseconds before closing, 0-86400000 (default 200).
    #[arg(
        long,
        value_name = "MS",
        value_parser = parse_linger,
        help_heading = "End of input",
        allow_hyphen_values = true
    )]
    linger: Option<u64>,
    /// Wait at most MS milliseconds at the end of input, counted from the first open after
    /// it or from the last send that completed, whichever is later (a slow upload goes on),
    /// 0-86400000 (default 2000).
    #[arg(
        long,
        value_name = "MS",
        value_parser = parse_linger,
        help_heading = "End of input",
        allow_hyphen_values = true
    )]
    linger_max: Option<u64>,
    /// Close as soon as the input ends (replies the server sends before it reads the close
    /// frame are still printed).
    #[arg(long, conflicts_with_all = ["linger", "linger_max"], help_heading = "End of input")]
    no_linger: bool,
    /// Record a transcript of the session to FILE (created or truncated): every input the
    /// core took, replayable with `wxsocket replay FILE`. The values of Authorization,
    /// Cookie, Proxy-Authorization and Set-Cookie headers are left out, and those of the URL
    /// query parameters access_token, api_key, apikey, auth, key, password, secret, sig,
    /// signature and token.
    #[arg(long, value_name = "FILE", help_heading = "Transcript")]
    record: Option<PathBuf>,
    /// Also leave the values of this header out of the transcript (repeatable).
    #[arg(long, value_name = "NAME", requires = "record", value_parser = parse_header_name, help_heading = "Transcript")]
    record_redact: Vec<String>,
    /// Also leave the value of this URL query parameter out of the transcript (repeatable).
    #[arg(
        long,
        value_name = "NAME",
        requires = "record",
        help_heading = "Transcript"
    )]
    record_redact_query: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = replay::HELP)]
struct ReplayArgs {
    /// The transcript file (JSON lines, as `connect --record` writes it).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = SERVE_HELP)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the URL is printed first).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    addr: std::net::SocketAddr,
    /// Accept permessage-deflate offers: inflate the client's compressed messages and
    /// compress the replies.
    #[arg(long)]
    deflate: bool,
    /// Send every message to every connected client (the sender included) instead of
    /// echoing it; a client more than 4096 messages behind is closed with 1008.
    #[arg(long)]
    broadcast: bool,
    /// A sub-protocol the server agrees to (repeatable, in preference order); a client
    /// offering none of them gets no sub-protocol. Default: the first one offered.
    #[arg(short = 'p', long = "protocol", value_name = "P", value_parser = parse_token)]
    protocols: Vec<String>,
    /// Print one JSON object per line: listening, connection, message, close, error,
    /// shutdown.
    #[arg(long)]
    json: bool,
    /// Serve wss:// with this certificate chain (PEM, the server's own certificate first);
    /// its key is read from the same file unless --tls-key is given.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a client certificate signed by a CA of this PEM file (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// How long a client gets, from its TCP connection, to finish its TLS (with --tls-cert)
    /// and WebSocket handshakes, in milliseconds, 1-86400000 (default 10000); one that has
    /// not is dropped, with an error line.
    #[arg(long, value_name = "MS", value_parser = parse_millis, allow_hyphen_values = true)]
    handshake_timeout: Option<u64>,
}

/// Shown after `wxsocket serve --help`.
const SERVE_HELP: &str = "\
On SIGTERM, SIGINT (Ctrl-C) or SIGHUP (unless started with it ignored, as by nohup) the
server stops accepting, closes every connection with 1001 \"server shutting down\", waits
up to 3 s for the close handshakes, and exits 0.
Exit status: 2 for invalid options, 1 if the address cannot be bound.";

/// Whatever `wxsocket bench` was given: the benchmarks moved to the unpublished
/// `wxsocket-bench` crate, and the command only says where.
#[derive(Debug, Args)]
struct BenchArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', got {text:?}"))?;
    // Only spaces and tabs are optional whitespace (RFC 9110 §5.6.3); a CR or LF, even at
    // an edge, is refused rather than trimmed away.
    if text.contains(['\r', '\n']) {
        return Err(format!("a header may not contain CR or LF: {text:?}"));
    }
    let is_blank = |c: char| c == ' ' || c == '\t';
    let name = name.trim_matches(is_blank);
    if name.is_empty() {
        return Err(format!("empty header name in {text:?}"));
    }
    Ok((name.to_owned(), value.trim_matches(is_blank).to_owned()))
}

/// The longest `--timeout`, `--reconnect-base` and `--reconnect-cap`, in milliseconds: the
/// core's bound on every timer (24 hours), checked here so a huge value is a usage error
/// naming the option, before any IO.
const MAX_MILLIS: u64 = wxsocket_core::MAX_TIMER.as_millis() as u64;

/// The longest `--keepalive`, in seconds (see [`MAX_MILLIS`]).
const MAX_SECS: u64 = wxsocket_core::MAX_TIMER.as_secs();

/// A whole number in `1..=max`; `span` says what `max` is, for the error.
fn parse_bounded(text: &str, max: u64, span: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n > max => Err(format!("must be at most {max} ({span})")),
        Ok(n) => Ok(n),
        // A number too large for u64 is still a number: say what the bound is.
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("must be at most {max} ({span})"))
        }
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn parse_millis(text: &str) -> Result<u64, String> {
    parse_bounded(text, MAX_MILLIS, "24 hours")
}

fn parse_millis_or_zero(text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    parse_millis(text)
}

fn parse_secs(text: &str) -> Result<u64, String> {
    parse_bounded(text, MAX_SECS, "24 hours")
}

/// The largest `--max-message-size` (1 GiB).
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

fn parse_size(text: &str) -> Result<usize, String> {
    parse_bounded(text, MAX_MESSAGE_SIZE, "1 GiB").map(|n| usize::try_from(n).expect("bounded"))
}

fn parse_count(text: &str) -> Result<u64, String> {
    parse_bounded(text, u64::from(u32::MAX), "the largest count")
}

/// A linger time in milliseconds: 0 is allowed (no quiet period, or no waiting at all).
fn parse_linger(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b == b'0') {
        return Ok(0);
    }
    parse_bounded(text, MAX_MILLIS, "24 hours")
}

fn parse_attempts(text: &str) -> Result<u32, String> {
    parse_bounded(text, u64::from(u32::MAX), "the largest attempt count")
        .map(|n| u32::try_from(n).expect("bounded"))
}

/// The close codes of `--reconnect-codes`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CloseCodes(Vec<u16>);

/// `none`, or comma-separated close codes a server may send in a close frame (RFC 6455
/// §7.4: 1000-1003, 1007-1014, 3000-4999; 1004-1006 and 1015 never appear on the wire).
fn parse_close_codes(text: &str) -> Result<CloseCodes, String> {
    if text.trim() == "none" {
        return Ok(CloseCodes(Vec::new()));
    }
    let mut codes = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let code = part.parse::<u16>().map_err(|_| {
            format!("{part:?} is not a close code (use codes like 1001,1012, or none)")
        })?;
        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
            return Err(format!(
                "{code} is not a close code a server sends (1000-1003, 1007-1014, 3000-4999)"
            ));
        }
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(CloseCodes(codes))
}

fn parse_data(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {text:?}"))?;
    if key.is_empty() {
        return Err(format!(
            "expected key=value, got {text:?} (the key is empty)"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A host pattern of `--allow-host`: an empty one could never match.
fn parse_host_pattern(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("a host pattern cannot be empty (use example.com or *.example.com)".into());
    }
    Ok(text.to_owned())
}

/// A whole number, 0 allowed (clap's own message for `-1` is "invalid digit found in
/// string").
fn parse_whole(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) => Ok(n),
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("must be at most {}", u64::MAX))
        }
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn parse_usize(text: &str) -> Result<usize, String> {
    parse_whole(text)
        .and_then(|n| usize::try_from(n).map_err(|_| format!("must be at most {}", usize::MAX)))
}

fn parse_u32(text: &str) -> Result<u32, String> {
    parse_whole(text)
        .and_then(|n| u32::try_from(n).map_err(|_| format!("must be at most {}", u32::MAX)))
}

/// A compression window of 2^BITS bytes, 8-15 (clap's own message for 300 was "300 is not
/// in 0..=255").
fn parse_window_bits(text: &str) -> Result<u8, String> {
    match parse_whole(text) {
        Ok(bits @ 8..=15) => Ok(bits as u8),
        Ok(bits) => Err(format!("{bits} is not a window size from 8 to 15")),
        Err(e) => Err(e),
    }
}

/// Prints a usage error on one line (clap's message up to its first blank line, joined)
/// and returns exit status 2.
fn usage_error(message: &str) -> ExitCode {
    let line = message
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let line = if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    };
    eprintln!("wxsocket: {line}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            return usage_error(&e.render().to_string());
        }
    };
    match cli.command {
        None => demo::run(&DemoArgs::default()),
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::Connect(args)) => match connect::Settings::from_args(&args) {
            Ok(settings) => connect::run(settings),
            Err(message) => usage_error(&message),
        },
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Replay(args)) => replay::run(&args.file),
        Some(Command::Bench(_)) => {
            eprintln!(
                "wxsocket: error: the benchmarks are not part of this command; from a checkout of wxsocket, run `cargo run --release -p wxsocket-bench -- [--quick] [--json FILE]`"
            );
            ExitCode::from(2)
        }
    }
}

/// A header name for `--record-redact`.
fn parse_header_name(text: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(text.as_bytes())
        .map(|n| n.as_str().to_owned())
        .map_err(|_| format!("'{text}' is not a header name"))
}

/// A sub-protocol name: an HTTP token (RFC 6455 §4.1).
fn parse_token(text: &str) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if text.is_empty() || !text.bytes().all(token) {
        return Err(format!(
            "{text:?} is not a sub-protocol name (an HTTP token)"
        ));
    }
    Ok(text.to_owned())
}

/// The TLS configuration of `serve --tls-cert`, its files read and checked before the
/// address is bound; the error is a usage error naming the option.
fn serve_tls(args: &ServeArgs) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    use std::sync::Arc;
    let Some(cert) = &args.tls_cert else {
        return Ok(None);
    };
    let files = identity::IdentityFiles {
        cert,
        key: args.tls_key.as_deref(),
        cert_option: "--tls-cert <PEM>",
        key_option: "--tls-key <PEM>",
    };
    let invalid = identity::invalid;
    let identity = files.read()?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("error: TLS: {e}"))?;
    let builder = match &args.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let shown = path.display().to_string();
            let roots = wxsocket_tokio::TlsRoots::only(Vec::new())
                .add_pem_file(path)
                .map_err(|e| invalid("--client-ca <PEM>", &e.path, &e.problem))?;
            let mut store = rustls::RootCertStore::empty();
            for cert in roots.custom {
                store.add(cert).map_err(|e| {
                    invalid(
                        "--client-ca <PEM>",
                        &shown,
                        &format!("rustls refused a certificate ({e})"),
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                provider,
            )
            .build()
            .map_err(|e| invalid("--client-ca <PEM>", &shown, &e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(identity.chain().to_vec(), identity.key().clone_key())
        .map_err(|e| files.refused(&e))?;
    Ok(Some(Arc::new(config)))
}

fn serve(args: &ServeArgs) -> ExitCode {
    let tls = match serve_tls(args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("wxsocket: {e}");
            return ExitCode::from(2);
        }
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let rt = match backend::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wxsocket: error: cannot start the tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match rt.block_on(tokio::net::TcpListener::bind(args.addr)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("wxsocket: error: --addr {}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    // The signal handlers are in place before the URL is printed: whoever reads the URL
    // may send SIGTERM at once.
    let signals = {
        let _entered = rt.enter();
        match signals::Signals::new() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("wxsocket: error: cannot watch for signals: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let out = std::sync::Arc::new(output::Out::new(args.json));
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("wxsocket: error: --addr {}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    if args.json {
        if let serde_json::Value::Object(object) = serde_json::json!({
            "event": "listening",
            "url": format!("{scheme}://{addr}/"),
            "broadcast": args.broadcast,
            "deflate": args.deflate,
            "protocols": args.protocols,
        }) {
            out.json(object);
        }
    } else {
        out.line(&format!(
            "wxsocket {} server listening on {scheme}://{addr}/ ({}{}{}; Ctrl-C stops)",
            if args.broadcast { "broadcast" } else { "echo" },
            if args.broadcast {
                "every message goes to every client"
            } else {
                "text and binary are echoed"
            },
            if args.deflate {
                "; permessage-deflate accepted"
            } else {
                ""
            },
            if args.client_ca.is_some() {
                "; client certificates required"
            } else {
                ""
            }
        ));
    }
    let options = server::Options {
        handshake_delay: std::time::Duration::ZERO,
        handshake_timeout: args.handshake_timeout.map(std::time::Duration::from_millis),
        deflate: args.deflate,
        log: Some(std::sync::Arc::clone(&out)),
        wire: None,
        tls,
    };
    let serving = server::Serving {
        broadcast: args.broadcast,
        protocols: args.protocols.clone(),
        json: args.json,
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (signal, open) = rt.block_on(async move {
        let mut signals = signals;
        let signal = tokio::spawn(async move {
            let name = signals.next().await;
            let _ = stop.send(true);
            name
        });
        let open = server::serve_until(listener, options, serving, shutdown).await;
        (signal.await.unwrap_or("a signal"), open)
    });
    if args.json {
        if let serde_json::Value::Object(object) =
            serde_json::json!({"event": "shutdown", "signal": signal, "connections": open})
        {
            out.json(object);
        }
    } else {
        let plural = if open == 1 { "" } else { "s" };
        out.stamped(&format!(
            "{signal}: stopped; {open} connection{plural} closed with 1001 {:?}",
            server::SHUTDOWN_REASON
        ));
    }
    ExitCode::SUCCESS
}
