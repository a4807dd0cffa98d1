//! The signals that stop a command gracefully: `serve` closes its clients with 1001,
//! `connect` closes its connection as `/quit` does.

/// SIGTERM and SIGINT (Ctrl-C elsewhere than Unix), watched from a tokio runtime.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a runtime with its IO driver): from now on these
    /// signals no longer end the process.
    pub fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal; returns its name.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
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
        _ => 128 + 2,
    }
}

/// Watches for the signals on a thread of its own, handing each to `deliver` until it
/// returns `false`. The handlers are in place when this returns.
pub fn watch(deliver: impl FnMut(&'static str) -> bool + Send + 'static) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
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
