//! The metrics every long-running chatmail daemon serves: a Prometheus
//! registry with the process's own figures, the HTTP endpoint that serves
//! it at `GET /metrics`, and the families both filters count.

mod endpoint;
mod filter;
mod gauge_hold;
mod process;

pub use endpoint::Endpoint;
pub use filter::{Direction, FilterMetrics, Outcome};
pub use gauge_hold::GaugeHold;
pub use process::ProcessCollector;
pub use prometheus_client;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A registry with the process collector (RSS, descriptors, CPU time,
/// start time and uptime) already in it.
#[must_use]
pub fn registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// A latency histogram from 1 ms to about 65 s (doubling buckets): a
/// filter's check takes milliseconds, a delivery to another relay or a
/// push can take a minute.
#[must_use]
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}
