//! Per-destination state: how many messages are queued or in flight for
//! it (bounded, so one busy or dead destination cannot take all of the
//! transport), and a circuit breaker that answers 4xx at once while a
//! destination's connections keep failing. Entries are kept in a bounded
//! LRU; an entry that is idle (nothing in flight, breaker closed) is
//! dropped first, and idle entries cost nothing to forget.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chatmail_metrics::prometheus_client::metrics::gauge::Gauge;
use lru::LruCache;

use crate::destination::Destination;

/// The first pause after failed connections; it doubles with each
/// further failure up to [`MAX_DEAD_FOR`].
const FIRST_DEAD_FOR: Duration = Duration::from_secs(10);
const MAX_DEAD_FOR: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    dead_until: Option<Instant>,
    /// One delivery is trying the destination again after a pause.
    probing: bool,
}

#[derive(Debug, Default)]
pub struct DestinationState {
    in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
    /// Counts the destinations whose breaker is open (a metric).
    paused: Gauge,
}

/// Why a destination gets 4xx at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Its queue is full.
    Full,
    /// Its connections just failed.
    Dead,
}

impl DestinationState {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a message would be refused right now (at RCPT time).
    #[must_use]
    pub fn check(&self, limit: usize) -> Option<Busy> {
        let breaker = self.breaker();
        if let Some(until) = breaker.dead_until
            && (Instant::now() < until || breaker.probing)
        {
            return Some(Busy::Dead);
        }
        drop(breaker);
        (self.in_flight.load(Ordering::Relaxed) >= limit).then_some(Busy::Full)
    }

    /// Takes a place in the destination's queue, or says why not. After a
    /// pause, exactly one caller gets through as the probe.
    pub fn enter(self: &Arc<Self>, limit: usize) -> Result<Slot, Busy> {
        let mut probe = false;
        {
            let mut breaker = self.breaker();
            if let Some(until) = breaker.dead_until {
                if Instant::now() < until || breaker.probing {
                    return Err(Busy::Dead);
                }
                breaker.probing = true;
                probe = true;
            }
        }
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if taken.is_err() {
            if probe {
                self.breaker().probing = false;
            }
            return Err(Busy::Full);
        }
        Ok(Slot {
            state: Arc::clone(self),
            probe,
        })
    }

    /// Connections to every host failed: pause the destination.
    pub fn connection_failed(&self) {
        let mut breaker = self.breaker();
        if breaker.dead_until.is_none() {
            self.paused.inc();
        }
        breaker.failures = breaker.failures.saturating_add(1);
        let factor = 1u32 << breaker.failures.saturating_sub(1).min(10);
        let pause = FIRST_DEAD_FOR.saturating_mul(factor).min(MAX_DEAD_FOR);
        breaker.dead_until = Some(Instant::now() + pause);
        breaker.probing = false;
    }

    /// A server answered: the destination is alive.
    pub fn reached(&self) {
        let mut breaker = self.breaker();
        if breaker.dead_until.is_some() {
            self.paused.dec();
        }
        *breaker = Breaker::default();
    }

    /// Nothing in flight: forgetting it loses at most a pause.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

impl Drop for DestinationState {
    /// A paused destination forgotten is no longer counted.
    fn drop(&mut self) {
        if self.breaker().dead_until.is_some() {
            self.paused.dec();
        }
    }
}

/// A place in a destination's queue, given back when dropped.
pub struct Slot {
    state: Arc<DestinationState>,
    probe: bool,
}

impl Slot {
    #[must_use]
    pub fn state(&self) -> &DestinationState {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.probe {
            self.state.breaker().probing = false;
        }
    }
}

/// The bounded table of destinations.
pub struct Destinations {
    table: Mutex<LruCache<Destination, Arc<DestinationState>>>,
    capacity: usize,
    paused: Gauge,
}

impl Destinations {
    #[must_use]
    /// `paused` counts the destinations whose breaker is open.
    pub fn new(capacity: NonZeroUsize, paused: Gauge) -> Self {
        Self {
            table: Mutex::new(LruCache::unbounded()),
            capacity: capacity.get(),
            paused,
        }
    }

    /// The state of `destination`, created when new. When the table is
    /// full, the least recently used idle entry makes room; busy entries
    /// are never forgotten (their counts must stay right), so the table
    /// exceeds its capacity by at most the deliveries in flight.
    pub fn get(&self, destination: &Destination) -> Arc<DestinationState> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = table.get(destination) {
            return Arc::clone(state);
        }
        if table.len() >= self.capacity {
            let idle = table
                .iter()
                .rev()
                .find(|(_, state)| state.is_idle() && Arc::strong_count(state) == 1)
                .map(|(key, _)| key.clone());
            if let Some(key) = idle {
                table.pop(&key);
            }
        }
        let state = Arc::new(DestinationState {
            in_flight: AtomicUsize::new(0),
            breaker: Mutex::default(),
            paused: self.paused.clone(),
        });
        table.put(destination.clone(), Arc::clone(&state));
        state
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded() {
        let state = Arc::new(DestinationState::default());
        let first = state.enter(2).unwrap();
        let _second = state.enter(2).unwrap();
        assert_eq!(state.enter(2).err(), Some(Busy::Full));
        assert_eq!(state.check(2), Some(Busy::Full));
        drop(first);
        assert!(state.enter(2).is_ok());
    }

    #[test]
    fn breaker_lets_one_probe_through_after_the_pause() {
        let state = Arc::new(DestinationState::default());
        state.connection_failed();
        assert_eq!(state.check(10), Some(Busy::Dead));
        assert_eq!(state.enter(10).err(), Some(Busy::Dead));
        // Pretend the pause is over.
        state.breaker().dead_until = Some(Instant::now());
        let probe = state.enter(10).unwrap();
        assert_eq!(
            state.enter(10).err(),
            Some(Busy::Dead),
            "one probe at a time"
        );
        probe.state().reached();
        drop(probe);
        assert!(state.enter(10).is_ok());
    }

    #[test]
    fn table_is_bounded_and_keeps_busy_entries() {
        let table = Destinations::new(NonZeroUsize::new(2).unwrap(), Gauge::default());
        let a = Destination::Domain("a.org".into());
        let busy = table.get(&a);
        let _slot = busy.enter(5).unwrap();
        drop(busy);
        for n in 0..10 {
            table.get(&Destination::Domain(format!("d{n}.org")));
        }
        assert!(table.len() <= 3);
        assert_eq!(table.get(&a).check(1), Some(Busy::Full), "busy entry kept");
    }

    #[test]
    fn paused_destinations_are_counted_until_reached_or_forgotten() {
        let paused = Gauge::default();
        let table = Destinations::new(NonZeroUsize::new(1).unwrap(), paused.clone());
        let a = table.get(&Destination::Domain("a.org".into()));
        a.connection_failed();
        a.connection_failed();
        assert_eq!(paused.get(), 1, "one destination, however many failures");
        a.reached();
        assert_eq!(paused.get(), 0);
        a.connection_failed();
        drop(a);
        assert_eq!(paused.get(), 1);
        // The table is full: the idle, paused entry makes room.
        let _b = table.get(&Destination::Domain("b.org".into()));
        assert_eq!(
            paused.get(),
            0,
            "a forgotten destination is no longer counted"
        );
    }
}
