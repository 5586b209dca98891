//! What both before-queue filters count, under one set of names with the
//! direction as a label.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::latency_histogram;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// filtermail-outgoing: mail users submit.
    Outgoing,
    /// filtermail-incoming: mail from other servers.
    Incoming,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::Outgoing => "outgoing",
            Self::Incoming => "incoming",
        }
    }
}

/// How a filter answered a message (or, for the refusals of MAIL and
/// RCPT, a command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Postfix took the reinjected message.
    Accepted,
    /// Every recipient (or the sender) is disabled: accepted and dropped.
    Discarded,
    NotEncrypted,
    /// No usable From header, or not the sender's address (or, incoming,
    /// an address of this relay).
    FromMismatch,
    /// Incoming: no DKIM signature by the From domain.
    DkimMissing,
    /// Incoming: a signature by the From domain that does not verify.
    DkimInvalid,
    /// Incoming: the key lookup failed for now (4xx).
    DkimTempfail,
    /// Larger than max_message_size.
    TooLarge,
    /// Outgoing: the sender is over max_user_send_per_minute (4xx).
    RateLimited,
    /// Incoming: a recipient of another domain. Outgoing: a sender that
    /// is no account of this relay.
    RelayDenied,
    /// An address that is not well-formed.
    BadAddress,
    /// Bare line feeds or other broken message framing.
    Malformed,
    /// The filter's memory budget for messages is spent (4xx).
    Busy,
    /// Postfix refused the reinjection or could not be reached.
    ReinjectionFailed,
    /// The check took longer than its deadline (4xx).
    Timeout,
    /// The message body arrived slower than the minimum rate (4xx).
    TooSlow,
    /// Our own failure, such as an unreadable mailbox (4xx).
    Error,
}

impl Outcome {
    pub const ALL: [Self; 17] = [
        Self::Accepted,
        Self::Discarded,
        Self::NotEncrypted,
        Self::FromMismatch,
        Self::DkimMissing,
        Self::DkimInvalid,
        Self::DkimTempfail,
        Self::TooLarge,
        Self::RateLimited,
        Self::RelayDenied,
        Self::BadAddress,
        Self::Malformed,
        Self::Busy,
        Self::ReinjectionFailed,
        Self::Timeout,
        Self::TooSlow,
        Self::Error,
    ];

    /// Whether the filter of `direction` can answer so.
    #[must_use]
    pub fn applies_to(self, direction: Direction) -> bool {
        match self {
            Self::DkimMissing | Self::DkimInvalid | Self::DkimTempfail => {
                direction == Direction::Incoming
            }
            Self::RateLimited => direction == Direction::Outgoing,
            _ => true,
        }
    }

    /// The value of the `outcome` label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Discarded => "discarded",
            Self::NotEncrypted => "not_encrypted",
            Self::FromMismatch => "from_mismatch",
            Self::DkimMissing => "dkim_missing",
            Self::DkimInvalid => "dkim_invalid",
            Self::DkimTempfail => "dkim_tempfail",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::RelayDenied => "relay_denied",
            Self::BadAddress => "bad_address",
            Self::Malformed => "malformed",
            Self::Busy => "busy",
            Self::ReinjectionFailed => "reinjection_failed",
            Self::Timeout => "timeout",
            Self::TooSlow => "too_slow",
            Self::Error => "error",
        }
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The counters of one filter daemon. Clones share the counts; until
/// [`FilterMetrics::register`] they count without being served.
#[derive(Clone, Debug)]
pub struct FilterMetrics {
    direction: Direction,
    messages: Family<Labels<2>, Counter>,
    bytes: Family<Labels<1>, Counter>,
    reinjection_failures: Family<Labels<1>, Counter>,
    check_seconds: Family<Labels<1>, Histogram>,
    connections: Family<Labels<2>, Gauge>,
    /// The series above that every message touches, held once: a
    /// family's lookup hashes its labels under a lock, three times a
    /// message.
    series: Series,
}

/// Handles sharing the counts of the families' series of this direction.
#[derive(Clone, Debug)]
struct Series {
    /// Indexed by the position of the outcome in [`Outcome::ALL`].
    outcomes: std::sync::Arc<[Counter]>,
    bytes: Counter,
    reinjection_failures: Counter,
    check_seconds: Histogram,
    /// Counts what no family serves: an outcome missing from
    /// [`Outcome::ALL`] (there is none; indexing must not panic).
    unserved: Counter,
}

impl FilterMetrics {
    #[must_use]
    pub fn new(direction: Direction) -> Self {
        let messages: Family<Labels<2>, Counter> = Family::default();
        let bytes: Family<Labels<1>, Counter> = Family::default();
        let reinjection_failures: Family<Labels<1>, Counter> = Family::default();
        let check_seconds: Family<Labels<1>, Histogram> =
            Family::new_with_constructor(latency_histogram);
        let direction_label = [("direction", direction.label())];
        // Every series exists from the start, so a rate over a refusal
        // that has not happened yet is 0 rather than absent. (An outcome
        // of the other direction gets a handle that no family serves.)
        let outcomes = Outcome::ALL
            .iter()
            .map(|&outcome| {
                if outcome.applies_to(direction) {
                    messages.get_or_create_owned(&[
                        ("direction", direction.label()),
                        ("outcome", outcome.label()),
                    ])
                } else {
                    Counter::default()
                }
            })
            .collect();
        let series = Series {
            outcomes,
            bytes: bytes.get_or_create_owned(&direction_label),
            reinjection_failures: reinjection_failures.get_or_create_owned(&direction_label),
            check_seconds: check_seconds.get_or_create_owned(&direction_label),
            unserved: Counter::default(),
        };
        Self {
            direction,
            messages,
            bytes,
            reinjection_failures,
            check_seconds,
            connections: Family::default(),
            series,
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "filtermail_messages",
            "Messages (and refused MAIL or RCPT commands) by direction and outcome",
            self.messages.clone(),
        );
        registry.register(
            "filtermail_message_bytes",
            "Bytes of the messages the filter received",
            self.bytes.clone(),
        );
        registry.register(
            "filtermail_reinjection_failures",
            "Messages Postfix refused or could not take when reinjected",
            self.reinjection_failures.clone(),
        );
        registry.register(
            "filtermail_check_seconds",
            "Time spent checking a message (From, encryption, DKIM)",
            self.check_seconds.clone(),
        );
        registry.register(
            "filtermail_connections_open",
            "Connections open, by door (smtp, http)",
            self.connections.clone(),
        );
    }

    fn outcome_counter(&self, outcome: Outcome) -> &Counter {
        Outcome::ALL
            .iter()
            .position(|&listed| listed == outcome)
            .and_then(|index| self.series.outcomes.get(index))
            .unwrap_or(&self.series.unserved)
    }

    pub fn count(&self, outcome: Outcome) {
        self.outcome_counter(outcome).inc();
        if outcome == Outcome::ReinjectionFailed {
            self.series.reinjection_failures.inc();
        }
    }

    /// The counter of `outcome`, for code that counts without knowing the
    /// filter (the SMTP session engine) and for tests.
    #[must_use]
    pub fn counter(&self, outcome: Outcome) -> Counter {
        self.outcome_counter(outcome).clone()
    }

    pub fn received(&self, bytes: usize) {
        self.series
            .bytes
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    pub fn checked_in(&self, elapsed: Duration) {
        self.series.check_seconds.observe(elapsed.as_secs_f64());
    }

    /// The gauge of connections open at `door` (`smtp` or `http`).
    #[must_use]
    pub fn connections_open(&self, door: &'static str) -> Gauge {
        self.connections
            .get_or_create_owned(&[("direction", self.direction.label()), ("door", door)])
    }
}
