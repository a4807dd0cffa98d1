//! Printing events: human-readable lines or the `--json` contract (one object per line).

use crate::stdout::Stdout;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;
use wxsocket_core::{ConnId, Event, Message, OpenProfile};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Parses hex (upper or lower case, optional spaces between bytes).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in {text:?}"));
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Ok(d - b'0'),
        b'a'..=b'f' => Ok(d - b'a' + 10),
        b'A'..=b'F' => Ok(d - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", d as char)),
    };
    digits
        .chunks(2)
        .map(|pair| Ok((value(pair[0])? << 4) | value(pair[1])?))
        .collect()
}

/// How a message is shown to a person: text as a quoted string, binary as size and hex.
/// A received text as one line that cannot drive a terminal: line breaks and the other
/// control characters (tab aside) are written as escapes (`\n`, `\r`, `\u{1b}`), so one
/// message is one line for a script reading the output, and a server cannot clear the
/// screen or fake lines; so are Unicode's line and paragraph separators (a line break to
/// some readers) and its bidirectional controls (which can make a line read as something
/// else). Text without them (nearly all) is written as it is.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| {
        c == '\t'
            || !(c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
                )
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    };
    if text.chars().all(plain) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c if !plain(c) => line.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => line.push(c),
        }
    }
    std::borrow::Cow::Owned(line)
}

pub fn show_message(message: &Message) -> String {
    match message {
        Message::Text(text) => format!("{:?}", text.as_str()),
        other => {
            let bytes = other.as_bytes();
            let shown = if bytes.len() > 64 {
                format!("{}…", hex(&bytes[..64]))
            } else {
                hex(bytes)
            };
            format!("binary {} B {shown}", bytes.len())
        }
    }
}

/// The `--json` object of an event (without `"t"`), or `None` for an event the contract
/// does not cover.
pub fn event_json(event: &Event) -> Option<Map<String, Value>> {
    let conn = |c: &ConnId| Value::from(c.get());
    let value = match event {
        Event::Connecting { conn: c, url, .. } => {
            json!({"event": "connecting", "conn": conn(c), "url": url.as_str()})
        }
        Event::Open {
            conn: c, handshake, ..
        } => {
            let mut headers = Map::new();
            for name in handshake.headers.keys() {
                let values: Vec<String> = handshake
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                headers.insert(name.as_str().to_owned(), Value::from(values.join(", ")));
            }
            let deflate = handshake.deflate.map(|p| {
                json!({
                    "server_no_context_takeover": p.server_no_context_takeover,
                    "client_no_context_takeover": p.client_no_context_takeover,
                    "server_max_window_bits": p.server_max_window_bits,
                    "client_max_window_bits": p.client_max_window_bits,
                })
            });
            json!({"event": "open", "conn": conn(c), "protocol": handshake.protocol, "headers": headers, "deflate": deflate, "profile": profile_json(&handshake.profile)})
        }
        Event::Message {
            conn: c, message, ..
        } => {
            let (kind, data) = match message {
                Message::Text(t) => ("text", t.as_str().to_owned()),
                other => ("binary", hex(other.as_bytes())),
            };
            json!({"event": "message", "conn": conn(c), "type": kind, "data": data})
        }
        Event::SendCompleted { conn: c, id, .. } => {
            json!({"event": "sent", "conn": conn(c), "id": id.get()})
        }
        Event::SendDelivered {
            conn: c,
            id,
            duplicate,
            ..
        } => {
            json!({"event": "delivered", "conn": conn(c), "id": id.get(), "duplicate": duplicate})
        }
        Event::SendFailed {
            conn: c,
            id,
            reason,
            ..
        } => {
            json!({"event": "send_failed", "conn": conn(c), "id": id.get(), "error": reason.to_string()})
        }
        Event::Error { conn: c, error, .. } => {
            json!({"event": "error", "conn": conn(c), "error": error.to_string()})
        }
        Event::Pong {
            conn: c, payload, ..
        } => {
            json!({"event": "pong", "conn": conn(c), "data": hex(payload)})
        }
        Event::Close {
            conn: c,
            code,
            reason,
            clean,
            ..
        } => {
            json!({"event": "close", "conn": conn(c), "code": code, "reason": reason, "clean": clean})
        }
        Event::Reconnecting {
            conn: c,
            attempt,
            delay,
            last_error,
            unreported,
            unreported_opened,
            ..
        } => {
            let mut line = json!({
                "event": "reconnecting",
                "conn": conn(c),
                "attempt": attempt,
                "delay_ms": delay.as_millis() as u64,
                "error": last_error,
            });
            // Only when attempts went untold (output held up long enough for the notices
            // to reach their count): the line is as before otherwise.
            if *unreported != 0 {
                line["unreported"] = json!(unreported);
                line["unreported_opened"] = json!(unreported_opened);
            }
            line
        }
        _ => return None,
    };
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Milliseconds, with fractions to the microsecond (the `--json` contract's durations).
fn ms(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The `profile` object of the `open` event: when each phase of the dial ended, in
/// milliseconds from its start (`tls` is `null` for `ws://`).
pub fn profile_json(profile: &OpenProfile) -> Value {
    json!({
        "resolved_ms": ms(profile.resolved),
        "connected_ms": ms(profile.connected),
        "tls_ms": profile.tls.map(ms),
        "request_written_ms": ms(profile.request_written),
        "response_received_ms": ms(profile.response_received),
    })
}

/// The timeline's line for a dial's profile: how long each phase took.
pub fn profile_human(conn: ConnId, profile: &OpenProfile) -> String {
    let phases: Vec<String> = profile
        .phases()
        .map(|(name, took)| format!("{name} {:.1}", ms(took)))
        .collect();
    format!(
        "#{conn} dial took {:.1} ms: {} ms",
        ms(profile.response_received),
        phases.join(", ")
    )
}

/// One human-readable line for an event.
pub fn event_human(event: &Event) -> String {
    match event {
        Event::Connecting { conn, url, .. } => format!("#{conn} connecting to {url}"),
        Event::Open {
            conn, handshake, ..
        } => {
            let protocol = handshake.protocol.as_deref().unwrap_or("none");
            match &handshake.deflate {
                Some(params) => {
                    format!("#{conn} open (protocol: {protocol}, compression: {params})")
                }
                None => format!("#{conn} open (protocol: {protocol})"),
            }
        }
        Event::Message { conn, message, .. } => {
            format!("#{conn} < {}", show_message(message))
        }
        Event::SendCompleted { conn, id, .. } => format!("#{conn} send {id} written"),
        Event::SendDelivered {
            conn,
            id,
            duplicate,
            ..
        } => {
            let resent = if *duplicate {
                " (resent: possibly a duplicate)"
            } else {
                ""
            };
            format!("#{conn} send {id} delivered{resent}")
        }
        Event::SendFailed {
            conn, id, reason, ..
        } => format!("#{conn} send {id} failed: {reason}"),
        Event::Error { conn, error, .. } => format!("#{conn} error: {error}"),
        Event::Pong { conn, payload, .. } => format!("#{conn} pong {}", hex(payload)),
        Event::Close {
            conn,
            code,
            reason,
            clean,
            ..
        } => format!(
            "#{conn} closed: {code} {reason:?} ({})",
            if *clean { "clean" } else { "not clean" }
        ),
        Event::Reconnecting {
            conn,
            attempt,
            delay,
            last_error,
            unreported,
            unreported_opened,
            ..
        } => {
            let mut line = format!(
                "#{conn} reconnecting in {} ms (attempt {attempt}) after: {last_error}",
                delay.as_millis()
            );
            if *unreported != 0 {
                line += &format!(
                    " ({unreported} attempts untold while output was held up, \
                     {unreported_opened} of them opened)"
                );
            }
            line
        }
        other => format!("{other:?}"),
    }
}

/// What [`Out`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The annotated timeline: every event, stamped with the time since start.
    Timeline,
    /// One JSON object per line (the README's event contract).
    Json,
    /// Message payloads only, one per line (binary as hex, or as raw bytes with `raw`);
    /// errors and unclean closes go to stderr as diagnostics unless `quiet`.
    Payloads {
        /// Binary payloads as raw bytes, without a newline.
        raw: bool,
        /// No diagnostics on stderr.
        quiet: bool,
    },
}

/// Writes lines to stdout, stamped with the time since start; one lock per line, so lines
/// from several threads never interleave.
#[derive(Debug)]
pub struct Out {
    start: Instant,
    mode: Mode,
    lock: Mutex<()>,
    /// The first error writing to stdout (the reader went away, the disk is full): from
    /// then on nothing more is written, and the command winds down ([`Self::failure`]).
    failed: std::sync::OnceLock<std::io::ErrorKind>,
    /// Stdout written on a thread of its own ([`Self::with_writer`]); `None`: on the
    /// thread printing.
    writer: Option<Stdout>,
}

impl Out {
    /// A printer whose clock starts now: JSON lines, or the timeline.
    pub fn new(json: bool) -> Self {
        Self::with_mode(if json { Mode::Json } else { Mode::Timeline })
    }

    /// A printer of the given mode whose clock starts now.
    pub fn with_mode(mode: Mode) -> Self {
        Self {
            start: Instant::now(),
            mode,
            lock: Mutex::new(()),
            failed: std::sync::OnceLock::new(),
            writer: None,
        }
    }

    /// As [`Self::with_mode`], but stdout is written on a thread of its own
    /// ([`crate::stdout`]): a reader that stops reading holds a line at most until
    /// [`Self::interrupt`] or [`Self::give_up_at`]. Call [`Self::finish`] before exiting.
    /// Fails when the OS refuses the thread.
    pub fn with_writer(mode: Mode) -> std::io::Result<Self> {
        Ok(Self {
            writer: Some(Stdout::start()?),
            ..Self::with_mode(mode)
        })
    }

    /// Lets a line waiting for stdout go through now, once (see [`Stdout::interrupt`]).
    pub fn interrupt(&self) {
        if let Some(writer) = &self.writer {
            writer.interrupt();
        }
    }

    /// From now on, lines that find stdout full are not printed (counted, and said on
    /// stderr at the end); see [`Stdout::wait_no_more`].
    pub fn wait_no_more(&self) {
        if let Some(writer) = &self.writer {
            writer.wait_no_more();
        }
    }

    /// From `at` on, lines that find stdout full are not printed, and [`Self::finish`]
    /// waits no longer.
    pub fn give_up_at(&self, at: Instant) {
        if let Some(writer) = &self.writer {
            writer.give_up_at(at);
        }
    }

    /// Writes a line on stderr after what was printed before it (see [`Stdout::say`]: after
    /// a signal, within the time left).
    pub fn say(&self, text: &str) {
        match &self.writer {
            Some(writer) => writer.say(text),
            None => stderr_line(text),
        }
    }

    /// Waits until what was printed is written (see [`Stdout::finish`]).
    pub fn finish(&self) {
        if let Some(writer) = &self.writer {
            writer.finish();
        }
    }

    /// What this printer prints.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Milliseconds since start.
    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Milliseconds since start, with fractions (for the demo's timeline).
    pub fn elapsed_ms_f64(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Prints a line as is.
    pub fn line(&self, text: &str) {
        self.write(|stdout| writeln!(stdout, "{text}"));
    }

    /// Writes bytes as they are.
    fn raw(&self, bytes: &[u8]) {
        self.write(|stdout| stdout.write_all(bytes));
    }

    /// Writes to stdout and flushes (or hands the bytes to the writer thread), unless an
    /// earlier write failed; keeps the first error.
    fn write(&self, f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.failure().is_some() {
            return;
        }
        let mut bytes = Vec::new();
        // Writing to a `Vec` cannot fail.
        let _ = f(&mut bytes);
        if let Some(writer) = &self.writer {
            return writer.push(&bytes);
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
            let _ = self.failed.set(e.kind());
        }
    }

    /// Why stdout could not be written, once a write failed (`BrokenPipe`: its reader went
    /// away, as `| head` does).
    pub fn failure(&self) -> Option<std::io::ErrorKind> {
        match &self.writer {
            Some(writer) => writer.failure(),
            None => self.failed.get().copied(),
        }
    }

    /// Prints a diagnostic on stderr (payload mode only, unless quiet). Control characters
    /// are escaped ([`one_line`]): the text may hold a server's words (a `Location`, a
    /// reason), which must not drive the terminal.
    pub fn diagnostic(&self, text: &str) {
        if let Mode::Payloads { quiet: false, .. } = self.mode {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.say(&format!("wxsocket: {}", one_line(text)));
        }
    }

    /// Prints a human line with the elapsed time in front, control characters escaped as
    /// [`Self::diagnostic`] does.
    pub fn stamped(&self, text: &str) {
        self.line(&format!("[{:>7} ms] {}", self.elapsed_ms(), one_line(text)));
    }

    /// Prints a JSON object with `"event"` first and `"t"` second.
    pub fn json(&self, object: Map<String, Value>) {
        self.json_at(object, self.elapsed_ms());
    }

    /// Prints a JSON object with `"event"` first and `"t"` (given, in milliseconds) second.
    pub fn json_at(&self, mut object: Map<String, Value>, t: u64) {
        let mut ordered = Map::new();
        if let Some(event) = object.shift_remove("event") {
            ordered.insert("event".into(), event);
        }
        ordered.insert("t".into(), Value::from(t));
        ordered.extend(object);
        self.line(&Value::Object(ordered).to_string());
    }

    /// Prints an event in the chosen format.
    pub fn event(&self, event: &Event) {
        match self.mode {
            Mode::Json => {
                if let Some(object) = event_json(event) {
                    self.json(object);
                }
            }
            Mode::Timeline => self.stamped(&event_human(event)),
            Mode::Payloads { raw, .. } => match event {
                Event::Message {
                    message: Message::Text(text),
                    ..
                } => self.line(&one_line(text.as_str())),
                Event::Message { message, .. } if raw => self.raw(message.as_bytes()),
                Event::Message { message, .. } => self.line(&hex(message.as_bytes())),
                Event::Error { .. } | Event::SendFailed { .. } | Event::Reconnecting { .. } => {
                    self.diagnostic(&event_human(event))
                }
                // A socket `/connect` replaced is not a failure worth a diagnostic.
                Event::Close {
                    code,
                    clean,
                    reason,
                    ..
                } if (!*clean || !matches!(code, 1000 | 1001))
                    && reason != wxsocket_core::REPLACED_REASON =>
                {
                    self.diagnostic(&event_human(event))
                }
                _ => {}
            },
        }
    }

    /// Prints a call rejected at once (`call_failed`); `err_msg` is the message in WeChat's style.
    pub fn call_failed(&self, api: &str, err_msg: &str) {
        match self.mode {
            Mode::Json => {
                let Value::Object(object) =
                    json!({"event": "call_failed", "api": api, "errMsg": err_msg})
                else {
                    return;
                };
                self.json(object);
            }
            Mode::Timeline => self.stamped(&format!("call failed: {err_msg}")),
            Mode::Payloads { .. } => self.diagnostic(err_msg),
        }
    }

    /// Prints a note on the timeline (nothing in the other modes).
    pub fn note(&self, text: &str) {
        if self.mode == Mode::Timeline {
            self.stamped(text);
        }
    }
}

/// Writes a line to stderr; a stderr that cannot be written (closed, full) is ignored
/// rather than a panic, as `eprintln!` would.
pub fn stderr_line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_text_is_one_line_without_control_characters() {
        assert_eq!(one_line("plain \t text, ünïcode"), "plain \t text, ünïcode");
        assert_eq!(
            one_line("one\ntwo\r\u{1b}[2J\u{1b}]0;pwned\u{7}\u{7f}\u{9b}"),
            "one\\ntwo\\r\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{7f}\\u{9b}"
        );
        // Separators and bidirectional controls too; an emoji's zero-width joiner stays.
        assert_eq!(
            one_line("a\u{2028}b\u{2029}c \u{202e}txt.exe\u{202c} \u{2067}x\u{2069} 👩\u{200d}💻"),
            "a\\u{2028}b\\u{2029}c \\u{202e}txt.exe\\u{202c} \\u{2067}x\\u{2069} 👩\u{200d}💻"
        );
    }

    /// Attempts folded while the output was held up are shown, and only then.
    #[test]
    fn a_reconnecting_line_shows_attempts_folded_only_when_there_are_some() {
        let told = Event::reconnecting(
            ConnId::from_raw(3),
            2,
            std::time::Duration::from_millis(5),
            "refused",
        );
        let json = event_json(&told).unwrap();
        assert!(!json.contains_key("unreported"), "{json:?}");
        assert!(!event_human(&told).contains("untold"));
        let folded = told.with_unreported(40, 3);
        let json = event_json(&folded).unwrap();
        assert_eq!(json["unreported"], 40);
        assert_eq!(json["unreported_opened"], 3);
        assert!(
            event_human(&folded)
                .ends_with("(40 attempts untold while output was held up, 3 of them opened)"),
            "{}",
            event_human(&folded)
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0xde, 0xad, 0x00, 0x0f]), "dead000f");
        assert_eq!(parse_hex("DE ad 00 0f").unwrap(), vec![0xde, 0xad, 0, 0x0f]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
    }
}
