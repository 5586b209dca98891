//! Carrying out a plan, or in a dry run only counting it.

use std::fs;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::plan::Plan;
use crate::problems::Problems;
use crate::scan::Mailbox;

#[derive(Debug, Clone, Copy)]
pub struct Removal {
    /// Count what would go, delete nothing.
    pub dry_run: bool,
    /// Print each removed path on stderr.
    pub verbose: bool,
}

/// Totals of a pass, shared by the worker threads.
#[derive(Default)]
pub struct Counters {
    pub mailboxes: AtomicU64,
    pub mailboxes_removed: AtomicU64,
    pub files: AtomicU64,
    pub files_removed: AtomicU64,
    pub bytes_removed: AtomicU64,
}

impl Counters {
    #[must_use]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

/// Applies `plan` to `mailbox`.
pub fn apply(
    mailbox: &Mailbox,
    plan: &Plan,
    removal: Removal,
    counters: &Counters,
    problems: &Problems,
) {
    add(&counters.mailboxes, 1);
    let file_count = u64::try_from(mailbox.messages.len()).unwrap_or(u64::MAX);
    add(&counters.files, file_count);
    if let Some(reason) = plan.remove_mailbox {
        if removal.verbose {
            eprintln!("removing mailbox {} ({reason})", mailbox.dir.display());
        }
        // remove_dir_all unlinks symbolic links without following them.
        if !removal.dry_run
            && let Err(error) = fs::remove_dir_all(&mailbox.dir)
        {
            problems.note(&mailbox.dir, &error);
            return;
        }
        add(&counters.mailboxes_removed, 1);
        add(&counters.files_removed, file_count);
        add(&counters.bytes_removed, mailbox.message_bytes());
        return;
    }
    for message in plan
        .remove_messages
        .iter()
        .filter_map(|&index| mailbox.messages.get(index))
    {
        if removal.verbose {
            eprintln!("removing {}", message.path.display());
        }
        if !removal.dry_run
            && let Err(error) = fs::remove_file(&message.path)
        {
            problems.note(&message.path, &error);
            continue;
        }
        add(&counters.files_removed, 1);
        add(&counters.bytes_removed, message.size);
    }
    if plan.remove_maildirsize && !removal.dry_run {
        let path = mailbox.dir.join("maildirsize");
        match fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => problems.note(&path, &error),
            _ => {}
        }
    }
}
