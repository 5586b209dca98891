//! Visiting every mailbox under `mailboxes_dir` in parallel, streaming
//! the top-level listing rather than collecting it.

use std::fs;
use std::path::Path;

use rayon::iter::{ParallelBridge as _, ParallelIterator as _};

use crate::problems::Problems;

/// Calls `visit` with the path and name of each mailbox directory (a real
/// directory whose name contains `@`; links and other entries such as
/// `pending_notifications` are skipped), at most `max_mailboxes` of them,
/// on rayon's thread pool.
pub fn for_each_mailbox(
    root: &Path,
    max_mailboxes: Option<usize>,
    problems: &Problems,
    visit: impl Fn(&Path) + Sync,
) -> std::io::Result<()> {
    let mailboxes = fs::read_dir(root)?
        .filter_map(|entry| match entry {
            Ok(entry) => Some(entry),
            Err(error) => {
                problems.note(root, &error);
                None
            }
        })
        .filter(|entry| {
            entry.file_name().to_string_lossy().contains('@')
                && entry.file_type().is_ok_and(|file_type| file_type.is_dir())
        })
        .take(max_mailboxes.unwrap_or(usize::MAX));
    mailboxes
        .par_bridge()
        .for_each(|entry| visit(&entry.path()));
    Ok(())
}
