//! What the session engine counts itself: the connections it serves and
//! the messages it refuses before a handler sees them.

use chatmail_metrics::prometheus_client::metrics::counter::Counter;
use chatmail_metrics::prometheus_client::metrics::gauge::Gauge;
use chatmail_metrics::{FilterMetrics, Outcome};

/// By default counters that nobody reads; a daemon hands in the ones it
/// serves.
#[derive(Debug, Clone, Default)]
pub struct SessionCounters {
    pub connections_open: Gauge,
    /// Larger than max_message_size (by SIZE or by its data).
    pub too_large: Counter,
    /// Bare line feeds.
    pub malformed: Counter,
    /// The message memory budget was spent.
    pub busy: Counter,
    /// The handler did not answer within its deadline.
    pub timed_out: Counter,
    /// The body arrived slower than the minimum rate.
    pub too_slow: Counter,
}

impl SessionCounters {
    /// The series of a filter's SMTP door.
    #[must_use]
    pub fn for_filter(metrics: &FilterMetrics) -> Self {
        Self {
            connections_open: metrics.connections_open("smtp"),
            too_large: metrics.counter(Outcome::TooLarge),
            malformed: metrics.counter(Outcome::Malformed),
            busy: metrics.counter(Outcome::Busy),
            timed_out: metrics.counter(Outcome::Timeout),
            too_slow: metrics.counter(Outcome::TooSlow),
        }
    }
}

/// How a filter counts Postfix's answer to a reinjected message.
#[must_use]
pub fn reinjection_outcome(reply: &crate::Reply) -> Outcome {
    if reply.is_positive() {
        Outcome::Accepted
    } else {
        Outcome::ReinjectionFailed
    }
}
