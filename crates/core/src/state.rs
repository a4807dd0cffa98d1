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

/// A state of the graph: the application's [`ReadyState`]s, plus `Backoff`, the wait before
/// a reconnect attempt, which the application sees as `Connecting` (sends are queued,
/// `close` cancels it) but which has no transport and its own edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// No connection has been made yet.
    Idle,
    /// Dialling or in the opening handshake.
    Connecting,
    /// Waiting out a reconnect delay (`ReadyState::Connecting` to the application).
    Backoff,
    /// Open.
    Open,
    /// A close handshake is under way.
    Closing,
    /// The last connection ended.
    Closed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 6] = [
        State::Idle,
        State::Connecting,
        State::Backoff,
        State::Open,
        State::Closing,
        State::Closed,
    ];

    /// The state's name as the README's diagram writes it.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connecting => "Connecting",
            State::Backoff => "Backoff",
            State::Open => "Open",
            State::Closing => "Closing",
            State::Closed => "Closed",
        }
    }

    /// What the application sees in this state.
    pub fn ready_state(self) -> ReadyState {
        match self {
            State::Idle => ReadyState::Idle,
            State::Connecting | State::Backoff => ReadyState::Connecting,
            State::Open => ReadyState::Open,
            State::Closing => ReadyState::Closing,
            State::Closed => ReadyState::Closed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One allowed edge of the state graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// What causes it.
    pub on: &'static str,
}

const fn t(from: State, to: State, on: &'static str) -> Transition {
    Transition { from, to, on }
}

use State::{Backoff, Closed, Closing, Connecting, Idle, Open};

/// Every transition the session can make. The behaviour of `send`, `close` and `connect` in
/// each state (the table in the README) is documented on [`Session`](crate::Session).
pub const TRANSITIONS: &[Transition] = &[
    t(Idle, Connecting, "connect"),
    t(Connecting, Open, "handshake done"),
    t(
        Connecting,
        Closed,
        "dial failed / handshake timeout / close (Abort) / shutdown",
    ),
    t(Connecting, Connecting, "connect (replaces)"),
    t(Open, Closing, "close / peer close / shutdown"),
    t(Open, Closed, "transport error / keepalive or ack timeout"),
    t(Open, Connecting, "connect (replaces)"),
    t(
        Closing,
        Closed,
        "transport closed / close timeout / linger over",
    ),
    t(Closing, Connecting, "connect (replaces)"),
    t(Closed, Connecting, "connect"),
    t(Closed, Backoff, "reconnect policy"),
    t(
        Backoff,
        Connecting,
        "delay over (dial) / connect (replaces)",
    ),
    t(Backoff, Closed, "close / shutdown (cancelled)"),
];

/// Whether `from → to` is an edge of [`TRANSITIONS`].
pub fn is_allowed(from: State, to: State) -> bool {
    TRANSITIONS.iter().any(|t| t.from == from && t.to == to)
}

/// Whether the application can see its `readyState` go from `from` to `to` in one
/// transition: some edge of [`TRANSITIONS`] joins states it sees that way.
pub fn is_allowed_ready(from: ReadyState, to: ReadyState) -> bool {
    TRANSITIONS
        .iter()
        .any(|t| t.from.ready_state() == from && t.to.ready_state() == to)
}

/// The graph as a Mermaid `stateDiagram-v2`, as the README shows it.
pub fn mermaid() -> String {
    let mut out = String::from("stateDiagram-v2\n    [*] --> Idle\n");
    for t in TRANSITIONS {
        out.push_str(&format!("    {} --> {}: {}\n", t.from, t.to, t.on));
    }
    out
}
