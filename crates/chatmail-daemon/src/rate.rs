//! Per-account GCRA rate limiting (messages or recipients a sender
//! submits, push notifications an account receives), on governor's keyed
//! limiter. Accounts at rest are forgotten by a periodic sweep, so memory
//! follows the number of recently active accounts, not the traffic.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct AccountRateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl AccountRateLimiter {
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

    /// Takes one unit from `account`'s allowance, or says how long until
    /// the next one is allowed.
    pub fn check(&self, account: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&account.to_ascii_lowercase())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets accounts whose allowance is full again.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[must_use]
    pub fn tracked_accounts(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::AccountRateLimiter;

    #[test]
    fn burst_then_refusal_per_account() {
        let limiter = AccountRateLimiter::new(60, 10).expect("enabled");
        for _ in 0..10 {
            assert!(limiter.check("a@example.org").is_ok());
        }
        let wait = limiter.check("A@example.org").expect_err("over the burst");
        assert!(wait.as_millis() > 0 && wait.as_secs() <= 1, "{wait:?}");
        assert!(
            limiter.check("b@example.org").is_ok(),
            "other accounts unaffected"
        );
        assert_eq!(limiter.tracked_accounts(), 2);
    }

    #[test]
    fn zero_disables() {
        assert!(AccountRateLimiter::new(0, 10).is_none());
    }
}
