//! The server threads (connection ids) of the MySQL sessions leasegate proxies, which client
//! owns each, and what each is doing: a client's `KILL QUERY n` from another connection is run
//! for it only when thread `n` is one of its own sessions, and only while it runs a command.
//! A session is found by the id its greeting showed (virtual when greeted from the cache,
//! `greeting.rs`) and by its real server thread (what `CONNECTION_ID()` returns).

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
    real: u32,
    client: String,
    user: String,
    activity: Arc<Activity>,
}

/// A proxied session's thread, as the KILL path sees it.
pub struct Thread {
    /// The server's own id for the session's thread.
    pub real: u32,
    pub client: String,
    /// The minted user the session logged in as (checked on the server before a KILL).
    pub user: String,
    pub activity: Arc<Activity>,
}

/// Keeps a thread registered while the session lives.
pub struct Registration {
    threads: Threads,
    ids: [u32; 2],
    token: u64,
}

impl Threads {
    /// `seen`: the id the client's greeting showed; `real`: the server's (the same when the
    /// greeting came from the server itself).
    pub fn register(&self, seen: u32, real: u32, client: &str, user: &str, activity: Arc<Activity>) -> Registration {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        for id in [seen, real] {
            let entry = Entry { token, real, client: client.to_string(), user: user.to_string(), activity: activity.clone() };
            self.by_id.insert(id, entry);
        }
        Registration { threads: self.clone(), ids: [seen, real], token }
    }

    /// The session on thread `id`, if leasegate proxies it.
    pub fn get(&self, id: u32) -> Option<Thread> {
        self.by_id.get(&id).map(|e| Thread { real: e.real, client: e.client.clone(), user: e.user.clone(), activity: e.activity.clone() })
    }
}

impl Drop for Registration {
    /// Removes only its own entry: a newer session may have the same id (another server behind
    /// one address restarted its counter) and must stay registered.
    fn drop(&mut self) {
        for id in self.ids {
            self.threads.by_id.remove_if(&id, |_, e| e.token == self.token);
        }
    }
}
