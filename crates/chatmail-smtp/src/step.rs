//! Time limits for reads, on one timer per session or connection that is
//! moved for each read rather than made anew: a new timer clones the
//! runtime's handle, and one that waits (as the read of the next command
//! or reply does) is registered with the runtime's timer wheel and taken
//! out again, several times for every message. Reusing it costs the
//! incoming filter about 1.5 us a message less (docs/BENCHMARKS.md).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A timer to reuse for [`within`]; it fires only when reset.
pub fn step_timer() -> Sleep {
    tokio::time::sleep(Duration::from_secs(3600))
}

/// `step`'s output, or `None` when `limit` passes first. `timer` is moved
/// to the new deadline (which costs least when that is later than its
/// last one, as it is for the steps of one kind).
pub async fn within<F: Future>(
    mut timer: Pin<&mut Sleep>,
    limit: Duration,
    step: F,
) -> Option<F::Output> {
    timer.as_mut().reset(Instant::now() + limit);
    tokio::select! {
        biased;
        output = step => Some(output),
        () = timer => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{step_timer, within};

    #[tokio::test(start_paused = true)]
    async fn each_step_gets_its_own_limit() {
        let timer = step_timer();
        tokio::pin!(timer);
        let quick = within(timer.as_mut(), Duration::from_secs(5), async { 7 }).await;
        assert_eq!(quick, Some(7));
        // A step after a wait longer than the first limit still has its
        // whole limit.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let slow = tokio::time::sleep(Duration::from_secs(4));
        assert_eq!(
            within(timer.as_mut(), Duration::from_secs(5), slow).await,
            Some(())
        );
        let started = tokio::time::Instant::now();
        let stuck = std::future::pending::<()>();
        assert_eq!(
            within(timer.as_mut(), Duration::from_secs(5), stuck).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // A shorter limit after a longer one.
        let stuck = std::future::pending::<()>();
        assert_eq!(
            within(timer.as_mut(), Duration::from_secs(1), stuck).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }
}
