//! The bound on client handshakes in progress per listener (TLS, startup, authentication: the
//! part a client drives before it has proven anything), so that connections opened and left
//! silent (a slowloris) cannot take every file descriptor while legitimate clients still get in.
//!
//! At the bound, the oldest handshake gives way if it has been going on for
//! [`EVICT_AFTER`]: a silent connection is always older than a working one, which finishes in
//! milliseconds. If even the oldest is younger (a burst of real clients), the new connection is
//! turned away instead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a handshake must have been going on before a newer one may push it out.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);

/// The handshakes in progress on one listener, oldest first.
pub struct Handshakes {
    max: usize,
    pending: Mutex<BTreeMap<u64, (Instant, CancellationToken)>>,
    next: AtomicU64,
}

/// One handshake's place; dropping it (authenticated or refused) frees the place.
pub struct Place {
    owner: Arc<Handshakes>,
    id: u64,
    /// Cancelled when a newer handshake pushed this one out.
    pub evicted: CancellationToken,
}

impl Handshakes {
    pub fn new(max: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes { max, pending: Mutex::new(BTreeMap::new()), next: AtomicU64::new(0) })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, CancellationToken)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new handshake, or `None` when the listener is full of young handshakes.
    pub fn begin(self: &Arc<Self>) -> Option<Place> {
        let now = Instant::now();
        let mut pending = self.pending();
        if pending.len() >= self.max {
            let (&oldest, (started, _)) = pending.first_key_value()?;
            if now.saturating_duration_since(*started) < EVICT_AFTER {
                return None;
            }
            if let Some((_, token)) = pending.remove(&oldest) {
                token.cancel();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        pending.insert(id, (now, evicted.clone()));
        Some(Place { owner: self.clone(), id, evicted })
    }

    pub fn in_progress(&self) -> usize {
        self.pending().len()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.owner.pending().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_oldest_silent_handshake_gives_way_but_a_young_one_does_not() {
        let h = Handshakes::new(2);
        let first = h.begin().unwrap();
        let second = h.begin().unwrap();
        assert!(h.begin().is_none(), "both are young: the newcomer is turned away");
        tokio::time::advance(EVICT_AFTER).await;
        let third = h.begin().unwrap();
        assert!(first.evicted.is_cancelled(), "the oldest gave way");
        assert!(!second.evicted.is_cancelled());
        assert_eq!(h.in_progress(), 2);
        drop(first);
        assert_eq!(h.in_progress(), 2, "an evicted place was already freed");
        drop(second);
        drop(third);
        assert_eq!(h.in_progress(), 0);
    }
}
