//! `wxsocket connect URL [options]`: an interactive client driven by standard input.

use crate::backend::{Backend, Kind};
use crate::output::{Mode, Out, parse_hex, show_message};
use crate::{ConnectArgs, Policy};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, IsTerminal, Read};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxsocket_core::{
    Acknowledgement, CloseBeforeOpen, CloseError, ConfigError, ConnId, ConnectError,
    ConnectOptions, DeflateOptions, Event, Message, ReadyState, ReconnectPolicy, SendError,
    SessionConfig,
};
use wxsocket_tokio::{ClientIdentity, Config, ProxyEnv, Recording, StartError, TlsRoots};

/// The standard-input commands and the exit statuses, shown by `--help` (`/help` shows the
/// commands).
pub const STDIN_HELP: &str = "\
Standard input (text mode, the default), one command per line; a line ends at \\n, and a
\\r just before it (CRLF input) is dropped too:
  TEXT                     send TEXT as a text message (a line starting with / that is not
                           a command below is sent as it is; // sends a line starting with /)
  /binary HEX              send a binary message (hex digits, spaces allowed)
  /close [CODE [REASON]]   close (CODE 1000 or 3000-4999, default 1000); while connecting,
                           as --close-before-open says (abort, the default, fails the
                           lines queued before it: a script waits for the open, /sleep MS)
  /connect URL             connect again with the same options (replaces the current socket)
  /sleep MS                pause reading commands for MS milliseconds (events still print)
  /quit (or /exit)         close, and exit once the close event arrived and every socket
                           finished closing
  /help (or /?)            this list
With -b, standard input is sent as binary messages as it is read (no commands, no lines:
every byte as it is, \\r and \\n included).
End of input waits until every send completed and nothing arrived for --linger ms (at
most --linger-max ms from the first open after it or from the last send that completed,
whichever is later; a server that closes ends it at once, unless --reconnect retries:
then the wait starts again once the retry opens), then closes as /quit does.
A connection that ends without a /close (the server closed it, the dial failed, the
network broke, after --reconnect's retries) ends the command too, whatever standard input
still holds; after a /close the command waits for a /connect or the end of input.
SIGTERM, SIGINT (Ctrl-C) and SIGHUP (unless started with it ignored, as by nohup) close
as /quit does, waiting at most the close timeout and a second for the close (11 s by
default; a dial in progress is given up at once); a second one exits at once, with 128
and its number (a repeated SIGHUP is the same hang-up, not a second signal).

Exit status:
  0  the last connection closed cleanly (1000 or 1001 from either side, a close frame
     without a code (1005), or the code this client chose with /close) and every send
     completed
  1  the adapter could not start
  2  invalid options, or a proxy variable of the environment that is no usable proxy URL
  3  the connection could not be made (refused, DNS, TLS, handshake rejected or timed out)
  4  the connection ended abnormally (1006, a code the client failed it with, a keepalive
     death) or the server closed with another code
  5  it closed cleanly but some sends failed (including input that could not be sent:
     invalid UTF-8 or a line over --max-message-size)
  6  standard output or the --record transcript could not be written (a reader of
     standard output that went away, as `| head` does, is no failure: the connection is
     closed and the status is as above)
With --reconnect, the status describes the last connection.";

/// The `/help` text: the commands only.
fn commands_help() -> &'static str {
    STDIN_HELP
        .split("With -b,")
        .next()
        .unwrap_or(STDIN_HELP)
        .trim_end()
}

/// The largest binary message one read of standard input makes with `-b`.
const BINARY_CHUNK: usize = 64 << 10;
/// Most inputs taken at a time before the main loop looks at its deadlines and at
/// standard output again (see `Client::drain_ready`).
const DRAIN_BATCH: usize = 256;

/// How long the command takes what already came once a signal's quit deadline has passed
/// (see [`Client::last_look`]).
const LAST_LOOK: Duration = Duration::from_millis(100);

/// How long the signal thread lets the main thread end the command after a second signal
/// before it ends the process itself (the main thread stuck writing to a stderr nobody
/// reads, say).
const FORCED_GRACE: Duration = Duration::from_secs(1);

/// The end-of-input wait (`--linger`, `--linger-max`).
#[derive(Debug, Clone, Copy)]
struct Linger {
    /// Close once nothing arrived (and every send completed) for this long.
    quiet: Duration,
    /// Close after this long in any case.
    max: Duration,
}

/// Everything `connect` needs, checked before anything starts.
pub struct Settings {
    options: ConnectOptions,
    session: SessionConfig,
    tls: TlsRoots,
    client_identity: Option<ClientIdentity>,
    kind: Kind,
    quiet: bool,
    mode: Mode,
    binary: bool,
    linger: Option<Linger>,
    max_messages: Option<u64>,
    record: Option<Recording>,
}

impl Settings {
    /// Builds and checks the settings; the error is a one-line message naming the option.
    pub fn from_args(args: &ConnectArgs) -> Result<Settings, String> {
        let mut options = ConnectOptions::new(&args.url)
            .tcp_no_delay(args.nodelay)
            .per_message_deflate(args.deflate)
            .require_tls(args.require_tls);
        if let Some(deflate) = deflate_offer(args) {
            options = options.deflate(deflate);
        }
        for (name, value) in &args.headers {
            options = options.header(name, value);
        }
        for protocol in &args.protocols {
            options = options.protocol(protocol);
        }
        for (key, value) in &args.data {
            options = options.data(key, value);
        }
        for host in &args.allow_hosts {
            options = options.allow_host(host);
        }
        if let Some(ms) = args.timeout {
            options = options.timeout(Duration::from_millis(ms));
        }
        if let Some(url) = &args.proxy {
            options = options.proxy(url);
        }
        if args.no_proxy {
            options = options.no_proxy();
        }
        // Everything the core checks, checked now: a bad option is a usage error (exit 2),
        // not a failed call.
        let request = options.validate().map_err(|e| option_error(&e))?;
        // So is a proxy variable of the environment that this URL would go through and that
        // is no usable proxy URL (the client reads the environment as it starts, just after).
        ProxyEnv::from_process()
            .check(&request)
            .map_err(|e| option_error(&e))?;

        let policy = match args.close_before_open {
            Policy::Abort => CloseBeforeOpen::Abort,
            Policy::AfterOpen => CloseBeforeOpen::AfterOpen,
            Policy::Ignore => CloseBeforeOpen::Ignore,
        };
        // Replies that arrive after our close frame (the end of input closes) are printed.
        let mut session = SessionConfig::default()
            .close_before_open(policy)
            .receive_while_closing(true);
        if let Some(bytes) = args.max_message_size {
            // Room for one message of the largest size while connecting and in flight.
            let defaults = SessionConfig::default();
            session = session
                .max_message_size(bytes)
                .queue_bounds(
                    defaults.max_queued_messages,
                    defaults.max_queued_bytes.max(bytes),
                )
                .max_buffered_bytes(defaults.max_buffered_bytes.max(bytes));
        }
        if let Some(secs) = args.keepalive {
            let every = Duration::from_secs(secs);
            session = session.keepalive(every, every);
        }
        if let Some(policy) = reconnect_policy(args)? {
            session = session.reconnect(policy);
        }
        if let Some(ms) = args.close_timeout {
            session = session.close_timeout(Duration::from_millis(ms));
        }
        if args.ack || args.ack_timeout.is_some() {
            let mut ack = Acknowledgement::new();
            if let Some(ms) = args.ack_timeout {
                ack = ack.timeout(Duration::from_millis(ms));
            }
            session = session.acknowledge(ack);
        }
        session.validate().map_err(|e| config_error(&e))?;

        let mut tls = TlsRoots::default();
        if let Some(path) = &args.ca_file {
            let ca_file_error = |path: &str, problem: &str| {
                format!("error: invalid value for '--ca-file <PEM>': {path}: {problem}")
            };
            tls = tls
                .add_pem_file(path)
                .map_err(|e| ca_file_error(&e.path, &e.problem))?;
            // The adapters build the rustls configuration when they start; build it now
            // too, so a certificate rustls refuses is reported against the option.
            tls.client_config().map_err(|e| {
                ca_file_error(
                    &path.display().to_string(),
                    &format!("a certificate was rejected by rustls ({e})"),
                )
            })?;
        }
        let client_identity = client_identity(args, &tls)?;
        // A certificate given for a plain ws:// URL would never be presented: the command
        // would go on unauthenticated (and unencrypted) where mutual TLS was meant.
        if client_identity.is_some() && request.url.scheme() == "ws" {
            return Err(format!(
                "error: invalid value for '--client-cert <PEM>': {} is ws://, which has no \
                 TLS to present a client certificate in (use wss://)",
                request.url
            ));
        }
        let record = match &args.record {
            None => None,
            Some(path) => {
                let mut recording = Recording::to_file(path).map_err(|e| {
                    format!(
                        "error: invalid value for '--record <FILE>': {}: {e}",
                        path.display()
                    )
                })?;
                for name in &args.record_redact {
                    let name = http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|e| format!("error: invalid value for '--record-redact': {e}"))?;
                    recording = recording.redact(name);
                }
                for name in &args.record_redact_query {
                    recording = recording.redact_query(name);
                }
                Some(recording)
            }
        };
        Ok(Settings {
            record,
            options,
            session,
            tls,
            client_identity,
            kind: if args.blocking {
                Kind::Blocking
            } else {
                Kind::Tokio
            },
            quiet: args.quiet,
            mode: if args.json {
                Mode::Json
            } else if args.verbose {
                Mode::Timeline
            } else {
                Mode::Payloads {
                    raw: args.raw_output,
                    quiet: args.quiet,
                }
            },
            binary: args.binary,
            linger: (!args.no_linger).then(|| Linger {
                quiet: Duration::from_millis(args.linger.unwrap_or(200)),
                max: Duration::from_millis(args.linger_max.unwrap_or(2000)),
            }),
            max_messages: if args.one_message {
                Some(1)
            } else {
                args.max_messages
            },
        })
    }
}

/// The permessage-deflate offer the `--deflate*` options ask for (`None`: none of them).
fn deflate_offer(args: &ConnectArgs) -> Option<DeflateOptions> {
    let asked = args.deflate
        || args.deflate_server_no_context_takeover
        || args.deflate_client_no_context_takeover
        || args.deflate_server_window_bits.is_some()
        || args.deflate_client_window_bits.is_some()
        || args.deflate_threshold.is_some()
        || args.deflate_level.is_some();
    if !asked {
        return None;
    }
    let mut offer = DeflateOptions::default()
        .server_no_context_takeover(args.deflate_server_no_context_takeover)
        .client_no_context_takeover(args.deflate_client_no_context_takeover)
        .server_max_window_bits(args.deflate_server_window_bits);
    if let Some(bits) = args.deflate_client_window_bits {
        offer = offer.client_max_window_bits(bits);
    }
    if let Some(bytes) = args.deflate_threshold {
        offer = offer.threshold(bytes);
    }
    if let Some(level) = args.deflate_level {
        offer = offer.level(level);
    }
    Some(offer)
}

/// The reconnect policy the `--reconnect*` options ask for (`None`: none of them). Every
/// `--reconnect-*` option implies `--reconnect`, as the `--deflate-*` ones imply
/// `--deflate`.
fn reconnect_policy(args: &ConnectArgs) -> Result<Option<ReconnectPolicy>, String> {
    let asked = args.reconnect
        || args.reconnect_base.is_some()
        || args.reconnect_cap.is_some()
        || args.reconnect_max.is_some()
        || args.reconnect_min_uptime.is_some()
        || args.reconnect_no_carry
        || args.reconnect_on_4xx
        || args.reconnect_codes.is_some()
        || args.reconnect_seed.is_some();
    if !asked {
        return Ok(None);
    }
    let defaults = ReconnectPolicy::default();
    let base = args
        .reconnect_base
        .map_or(defaults.base, Duration::from_millis);
    // Without --reconnect-cap, a base above the default cap raises the cap to it (a
    // constant delay ceiling) rather than being refused.
    let cap = match args.reconnect_cap {
        Some(ms) => Duration::from_millis(ms),
        None => defaults.cap.max(base),
    };
    if cap < base {
        return Err(format!(
            "error: invalid value for '--reconnect-cap <MS>': {} is less than --reconnect-base ({})",
            cap.as_millis(),
            base.as_millis()
        ));
    }
    let mut policy = defaults
        .backoff(base, cap)
        .max_attempts(args.reconnect_max)
        .carry_queue(!args.reconnect_no_carry)
        .retry_http_4xx(args.reconnect_on_4xx);
    // Without one, the policy's own random seed.
    if let Some(seed) = args.reconnect_seed {
        policy = policy.seed(seed);
    }
    if let Some(ms) = args.reconnect_min_uptime {
        policy = policy.min_uptime(Duration::from_millis(ms));
    }
    if let Some(codes) = &args.reconnect_codes {
        policy = policy.retry_close_codes(codes.0.clone());
    }
    Ok(Some(policy))
}

/// The client certificate of `--client-cert` and `--client-key` (the key in the certificate
/// file when `--client-key` is not given), read and checked against `tls` now, so that an
/// unusable file or a key that is not the certificate's is reported against its option
/// before any connection.
fn client_identity(args: &ConnectArgs, tls: &TlsRoots) -> Result<Option<ClientIdentity>, String> {
    let Some(cert) = &args.client_cert else {
        return Ok(None);
    };
    let files = crate::identity::IdentityFiles {
        cert,
        key: args.client_key.as_deref(),
        cert_option: "--client-cert <PEM>",
        key_option: "--client-key <PEM>",
    };
    let identity = files.read()?;
    tls.client_config_with(Some(&identity))
        .map_err(|e| files.refused(&e))?;
    Ok(Some(identity))
}

/// The command-line option behind a session configuration field, if one is.
fn config_option(field: &str) -> Option<&'static str> {
    Some(match field {
        "tls" => "--ca-file <PEM>",
        "client_identity" => "--client-cert <PEM>",
        "handshake_timeout" => "--timeout <MS>",
        "close_timeout" => "--close-timeout <MS>",
        "acknowledge.timeout" => "--ack-timeout <MS>",
        "keepalive.interval" | "keepalive.timeout" => "--keepalive <SECS>",
        "reconnect.base" => "--reconnect-base <MS>",
        "reconnect.cap" => "--reconnect-cap <MS>",
        "reconnect.max_attempts" => "--reconnect-max <N>",
        "reconnect.min_uptime" => "--reconnect-min-uptime <MS>",
        "max_message_size" => "--max-message-size <BYTES>",
        _ => return None,
    })
}

/// A session configuration error (from `SessionConfig::validate` or an adapter's start)
/// as a usage line naming the command-line option where one caused it.
fn config_error(e: &ConfigError) -> String {
    match config_option(e.field) {
        Some(option) => format!("error: invalid value for '{option}': {}", e.problem),
        None => format!("error: invalid session settings: {e}"),
    }
}

/// Whether an adapter's start error was caused by a command-line option (a usage error,
/// exit 2) rather than by the machine (no poller, no thread: exit 1).
fn config_error_is_usage(e: &ConfigError) -> bool {
    config_option(e.field).is_some()
}

/// A connect-option error as a usage line naming the command-line option.
fn option_error(e: &ConnectError) -> String {
    let option = match e {
        ConnectError::InvalidDeflate {
            field: "server_max_window_bits",
            ..
        } => "--deflate-server-window-bits",
        ConnectError::InvalidDeflate { field: "level", .. } => "--deflate-level",
        ConnectError::InvalidDeflate { .. } => "--deflate-client-window-bits",
        ConnectError::TlsRequired { .. } => "URL (--require-tls)",
        ConnectError::HostNotAllowed { .. } => "URL (--allow-host)",
        ConnectError::InvalidAllowedHost { .. } => "--allow-host",
        ConnectError::InvalidHeaderName { .. }
        | ConnectError::InvalidHeaderValue { .. }
        | ConnectError::ForbiddenHeader { .. } => "--header",
        ConnectError::InvalidProtocol { .. } | ConnectError::DuplicateProtocol { .. } => {
            "--protocol"
        }
        ConnectError::InvalidTimeout => "--timeout",
        ConnectError::InvalidProxy { .. } => "--proxy",
        _ => {
            let text = e.to_string();
            return match text.split_once(": ") {
                Some(("url", rest)) => format!("error: invalid value for 'URL': {rest}"),
                _ => format!("error: {text}"),
            };
        }
    };
    let text = e.to_string();
    let detail = text
        .split_once(": ")
        .map_or(text.as_str(), |(_, rest)| rest);
    format!("error: invalid value for '{option}': {detail}")
}

enum Input {
    /// A line of standard input and its number (from 1).
    Line(u64, String),
    Chunk(Vec<u8>),
    /// A line of standard input that cannot be sent (its number, what is wrong); the
    /// input ends there.
    BadLine(u64, String),
    End,
    Event(Event),
    /// The adapter has finished: every transport is closed (after the session was let go).
    Finished,
    /// Standard input has something in its own channel (see [`read_stdin`]), or a signal
    /// came (see [`Client::caught`]).
    Wake,
}

/// Standard input read but not yet run.
enum Pending {
    Line(u64, String),
    Chunk(Vec<u8>),
    BadLine(u64, String),
    End,
}

enum Command {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<u16>, String),
    Connect(String),
    Sleep(Duration),
    Quit,
    Help,
}

fn parse_command(line: &str) -> Result<Command, String> {
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Command::Text(line.to_owned()));
    };
    if rest.starts_with('/') {
        return Ok(Command::Text(rest.to_owned()));
    }
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg.trim()),
        None => (rest, ""),
    };
    match name {
        "binary" => parse_hex(arg)
            .map(Command::Binary)
            .map_err(|e| format!("/binary: {e}")),
        "close" => {
            if arg.is_empty() {
                return Ok(Command::Close(None, String::new()));
            }
            let (code, reason) = match arg.split_once(char::is_whitespace) {
                Some((code, reason)) => (code, reason.trim()),
                None => (arg, ""),
            };
            let code = code
                .parse::<u16>()
                .map_err(|_| format!("/close: {code:?} is not a close code"))?;
            Ok(Command::Close(Some(code), reason.to_owned()))
        }
        "connect" if !arg.is_empty() => Ok(Command::Connect(arg.to_owned())),
        "connect" => Err("/connect: a URL is needed".into()),
        "sleep" => arg
            .parse::<u64>()
            .map(|ms| Command::Sleep(Duration::from_millis(ms)))
            .map_err(|_| format!("/sleep: {arg:?} is not a number of milliseconds")),
        "quit" | "exit" => Ok(Command::Quit),
        "help" | "?" => Ok(Command::Help),
        // Not a command (`/etc/passwd`, a URL path, …): the line is text.
        _ => Ok(Command::Text(line.to_owned())),
    }
}

/// The exit statuses of `connect` (see [`STDIN_HELP`]).
mod status {
    pub const CLEAN: u8 = 0;
    pub const NOT_MADE: u8 = 3;
    pub const ABNORMAL: u8 = 4;
    pub const SENDS_FAILED: u8 = 5;
    pub const OUTPUT_FAILED: u8 = 6;
}

/// The end-of-input wait in progress.
#[derive(Debug, Clone, Copy)]
struct Lingering {
    /// The last message received or send completed (or when the wait began).
    last: Instant,
}

struct Client {
    backend: Backend,
    out: Arc<Out>,
    options: ConnectOptions,
    session: SessionConfig,
    quiet: bool,
    /// Connections that were started and whose close event has not been printed yet.
    live: BTreeSet<ConnId>,
    /// Quitting: waiting for the open (to close then) or for the close event, until then.
    quit_deadline: Option<Instant>,
    /// Close as soon as the current connection opens (a /quit while connecting).
    close_on_open: bool,
    /// The connection a reconnect backoff is waiting to dial, if one is.
    backoff: Option<ConnId>,
    /// Standard input lines and events, in arrival order.
    rx: Receiver<Input>,
    /// Standard input's own channel (bounded by its credits): a flood of events, which
    /// fills `rx`, cannot hold a line back.
    stdin: Receiver<Input>,
    /// Standard input read but not yet run.
    pending: VecDeque<Pending>,
    /// One credit per item of standard input the reader may read ahead.
    credits: SyncSender<()>,
    /// The last connection whose `connecting` event was printed.
    last_connecting: Option<ConnId>,
    /// The end-of-input wait (`None`: `--no-linger`).
    linger: Option<Linger>,
    /// The input ended while connecting: linger once open.
    linger_on_open: bool,
    lingering: Option<Lingering>,
    /// When the end-of-input wait ends in any case (`--linger-max` after it first began, or
    /// after the last send completed since): kept across reconnections, so a server that
    /// closes every connection right after it opens cannot keep the command waiting for
    /// ever, and one that reads nothing cannot either.
    linger_cap: Option<Instant>,
    /// Sends accepted and not yet completed or failed.
    in_flight: usize,
    /// A message the session had no room for yet (sent again on the next event).
    blocked: Option<Message>,
    /// Connections that opened and have not closed.
    opened: BTreeSet<ConnId>,
    /// Connections this client closed (by /close, /quit or the end of input), with the code
    /// it closed them with: a clean close with that code is a clean end.
    closed_by_us: BTreeMap<ConnId, u16>,
    /// Standard input ended early (a line that cannot be sent): the rest is dropped.
    input_stopped: bool,
    /// Sends that failed, and input that could not be sent.
    send_failures: u64,
    received: u64,
    max_messages: Option<u64>,
    /// The exit status the last connection to end asks for.
    status: u8,
    /// A `/close` (or the end of input) asked the current connection to close: its end
    /// leaves the command waiting for a `/connect`. Any other end ends the command.
    close_asked: bool,
    /// The last connection ended without this client asking (the server closed it, the
    /// dial failed, the network broke), with no retry to come.
    ended_unasked: bool,
    /// A signal asked the command to end (it closes as `/quit` does).
    signalled: bool,
    /// A second signal came (its name): the command exits at once.
    forced: Option<&'static str>,
    /// The signals that came and are not yet acted on, in order: the signal thread puts them
    /// here (and wakes the loop), so that it never waits for this thread (see `run`).
    caught: Arc<Mutex<Caught>>,
}

/// The signals that came (see `run`): those not yet acted on, the last, how many in all.
#[derive(Default)]
struct Caught {
    pending: Vec<&'static str>,
    last: Option<&'static str>,
    count: usize,
    /// A SIGHUP came: the terminal went away. A hang-up often comes twice (the shell
    /// passes it on to its jobs, the kernel to the terminal's foreground group): only the
    /// first counts. Standard output failing after it is the terminal gone, no failure.
    hung_up: bool,
}

impl Client {
    fn connect(&mut self, url: Option<&str>) {
        let mut options = self.options.clone();
        if let Some(url) = url {
            options.url = url.to_owned();
        }
        match self.backend.connect(&options) {
            Ok(conn) => {
                // A new connection: its end is what counts now (a `/connect` refused at
                // once leaves a `/close` before it standing).
                self.close_asked = false;
                self.live.insert(conn);
                self.wait_connecting(conn);
            }
            Err(e) => self
                .out
                .call_failed("connectSocket", &format!("connectSocket:fail {e}")),
        }
    }

    fn send(&mut self, message: Message) {
        let shown = match self.blocked {
            None if self.out_is_timeline() => Some(show_message(&message)),
            _ => None,
        };
        match self.backend.send(message) {
            Ok(id) => {
                self.in_flight += 1;
                if let Some(shown) = shown {
                    let conn = self.backend.current().map_or(0, |c| c.get());
                    let queued = if self.backend.state() == ReadyState::Connecting {
                        " queued until open"
                    } else {
                        ""
                    };
                    self.out
                        .note(&format!("#{conn} > {shown} (send {id}{queued})"));
                }
            }
            // No room yet: standard input waits until the session has some (an open, a
            // completed send, completions taken), so piped input is never refused for going
            // fast.
            Err(
                SendError::QueueFull(message)
                | SendError::BufferFull(message)
                | SendError::CompletionsFull(message),
            ) => {
                self.blocked = Some(message);
            }
            Err(e) => {
                self.send_failures += 1;
                self.out
                    .call_failed("sendSocketMessage", &format!("sendSocketMessage:fail {e}"));
            }
        }
    }

    fn out_is_timeline(&self) -> bool {
        self.out.mode() == Mode::Timeline
    }

    /// Sends the message that had no room, if any; false if it still has none.
    fn retry_blocked(&mut self) -> bool {
        match self.blocked.take() {
            None => true,
            Some(message) => {
                self.send(message);
                self.blocked.is_none()
            }
        }
    }

    fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        let was = self.backend.state();
        let conn = self.backend.current();
        let result = self.backend.close(code, reason);
        self.close_asked |= result.is_ok();
        match &result {
            Ok(()) if was == ReadyState::Connecting => {
                if self.session.close_before_open == CloseBeforeOpen::AfterOpen {
                    self.closed_by_us
                        .extend(conn.map(|c| (c, code.unwrap_or(wxsocket_core::close::NORMAL))));
                    self.out
                        .note("close before open: remembered, it is sent right after open");
                }
            }
            Ok(()) => {
                if was == ReadyState::Open {
                    self.closed_by_us
                        .extend(conn.map(|c| (c, code.unwrap_or(wxsocket_core::close::NORMAL))));
                }
            }
            Err(e) => self
                .out
                .call_failed("closeSocket", &format!("closeSocket:fail {e}")),
        }
        result
    }

    /// Starts quitting: close now if open, after the open if connecting.
    fn quit(&mut self) {
        self.lingering = None;
        self.linger_on_open = false;
        let timeouts = self.session.close_timeout + Duration::from_secs(1);
        let deadline = match self.backend.state() {
            ReadyState::Connecting if self.backoff.is_some() => {
                // Waiting to reconnect: closing cancels the backoff.
                let _ = self.close(None, "");
                Instant::now() + timeouts
            }
            ReadyState::Connecting => {
                // Let the queued messages go out: close right after the open.
                self.close_on_open = true;
                let handshake = self
                    .options
                    .timeout
                    .unwrap_or(self.session.handshake_timeout);
                Instant::now() + handshake + timeouts
            }
            ReadyState::Open => {
                let _ = self.close(None, "");
                Instant::now() + timeouts
            }
            _ => Instant::now() + timeouts,
        };
        self.quit_deadline = Some(deadline);
    }

    /// The end of standard input: linger (once open), then quit.
    fn end_of_input(&mut self) {
        if self.linger.is_none() {
            return self.quit();
        }
        match self.backend.state() {
            ReadyState::Open => self.begin_lingering(),
            // Dialling, or waiting to retry (`--reconnect`): the wait starts when it opens
            // (`--reconnect-max` bounds the retries). The server closing: a retry may
            // follow, so its end is awaited the same way.
            ReadyState::Connecting | ReadyState::Closing => self.linger_on_open = true,
            _ => self.quit(),
        }
    }

    /// The end-of-input wait begins (the connection is open): the quiet time from now, the
    /// longest wait from the first time it began.
    fn begin_lingering(&mut self) {
        let now = Instant::now();
        self.lingering = Some(Lingering { last: now });
        if let Some(linger) = self.linger {
            self.linger_cap.get_or_insert(now + linger.max);
        }
    }

    /// Ends the end-of-input wait when it is due: every send completed and nothing arrived
    /// for the quiet time, or the longest wait passed (counted from when it first began,
    /// across reconnections), or the connection is no longer open (the server closed: at
    /// once). Returns when to look again.
    fn check_linger(&mut self) -> Option<Instant> {
        if self.quit_deadline.is_some() {
            return None;
        }
        let now = Instant::now();
        if self.linger_cap.is_some_and(|cap| now >= cap) {
            self.quit();
            return None;
        }
        let state = self.backend.state();
        if self.linger_on_open {
            // The open event starts the wait; a connection that ended with no retry to
            // come ends it.
            if matches!(state, ReadyState::Closed | ReadyState::Idle) {
                self.quit();
            }
            return self.linger_cap;
        }
        let (lingering, linger, max_at) = (self.lingering?, self.linger?, self.linger_cap?);
        match state {
            ReadyState::Open => {}
            // The server is closing: its close event comes next, and with it a retry
            // (`--reconnect`) or the end.
            ReadyState::Closing => return Some(max_at),
            // The connection ended and a retry follows: wait for it to open, then for the
            // conversation again (messages queued or not acknowledged go out on it).
            ReadyState::Connecting => {
                self.lingering = None;
                self.linger_on_open = true;
                return Some(max_at);
            }
            // Closed, or a state a newer core adds.
            _ => {
                self.quit();
                return None;
            }
        }
        let quiet_at = lingering.last + linger.quiet;
        let settled = self.in_flight == 0 && self.blocked.is_none();
        if (settled && now >= quiet_at) || now >= max_at {
            self.quit();
            return None;
        }
        Some(if settled {
            quiet_at.min(max_at)
        } else {
            max_at
        })
    }

    fn event(&mut self, event: Event) {
        let over_limit = matches!(event, Event::Message { .. })
            && self.max_messages.is_some_and(|max| self.received >= max);
        if !over_limit {
            self.out.event(&event);
        }
        match &event {
            Event::Connecting { conn, .. } => {
                self.live.insert(*conn);
                self.backoff = None;
                self.last_connecting = Some(*conn);
            }
            Event::Reconnecting { conn, .. } => {
                self.live.insert(*conn);
                self.backoff = Some(*conn);
                if self.quit_deadline.is_some() {
                    // Quitting: no retry (closing cancels the backoff), rather than redial
                    // until the quit's deadline.
                    let _ = self.close(None, "");
                }
            }
            Event::Open {
                conn, handshake, ..
            } => {
                self.opened.insert(*conn);
                self.out
                    .note(&crate::output::profile_human(*conn, &handshake.profile));
                if self.options.per_message_deflate && handshake.deflate.is_none() {
                    self.out.note(
                        "the server did not accept permessage-deflate: messages go uncompressed",
                    );
                }
                // What the socket itself reports (read back with getsockopt), so that
                // `--nodelay` can be seen to take effect.
                if let Some(info) = self
                    .backend
                    .socket_info()
                    .filter(|_| self.backend.current() == Some(*conn))
                {
                    let on = if info.nodelay { "on" } else { "off" };
                    // Through a proxy, the socket's other end is the proxy's.
                    let via = if info.proxied { " (the proxy)" } else { "" };
                    self.out.note(&format!(
                        "#{conn} socket {} -> {}{via}, TCP_NODELAY {on}",
                        info.local_addr, info.peer_addr
                    ));
                }
                if self.backend.current() == Some(*conn) {
                    if self.close_on_open {
                        self.close_on_open = false;
                        let _ = self.close(None, "");
                    } else if self.linger_on_open {
                        self.linger_on_open = false;
                        self.begin_lingering();
                    }
                } else if self.linger_on_open
                    && let Some(linger) = self.linger
                {
                    // A connection already ended when its open is read (the server closed
                    // it at once, a retry is under way): the longest wait counts from it
                    // all the same. It used to start only at an open of the current
                    // connection, and against a server that closes each one at once the
                    // command could read every open too late and never end.
                    self.linger_cap.get_or_insert(Instant::now() + linger.max);
                }
            }
            Event::Message { .. } => {
                if !over_limit {
                    self.received += 1;
                    if self.max_messages == Some(self.received) && self.quit_deadline.is_none() {
                        self.quit();
                    }
                }
                self.touch();
            }
            Event::SendCompleted { .. } | Event::SendDelivered { .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.touch();
                // Our input still going out (a slow uplink) is no reason to give up: the
                // longest wait counts from the last send that completed.
                if let (Some(cap), Some(linger)) = (&mut self.linger_cap, self.linger) {
                    *cap = (*cap).max(Instant::now() + linger.max);
                }
            }
            Event::SendFailed { .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.send_failures += 1;
            }
            Event::Close {
                conn, code, clean, ..
            } => {
                self.live.remove(conn);
                if self.backoff == Some(*conn) {
                    self.backoff = None;
                }
                let opened = self.opened.remove(conn);
                // The server may answer our close with a code of its own: one other than
                // ours (and than 1000, 1001, 1005) says something went wrong (a 1011 in
                // answer to the end of input).
                let ours = self.closed_by_us.remove(conn) == Some(*code);
                // The end of the last connection, for good (no retry: the session is
                // closed), that nobody here asked for ends the command, as the end of
                // input would; one after a `/close` waits for a `/connect`.
                self.ended_unasked = !self.close_asked
                    && self.live.is_empty()
                    && matches!(self.backend.state(), ReadyState::Closed | ReadyState::Idle);
                self.status = if !opened {
                    status::NOT_MADE
                } else if *clean && (matches!(code, 1000 | 1001 | 1005) || ours) {
                    status::CLEAN
                } else {
                    status::ABNORMAL
                };
            }
            _ => {}
        }
    }

    /// Something arrived or completed: the end-of-input wait starts its quiet time again.
    fn touch(&mut self) {
        if let Some(lingering) = &mut self.lingering {
            lingering.last = Instant::now();
        }
    }

    /// Handles one input: standard input is kept for later, an event is printed.
    fn take(&mut self, input: Input) {
        self.take_signals();
        match input {
            Input::Line(..) | Input::Chunk(_) | Input::BadLine(..) | Input::End
                if self.input_stopped => {}
            Input::Line(n, line) => self.pending.push_back(Pending::Line(n, line)),
            Input::Chunk(bytes) => self.pending.push_back(Pending::Chunk(bytes)),
            Input::BadLine(n, problem) => self.pending.push_back(Pending::BadLine(n, problem)),
            Input::End => self.pending.push_back(Pending::End),
            Input::Event(event) => self.event(event),
            // Sent only after the session is let go (`shut_down`).
            Input::Finished => {}
            // The standard input it announces is taken in `drain_ready`.
            Input::Wake => {}
        }
    }

    /// Acts on the signals that came since the last look, in order.
    fn take_signals(&mut self) {
        let caught = std::mem::take(
            &mut self
                .caught
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending,
        );
        for name in caught {
            self.signalled(name);
        }
    }

    /// The quit deadline of a signal passed: what already came is taken (printed if
    /// stdout has room; its wait was given up at the deadline), for at most [`LAST_LOOK`],
    /// in case the close event is among it.
    fn last_look(&mut self) {
        let until = Instant::now() + LAST_LOOK;
        while !self.done_quitting() && self.forced.is_none() && Instant::now() < until {
            match self.rx.try_recv() {
                Ok(input) => self.take(input),
                Err(_) => break,
            }
        }
    }

    /// Takes the events already waiting (so they are printed before the next command runs),
    /// then the next line (or chunk, or end) of standard input when none is pending; false
    /// if the event channel is gone. At most [`DRAIN_BATCH`] events at a time: a server that
    /// never stops sending keeps the channel from ever being empty, and standard input,
    /// `/quit`, the linger and a closed standard output must still be looked at.
    fn drain_ready(&mut self) -> bool {
        for _ in 0..DRAIN_BATCH {
            match self.rx.try_recv() {
                Ok(input) => self.take(input),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        if self.pending.is_empty()
            && let Ok(input) = self.stdin.try_recv()
        {
            self.take(input);
        }
        true
    }

    /// A problem with standard input or a command, on stderr (unless `-q`).
    fn complain(&self, text: &str) {
        if !self.quiet {
            self.out.say(&format!("wxsocket: {text}"));
        }
    }

    /// The session emits `connecting` inside the connect call; print it (and whatever
    /// came before it, such as the replaced socket's close) before the next command, so
    /// the output is in the order things happened. Bounded by a second.
    fn wait_connecting(&mut self, conn: ConnId) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.last_connecting.is_none_or(|c| c < conn) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(input) => self.take(input),
                Err(_) => return,
            }
        }
    }

    /// Before the process exits: lets the adapter finish every transport (a socket that
    /// `/connect` replaced may still be sending its close frame), then prints the events
    /// that came meanwhile. Returns the exit status.
    fn shut_down(self) -> u8 {
        let hung_up = self
            .caught
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hung_up;
        let Client {
            backend,
            out,
            session,
            rx,
            status,
            send_failures,
            signalled,
            quit_deadline,
            ..
        } = self;
        // Let the adapter close what is still open (a socket that `/connect` replaced may
        // still be sending its close frame), printing its last events until it has finished;
        // after a signal, no later than the signal's deadline.
        drop(backend);
        let mut deadline = Instant::now() + session.close_timeout + Duration::from_secs(1);
        if signalled && let Some(t) = quit_deadline {
            deadline = deadline.min(t.max(Instant::now()) + LAST_LOOK);
        }
        loop {
            if Instant::now() >= deadline {
                out.note("the sockets did not finish closing in time; exiting");
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Input::Event(event)) => out.event(&event),
                Ok(Input::Finished) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    out.note("the sockets did not finish closing in time; exiting");
                    break;
                }
            }
        }
        // Everything printed is written (after a signal, until its deadline).
        out.finish();
        match out.failure() {
            // After a hang-up, the terminal is gone: no failure, as a reader that went away.
            Some(kind) if kind != std::io::ErrorKind::BrokenPipe && !hung_up => {
                status::OUTPUT_FAILED
            }
            _ if status == status::CLEAN && send_failures > 0 => status::SENDS_FAILED,
            _ => status,
        }
    }

    /// SIGTERM, SIGINT or SIGHUP: the first closes as `/quit` does, but gives up a dial in
    /// progress at once and waits no longer than the close timeout; the second ends the
    /// command (a repeated SIGHUP never comes here: see `Caught::hung_up`).
    fn signalled(&mut self, name: &'static str) {
        if self.signalled {
            self.complain(&format!(
                "{name} again: exiting without waiting for the close"
            ));
            self.forced = Some(name);
            self.out.give_up_at(Instant::now());
            return;
        }
        self.signalled = true;
        self.out.note(&format!(
            "{name}: closing as /quit does ({name} again exits at once)"
        ));
        self.drop_input();
        if self.backend.state() == ReadyState::Connecting && self.backoff.is_none() {
            // Waiting for the open (up to the handshake timeout) is not what a signal asks.
            self.close_on_open = false;
            let _ = self.close(None, "");
        } else if self.quit_deadline.is_none() {
            self.quit();
        }
        let cap = Instant::now() + self.session.close_timeout + Duration::from_secs(1);
        let deadline = self.quit_deadline.map_or(cap, |t| t.min(cap));
        self.quit_deadline = Some(deadline);
        // A stdout nobody reads holds neither the close (what comes while it is full is not
        // printed, so the events behind it, the close's among them, are still taken) nor
        // the command: what was printed is written until the deadline.
        self.out.wait_no_more();
        self.out.give_up_at(deadline);
    }

    fn done_quitting(&self) -> bool {
        self.quit_deadline.is_some()
            && self.live.is_empty()
            && !matches!(
                self.backend.state(),
                ReadyState::Connecting | ReadyState::Open | ReadyState::Closing
            )
    }

    /// Whether standard input is on hold: paused, quitting, waiting at its end, or the
    /// connection ended without a `/close` (nothing more is run: the command ends).
    fn input_on_hold(&self) -> bool {
        self.quit_deadline.is_some()
            || self.lingering.is_some()
            || self.linger_on_open
            || self.ended_unasked
    }

    /// Stdout can no longer be written: nothing more is read from standard input or printed,
    /// and the connection is closed as `/quit` does (a reader that went away, as `| head`
    /// does, is said nothing of).
    fn output_gone(&mut self, kind: std::io::ErrorKind) {
        if kind != std::io::ErrorKind::BrokenPipe {
            self.complain(&format!("error: standard output: {kind}"));
        }
        self.drop_input();
        self.quit();
    }

    /// Nothing more of standard input is run: what was read is dropped, and what comes is
    /// ignored.
    fn drop_input(&mut self) {
        self.input_stopped = true;
        self.pending.clear();
    }

    /// Standard input line `number` cannot be sent: says so, counts it as a failed send,
    /// and ends the input there (what follows is not sent).
    fn stop_input(&mut self, number: u64, problem: &str) {
        self.send_failures += 1;
        self.complain(&format!("error: standard input line {number} {problem}"));
        self.drop_input();
        self.end_of_input();
    }

    /// Why a line over the largest message is not sent.
    fn too_long(&self) -> String {
        format!(
            "is longer than the largest message (--max-message-size {})",
            self.session.max_message_size
        )
    }

    /// Runs one item of standard input.
    fn run_input(&mut self, item: Pending, paused_until: &mut Option<Instant>) {
        // The reader may read one more item ahead (the channel has room for every credit).
        let _ = self.credits.try_send(());
        let (number, line) = match item {
            Pending::End => return self.end_of_input(),
            Pending::BadLine(n, problem) => return self.stop_input(n, &problem),
            Pending::Chunk(bytes) => return self.send(Message::binary(bytes)),
            Pending::Line(number, line) => (number, line),
        };
        let line = line.strip_suffix('\r').unwrap_or(&line);
        match parse_command(line) {
            // A message over the largest one ends the input, text or `/binary` alike.
            Ok(Command::Text(text)) if text.len() > self.session.max_message_size => {
                self.stop_input(number, &self.too_long());
            }
            Ok(Command::Binary(bytes)) if bytes.len() > self.session.max_message_size => {
                self.stop_input(number, &self.too_long());
            }
            Ok(Command::Text(text)) => self.send(Message::text(text)),
            Ok(Command::Binary(bytes)) => self.send(Message::binary(bytes)),
            Ok(Command::Close(code, reason)) => {
                let _ = self.close(code, &reason);
            }
            Ok(Command::Connect(url)) => self.connect(Some(&url)),
            Ok(Command::Sleep(d)) => *paused_until = Some(Instant::now() + d),
            Ok(Command::Quit) => self.quit(),
            Ok(Command::Help) => {
                self.out.say(commands_help());
            }
            Err(message) => {
                if message.starts_with("/binary") {
                    self.send_failures += 1;
                }
                self.complain(&message);
            }
        }
    }
}

/// How `read_line` ended.
enum LineRead {
    Line,
    TooLong,
    End,
}

/// The longest line of standard input, `/binary` aside (see [`read_line`]), when the
/// largest message is shorter: room for a command (`/connect` and its URL).
const COMMAND_LINE: usize = 64 << 10;

/// Reads one line (without its `\n`) into `line`, refusing more than its limit (a `\r`
/// before the `\n` not counted) without holding much more than that in memory: `binary`
/// for a line starting with `/binary` (its hex is three bytes a byte), `text` for any other
/// (known from its first seven bytes; until then it may be either).
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    (text, binary): (usize, usize),
) -> std::io::Result<LineRead> {
    let limit_of = |line: &[u8]| {
        if line.len() >= 7 && !line.starts_with(b"/binary") {
            text
        } else {
            binary.max(text)
        }
    };
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::End
            } else {
                LineRead::Line
            });
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        // Until its first seven bytes say which limit holds, no more than those are taken.
        let deciding = line.len() < 7;
        let room = if deciding {
            7 - line.len()
        } else {
            (limit_of(line) + 1).saturating_sub(line.len())
        };
        let take = used.min(room);
        line.extend_from_slice(&available[..take]);
        let whole = done && take == used;
        input.consume(if whole { used + 1 } else { take });
        let length = line.len() - usize::from(line.last() == Some(&b'\r'));
        if (!deciding && used > take) || length > limit_of(line) {
            return Ok(LineRead::TooLong);
        }
        if whole {
            return Ok(LineRead::Line);
        }
    }
}

/// Whether a read or write on a terminal failed because the terminal went away: after a
/// hang-up, Linux answers every call on it with EIO.
fn hung_up(e: &std::io::Error) -> bool {
    cfg!(unix) && e.raw_os_error() == Some(5)
}

/// The standard input reader: lines (text mode) or chunks (`-b`), each after taking a
/// credit, so it reads at most as far ahead as the credits allow.
///
/// Each item goes to its own channel, `tx`, and a [`Input::Wake`] to the event channel,
/// `wake`, so a loop waiting for events looks at standard input; when that channel is full
/// the loop is busy and looks anyway.
fn read_stdin(
    tx: mpsc::Sender<Input>,
    wake: SyncSender<Input>,
    credits: Receiver<()>,
    binary: bool,
    limit: usize,
) {
    let send = |item: Input| {
        let sent = tx.send(item).is_ok();
        let _ = wake.try_send(Input::Wake);
        sent
    };
    // Asked now: a terminal that hung up no longer answers as one.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let terminal_gone = |e: &std::io::Error| terminal && hung_up(e);
    // Room for `/binary` with the largest message in hex, spaces between the bytes; any
    // other line over the largest message (and a `//` escape) is refused as it is read.
    let binary_limit = limit.saturating_mul(3).saturating_add(64);
    let text_limit = limit.saturating_add(2).max(COMMAND_LINE);
    let mut input = std::io::stdin().lock();
    let mut number = 0u64;
    while credits.recv().is_ok() {
        number += 1;
        let item = if binary {
            let mut chunk = vec![0; BINARY_CHUNK.min(limit)];
            let n = loop {
                match input.read(&mut chunk) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            match n {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    Input::Chunk(chunk)
                }
                Err(e) if terminal_gone(&e) => break,
                Err(e) => Input::BadLine(number, format!("cannot be read: {e}")),
            }
        } else {
            let mut line = Vec::new();
            match read_line(&mut input, &mut line, (text_limit, binary_limit)) {
                Ok(LineRead::End) => break,
                Ok(LineRead::Line) => match String::from_utf8(line) {
                    Ok(text) => Input::Line(number, text),
                    Err(_) => Input::BadLine(
                        number,
                        "is not valid UTF-8 (-b sends standard input as binary messages)".into(),
                    ),
                },
                Ok(LineRead::TooLong) if line.starts_with(b"/binary") => Input::BadLine(
                    number,
                    format!(
                        "is longer than the largest command line ({binary_limit} bytes: three times --max-message-size {limit} and 64, for /binary's spaced hex)"
                    ),
                ),
                Ok(LineRead::TooLong) => Input::BadLine(
                    number,
                    format!("is longer than the largest message (--max-message-size {limit})"),
                ),
                Err(e) if terminal_gone(&e) => break,
                Err(e) => Input::BadLine(number, format!("cannot be read: {e}")),
            }
        };
        let last = matches!(item, Input::BadLine(..));
        if !send(item) {
            return;
        }
        if last {
            break;
        }
    }
    send(Input::End);
}

/// Runs the client until `/quit` or the end of input, then until the close event.
pub fn run(settings: Settings) -> ExitCode {
    let out = match Out::with_writer(settings.mode) {
        Ok(out) => Arc::new(out),
        Err(e) => {
            eprintln!("wxsocket: error: cannot start the standard output thread: {e}");
            return ExitCode::from(1);
        }
    };
    // Kept to tell at the end whether the transcript was written whole.
    let record = settings.record.clone();
    // Bounded: while stdout is slow this loop takes no events, and the adapter stops
    // reading from the server (flow control). Standard input has its own credits.
    let (tx, rx) = mpsc::sync_channel::<Input>(crate::backend::EVENT_CHANNEL);
    let mut config = Config::new()
        .session(settings.session.clone())
        .tls(settings.tls);
    config.client_identity = settings.client_identity;
    config.record = settings.record;
    let backend = match Backend::start(
        settings.kind,
        config,
        tx.clone(),
        Input::Event,
        Some(Input::Finished),
    ) {
        Ok(backend) => backend,
        Err(StartError::Config(e)) if config_error_is_usage(&e) => {
            eprintln!("wxsocket: {}", config_error(&e));
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!(
                "wxsocket: error: cannot start {}: {e}",
                settings.kind.crate_name()
            );
            return ExitCode::from(1);
        }
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive && settings.mode != Mode::Json && !settings.quiet {
        eprintln!(
            "wxsocket connect via {}: type a line to send it, /help for commands, Ctrl-D to quit",
            settings.kind.crate_name()
        );
    }
    // Read-ahead: a few items of the largest size, up to 256 small ones.
    let limit = settings.session.max_message_size;
    let item = if settings.binary {
        BINARY_CHUNK.min(limit)
    } else {
        limit.saturating_mul(3)
    };
    let read_ahead = ((32usize << 20) / item).clamp(2, 256);
    let (credits, credit) = mpsc::sync_channel::<()>(read_ahead);
    for _ in 0..read_ahead {
        let _ = credits.try_send(());
    }
    // SIGTERM, SIGINT and SIGHUP close the connection first (`signalled`). The signal
    // thread never waits for the main thread, which may be waiting for stdout: it lets a
    // line waiting for stdout go, and wakes the loop if the loop waits for input (a full
    // channel: the loop is busy and looks at the signals before its next input). After a
    // second signal it ends the process itself if the main thread has not within
    // `FORCED_GRACE`.
    let caught = Arc::new(Mutex::new(Caught::default()));
    let (signal_tx, signal_out, signal_caught) =
        (tx.clone(), Arc::clone(&out), Arc::clone(&caught));
    let cap = settings.session.close_timeout + Duration::from_secs(1);
    if let Err(e) = crate::signals::watch(move |name| {
        let count = {
            let mut caught = signal_caught.lock().unwrap_or_else(|e| e.into_inner());
            if name == "SIGHUP" && caught.hung_up {
                // The same hang-up again (see `Caught::hung_up`), not a second signal.
                return true;
            }
            caught.hung_up |= name == "SIGHUP";
            caught.pending.push(name);
            caught.last = Some(name);
            caught.count += 1;
            caught.count
        };
        // What stdout holds or cannot take holds the command no longer than the quit does
        // (the main thread says the same when it acts on the signal; it may be past its
        // loop, waiting for the last output to be written).
        signal_out.wait_no_more();
        signal_out.give_up_at(if count > 1 {
            Instant::now()
        } else {
            Instant::now() + cap
        });
        signal_out.interrupt();
        let _ = signal_tx.try_send(Input::Wake);
        if count > 1 {
            std::thread::sleep(FORCED_GRACE);
            std::process::exit(i32::from(crate::signals::exit_status(name)));
        }
        true
    }) && !settings.quiet
    {
        eprintln!(
            "wxsocket: warning: cannot watch for signals ({e}): they end the command without a close"
        );
    }
    let binary = settings.binary;
    let (stdin_tx, stdin) = mpsc::channel();
    let reading = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_stdin(stdin_tx, tx, credit, binary, limit));
    if let Err(e) = reading {
        // Nothing was sent yet; dropping the backend ends a dial in progress.
        eprintln!("wxsocket: error: cannot start the standard input thread: {e}");
        return ExitCode::from(1);
    }

    let mut client = Client {
        backend,
        out,
        options: settings.options,
        session: settings.session,
        quiet: settings.quiet,
        live: BTreeSet::new(),
        quit_deadline: None,
        close_on_open: false,
        backoff: None,
        rx,
        stdin,
        pending: VecDeque::new(),
        credits,
        last_connecting: None,
        linger: settings.linger,
        linger_on_open: false,
        lingering: None,
        linger_cap: None,
        in_flight: 0,
        blocked: None,
        opened: BTreeSet::new(),
        closed_by_us: BTreeMap::new(),
        input_stopped: false,
        send_failures: 0,
        received: 0,
        max_messages: settings.max_messages,
        status: status::NOT_MADE,
        close_asked: false,
        ended_unasked: false,
        signalled: false,
        forced: None,
        caught,
    };
    client.connect(None);

    let mut paused_until: Option<Instant> = None;
    loop {
        client.take_signals();
        if paused_until.is_some_and(|t| Instant::now() >= t) {
            paused_until = None;
        }
        while paused_until.is_none() && !client.input_on_hold() {
            // Events that already happened are printed before the next command runs.
            if !client.drain_ready() {
                break;
            }
            // The events just taken may have ended the input (`--max-messages` reached):
            // what was not sent by then is not sent, and is no failure.
            if client.input_on_hold() || !client.retry_blocked() {
                break;
            }
            let Some(item) = client.pending.pop_front() else {
                break;
            };
            client.run_input(item, &mut paused_until);
        }
        if client.quit_deadline.is_none()
            && let Some(kind) = client.out.failure()
        {
            client.output_gone(kind);
        }
        let linger_wake = client.check_linger();
        if client.quit_deadline.is_none() && client.ended_unasked {
            // What standard input still holds is not sent: there is nothing to send it on.
            client.drop_input();
            client.quit();
        }
        if client.done_quitting() || client.forced.is_some() {
            break;
        }
        let wake = [paused_until, client.quit_deadline, linger_wake]
            .into_iter()
            .flatten()
            .min();
        let input = match wake {
            Some(t) => match client
                .rx
                .recv_timeout(t.saturating_duration_since(Instant::now()))
            {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match client.rx.recv() {
                Ok(input) => Some(input),
                Err(_) => break,
            },
        };
        let timed_out = input.is_none();
        if let Some(input) = input {
            client.take(input);
        }
        // The deadline of a signal holds while events keep coming (a flood, a slow stdout);
        // otherwise the core's close timeout ends the close, and the loop waits for its event.
        let past = client.quit_deadline.is_some_and(|t| Instant::now() >= t);
        if past && (timed_out || client.signalled) {
            client.last_look();
            if client.done_quitting() || client.forced.is_some() {
                break;
            }
            client.out.note("close did not finish in time; exiting");
            if !client.live.is_empty() {
                client.status = status::ABNORMAL;
            }
            break;
        }
    }
    let quiet = client.quiet;
    let forced = client.forced.is_some();
    let caught = Arc::clone(&client.caught);
    let out = Arc::clone(&client.out);
    let mut status = match client.forced {
        // Nothing more is waited for (stdout gave up at the second signal); the process
        // ends with the threads in it.
        Some(name) => {
            client.out.finish();
            crate::signals::exit_status(name)
        }
        None => client.shut_down(),
    };
    // A second signal the loop did not act on (it came while the last output was written,
    // which it gave up).
    let caught = caught.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = caught.last
        && caught.count > 1
        && !forced
    {
        if !quiet {
            out.say(&format!("wxsocket: {name} again: exiting at once"));
        }
        status = crate::signals::exit_status(name);
    }
    let record_failed = record.and_then(|r| match r.flush() {
        Err(e) => Some(e.to_string()),
        Ok(()) => r.error(),
    });
    match record_failed {
        Some(e) => {
            if !quiet {
                out.say(&format!(
                    "wxsocket: error: --record: the transcript could not be written: {e}"
                ));
            }
            ExitCode::from(status::OUTPUT_FAILED)
        }
        None => ExitCode::from(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line over the largest message is refused having read no more than that (it used to
    /// be read up to the `/binary` limit, three times as much, before it was refused); a
    /// `/binary` line may be as long as its hex needs.
    #[test]
    fn a_line_over_its_limit_is_refused_as_it_is_read() {
        let limits = (1_000, 1_000_000);
        let mut endless = std::io::BufReader::new(std::io::repeat(b'x'));
        let mut line = Vec::new();
        let read = read_line(&mut endless, &mut line, limits).unwrap();
        assert!(matches!(read, LineRead::TooLong));
        assert!(line.len() <= 1_001, "{} bytes held", line.len());

        let binary = format!("/binary {}\nnext\n", "ab ".repeat(200_000));
        let mut input = std::io::Cursor::new(binary.as_bytes());
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut line, limits).unwrap(),
            LineRead::Line
        ));
        assert_eq!(line.len(), binary.len() - 6);
        let mut endless = std::io::BufReader::new(std::io::Read::chain(
            &b"/binary "[..],
            std::io::repeat(b'a'),
        ));
        let mut line = Vec::new();
        let read = read_line(&mut endless, &mut line, limits).unwrap();
        assert!(matches!(read, LineRead::TooLong));
        assert!(line.len() <= 1_000_001, "{} bytes held", line.len());
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(parse_command("hello"), Ok(Command::Text(t)) if t == "hello"));
        assert!(matches!(parse_command("//x"), Ok(Command::Text(t)) if t == "/x"));
        assert!(matches!(parse_command(""), Ok(Command::Text(t)) if t.is_empty()));
        assert!(matches!(parse_command("/binary 00ff"), Ok(Command::Binary(b)) if b == [0, 255]));
        assert!(parse_command("/binary 0").is_err());
        assert!(matches!(parse_command("/close"), Ok(Command::Close(None, r)) if r.is_empty()));
        assert!(matches!(
            parse_command("/close 4000 see you later"),
            Ok(Command::Close(Some(4000), r)) if r == "see you later"
        ));
        assert!(parse_command("/close soon").is_err());
        assert!(
            matches!(parse_command("/connect ws://h/"), Ok(Command::Connect(u)) if u == "ws://h/")
        );
        assert!(matches!(parse_command("/sleep 20"), Ok(Command::Sleep(d)) if d.as_millis() == 20));
        assert!(matches!(parse_command("/quit"), Ok(Command::Quit)));
        // Not a command: sent as it is.
        assert!(matches!(parse_command("/nope"), Ok(Command::Text(t)) if t == "/nope"));
        assert!(matches!(parse_command("/etc/passwd"), Ok(Command::Text(t)) if t == "/etc/passwd"));
        assert!(matches!(parse_command("//quit"), Ok(Command::Text(t)) if t == "/quit"));
    }
}
