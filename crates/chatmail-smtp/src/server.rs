//! Accepting SMTP/LMTP connections on a TCP listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use chatmail_metrics::GaugeHold;

use crate::session::{SessionConfig, SmtpHandler, run_session};

const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves sessions on `listener` until `shutdown` completes, with at most
/// `max_connections` at once (more wait in the listen backlog), then
/// lets running sessions finish for a grace period.
pub async fn serve<H: SmtpHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: SessionConfig,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let config = Arc::new(config);
    chatmail_daemon::serve_connections(
        listener,
        max_connections,
        SHUTDOWN_GRACE,
        shutdown,
        |stream, _stop| {
            let handler = Arc::clone(&handler);
            let config = Arc::clone(&config);
            async move {
                let _open = GaugeHold::new(&config.counters.connections_open);
                run_session(stream, handler.as_ref(), &config).await;
            }
        },
    )
    .await;
}
