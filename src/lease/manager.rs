//! The lease manager handle: what its tasks share (config, leases by id, each identity's
//! joinable lease, provisioners, mint slots, role counts, timers, store, metrics, audit), the
//! task that fires deadlines, lookups, and the gate shutdown closes. What it does with leases is
//! in its sibling files, one concern each (`grant`, `deadlines`, `renew`, `revoke`, `records`).

use super::Lease;
use super::deadlines::TimerKey;
use super::scheduler::Scheduler;
use super::store::LeaseStore;
use crate::audit::Audit;
use crate::auth::Identity;
use crate::config::{Config, RoleConfig};
use crate::metrics::Metrics;
use crate::provision::{Provisioner, Provisioners};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// How often the deadline task checks that its manager still exists while no deadline is due.
const ALIVE_CHECK: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct LeaseManager {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) config: Arc<Config>,
    pub(super) leases: DashMap<String, Arc<Lease>>,
    /// The joinable lease of each identity-scoped (client, role).
    pub(super) current: DashMap<Identity, Arc<Lease>>,
    pub(super) identity_locks: DashMap<Identity, Arc<tokio::sync::Mutex<()>>>,
    pub(super) provisioners: Provisioners,
    pub(super) mint_slots: HashMap<String, Arc<Semaphore>>,
    pub(super) role_leases: HashMap<String, AtomicUsize>,
    pub(super) timers: Scheduler<TimerKey>,
    pub(super) store: Arc<dyn LeaseStore>,
    pub(super) metrics: Metrics,
    pub(super) audit: Audit,
    /// Renewals and revocations running in the background.
    pub(super) tasks: TaskTracker,
    granting: AtomicBool,
}

impl LeaseManager {
    /// Also starts the task that fires lease deadlines.
    pub fn new(config: Arc<Config>, provisioners: Provisioners, store: Arc<dyn LeaseStore>, metrics: Metrics, audit: Audit) -> Self {
        let mint_slots = config.databases.iter().map(|d| (d.name.clone(), Arc::new(Semaphore::new(d.max_concurrent_mints)))).collect();
        let role_leases = config.roles.iter().map(|r| (r.name.clone(), AtomicUsize::new(0))).collect();
        let manager = LeaseManager {
            inner: Arc::new(Inner {
                config,
                leases: DashMap::new(),
                current: DashMap::new(),
                identity_locks: DashMap::new(),
                provisioners,
                mint_slots,
                role_leases,
                timers: Scheduler::default(),
                store,
                metrics,
                audit,
                tasks: TaskTracker::new(),
                granting: AtomicBool::new(true),
            }),
        };
        let weak = Arc::downgrade(&manager.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let due = tokio::select! {
                    due = inner.timers.next_due() => due,
                    _ = tokio::time::sleep(ALIVE_CHECK) => continue,
                };
                let manager = LeaseManager { inner };
                for key in due {
                    manager.on_timer(key);
                }
            }
        });
        manager
    }

    /// The lease store (the journal) every lease is recorded in.
    pub fn journal(&self) -> &dyn LeaseStore {
        self.inner.store.as_ref()
    }

    /// The lease gauges, for `Metrics::registry`: computed from the live leases at scrape time.
    pub fn collector(&self) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(super::collector::LeaseCollector { leases: self.clone() })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Lease>> {
        self.inner.leases.get(id).map(|e| e.value().clone())
    }

    pub fn list(&self) -> Vec<Arc<Lease>> {
        self.inner.leases.iter().map(|e| e.value().clone()).collect()
    }

    /// Refuses every later grant (first step of shutdown).
    pub fn stop_granting(&self) {
        self.inner.granting.store(false, Ordering::Release);
    }

    pub(super) fn is_granting(&self) -> bool {
        self.inner.granting.load(Ordering::Acquire)
    }

    pub(super) fn role(&self, name: &str) -> Option<&RoleConfig> {
        self.inner.config.role(name)
    }

    /// The roles that mint on `database`.
    pub(super) fn roles_of(&self, database: &str) -> Vec<RoleConfig> {
        self.inner.config.roles.iter().filter(|r| r.database == database).cloned().collect()
    }

    pub(super) fn provisioner(&self, database: &str) -> Option<Arc<dyn Provisioner>> {
        self.inner.provisioners.get(database).cloned()
    }

    /// Forgets an `Ended` lease: it leaves the map and, when `Lease::finish` said it held
    /// one, its role's `max_leases` unit goes back. After the store recorded the end, so a
    /// lease missing from the map is ended in the store too.
    pub(super) fn remove(&self, lease: &Lease, counted: bool) {
        self.inner.leases.remove(&lease.id);
        if counted && let Some(count) = self.inner.role_leases.get(&lease.identity.role) {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
