//! A gauge raised for as long as something lives.

use prometheus_client::metrics::gauge::Gauge;

/// Adds one to a gauge for as long as it lives (a connection open, a
/// slot taken).
pub struct GaugeHold(Gauge);

impl GaugeHold {
    #[must_use]
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}
