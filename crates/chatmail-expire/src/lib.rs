//! Keeping a relay's mailboxes small: the daily expiry pass
//! (`chatmail-expire`), the trim Dovecot triggers at 75% of the quota
//! (`chatmail-quota-expire`) and storage statistics (`chatmail-fsreport`).
//!
//! All three share one scanner that reads a mailbox at a time (never the
//! whole tree), never follows symbolic links, and counts files that vanish
//! or cannot be read instead of failing. Expiry is planned first, as a pure
//! function of what was scanned, and only then carried out, so a dry run
//! runs exactly the same decisions and deletes nothing.

mod apply;
mod plan;
mod problems;
mod report;
mod scan;
mod walk;

pub use apply::{Counters, Removal, apply};
pub use plan::{Plan, Policy, plan, plan_quota};
pub use problems::Problems;
pub use report::{Report, human_size, write_public_atomic};
pub use scan::{Mailbox, Message, Part, scan_mailbox, size_from_name};
pub use walk::for_each_mailbox;

pub const DAY: i64 = 86_400;

/// Seconds since the epoch now, shifted back by `days_back` days (the
/// `--days` option of the commands: "pretend it is N days ago").
#[must_use]
pub fn reference_time(days_back: u32) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    now - i64::from(days_back) * DAY
}
