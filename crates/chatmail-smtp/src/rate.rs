//! The slowest a message body may arrive, at every door: after a grace
//! period its average rate must stay above a minimum.

use std::time::Duration;

/// A minimum average rate for message bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_second: usize,
    /// How long any body may take, whatever its rate.
    pub grace: Duration,
}

impl Default for MinRate {
    /// 4 KiB/s after 30 s: a 30 MiB message may take two hours. The
    /// filters' peers are Postfix and nginx on loopback, which take the
    /// message from a slow client before they pass it on.
    fn default() -> Self {
        Self {
            bytes_per_second: 4 * 1024,
            grace: Duration::from_secs(30),
        }
    }
}

impl MinRate {
    /// How long after its start a body may have sent only `received`
    /// bytes.
    #[must_use]
    pub fn allowed_time(self, received: usize) -> Duration {
        let rate = self.bytes_per_second.max(1) as f64;
        Duration::from_secs_f64(received as f64 / rate).max(self.grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_then_the_rate() {
        let rate = MinRate::default();
        assert_eq!(rate.allowed_time(0), Duration::from_secs(30));
        assert_eq!(rate.allowed_time(4096 * 10), Duration::from_secs(30));
        assert_eq!(rate.allowed_time(4096 * 100), Duration::from_secs(100));
    }
}
