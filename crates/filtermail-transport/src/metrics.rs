//! What the transport counts: each recipient's answer by the protocol
//! that gave it, the fast tempfails, the global bound and the paused
//! destinations.

use std::time::Duration;

use chatmail_metrics::latency_histogram;
use chatmail_metrics::prometheus_client::metrics::counter::Counter;
use chatmail_metrics::prometheus_client::metrics::family::Family;
use chatmail_metrics::prometheus_client::metrics::gauge::Gauge;
use chatmail_metrics::prometheus_client::metrics::histogram::Histogram;
use chatmail_metrics::prometheus_client::registry::Registry;
use chatmail_smtp::Reply;

/// How an answer reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Https,
    Smtp,
    /// No server answered: DNS failed, no host was reachable, or every
    /// address was internal.
    None,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Smtp => "smtp",
            Self::None => "none",
        }
    }
}

/// Why a message got 4xx without a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastTempfail {
    /// filtermail_transport_destination_limit messages are queued for it.
    DestinationFull,
    /// Its connections failed just now (circuit breaker).
    DestinationPaused,
    /// No slot of filtermail_transport_max_deliveries became free in time.
    NoSlot,
}

impl FastTempfail {
    fn label(self) -> &'static str {
        match self {
            Self::DestinationFull => "destination_full",
            Self::DestinationPaused => "destination_paused",
            Self::NoSlot => "no_slot",
        }
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Clones share the counts; until [`TransportMetrics::register`] they
/// count without being served.
#[derive(Debug, Clone)]
pub struct TransportMetrics {
    deliveries: Family<Labels<2>, Counter>,
    fast_tempfails: Family<Labels<1>, Counter>,
    delivery_seconds: Family<Labels<1>, Histogram>,
    /// Deliveries holding a slot of the global bound.
    pub slots_in_use: Gauge,
    /// Destinations whose circuit breaker is open.
    pub destinations_paused: Gauge,
}

impl Default for TransportMetrics {
    fn default() -> Self {
        let metrics = Self {
            deliveries: Family::default(),
            fast_tempfails: Family::default(),
            delivery_seconds: Family::new_with_constructor(latency_histogram),
            slots_in_use: Gauge::default(),
            destinations_paused: Gauge::default(),
        };
        for protocol in [Protocol::Https, Protocol::Smtp, Protocol::None] {
            for outcome in ["delivered", "deferred", "bounced"] {
                let _ = metrics
                    .deliveries
                    .get_or_create(&[("protocol", protocol.label()), ("outcome", outcome)]);
            }
        }
        for reason in [
            FastTempfail::DestinationFull,
            FastTempfail::DestinationPaused,
            FastTempfail::NoSlot,
        ] {
            let _ = metrics
                .fast_tempfails
                .get_or_create(&[("reason", reason.label())]);
        }
        metrics
    }
}

impl TransportMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "filtermail_transport_deliveries",
            "Recipients answered, by the protocol of the answer and its outcome \
             (delivered 2xx, deferred 4xx, bounced 5xx)",
            self.deliveries.clone(),
        );
        registry.register(
            "filtermail_transport_fast_tempfails",
            "Recipients given 4xx at once, without a delivery attempt, by reason",
            self.fast_tempfails.clone(),
        );
        registry.register(
            "filtermail_transport_delivery_seconds",
            "Time to deliver a message to one destination, by protocol",
            self.delivery_seconds.clone(),
        );
        registry.register(
            "filtermail_transport_delivery_slots_in_use",
            "Deliveries in flight, out of filtermail_transport_max_deliveries",
            self.slots_in_use.clone(),
        );
        registry.register(
            "filtermail_transport_destinations_paused",
            "Destinations answered with 4xx at once because their connections failed",
            self.destinations_paused.clone(),
        );
    }

    /// One delivery to a destination: its time, and each recipient's
    /// answer.
    pub fn delivered(&self, protocol: Protocol, replies: &[Reply], elapsed: Duration) {
        self.delivery_seconds
            .get_or_create(&[("protocol", protocol.label())])
            .observe(elapsed.as_secs_f64());
        for reply in replies {
            let outcome = if reply.is_positive() {
                "delivered"
            } else if reply.is_transient() {
                "deferred"
            } else {
                "bounced"
            };
            self.deliveries
                .get_or_create(&[("protocol", protocol.label()), ("outcome", outcome)])
                .inc();
        }
    }

    pub fn fast_tempfail(&self, reason: FastTempfail, recipients: usize) {
        self.fast_tempfails
            .get_or_create(&[("reason", reason.label())])
            .inc_by(u64::try_from(recipients).unwrap_or(u64::MAX));
    }
}
