//! The lease manager: grants leases (mints users or joins an identity's lease), renews them
//! while they have sessions, rolls them over at max TTL and ends them (revokes users).
//!
//! Every lease is journaled before its user is created. Deadlines live in one [`Scheduler`]
//! served by one task. Ending runs in a background task that retries with capped exponential
//! backoff (1 s → 5 min) until the user is gone: each failure is logged, journaled and shown as
//! `RevokeFailed`; it is never dropped silently.

use super::scheduler::Scheduler;
use super::store::{Intent, LeaseStore};
use super::{EndReason, Lease, LeaseState, SessionGuard};
use crate::audit::{Audit, Event};
use crate::auth::Identity;
use crate::config::{Config, RoleConfig, Scope};
use crate::metrics::{DbLabels, EndLabels, Metrics, RoleLabels};
use crate::name;
use crate::provision::{ProvisionError, Provisioner, Provisioners};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long revocation waits for terminated server sessions to exit before dropping anyway.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// Only an active lease can be renewed (HTTP 409).
    #[error("lease is {0}, not active")]
    NotActive(&'static str),
    /// The renew statements failed (HTTP 503).
    #[error(transparent)]
    Provision(ProvisionError),
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// leasegate is shutting down and grants no new lease (SQLSTATE 57P03).
    #[error("leasegate is shutting down")]
    ShuttingDown,
    /// `max_leases` of the role reached, or no mint slot freed within `connect_timeout`
    /// (SQLSTATE 53300, what a server says when it has too many connections).
    #[error("too many leases: {0}")]
    TooMany(&'static str),
    /// The role or its database vanished from the config (cannot happen after validation).
    #[error("role {0:?} is not configured")]
    UnknownRole(String),
    /// The journal could not record the intent, so no user was created.
    #[error(transparent)]
    Journal(#[from] super::store::JournalError),
    /// The user could not be created; the cause is in `source`.
    #[error("could not create a database user: {source}")]
    Mint { source: ProvisionError },
}

/// The deadlines a lease can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    Renew,
    Expire,
    MaxTtl,
    HardClose,
    IdleEnd,
}

type TimerKey = (Arc<str>, Timer);

#[derive(Clone)]
pub struct LeaseManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    leases: DashMap<String, Arc<Lease>>,
    /// The joinable lease of each identity-scoped (client, role).
    current: DashMap<Identity, Arc<Lease>>,
    identity_locks: DashMap<Identity, Arc<tokio::sync::Mutex<()>>>,
    provisioners: Provisioners,
    mint_slots: HashMap<String, Arc<Semaphore>>,
    role_leases: HashMap<String, AtomicUsize>,
    timers: Scheduler<TimerKey>,
    journal: Arc<dyn LeaseStore>,
    metrics: Metrics,
    audit: Audit,
    tasks: TaskTracker,
    granting: AtomicBool,
}

impl LeaseManager {
    /// Also starts the task that fires lease deadlines.
    pub fn new(config: Arc<Config>, provisioners: Provisioners, journal: Arc<dyn LeaseStore>, metrics: Metrics, audit: Audit) -> Self {
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
                journal,
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
                    // Re-check now and then that the manager still exists.
                    _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                };
                let manager = LeaseManager { inner };
                for key in due {
                    manager.on_timer(key);
                }
            }
        });
        manager
    }

    /// The lease gauges, for `Metrics::registry`: computed from the live leases at scrape time.
    pub fn collector(&self) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(super::collector::LeaseCollector { leases: self.clone() })
    }

    /// The lease store (the journal) every lease is recorded in.
    pub fn journal(&self) -> &dyn LeaseStore {
        self.inner.journal.as_ref()
    }

    /// A session on a lease for `identity`: the identity's current lease when its role has
    /// `scope = "identity"`, otherwise a freshly minted one.
    pub async fn grant(&self, identity: &Identity, peer: Option<std::net::SocketAddr>) -> Result<SessionGuard, LeaseError> {
        if !self.inner.granting.load(Ordering::Acquire) {
            return Err(LeaseError::ShuttingDown);
        }
        let role = self.inner.config.role(&identity.role).ok_or_else(|| LeaseError::UnknownRole(identity.role.clone()))?;
        if role.scope == Scope::Connection {
            return self.mint(identity, role, peer, false).await;
        }
        // One mint per identity at a time, so concurrent first connections share one user;
        // bounded, so a stalled mint turns the others away instead of queueing them forever.
        let wait = self.inner.config.database(&role.database).map_or(Duration::from_secs(5), |d| d.connect_timeout);
        let lock = self.inner.identity_locks.entry(identity.clone()).or_default().clone();
        let _held = tokio::time::timeout(wait, lock.lock())
            .await
            .map_err(|_| LeaseError::TooMany("another login of this client is still waiting for its user"))?;
        let current = self.inner.current.get(identity).map(|l| l.value().clone());
        if let Some(lease) = current
            && let Some(before) = lease.try_join()
        {
            self.inner.timers.cancel(&(lease.id.as_str().into(), Timer::IdleEnd));
            if before == 0 {
                // An idle lease skips its renewals; renew now that it has a session again.
                self.spawn_renewal(lease.clone());
            }
            return Ok(SessionGuard { lease, manager: self.clone(), detached: false });
        }
        self.mint(identity, role, peer, true).await
    }

    /// A new lease for direct use (admin API credentials): never shared with another caller,
    /// no session attached, ends at its expiry or on revoke.
    pub async fn grant_detached(&self, role: &str, client: &str, peer: Option<std::net::SocketAddr>) -> Result<Arc<Lease>, LeaseError> {
        if !self.inner.granting.load(Ordering::Acquire) {
            return Err(LeaseError::ShuttingDown);
        }
        let role = self.inner.config.role(role).ok_or_else(|| LeaseError::UnknownRole(role.to_string()))?;
        let identity = Identity { client: client.to_string(), role: role.name.clone() };
        Ok(self.mint(&identity, role, peer, false).await?.detach())
    }

    async fn mint(
        &self,
        identity: &Identity,
        role: &RoleConfig,
        peer: Option<std::net::SocketAddr>,
        share: bool,
    ) -> Result<SessionGuard, LeaseError> {
        let unknown = || LeaseError::UnknownRole(identity.role.clone());
        let db = self.inner.config.database(&role.database).ok_or_else(unknown)?;
        let provisioner = self.inner.provisioners.get(&role.database).cloned().ok_or_else(unknown)?;
        let slots = self.inner.mint_slots.get(&role.database).cloned().ok_or_else(unknown)?;
        let _slot = match tokio::time::timeout(db.connect_timeout, slots.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(LeaseError::ShuttingDown),
            Err(_) => return Err(LeaseError::TooMany("no mint slot freed in time (max_concurrent_mints)")),
        };
        let max_user_len = provisioner.max_user_len().await.map_err(|source| LeaseError::Mint { source })?;
        let now = SystemTime::now();
        let ttl = role.default_ttl.min(role.max_ttl);
        let lease = Lease::new(
            name::lease_id(),
            identity.clone(),
            role.database.clone(),
            name::user_name(&db.name_prefix, &identity.client, &identity.role, max_user_len),
            name::password(),
            LeaseState::Minting,
            now + ttl,
            now + role.max_ttl,
            Instant::now() + role.max_ttl,
            peer,
        );
        lease.attach_first();
        if !self.take_count(&lease, role) {
            return Err(LeaseError::TooMany("the role's max_leases is reached"));
        }
        let intent = Intent {
            id: &lease.id,
            database: &lease.database,
            role: &role.name,
            client: &identity.client,
            db_user: &lease.user,
            granted_at: lease.granted_at,
            expires_at: lease.expires_at(),
            max_expires_at: lease.max_expires_at,
        };
        // The intent is on disk before the user exists: a crash from here on is recovered.
        if let Err(e) = self.inner.journal.intent(&intent).await {
            self.release_count(&lease);
            return Err(e.into());
        }
        self.inner.leases.insert(lease.id.clone(), lease.clone());
        if !self.inner.granting.load(Ordering::Acquire) {
            // Shutdown began between the first check and the insert: nothing was created yet.
            self.forget(&lease, "shutdown before mint").await;
            return Err(LeaseError::ShuttingDown);
        }

        let started = std::time::Instant::now();
        if let Err(source) = provisioner.mint(role, &lease.user, &lease.password, lease.expires_at()).await {
            tracing::error!(lease = %lease.id, user = %lease.user, role = %role.name, error = %source, "mint failed");
            // A refused or never-sent batch created nothing (one implicit transaction); a lost
            // connection leaves the outcome unknown, so that user is revoked until surely gone.
            let unknown = matches!(source, ProvisionError::Connect { .. }) || !provisioner.mint_is_atomic();
            self.abandon(&lease, role, provisioner.as_ref(), &source.to_string(), unknown).await;
            return Err(LeaseError::Mint { source });
        }
        lease.begin_active();
        self.journal_state(&lease, None).await;
        if share {
            self.inner.current.insert(identity.clone(), lease.clone());
        }
        self.schedule_expiry(&lease, role, Instant::now());
        self.inner.timers.set((lease.id.as_str().into(), Timer::MaxTtl), lease.max_deadline);
        tracing::info!(
            lease = %lease.id, user = %lease.user, client = %identity.client, role = %role.name,
            ttl = ?ttl, max_ttl = ?role.max_ttl, mint_ms = millis3(started.elapsed()), "lease granted"
        );
        let m = &self.inner.metrics;
        m.leases_granted.get_or_create(&RoleLabels { database: lease.database.clone(), role: role.name.clone() }).inc();
        m.mint_seconds.get_or_create(&DbLabels { database: lease.database.clone() }).observe(started.elapsed().as_secs_f64());
        self.audit(&lease, "granted", None, Some(lease.expires_at()));
        if lease.revoke_requested() {
            // Revocation (shutdown, the API) was asked for while the user was being created.
            let reason = if self.inner.granting.load(Ordering::Acquire) { EndReason::Revoked } else { EndReason::Shutdown };
            self.end(&lease, reason);
            return Err(LeaseError::ShuttingDown);
        }
        Ok(SessionGuard { lease, manager: self.clone(), detached: false })
    }

    /// Takes one unit of the role's `max_leases` for `lease`; false when the role is full.
    fn take_count(&self, lease: &Lease, role: &RoleConfig) -> bool {
        let Some(count) = self.inner.role_leases.get(&role.name) else { return false };
        if role.max_leases.is_some_and(|max| count.fetch_add(1, Ordering::AcqRel) >= max) {
            count.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if role.max_leases.is_none() {
            count.fetch_add(1, Ordering::AcqRel);
        }
        lease.set_counted();
        true
    }

    /// Gives the unit back, once, whatever path ends the lease.
    fn release_count(&self, lease: &Lease) {
        if lease.take_counted()
            && let Some(count) = self.inner.role_leases.get(&lease.identity.role)
        {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A lease whose user surely does not exist: journal its end and drop it.
    async fn forget(&self, lease: &Arc<Lease>, why: &str) {
        lease.set_state(LeaseState::Ended);
        if let Err(e) = self.inner.journal.set_state(&lease.id, "ended", Some(why)).await {
            tracing::error!(lease = %lease.id, error = %e, "journal write failed");
        }
        self.inner.leases.remove(&lease.id);
        self.release_count(lease);
    }

    /// A mint that did not complete: roll back, journal the end, forget the lease.
    async fn abandon(&self, lease: &Arc<Lease>, role: &RoleConfig, provisioner: &dyn Provisioner, why: &str, may_exist: bool) {
        let rolled_back = provisioner.rollback(role, &lease.user).await;
        if let Err(e) = &rolled_back {
            tracing::warn!(lease = %lease.id, user = %lease.user, error = %e, "rollback after a failed mint failed");
        }
        match rolled_back {
            Err(_) if may_exist => {
                // The user may exist: revoke it like any lease, until it is gone.
                lease.set_state(LeaseState::Active);
                self.end(lease, EndReason::Revoked);
            }
            _ => self.forget(lease, why).await,
        }
    }

    /// Renewal at 2/3 of the TTL and expiry at `expires_at`, unless max TTL comes first.
    fn schedule_expiry(&self, lease: &Arc<Lease>, role: &RoleConfig, from: Instant) {
        let ttl = role.default_ttl.min(role.max_ttl);
        let id: Arc<str> = lease.id.as_str().into();
        let expires = (from + ttl).min(lease.max_deadline);
        if expires < lease.max_deadline {
            self.inner.timers.set((id.clone(), Timer::Renew), from + ttl * 2 / 3);
            self.inner.timers.set((id, Timer::Expire), expires);
        } else {
            self.inner.timers.cancel(&(id.clone(), Timer::Renew));
            self.inner.timers.cancel(&(id, Timer::Expire));
        }
    }

    fn on_timer(&self, (id, timer): TimerKey) {
        let Some(lease) = self.get(&id) else { return };
        match timer {
            Timer::Renew => self.spawn_renewal(lease),
            Timer::Expire => self.end(&lease, EndReason::Expired),
            Timer::MaxTtl => self.begin_drain(&lease),
            Timer::HardClose => self.end(&lease, EndReason::MaxTtl),
            Timer::IdleEnd => self.end_if_idle(&lease, EndReason::Closed),
        }
    }

    /// Moves the lease's expiry forward by one TTL (never past max) while it has sessions.
    fn spawn_renewal(&self, lease: Arc<Lease>) {
        let Some(role) = self.inner.config.role(&lease.identity.role).cloned() else { return };
        let Some(provisioner) = self.inner.provisioners.get(&lease.database).cloned() else { return };
        let manager = self.clone();
        self.inner.tasks.spawn(async move {
            if lease.live_sessions() == 0 || lease.state() != LeaseState::Active {
                return; // an idle lease runs out at expires_at
            }
            let ttl = role.default_ttl.min(role.max_ttl);
            let now = Instant::now();
            let expires_at = (SystemTime::now() + ttl).min(lease.max_expires_at);
            let current = lease.expires_at();
            if expires_at <= current {
                // Already renewed further (through the API): never shorten; look again later.
                let left = current.duration_since(SystemTime::now()).unwrap_or_default();
                manager.inner.timers.set((lease.id.as_str().into(), Timer::Renew), now + left.saturating_sub(ttl / 3));
                return;
            }
            match provisioner.renew(&role, &lease.user, expires_at).await {
                Ok(()) => {
                    lease.set_expires_at(expires_at);
                    manager.schedule_expiry(&lease, &role, now);
                    if let Err(e) = manager.inner.journal.renewed(&lease.id, expires_at).await {
                        tracing::error!(lease = %lease.id, error = %e, "journal write failed");
                    }
                    tracing::info!(lease = %lease.id, user = %lease.user, expires_at = %humantime::format_rfc3339_seconds(expires_at), "lease renewed");
                    manager.audit(&lease, "renewed", None, Some(expires_at));
                }
                Err(e) => {
                    // Try again soon; if it keeps failing the lease expires at its current end.
                    let retry = (ttl / 6).clamp(Duration::from_millis(500), Duration::from_secs(30));
                    tracing::warn!(lease = %lease.id, user = %lease.user, error = %e, retry_in = ?retry, "renewal failed");
                    manager.inner.timers.set((lease.id.as_str().into(), Timer::Renew), Instant::now() + retry);
                }
            }
        });
    }

    /// Max TTL: no session joins any more; sessions close at their next idle point, and at
    /// `hard_close_grace` later regardless.
    fn begin_drain(&self, lease: &Arc<Lease>) {
        lease.start_draining(super::DrainReason::MaxTtl);
        self.inner.current.remove_if(&lease.identity, |_, current| current.id == lease.id);
        let id: Arc<str> = lease.id.as_str().into();
        self.inner.timers.cancel(&(id.clone(), Timer::Renew));
        self.inner.timers.cancel(&(id.clone(), Timer::Expire));
        let grace = self.inner.config.role(&lease.identity.role).map_or(Duration::ZERO, |r| r.hard_close_grace);
        tracing::info!(lease = %lease.id, user = %lease.user, sessions = lease.live_sessions(), "lease reached max TTL; closing its sessions at their next idle point");
        self.inner.timers.set((id, Timer::HardClose), lease.max_deadline + grace);
        self.end_if_idle(lease, EndReason::MaxTtl);
    }

    pub(super) fn session_closed(&self, lease: &Arc<Lease>) {
        if lease.leave() > 0 {
            return;
        }
        let scope = self.inner.config.role(&lease.identity.role).map_or(Scope::Connection, |r| r.scope);
        if !self.inner.granting.load(Ordering::Acquire) {
            self.end_if_idle(lease, EndReason::Shutdown);
        } else if lease.drain.is_cancelled() {
            self.end_if_idle(lease, EndReason::MaxTtl);
        } else if scope == Scope::Connection {
            self.end_if_idle(lease, EndReason::Closed);
        } else {
            let grace = self.inner.config.role(&lease.identity.role).map_or(Duration::ZERO, |r| r.idle_grace);
            self.inner.timers.set((lease.id.as_str().into(), Timer::IdleEnd), Instant::now() + grace);
        }
    }

    /// Ends the lease only if no session is attached (a session may join concurrently).
    fn end_if_idle(&self, lease: &Arc<Lease>, reason: EndReason) {
        if lease.begin_revoking(true) {
            self.spawn_revocation(lease, reason);
        }
    }

    /// Starts ending `lease` (once); the revocation runs in the background until it succeeds.
    pub fn end(&self, lease: &Arc<Lease>, reason: EndReason) {
        if lease.begin_revoking(false) {
            self.spawn_revocation(lease, reason);
        }
    }

    fn spawn_revocation(&self, lease: &Arc<Lease>, reason: EndReason) {
        let id: Arc<str> = lease.id.as_str().into();
        for t in [Timer::Renew, Timer::Expire, Timer::MaxTtl, Timer::HardClose, Timer::IdleEnd] {
            self.inner.timers.cancel(&(id.clone(), t));
        }
        self.inner.current.remove_if(&lease.identity, |_, current| current.id == lease.id);
        let manager = self.clone();
        let lease = lease.clone();
        self.inner.tasks.spawn(async move { manager.revoke(lease, reason).await });
    }

    async fn revoke(&self, lease: Arc<Lease>, reason: EndReason) {
        let Some(provisioner) = self.inner.provisioners.get(&lease.database).cloned() else {
            tracing::error!(lease = %lease.id, user = %lease.user, database = %lease.database, "no [[database]] for this lease; cannot revoke");
            return;
        };
        // A role removed from the config since is revoked with the default statements.
        let role = self.inner.config.role(&lease.identity.role).cloned().unwrap_or_else(|| RoleConfig::fallback(&lease.database));
        self.journal_state(&lease, None).await;
        let started = std::time::Instant::now();
        let mut delay = FIRST_RETRY;
        let mut attempt = 1u32;
        while let Err(e) = revoke_once(provisioner.as_ref(), &role, &lease).await {
            lease.ended.cancel();
            tracing::warn!(lease = %lease.id, user = %lease.user, attempt, retry_in = ?delay, error = %e, "revocation failed; will retry");
            lease.set_state(LeaseState::RevokeFailed(e.to_string()));
            self.journal_state(&lease, Some(&e.to_string())).await;
            self.inner
                .metrics
                .revoke_failures
                .get_or_create(&RoleLabels { database: lease.database.clone(), role: lease.identity.role.clone() })
                .inc();
            self.audit(&lease, "revoke_failed", Some(&e.to_string()), None);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
            attempt += 1;
        }
        lease.set_state(LeaseState::Ended);
        if let Err(e) = self.inner.journal.ended(&lease.id, reason.as_str()).await {
            tracing::error!(lease = %lease.id, error = %e, "journal write failed");
        }
        self.inner.leases.remove(&lease.id);
        self.release_count(&lease);
        tracing::info!(
            lease = %lease.id, user = %lease.user, reason = %reason, attempts = attempt,
            revoke_ms = millis3(started.elapsed()), "lease ended"
        );
        let m = &self.inner.metrics;
        let labels = EndLabels { database: lease.database.clone(), role: lease.identity.role.clone(), reason: reason.as_str().into() };
        m.leases_ended.get_or_create(&labels).inc();
        m.revoke_seconds.get_or_create(&DbLabels { database: lease.database.clone() }).observe(started.elapsed().as_secs_f64());
        let event = if reason == EndReason::Orphan { "orphan_dropped" } else { "ended" };
        self.audit(&lease, event, Some(reason.as_str()), None);
    }

    fn audit(&self, lease: &Lease, event: &str, reason: Option<&str>, expires_at: Option<SystemTime>) {
        let nonempty = |s: &str| -> Option<String> { (!s.is_empty()).then(|| s.to_string()) };
        let (client, role) = (nonempty(&lease.identity.client), nonempty(&lease.identity.role));
        self.inner.audit.record(&Event {
            event,
            lease_id: Some(&lease.id),
            client: client.as_deref(),
            role: role.as_deref(),
            database: Some(&lease.database),
            db_user: Some(&lease.user),
            peer: lease.peer,
            reason,
            expires_at: expires_at.map(crate::audit::rfc3339),
        });
    }

    async fn journal_state(&self, lease: &Lease, error: Option<&str>) {
        if let Err(e) = self.inner.journal.set_state(&lease.id, lease.state().as_str(), error).await {
            tracing::error!(lease = %lease.id, error = %e, "journal write failed");
        }
    }

    pub(super) async fn journal_databases(&self, lease: &Lease) {
        if let Err(e) = self.inner.journal.used_databases(&lease.id, &lease.used_databases()).await {
            tracing::error!(lease = %lease.id, error = %e, "journal write failed");
        }
    }

    /// Takes over a lease a previous run left unfinished and revokes it.
    pub(super) fn adopt_for_revocation(&self, lease: Arc<Lease>, reason: EndReason) {
        self.inner.leases.insert(lease.id.clone(), lease.clone());
        self.spawn_revocation(&lease, reason);
    }

    pub(super) fn provisioner(&self, database: &str) -> Option<Arc<dyn Provisioner>> {
        self.inner.provisioners.get(database).cloned()
    }

    /// Moves an active lease's expiry to now + `increment`, clamped to its max (admin API).
    pub async fn renew_by(&self, lease: &Arc<Lease>, increment: Duration) -> Result<SystemTime, RenewError> {
        if lease.state() != LeaseState::Active || lease.drain.is_cancelled() {
            return Err(RenewError::NotActive(lease.state().as_str()));
        }
        let role = self.inner.config.role(&lease.identity.role).cloned().ok_or(RenewError::NotActive("unknown role"))?;
        let provisioner = self.inner.provisioners.get(&lease.database).cloned().ok_or(RenewError::NotActive("unknown database"))?;
        let expires_at = (SystemTime::now() + increment).min(lease.max_expires_at);
        let deadline = (Instant::now() + increment).min(lease.max_deadline);
        provisioner.renew(&role, &lease.user, expires_at).await.map_err(RenewError::Provision)?;
        lease.set_expires_at(expires_at);
        let id: Arc<str> = lease.id.as_str().into();
        if deadline < lease.max_deadline {
            self.inner.timers.set((id, Timer::Expire), deadline);
        } else {
            self.inner.timers.cancel(&(id, Timer::Expire));
        }
        if let Err(e) = self.inner.journal.renewed(&lease.id, expires_at).await {
            tracing::error!(lease = %lease.id, error = %e, "journal write failed");
        }
        self.audit(lease, "renewed", Some("api"), Some(expires_at));
        Ok(expires_at)
    }

    /// Ends `lease` and waits until its user is dropped, or `limit` passes.
    pub async fn revoke_and_wait(&self, lease: &Arc<Lease>, limit: Duration) -> LeaseState {
        self.end(lease, EndReason::Revoked);
        let deadline = Instant::now() + limit;
        while self.get(&lease.id).is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lease.state()
    }

    /// Refuses every later grant (first step of shutdown).
    pub fn stop_granting(&self) {
        self.inner.granting.store(false, Ordering::Release);
    }

    /// Ends every lease with `reason` and waits up to `limit` for the users to be dropped;
    /// returns how many leases were still not ended then.
    pub async fn revoke_all(&self, reason: EndReason, limit: Duration) -> usize {
        for lease in self.list() {
            // A mint in flight is claimed here; the granting task sees it and drops its user.
            self.end(&lease, reason);
        }
        let deadline = Instant::now() + limit;
        while !self.inner.leases.is_empty() && Instant::now() < deadline {
            // A mint that was past its checks when shutdown began is ended as it appears.
            for lease in self.list() {
                if lease.state() == LeaseState::Active {
                    self.end(&lease, reason);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.inner.leases.len()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Lease>> {
        self.inner.leases.get(id).map(|e| e.value().clone())
    }

    pub fn list(&self) -> Vec<Arc<Lease>> {
        self.inner.leases.iter().map(|e| e.value().clone()).collect()
    }
}

/// Milliseconds with three decimals, for logs.
fn millis3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One revocation attempt: stop logins and sessions, close our sockets, clean up and drop.
pub(super) async fn revoke_once(p: &dyn Provisioner, role: &RoleConfig, lease: &Lease) -> Result<(), ProvisionError> {
    match p.stop_sessions(&lease.user).await {
        Err(e) if e.user_is_gone() => {
            lease.ended.cancel();
            return Ok(());
        }
        other => other?,
    }
    // Terminated backends send their client a FATAL on their own; give them a moment to do so
    // through the pump before closing the sockets we hold.
    let waited = p.wait_sessions_gone(&lease.user, SESSION_EXIT_WAIT).await;
    lease.ended.cancel();
    waited?;
    p.drop_user(role, &lease.user, &lease.used_databases()).await
}
