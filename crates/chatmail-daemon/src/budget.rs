//! One budget per daemon for the bytes of messages it holds at once:
//! whatever peers send, buffered message data never exceeds it. A message
//! reserves its bytes before they are buffered. When the budget is spent:
//!
//! - a message that holds nothing yet (one announcing its size, or one
//!   about to start) waits briefly for bytes to come free;
//! - the oldest message that holds bytes waits briefly too, so that it
//!   can finish: the budget always makes progress;
//! - any other message is refused at once and gives its bytes back.
//!
//! A refused or timed-out message gets a 4xx, and its sender tries again
//! later: nothing is lost. Waiting while holding bytes would let every
//! message of a burst hold a share and wait for the others, none of them
//! finishing.
//!
//! Bytes are reserved as they arrive, never for a size a peer declares: a
//! peer that announces 30 MiB and sends a byte a minute holds a byte. And
//! each client (a remote address, or an account; the caller names it)
//! holds at most its share of the budget, so that a few clients cannot
//! take all of it: beyond its share a client's message is treated as if
//! the budget were spent.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// Reservations grow in steps of this many bytes, so that a message
/// takes the lock a few times, not once per read.
const STEP: usize = 64 * 1024;
/// How long a message waits for room: long enough to ride out a burst,
/// well within the timeouts of the peer waiting for our answer.
const WAIT: Duration = Duration::from_secs(5);

/// A daemon's budget for message bytes; clones share it.
#[derive(Clone)]
pub struct MessageBudget {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    total: usize,
    /// The most one client may hold.
    client_share: usize,
    wait: Duration,
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Default)]
struct State {
    in_use: usize,
    next_ticket: u64,
    /// Tickets of the reservations that hold bytes, oldest first.
    holding: BTreeSet<u64>,
    /// Bytes held per named client; a client holding nothing has no
    /// entry, so the map is no larger than the messages in progress.
    per_client: HashMap<Arc<str>, usize>,
    /// Reservations waiting for bytes to come free: a release wakes
    /// them only if there are any (a wake-up takes another lock).
    waiting: usize,
}

impl MessageBudget {
    /// A budget of `total` bytes; a reservation waits at most 5 s for
    /// bytes to come free.
    #[must_use]
    pub fn new(total: usize) -> Self {
        Self::with_wait(total, WAIT)
    }

    /// A budget of `total` bytes whose reservations wait at most `wait`.
    #[must_use]
    pub fn with_wait(total: usize, wait: Duration) -> Self {
        Self::build(total, total, wait)
    }

    /// A budget of `total` bytes of which one client holds at most
    /// `client_share` (rounded up to whole steps); a reservation waits at
    /// most 5 s for bytes to come free.
    #[must_use]
    pub fn fairly_shared(total: usize, client_share: usize) -> Self {
        Self::build(total, client_share, WAIT)
    }

    fn build(total: usize, client_share: usize, wait: Duration) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                total,
                client_share: client_share.next_multiple_of(STEP).min(total),
                wait,
                state: Mutex::new(State::default()),
                freed: Notify::new(),
            })),
        }
    }

    /// No bound (for tests of other things).
    #[must_use]
    pub fn unlimited() -> Self {
        Self { inner: None }
    }

    /// An empty reservation for one message.
    #[must_use]
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            ticket: None,
            bytes: 0,
            client: None,
        }
    }

    /// An empty reservation for one message of `client`, who may hold at
    /// most its share of the budget over all its messages.
    #[must_use]
    pub fn reservation_for(&self, client: &str) -> Reservation {
        let mut reservation = self.reservation();
        reservation.client = Some(Arc::from(client));
        reservation
    }

    /// Bytes `client` holds right now.
    #[must_use]
    pub fn held_by(&self, client: &str) -> usize {
        self.inner.as_ref().map_or(0, |inner| {
            inner.lock().per_client.get(client).copied().unwrap_or(0)
        })
    }

    /// Bytes reserved right now, over all messages.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.inner.as_ref().map_or(0, |inner| inner.lock().in_use)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MessageBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => write!(
                f,
                "MessageBudget({} of {} bytes in use)",
                self.in_use(),
                inner.total
            ),
            None => f.write_str("MessageBudget(unlimited)"),
        }
    }
}

impl Default for MessageBudget {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// The bytes one message holds of the budget, given back when dropped.
pub struct Reservation {
    budget: MessageBudget,
    ticket: Option<u64>,
    bytes: usize,
    client: Option<Arc<str>>,
}

/// What a reservation may do when the budget has no room.
enum Turn {
    Wait,
    GiveUp,
}

impl Reservation {
    /// Makes sure `bytes` are reserved in all. `false` when they could
    /// not be had (see the module's rules): the caller must not buffer
    /// them, and should drop the reservation.
    pub async fn cover(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let Some(inner) = self.budget.inner.clone() else {
            self.bytes = bytes;
            return true;
        };
        let wanted = (bytes - self.bytes).next_multiple_of(STEP);
        let limit = if self.client.is_some() {
            inner.client_share
        } else {
            inner.total
        };
        if self.bytes + wanted > limit {
            return false;
        }
        // Most reservations find room at once, and need no wake-up.
        match self.try_take(&inner, wanted) {
            None => return true,
            Some(Turn::GiveUp) => return false,
            Some(Turn::Wait) => {}
        }
        let _waiting = Waiting::count(&inner);
        let deadline = tokio::time::Instant::now() + inner.wait;
        loop {
            // Registered before the check, so a release in between wakes us.
            let freed = inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_take(&inner, wanted) {
                None => return true,
                Some(Turn::GiveUp) => return false,
                Some(Turn::Wait) => {}
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return false;
            }
        }
    }

    /// Takes `wanted` more bytes if there is room (`None`), else says
    /// whether this reservation may wait for them.
    fn try_take(&mut self, inner: &Inner, wanted: usize) -> Option<Turn> {
        let mut state = inner.lock();
        let client_held = self.client.as_ref().map_or(0, |client| {
            state.per_client.get(client).copied().unwrap_or(0)
        });
        if client_held + wanted > inner.client_share {
            // The client's own messages must finish first: one that holds
            // nothing yet waits for them, the others give way.
            return Some(if self.bytes == 0 {
                Turn::Wait
            } else {
                Turn::GiveUp
            });
        }
        if state.in_use + wanted <= inner.total {
            state.in_use += wanted;
            if let Some(client) = &self.client {
                *state.per_client.entry(Arc::clone(client)).or_default() += wanted;
            }
            self.bytes += wanted;
            if self.ticket.is_none() {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.holding.insert(ticket);
                self.ticket = Some(ticket);
            }
            return None;
        }
        let oldest = state.holding.first().copied();
        match self.ticket {
            None => Some(Turn::Wait),
            Some(ticket) if Some(ticket) == oldest => Some(Turn::Wait),
            Some(_) => Some(Turn::GiveUp),
        }
    }

    /// Bytes this reservation holds.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(inner) = &self.budget.inner else {
            return;
        };
        if self.bytes == 0 {
            return;
        }
        let wake = {
            let mut state = inner.lock();
            state.in_use -= self.bytes;
            if let Some(ticket) = self.ticket {
                state.holding.remove(&ticket);
            }
            if let Some(client) = &self.client
                && let Some(held) = state.per_client.get_mut(client)
            {
                *held = held.saturating_sub(self.bytes);
                if *held == 0 {
                    state.per_client.remove(client);
                }
            }
            state.waiting > 0
        };
        if wake {
            inner.freed.notify_waiters();
        }
    }
}

/// Counts a reservation among the waiting ones while it lives. Counted
/// before the waiter registers for a wake-up and checks again: a release
/// that does not see the count happened before that check, which then
/// sees the bytes it freed.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn count(inner: &'a Inner) -> Self {
        inner.lock().waiting += 1;
        Self(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::MessageBudget;

    const KIB: usize = 1024;

    #[tokio::test(start_paused = true)]
    async fn reservations_share_the_budget_and_give_it_back() {
        let budget = MessageBudget::with_wait(256 * KIB, Duration::from_secs(5));
        let mut first = budget.reservation();
        assert!(first.cover(100).await);
        assert_eq!(budget.in_use(), 64 * KIB, "whole steps");
        assert!(first.cover(190 * KIB).await);
        let mut second = budget.reservation();
        assert!(!second.cover(64 * KIB + 1).await, "waits, then gives up");
        assert!(second.cover(10).await);
        assert_eq!(budget.in_use(), 256 * KIB);
        drop(first);
        assert_eq!(budget.in_use(), 64 * KIB);
        assert!(second.cover(192 * KIB).await);
        assert!(!second.cover(256 * KIB + 1).await, "more than there is");
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_waits_and_younger_ones_give_way() {
        let budget = MessageBudget::with_wait(256 * KIB, Duration::from_secs(5));
        let mut oldest = budget.reservation();
        let mut younger = budget.reservation();
        assert!(oldest.cover(128 * KIB).await);
        assert!(younger.cover(128 * KIB).await);
        // The younger one cannot grow: refused at once, without waiting.
        let started = tokio::time::Instant::now();
        assert!(!younger.cover(192 * KIB).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The oldest waits, and gets the bytes the younger one gives back.
        let grow = tokio::spawn(async move { oldest.cover(192 * KIB).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(younger);
        assert!(grow.await.expect("task"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_holding_nothing_waits_for_room() {
        let budget = MessageBudget::with_wait(128 * KIB, Duration::from_secs(5));
        let mut holder = budget.reservation();
        assert!(holder.cover(128 * KIB).await);
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reservation().cover(64 * KIB).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(holder);
        assert!(waiter.await.expect("task"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_holds_at_most_its_share() {
        let budget = MessageBudget::fairly_shared(512 * KIB, 128 * KIB);
        let mut first = budget.reservation_for("192.0.2.1");
        assert!(first.cover(100 * KIB).await);
        assert_eq!(budget.held_by("192.0.2.1"), 128 * KIB);
        // Its second message waits for the first, then gives up.
        let started = tokio::time::Instant::now();
        assert!(!budget.reservation_for("192.0.2.1").cover(1).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // A message larger than a share is refused at once.
        assert!(!budget.reservation_for("192.0.2.9").cover(129 * KIB).await);
        // Other clients still have room.
        let mut other = budget.reservation_for("192.0.2.2");
        assert!(other.cover(128 * KIB).await);
        assert_eq!(budget.in_use(), 256 * KIB);
        // When the first message is done the client may send again.
        drop(first);
        assert_eq!(budget.held_by("192.0.2.1"), 0);
        assert!(budget.reservation_for("192.0.2.1").cover(128 * KIB).await);
        drop(other);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let budget = MessageBudget::unlimited();
        assert!(budget.reservation().cover(usize::MAX).await);
        assert_eq!(budget.in_use(), 0);
    }
}
