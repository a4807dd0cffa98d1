//! Standard output written on a thread of its own, so that a reader that stops reading (a
//! pager left open, a suspended `| less`, a stalled pipe) cannot stop the command: its
//! signals, deadlines and close handshake go on while the output waits.
//!
//! What is waiting is bounded ([`BUDGET`] bytes; a larger line waits alone): a line that
//! finds no room waits for the writer, as a write to a full pipe would, until the wait is
//! interrupted ([`Stdout::interrupt`], the signal thread), lines are no longer waited for
//! ([`Stdout::wait_no_more`], a signal) or the give-up time passes ([`Stdout::give_up_at`],
//! the end of a signal's quit). From the first line given up on, every later one is given
//! up too (the output stops at a clean point, it has no holes); how many is said on stderr
//! when the command ends ([`Stdout::finish`]), never dropped without a word.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The most bytes waiting for the writer thread (written or not yet taken), unless one line
/// alone is larger.
pub const BUDGET: usize = 1 << 20;

/// The writer writes at most this much at a time and says so, so that a slow reader's
/// progress shows within [`STALL`] (16 KiB at 10 KB/s: 1.6 s); once lines are no longer
/// waited for, [`SMALL_PIECE`].
const PIECE: usize = 16 << 10;

/// A pipe's atomic write (`PIPE_BUF`).
const SMALL_PIECE: usize = 4 << 10;

/// How long [`Stdout::finish`] waits for a reader that makes no progress, once lines are no
/// longer waited for ([`Stdout::wait_no_more`]).
pub const STALL: Duration = Duration::from_secs(2);

/// How long a line on stderr is waited for at least, once lines are no longer waited for
/// ([`Stdout::say`]): a stderr with room takes it at once, even past the give-up time (a
/// second signal's "exiting at once").
const SAY_GRACE: Duration = Duration::from_millis(200);

/// The stdout writer thread and what waits for it.
#[derive(Debug)]
pub struct Stdout {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits here for bytes (or the end).
    more: Condvar,
    /// Lines wait here for room, [`Stdout::drain`] and [`Stdout::finish`] for the bytes to
    /// be written.
    room: Condvar,
    /// The first error writing (the reader went away, the disk is full): from then on
    /// nothing more is written.
    failed: OnceLock<ErrorKind>,
    /// A line waiting for room stops waiting once (see [`Stdout::interrupt`]).
    interrupted: AtomicBool,
    /// A line on stderr was not written in time ([`Stdout::say`]): stderr is not written
    /// again.
    stderr_stuck: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Bytes not yet taken by the writer.
    waiting: Vec<u8>,
    /// Bytes the writer took and has not written yet.
    writing: usize,
    /// Threads waiting on `room` (the writer tells them of progress only when there are).
    waiters: usize,
    /// Waiting for room past this is given up ([`Stdout::give_up_at`]).
    give_up_at: Option<Instant>,
    /// A line that finds no room is given up at once ([`Stdout::wait_no_more`]), and
    /// [`Stdout::finish`] waits for a reader that makes no progress for [`STALL`] no longer
    /// (counted from when this was set, `since`).
    waits_no_more: bool,
    since: Instant,
    /// When the writer last wrote a piece, or was handed bytes with nothing left to write
    /// (a reader is judged from when something waits for it, not from its idle time).
    progress_at: Instant,
    /// Lines not printed, from the first that found no room when it could wait no more.
    given_up: u64,
    /// Stderr was told what was not printed ([`Stdout::finish`]).
    told: bool,
    /// No more lines come: the writer ends once it has written what waits.
    closed: bool,
}

impl State {
    fn pending(&self) -> usize {
        self.waiting.len() + self.writing
    }

    /// Hands `bytes` to the writer at `now`.
    fn hand_over(&mut self, bytes: &[u8], now: Instant) {
        if self.pending() == 0 {
            self.progress_at = now;
        }
        self.waiting.extend_from_slice(bytes);
    }

    /// When [`Stdout::finish`] stops waiting for a reader that takes nothing, once lines
    /// are no longer waited for: [`STALL`] after its last progress, the signal, or the
    /// first of the bytes waiting for it, whichever came last.
    fn stalled_at(&self) -> Option<Instant> {
        (self.waits_no_more).then(|| self.progress_at.max(self.since) + STALL)
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a wait for the writer ended.
enum Waited {
    /// What was waited for happened (or writing failed).
    Done,
    /// Interrupted once ([`Stdout::interrupt`]).
    Interrupted,
    /// Given up: no more waiting ([`Stdout::wait_no_more`], [`Stdout::give_up_at`]).
    GivenUp,
}

impl Stdout {
    /// Starts the writer thread (which the OS may refuse: out of threads).
    pub fn start() -> std::io::Result<Stdout> {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiting: Vec::new(),
                writing: 0,
                waiters: 0,
                give_up_at: None,
                waits_no_more: false,
                since: now,
                progress_at: now,
                given_up: 0,
                told: false,
                closed: false,
            }),
            more: Condvar::new(),
            room: Condvar::new(),
            failed: OnceLock::new(),
            interrupted: AtomicBool::new(false),
            stderr_stuck: AtomicBool::new(false),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || writer.run())?;
        Ok(Stdout { shared })
    }

    /// Hands a line (any bytes) to the writer; waits for room while more than [`BUDGET`]
    /// waits, unless interrupted or given up (counted; every later line then too).
    pub fn push(&self, bytes: &[u8]) {
        let shared = &*self.shared;
        let (mut state, waited) =
            shared.wait(|s| s.pending() == 0 || s.pending() + bytes.len() <= BUDGET);
        match waited {
            _ if shared.failed.get().is_some() => {}
            Waited::GivenUp => state.given_up += 1,
            Waited::Done | Waited::Interrupted => {
                state.hand_over(bytes, Instant::now());
                shared.more.notify_one();
            }
        }
    }

    /// Waits until what was handed over is written, as a line that finds no room waits
    /// (interrupted, given up): for a line on stderr to come after the output before it.
    pub fn drain(&self) {
        drop(self.shared.wait(|s| s.pending() == 0));
    }

    /// Lets a line waiting for room go through now (one line, over the budget), so that the
    /// thread printing it can look at what just happened (a signal).
    pub fn interrupt(&self) {
        self.shared.interrupted.store(true, Ordering::Release);
        let _state = lock(&self.shared.state);
        self.shared.room.notify_all();
    }

    /// From `at` on, a line that finds no room is not printed (see [`Self::push`]), and
    /// [`Self::finish`] waits no longer.
    pub fn give_up_at(&self, at: Instant) {
        let mut state = lock(&self.shared.state);
        state.give_up_at = Some(state.give_up_at.map_or(at, |t| t.min(at)));
        self.shared.room.notify_all();
    }

    /// From now on a line that finds no room is not printed (see [`Self::push`]); what
    /// was printed is still written, until [`Self::finish`] gives up.
    pub fn wait_no_more(&self) {
        let mut state = lock(&self.shared.state);
        if !state.waits_no_more {
            state.waits_no_more = true;
            state.since = Instant::now();
        }
        drop(state);
        self.shared.room.notify_all();
    }

    /// Why stdout could not be written, once a write failed.
    pub fn failure(&self) -> Option<ErrorKind> {
        self.shared.failed.get().copied()
    }

    /// Waits until everything handed over is written (or writing failed, or the give-up
    /// time passed, or, once lines are no longer waited for, the reader took nothing for
    /// [`STALL`]); no more lines come. Says on stderr what was not printed.
    pub fn finish(&self) {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        state.closed = true;
        shared.more.notify_one();
        while shared.failed.get().is_none() && state.pending() > 0 {
            let until = [state.give_up_at, state.stalled_at()]
                .into_iter()
                .flatten()
                .min();
            if until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            state = shared.wait_room(state, until);
        }
        let unwritten = state.pending();
        if shared.failed.get().is_none() && (state.given_up > 0 || unwritten > 0) && !state.told {
            state.told = true;
            let mut lost = Vec::new();
            if unwritten > 0 {
                lost.push(format!("{unwritten} bytes of output not written"));
            }
            match state.given_up {
                0 => {}
                1 => lost.push("the last line not printed".to_owned()),
                n => lost.push(format!("the last {n} lines not printed")),
            }
            let text = format!(
                "wxsocket: standard output was not read in time: {}",
                lost.join(", then ")
            );
            drop(state);
            self.say(&text);
        }
    }

    /// Writes a line on stderr after what was printed before it ([`Self::drain`]). Once
    /// lines are no longer waited for (a signal), the line waits for stderr's reader no
    /// longer than it would for stdout's (until the give-up time, at most [`STALL`], and
    /// at least [`SAY_GRACE`]): a stderr nobody reads (`2>&1 | less` left at its prompt)
    /// does not hold the command after a signal, and once a line was not written in time,
    /// stderr is not written again (the line in the way would come first).
    pub fn say(&self, text: &str) {
        self.drain();
        let shared = &*self.shared;
        if shared.stderr_stuck.load(Ordering::Acquire) {
            return;
        }
        let until = {
            let state = lock(&shared.state);
            let bounded = state.waits_no_more || state.give_up_at.is_some();
            bounded.then(|| {
                let now = Instant::now();
                let until = state.give_up_at.map_or(now + STALL, |t| t.min(now + STALL));
                until.max(now + SAY_GRACE)
            })
        };
        let Some(until) = until else {
            return crate::output::stderr_line(text);
        };
        let (written, wait) = std::sync::mpsc::channel();
        let line = format!("{text}\n");
        let writer = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
                let _ = written.send(());
            });
        let left = until.saturating_duration_since(Instant::now());
        if writer.is_err() || wait.recv_timeout(left).is_err() {
            shared.stderr_stuck.store(true, Ordering::Release);
        }
    }
}

impl Drop for Stdout {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Shared {
    /// Waits until `done` holds (or writing failed), the wait is interrupted, or it is
    /// given up (at once when something was given up already: the output has no holes).
    fn wait(&self, done: impl Fn(&State) -> bool) -> (MutexGuard<'_, State>, Waited) {
        let mut state = lock(&self.state);
        loop {
            if self.failed.get().is_some() || done(&state) {
                return (state, Waited::Done);
            }
            if state.given_up > 0 {
                return (state, Waited::GivenUp);
            }
            if self.interrupted.swap(false, Ordering::AcqRel) {
                return (state, Waited::Interrupted);
            }
            if state.waits_no_more || state.give_up_at.is_some_and(|t| Instant::now() >= t) {
                return (state, Waited::GivenUp);
            }
            let until = state.give_up_at;
            state = self.wait_room(state, until);
        }
    }

    /// Waits on `room` once, at most until `until`.
    fn wait_room<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        state.waiters += 1;
        let mut state = match until {
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                (self.room.wait_timeout(state, left))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => self
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
        state.waiters -= 1;
        state
    }

    /// The writer thread: writes what waits, a batch at a time in pieces (so that a slow
    /// reader's progress shows), with one flush each.
    fn run(&self) {
        let stdout = std::io::stdout();
        let mut batch = Vec::new();
        loop {
            {
                let mut state = lock(&self.state);
                state.writing = 0;
                state.progress_at = Instant::now();
                if state.waiters > 0 {
                    self.room.notify_all();
                }
                while state.waiting.is_empty() && !state.closed {
                    state = self
                        .more
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.waiting.is_empty() {
                    return;
                }
                batch.clear();
                std::mem::swap(&mut batch, &mut state.waiting);
                state.writing = batch.len();
            }
            let mut stdout = stdout.lock();
            let mut rest = &batch[..];
            let mut piece = PIECE;
            let written = loop {
                let n = rest.len().min(piece);
                if n == 0 {
                    break stdout.flush();
                }
                if let Err(e) = stdout.write_all(&rest[..n]) {
                    break Err(e);
                }
                rest = &rest[n..];
                let mut state = lock(&self.state);
                state.writing -= n;
                state.progress_at = Instant::now();
                if state.waits_no_more {
                    piece = SMALL_PIECE;
                }
                if state.waiters > 0 {
                    self.room.notify_all();
                }
            };
            drop(stdout);
            if let Err(e) = written {
                let _ = self.failed.set(e.kind());
                let mut state = lock(&self.state);
                state.waiting = Vec::new();
                state.writing = 0;
                self.room.notify_all();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_since(at: Instant) -> State {
        State {
            waiting: Vec::new(),
            writing: 0,
            waiters: 0,
            give_up_at: None,
            waits_no_more: true,
            since: at,
            progress_at: at,
            given_up: 0,
            told: false,
            closed: false,
        }
    }

    /// A line printed long after the signal and after the writer's last write (a close
    /// that took its whole timeout) is waited for [`STALL`] from when it was printed: the
    /// stall was counted from the writer's last write, so `finish` gave up on the line at
    /// once, said its bytes were not written, and the close line was lost now and then
    /// with stdout a file.
    #[test]
    fn a_reader_is_judged_from_when_bytes_wait_for_it() {
        let signal = Instant::now();
        let printed = signal + Duration::from_secs(10);
        let mut state = idle_since(signal);
        assert_eq!(state.stalled_at(), Some(signal + STALL));
        state.hand_over(b"close\n", printed);
        assert_eq!(state.stalled_at(), Some(printed + STALL));
        // More bytes while some still wait do not move it: the reader is behind.
        state.hand_over(b"more\n", printed + STALL);
        assert_eq!(state.stalled_at(), Some(printed + STALL));
    }
}
