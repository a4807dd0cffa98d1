//! The session's state graph, kept here as data: in debug builds the session checks every
//! transition it makes against [`TRANSITIONS`] (so its unit, property and fuzz-replay
//! tests fail on any other), the property test also checks each step's change of
//! [`crate::Session::state`], and a test checks the README's diagram against it.

use std::fmt;

/// The session's state as the application sees it (`readyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadyState {
    /// No connection has been made yet.
    Idle,
    /// Dialling or in the opening handshake; sends are queued.
    Connecting,
    /// Open; sends go straight to the driver.
    Open,
    /// A close handshake is under way; sends are refused.
    Closing,
    /// The last connection ended; `connect` starts a new one.
    Closed,
}

impl ReadyState {
    /// Every state, in lifecycle order.
    pub const ALL: [ReadyState; 5] = [
        ReadyState::Idle,
        ReadyState::Connecting,
        ReadyState::Open,
        ReadyState::Closing,
        ReadyState::Closed,
    ];

    /// The state's name as the README's diagram writes it.
    pub fn name(self) -> &'static str {
        match self {
            ReadyState::Idle => "Idle",
            ReadyState::Connecting => "Connecting",
            ReadyState::Open => "Open",
            ReadyState::Closing => "Closing",
            ReadyState::Closed => "Closed",
        }
    }
}

impl fmt::Display for ReadyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One allowed edge of the state graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: ReadyState,
    /// State after.
    pub to: ReadyState,
    /// What causes it.
    pub on: &'static str,
}

const fn t(from: ReadyState, to: ReadyState, on: &'static str) -> Transition {
    Transition { from, to, on }
}

use ReadyState::{Closed, Closing, Connecting, Idle, Open};

/// Every transition the session can make. The behaviour of `send`, `close` and `connect` in
/// each state is a table on [`crate::Session`].
pub const TRANSITIONS: &[Transition] = &[
    t(Idle, Connecting, "connect"),
    t(Connecting, Open, "handshake done"),
    t(
        Connecting,
        Closed,
        "dial failed / handshake timeout / close (Abort)",
    ),
    t(
        Connecting,
        Connecting,
        "connect (replaces) / reconnect delay over (dial)",
    ),
    t(Open, Closing, "close / peer close"),
    t(Open, Closed, "transport error / keepalive timeout"),
    t(Open, Connecting, "connect (replaces)"),
    t(Closing, Closed, "transport closed / close timeout"),
    t(Closing, Connecting, "connect (replaces)"),
    t(Closed, Connecting, "connect / reconnect policy (back off)"),
];

/// Whether `from → to` is an edge of [`TRANSITIONS`].
pub fn is_allowed(from: ReadyState, to: ReadyState) -> bool {
    TRANSITIONS.iter().any(|t| t.from == from && t.to == to)
}

/// The graph as a Mermaid `stateDiagram-v2`, as the README shows it.
pub fn mermaid() -> String {
    let mut out = String::from("stateDiagram-v2\n    [*] --> Idle\n");
    for t in TRANSITIONS {
        out.push_str(&format!("    {} --> {}: {}\n", t.from, t.to, t.on));
    }
    out
}
