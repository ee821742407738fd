//! One issuer's current key set, replaced whole on each successful load, and the on-demand
//! refetch a token with an unknown `kid` triggers (the issuer rotated its keys since our last
//! load). A failed load keeps the previous keys: an unreachable issuer must not lock everyone out
//! before its keys would have been replaced anyway.

use super::jwks::PublicKey;
use super::source::Source;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// At most one token-triggered refetch per issuer this often: tokens with made-up `kid`s must
/// not turn leasegate into a load generator against the issuer.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

pub struct KeySet {
    /// Bumped by every successful load, so a waiter can tell that someone else just loaded.
    pub generation: u64,
    pub keys: Vec<PublicKey>,
}

pub struct KeyCache {
    // A std lock, held only to clone or swap the Arc: readers never wait on a fetch.
    current: RwLock<Arc<KeySet>>,
    /// Held across a load so concurrent callers share one; the time of the last refetch.
    gate: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyCache {
    pub fn new(keys: Vec<PublicKey>) -> KeyCache {
        KeyCache { current: RwLock::new(Arc::new(KeySet { generation: 0, keys })), gate: tokio::sync::Mutex::new(None) }
    }

    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole Arc (the swap cannot half-happen).
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn store(&self, keys: Vec<PublicKey>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(KeySet { generation: current.generation + 1, keys });
    }

    /// A scheduled load (start-up, refresh interval): not rate-limited.
    pub async fn reload(&self, source: &Source, issuer: &str) {
        let _gate = self.gate.lock().await;
        self.load(source, issuer).await;
    }

    /// Loads again because `seen` lacked a key, unless another caller loaded since `seen` or a
    /// refetch happened within [`REFETCH_MIN_INTERVAL`]. Returns the keys to retry with.
    pub async fn refetch(&self, source: &Source, issuer: &str, seen: &KeySet) -> Arc<KeySet> {
        let mut last = self.gate.lock().await;
        let current = self.current();
        if current.generation != seen.generation {
            return current;
        }
        if last.is_some_and(|at| at.elapsed() < REFETCH_MIN_INTERVAL) {
            tracing::debug!(issuer, "unknown JWT key: refetch skipped, one happened less than 10s ago");
            return current;
        }
        *last = Some(Instant::now());
        self.load(source, issuer).await;
        self.current()
    }

    async fn load(&self, source: &Source, issuer: &str) {
        match source.load().await {
            Ok(keys) => {
                tracing::debug!(issuer, keys = keys.len(), "JWT issuer keys loaded");
                self.store(keys);
            }
            Err(error) => tracing::warn!(issuer, %error, "cannot load JWT issuer keys; keeping the previous ones"),
        }
    }
}
