//! The cache of parsed DKIM keys. Bounded in entries, each kept no longer
//! than its DNS TTL (and at most an hour, so rotated keys are picked up),
//! and only positive: a key that did not parse is asked for again next
//! time.

use std::borrow::Borrow;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use mail_auth::{ResolverCache, Txt};

const MAX_LIFETIME: Duration = Duration::from_secs(3600);

pub struct KeyCache {
    entries: Mutex<LruCache<Box<str>, (Txt, Instant)>>,
}

impl KeyCache {
    #[must_use]
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<Box<str>, (Txt, Instant)>> {
        // The cache holds no invariant a panicking holder could break.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

impl ResolverCache<Box<str>, Txt> for KeyCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        match entries.get(name) {
            Some((txt, valid_until)) if *valid_until > Instant::now() => Some(txt.clone()),
            Some(_) => {
                entries.pop(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().pop(name).map(|(txt, _)| txt)
    }

    fn insert(&self, name: Box<str>, txt: Txt, valid_until: Instant) {
        if matches!(txt, Txt::Error(_)) {
            return;
        }
        let valid_until = valid_until.min(Instant::now() + MAX_LIFETIME);
        self.lock().put(name, (txt, valid_until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::Error;

    fn key() -> Txt {
        Txt::Error(Error::NotAligned)
    }

    #[test]
    fn errors_are_not_cached() {
        let cache = KeyCache::new(NonZeroUsize::MIN);
        cache.insert("a.".into(), key(), Instant::now() + MAX_LIFETIME);
        assert_eq!(cache.len(), 0);
    }
}
