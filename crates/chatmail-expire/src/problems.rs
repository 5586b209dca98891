//! Trouble met while scanning or removing, counted instead of fatal:
//! mail keeps arriving and being fetched during a pass, so files vanish,
//! and an operator may have left files the pass cannot read.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Problems {
    vanished: AtomicU64,
    errors: AtomicU64,
}

impl Problems {
    /// Records `error` met at `path`: a vanished file is normal and only
    /// counted; anything else is also reported on stderr.
    pub fn note(&self, path: &Path, error: &io::Error) {
        if error.kind() == io::ErrorKind::NotFound {
            self.vanished.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{}: {error}", path.display());
        }
    }

    #[must_use]
    pub fn vanished(&self) -> u64 {
        self.vanished.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}
