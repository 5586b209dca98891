//! The accept loop every daemon runs: bounded concurrency (extra clients
//! wait in the listen backlog), accept errors such as running out of
//! descriptors logged and retried rather than fatal, and a graceful stop.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause after a failed accept so a persistent error does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A listening socket.
pub trait Acceptor {
    type Stream: Send + 'static;
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    async fn accept_stream(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections until `shutdown` completes and runs `handle` for
/// each, at most `max_connections` at once. On shutdown the token passed
/// to each connection is cancelled and running connections get `grace`
/// to finish.
pub async fn serve_connections<A, F, Fut>(
    listener: A,
    max_connections: usize,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
    handle: F,
) where
    A: Acceptor,
    F: Fn(A::Stream, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
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
            accepted = listener.accept_stream() => match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::error!(%error, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let connection = handle(stream, stop.clone());
        tracker.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("connections still busy at shutdown");
    }
}
