//! Where the daemons' work runs. filtermail-transport runs on one thread:
//! on the two shared cores of a small relay, handing each delivery between
//! worker threads cost more than the delivering (docs/BENCHMARKS.md). The
//! filters keep a worker per core (their DKIM checks use both), and what
//! would hold a worker long, parsing or hashing a large message, goes to
//! the blocking pool.

use std::future::Future;

use tokio::task::JoinError;
use tracing::Instrument as _;

/// Messages up to this size are examined in place; a chat message is a
/// few KiB, a 30 MiB attachment would stall the sessions sharing its
/// thread for a while.
pub const INLINE_WORK_BYTES: usize = 256 * 1024;

/// A single-threaded tokio runtime with I/O and timers.
pub fn single_threaded_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs `work` (CPU work on a message of `size` bytes) here when the
/// message is small, else on the blocking pool.
pub async fn cpu_work<R: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, JoinError> {
    if size <= INLINE_WORK_BYTES {
        Ok(work())
    } else {
        // Its log lines stay in the session's span.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work)).await
    }
}

/// As [`cpu_work`] for work that also waits (a DKIM check fetches keys):
/// a large message's runs on a blocking-pool thread, whose waits the
/// runtime's own thread still drives.
pub async fn cpu_work_async<F>(size: usize, work: F) -> Result<F::Output, JoinError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if size <= INLINE_WORK_BYTES {
        Ok(work.await)
    } else {
        let handle = tokio::runtime::Handle::current();
        let work = work.instrument(tracing::Span::current());
        tokio::task::spawn_blocking(move || handle.block_on(work)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn large_work_leaves_the_runtime_thread_free() {
        let runtime = single_threaded_runtime().expect("runtime");
        runtime.block_on(async {
            let here = std::thread::current().id();
            let small = cpu_work(10, move || std::thread::current().id()).await;
            assert_eq!(small.expect("small work"), here);
            let large = cpu_work(INLINE_WORK_BYTES + 1, move || std::thread::current().id());
            assert_ne!(large.await.expect("large work"), here);
            // The waiting half of large work is driven from the blocking
            // thread while the runtime's thread goes on.
            let slept = cpu_work_async(INLINE_WORK_BYTES + 1, async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                std::thread::current().id()
            });
            assert_ne!(slept.await.expect("large async work"), here);
        });
    }
}
