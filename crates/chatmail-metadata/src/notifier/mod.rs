//! The push notifier. Every notification is first stored in the
//! persistent queue (flushed to disk before the dict commit is answered),
//! then posted; it stays on disk until the service accepted it (2xx),
//! declared the token dead (410, and the token is removed from the
//! account), refused it for good (another 4xx, logged), or its retries
//! (network errors, 429, 5xx) ran past the deadline. So a crash or
//! restart loses nothing: the queue is replayed on start.
//!
//! Retries wait `base`, then 8 times longer each time (8 s, 64 s, 512 s,
//! ... by default), and stop when the next attempt would come later than
//! the deadline (5 hours) after the notification was first queued.
//!
//! Each account's devices get at most max_user_notifications_per_minute
//! pushes; more are folded into one sent later (see [`pace`]).

mod client;
mod pace;
mod queue;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_config::Config;
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::time::DelayQueue;

pub use client::{Answer, PushClient};
use pace::{Decision, Pace};
pub use queue::{Pending, QUEUE_DIR, Queue};

use crate::metrics::{Dropped, MetadataMetrics};
use crate::store::TokenStore;

/// Notifications posted at once; more wait for a slot.
const MAX_IN_FLIGHT: usize = 512;
/// New notifications buffered for the scheduler; a full buffer makes the
/// dict commit that queues more wait.
const NEW_BUFFER: usize = 4096;
/// How often accounts at rest are forgotten by the pace.
const PACE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// A token shortened for logs: tokens are credentials of the user's
/// device with the push service.
#[must_use]
pub fn redact(token: &str) -> String {
    let prefix: String = token.chars().take(6).collect();
    format!("{prefix}…")
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub deadline: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, after `attempt` failures.
    #[must_use]
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 8u32.saturating_pow(failures.saturating_sub(1));
        self.base.saturating_mul(factor)
    }
}

/// One queued notification, as the scheduler tracks it: only the queue
/// file's name, so that many pending notifications cost little memory.
#[derive(Debug)]
struct Job {
    id: String,
    /// When it was first queued, in milliseconds since the epoch.
    start_ms: i64,
    failures: u32,
    /// The account whose folded push this is (see [`Pace`]).
    scheduled_for: Option<String>,
}

pub struct Notifier {
    queue: Queue,
    /// New jobs and how long each waits before its first attempt.
    new_jobs: mpsc::Sender<(Job, Duration)>,
    pace: Arc<Pace>,
    metrics: MetadataMetrics,
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

impl Notifier {
    /// Opens the queue, replays what it holds and starts sending. Must
    /// be called within a tokio runtime.
    pub fn start(
        config: &Config,
        store: Arc<TokenStore>,
        metrics: MetadataMetrics,
    ) -> anyhow::Result<Self> {
        let queue = Queue::open(&config.mailboxes_dir)?;
        let client = PushClient::new(
            &config.notification_url,
            config.notification_ca_file.as_deref(),
        )?;
        let retry = RetryPolicy {
            base: config.notification_retry_base,
            deadline: config.notification_retry_deadline,
        };
        let recovered = recover(&queue)?;
        if !recovered.is_empty() {
            tracing::info!(count = recovered.len(), "resending pending notifications");
        }
        metrics
            .queue_length
            .inc_by(i64::try_from(recovered.len()).unwrap_or(i64::MAX));
        let (new_jobs, receiver) = mpsc::channel(NEW_BUFFER);
        let pace = Arc::new(Pace::new(config.max_user_notifications_per_minute));
        let scheduler = Scheduler {
            queue: queue.clone(),
            client: Arc::new(client),
            store,
            retry,
            pace: Arc::clone(&pace),
            metrics: metrics.clone(),
        };
        let sweeper = Arc::downgrade(&pace);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(PACE_SWEEP_INTERVAL);
            loop {
                interval.tick().await;
                let Some(pace) = sweeper.upgrade() else { break };
                pace.sweep();
            }
        });
        let running = tokio::spawn(scheduler.run(receiver, recovered));
        tokio::spawn(supervise(running, new_jobs.downgrade(), || {
            // Notifications would pile up on disk unsent. A restart (systemd
            // restarts the unit) replays the queue.
            tracing::error!("the push notifier stopped unexpectedly; exiting to be restarted");
            std::process::exit(70);
        }));
        Ok(Self {
            queue,
            new_jobs,
            pace,
            metrics,
        })
    }

    /// Queues one notification per token of `addr`: on disk when this
    /// returns. Unless the account's pace folds it into one already
    /// scheduled.
    pub async fn notify(&self, addr: &str, tokens: Vec<String>) -> io::Result<()> {
        let (delay, scheduled_for) = match self.pace.decide(addr) {
            Decision::Now => (Duration::ZERO, None),
            Decision::Later(wait) => {
                self.metrics.notifications_deferred.inc();
                (wait, Some(addr.to_owned()))
            }
            Decision::Folded => {
                self.metrics.notifications_folded.inc();
                return Ok(());
            }
        };
        let start_ms = now_ms();
        let pending: Vec<Pending> = tokens
            .into_iter()
            .map(|token| Pending {
                addr: addr.to_owned(),
                start_ms,
                token,
            })
            .collect();
        let queue = self.queue.clone();
        let ids = tokio::task::spawn_blocking(move || queue.store_all(&pending))
            .await
            .map_err(io::Error::other)??;
        let queued = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        self.metrics.notifications_queued.inc_by(queued);
        self.metrics
            .queue_length
            .inc_by(i64::try_from(queued).unwrap_or(i64::MAX));
        for id in ids {
            let job = Job {
                id,
                start_ms,
                failures: 0,
                scheduled_for: scheduled_for.clone(),
            };
            if self.new_jobs.send((job, delay)).await.is_err() {
                // The scheduler is gone (shutting down); the file stays
                // and is sent after the restart.
                tracing::warn!("notifier stopped; notification kept for the next start");
            }
        }
        Ok(())
    }
}

/// Waits for the scheduler to end; if it ends (returns or panics) while
/// the notifier still takes notifications, calls `died`.
async fn supervise<T>(
    running: tokio::task::JoinHandle<()>,
    notifier: mpsc::WeakSender<T>,
    died: impl FnOnce(),
) {
    let ended = running.await;
    if notifier.upgrade().is_some() {
        if let Err(error) = ended {
            tracing::error!(%error, "the push scheduler panicked");
        }
        died();
    }
}

/// The jobs for what the queue holds after a restart.
fn recover(queue: &Queue) -> io::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for id in queue.recover()? {
        match queue.load(&id) {
            Ok(Some(pending)) => jobs.push(Job {
                id,
                start_ms: pending.start_ms,
                failures: 0,
                scheduled_for: None,
            }),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, id, "removing an unreadable queue file");
                queue.remove(&id)?;
            }
        }
    }
    Ok(jobs)
}

struct Scheduler {
    queue: Queue,
    client: Arc<PushClient>,
    store: Arc<TokenStore>,
    retry: RetryPolicy,
    pace: Arc<Pace>,
    metrics: MetadataMetrics,
}

/// How one attempt ended.
enum Done {
    Finished,
    Failed(String),
}

impl Scheduler {
    async fn run(self, mut new_jobs: mpsc::Receiver<(Job, Duration)>, recovered: Vec<Job>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut waiting: DelayQueue<Job> = DelayQueue::new();
        let (results, mut finished) = mpsc::unbounded_channel::<(Job, Done)>();
        for job in recovered {
            this.schedule(&mut waiting, job, Duration::ZERO);
        }
        loop {
            tokio::select! {
                Some((job, delay)) = new_jobs.recv() => {
                    waiting.insert(job, delay);
                }
                Some(expired) = waiting.next() => {
                    let mut job = expired.into_inner();
                    if let Some(account) = job.scheduled_for.take() {
                        this.pace.sending_scheduled(&account);
                    }
                    let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                        break;
                    };
                    let this = Arc::clone(&this);
                    let results = results.clone();
                    tokio::spawn(async move {
                        // A panic in one attempt is a failed attempt: the
                        // notification stays scheduled.
                        let (id, start_ms, failures) = (job.id.clone(), job.start_ms, job.failures);
                        let attempt = tokio::spawn(async move {
                            let done = this.attempt(&job).await;
                            (job, done)
                        });
                        let (job, done) = attempt.await.unwrap_or_else(|error| {
                            let job = Job { id, start_ms, failures, scheduled_for: None };
                            (job, Done::Failed(format!("attempt panicked: {error}")))
                        });
                        drop(slot);
                        let _ = results.send((job, done));
                    });
                }
                Some((mut job, done)) = finished.recv() => match done {
                    Done::Failed(reason) => {
                        job.failures += 1;
                        let delay = this.retry.delay(job.failures);
                        tracing::debug!(%reason, failures = job.failures, "notification failed; will retry");
                        this.schedule(&mut waiting, job, delay);
                    }
                    Done::Finished => {
                        this.metrics.queue_length.dec();
                    }
                },
                else => break,
            }
        }
    }

    /// Waits `delay` before the next attempt, or drops the notification
    /// when that would pass its deadline.
    fn schedule(&self, waiting: &mut DelayQueue<Job>, job: Job, delay: Duration) {
        let next = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let deadline = job
            .start_ms
            .saturating_add(i64::try_from(self.retry.deadline.as_millis()).unwrap_or(i64::MAX));
        if next > deadline {
            tracing::warn!(
                failures = job.failures,
                "giving up a push notification: its retries ran past the deadline"
            );
            self.metrics.dropped(Dropped::Deadline);
            self.metrics.queue_length.dec();
            // Not awaited: the scheduler loop must not wait on the disk.
            let queue = self.queue.clone();
            tokio::task::spawn_blocking(move || remove_logged(&queue, &job.id));
            return;
        }
        if job.failures > 0 {
            self.metrics.notifications_retried.inc();
        }
        waiting.insert(job, delay);
    }

    async fn remove(&self, id: &str) {
        let queue = self.queue.clone();
        let id = id.to_owned();
        let _ = tokio::task::spawn_blocking(move || remove_logged(&queue, &id)).await;
    }

    async fn attempt(&self, job: &Job) -> Done {
        let queue = self.queue.clone();
        let id = job.id.clone();
        let loaded = tokio::task::spawn_blocking(move || queue.load(&id)).await;
        let pending = match loaded {
            Ok(Ok(Some(pending))) => pending,
            Ok(Ok(None)) => return Done::Finished,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read a queue file; dropping it");
                self.metrics.dropped(Dropped::Unreadable);
                self.remove(&job.id).await;
                return Done::Finished;
            }
            Err(error) => return Done::Failed(error.to_string()),
        };
        let started = Instant::now();
        let answer = self.client.send(&pending.token).await;
        self.metrics.pushed_in(started.elapsed());
        match answer {
            Answer::Delivered => {
                tracing::debug!(token = %redact(&pending.token), "notification delivered");
                self.metrics.notifications_sent.inc();
            }
            Answer::TokenGone => {
                tracing::info!(token = %redact(&pending.token), "device token expired; removing it");
                let store = Arc::clone(&self.store);
                let removed = tokio::task::spawn_blocking(move || {
                    store.remove(&pending.addr, &pending.token, now_secs())
                })
                .await;
                if !matches!(removed, Ok(Ok(_))) {
                    return Done::Failed("cannot remove the expired token".into());
                }
                self.metrics.dead_tokens_removed.inc();
            }
            Answer::Refused(reason) => {
                tracing::warn!(
                    token = %redact(&pending.token),
                    %reason,
                    "the push service refused a notification; dropping it"
                );
                self.metrics.dropped(Dropped::Refused);
            }
            Answer::Retry(reason) => return Done::Failed(reason),
        }
        self.remove(&job.id).await;
        Done::Finished
    }
}

fn remove_logged(queue: &Queue, id: &str) {
    if let Err(error) = queue.remove(id) {
        tracing::error!(%error, "cannot remove a queue file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_eight() {
        let retry = RetryPolicy {
            base: Duration::from_secs(8),
            deadline: Duration::from_secs(5 * 3600),
        };
        let delays: Vec<u64> = (1..=4).map(|n| retry.delay(n).as_secs()).collect();
        assert_eq!(delays, [8, 64, 512, 4096]);
        assert_eq!(retry.delay(40), Duration::MAX.min(retry.delay(40)));
    }

    #[tokio::test]
    async fn a_scheduler_that_dies_is_noticed() {
        let (sender, _receiver) = mpsc::channel::<()>(1);
        let (died, noticed) = tokio::sync::oneshot::channel();
        let panicking = tokio::spawn(async { panic!("a bug") });
        supervise(panicking, sender.downgrade(), move || {
            let _ = died.send(());
        })
        .await;
        assert!(noticed.await.is_ok(), "a panic is noticed");

        // Ending after the notifier is gone is a shutdown, not a death.
        let (sender, _receiver) = mpsc::channel::<()>(1);
        let weak = sender.downgrade();
        drop(sender);
        let (died, noticed) = tokio::sync::oneshot::channel();
        supervise(tokio::spawn(async {}), weak, move || {
            let _ = died.send(());
        })
        .await;
        assert!(noticed.await.is_err(), "no death at shutdown");
    }

    #[test]
    fn tokens_are_shortened() {
        assert_eq!(redact("abcdefghijkl"), "abcdef…");
        assert_eq!(redact("ab"), "ab…");
    }
}
