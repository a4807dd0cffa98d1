//! `wxsocket connect URL [options]`: an interactive client driven by standard input.

use crate::backend::{Backend, Kind};
use crate::output::{Out, parse_hex, show_message};
use crate::{ConnectArgs, Policy};
use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};
use wxsocket_core::{
    CloseBeforeOpen, CloseError, ConfigError, ConnId, ConnectError, ConnectOptions, DeflateOptions,
    Event, Message, ReadyState, ReconnectPolicy, SessionConfig,
};
use wxsocket_tokio::TlsRoots;

/// The standard-input commands, shown by `--help` and `/help`.
pub const STDIN_HELP: &str = "\
Standard input, one command per line:
  TEXT                     send TEXT as a text message (a line starting with // sends /…)
  /binary HEX              send a binary message (hex digits, spaces allowed)
  /close [CODE [REASON]]   close (CODE 1000 or 3000-4999, default 1000)
  /connect URL             connect again with the same options (replaces the current socket)
  /sleep MS                pause reading commands for MS milliseconds (events still print)
  /quit                    close, and exit once the close event arrived and every socket
                           finished closing (end of input = /quit)
  /help                    this list

Exit status: 2 for invalid options, 1 if the adapter cannot start, otherwise 0.";

/// Everything `connect` needs, checked before anything starts.
pub struct Settings {
    options: ConnectOptions,
    session: SessionConfig,
    tls: TlsRoots,
    kind: Kind,
    json: bool,
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
        // Everything the core checks, checked now: a bad option is a usage error (exit 2),
        // not a failed call.
        options.validate().map_err(|e| option_error(&e))?;

        let policy = match args.close_before_open {
            Policy::Abort => CloseBeforeOpen::Abort,
            Policy::AfterOpen => CloseBeforeOpen::AfterOpen,
            Policy::Ignore => CloseBeforeOpen::Ignore,
        };
        let mut session = SessionConfig::default().close_before_open(policy);
        if let Some(secs) = args.keepalive {
            let every = Duration::from_secs(secs);
            session = session.keepalive(every, every);
        }
        if let Some(policy) = reconnect_policy(args)? {
            session = session.reconnect(policy);
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
        Ok(Settings {
            options,
            session,
            tls,
            kind: if args.blocking {
                Kind::Blocking
            } else {
                Kind::Tokio
            },
            json: args.json,
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
    let seed = args
        .reconnect_seed
        .unwrap_or_else(|| RandomState::new().hash_one(std::process::id()));
    let mut policy = defaults
        .backoff(base, cap)
        .max_attempts(args.reconnect_max)
        .carry_queue(!args.reconnect_no_carry)
        .retry_http_4xx(args.reconnect_on_4xx)
        .seed(seed);
    if let Some(codes) = &args.reconnect_codes {
        policy = policy.retry_close_codes(codes.0.clone());
    }
    Ok(Some(policy))
}

/// The command-line option behind a session configuration field, if one is.
fn config_option(field: &str) -> Option<&'static str> {
    Some(match field {
        "tls" => "--ca-file <PEM>",
        "handshake_timeout" => "--timeout <MS>",
        "keepalive.interval" | "keepalive.timeout" => "--keepalive <SECS>",
        "reconnect.base" => "--reconnect-base <MS>",
        "reconnect.cap" => "--reconnect-cap <MS>",
        "reconnect.max_attempts" => "--reconnect-max <N>",
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
        ConnectError::InvalidHeaderName { .. }
        | ConnectError::InvalidHeaderValue { .. }
        | ConnectError::ForbiddenHeader { .. } => "--header",
        ConnectError::InvalidProtocol { .. } | ConnectError::DuplicateProtocol { .. } => {
            "--protocol"
        }
        ConnectError::InvalidTimeout => "--timeout",
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
    Line(String),
    End,
    Event(Event),
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
        _ => Err(format!(
            "unknown command /{name} (try /help; // sends a line starting with /)"
        )),
    }
}

struct Client {
    backend: Backend,
    out: Arc<Out>,
    options: ConnectOptions,
    session: SessionConfig,
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
    /// Lines read but not yet run (`None`: end of input).
    pending: VecDeque<Option<String>>,
    /// The last connection whose `connecting` event was printed.
    last_connecting: Option<ConnId>,
}

impl Client {
    fn connect(&mut self, url: Option<&str>) {
        let mut options = self.options.clone();
        if let Some(url) = url {
            options.url = url.to_owned();
        }
        match self.backend.connect(&options) {
            Ok(conn) => {
                self.live.insert(conn);
                self.wait_connecting(conn);
            }
            Err(e) => self
                .out
                .call_failed("connectSocket", &format!("connectSocket:fail {e}")),
        }
    }

    fn send(&mut self, message: Message) {
        let shown = show_message(&message);
        match self.backend.send(message) {
            Ok(id) => {
                let conn = self.backend.current().map_or(0, |c| c.get());
                let queued = if self.backend.state() == ReadyState::Connecting {
                    " queued until open"
                } else {
                    ""
                };
                self.out
                    .note(&format!("#{conn} > {shown} (send {id}{queued})"));
            }
            Err(e) => self
                .out
                .call_failed("sendSocketMessage", &format!("sendSocketMessage:fail {e}")),
        }
    }

    fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        let was = self.backend.state();
        let result = self.backend.close(code, reason);
        match &result {
            Ok(()) if was == ReadyState::Connecting => {
                if self.session.close_before_open == CloseBeforeOpen::AfterOpen {
                    self.out
                        .note("close before open: remembered, it is sent right after open");
                }
            }
            Ok(()) => {}
            Err(e) => self
                .out
                .call_failed("closeSocket", &format!("closeSocket:fail {e}")),
        }
        result
    }

    /// Starts quitting: close now if open, after the open if connecting.
    fn quit(&mut self) {
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

    fn event(&mut self, event: Event) {
        self.out.event(&event);
        match &event {
            Event::Connecting { conn, .. } => {
                self.live.insert(*conn);
                self.backoff = None;
                self.last_connecting = Some(*conn);
            }
            Event::Reconnecting { conn, .. } => {
                self.live.insert(*conn);
                self.backoff = Some(*conn);
            }
            Event::Open { conn, handshake } => {
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
                    self.out.note(&format!(
                        "#{conn} socket {} -> {}, TCP_NODELAY {on}",
                        info.local_addr, info.peer_addr
                    ));
                }
                if self.close_on_open && self.backend.current() == Some(*conn) {
                    self.close_on_open = false;
                    let _ = self.close(None, "");
                }
            }
            Event::Close { conn, .. } => {
                self.live.remove(conn);
                if self.backoff == Some(*conn) {
                    self.backoff = None;
                }
            }
            _ => {}
        }
    }

    /// Handles one input: a line is kept for later, an event is printed.
    fn take(&mut self, input: Input) {
        match input {
            Input::Line(line) => self.pending.push_back(Some(line)),
            Input::End => self.pending.push_back(None),
            Input::Event(event) => self.event(event),
        }
    }

    /// Takes every input already waiting; false if the channel is gone.
    fn drain_ready(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(input) => self.take(input),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
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
    /// that came meanwhile.
    fn shut_down(self) {
        let Client {
            backend,
            out,
            session,
            rx,
            ..
        } = self;
        if !backend.shutdown(session.close_timeout + Duration::from_secs(1)) {
            out.note("the sockets did not finish closing in time; exiting");
        }
        for input in rx.try_iter() {
            if let Input::Event(event) = input {
                out.event(&event);
            }
        }
    }

    fn done_quitting(&self) -> bool {
        self.quit_deadline.is_some()
            && self.live.is_empty()
            && !matches!(
                self.backend.state(),
                ReadyState::Connecting | ReadyState::Open | ReadyState::Closing
            )
    }
}

/// Runs the client until `/quit` or end of input, then until the close event.
pub fn run(settings: Settings) -> ExitCode {
    let out = Arc::new(Out::new(settings.json));
    let (tx, rx) = mpsc::channel::<Input>();
    let backend = match Backend::start(
        settings.kind,
        settings.session.clone(),
        settings.tls,
        tx.clone(),
        Input::Event,
    ) {
        Ok(backend) => backend,
        Err(e) if config_error_is_usage(&e) => {
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
    if interactive && !settings.json {
        eprintln!(
            "wxsocket connect via {}: type a line to send it, /help for commands, Ctrl-D to quit",
            settings.kind.crate_name()
        );
    }
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(Input::Line(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::End);
        })
        .expect("cannot start the stdin thread");

    let mut client = Client {
        backend,
        out,
        options: settings.options,
        session: settings.session,
        live: BTreeSet::new(),
        quit_deadline: None,
        close_on_open: false,
        backoff: None,
        rx,
        pending: VecDeque::new(),
        last_connecting: None,
    };
    client.connect(None);

    let mut paused_until: Option<Instant> = None;
    loop {
        if paused_until.is_some_and(|t| Instant::now() >= t) {
            paused_until = None;
        }
        while paused_until.is_none() && client.quit_deadline.is_none() {
            // Events that already happened are printed before the next command runs.
            if !client.drain_ready() {
                break;
            }
            let Some(item) = client.pending.pop_front() else {
                break;
            };
            let Some(line) = item else {
                client.quit();
                break;
            };
            let line = line.strip_suffix('\r').unwrap_or(&line);
            match parse_command(line) {
                Ok(Command::Text(text)) => client.send(Message::text(text)),
                Ok(Command::Binary(bytes)) => client.send(Message::binary(bytes)),
                Ok(Command::Close(code, reason)) => {
                    let _ = client.close(code, &reason);
                }
                Ok(Command::Connect(url)) => client.connect(Some(&url)),
                Ok(Command::Sleep(d)) => paused_until = Some(Instant::now() + d),
                Ok(Command::Quit) => client.quit(),
                Ok(Command::Help) => eprintln!("{STDIN_HELP}"),
                Err(message) => eprintln!("wxsocket: {message}"),
            }
        }
        if client.done_quitting() {
            break;
        }
        let wake = match (paused_until, client.quit_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
        match input {
            Some(input) => client.take(input),
            None => {
                if client.quit_deadline.is_some_and(|t| Instant::now() >= t) {
                    client.out.note("close did not finish in time; exiting");
                    break;
                }
            }
        }
    }
    client.shut_down();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(parse_command("/nope").is_err());
    }
}
