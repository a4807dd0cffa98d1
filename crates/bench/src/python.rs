//! The Python `websockets` client of the compressed rows: the same workload (the same
//! payloads in turn, at most the same number in flight, every echo checked, permessage-deflate
//! with context takeover, window 15, the same zlib level) against the same echo server, in
//! a process of its own, measured in the same segments as the adapter. Its script is
//! `crates/bench/python/deflate_client.py`, run with the Python of the interop peers'
//! virtual environment (`scripts/install-peers` makes it): `$WXSOCKET_PYTHON`, else
//! `$WXSOCKET_PEERS_DIR/.venv/bin/python`, else `tests/peers/.venv/bin/python` of this
//! workspace. When there is no such Python, or it has no `websockets`, the row is skipped
//! and the reason printed ([`PythonRow::Skipped`]); no number is made up.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The client's script (see the module docs).
const SCRIPT: &str = include_str!("../python/deflate_client.py");

/// Bound on any one answer of the client (connecting, or one run).
const WAIT: Duration = Duration::from_secs(60);

/// A compressed row's Python figures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PythonRow {
    /// Measured in the same segments as the adapter.
    Measured {
        /// Python's echoes per second (median over the segments).
        per_sec: f64,
        /// The median over the segments of the adapter's rate / Python's in the same
        /// segment (above 1.0: the adapter was faster).
        ratio: f64,
        /// The `websockets` version that ran.
        version: String,
    },
    /// Not measured; why (no Python, no `websockets`, or the client failed).
    Skipped(String),
}

impl PythonRow {
    /// Python's rate, when measured.
    pub fn per_sec(&self) -> Option<f64> {
        match self {
            PythonRow::Measured { per_sec, .. } => Some(*per_sec),
            PythonRow::Skipped(_) => None,
        }
    }

    /// The adapter's rate against Python's, when measured.
    pub fn ratio(&self) -> Option<f64> {
        match self {
            PythonRow::Measured { ratio, .. } => Some(*ratio),
            PythonRow::Skipped(_) => None,
        }
    }

    /// Why the row was skipped, when it was.
    pub fn skipped(&self) -> Option<&str> {
        match self {
            PythonRow::Measured { .. } => None,
            PythonRow::Skipped(reason) => Some(reason),
        }
    }
}

/// The Python to run (see the module docs), or why there is none.
pub fn python() -> Result<PathBuf, String> {
    let python = match std::env::var_os("WXSOCKET_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => std::env::var_os("WXSOCKET_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // crates/bench -> the workspace root.
                let bench = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                bench
                    .ancestors()
                    .nth(2)
                    .unwrap_or(bench)
                    .join("tests/peers")
            })
            .join(".venv/bin/python"),
    };
    if python.is_file() {
        Ok(python)
    } else {
        Err(format!(
            "{} does not exist (scripts/install-peers makes it; WXSOCKET_PYTHON names another)",
            python.display()
        ))
    }
}

/// One running Python client, connected with permessage-deflate. Dropping it ends the
/// process.
pub struct PythonClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    version: String,
}

impl std::fmt::Debug for PythonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonClient")
            .field("pid", &self.child.id())
            .field("version", &self.version)
            .finish()
    }
}

impl PythonClient {
    /// Starts the client on `url` at zlib `level` with at most `window` messages in
    /// flight, sending `payloads` in turn; returns once it is connected with compression
    /// in force. `Err` is the reason the row is skipped.
    pub fn start(
        url: &str,
        level: u32,
        window: usize,
        payloads: &[&str],
    ) -> Result<PythonClient, String> {
        let python = python()?;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(url)
            .arg(level.to_string())
            .arg(window.to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONNOUSERSITE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no pipes to the python client".to_owned());
        };
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("python-client-out".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let payloads = serde_json::to_string(payloads).unwrap_or_default();
        let sent = writeln!(stdin, "{payloads}").and_then(|()| stdin.flush());
        let mut client = PythonClient {
            child,
            stdin,
            lines,
            version: String::new(),
        };
        sent.map_err(|e| format!("python client: {e}"))?;
        let ready = client.answer()?;
        match ready.strip_prefix("ready ") {
            Some(version) => client.version = version.to_owned(),
            None => return Err(format!("python client: unexpected {ready:?}")),
        }
        Ok(client)
    }

    /// The `websockets` version that runs, as `websockets 17.4`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `n` echoes; returns Python's rate (measured in the client, from its first send to
    /// its last echo). `Err` is why it failed.
    pub fn run(&mut self, n: usize) -> Result<f64, String> {
        writeln!(self.stdin, "{n}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("python client: {e}"))?;
        let answer = self.answer()?;
        answer
            .strip_prefix("rate ")
            .and_then(|r| r.trim().parse().ok())
            .ok_or_else(|| format!("python client: unexpected {answer:?}"))
    }

    /// The client's next line; `skip` and `error` lines become `Err`.
    fn answer(&mut self) -> Result<String, String> {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .map_err(|_| "python client: no answer (ended or timed out)".to_owned())?;
        if let Some(reason) = line.strip_prefix("skip ") {
            return Err(reason.to_owned());
        }
        if let Some(reason) = line.strip_prefix("error ") {
            return Err(format!("python client failed: {reason}"));
        }
        Ok(line)
    }
}

impl Drop for PythonClient {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        // A clean close takes a round trip; a client that does not finish is killed.
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python client through a compressed case's segments: started (and warmed up) once,
/// run once per segment after the adapter, its rate set against the adapter's of the same
/// segment. A failure at any point skips the row, naming why.
#[derive(Debug)]
pub struct PythonSegments {
    client: Result<PythonClient, String>,
    rates: Vec<f64>,
    ratios: Vec<f64>,
}

impl PythonSegments {
    /// Starts the client (see [`PythonClient::start`]) and runs one unmeasured window.
    pub fn start(url: &str, level: u32, window: usize, payloads: &[&str]) -> PythonSegments {
        let client = PythonClient::start(url, level, window, payloads).and_then(|mut client| {
            client.run(window)?;
            Ok(client)
        });
        PythonSegments {
            client,
            rates: Vec::new(),
            ratios: Vec::new(),
        }
    }

    /// One segment: `n` echoes, against the adapter's `adapter_rate` of the same segment.
    pub fn segment(&mut self, n: usize, adapter_rate: f64) {
        let Ok(client) = &mut self.client else {
            return;
        };
        match client.run(n) {
            Ok(rate) => {
                self.rates.push(rate);
                self.ratios.push(adapter_rate / rate);
            }
            Err(e) => self.client = Err(e),
        }
    }

    /// The row: medians over the segments, or why it was skipped.
    pub fn row(self) -> PythonRow {
        match self.client {
            Ok(client) if !self.rates.is_empty() => PythonRow::Measured {
                per_sec: crate::workload::median(self.rates),
                ratio: crate::workload::median(self.ratios),
                version: client.version().to_owned(),
            },
            Ok(_) => PythonRow::Skipped("no segment ran".to_owned()),
            Err(reason) => PythonRow::Skipped(reason),
        }
    }
}
