//! What chatmail-metadata counts: device tokens registered, and each
//! notification from queued to sent, retried or dropped.

use std::time::Duration;

use chatmail_metrics::latency_histogram;
use chatmail_metrics::prometheus_client::metrics::counter::Counter;
use chatmail_metrics::prometheus_client::metrics::family::Family;
use chatmail_metrics::prometheus_client::metrics::gauge::Gauge;
use chatmail_metrics::prometheus_client::metrics::histogram::Histogram;
use chatmail_metrics::prometheus_client::registry::Registry;

/// Why a notification was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The push service refused it for good (a 4xx other than 410).
    Refused,
    /// Its retries ran past notification_retry_deadline.
    Deadline,
    /// Its queue file could not be read.
    Unreadable,
}

impl Dropped {
    const ALL: [Self; 3] = [Self::Refused, Self::Deadline, Self::Unreadable];

    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Deadline => "deadline",
            Self::Unreadable => "unreadable",
        }
    }
}

/// Clones share the counts; until [`MetadataMetrics::register`] they
/// count without being served.
#[derive(Debug, Clone)]
pub struct MetadataMetrics {
    pub tokens_registered: Counter,
    pub notifications_queued: Counter,
    pub notifications_sent: Counter,
    pub notifications_retried: Counter,
    /// Pushes held back by the account's pace, sent later as one.
    pub notifications_deferred: Counter,
    /// New messages whose push was folded into one already scheduled.
    pub notifications_folded: Counter,
    dropped: Family<[(&'static str, &'static str); 1], Counter>,
    pub dead_tokens_removed: Counter,
    /// Notifications on disk, not yet sent or given up.
    pub queue_length: Gauge,
    pub push_seconds: Histogram,
}

impl Default for MetadataMetrics {
    fn default() -> Self {
        let metrics = Self {
            tokens_registered: Counter::default(),
            notifications_queued: Counter::default(),
            notifications_sent: Counter::default(),
            notifications_retried: Counter::default(),
            notifications_deferred: Counter::default(),
            notifications_folded: Counter::default(),
            dropped: Family::default(),
            dead_tokens_removed: Counter::default(),
            queue_length: Gauge::default(),
            push_seconds: latency_histogram(),
        };
        for reason in Dropped::ALL {
            let _ = metrics.dropped.get_or_create(&[("reason", reason.label())]);
        }
        metrics
    }
}

impl MetadataMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("chatmail_metadata");
        registry.register(
            "tokens_registered",
            "Device tokens set by clients (new or renewed)",
            self.tokens_registered.clone(),
        );
        registry.register(
            "notifications_queued",
            "Push notifications queued, one per device token of a new message's recipient",
            self.notifications_queued.clone(),
        );
        registry.register(
            "notifications_sent",
            "Push notifications the push service accepted",
            self.notifications_sent.clone(),
        );
        registry.register(
            "notifications_retried",
            "Failed push attempts scheduled again",
            self.notifications_retried.clone(),
        );
        registry.register(
            "notifications_deferred",
            "New messages whose pushes wait for the account's allowance (max_user_notifications_per_minute)",
            self.notifications_deferred.clone(),
        );
        registry.register(
            "notifications_folded",
            "New messages that got no push of their own: one already scheduled for the account covers them",
            self.notifications_folded.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Push notifications given up, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "dead_tokens_removed",
            "Device tokens removed because the push service said they expired",
            self.dead_tokens_removed.clone(),
        );
        registry.register(
            "queue_length",
            "Push notifications waiting on disk",
            self.queue_length.clone(),
        );
        registry.register(
            "push_seconds",
            "Time of one request to the push service",
            self.push_seconds.clone(),
        );
    }

    pub fn dropped(&self, reason: Dropped) {
        self.dropped
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    /// The count of notifications dropped for `reason`.
    #[must_use]
    pub fn dropped_for(&self, reason: Dropped) -> u64 {
        self.dropped
            .get_or_create(&[("reason", reason.label())])
            .get()
    }

    pub fn pushed_in(&self, elapsed: Duration) {
        self.push_seconds.observe(elapsed.as_secs_f64());
    }
}
