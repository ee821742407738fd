//! The server threads (connection ids) of the MySQL sessions leasegate proxies, and which
//! client owns each: a client's `KILL QUERY n` from another connection is run for it only
//! when thread `n` is one of its own sessions.

use dashmap::DashMap;
use std::sync::Arc;

#[derive(Default, Clone)]
pub struct Threads(Arc<DashMap<u32, String>>);

/// Keeps a thread registered while the session lives.
pub struct Registration {
    threads: Threads,
    id: u32,
}

impl Threads {
    pub fn register(&self, id: u32, client: &str) -> Registration {
        self.0.insert(id, client.to_string());
        Registration { threads: self.clone(), id }
    }

    /// The client whose session runs on thread `id`, if leasegate proxies it.
    pub fn owner(&self, id: u32) -> Option<String> {
        self.0.get(&id).map(|c| c.value().clone())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.threads.0.remove(&self.id);
    }
}
