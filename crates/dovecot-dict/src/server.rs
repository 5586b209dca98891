//! The accept loop and the per-connection read/handle/write loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::UnixListener;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::handler::DictHandler;
use crate::session::{Outcome, Session, SessionLimits};

/// Bounds that keep one server's memory and descriptors finite.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Dovecot's own client limit for a command line is 64 KiB.
    pub max_line: usize,
    /// Connections beyond this wait in the listen backlog.
    pub max_connections: usize,
    /// An idle connection is closed after this; Dovecot reconnects.
    pub idle_timeout: Duration,
    /// A client that does not read its replies for this long is dropped.
    pub write_timeout: Duration,
    /// How long shutdown waits for connections to finish their command.
    pub shutdown_grace: Duration,
    pub session: SessionLimits,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_line: 64 * 1024,
            max_connections: 16_384,
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            session: SessionLimits::default(),
        }
    }
}

/// Serves dict clients on `listener` until `shutdown` completes, then lets
/// open connections finish the command they are on.
pub async fn serve<H: DictHandler>(
    listener: UnixListener,
    handler: Arc<H>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    chatmail_daemon::serve_connections(
        listener,
        limits.max_connections,
        limits.shutdown_grace,
        shutdown,
        |stream, stop| {
            let handler = Arc::clone(&handler);
            async move { serve_connection(stream, handler.as_ref(), &limits, stop).await }
        },
    )
    .await;
}

/// Serves one client until it disconnects, misbehaves, idles out or `stop`
/// is cancelled. Never panics on input.
pub async fn serve_connection<S, H>(
    stream: S,
    handler: &H,
    limits: &ServerLimits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite,
    H: DictHandler,
{
    let (reader, writer) = tokio::io::split(stream);
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), limits.max_line);
    let mut lines = FramedRead::new(reader, codec);
    let mut writer = BufWriter::new(writer);
    let mut session = Session::new(limits.session);
    let mut out = String::new();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            next = tokio::time::timeout(limits.idle_timeout, lines.next()) => next,
        };
        let line: Bytes = match next {
            Err(_) => {
                tracing::debug!("closing idle dict connection");
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded))) => {
                tracing::warn!(
                    max = limits.max_line,
                    "dict client sent an over-long line; closing connection"
                );
                break;
            }
            Ok(Some(Err(AnyDelimiterCodecError::Io(error)))) => {
                tracing::debug!(%error, "dict connection read failed");
                break;
            }
        };
        let outcome = session.handle_line(handler, &line, &mut out).await;
        // Pipelined commands are answered in one write.
        let more_buffered = lines.read_buffer().contains(&b'\n');
        let closing = matches!(outcome, Outcome::Close(_));
        if !out.is_empty() && (!more_buffered || closing) {
            if !flush(&mut writer, &out, limits.write_timeout).await {
                return;
            }
            out.clear();
        }
        if let Outcome::Close(reason) = outcome {
            tracing::warn!(dict = session.dict_name(), %reason, "closing dict connection");
            return;
        }
    }
    if !out.is_empty() {
        flush(&mut writer, &out, limits.write_timeout).await;
    }
}

async fn flush<W: AsyncWrite + Unpin>(writer: &mut W, out: &str, limit: Duration) -> bool {
    let write = async {
        writer.write_all(out.as_bytes()).await?;
        writer.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "dict connection write failed");
            false
        }
        Err(_) => {
            tracing::warn!("dict client does not read its replies; closing connection");
            false
        }
    }
}
