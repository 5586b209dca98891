//! What chatmail-turn counts: allocations, bytes relayed, and what it
//! refused, by reason.

use chatmail_metrics::prometheus_client::metrics::counter::Counter;
use chatmail_metrics::prometheus_client::metrics::family::Family;
use chatmail_metrics::prometheus_client::metrics::gauge::Gauge;
use chatmail_metrics::prometheus_client::registry::Registry;

/// Why a request or a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A permission or channel for a peer the filter refuses (403).
    Peer(crate::peers::Refusal),
    /// The account holds turn_max_allocations_per_user already (486).
    UserQuota,
    /// The server holds turn_max_allocations already (508).
    Capacity,
    /// Credentials past their expiry time, or not ours.
    Credentials,
    /// A packet over the allocation's turn_max_bandwidth, dropped.
    Bandwidth,
    /// A packet of an allocation past turn_max_allocation_lifetime.
    Lifetime,
}

impl Refused {
    const ALL: [Self; 8] = [
        Self::Peer(crate::peers::Refusal::Internal),
        Self::Peer(crate::peers::Refusal::Own),
        Self::Peer(crate::peers::Refusal::PortZero),
        Self::UserQuota,
        Self::Capacity,
        Self::Credentials,
        Self::Bandwidth,
        Self::Lifetime,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Peer(refusal) => refusal.label(),
            Self::UserQuota => "user_quota",
            Self::Capacity => "capacity",
            Self::Credentials => "credentials",
            Self::Bandwidth => "bandwidth",
            Self::Lifetime => "lifetime",
        }
    }
}

/// Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct TurnMetrics {
    pub allocations_open: Gauge,
    pub allocations: Counter,
    pub bytes_relayed: Counter,
    pub packets_relayed: Counter,
    refused: Family<[(&'static str, &'static str); 1], Counter>,
}

impl TurnMetrics {
    #[must_use]
    pub fn new() -> Self {
        let metrics = Self::default();
        for reason in Refused::ALL {
            let _ = metrics.refused.get_or_create(&[("reason", reason.label())]);
        }
        metrics
    }

    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("chatmail_turn");
        registry.register(
            "allocations_open",
            "TURN allocations that relay now",
            self.allocations_open.clone(),
        );
        registry.register(
            "allocations",
            "TURN allocations made",
            self.allocations.clone(),
        );
        registry.register(
            "relayed_bytes",
            "UDP payload bytes relayed, both ways",
            self.bytes_relayed.clone(),
        );
        registry.register(
            "relayed_packets",
            "UDP packets relayed, both ways",
            self.packets_relayed.clone(),
        );
        registry.register(
            "refused",
            "Requests refused and packets dropped, by reason",
            self.refused.clone(),
        );
    }

    pub fn refused(&self, reason: Refused) {
        self.refused
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    #[must_use]
    pub fn refused_for(&self, reason: Refused) -> u64 {
        self.refused
            .get_or_create(&[("reason", reason.label())])
            .get()
    }
}
