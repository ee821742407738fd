//! The server threads (connection ids) of the MySQL sessions leasegate proxies, which client
//! owns each, and what each is doing: a client's `KILL QUERY n` from another connection is run
//! for it only when thread `n` is one of its own sessions, and only while it runs a command.

use crate::net::hold::Activity;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Clone)]
pub struct Threads {
    by_id: Arc<DashMap<u32, Entry>>,
    next: Arc<AtomicU64>,
}

struct Entry {
    token: u64,
    client: String,
    user: String,
    activity: Arc<Activity>,
}

/// A proxied session's thread, as the KILL path sees it.
pub struct Thread {
    pub client: String,
    /// The minted user the session logged in as (checked on the server before a KILL).
    pub user: String,
    pub activity: Arc<Activity>,
}

/// Keeps a thread registered while the session lives.
pub struct Registration {
    threads: Threads,
    id: u32,
    token: u64,
}

impl Threads {
    pub fn register(&self, id: u32, client: &str, user: &str, activity: Arc<Activity>) -> Registration {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_id.insert(id, Entry { token, client: client.to_string(), user: user.to_string(), activity });
        Registration { threads: self.clone(), id, token }
    }

    /// The session on thread `id`, if leasegate proxies it.
    pub fn get(&self, id: u32) -> Option<Thread> {
        self.by_id.get(&id).map(|e| Thread { client: e.client.clone(), user: e.user.clone(), activity: e.activity.clone() })
    }
}

impl Drop for Registration {
    /// Removes only its own entry: a newer session may have the same id (another server behind
    /// one address restarted its counter) and must stay registered.
    fn drop(&mut self) {
        self.threads.by_id.remove_if(&self.id, |_, e| e.token == self.token);
    }
}
