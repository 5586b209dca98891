//! What to remove from a scanned mailbox, decided without touching disk.

use chatmail_config::Config;

use crate::DAY;
use crate::scan::Mailbox;

/// Seen messages larger than this go after `delete_large_after` days.
pub const LARGE_MESSAGE_BYTES: u64 = 200_000;
/// The daily pass trims mailboxes to this share of `max_mailbox_size`.
pub const QUOTA_TARGET_PERCENT: u64 = 70;

/// The cut-off times and sizes of one expiry pass. A message or login
/// exactly at a cut-off is kept.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub now: i64,
    /// Mailboxes whose last login is before this are removed.
    pub inactive_before: i64,
    /// Messages that arrived before this are removed.
    pub mail_before: i64,
    /// Seen messages over [`LARGE_MESSAGE_BYTES`] that arrived before
    /// this are removed.
    pub large_before: i64,
    /// Message bytes a mailbox may keep.
    pub quota_target: u64,
}

impl Policy {
    #[must_use]
    pub fn from_config(config: &Config, now: i64) -> Self {
        let days = |n: u32| now - i64::from(n) * DAY;
        Self {
            now,
            inactive_before: days(config.delete_inactive_users_after),
            mail_before: days(config.delete_mails_after),
            large_before: days(config.delete_large_after),
            quota_target: config.max_mailbox_size / 100 * QUOTA_TARGET_PERCENT,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Why the whole mailbox goes, if it does.
    pub remove_mailbox: Option<&'static str>,
    /// Indexes into the mailbox's messages.
    pub remove_messages: Vec<usize>,
    /// Dovecot's cached quota usage is stale once messages go.
    pub remove_maildirsize: bool,
}

/// The daily pass's plan for `mailbox`.
#[must_use]
pub fn plan(mailbox: &Mailbox, policy: &Policy) -> Plan {
    if let Some(last_login) = mailbox.last_login {
        if last_login < policy.inactive_before {
            return Plan {
                remove_mailbox: Some("inactive"),
                ..Plan::default()
            };
        }
    } else if mailbox.messages.is_empty() && mailbox.dir_mtime < policy.now - DAY {
        // No account and nothing to fetch: left over from a removed
        // account or a delivery to an address that never logged in. A
        // day's grace keeps it from racing an account being created.
        return Plan {
            remove_mailbox: Some("no password and no messages"),
            ..Plan::default()
        };
    }
    let mut remove = Vec::new();
    for (index, message) in mailbox.messages.iter().enumerate() {
        let old = message.mtime < policy.mail_before;
        let large_and_seen = message.is_seen()
            && message.size > LARGE_MESSAGE_BYTES
            && message.mtime < policy.large_before;
        if old || large_and_seen {
            remove.push(index);
        }
    }
    let mut removed = vec![false; mailbox.messages.len()];
    for &index in &remove {
        if let Some(flag) = removed.get_mut(index) {
            *flag = true;
        }
    }
    remove.extend(plan_quota(
        mailbox,
        &removed,
        policy.quota_target,
        policy.now,
    ));
    Plan {
        remove_mailbox: None,
        remove_maildirsize: !remove.is_empty(),
        remove_messages: remove,
    }
}

/// The messages to remove, oldest first, so that the ones left (those
/// not flagged in `removed`, indexed like the messages) hold at most
/// `target` bytes. Messages of the last 24 hours are never chosen: the
/// owner may not have fetched them yet.
#[must_use]
pub fn plan_quota(mailbox: &Mailbox, removed: &[bool], target: u64, now: i64) -> Vec<usize> {
    let kept = |index: &usize| !removed.get(*index).copied().unwrap_or(false);
    let indexes = 0..mailbox.messages.len();
    let size_of = |index: usize| {
        mailbox
            .messages
            .get(index)
            .map_or(0, |message| message.size)
    };
    let mut total: u64 = indexes.clone().filter(kept).map(size_of).sum();
    if total <= target {
        return Vec::new();
    }
    let recent = now - DAY;
    let mut candidates: Vec<usize> = indexes
        .filter(kept)
        .filter(|&index| {
            mailbox
                .messages
                .get(index)
                .is_some_and(|m| m.mtime < recent)
        })
        .collect();
    candidates.sort_by_key(|&index| mailbox.messages.get(index).map_or(i64::MAX, |m| m.mtime));
    let mut remove = Vec::new();
    for index in candidates {
        if total <= target {
            break;
        }
        total = total.saturating_sub(size_of(index));
        remove.push(index);
    }
    remove
}
