//! Standard output written on a thread of its own, so that a reader that stops reading (a
//! pager left open, a suspended `| less`, a stalled pipe) cannot stop the command: its
//! signals, deadlines and close handshake go on while the output waits.
//!
//! What is waiting is bounded ([`BUDGET`] bytes; a larger line waits alone): a line that
//! finds no room waits for the writer, as a write to a full pipe would, until the wait is
//! interrupted ([`Stdout::interrupt`], the signal thread), lines are no longer waited for
//! ([`Stdout::wait_no_more`], a signal) or the give-up time passes ([`Stdout::give_up_at`],
//! the end of a signal's quit). What is given up is counted and said on
//! stderr when the command ends ([`Stdout::finish`]), never dropped without a word.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

/// The most bytes waiting for the writer thread (written or not yet taken), unless one line
/// alone is larger.
pub const BUDGET: usize = 1 << 20;

/// The writer writes at most this much at a time, and says so to those waiting: a pipe's
/// atomic write (`PIPE_BUF`), so that a reader taking 10 KB/s shows progress well within
/// [`STALL`].
const PIECE: usize = 4 << 10;

/// How long [`Stdout::finish`] waits for a reader that makes no progress, once lines are no
/// longer waited for ([`Stdout::wait_no_more`]).
pub const STALL: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Lines wait here for room; [`Stdout::finish`] for the last bytes to be written.
    room: Condvar,
    /// The first error writing (the reader went away, the disk is full): from then on
    /// nothing more is written.
    failed: OnceLock<ErrorKind>,
    /// A line waiting for room stops waiting once (see [`Stdout::interrupt`]).
    interrupted: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Bytes not yet taken by the writer.
    waiting: Vec<u8>,
    /// Bytes the writer took and is writing.
    writing: usize,
    /// Waiting for room past this is given up ([`Stdout::give_up_at`]).
    give_up_at: Option<Instant>,
    /// A line that finds no room is given up at once ([`Stdout::wait_no_more`]), and
    /// [`Stdout::finish`] waits for a reader that makes no progress for [`STALL`] no longer
    /// (counted from when this was set, `since`).
    waits_no_more: bool,
    since: Instant,
    /// When the writer last wrote a piece.
    progress_at: Instant,
    /// Lines not printed: stdout was still full at the give-up time.
    given_up: u64,
    /// Stderr was told what was not printed ([`Stdout::finish`]).
    told: bool,
    /// No more lines come: the writer ends once it has written what waits.
    closed: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stdout {
    /// Starts the writer thread.
    pub fn start() -> Stdout {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiting: Vec::new(),
                writing: 0,
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
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || writer.run())
            .expect("cannot start the stdout thread");
        Stdout { shared }
    }

    /// Hands a line (any bytes) to the writer; waits for room while more than [`BUDGET`]
    /// waits, unless interrupted or given up (counted, and said on stderr once).
    pub fn push(&self, bytes: &[u8]) {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        loop {
            if shared.failed.get().is_some() {
                return;
            }
            let pending = state.waiting.len() + state.writing;
            if pending == 0 || pending + bytes.len() <= BUDGET {
                break;
            }
            if shared.interrupted.swap(false, Ordering::AcqRel) {
                break;
            }
            match state.give_up_at {
                _ if state.waits_no_more => {
                    state.given_up += 1;
                    return;
                }
                Some(at) if Instant::now() >= at => {
                    state.given_up += 1;
                    return;
                }
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    state = (shared.room.wait_timeout(state, left))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    state = shared
                        .room
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        }
        state.waiting.extend_from_slice(bytes);
        shared.more.notify_one();
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
        state.waits_no_more = true;
        state.since = Instant::now();
        drop(state);
        self.shared.room.notify_all();
    }

    /// Why stdout could not be written, once a write failed.
    pub fn failure(&self) -> Option<ErrorKind> {
        self.shared.failed.get().copied()
    }

    /// Waits until everything handed over is written (or writing failed, or the give-up
    /// time passed); no more lines come.
    pub fn finish(&self) {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        state.closed = true;
        shared.more.notify_one();
        while shared.failed.get().is_none() && state.waiting.len() + state.writing > 0 {
            // Once lines are no longer waited for, neither is a reader that stopped reading.
            let stalled = (state.waits_no_more).then(|| state.progress_at.max(state.since) + STALL);
            match [state.give_up_at, stalled].into_iter().flatten().min() {
                Some(at) if Instant::now() >= at => break,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    state = (shared.room.wait_timeout(state, left))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    state = shared
                        .room
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        }
        let unwritten = state.waiting.len() + state.writing;
        if shared.failed.get().is_none() && (state.given_up > 0 || unwritten > 0) && !state.told {
            state.told = true;
            let lines = match state.given_up {
                0 => String::new(),
                1 => "1 line not printed, ".to_owned(),
                n => format!("{n} lines not printed, "),
            };
            crate::output::stderr_line(&format!(
                "wxsocket: standard output was not read in time: {lines}{unwritten} bytes \
                 of the output before them not written"
            ));
        }
    }
}

impl Drop for Stdout {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Shared {
    /// The writer thread: writes what waits, a batch at a time, with one flush each.
    fn run(&self) {
        let stdout = std::io::stdout();
        let mut batch = Vec::new();
        loop {
            {
                let mut state = lock(&self.state);
                state.writing = 0;
                self.room.notify_all();
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
            // In pieces, so that those waiting see the progress of a slow reader.
            let mut stdout = stdout.lock();
            let written = batch.chunks(PIECE).try_for_each(|piece| {
                stdout.write_all(piece)?;
                let mut state = lock(&self.state);
                state.writing -= piece.len();
                state.progress_at = Instant::now();
                self.room.notify_all();
                Ok(())
            });
            let written = written.and_then(|()| stdout.flush());
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
