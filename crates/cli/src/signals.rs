//! The signals that stop a command gracefully: `serve` closes its clients with 1001,
//! `connect` closes its connection as `/quit` does.
//!
//! SIGTERM, SIGINT (Ctrl-C) and SIGHUP (the terminal or the ssh session went away) are
//! watched. SIGHUP is not when the command was started with it ignored (`nohup`,
//! `trap '' HUP`): it stays ignored, as the parent asked (Linux: read from
//! `/proc/self/status`; elsewhere it is watched). SIGTERM and SIGINT are watched whatever
//! the command was started with.

/// The watched signals, from a tokio runtime (Ctrl-C alone elsewhere than Unix).
pub struct Signals {
    #[cfg(unix)]
    watched: Vec<(&'static str, tokio::signal::unix::Signal)>,
}

/// The signals watched on Unix: name, kind, and whether one the process was started with
/// ignored stays so.
#[cfg(unix)]
fn watchable() -> [(&'static str, tokio::signal::unix::SignalKind, bool); 3] {
    use tokio::signal::unix::SignalKind;
    [
        ("SIGTERM", SignalKind::terminate(), false),
        ("SIGINT", SignalKind::interrupt(), false),
        ("SIGHUP", SignalKind::hangup(), true),
    ]
}

/// Whether this process was started with `signal` ignored; `false` where the system does
/// not say.
#[cfg(unix)]
fn ignored_at_start(signal: tokio::signal::unix::SignalKind) -> bool {
    let bit = 1u64 << (signal.as_raw_value() - 1);
    ignored_mask() & bit != 0
}

/// The `SigIgn` mask of this process (bit `n - 1` for signal `n`).
#[cfg(unix)]
fn ignored_mask() -> u64 {
    #[cfg(target_os = "linux")]
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        return parse_ignored(&status);
    }
    0
}

/// The `SigIgn` mask of a `/proc/<pid>/status` text (0 when it holds none).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_ignored(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0)
}

impl Signals {
    /// Installs the handlers (inside a runtime with its IO driver): from now on these
    /// signals no longer end the process. Call it before anything else in the process
    /// ignores a signal: what is ignored now is taken for the parent's choice.
    pub fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            let mut watched = Vec::new();
            for (name, kind, ignore_stays) in watchable() {
                if !(ignore_stays && ignored_at_start(kind)) {
                    watched.push((name, tokio::signal::unix::signal(kind)?));
                }
            }
            Ok(Signals { watched })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal; returns its name.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            std::future::poll_fn(|cx| {
                for (name, signal) in &mut self.watched {
                    if signal.poll_recv(cx).is_ready() {
                        return std::task::Poll::Ready(*name);
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// The exit status of a process that signal `name` ended: 128 and the signal's number, as
/// a shell reports it.
pub fn exit_status(name: &str) -> u8 {
    match name {
        "SIGTERM" => 128 + 15,
        "SIGHUP" => 128 + 1,
        _ => 128 + 2,
    }
}

/// Watches for the signals on a thread of its own, handing each to `deliver` until it
/// returns `false`. The handlers are in place when this returns.
pub fn watch(deliver: impl FnMut(&'static str) -> bool + Send + 'static) -> std::io::Result<()> {
    // tokio makes its signal pipe while it builds the runtime, and panics when the OS
    // refuses it (out of descriptors): that refusal is an error like the others.
    let runtime = crate::backend::quietly(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
    })??;
    let mut signals = {
        let _entered = runtime.enter();
        Signals::new()?
    };
    let mut deliver = deliver;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move { while deliver(signals.next().await) {} });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ignored_mask_is_read_from_the_status_text() {
        let status = "Name:\twxsocket\nSigPnd:\t0000000000000000\nSigIgn:\t0000000000001003\n";
        let ignored = parse_ignored(status);
        assert_eq!(ignored & 1, 1, "SIGHUP");
        assert_eq!(ignored & 2, 2, "SIGINT");
        assert_eq!(ignored & (1 << 14), 0, "SIGTERM");
        assert_eq!(ignored & (1 << 12), 1 << 12, "SIGPIPE");
        assert_eq!(parse_ignored("Name:\tx\n"), 0);
    }
}
