//! What every chatmail daemon shares: process setup (logging, shutdown
//! signals, listeners), message memory budgets and per-account rate limits.

use std::io::{self, IsTerminal as _};

/// Logs to stderr (journald adds time stamps) at the level set by
/// `RUST_LOG`, `info` by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        // Colour codes only for a person at a terminal, never in the
        // journal or a log file.
        .with_ansi(io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
}

/// Completes on SIGTERM (systemd stop) or SIGINT.
pub async fn shutdown_signal() {
    match ShutdownSignals::catch() {
        Ok(mut signals) => signals.received().await,
        Err(err) => {
            tracing::error!("cannot install signal handlers ({err}); running until killed");
            std::future::pending().await
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment of [`ShutdownSignals::catch`]:
/// one that arrives before anything waits for it is kept for
/// [`ShutdownSignals::received`] instead of killing the process, which
/// would leave whatever it started running.
pub struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Must run inside a Tokio runtime with its I/O driver enabled.
    pub fn catch() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes when either signal has come, now or since `catch`.
    pub async fn received(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    }
}

mod accept;
mod budget;
mod listen;
mod rate;
mod runtime;

pub use accept::{Acceptor, serve_connections};
pub use budget::{MessageBudget, Reservation};
pub use listen::bind_tcp;
pub use rate::AccountRateLimiter;
pub use runtime::{INLINE_WORK_BYTES, cpu_work, cpu_work_async, single_threaded_runtime};
