//! The admin connections' part of `/readyz`, checked at most once per [`READY_CACHE`]: probes
//! from every kubelet and load balancer are unauthenticated, and must not each become a
//! database round trip (nor pile up while one is slow: concurrent probes wait for one check).

use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long an answer is reused.
pub const READY_CACHE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct ReadyCache {
    last: Mutex<Option<(Instant, bool)>>,
}

impl ReadyCache {
    /// The cached answer while it is fresh, else `check`'s (then cached).
    pub async fn get<F: Future<Output = bool>>(&self, check: impl FnOnce() -> F) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < READY_CACHE
        {
            return ok;
        }
        let ok = check().await;
        *last = Some((Instant::now(), ok));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn probes_share_one_check_per_period() {
        let cache = Arc::new(ReadyCache::default());
        let checks = Arc::new(AtomicUsize::new(0));
        let probe = || {
            let (cache, checks) = (cache.clone(), checks.clone());
            async move {
                cache
                    .get(|| async move {
                        checks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        true
                    })
                    .await
            }
        };
        let burst: Vec<_> = (0..50).map(|_| tokio::spawn(probe())).collect();
        for p in burst {
            assert!(p.await.unwrap());
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1, "fifty probes, one check");
        tokio::time::advance(READY_CACHE).await;
        assert!(probe().await);
        assert_eq!(checks.load(Ordering::SeqCst), 2, "checked again once the answer is old");
    }
}
