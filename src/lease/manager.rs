//! The lease manager: grants leases (mints users), ends them (revokes users) and times them out.
//!
//! Granting inserts the lease before its user is created, so shutdown sees a lease whose mint
//! is in flight. Ending runs in a background task that retries with capped exponential backoff
//! (1 s → 5 min) until the user is gone — a failed revocation is logged at every attempt and
//! the lease shows `RevokeFailed` meanwhile; it is never dropped silently.

use super::{EndReason, Lease, LeaseState, SessionGuard, name};
use crate::auth::Identity;
use crate::config::{Config, RoleConfig, Scope};
use crate::pg::provision::{MAX_USER_LEN, PgProvisioner, ProvisionError};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long revocation waits for terminated server sessions to exit before dropping anyway.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// leasegate is shutting down and grants no new lease (SQLSTATE 57P03).
    #[error("leasegate is shutting down")]
    ShuttingDown,
    /// The role or its database vanished from the config (cannot happen after validation).
    #[error("role {0:?} is not configured")]
    UnknownRole(String),
    /// The user could not be created; the cause is in `source`.
    #[error("could not create a database user: {source}")]
    Mint { source: ProvisionError },
}

#[derive(Clone)]
pub struct LeaseManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    leases: DashMap<String, Arc<Lease>>,
    provisioners: HashMap<String, Arc<PgProvisioner>>,
    tasks: TaskTracker,
    granting: AtomicBool,
}

impl LeaseManager {
    pub fn new(config: Arc<Config>, provisioners: HashMap<String, Arc<PgProvisioner>>) -> Self {
        LeaseManager {
            inner: Arc::new(Inner {
                config,
                leases: DashMap::new(),
                provisioners,
                tasks: TaskTracker::new(),
                granting: AtomicBool::new(true),
            }),
        }
    }

    /// A lease for `identity` with one session attached (scope `connection`: always a new one).
    pub async fn grant(&self, identity: &Identity) -> Result<SessionGuard, LeaseError> {
        if !self.inner.granting.load(Ordering::Acquire) {
            return Err(LeaseError::ShuttingDown);
        }
        let role = self.inner.config.role(&identity.role).ok_or_else(|| LeaseError::UnknownRole(identity.role.clone()))?;
        let db = self.inner.config.database(&role.database).ok_or_else(|| LeaseError::UnknownRole(identity.role.clone()))?;
        let provisioner = self.provisioner(&role.database).ok_or_else(|| LeaseError::UnknownRole(identity.role.clone()))?;

        let granted_at = SystemTime::now();
        let lease = Arc::new(Lease {
            id: name::lease_id(),
            identity: identity.clone(),
            database: role.database.clone(),
            user: name::user_name(&db.name_prefix, &identity.client, &identity.role, MAX_USER_LEN),
            password: name::password(),
            granted_at,
            max_expires_at: granted_at + role.max_ttl,
            max_deadline: Instant::now() + role.max_ttl,
            ended: CancellationToken::new(),
            state: std::sync::Mutex::new(LeaseState::Minting),
            sessions: std::sync::atomic::AtomicUsize::new(1),
            used_databases: Default::default(),
        });
        // Recorded before the user exists, so shutdown revokes a mint that is in flight.
        self.inner.leases.insert(lease.id.clone(), lease.clone());

        let started = std::time::Instant::now();
        if let Err(source) = provisioner.mint(role, &lease.user, &lease.password, lease.max_expires_at).await {
            tracing::error!(lease = %lease.id, user = %lease.user, role = %role.name, error = %source, "mint failed");
            if let Err(e) = provisioner.rollback(role, &lease.user).await {
                tracing::warn!(lease = %lease.id, user = %lease.user, error = %e, "rollback after a failed mint failed");
            }
            lease.set_state(LeaseState::Ended);
            self.inner.leases.remove(&lease.id);
            return Err(LeaseError::Mint { source });
        }
        if !lease.begin_active() {
            // Shutdown claimed this lease while we were minting; its revocation may have run
            // before the user existed, so drop it here too (a second drop is harmless).
            if let Err(e) = provisioner.rollback(role, &lease.user).await {
                tracing::warn!(lease = %lease.id, user = %lease.user, error = %e, "dropping a user minted during shutdown failed");
            }
            return Err(LeaseError::ShuttingDown);
        }
        tracing::info!(
            lease = %lease.id, user = %lease.user, client = %identity.client, role = %role.name,
            max_ttl = ?role.max_ttl, mint_ms = started.elapsed().as_secs_f64() * 1e3, "lease granted"
        );
        self.spawn_timer(&lease);
        Ok(SessionGuard { lease, manager: self.clone() })
    }

    fn provisioner(&self, database: &str) -> Option<Arc<PgProvisioner>> {
        self.inner.provisioners.get(database).cloned()
    }

    /// Ends the lease at its hard deadline.
    fn spawn_timer(&self, lease: &Arc<Lease>) {
        let manager = self.clone();
        let lease = lease.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(lease.max_deadline) => manager.end(&lease, EndReason::MaxTtl),
                _ = lease.ended.cancelled() => {}
            }
        });
    }

    pub(super) fn last_session_closed(&self, lease: &Arc<Lease>) {
        let scope = self.inner.config.role(&lease.identity.role).map_or(Scope::Connection, |r| r.scope);
        if scope == Scope::Connection {
            self.end(lease, EndReason::Closed);
        }
    }

    /// Starts ending `lease` (once); the revocation runs in the background until it succeeds.
    pub fn end(&self, lease: &Arc<Lease>, reason: EndReason) {
        if !lease.begin_revoking() {
            return;
        }
        let manager = self.clone();
        let lease = lease.clone();
        self.inner.tasks.spawn(async move { manager.revoke(lease, reason).await });
    }

    async fn revoke(&self, lease: Arc<Lease>, reason: EndReason) {
        let role = self.inner.config.role(&lease.identity.role).cloned();
        let (Some(provisioner), Some(role)) = (self.provisioner(&lease.database), role) else {
            tracing::error!(lease = %lease.id, user = %lease.user, "lease has no provisioner; cannot revoke");
            return;
        };
        let started = std::time::Instant::now();
        let mut delay = FIRST_RETRY;
        let mut attempt = 1u32;
        loop {
            match revoke_once(&provisioner, &role, &lease).await {
                Ok(()) => break,
                Err(e) => {
                    lease.ended.cancel();
                    tracing::warn!(lease = %lease.id, user = %lease.user, attempt, retry_in = ?delay, error = %e, "revocation failed; will retry");
                    lease.set_state(LeaseState::RevokeFailed(e.to_string()));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                    attempt += 1;
                }
            }
        }
        lease.set_state(LeaseState::Ended);
        self.inner.leases.remove(&lease.id);
        tracing::info!(
            lease = %lease.id, user = %lease.user, reason = %reason, attempts = attempt,
            revoke_ms = started.elapsed().as_secs_f64() * 1e3, "lease ended"
        );
    }

    /// Refuses every later grant (first step of shutdown).
    pub fn stop_granting(&self) {
        self.inner.granting.store(false, Ordering::Release);
    }

    /// Ends every lease with `reason` and waits up to `limit` for the users to be dropped;
    /// returns how many leases were still not ended then.
    pub async fn revoke_all(&self, reason: EndReason, limit: Duration) -> usize {
        let leases: Vec<Arc<Lease>> = self.inner.leases.iter().map(|e| e.value().clone()).collect();
        for lease in &leases {
            match lease.state() {
                // A mint in flight is claimed here; the granting task sees it and backs off,
                // and this revocation drops whatever the mint created.
                LeaseState::Minting | LeaseState::Active => self.end(lease, reason),
                _ => {}
            }
        }
        let deadline = Instant::now() + limit;
        while !self.inner.leases.is_empty() && Instant::now() < deadline {
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

/// One revocation attempt: stop logins and sessions, close our sockets, clean up and drop.
async fn revoke_once(p: &PgProvisioner, role: &RoleConfig, lease: &Lease) -> Result<(), ProvisionError> {
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

impl Lease {
    /// Minting → Active; false when shutdown claimed the lease meanwhile.
    fn begin_active(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *s == LeaseState::Minting {
            *s = LeaseState::Active;
            true
        } else {
            false
        }
    }
}
