//! Per-sender GCRA rate limiting (max_user_send_per_minute with a burst
//! of max_user_send_burst_size), on governor's keyed limiter. Senders at
//! rest are forgotten by a periodic sweep, so memory follows the number
//! of recently active senders, not the traffic.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct SenderRateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl SenderRateLimiter {
    /// `None` when `per_minute` is zero (the operator switched it off).
    #[must_use]
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    /// Takes one message from `sender`'s allowance, or says how long until
    /// the next one is allowed.
    pub fn check(&self, sender: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&sender.to_ascii_lowercase())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets senders whose allowance is full again.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[must_use]
    pub fn tracked_senders(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::SenderRateLimiter;

    #[test]
    fn burst_then_refusal_per_sender() {
        let limiter = SenderRateLimiter::new(60, 10).expect("enabled");
        for _ in 0..10 {
            assert!(limiter.check("a@example.org").is_ok());
        }
        let wait = limiter.check("A@example.org").expect_err("over the burst");
        assert!(wait.as_millis() > 0 && wait.as_secs() <= 1, "{wait:?}");
        assert!(
            limiter.check("b@example.org").is_ok(),
            "other senders unaffected"
        );
        assert_eq!(limiter.tracked_senders(), 2);
    }

    #[test]
    fn zero_disables() {
        assert!(SenderRateLimiter::new(0, 10).is_none());
    }
}
