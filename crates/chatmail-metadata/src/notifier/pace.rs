//! How often one account's devices are woken. A push carries nothing but
//! the token: it only makes the device fetch its mail. So past
//! max_user_notifications_per_minute the pushes of further messages are
//! folded into one, sent when the allowance returns, after which the
//! device fetches them all. A message to a thousand local recipients, or
//! a flood to one, costs the push service a bounded number of requests.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chatmail_daemon::AccountRateLimiter;

/// What to do with the pushes for one new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Now,
    /// Send after this wait; further messages until then are folded in.
    Later(Duration),
    /// A push for the account is already scheduled and will cover it.
    Folded,
}

pub struct Pace {
    limiter: Option<AccountRateLimiter>,
    /// Accounts whose folded push is scheduled: at most one each, so the
    /// set is bounded by the accounts that got mail within a minute.
    scheduled: Mutex<HashSet<String>>,
}

impl Pace {
    /// No limit when `per_minute` is zero.
    #[must_use]
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: AccountRateLimiter::new(per_minute, (per_minute / 6).max(1)),
            scheduled: Mutex::new(HashSet::new()),
        }
    }

    pub fn decide(&self, account: &str) -> Decision {
        let Some(limiter) = &self.limiter else {
            return Decision::Now;
        };
        let account = account.to_ascii_lowercase();
        let mut scheduled = self
            .scheduled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if scheduled.contains(&account) {
            return Decision::Folded;
        }
        match limiter.check(&account) {
            Ok(()) => Decision::Now,
            Err(wait) => {
                scheduled.insert(account);
                Decision::Later(wait)
            }
        }
    }

    /// The scheduled push of `account` goes out now: it takes the
    /// allowance that returned, and later messages need a push of their
    /// own.
    pub fn sending_scheduled(&self, account: &str) {
        let account = account.to_ascii_lowercase();
        if let Some(limiter) = &self.limiter {
            let _ = limiter.check(&account);
        }
        self.scheduled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&account);
    }

    /// Forgets accounts whose allowance is full again.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Decision, Pace};

    #[test]
    fn a_burst_then_one_scheduled_push_then_folding() {
        let pace = Pace::new(60);
        for _ in 0..10 {
            assert_eq!(pace.decide("a@example.org"), Decision::Now);
        }
        let Decision::Later(wait) = pace.decide("A@example.org") else {
            panic!("the eleventh waits");
        };
        assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
        assert_eq!(pace.decide("a@example.org"), Decision::Folded);
        assert_eq!(
            pace.decide("b@example.org"),
            Decision::Now,
            "others unaffected"
        );
        pace.sending_scheduled("a@example.org");
        assert!(
            matches!(pace.decide("a@example.org"), Decision::Later(_)),
            "after the scheduled push, the next message waits again"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let pace = Pace::new(0);
        for _ in 0..1000 {
            assert_eq!(pace.decide("a@example.org"), Decision::Now);
        }
    }
}
