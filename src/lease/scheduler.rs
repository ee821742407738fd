//! One timer structure for every lease deadline (renewal, expiry, max TTL, hard close, idle
//! grace): a `BTreeSet` ordered by deadline plus a map from key to deadline, so setting,
//! replacing, cancelling and popping a deadline are O(log n). One task sleeps until the earliest
//! deadline; setting an earlier one wakes it. No polling loop, and the lock is never held across
//! an `.await`.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The deadlines, without any clock or task: pure and unit-tested.
pub struct Timers<K> {
    by_key: HashMap<K, (Instant, u64)>,
    queue: BTreeSet<(Instant, u64, K)>,
    /// Tie-breaker so equal deadlines keep insertion order.
    seq: u64,
}

impl<K: Ord + Hash + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers { by_key: HashMap::new(), queue: BTreeSet::new(), seq: 0 }
    }
}

impl<K: Ord + Hash + Clone> Timers<K> {
    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: K, at: Instant) {
        self.cancel(&key);
        self.seq += 1;
        self.queue.insert((at, self.seq, key.clone()));
        self.by_key.insert(key, (at, self.seq));
    }

    pub fn cancel(&mut self, key: &K) {
        if let Some((at, seq)) = self.by_key.remove(key) {
            self.queue.remove(&(at, seq, key.clone()));
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest key due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let (at, _, _) = self.queue.first()?;
        if *at > now {
            return None;
        }
        let (_, _, key) = self.queue.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// `Timers` shared between the code that sets deadlines and the task that fires them.
pub struct Scheduler<K> {
    timers: Mutex<Timers<K>>,
    wake: Notify,
}

impl<K: Ord + Hash + Clone> Default for Scheduler<K> {
    fn default() -> Self {
        Scheduler { timers: Mutex::new(Timers::default()), wake: Notify::new() }
    }
}

impl<K: Ord + Hash + Clone> Scheduler<K> {
    fn timers(&self) -> std::sync::MutexGuard<'_, Timers<K>> {
        self.timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, key: K, at: Instant) {
        let earlier = {
            let mut t = self.timers();
            let earlier = t.next_deadline().is_none_or(|next| at < next);
            t.set(key, at);
            earlier
        };
        if earlier {
            self.wake.notify_one();
        }
    }

    pub fn cancel(&self, key: &K) {
        self.timers().cancel(key);
    }

    pub fn len(&self) -> usize {
        self.timers().len()
    }

    pub fn is_empty(&self) -> bool {
        self.timers().is_empty()
    }

    /// Waits for the next due key(s) and returns them in deadline order.
    pub async fn next_due(&self) -> Vec<K> {
        loop {
            let next = self.timers().next_deadline();
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => continue,
                    }
                }
                None => {
                    self.wake.notified().await;
                    continue;
                }
            }
            let now = Instant::now();
            let mut t = self.timers();
            let mut due = Vec::new();
            while let Some(k) = t.pop_due(now) {
                due.push(k);
            }
            if !due.is_empty() {
                return due;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn set_replace_cancel_and_pop_in_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set("b", t0 + Duration::from_secs(2));
        t.set("a", t0 + Duration::from_secs(1));
        t.set("c", t0 + Duration::from_secs(3));
        t.set("b", t0 + Duration::from_secs(5)); // moved
        t.cancel(&"c");
        assert_eq!(t.len(), 2);
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(10)), Some("a"));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(10)), Some("b"));
        assert!(t.is_empty());
    }

    /// 100k leases with three deadlines each: every one fires exactly once, in order, at its
    /// time, with paused Tokio time (no wall-clock sleeps). Each operation is a B-tree insert,
    /// remove or pop-first: O(log n).
    #[tokio::test(start_paused = true)]
    async fn a_hundred_thousand_leases_fire_in_order_on_time() {
        const N: u64 = 100_000;
        let start = Instant::now();
        let s = std::sync::Arc::new(Scheduler::default());
        for i in 0..N {
            // Scatter deadlines over an hour; then move each one and cancel a third of a second set.
            let at = start + Duration::from_millis((i * 7919) % 3_600_000);
            s.set((i, 0u8), at + Duration::from_secs(60));
            s.set((i, 0u8), at);
            s.set((i, 1u8), at + Duration::from_secs(1));
            if i % 3 == 0 {
                s.cancel(&(i, 1u8));
            }
        }
        let expected = N + N - N.div_ceil(3);
        assert_eq!(s.len() as u64, expected);
        let mut fired = 0u64;
        let mut last = start;
        while fired < expected {
            let due = s.next_due().await;
            let now = Instant::now();
            assert!(now >= last);
            for (i, kind) in due {
                let at = start + Duration::from_millis((i * 7919) % 3_600_000) + Duration::from_secs(kind as u64);
                assert!(at <= now, "fired early");
                assert!(now - at < Duration::from_millis(2), "fired {:?} late", now - at);
                fired += 1;
            }
            last = now;
        }
        assert!(s.is_empty());
        assert!(Instant::now() - start <= Duration::from_secs(3601));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_sleeping_task() {
        let s = std::sync::Arc::new(Scheduler::default());
        let t0 = Instant::now();
        s.set("late", t0 + Duration::from_secs(100));
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { (s.next_due().await, Instant::now()) }
        });
        tokio::task::yield_now().await;
        s.set("soon", t0 + Duration::from_secs(1));
        let (due, at) = waiter.await.unwrap();
        assert_eq!(due, vec!["soon"]);
        assert_eq!(at - t0, Duration::from_secs(1));
    }
}
