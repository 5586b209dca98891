//! Process setup every chatmail daemon shares.

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
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; running until killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
    }
    tracing::info!("shutting down");
}

mod accept;
mod budget;
mod listen;
mod runtime;

pub use accept::{Acceptor, serve_connections};
pub use budget::{MessageBudget, Reservation};
pub use listen::bind_tcp;
pub use runtime::{INLINE_WORK_BYTES, cpu_work, cpu_work_async, single_threaded_runtime};
