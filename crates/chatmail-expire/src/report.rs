//! Storage and login statistics over all mailboxes (chatmail-fsreport),
//! as a human summary, a Prometheus text file, and the metrics file of
//! the older `metrics` script.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::DAY;
use crate::scan::{Mailbox, Part};

const LOGIN_DAYS: [i64; 7] = [1, 10, 30, 40, 80, 100, 150];
const KIB: u64 = 1024;
const MESSAGE_THRESHOLDS: [u64; 7] = [
    0,
    100 * KIB,
    512 * KIB,
    1024 * KIB,
    2048 * KIB,
    5120 * KIB,
    10240 * KIB,
];

/// Accounts created by test runs, counted apart. Today's test tools
/// (Delta Chat's pytest plugin, the relay we replace's test suite) name
/// theirs `ci-…`, and so does the relay we replace's report. `ac_…` was
/// the prefix of an older test factory; counting it would move real users
/// who chose such a name out of the user figures, so it is not.
fn is_ci_account(name: &str) -> bool {
    name.starts_with("ci-")
}

#[derive(Debug, Clone)]
pub struct Report {
    now: i64,
    min_login_age_days: u32,
    part: Option<Part>,
    mailboxes: u64,
    extra_bytes: u64,
    message_bytes: u64,
    logins: u64,
    ci_logins: u64,
    /// Non-CI accounts that logged in within each of [`LOGIN_DAYS`].
    active: [u64; LOGIN_DAYS.len()],
    /// Bytes and counts of messages of at least each threshold.
    large_bytes: [u64; MESSAGE_THRESHOLDS.len()],
    large_count: [u64; MESSAGE_THRESHOLDS.len()],
}

impl Report {
    /// A report as of `now`; message sizes are summed only for accounts
    /// whose last login is at least `min_login_age_days` old, and only in
    /// `part` when given.
    #[must_use]
    pub fn new(now: i64, min_login_age_days: u32, part: Option<&str>) -> Self {
        Self {
            now,
            min_login_age_days,
            part: part.and_then(|name| {
                [Part::Cur, Part::New, Part::Tmp]
                    .into_iter()
                    .find(|p| p.name() == name)
            }),
            mailboxes: 0,
            extra_bytes: 0,
            message_bytes: 0,
            logins: 0,
            ci_logins: 0,
            active: [0; LOGIN_DAYS.len()],
            large_bytes: [0; MESSAGE_THRESHOLDS.len()],
            large_count: [0; MESSAGE_THRESHOLDS.len()],
        }
    }

    pub fn add(&mut self, mailbox: &Mailbox) {
        self.mailboxes += 1;
        self.extra_bytes += mailbox.extra_bytes;
        self.message_bytes += mailbox.message_bytes();
        let Some(last_login) = mailbox.last_login else {
            return;
        };
        self.logins += 1;
        if is_ci_account(&mailbox.name) {
            self.ci_logins += 1;
        } else {
            for (days, active) in LOGIN_DAYS.iter().zip(&mut self.active) {
                if last_login >= self.now - days * DAY {
                    *active += 1;
                }
            }
        }
        if last_login > self.now - i64::from(self.min_login_age_days) * DAY {
            return;
        }
        for message in &mailbox.messages {
            if self.part.is_some_and(|part| part != message.part) {
                continue;
            }
            for (index, threshold) in MESSAGE_THRESHOLDS.iter().enumerate() {
                if message.size >= *threshold {
                    if let Some(bytes) = self.large_bytes.get_mut(index) {
                        *bytes += message.size;
                    }
                    if let Some(count) = self.large_count.get_mut(index) {
                        *count += 1;
                    }
                }
            }
        }
    }

    /// Adds the counts of `other` (a report over other mailboxes).
    pub fn merge(&mut self, other: &Self) {
        self.mailboxes += other.mailboxes;
        self.extra_bytes += other.extra_bytes;
        self.message_bytes += other.message_bytes;
        self.logins += other.logins;
        self.ci_logins += other.ci_logins;
        let pairs = self.active.iter_mut().zip(other.active);
        let pairs = pairs.chain(self.large_bytes.iter_mut().zip(other.large_bytes));
        let pairs = pairs.chain(self.large_count.iter_mut().zip(other.large_count));
        for (mine, theirs) in pairs {
            *mine += theirs;
        }
    }

    fn user_logins(&self) -> u64 {
        self.logins - self.ci_logins
    }

    /// The human summary.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let total = self.extra_bytes + self.message_bytes;
        let _ = writeln!(out, "## Mailbox storage use analysis");
        let _ = writeln!(out, "Mailboxes              : {}", self.mailboxes);
        let _ = writeln!(out, "Mailbox data total size: {}", human_size(total));
        let _ = writeln!(
            out,
            "Messages total size    : {}",
            human_size(self.message_bytes)
        );
        let _ = writeln!(
            out,
            "Extra files : {} ({:.2}%)",
            human_size(self.extra_bytes),
            percent(self.extra_bytes, total)
        );
        let _ = writeln!(out);
        if self.min_login_age_days > 0 {
            let _ = writeln!(
                out,
                "### Message storage for {} days old logins",
                self.min_login_age_days
            );
        }
        let prefix = self
            .part
            .map(|part| format!("[{}] ", part.name()))
            .unwrap_or_default();
        for ((threshold, bytes), count) in MESSAGE_THRESHOLDS
            .iter()
            .zip(self.large_bytes)
            .zip(self.large_count)
        {
            let _ = writeln!(
                out,
                "{prefix}larger than {}: {} ({:.2}%), {count} msgs",
                human_size(*threshold),
                human_size(bytes),
                percent(bytes, self.message_bytes)
            );
        }
        let _ = writeln!(out);
        let reference = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(self.now).unwrap_or(0));
        let _ = writeln!(
            out,
            "## Login stats, from date reference {}",
            humantime::format_rfc3339_seconds(reference)
        );
        let users = self.user_logins();
        let _ = writeln!(out, "all:     {}", self.logins);
        let _ = writeln!(out, "non-ci:  {users}");
        let _ = writeln!(out, "ci:      {}", self.ci_logins);
        for (days, active) in LOGIN_DAYS.iter().zip(self.active) {
            let _ = writeln!(
                out,
                "last {days:3} days: {active} ({:.2}%)",
                percent(active, users)
            );
        }
        out
    }

    /// Metrics in the Prometheus text format (for node_exporter's
    /// textfile collector), with the names the reference uses.
    #[must_use]
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let total = self.extra_bytes + self.message_bytes;
        gauge(
            &mut out,
            "chatmail_storage_bytes",
            "Mailbox storage in bytes.",
        );
        let _ = writeln!(
            out,
            "chatmail_storage_bytes{{kind=\"messages\"}} {}",
            self.message_bytes
        );
        let _ = writeln!(
            out,
            "chatmail_storage_bytes{{kind=\"extra\"}} {}",
            self.extra_bytes
        );
        let _ = writeln!(out, "chatmail_storage_bytes{{kind=\"total\"}} {total}");
        gauge(
            &mut out,
            "chatmail_messages_bytes",
            "Sum of msg bytes >= threshold.",
        );
        for (threshold, bytes) in MESSAGE_THRESHOLDS.iter().zip(self.large_bytes) {
            let _ = writeln!(
                out,
                "chatmail_messages_bytes{{min_size=\"{threshold}\"}} {bytes}"
            );
        }
        gauge(
            &mut out,
            "chatmail_messages_count",
            "Number of msgs >= size threshold.",
        );
        for (threshold, count) in MESSAGE_THRESHOLDS.iter().zip(self.large_count) {
            let _ = writeln!(
                out,
                "chatmail_messages_count{{min_size=\"{threshold}\"}} {count}"
            );
        }
        gauge(&mut out, "chatmail_accounts", "Number of accounts.");
        let _ = writeln!(out, "chatmail_accounts{{kind=\"all\"}} {}", self.logins);
        let _ = writeln!(out, "chatmail_accounts{{kind=\"ci\"}} {}", self.ci_logins);
        let _ = writeln!(
            out,
            "chatmail_accounts{{kind=\"user\"}} {}",
            self.user_logins()
        );
        gauge(
            &mut out,
            "chatmail_accounts_active",
            "Non-CI accounts active within N days.",
        );
        for (days, active) in LOGIN_DAYS.iter().zip(self.active) {
            let _ = writeln!(out, "chatmail_accounts_active{{days=\"{days}\"}} {active}");
        }
        out
    }

    /// The three gauges of the older metrics script.
    #[must_use]
    pub fn legacy_metrics(&self) -> String {
        format!(
            "# HELP total number of accounts\n# TYPE accounts gauge\naccounts {}\n\
             # HELP number of CI accounts\n# TYPE ci_accounts gauge\nci_accounts {}\n\
             # HELP number of non-CI accounts\n# TYPE nonci_accounts gauge\nnonci_accounts {}\n",
            self.logins,
            self.ci_logins,
            self.user_logins()
        )
    }
}

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

#[allow(clippy::cast_precision_loss)]
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A size in decimal K, M or G, five characters wide.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn human_size(size: u64) -> String {
    let size_f = size as f64;
    if size < 10_000 {
        format!("{:5.2}K", size_f / 1e3)
    } else if size < 1_000_000 {
        format!("{:5.0}K", size_f / 1e3)
    } else if size < 1_000_000_000 {
        format!("{:5}M", size / 1_000_000)
    } else {
        format!("{:5.2}G", size_f / 1e9)
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// reader (node_exporter, a web server) never sees half a file; readable
/// by all, as those readers run as other users.
pub fn write_public_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".fsreport-")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|error| error.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{human_size, is_ci_account};

    #[test]
    fn only_ci_prefixed_accounts_are_test_accounts() {
        assert!(is_ci_account("ci-7kq2mx"));
        assert!(!is_ci_account("ac_alice"));
        assert!(!is_ci_account("alice"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), " 0.00K");
        assert_eq!(human_size(9_999), "10.00K");
        assert_eq!(human_size(123_456), "  123K");
        assert_eq!(human_size(45_600_000), "   45M");
        assert_eq!(human_size(2_500_000_000), " 2.50G");
    }
}
