//! Accepting SMTP/LMTP connections on a TCP listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::session::{SessionConfig, SmtpHandler, run_session};

const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
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
    let permits = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors and the like: never fatal.
                    tracing::error!(%error, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let config = Arc::clone(&config);
        tracker.spawn(async move {
            run_session(stream, handler.as_ref(), &config).await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions still running at shutdown");
    }
}
