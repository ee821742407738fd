//! The server threads (connection ids) of the MySQL sessions leasegate proxies, and which
//! client owns each: a client's `KILL QUERY n` from another connection is run for it only
//! when thread `n` is one of its own sessions.

use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Clone)]
pub struct Threads {
    by_id: Arc<DashMap<u32, (u64, String)>>,
    next: Arc<AtomicU64>,
}

/// Keeps a thread registered while the session lives.
pub struct Registration {
    threads: Threads,
    id: u32,
    token: u64,
}

impl Threads {
    pub fn register(&self, id: u32, client: &str) -> Registration {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_id.insert(id, (token, client.to_string()));
        Registration { threads: self.clone(), id, token }
    }

    /// The client whose session runs on thread `id`, if leasegate proxies it.
    pub fn owner(&self, id: u32) -> Option<String> {
        self.by_id.get(&id).map(|e| e.value().1.clone())
    }
}

impl Drop for Registration {
    /// Removes only its own entry: a newer session may have the same id (another server behind
    /// one address restarted its counter) and must stay registered.
    fn drop(&mut self) {
        self.threads.by_id.remove_if(&self.id, |_, (token, _)| *token == self.token);
    }
}
