use std::path::PathBuf;

use chatmail_expire::{Counters, Plan, Problems, Removal, apply, plan_quota, scan_mailbox};
use clap::Parser;

/// Trims one mailbox to TARGET_MB megabytes of messages, oldest first,
/// never removing messages of the last 24 hours. Dovecot's quota_warning
/// runs it when a mailbox passes 75% of its quota.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The size to trim to, in MiB.
    target_mb: u64,
    /// The mailbox directory (Dovecot's %h).
    mailbox_path: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let problems = Problems::default();
    let Some(mailbox) = scan_mailbox(&cli.mailbox_path, &problems) else {
        anyhow::bail!("cannot read mailbox {}", cli.mailbox_path.display());
    };
    let target = cli.target_mb.saturating_mul(1024 * 1024);
    let now = chatmail_expire::reference_time(0);
    let remove = plan_quota(&mailbox, &[], target, now);
    let plan = Plan {
        remove_mailbox: None,
        remove_maildirsize: !remove.is_empty(),
        remove_messages: remove,
    };
    let counters = Counters::default();
    let removal = Removal {
        dry_run: false,
        verbose: false,
    };
    apply(&mailbox, &plan, removal, &counters, &problems);
    let removed = Counters::get(&counters.files_removed);
    if removed > 0 {
        // Dovecot logs the script's stderr; the address stays out of it.
        eprintln!(
            "quota-expire: removed {removed} message(s), {} bytes",
            Counters::get(&counters.bytes_removed)
        );
    }
    Ok(())
}
